"""flows/spool.py: the writer's lines, the source's offsets, resume, idle stop, and forgetting a user in it."""

from __future__ import annotations

import json
import os
import stat

import pytest
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.testing import TestingSink, run_main

from flows.forget import forget_user
from flows.spool import ANNOTATIONS_FILE, EVENTS_FILE, SpoolSource, SpoolWriter


def event(user: str, i: int) -> dict:
    return {"event_id": f"{user}-{i}", "user_id": user, "ts": i, "prompt": f"question {i} é"}


def read_all(folder, resume=None, **kw):
    source = SpoolSource(folder, idle_stop_s=0.5, poll_seconds=0.05, **kw)
    parts = {name: source.build_part("spool", name, (resume or {}).get(name)) for name in source.list_parts()}
    got = {name: [] for name in parts}
    for name, part in parts.items():
        while True:
            try:
                got[name] += part.next_batch()
            except StopIteration:
                break
    return got, {name: part.snapshot() for name, part in parts.items()}


def test_the_writer_makes_private_files_of_whole_lines(tmp_path):
    folder = tmp_path / "spool"
    writer = SpoolWriter(folder)
    writer.append("event", event("ann", 1))
    writer.append("annotation", {"event_id": "ann-1", "user_id": "ann", "ts": 2, "response": "yes"})
    writer.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (EVENTS_FILE, ANNOTATIONS_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert json.loads((folder / EVENTS_FILE).read_text()) == event("ann", 1)
    with pytest.raises(ValueError, match="channel"):
        SpoolWriter(folder).append("other", {})


def test_the_source_reads_both_channels_resumes_after_its_offset_and_waits_for_whole_lines(tmp_path):
    writer = SpoolWriter(tmp_path)
    for i in range(3):
        writer.append("event", event("ann", i))
    got, offsets = read_all(tmp_path)
    assert [json.loads(v)["event_id"] for _, v in got["event"]] == ["ann-0", "ann-1", "ann-2"]
    assert {c for c, _ in got["event"]} == {"event"} and got["annotation"] == []
    writer.append("event", event("ann", 3))
    with open(tmp_path / EVENTS_FILE, "ab") as fh:  # a record still being written: not read yet
        fh.write(b'{"event_id": "half')
    got, offsets = read_all(tmp_path, resume=offsets)
    assert [json.loads(v)["event_id"] for _, v in got["event"]] == ["ann-3"]
    # A writer opened after a crash ends the torn line, so the next record is whole; the torn one
    # is read as it is and the stream dead-letters it (malformed_json).
    SpoolWriter(tmp_path).append("event", event("ann", 4))
    got, _ = read_all(tmp_path, resume=offsets)
    assert [v for _, v in got["event"]] == [b'{"event_id": "half', json.dumps(event("ann", 4), ensure_ascii=False,
                                                                             separators=(",", ":")).encode()]


def test_a_truncated_spool_is_an_error_naming_the_file(tmp_path):
    writer = SpoolWriter(tmp_path)
    writer.append("event", event("ann", 0))
    _, offsets = read_all(tmp_path)
    (tmp_path / EVENTS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match="shorter"):
        read_all(tmp_path, resume=offsets)


def test_the_source_runs_in_a_flow_and_a_stop_ends_it(tmp_path):
    from flows import stop

    SpoolWriter(tmp_path).append("event", event("ann", 0))
    out: list = []
    flow = Dataflow("spool_test")
    op.output("out", op.input("read", flow, SpoolSource(tmp_path, idle_stop_s=1.0, poll_seconds=0.05)), TestingSink(out))
    run_main(flow)
    assert [c for c, _ in out] == ["event"]
    stop.request_stop()
    try:
        out.clear()
        flow = Dataflow("spool_stopped")
        op.output("out", op.input("read", flow, SpoolSource(tmp_path)), TestingSink(out))
        run_main(flow)  # no idle stop: only the stop request ends it
        assert out == []
    finally:
        stop.reset()


def test_forget_blanks_the_users_spool_lines_in_place(tmp_path):
    spool = tmp_path / "spool"
    writer = SpoolWriter(spool)
    for user in ("ann", "ben", "ann"):
        writer.append("event", event(user, 1))
    writer.append("annotation", {"event_id": "ann-1", "user_id": "ann", "ts": 2, "response": "secret"})
    writer.close()
    size = (spool / EVENTS_FILE).stat().st_size
    done = forget_user("ann", tmp_path, tmp_path / "adapters")
    assert done.served_lines == 3 and "served turns and feedback  3" in "\n".join(done.lines())
    assert (spool / EVENTS_FILE).stat().st_size == size  # offsets a stream saved stay valid
    text = (spool / EVENTS_FILE).read_text() + (spool / ANNOTATIONS_FILE).read_text()
    assert "ann" not in text and "secret" not in text and "ben-1" in text
    got, _ = read_all(spool)
    assert [json.loads(v)["user_id"] for _, v in got["event"]] == ["ben"] and got["annotation"] == []
    assert stat.S_IMODE(os.stat(spool / EVENTS_FILE).st_mode) == 0o600
