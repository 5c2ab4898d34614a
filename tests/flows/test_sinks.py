"""flows.sinks on real files: whole files written atomically, JSONL appends that survive a torn last line,
buffer snapshots named by operators.files.user_file_name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import flows.sinks as sinks
from flows.outputs import read_jsonl
from flows.sinks import JsonlSink, SnapshotSink, _DecisionPart, read_decisions
from operators.files import user_file_name


def _row(user: str, i: int) -> dict:
    return {"user_id": user, "event_id": f"{user}-{i}", "seq": i, "ts_ms": i, "policy": "fifo", "outcome": "admitted",
            "admitted": True, "evicted_id": None, "domain": "general", "eoe": 0.0, "dss": 0.0, "idd": 0.0,
            "max_sim": 0.0, "score": 0.0, "n_tokens": 1, "labeled": False, "buffer_size": i + 1,
            "embed_seconds": 0.0, "score_seconds": 0.0, "select_seconds": 0.0}


def test_a_decision_part_that_fails_to_write_leaves_no_temp_file_and_keeps_its_rows(tmp_path: Path, monkeypatch):
    part = _DecisionPart(tmp_path, flush_rows=10, flush_seconds=None, resume=None)
    part.write_batch([_row("ann", 0)])

    def fail(table, where):
        where.write(b"PAR1 half a part")
        raise OSError("disk full")

    monkeypatch.setattr(sinks.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        part.close()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    part.close()  # the rows were kept: the next flush writes them
    assert [r["event_id"] for r in read_decisions(tmp_path).to_pylist()] == ["ann-0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000000.parquet"]


@pytest.mark.parametrize("tail, kept", [(b'{"user_id": "ann", "ev', []), (b'{"user_id": "ann"}', [{"user_id": "ann"}])])
def test_appending_after_a_torn_last_line_keeps_the_file_readable(tmp_path: Path, caplog, tail, kept):
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(b'{"user_id": "bob"}\n' + tail)
    with caplog.at_level(logging.WARNING, logger="flows.sinks"):
        part = JsonlSink(path).build("dead", 0, 1)
    part.write_batch([{"user_id": "cat"}])
    part.close()
    assert read_jsonl(path) == [{"user_id": "bob"}, *kept, {"user_id": "cat"}]
    assert ("removed a torn last line" in caplog.text) == (not kept)


def test_a_torn_line_longer_than_a_read_block_is_found(tmp_path: Path):
    path = tmp_path / "annotation_requests.jsonl"
    path.write_bytes(b'{"a": 1}\n' + b'{"prompt": "' + b"x" * 200_000)
    part = JsonlSink(path).build("ask", 0, 1)
    part.close()
    assert path.read_bytes() == b'{"a": 1}\n'


def test_snapshots_of_ids_differing_in_case_never_share_a_file(tmp_path: Path):
    part = SnapshotSink(tmp_path).build("snapshot", 0, 1)
    part.write_batch([{"user_id": u, "samples": []} for u in ("alice", "Alice", "../x")])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{user_file_name(u)}.json" for u in ("alice", "Alice", "../x"))
    assert len({n.lower() for n in names}) == 3


def test_a_snapshot_under_the_old_name_is_replaced_not_left_stale(tmp_path: Path):
    # Written by an older version, which kept case: "Alice.json" and "Bob.Smith.json".
    (tmp_path / "Alice.json").write_text(json.dumps({"user_id": "Alice", "samples": ["old"]}))
    (tmp_path / "Bob.Smith.json").write_text(json.dumps({"user_id": "Bob.Smith", "samples": ["old"]}))
    part = SnapshotSink(tmp_path).build("snapshot", 0, 1)
    part.write_batch([{"user_id": "Alice", "samples": ["new"]}])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["Bob.Smith.json", f"{user_file_name('Alice')}.json"])  # Bob not seen yet: kept
    assert json.loads((tmp_path / f"{user_file_name('Alice')}.json").read_text())["samples"] == ["new"]


def test_an_old_name_holding_another_users_snapshot_is_kept(tmp_path: Path):
    # On a case-insensitive disk "Alice.json" is also alice's own "alice.json": only its owner may remove it.
    (tmp_path / "Alice.json").write_text(json.dumps({"user_id": "alice", "samples": []}))
    SnapshotSink(tmp_path).build("snapshot", 0, 1).write_batch([{"user_id": "Alice", "samples": []}])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["Alice.json", f"{user_file_name('Alice')}.json"])


def test_the_decision_schema_is_generated_from_the_row_and_unchanged():
    import pyarrow as pa

    # The columns as the decision log has always had them: generating them from DecisionRow changes nothing.
    s, i, f, b = pa.string(), pa.int64(), pa.float64(), pa.bool_()
    assert sinks.DECISION_SCHEMA == pa.schema([
        ("user_id", s), ("event_id", s), ("seq", i), ("ts_ms", i), ("policy", s), ("outcome", s), ("admitted", b),
        ("evicted_id", s), ("domain", s), ("eoe", f), ("dss", f), ("idd", f), ("max_sim", f), ("score", f),
        ("n_tokens", i), ("labeled", b), ("buffer_size", i), ("embed_seconds", f), ("score_seconds", f),
        ("select_seconds", f),
    ])
    assert all(field.nullable for field in sinks.DECISION_SCHEMA)


def test_the_longest_valid_user_id_gets_a_snapshot(tmp_path: Path):
    # A 256-character id (the longest valid one) is 256 bytes or more under the old naming scheme: looking for
    # the stale old file failed with ENAMETOOLONG and stopped the flow (found by the hostile-input fault suite).
    users = ["u" * 256, "\u05e9" * 256]
    part = SnapshotSink(tmp_path / "buffers").build("snapshot", 0, 1)
    part.write_batch([{"user_id": u, "samples": []} for u in users])
    assert sorted(json.loads(p.read_text())["user_id"] for p in (tmp_path / "buffers").iterdir()) == sorted(users)
