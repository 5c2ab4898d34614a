"""Consume conversation events from Kafka through the selection stream.

    python -m bytewax.run flows.kafka_flow:flow       # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune run --kafka 127.0.0.1:9092 [options]

Offsets live in Bytewax state (run with a recovery directory to resume where
the last run stopped); dead letters go to a Kafka topic as well as to a file.
"""

from __future__ import annotations

import os
from typing import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.kafka import KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig
from flows.selection import Components, build_components, select
from flows.sinks import DecisionLogSink, JsonlSink, SnapshotSink
from operators.config import Settings, load_settings


def build_flow(settings: Settings, components: Components | None = None, progress: Callable[[], None] | None = None) -> Dataflow:
    components = components or build_components(settings)
    k, out = settings.kafka, settings.output.dir
    brokers = tuple(b.strip() for b in k.brokers.split(",") if b.strip())
    source = KafkaSource(KafkaSourceConfig(brokers=brokers, topic=k.events_topic, starting=k.starting, idle_stop_s=k.idle_stop_s))
    flow = Dataflow("edgetune_kafka")
    records = op.input("consume", flow, source)  # KafkaRecord
    raw = op.map("payload", records, lambda r: r.value)  # bytes
    selection = select(raw, components, progress)
    op.output("log", op.key_on("log_key", selection.decisions, lambda _: "decisions"), DecisionLogSink(out / "decisions"))
    op.output("dead_letter", selection.dead_letters, JsonlSink(out / "dead_letters.jsonl"))
    dead_keyed = op.map("dead_key", selection.dead_letters, lambda d: (d.get("user_id"), d))
    op.output("dead_letter_topic", dead_keyed, KafkaSink(KafkaSinkConfig(brokers=brokers, topic=k.dead_letter_topic)))
    op.output("snapshot", selection.snapshots, SnapshotSink(out / "buffers"))
    return flow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return build_flow(load_settings(os.environ.get("EDGETUNE_CONFIG")))
    raise AttributeError(name)
