"""Served turns and feedback as the stream's own input: conversation events and annotations.

A served turn becomes a conversation event (``operators/events.py``)::

    {"event_id": "<the completion id>", "user_id": "<user>", "ts": <epoch ms>,
     "prompt": "<the user's message>",
     "meta": {"source": "serve", "answer": "<the answer given>", "adapter_version": 3 | null, "model": "<lm>"}}

The answer given goes under ``meta``, not ``response``: ``response`` is the reference
answer the device trains on, and an answer the model wrote itself is no reference
(training on it would teach the model what it already says). So a served turn is an
unlabeled event: the stream scores it, the buffer policy decides, and an admitted turn
becomes an annotation request like any other unlabeled event.

Feedback becomes an annotation (``event_id``, ``user_id``, ``ts``, ``response``) of that
event, or nothing (see :func:`feedback_annotation`); the stream's join attaches it only
if the turn is buffered. ``TurnEmitter`` writes both to the Kafka topics the stream
consumes (``kafka.events_topic``, ``kafka.annotations_topic``, keyed by user) or to the
local spool (``flows/spool.py``).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol

from operators.config import Settings

__all__ = ["KafkaTurns", "TurnEmitter", "emitter_for", "feedback_annotation", "served_event"]

Rating = Literal["up", "down"]


def served_event(event_id: str, user: str, prompt: str, answer: str, version: int | None, model: str,
                 ts_ms: int | None = None) -> dict[str, Any]:
    """The conversation event of one served turn.

    >>> e = served_event("chatcmpl-1", "ann", "Hi", "Hello!", 2, "smollm2-135m-instruct", ts_ms=5)
    >>> e["prompt"], "response" in e, e["meta"]["answer"], e["meta"]["adapter_version"]
    ('Hi', False, 'Hello!', 2)
    """
    return {"event_id": event_id, "user_id": user, "ts": _now_ms() if ts_ms is None else ts_ms, "prompt": prompt,
            "meta": {"source": "serve", "answer": answer, "adapter_version": version, "model": model}}


def feedback_annotation(event_id: str, user: str, rating: Rating | None, preferred: str | None,
                        served_answer: str | None, ts_ms: int | None = None) -> dict[str, Any] | None:
    """The annotation a piece of feedback makes, or None when it makes none.

    The rule: a preferred answer is the user's reference, whatever the rating. A thumbs-up
    without one makes the answer given the reference (the user vouches for it). A
    thumbs-down without one makes no annotation: it says what the answer should not be,
    not what it should be, so the turn's annotation request stays open for a preferred
    answer.

    >>> feedback_annotation("e1", "ann", "up", None, "Paris.", ts_ms=1)["response"]
    'Paris.'
    >>> feedback_annotation("e1", "ann", "down", "Lyon.", "Paris.", ts_ms=1)["response"]
    'Lyon.'
    >>> feedback_annotation("e1", "ann", "down", None, "Paris.") is None
    True
    """
    response = preferred if preferred is not None else served_answer if rating == "up" else None
    if response is None:
        return None
    return {"event_id": event_id, "user_id": user, "ts": _now_ms() if ts_ms is None else ts_ms, "response": response}


class TurnEmitter(Protocol):
    def emit_event(self, event: dict[str, Any]) -> None: ...
    def emit_annotation(self, annotation: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SpoolTurns:
    """Served turns and feedback to the local spool (``flows.spool.SpoolWriter``)."""

    where = "spool"

    def __init__(self, folder: Any):
        from flows.spool import SpoolWriter

        self.writer = SpoolWriter(folder)

    def emit_event(self, event: dict[str, Any]) -> None:
        self.writer.append("event", event)

    def emit_annotation(self, annotation: dict[str, Any]) -> None:
        self.writer.append("annotation", annotation)

    def close(self) -> None:
        self.writer.close()


class KafkaTurns:
    """Served turns and feedback to the stream's Kafka topics; each record is acknowledged (acks=all) before
    the call returns, so a turn the client got an answer for is on the broker."""

    where = "kafka"

    def __init__(self, settings: Settings):
        from flows.kafka import KafkaSink, KafkaSinkConfig

        k = settings.kafka
        brokers = tuple(b.strip() for b in k.brokers.split(",") if b.strip())

        def part(topic: str, step: str) -> Any:
            config = KafkaSinkConfig(brokers=brokers, topic=topic, max_request_bytes=settings.max_message_bytes)
            return KafkaSink(config).build(step, 0, 1)

        self._events = part(k.events_topic, "serve_events")
        self._annotations = part(k.annotations_topic, "serve_feedback")

    def emit_event(self, event: dict[str, Any]) -> None:
        self._events.write_batch([(event["user_id"], event)])

    def emit_annotation(self, annotation: dict[str, Any]) -> None:
        self._annotations.write_batch([(annotation["user_id"], annotation)])

    def close(self) -> None:
        self._events.close()
        self._annotations.close()


def emit_target(settings: Settings) -> Literal["spool", "kafka"]:
    """``serve.emit``, with auto resolved: kafka when ``kafka.brokers`` was set (flag, variable or file).

    >>> emit_target(Settings()), emit_target(Settings(kafka={"brokers": "127.0.0.1:9092"}))
    ('spool', 'kafka')
    """
    if settings.serve.emit != "auto":
        return settings.serve.emit
    return "kafka" if "brokers" in settings.kafka.model_fields_set else "spool"


def emitter_for(settings: Settings) -> TurnEmitter:
    return KafkaTurns(settings) if emit_target(settings) == "kafka" else SpoolTurns(settings.spool_dir)


def _now_ms() -> int:
    return int(time.time() * 1000)
