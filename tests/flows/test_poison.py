"""Poison messages over the real Tansu broker: oversized payloads are dead-lettered, bounded, and never stop the flow."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from kafka import KafkaProducer

from flows.deadletters import bound_dead_letter, dead_letter_bytes, parse_bounded
from flows.kafka_flow import build_flow
from flows.outputs import dead_letter_key
from flows.sinks import _DecisionPart, read_decisions, read_jsonl
from tests.flows.test_kafka_flow import PARTITIONS, components, consume_all, event, settings_for, topics  # noqa: F401

MB = 1_000_000


def big_event(user: str, i: int, size: int) -> bytes:
    """A valid event whose prompt makes the message ``size`` bytes long."""
    head = event(user, i)
    return head[:-2] + b" " + b"x" * (size - len(head) - 1) + head[-2:]


def produce_big(broker, topic: str, values: list[bytes]) -> None:
    # A producer that allows 32 MB requests, as a careless client might use.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=32 * MB)
    for value in values:
        user = json.loads(value[:200].split(b'"prompt"')[0] + b'"x": 0}')["user_id"]
        producer.send(topic, key=user.encode(), value=value, partition=hash(user) % PARTITIONS)
    producer.flush()
    producer.close()


# --- units -------------------------------------------------------------------------------------


def test_big_event_is_valid_json_of_the_asked_size() -> None:
    value = big_event("ann", 3, 2 * MB)
    assert len(value) == 2 * MB and json.loads(value)["event_id"] == "ann-3"


@pytest.mark.parametrize("size", [1_500_000, 20_000_000])
def test_a_payload_over_the_limit_is_rejected_before_parsing(size: int) -> None:
    rejected = parse_bounded(("event", big_event("ann", 1, size)), max_bytes=1 << 20, max_chars=20_000)
    assert rejected.reason == "too_large" and f"{size} bytes" in rejected.detail
    assert rejected.user_id is None  # not parsed, so nothing was read out of it


def test_a_payload_at_the_limit_is_parsed_one_byte_more_is_not() -> None:
    value = big_event("ann", 1, 4096)
    assert parse_bounded(("event", value), max_bytes=4096, max_chars=20_000).event_id == "ann-1"
    assert parse_bounded(("event", value), max_bytes=4095, max_chars=20_000).reason == "too_large"


@pytest.mark.parametrize("payload", [b"x" * 50_000, "é".encode() * 30_000, b"\xff" * 50_000])
def test_a_dead_letter_keeps_an_excerpt_the_size_and_the_hash(payload: bytes) -> None:
    try:
        raw, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        raw, encoding = base64.b64encode(payload).decode(), "base64"
    record = {"reason": "malformed_json", "detail": "d" * 10_000, "raw": raw, "raw_encoding": encoding,
              "user_id": "u" * 5_000, "event_id": None}
    d = bound_dead_letter(record, excerpt_bytes=4096)
    assert d["raw_bytes"] == len(payload) and d["raw_sha256"] == hashlib.sha256(payload).hexdigest()
    assert d["raw_truncated"] is True
    excerpt = d["raw"].encode() if d["raw_encoding"] == "utf-8" else __import__("base64").b64decode(d["raw"])
    assert len(excerpt) <= 4096 and payload.startswith(excerpt) and len(excerpt) >= 4093
    assert len(d["detail"]) <= 1025 and len(d["user_id"]) <= 257
    assert len(json.dumps(d, ensure_ascii=False).encode()) <= dead_letter_bytes(4096)
    assert record["raw"] == raw  # the input is not changed


def test_decision_parts_written_after_the_checkpoint_are_replaced_on_resume(tmp_path: Path) -> None:
    rows = [{"user_id": "u", "event_id": f"e{i}", "seq": i} for i in range(6)]
    part = _DecisionPart(tmp_path, flush_rows=2, flush_seconds=None, resume=None)
    part.write_batch(rows[:2])
    checkpoint = part.snapshot()  # part 0 on disk, nothing pending
    part.write_batch(rows[2:4])  # parts 1 and 2: after the checkpoint; then the process dies
    part.write_batch(rows[4:])
    assert len(list(tmp_path.glob("part-*.parquet"))) == 3

    # The resumed run emits rows 2.. again, batched differently (one part instead of two).
    resumed = _DecisionPart(tmp_path, flush_rows=4, flush_seconds=None, resume=checkpoint)
    resumed.write_batch(rows[2:])
    resumed.close()
    on_disk = [r["event_id"] for p in sorted(tmp_path.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert on_disk == [f"e{i}" for i in range(6)]


def test_pending_rows_travel_with_the_checkpoint(tmp_path: Path) -> None:
    rows = [{"user_id": "u", "event_id": f"e{i}", "seq": i} for i in range(3)]
    part = _DecisionPart(tmp_path, flush_rows=10, flush_seconds=None, resume=None)
    part.write_batch(rows)
    checkpoint = part.snapshot()
    assert [r["event_id"] for r in checkpoint["pending"]] == ["e0", "e1", "e2"] and not list(tmp_path.glob("part-*"))
    resumed = _DecisionPart(tmp_path, flush_rows=10, flush_seconds=None, resume=checkpoint)
    resumed.close()
    assert [r["event_id"] for r in read_decisions(tmp_path).to_pylist()] == ["e0", "e1", "e2"]


# --- over the broker ---------------------------------------------------------------------------


@pytest.mark.kafka
def test_oversized_messages_are_dead_lettered_and_the_flow_goes_on(kafka_broker, topics, components, tmp_path):
    sizes = {"ann-2": 1_500_000, "ben-1": 20_000_000}
    values = [event("ann", 0), event("ann", 1), big_event("ann", 2, sizes["ann-2"]), event("ann", 3),
              event("ben", 0), big_event("ben", 1, sizes["ben-1"]), event("ben", 2)]
    produce_big(kafka_broker, topics["events"], values)
    # A 20 MB record takes the broker a while to serve on a loaded machine: idle for 10 s, not 2, before the
    # run counts the topic as drained (with 2 s it once ended before the first fetch came back, under load).
    settings = settings_for(kafka_broker, topics, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 4,
                                                               "kafka.idle_stop_s": 10.0})
    run_main(build_flow(settings, components))

    rows = read_decisions(tmp_path / "decisions").to_pylist()
    assert sorted(r["event_id"] for r in rows) == ["ann-0", "ann-1", "ann-3", "ben-0", "ben-2"]
    dead = read_jsonl(tmp_path / "dead_letters.jsonl")
    by_size = {d["raw_bytes"]: d for d in dead}
    assert Counter(d["reason"] for d in dead) == Counter({"too_large": 2})
    for event_id, size in sizes.items():
        d = by_size[size]
        original = next(v for v in values if len(v) == size)
        assert d["raw_sha256"] == hashlib.sha256(original).hexdigest() and d["raw_truncated"]
        assert original.startswith(d["raw"].encode()) and len(d["raw"].encode()) == 4096
    assert (tmp_path / "dead_letters.jsonl").stat().st_size < 2 * dead_letter_bytes(4096)
    on_topic = consume_all(kafka_broker, topics["dead"], expected=2)
    assert sorted(d["raw_bytes"] for d in on_topic) == sorted(sizes.values())


class _CrashingSink(DynamicSink):
    """A training sink that fails at the first request: a crash partway through the stream."""

    def build(self, step_id, worker_index, worker_count):
        class Part(StatelessSinkPartition):
            def write_batch(self, items):
                if items:
                    raise RuntimeError("crash for the test")

        return Part()


def _raw_rows(folder: Path) -> list[tuple[str, str]]:
    return [(r["user_id"], r["event_id"]) for p in sorted(folder.glob("part-*.parquet"))
            for r in pq.read_table(p).to_pylist()]


@pytest.mark.kafka
def test_a_restart_after_a_crash_writes_each_decision_row_once(kafka_broker, topics, components, tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    store = RecoveryConfig(str(recovery))
    settings = settings_for(kafka_broker, topics, tmp_path / "out", **{
        "buffer.policy": "fifo", "buffer.capacity": 4, "output.flush_rows": 1,
        "train.enabled": True, "train.window_events": 8, "train.train_on_eof": False})
    epoch = timedelta(milliseconds=1)
    users = ("cat", "dog")
    produce_big(kafka_broker, topics["events"], [event(u, i) for i in range(6) for u in users])
    run_main(build_flow(settings, components), epoch_interval=epoch, recovery_config=store)
    assert len(_raw_rows(tmp_path / "out" / "decisions")) == 12

    # The next messages close each user's first window; the training sink fails on it, as a crash would.
    more = [event(u, i) for i in range(6, 12) for u in users]
    more.insert(3, big_event("cat", 99, 1_500_000))
    produce_big(kafka_broker, topics["events"], more)
    with pytest.raises(Exception, match="error writing output batch"):
        run_main(build_flow(settings, components, trainer_sink=_CrashingSink()), epoch_interval=epoch, recovery_config=store)
    assert len(_raw_rows(tmp_path / "out" / "decisions")) > 12  # rows written after the last checkpoint
    run_main(build_flow(settings, components), epoch_interval=epoch, recovery_config=store)

    raw = _raw_rows(tmp_path / "out" / "decisions")
    assert sorted(raw) == sorted((u, f"{u}-{i}") for i in range(12) for u in users)
    dead = read_jsonl(tmp_path / "out" / "dead_letters.jsonl", key=dead_letter_key)  # one per payload read
    assert [d["reason"] for d in dead] == ["too_large"] and dead[0]["source"].startswith(topics["events"] + "/")
