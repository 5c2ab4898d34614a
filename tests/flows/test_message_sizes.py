"""One size limit, max_message_bytes, everywhere it matters (issue 13, item 1): the consumers' fetch size, both
producers' request size, a Settings check that edgetune's own records fit it, and the sink's refusal of a record
that would not (named, before anything is sent: never a MessageSizeTooLargeError half-way through a batch).

The wiring test builds the real Kafka flow and the real partitions against the session's Tansu broker and
reads the sizes the kafka-python clients were configured with.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition

from flows.kafka import KafkaSink, KafkaSinkConfig, KafkaSource
from flows.kafka_flow import build_flow
from operators.config import load_settings
from tests.flows.test_kafka_flow import components, settings_for, topics  # noqa: F401

LIMIT = 300_000  # not the default, so a client left at its own default shows


def steps(flow) -> list:
    """Every operator of ``flow``, nested ones included."""
    out, todo = [], list(flow.substeps)
    while todo:
        step = todo.pop()
        out.append(step)
        todo.extend(step.substeps)
    return out


@pytest.mark.kafka
def test_one_max_message_bytes_reaches_both_consumers_fetch_size_and_both_producers_request_size(
        kafka_broker, topics, components, tmp_path):
    settings = settings_for(kafka_broker, topics, tmp_path, max_message_bytes=LIMIT)
    flow = build_flow(settings, components)
    sources = {s.step_id: s.source for s in steps(flow) if isinstance(getattr(s, "source", None), KafkaSource)}
    sinks = {s.step_id: s.sink for s in steps(flow) if isinstance(getattr(s, "sink", None), KafkaSink)}
    assert sorted(src.config.topic for src in sources.values()) == sorted([topics["events"], topics["annotations"]])
    assert sorted(sink.config.topic for sink in sinks.values()) == sorted([topics["dead"], topics["asks"]])

    for step_id, source in sources.items():
        part = source.build_part(step_id, source.list_parts()[0], None)
        try:
            assert part._consumer.config["max_partition_fetch_bytes"] == LIMIT, step_id
            assert part._consumer.config["fetch_max_bytes"] >= LIMIT, step_id  # the whole fetch holds one message
        finally:
            part.close()
    for step_id, sink in sinks.items():
        part = sink.build(step_id, 0, 1)
        try:
            assert part._producer.config["max_request_size"] == LIMIT, step_id
        finally:
            part.close()


@pytest.mark.parametrize("fields, names", [
    ({"max_message_bytes": 100_000}, ("max_chars=20000", "max_message_bytes >= 124096")),  # 6 * 20000 + 4096
    ({"max_message_bytes": 40_000, "max_chars": 1000}, ("dead_letter_excerpt_bytes=4096", ">= 40960")),
])
def test_settings_refuse_a_max_message_bytes_that_edgetunes_own_records_could_exceed(fields, names):
    with pytest.raises(ValueError) as info:
        load_settings(**fields)
    for name in names:
        assert name in str(info.value), str(info.value)


def test_settings_accept_the_smallest_consistent_max_message_bytes():
    assert load_settings(max_message_bytes=124_096).max_message_bytes == 124_096
    with pytest.raises(ValueError, match="max_message_bytes=124095"):
        load_settings(max_message_bytes=124_095)


@pytest.mark.kafka
def test_the_sink_refuses_an_oversized_record_by_name_and_sends_nothing_of_its_batch(kafka_broker, topics):
    sink = KafkaSink(KafkaSinkConfig(brokers=(kafka_broker.bootstrap,), topic=topics["dead"], max_request_bytes=2048))
    part = sink.build("dead_letter_topic", 0, 1)
    try:
        with pytest.raises(ValueError) as info:
            part.write_batch([("ann", {"reason": "fits"}), ("ann", {"reason": "x" * 3000})])
        text = str(info.value)
        assert "'dead_letter_topic'" in text and "max_request_bytes=2048" in text and topics["dead"] in text, text
        part.write_batch([("ann", {"reason": "fits"})])
    finally:
        part.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    parts = [TopicPartition(topics["dead"], p) for p in consumer.partitions_for_topic(topics["dead"])]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    got = [r.value for r in consumer]
    consumer.close()
    assert got == [b'{"reason":"fits"}']  # the refused batch sent nothing, the next one went through
