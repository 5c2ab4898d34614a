"""File sinks of the selection stream: decision log (Parquet), dead letters (JSONL), buffer snapshots (JSON).

Bytewax output is at-least-once, so a resumed run can emit an item again:
decision rows are keyed by ``(user_id, event_id)`` (readers keep the last copy),
snapshots by user (each write replaces the file), annotation requests by
``(user_id, event_id)`` (``read_jsonl(key=...)``), dead letters by where their payload
was read (``flows.outputs.dead_letter_key``): a re-emitted line is in the file twice and
read once.

Whole files (parts, snapshots) go through ``operators.files.atomic_write``; the
JSONL logs are appended, see that module for why they are not fsynced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from flows.deadletters import json_line
from flows.outputs import read_jsonl  # the readers live in flows/outputs.py; re-exported next to its sink
from operators.files import atomic_write, open_private_append, private_mkdir, user_file_name
from operators.rows import DecisionRow

__all__ = ["DECISION_SCHEMA", "DecisionLogSink", "JsonlSink", "SnapshotSink", "read_decisions", "read_jsonl"]

log = logging.getLogger(__name__)

_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
DECISION_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in DecisionRow.columns()])
"""The decision log's columns, generated from ``operators.rows.DecisionRow`` (every column nullable)."""


_PART = re.compile(r"part-(\d{8})\.parquet")


class _DecisionPart(StatefulSinkPartition[dict, dict]):
    """Buffers rows and writes them as numbered part files; its snapshot is ``{"pending", "next_part"}``.

    Numbered parts make the log exactly-once on disk across a crash: a part
    numbered at or above the snapshot's ``next_part`` was written after that
    checkpoint, so its rows are either in the snapshot's ``pending`` or will be
    emitted again by the resumed run. Such parts are deleted when the partition
    is rebuilt from the snapshot, and the rows are written once more.
    """

    def __init__(self, folder: Path, flush_rows: int, flush_seconds: float | None, resume: dict | list | None):
        self._folder = private_mkdir(folder)
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        existing = _numbered_parts(folder)
        if isinstance(resume, dict):
            self._pending: list[dict] = list(resume["pending"])
            self._next_part = int(resume["next_part"])
            stale = [p for n, p in existing if n >= self._next_part]
            for path in stale:
                path.unlink(missing_ok=True)
            if stale:
                log.info("decision log: removed %d part files written after the last checkpoint; "
                         "their rows are written again", len(stale))
        else:  # a fresh run, or a snapshot from before numbered parts (a plain list of rows)
            self._pending = list(resume or [])
            self._next_part = max((n for n, _ in existing), default=-1) + 1
        self._oldest: float | None = time.monotonic() if self._pending else None
        self._closed = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_seconds is not None:
            self._timer = threading.Thread(target=self._flush_when_due, name="edgetune-decision-flush", daemon=True)
            self._timer.start()

    def write_batch(self, values: list[dict]) -> None:
        with self._lock:
            if values and self._oldest is None:
                self._oldest = time.monotonic()
            self._pending.extend(values)
            if len(self._pending) >= self._flush_rows or self._due():
                self._flush()

    def snapshot(self) -> dict:
        # Rows not yet on disk travel with the checkpoint, so a resumed run writes them.
        with self._lock:
            return {"pending": list(self._pending), "next_part": self._next_part}

    def close(self) -> None:
        self._closed.set()
        if self._timer is not None:
            self._timer.join()
        with self._lock:
            self._flush()

    def _due(self) -> bool:
        return (self._flush_seconds is not None and self._oldest is not None
                and time.monotonic() - self._oldest >= self._flush_seconds)

    def _flush_when_due(self) -> None:
        # Between batches nothing calls the sink: this thread keeps disk at most flush_seconds behind.
        step = min(1.0, self._flush_seconds / 2)
        while not self._closed.wait(step):
            with self._lock:
                if self._due():
                    self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = _decision_table(self._pending)
        atomic_write(self._folder / f"part-{self._next_part:08d}.parquet", lambda fh: pq.write_table(table, fh))
        self._next_part += 1
        self._pending = []
        self._oldest = None


def _decision_table(rows: list[dict]) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows, schema=DECISION_SCHEMA)
    except UnicodeEncodeError:
        # A lone surrogate (a JSON escape such as "\\udc80" in an id) does not encode as UTF-8:
        # spell it out rather than lose the batch.
        return pa.Table.from_pylist([{k: _utf8_safe(v) for k, v in r.items()} for r in rows], schema=DECISION_SCHEMA)


def _utf8_safe(value: Any) -> Any:
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _numbered_parts(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("part-*.parquet"):
        match = _PART.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


class DecisionLogSink(FixedPartitionedSink[dict, dict]):
    """Appends decision rows to ``folder`` as Parquet part files (0600, folder 0700).

    Items are ``(key, row)``; all rows go to one partition, flushed every
    ``flush_rows`` rows, at least every ``flush_seconds`` (None: only by rows),
    and at the end of the run. Exactly once on disk across crashes when run
    with a recovery store (see ``_DecisionPart``).
    """

    def __init__(self, folder: str | Path, flush_rows: int = 2000, flush_seconds: float | None = None):
        self.folder = Path(folder)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds

    def list_parts(self) -> list[str]:
        return ["decisions"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: dict | list | None) -> _DecisionPart:
        return _DecisionPart(self.folder, self.flush_rows, self.flush_seconds, resume_state)


def read_decisions(folder: str | Path) -> pa.Table:
    """All decision rows under ``folder``, one per ``(user_id, event_id)``, in stream order per user."""
    folder = Path(folder)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return DECISION_SCHEMA.empty_table()
    table = pa.concat_tables(pq.read_table(p, schema=DECISION_SCHEMA) for p in parts)
    rows = {(r["user_id"], r["event_id"]): r for r in table.to_pylist()}
    ordered = sorted(rows.values(), key=lambda r: (r["user_id"], r["seq"]))
    return pa.Table.from_pylist(ordered, schema=DECISION_SCHEMA)


class _JsonlPart(StatelessSinkPartition[dict]):
    def __init__(self, path: Path):
        private_mkdir(path.parent)
        _end_torn_line(path)
        self._fh = open_private_append(path)

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            self._fh.write((json_line(item) + "\n").encode("utf-8"))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class JsonlSink(DynamicSink[dict]):
    """Appends dicts as JSON lines, 0600 (one file per worker: ``<stem>.w<N>.jsonl`` beyond worker 0).

    Lines are compact JSON (``flows.deadletters.json_line``): any text a user sent encodes.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPart:
        path = self.path if worker_index == 0 else self.path.with_suffix(f".w{worker_index}.jsonl")
        return _JsonlPart(path)


def _end_torn_line(path: Path) -> None:
    """Before appending to ``path``: if a stop cut its last line short, end that line, so it stays the last.

    A last line without its newline that is a whole JSON object gets the newline;
    any other unterminated tail is cut off (logged) — appended to, it would turn into
    a bad line in the middle of the file. With a recovery store its record is emitted
    again after the last checkpoint.
    """
    try:
        fh = open(path, "r+b")
    except FileNotFoundError:
        return
    with fh:
        size = fh.seek(0, os.SEEK_END)
        start = size
        while start > 0:  # find where the last line starts, a block at a time from the end
            step = min(start, 1 << 16)
            fh.seek(start - step)
            block = fh.read(step)
            if start == size and block.endswith(b"\n"):
                return  # the file ends with a whole line
            cut = block.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        fh.seek(start)
        tail = fh.read()
        try:
            whole = isinstance(json.loads(tail), dict)
        except ValueError:
            whole = False
        if whole:
            fh.write(b"\n")
        else:
            fh.truncate(start)
            log.warning("%s: removed a torn last line (%d bytes, a write cut short by a stop) before appending",
                        path, len(tail))


class _SnapshotPart(StatelessSinkPartition[dict]):
    def __init__(self, folder: Path):
        self._folder = private_mkdir(folder)

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            user = item["user_id"]
            text = json.dumps(item, ensure_ascii=False, indent=1)
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a JSON escape: write escapes instead
                data = json.dumps(item, indent=1).encode("ascii")
            path = self._folder / f"{user_file_name(user)}.json"
            atomic_write(path, data)
            self._remove_old_name(user, path)

    def _remove_old_name(self, user: str, path: Path) -> None:
        # Output folders written before user_file_name named snapshots by _old_snapshot_name;
        # once the user's snapshot is written under the new name, the old file is stale.
        old = self._folder / f"{_old_snapshot_name(user)}.json"
        try:
            if old.name == path.name or not old.is_file():
                return
        except OSError:  # e.g. ENAMETOOLONG: the old scheme could not have written such a name
            return
        try:
            owner = json.loads(old.read_bytes()).get("user_id")
        except (OSError, ValueError, AttributeError):
            return
        if owner == user:  # on a case-insensitive disk "Alice.json" may be alice's own file: keep that
            old.unlink(missing_ok=True)

    def close(self) -> None:
        pass


class SnapshotSink(DynamicSink[dict]):
    """Writes each user's buffer view to ``folder/<user_file_name(user)>.json``, replacing the previous one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SnapshotPart:
        return _SnapshotPart(self.folder)


def _old_snapshot_name(user_id: str) -> str:
    """The snapshot name before ``user_file_name`` (it kept case: "Alice" and "alice" met on case-insensitive disks)."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in user_id).lstrip(".")
    if keep != user_id:  # two ids may clean to the same name: tell them apart
        keep = f"{keep}-{hashlib.sha1(user_id.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return keep
