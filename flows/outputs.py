r"""Reading an output folder back as it is on disk, for ``edgetune summary``.

The sinks append JSON lines and Parquet parts while the stream runs, so a process
that is killed can leave the last line of a JSONL file cut short, or a Parquet part
unreadable. These readers count what is there — every line, also lines identical to
an earlier one (two bad inputs can make the same dead letter) — and report what they
could not read instead of failing or dropping it silently.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "dead_letters.jsonl").write_text('{"reason": "a"}\n{"reason": "a"}\n{"reas')
>>> read = read_jsonl_file(folder / "dead_letters.jsonl")
>>> len(read.records), read.distinct, read.torn, read.bad
(2, 1, 1, 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JsonlRead", "DecisionsRead", "read_jsonl_file", "read_decision_rows"]


@dataclass
class JsonlRead:
    """Every record of a JSONL output (worker files included), in file order, and what could not be read.

    Attributes:
        records: one per readable line, repeats included.
        distinct: how many different lines they are.
        torn: files whose last line was cut short (no newline, not JSON): a write a stop interrupted.
        bad: other lines that are not a JSON object.
        files: the files read.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    distinct: int = 0
    torn: int = 0
    bad: int = 0
    files: list[Path] = field(default_factory=list)


@dataclass
class DecisionsRead:
    """Decision rows: ``rows`` one per ``(user_id, event_id)`` (the log's idempotency key, the last copy kept).

    ``n_rows`` counts the rows in the files, re-emitted copies included; ``unreadable``
    names the Parquet parts that could not be read.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    n_rows: int = 0
    unreadable: list[Path] = field(default_factory=list)


def jsonl_files(path: Path) -> list[Path]:
    """``path`` and the per-worker files next to it (``<stem>.w<N>.jsonl``), sorted."""
    path = Path(path)
    return sorted(p for p in path.parent.glob(f"{path.stem}*.jsonl")
                  if p == path or (p.name.startswith(f"{path.stem}.w") and p.name[len(path.stem) + 2:-6].isdigit()))


def read_jsonl_file(path: Path) -> JsonlRead:
    """Read a JSONL output and its worker files; see :class:`JsonlRead`."""
    out = JsonlRead(files=jsonl_files(path))
    lines: set[bytes] = set()
    for p in out.files:
        data = p.read_bytes()
        chunks = data.split(b"\n")
        for i, line in enumerate(chunks):
            if not line.strip():
                continue
            last_unterminated = i == len(chunks) - 1  # no newline after it
            try:
                record = json.loads(line)
            except ValueError:  # includes bad UTF-8
                record = None
            if not isinstance(record, dict):
                if last_unterminated:
                    out.torn += 1
                else:
                    out.bad += 1
                continue
            out.records.append(record)
            lines.add(line)
    out.distinct = len(lines)
    return out


def read_decision_rows(folder: Path) -> DecisionsRead:
    """Decision rows under ``folder/part-*.parquet``; a part that cannot be read is listed, not fatal."""
    import pyarrow.parquet as pq

    out = DecisionsRead()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for part in sorted(Path(folder).glob("part-*.parquet")):
        try:
            table = pq.read_table(part)
        except (OSError, ValueError):  # pyarrow raises ArrowInvalid (a ValueError) on a cut-short file
            out.unreadable.append(part)
            continue
        for row in table.to_pylist():
            out.n_rows += 1
            rows[(row["user_id"], row["event_id"])] = row
    out.rows = sorted(rows.values(), key=lambda r: (r["user_id"], r["seq"]))
    return out
