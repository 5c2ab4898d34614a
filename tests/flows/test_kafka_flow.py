"""The Kafka flow end to end against the real Tansu broker, with the tiny random model."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flows.kafka import ensure_topics
from flows.kafka_flow import build_flow
from flows.selection import build_components
from flows.sinks import read_decisions, read_jsonl
from operators.config import load_settings

pytestmark = pytest.mark.kafka
PARTITIONS = 2


@pytest.fixture
def topics(kafka_broker):
    base = f"t{uuid.uuid4().hex[:8]}"
    names = {kind: f"{base}.{kind}" for kind in ("events", "annotations", "dead", "asks")}
    ensure_topics((kafka_broker.bootstrap,), {name: PARTITIONS for name in names.values()})
    return names


def settings_for(broker, topics, out: Path, **extra):
    return load_settings(**{
        "model.lm": "tiny-random", "metrics.port": 0, "output.dir": out, "train.enabled": False,
        "kafka.brokers": broker.bootstrap, "kafka.events_topic": topics["events"],
        "kafka.annotations_topic": topics["annotations"], "kafka.dead_letter_topic": topics["dead"],
        "kafka.requests_topic": topics["asks"], "kafka.idle_stop_s": 2.0, **extra,
    })


def produce(broker, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i, value in enumerate(values):
        # Key by user so one user's events stay ordered in one partition, as a deployment would.
        user = json.loads(value)["user_id"] if value.startswith(b"{") and b"user_id" in value else "x"
        producer.send(topic, key=user.encode(), value=value, partition=hash(user) % PARTITIONS)
    producer.flush()
    producer.close()


def consume_all(broker, topic: str, expected: int, timeout_s: float = 15.0) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=300).values():
            got.extend(json.loads(r.value) for r in records)
    consumer.close()
    return got


def event(user: str, i: int, response: str | None = None) -> bytes:
    obj = {"event_id": f"{user}-{i}", "user_id": user, "ts": 1_700_000_000_000 + i * 1000,
           "prompt": f"Question {i} from {user}: how do I keep my {['garden', 'code', 'bike'][i % 3]} healthy?"}
    if response is not None:
        obj["response"] = response
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def components():
    return build_components(load_settings(**{"model.lm": "tiny-random", "metrics.port": 0}))


def test_kafka_events_to_decisions_dead_letters_and_requests(kafka_broker, topics, components, tmp_path):
    good = [event(u, i) for u in ("ann", "ben") for i in range(6)]
    bad = [b"{not json", json.dumps({"event_id": "z", "user_id": "ann", "ts": 1}).encode(), b"\xff\xfe"]
    produce(kafka_broker, topics["events"], good + bad + [event("ann", 0)])  # the last one repeats ann-0
    settings = settings_for(kafka_broker, topics, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 4})
    run_main(build_flow(settings, components))

    rows = read_decisions(tmp_path / "decisions").to_pylist()
    assert Counter(r["user_id"] for r in rows) == Counter({"ann": 6, "ben": 6})
    dead = read_jsonl(tmp_path / "dead_letters.jsonl")
    assert Counter(d["reason"] for d in dead) == Counter(
        {"malformed_json": 1, "missing_field": 1, "invalid_utf8": 1, "duplicate_event": 1})
    on_topic = consume_all(kafka_broker, topics["dead"], expected=4)
    assert Counter(d["reason"] for d in on_topic) == Counter(d["reason"] for d in dead)
    # Unlabeled admitted samples are asked about: every admission in this run.
    asks = consume_all(kafka_broker, topics["asks"], expected=12)
    assert {(a["user_id"], a["event_id"]) for a in asks} == {(r["user_id"], r["event_id"]) for r in rows if r["admitted"]}


def test_kafka_annotations_attach_to_buffered_samples(kafka_broker, topics, components, tmp_path):
    # As in a deployment: the events are asked about first, the user answers later (here after a
    # restart, so the answers also have to find the buffer again through the recovery store).
    # (Answers produced before their events: the next test.)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    settings = settings_for(kafka_broker, topics, tmp_path / "out", **{"buffer.policy": "fifo", "buffer.capacity": 5})
    produce(kafka_broker, topics["events"], [event("cat", i) for i in range(5)])
    run_main(build_flow(settings, components), recovery_config=RecoveryConfig(str(recovery)))
    snap = json.loads((tmp_path / "out" / "buffers" / "cat.json").read_text())
    assert [s["response"] for s in snap["samples"]] == [None] * 5  # asked, not yet answered

    answers = [{"event_id": f"cat-{i}", "user_id": "cat", "ts": 1_700_000_100_000, "response": f"answer {i}"} for i in range(5)]
    produce(kafka_broker, topics["annotations"], [json.dumps(a).encode() for a in answers])
    run_main(build_flow(settings, components), recovery_config=RecoveryConfig(str(recovery)))
    snap = json.loads((tmp_path / "out" / "buffers" / "cat.json").read_text())
    assert sorted(s["response"] for s in snap["samples"]) == [f"answer {i}" for i in range(5)]


def test_kafka_answers_produced_before_their_events_still_attach(kafka_broker, topics, components, tmp_path):
    # Events and answers come from two topics read independently: whichever the flow reads first, every
    # answer must end up on its buffered sample (an early one waits in the user's state for its event).
    settings = settings_for(kafka_broker, topics, tmp_path / "out", **{"buffer.policy": "fifo", "buffer.capacity": 5})
    answers = [{"event_id": f"eve-{i}", "user_id": "eve", "ts": 1_700_000_000_000, "response": f"answer {i}"}
               for i in range(5)]
    produce(kafka_broker, topics["annotations"], [json.dumps(a).encode() for a in answers])
    produce(kafka_broker, topics["events"], [event("eve", i) for i in range(5)])
    run_main(build_flow(settings, components))
    snap = json.loads((tmp_path / "out" / "buffers" / "eve.json").read_text())
    assert sorted(s["response"] for s in snap["samples"]) == [f"answer {i}" for i in range(5)]


def test_kafka_answers_whose_event_never_comes_are_dead_lettered_not_dropped(kafka_broker, topics, components, tmp_path):
    # An answer waits for its event; when the input ends without it, it is a dead letter with the answer in it.
    settings = settings_for(kafka_broker, topics, tmp_path / "out", **{"buffer.policy": "fifo", "buffer.capacity": 5})
    answers = [{"event_id": e, "user_id": "eve", "ts": 1_700_000_000_000, "response": f"answer to {e}"}
               for e in ("eve-0", "eve-lost", "eve-1", "eve-gone")]
    produce(kafka_broker, topics["annotations"], [json.dumps(a).encode() for a in answers])
    produce(kafka_broker, topics["events"], [event("eve", i) for i in range(2)])
    run_main(build_flow(settings, components))
    snap = json.loads((tmp_path / "out" / "buffers" / "eve.json").read_text())
    assert sorted(s["response"] for s in snap["samples"]) == ["answer to eve-0", "answer to eve-1"]
    dead = read_jsonl(tmp_path / "out" / "dead_letters.jsonl")
    assert sorted((d["reason"], d["event_id"]) for d in dead) == [("unknown_event", "eve-gone"), ("unknown_event", "eve-lost")]
    assert {json.loads(d["raw"])["response"] for d in dead} == {"answer to eve-lost", "answer to eve-gone"}
    on_topic = consume_all(kafka_broker, topics["dead"], expected=2)
    assert sorted(d["event_id"] for d in on_topic) == ["eve-gone", "eve-lost"]


def test_kafka_resume_from_recovery_reads_only_new_events(kafka_broker, topics, components, tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    settings = settings_for(kafka_broker, topics, tmp_path / "out", **{"buffer.policy": "fifo", "buffer.capacity": 3})
    produce(kafka_broker, topics["events"], [event("dan", i) for i in range(4)])
    run_main(build_flow(settings, components), recovery_config=RecoveryConfig(str(recovery)))
    produce(kafka_broker, topics["events"], [event("dan", i) for i in range(4, 7)])
    run_main(build_flow(settings, components), recovery_config=RecoveryConfig(str(recovery)))

    rows = read_decisions(tmp_path / "out" / "decisions").to_pylist()
    assert [r["event_id"] for r in rows] == [f"dan-{i}" for i in range(7)]
    assert [r["seq"] for r in rows] == list(range(7))  # user state resumed: sequence numbers continue
    assert not (tmp_path / "out" / "dead_letters.jsonl").exists() or not read_jsonl(tmp_path / "out" / "dead_letters.jsonl")
    snap = json.loads((tmp_path / "out" / "buffers" / "dan.json").read_text())
    assert [s["event_id"] for s in snap["samples"]] == ["dan-4", "dan-5", "dan-6"]
