"""Consume conversation events and annotations from Kafka through the selection stream.

    python -m bytewax.run flows.kafka_flow:flow       # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune run --kafka 127.0.0.1:9092 [options]

Offsets live in Bytewax state (run with a recovery directory to resume where
the last run stopped). Dead letters and annotation requests go to Kafka topics
as well as to files.
"""

from __future__ import annotations

from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.kafka import KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig
from flows.selection import Components, build_components, flow_from_environment, select, write_outputs
from operators.config import Settings


def build_flow(
    settings: Settings,
    components: Components | None = None,
    progress: Callable[[], None] | None = None,
    trainer_sink: Any | None = None,
) -> Dataflow:
    components = components or build_components(settings)
    k = settings.kafka
    brokers = tuple(b.strip() for b in k.brokers.split(",") if b.strip())

    def consume(step_id: str, topic: str, channel: str):
        cfg = KafkaSourceConfig(brokers=brokers, topic=topic, starting=k.starting, idle_stop_s=k.idle_stop_s,
                                max_message_bytes=settings.max_message_bytes, on_offset_loss=k.on_offset_loss)
        records = op.input(step_id, flow, KafkaSource(cfg))  # KafkaRecord
        return op.map(f"{step_id}_tag", records,
                      lambda r: (channel, r.value, f"{r.topic}/{r.partition}/{r.offset}"))  # (channel, bytes, source)

    flow = Dataflow("edgetune_kafka")
    events = consume("consume_events", k.events_topic, "event")
    answers = consume("consume_annotations", k.annotations_topic, "annotation")
    selection = select(op.merge("merge", events, answers), settings, components, progress)
    write_outputs(selection, settings, trainer_sink)
    dead = op.map("dead_key", selection.dead_letters, lambda d: (d.get("user_id"), d))  # (key, dict)
    # Dead letters and requests are bounded by the settings (see operators.config), so they fit this request size.
    limit = settings.max_message_bytes
    op.output("dead_letter_topic", dead, KafkaSink(KafkaSinkConfig(brokers=brokers, topic=k.dead_letter_topic, max_request_bytes=limit)))
    asks = op.map("ask_key", selection.annotation_requests, lambda r: (r.user_id, r.to_dict()))  # (key, dict)
    op.output("ask_topic", asks, KafkaSink(KafkaSinkConfig(brokers=brokers, topic=k.requests_topic, max_request_bytes=limit)))
    return flow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return flow_from_environment(build_flow)
    raise AttributeError(name)
