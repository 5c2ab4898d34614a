"""Typed rows the per-user step emits, one class per kind; the flows route them by type.

* :class:`DecisionRow`: what the buffer decided about one accepted event (the decision log);
* :class:`AnnotationRequest`: ask the user for an answer to an admitted unlabeled event;
* :class:`AnswerOutcome`: what became of an answer (attached, early, not_buffered, ...);
* :class:`TrainRequest`: a training window closed, with the user's labeled samples;
* :class:`BufferView`: the user's buffer as it stands (the per-user snapshot file);
* a repeated event id is an ``operators.events.Rejected``, as invalid input is (a dead letter).

``to_dict()`` gives each row as the plain dict its sink writes, keys in field order.
The decision row's fields, in order, are the decision log's columns: ``flows/sinks.py``
builds its Parquet schema from :meth:`DecisionRow.columns` rather than restating them.
A ``float | None`` column is None where the score was not computed (nan).

>>> row = DecisionRow("u1", "e0", 0, 100, "fifo", "admitted", True, None, "general", 0.5, 0.0,
...                   None, None, None, 3, True, 1, 0.01, 0.002, 0.0001)
>>> row.to_dict()["outcome"], list(row.to_dict())[:4]
('admitted', ['user_id', 'event_id', 'seq', 'ts_ms'])
>>> DecisionRow.columns()[:3], DecisionRow.columns()[11]
((('user_id', <class 'str'>), ('event_id', <class 'str'>), ('seq', <class 'int'>)), ('idd', <class 'float'>))
>>> answer = AnswerOutcome("u1", "e0", "attached", 40)
>>> answer.kind, answer.to_dict()
('annotation', {'user_id': 'u1', 'event_id': 'e0', 'status': 'attached', 'latency_ms': 40})
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, ClassVar

__all__ = ["AnnotationRequest", "AnswerOutcome", "BufferView", "DecisionRow", "TrainRequest"]


class _Row:
    """``to_dict``, shared: the fields in order, values as they are (not copied)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The row as the plain dict its sink writes, keys in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DecisionRow(_Row):
    """What the buffer decided about one event, with its scores and the time each stage took."""

    kind: ClassVar[str] = "decision"

    user_id: str
    event_id: str
    seq: int  # the user's accepted events before this one
    ts_ms: int
    policy: str
    outcome: str  # one of operators.sample.OUTCOMES ("duplicate" here is always a near copy)
    admitted: bool
    evicted_id: str | None  # the sample it replaced
    domain: str  # dominant lexicon domain
    eoe: float
    dss: float
    idd: float | None  # against the buffered samples of its domain, as of the offer
    max_sim: float | None  # against every buffered sample, as of the offer (-inf: none buffered)
    score: float | None  # the policy's own score, if it has one
    n_tokens: int
    labeled: bool  # the event carried its answer
    buffer_size: int  # samples buffered after the decision
    embed_seconds: float
    score_seconds: float
    select_seconds: float

    @classmethod
    @cache
    def columns(cls) -> tuple[tuple[str, type], ...]:
        """``(name, type)`` of every column in order; ``X | None`` gives ``X`` (every column is nullable)."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in fields(cls):
            kind = hints[f.name]
            if isinstance(kind, types.UnionType):
                kind = next(t for t in typing.get_args(kind) if t is not type(None))
            out.append((f.name, kind))
        return tuple(out)


@dataclass(frozen=True)
class AnnotationRequest(_Row):
    """Ask the user for the answer to an admitted event that came without one."""

    kind: ClassVar[str] = "annotation_request"

    user_id: str
    event_id: str
    ts_ms: int
    prompt: str


@dataclass(frozen=True)
class AnswerOutcome(_Row):
    """What became of a user's answer: ``status`` is attached, replaced, early, not_buffered,
    unknown_event or unanswered (see ``operators.state.UserState``)."""

    kind: ClassVar[str] = "annotation"

    user_id: str
    event_id: str
    status: str
    latency_ms: int | None = None  # from the request to the answer, when it attached


@dataclass(frozen=True)
class TrainRequest(_Row):
    """A training window closed: the trainer gets the user's labeled samples."""

    kind: ClassVar[str] = "train_request"

    user_id: str
    window: int  # the user's windows before this one
    events_seen: int
    trigger: str  # what closed it: events, event_time or end_of_input
    samples: list[dict[str, Any]]  # event_id, prompt, response, domain; in arrival order


@dataclass(frozen=True)
class BufferView(_Row):
    """One user's buffer as it stands: every sample with its scores and words."""

    kind: ClassVar[str] = "snapshot"

    user_id: str
    policy: str
    events_seen: int
    samples: list[dict[str, Any]]
