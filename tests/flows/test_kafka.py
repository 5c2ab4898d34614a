"""flows.kafka against a real Kafka-protocol broker (Tansu, in memory).

Every Kafka test gets a fresh 2-partition topic. Flows end through
`idle_stop_s`, not end offsets, which Tansu reports wrongly.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flows.kafka import (
    KafkaRecord,
    KafkaSink,
    KafkaSinkConfig,
    KafkaSource,
    KafkaSourceConfig,
    ensure_topics,
)
# Fixtures kafka_broker / kafka_topic come from tests.flows.kafka_fixtures,
# registered in tests/conftest.py via pytest_plugins.
from tests.flows.kafka_fixtures import TOPIC_PARTITIONS
from tests.kafka_broker import TansuBroker

# Short waits keep the suite quick; idle_stop_s must still outlast the
# first fetch round-trip on a busy 2-core machine.
FAST = {"poll_timeout_s": 0.05, "idle_stop_s": 1.5}


def produce(broker: TansuBroker, topic: str, values: list[bytes], partition: int | None = None) -> None:
    """Write `values` in order; round-robin over the partitions unless one is given."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i, value in enumerate(values):
        part = i % TOPIC_PARTITIONS if partition is None else partition
        producer.send(topic, key=f"k{i}".encode(), value=value, partition=part)
    producer.flush()
    producer.close()


def event(i: int) -> bytes:
    return json.dumps({"event_id": f"e{i}", "user_id": "u1", "prompt": f"p{i}"}).encode()


def read_all(broker: TansuBroker, topic: str, expected: int, timeout_s: float = 10.0) -> list:
    """Read `expected` records from every partition of `topic` with kafka-python."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)])
    consumer.seek_to_beginning()
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(records)
    consumer.close()
    return got


def read_flow(config: KafkaSourceConfig, recovery: RecoveryConfig | None = None) -> list[KafkaRecord]:
    out: list[KafkaRecord] = []
    flow = Dataflow("kafka_read")
    records = op.input("read", flow, KafkaSource(config))
    # KafkaRecord
    op.output("collect", records, TestingSink(out))
    run_main(flow, recovery_config=recovery)
    return out


# --- config (no broker) ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"brokers": "127.0.0.1:9092"}, "brokers"),
        ({"brokers": ()}, "brokers"),
        ({"brokers": ("no-port",)}, "brokers"),
        ({"topic": "has space"}, "topic"),
        ({"topic": ""}, "topic"),
        ({"starting": "middle"}, "starting"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"poll_timeout_s": 0}, "poll_timeout_s"),
        ({"idle_stop_s": -1.0}, "idle_stop_s"),
    ],
)
def test_source_config_names_the_bad_field(change: dict, field: str) -> None:
    args = {"brokers": ("127.0.0.1:9092",), "topic": "t"} | change
    with pytest.raises(ValueError, match=rf"KafkaSourceConfig\.{field}="):
        KafkaSourceConfig(**args)


def test_config_keeps_a_broker_list_as_a_tuple() -> None:
    config = KafkaSourceConfig(["a:1", "b:2"], "t")
    assert config.brokers == ("a:1", "b:2")
    assert KafkaSinkConfig(["a:1"], "t").brokers == ("a:1",)


# --- source ---------------------------------------------------------------


@pytest.mark.kafka
def test_source_delivers_every_message_once(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    n = 40
    produce(kafka_broker, kafka_topic, [event(i) for i in range(n)])

    out: list[dict] = []
    flow = Dataflow("kafka_once")
    config = KafkaSourceConfig((kafka_broker.bootstrap,), kafka_topic, **FAST)
    records = op.input("read", flow, KafkaSource(config))
    # KafkaRecord
    events = op.map("parse", records, lambda r: (r.partition, r.offset, json.loads(r.value)))
    # (partition, offset, event dict)
    op.output("collect", events, TestingSink(out))
    run_main(flow)

    assert sorted(int(e["event_id"][1:]) for _, _, e in out) == list(range(n))
    # Round-robin production: each partition holds offsets 0..n/2-1, in order.
    for part in range(TOPIC_PARTITIONS):
        assert [off for p, off, _ in out if p == part] == list(range(n // TOPIC_PARTITIONS))


@pytest.mark.kafka
def test_source_resumes_from_recovery_with_only_new_messages(
    kafka_broker: TansuBroker, kafka_topic: str, tmp_path: Path
) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    config = KafkaSourceConfig((kafka_broker.bootstrap,), kafka_topic, **FAST)
    n, m = 20, 6

    produce(kafka_broker, kafka_topic, [event(i) for i in range(n)])
    first = read_flow(config, recovery)
    produce(kafka_broker, kafka_topic, [event(i) for i in range(n, n + m)])
    second = read_flow(config, recovery)

    assert sorted(json.loads(r.value)["event_id"] for r in first) == sorted(f"e{i}" for i in range(n))
    assert sorted(json.loads(r.value)["event_id"] for r in second) == sorted(f"e{i}" for i in range(n, n + m))


@pytest.mark.kafka
def test_source_passes_malformed_bytes_through_unchanged(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    values = [b"\xff\xfe not json", b"", b'{"half":', event(3)]
    produce(kafka_broker, kafka_topic, values, partition=0)

    out = read_flow(KafkaSourceConfig((kafka_broker.bootstrap,), kafka_topic, **FAST))

    assert [(r.partition, r.offset, r.key, r.value) for r in out] == [
        (0, i, f"k{i}".encode(), v) for i, v in enumerate(values)
    ]
    assert all(r.topic == kafka_topic and r.timestamp_ms > 0 for r in out)


@pytest.mark.kafka
def test_source_rejects_a_missing_topic(kafka_broker: TansuBroker) -> None:
    missing = f"test.missing.{uuid.uuid4().hex[:8]}"
    source = KafkaSource(KafkaSourceConfig((kafka_broker.bootstrap,), missing))
    with pytest.raises(ValueError, match=rf"topic '{missing}' does not exist"):
        source.list_parts()


# --- sink and admin -------------------------------------------------------


@pytest.mark.kafka
def test_sink_writes_items_readable_by_kafka_python(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    items = [
        ("user-1", {"event_id": "e1", "prompt": "héllo"}),
        (b"user-2", "plain text ✓"),
        (None, b"\x00raw bytes"),
    ]
    flow = Dataflow("kafka_write")
    pairs = op.input("items", flow, TestingSource(items))
    # (key, value)
    op.output("write", pairs, KafkaSink(KafkaSinkConfig((kafka_broker.bootstrap,), kafka_topic)))
    run_main(flow)

    got = {(r.key, r.value) for r in read_all(kafka_broker, kafka_topic, expected=len(items))}
    assert got == {
        (b"user-1", '{"event_id":"e1","prompt":"héllo"}'.encode()),
        (b"user-2", "plain text ✓".encode()),
        (None, b"\x00raw bytes"),
    }


@pytest.mark.kafka
def test_sink_error_names_step_and_received_type(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    flow = Dataflow("kafka_bad_write")
    pairs = op.input("items", flow, TestingSource([("k", 3)]))
    op.output("write", pairs, KafkaSink(KafkaSinkConfig((kafka_broker.bootstrap,), kafka_topic)))
    with pytest.raises(Exception) as info:
        run_main(flow)
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    assert any("step 'kafka_bad_write.write'" in s and "got int 3" in s for s in chain), chain


@pytest.mark.kafka
def test_ensure_topics_is_idempotent(kafka_broker: TansuBroker) -> None:
    name = f"test.ensure.{uuid.uuid4().hex[:8]}"
    ensure_topics([kafka_broker.bootstrap], {name: 3})
    ensure_topics([kafka_broker.bootstrap], {name: 3})
    parts = KafkaSource(KafkaSourceConfig((kafka_broker.bootstrap,), name)).list_parts()
    assert parts == [f"{name}-0", f"{name}-1", f"{name}-2"]
