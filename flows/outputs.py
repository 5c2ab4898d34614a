r"""Reading an output folder back as it is on disk: ``edgetune summary``, tests, tools.

The sinks append JSON lines while the stream runs, so a process that is killed can
leave the last line of a JSONL file cut short (the sink ends or removes it before it
appends again; see ``flows.sinks``). Decision parts are written atomically, but a
part copied or edited by hand can still be unreadable. These readers count what is
there — every line, also lines identical to an earlier one (two bad inputs can make
the same dead letter) — and report what they could not read instead of dropping it
silently: :func:`read_jsonl_file` and :func:`read_decision_rows` count it (for a
summary), :func:`read_jsonl` skips a torn last line with a warning and raises on any
other bad line.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "dead_letters.jsonl").write_text('{"reason": "a"}\n{"reason": "a"}\n{"reas')
>>> read = read_jsonl_file(folder / "dead_letters.jsonl")
>>> len(read.records), read.distinct, read.torn, read.bad
(2, 1, 1, 0)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JsonlRead", "DecisionsRead", "dead_letter_key", "read_jsonl", "read_jsonl_file", "read_decision_rows"]

log = logging.getLogger(__name__)


@dataclass
class JsonlRead:
    """Every record of a JSONL output (worker files included), in file order, and what could not be read.

    Attributes:
        records: one per readable line, repeats included.
        distinct: how many different lines they are.
        torn: files whose last line was cut short (no newline, not JSON): a write a stop interrupted.
        bad: other lines that are not a JSON object.
        bad_at: ``(file, line number from 1)`` of each of those.
        files: the files read.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    distinct: int = 0
    torn: int = 0
    bad: int = 0
    bad_at: list[tuple[Path, int]] = field(default_factory=list)
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
                    out.bad_at.append((p, i + 1))
                continue
            out.records.append(record)
            lines.add(line)
    out.distinct = len(lines)
    return out


def read_jsonl(path: str | Path, *, key: Callable[[dict[str, Any]], Hashable] | None = None) -> list[dict[str, Any]]:
    """The records of a JSONL output and its worker files, in file order.

    A torn last line (a write a stop cut short) is skipped with a warning; any other
    line that is not a JSON object raises ``ValueError`` naming the file and line.

    Identical lines are all kept. Dropping them (as this function once did) hides
    distinct records: a producer that re-sends an event twice makes two identical
    ``duplicate_event`` dead letters. ``key`` gives the idempotency key of an output
    a resumed run can re-emit: only the first record of each key is kept (annotation
    requests: ``lambda r: (r["user_id"], r["event_id"])``; dead letters: :func:`dead_letter_key`).
    A record whose key is None has none and is always kept.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "asks.jsonl"
    >>> _ = path.write_text('{"user_id": "a", "event_id": "1"}\\n{"user_id": "a", "event_id": "1"}\\n{"user_')
    >>> len(read_jsonl(path)), len(read_jsonl(path, key=lambda r: (r["user_id"], r["event_id"])))
    (2, 1)
    >>> _ = path.write_text('{"user_id": "a"}\\nnot json\\n{"user_id": "b"}\\n')
    >>> read_jsonl(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: .../asks.jsonl line 2 is not a JSON object (only a torn last line is skipped); fix or remove the line
    """
    read = read_jsonl_file(Path(path))
    if read.bad_at:
        where, line = read.bad_at[0]
        more = f" (and {read.bad - 1} more)" if read.bad > 1 else ""
        raise ValueError(f"{where} line {line} is not a JSON object{more} (only a torn last line is skipped); "
                         "fix or remove the line")
    if read.torn:
        log.warning("%s: skipped %d torn last line(s), written when a stop cut a write short", path, read.torn)
    return read.records if key is None else first_per_key(read.records, key)


def first_per_key(records: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable | None]) -> list[dict[str, Any]]:
    """The first record of each key, in order; records whose key is None are all kept."""
    seen: set[Hashable] = set()
    out = []
    for record in records:
        k = key(record)
        if k is None or k not in seen:
            out.append(record)
        if k is not None:
            seen.add(k)
    return out


def dead_letter_key(record: dict[str, Any]) -> Hashable | None:
    """A dead letter's idempotency key: where its payload was read (``source``: ``topic/partition/offset``,
    ``replay/<n>``), its reason and the payload's sha256. A resumed run that reads the payload again
    writes the same record again (Bytewax's output is at-least-once); this key tells that copy from a
    new message with the same content, which has another source. None for a record without
    ``source`` (written before it existed): such lines are each counted.

    >>> a = {"source": "events/0/17", "reason": "malformed_json", "raw_sha256": "ab"}
    >>> dead_letter_key(a) == dead_letter_key(dict(a)), dead_letter_key(a) == dead_letter_key({**a, "source": "events/0/18"})
    (True, False)
    >>> dead_letter_key({"reason": "malformed_json"}) is None
    True
    """
    source = record.get("source")
    return None if source is None else (source, record.get("reason"), record.get("raw_sha256"))


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
