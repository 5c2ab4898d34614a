"""File sinks of the selection stream: decision log (Parquet), dead letters (JSONL), buffer snapshots (JSON).

Bytewax output is at-least-once, so every sink is idempotent by key: decision
rows by ``(user_id, event_id)`` (readers keep the last copy), snapshots by
user (each write replaces the file), dead letters by their line content.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

DECISION_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("event_id", pa.string()),
    ("seq", pa.int64()),
    ("ts_ms", pa.int64()),
    ("policy", pa.string()),
    ("outcome", pa.string()),
    ("admitted", pa.bool_()),
    ("evicted_id", pa.string()),
    ("domain", pa.string()),
    ("eoe", pa.float64()),
    ("dss", pa.float64()),
    ("idd", pa.float64()),
    ("max_sim", pa.float64()),
    ("score", pa.float64()),
    ("n_tokens", pa.int64()),
    ("labeled", pa.bool_()),
    ("buffer_size", pa.int64()),
    ("embed_seconds", pa.float64()),
    ("score_seconds", pa.float64()),
    ("select_seconds", pa.float64()),
])


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class _DecisionPart(StatefulSinkPartition[dict, list]):
    def __init__(self, folder: Path, flush_rows: int, pending: list | None):
        self._folder = folder
        self._flush_rows = flush_rows
        self._pending: list[dict] = list(pending or [])

    def write_batch(self, values: list[dict]) -> None:
        self._pending.extend(values)
        if len(self._pending) >= self._flush_rows:
            self._flush()

    def snapshot(self) -> list:
        # Rows not yet on disk travel with the checkpoint, so a resumed run writes them.
        return list(self._pending)

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        self._folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._pending, schema=DECISION_SCHEMA)
        final = self._folder / f"part-{uuid.uuid4().hex}.parquet"
        tmp = self._folder / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self._pending = []


class DecisionLogSink(FixedPartitionedSink[dict, list]):
    """Appends decision rows to ``folder`` as Parquet part files.

    Items are ``(key, row)``; all rows go to one partition, flushed every
    ``flush_rows`` rows and at the end of the run.
    """

    def __init__(self, folder: str | Path, flush_rows: int = 2000):
        self.folder = Path(folder)
        self.flush_rows = flush_rows

    def list_parts(self) -> list[str]:
        return ["decisions"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: list | None) -> _DecisionPart:
        return _DecisionPart(self.folder, self.flush_rows, resume_state)


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
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            self._fh.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class JsonlSink(DynamicSink[dict]):
    """Appends dicts as JSON lines (one file per worker: ``<stem>.w<N>.jsonl`` beyond worker 0)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPart:
        path = self.path if worker_index == 0 else self.path.with_suffix(f".w{worker_index}.jsonl")
        return _JsonlPart(path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Lines of a JSONL output, duplicates (from at-least-once replays) removed, order kept."""
    seen: dict[str, dict] = {}
    for p in sorted(Path(path).parent.glob(Path(path).stem + "*.jsonl")):
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                seen.setdefault(line, json.loads(line))
    return list(seen.values())


class _SnapshotPart(StatelessSinkPartition[dict]):
    def __init__(self, folder: Path):
        self._folder = folder

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            name = _safe_name(item["user_id"])
            atomic_write_text(self._folder / f"{name}.json", json.dumps(item, ensure_ascii=False, indent=1))

    def close(self) -> None:
        pass


class SnapshotSink(DynamicSink[dict]):
    """Writes each user's buffer view to ``folder/<user>.json``, replacing the previous one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SnapshotPart:
        return _SnapshotPart(self.folder)


def _safe_name(user_id: str) -> str:
    """A file name for a user id: keep it readable, but never a path."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in user_id).lstrip(".")
    if keep != user_id:  # two ids may clean to the same name: tell them apart
        keep = f"{keep}-{hashlib.sha1(user_id.encode()).hexdigest()[:8]}"
    return keep
