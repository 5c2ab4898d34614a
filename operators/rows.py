"""Typed rows the per-user step emits: one :class:`DecisionRow` per accepted event.

The row's fields, in order, are the decision log's columns: ``flows/sinks.py`` builds
its Parquet schema from :meth:`DecisionRow.columns` rather than restating them.
A ``float | None`` column is None where the score was not computed (nan).

>>> row = DecisionRow("u1", "e0", 0, 100, "fifo", "admitted", True, None, "general", 0.5, 0.0,
...                   None, None, None, 3, True, 1, 0.01, 0.002, 0.0001)
>>> row.to_dict()["outcome"], list(row.to_dict())[:4]
('admitted', ['user_id', 'event_id', 'seq', 'ts_ms'])
>>> DecisionRow.columns()[:3], DecisionRow.columns()[11]
((('user_id', <class 'str'>), ('event_id', <class 'str'>), ('seq', <class 'int'>)), ('idd', <class 'float'>))
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

__all__ = ["DecisionRow"]


@dataclass(frozen=True)
class DecisionRow:
    """What the buffer decided about one event, with its scores and the time each stage took."""

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

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict, keys in column order."""
        return {name: getattr(self, name) for name, _ in self.columns()}

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
