"""``edgetune forget --user U``: delete everything edgetune keeps of one user.

Each user's model is trained only on that user's samples (per-user LoRA adapters over a
frozen base model; selection state is per user too), so deleting the user's files below
leaves every other user's outputs exactly as they would be had this user never been seen:
exact unlearning, with nothing to retrain.

What is deleted, in the output folder (``output.dir``), the adapters folder
(``train.adapters_dir``, default ``<out>/adapters``) and the recovery store:

- ``buffers/<user>.json``: the buffer snapshot;
- ``decisions/part-*.parquet``: the user's rows (each part that held some is rewritten
  without them, atomically, 0600; a part left empty is removed);
- ``dead_letters*.jsonl``: the user's dead letters, and those that name no user but whose
  payload excerpt carries ``"user_id": "<user>"`` (a payload that did not parse);
- ``annotation_requests*.jsonl``, ``heldout.jsonl``: the user's lines;
- ``spool/conversations.jsonl``, ``spool/annotations.jsonl`` (``edgetune serve``'s served turns and
  feedback, ``flows/spool.py``): the user's lines are overwritten with spaces in place, so the byte offsets
  a stream reading the spool has saved stay valid (blank lines are skipped);
- ``<adapters>/.pending/``: the user's journaled training runs;
- ``<adapters>/<user>/``: every adapter version with its manifest;
- the recovery store: the user's state snapshots and pending decision rows
  (``flows.recovery``); a resumed run then starts the user afresh.

JSONL files are rewritten with the other lines byte for byte as they were; a file that
held none of the user's lines is not touched. A last line a stop cut short (not JSON, so
unreadable anyway) is removed if the user's id appears in it at all. Synthetic pairs are never written to disk
(they live in a running trainer's memory), so there are none to delete here.

Not reached: Kafka topics, which keep the raw events until their retention removes them
(see the README), and log output collected elsewhere.

Refused while a run uses the folders: on Linux, any other process with a file open under
them (found in ``/proc``) is named and nothing is changed. Elsewhere this cannot be seen:
stop the run first.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.outputs import jsonl_files
from flows.recovery import forget_in_store
from flows.sinks import _old_snapshot_name
from flows.trainer import PENDING_DIR
from operators.files import atomic_write, user_file_name

__all__ = ["Forgotten", "forget_user", "names_user", "processes_using"]


@dataclass
class Forgotten:
    """How much of each kind was deleted (``files``: the files changed or removed)."""

    buffer: int = 0
    decision_rows: int = 0
    dead_letters: int = 0
    annotation_requests: int = 0
    heldout_rows: int = 0
    served_lines: int = 0
    pending_runs: int = 0
    adapter_versions: int = 0
    recovery_snapshots: int = 0
    recovery_decision_rows: int = 0
    files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was deleted, one kind a line, for the command's output."""
        return [
            f"buffer snapshot            {self.buffer}",
            f"decision rows              {self.decision_rows}",
            f"dead letters               {self.dead_letters}",
            f"annotation requests        {self.annotation_requests}",
            f"served turns and feedback  {self.served_lines} (spool lines blanked)",
            f"held-out rows              {self.heldout_rows}",
            f"pending training runs      {self.pending_runs}",
            f"adapter versions           {self.adapter_versions}",
            f"recovery state snapshots   {self.recovery_snapshots} (and {self.recovery_decision_rows} pending decision rows)",
            "synthetic pairs            none on disk (kept only in a running trainer's memory)",
        ]


def forget_user(user: str, out: Path, adapters: Path, recovery: Path | None = None,
                spool: Path | None = None) -> Forgotten:
    """Delete ``user``'s data under ``out``, ``adapters`` and ``recovery``; see the module docstring.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "heldout.jsonl").write_text('{"user_id": "ann", "prompt": "a"}\\n{"user_id": "ben", "prompt": "b"}\\n')
    >>> forget_user("ann", out, out / "adapters").heldout_rows, (out / "heldout.jsonl").read_text()
    (1, '{"user_id": "ben", "prompt": "b"}\\n')
    """
    if not isinstance(user, str) or not user:
        raise ValueError(f"forget --user {user!r}: give a non-empty user id")
    spool = out / "spool" if spool is None else spool
    roots = [p for p in (out, adapters, recovery, spool) if p is not None]
    busy = processes_using(roots)
    if busy:
        who = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in busy[:5])
        raise ValueError(f"forget: a process has files open under {', '.join(map(str, roots))} ({who}); "
                         "stop the run first, then forget (a running stream would write the user's data again)")
    done = Forgotten()
    done.buffer = _forget_buffer(out / "buffers", user, done)
    done.decision_rows = _forget_decisions(out / "decisions", user, done)
    done.dead_letters = _forget_lines(out / "dead_letters.jsonl", user, lambda r: _dead_letter_of(r, user), done)
    done.annotation_requests = _forget_lines(out / "annotation_requests.jsonl", user,
                                             lambda r: r.get("user_id") == user, done)
    done.heldout_rows = _forget_lines(out / "heldout.jsonl", user, lambda r: r.get("user_id") == user, done,
                                      workers=False)
    for name in ("conversations.jsonl", "annotations.jsonl"):
        done.served_lines += _blank_lines(spool / name, user, done)
    done.pending_runs = _forget_pending(adapters / PENDING_DIR, user, done)
    done.adapter_versions = _forget_adapters(adapters, user, done)
    if recovery is not None:
        store = forget_in_store(recovery, user)
        done.recovery_snapshots, done.recovery_decision_rows = store.snapshots, store.decision_rows
    return done


def processes_using(roots: list[Path]) -> list[tuple[int, str]]:
    """``(pid, command line)`` of other processes with a file open under ``roots`` (Linux ``/proc``; else ``[]``)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    prefixes = [str(Path(r).resolve()) + os.sep for r in roots if Path(r).exists()]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if any(t.startswith(p) for t in targets for p in prefixes):
            found.append((int(entry.name), cmd[:200]))
    return sorted(found)


def _forget_buffer(folder: Path, user: str, done: Forgotten) -> int:
    removed = 0
    for name in dict.fromkeys((user_file_name(user), _old_snapshot_name(user))):  # older folders used the old name
        for path in [folder / f"{name}.json", *folder.glob(f".{name}.json.*.tmp")]:  # and a write a crash left
            if path.is_file() and (path.suffix != ".json" or _snapshot_user(path) == user):
                path.unlink()
                done.files.append(str(path))
                removed += path.suffix == ".json"
    return removed


def _snapshot_user(path: Path) -> str | None:
    try:
        return json.loads(path.read_bytes()).get("user_id")
    except (ValueError, AttributeError):
        return None


def _forget_decisions(folder: Path, user: str, done: Forgotten) -> int:
    removed = 0
    for leftover in folder.glob(".part-*.tmp"):  # a part a crash left half-written: it may hold the user's rows
        leftover.unlink()
        done.files.append(str(leftover))
    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part)
        keep = pc.fill_null(pc.not_equal(table["user_id"], pa.scalar(user)), True)
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            continue
        removed += table.num_rows - kept.num_rows
        done.files.append(str(part))
        if kept.num_rows == 0:
            part.unlink()
            continue
        atomic_write(part, lambda fh: pq.write_table(kept, fh))  # 0600, replaced in one rename
    return removed


def _forget_lines(path: Path, user: str, belongs, done: Forgotten, *, workers: bool = True) -> int:
    """Rewrite ``path`` (and its per-worker files) without the lines ``belongs`` says are the user's."""
    removed = 0
    for p in jsonl_files(path) if workers else [p for p in [path] if p.is_file()]:
        data = p.read_bytes()
        lines = data.split(b"\n")
        kept = [line for line in lines if not _line_belongs(line, belongs, user)]
        if len(kept) == len(lines):
            continue
        removed += len(lines) - len(kept)
        atomic_write(p, b"\n".join(kept))
        done.files.append(str(p))
    return removed


def _blank_lines(path: Path, user: str, done: Forgotten) -> int:
    """Overwrite the user's lines of ``path`` with as many spaces (offsets into the file stay valid)."""
    if not path.is_file():
        return 0
    lines = path.read_bytes().split(b"\n")
    mine = [_line_belongs(line, lambda r: r.get("user_id") == user, user) for line in lines]
    if not any(mine):
        return 0
    atomic_write(path, b"\n".join(b" " * len(line) if m else line for line, m in zip(lines, mine)))
    done.files.append(str(path))
    return sum(mine)


def _line_belongs(line: bytes, belongs, user: str) -> bool:
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except ValueError:  # a line a stop cut short, unreadable anyway: removed if the user's id appears in it at all
        return any(form.encode() in line for form in (user, json.dumps(user)[1:-1], json.dumps(user, ensure_ascii=False)[1:-1]))
    return isinstance(record, dict) and belongs(record)


def _dead_letter_of(record: dict, user: str) -> bool:
    if record.get("user_id") == user:
        return True
    if record.get("user_id") is not None:
        return False
    raw = record.get("raw")
    if not isinstance(raw, str):
        return False
    if record.get("raw_encoding") == "base64":
        try:
            raw = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    return names_user(raw, user)


def names_user(text: str, user: str) -> bool:
    """Whether JSON ``text`` (whole or cut) gives ``user`` as its ``user_id``.

    >>> names_user('{"event_id": "e1", "user_id": "ann", "prompt": "unterminated', "ann")
    True
    >>> names_user('{"user_id": "anna"}', "ann"), names_user('{"prompt": "ann"}', "ann")
    (False, False)
    """
    spellings = {json.dumps(user), json.dumps(user, ensure_ascii=False)}
    return any(re.search(r'"user_id"\s*:\s*' + re.escape(s), text) for s in spellings)


def _forget_pending(folder: Path, user: str, done: Forgotten) -> int:
    removed = 0
    if not folder.is_dir():
        return 0
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        try:
            mine = json.loads(text).get("user_id") == user
        except (ValueError, AttributeError):  # a file renamed .bad: the user's if it names them
            mine = names_user(text, user)
        if mine:
            path.unlink()
            done.files.append(str(path))
            removed += path.suffix == ".json"
    return removed


def _forget_adapters(root: Path, user: str, done: Forgotten) -> int:
    folder = root / user_file_name(user)
    if not folder.is_dir():
        return 0
    versions = sum(1 for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"v[1-9][0-9]*", p.name))
    shutil.rmtree(folder)
    done.files.append(str(folder))
    return versions
