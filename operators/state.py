"""One user's state in the selection stream: duplicate guard, buffer policy, buffered texts.

The state is plain data: :meth:`UserState.snapshot` returns picklable values
and :meth:`UserState.from_snapshot` rebuilds an equal state, so a dataflow can
checkpoint it without adapters.

>>> import numpy as np
>>> from operators.events import Event
>>> from operators.policies import make_policy
>>> from operators.scoring import ScoredEvent
>>> state = UserState("u1", make_policy("fifo", capacity=1))
>>> def scored(i):
...     return ScoredEvent(Event(f"e{i}", "u1", i, f"question {i}"), np.eye(2, dtype=np.float32)[i % 2], 3, 0.5, 0.0, "general")
>>> [o.kind for o in state.on_event(scored(0))]
['decision']
>>> out = state.on_event(scored(1))
>>> out[0].payload["outcome"], out[0].payload["evicted_id"], sorted(state.texts)
('replaced', 'e0', ['e1'])
>>> state.on_event(scored(1))[0].payload["reason"]
'duplicate_event'
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from operators.policies import BufferPolicy, POLICIES
from operators.scoring import ScoredEvent


@dataclass(frozen=True)
class Output:
    """Something the per-user step emits; ``kind`` routes it to a sink."""

    kind: str  # "decision" | "dead_letter" | "snapshot"
    payload: dict[str, Any]


@dataclass
class BufferedText:
    """What the buffer keeps of an event besides its embedding: the words."""

    prompt: str
    response: str | None
    ts_ms: int
    meta: dict[str, Any] = field(default_factory=dict)


class UserState:
    """The per-user step: reject repeated event ids, offer the rest to the buffer policy."""

    def __init__(self, user_id: str, policy: BufferPolicy):
        self.user_id = user_id
        self.policy = policy
        self.seen: set[str] = set()
        self.texts: dict[str, BufferedText] = {}
        self.n_events = 0

    def on_event(self, se: ScoredEvent) -> list[Output]:
        event = se.event
        if event.event_id in self.seen:
            return [Output("dead_letter", {
                "reason": "duplicate_event",
                "detail": f"event_id {event.event_id!r} was already seen for user {self.user_id!r}",
                "raw": _event_json(se),
                "raw_encoding": "utf-8",
                "user_id": self.user_id,
                "event_id": event.event_id,
            })]
        self.seen.add(event.event_id)
        seq = self.n_events
        self.n_events += 1
        start = time.perf_counter()
        decision = self.policy.offer(se.candidate(seq))
        select_seconds = time.perf_counter() - start
        if decision.evicted is not None:
            self.texts.pop(decision.evicted, None)
        if decision.admitted:
            self.texts[event.event_id] = BufferedText(event.prompt, event.response, event.ts_ms, dict(event.meta))
        row = {
            "user_id": self.user_id,
            "event_id": event.event_id,
            "seq": seq,
            "ts_ms": event.ts_ms,
            "policy": self.policy.name,
            "outcome": decision.outcome,
            "admitted": decision.admitted,
            "evicted_id": decision.evicted,
            "domain": se.domain,
            "eoe": se.eoe,
            "dss": se.dss,
            "idd": _finite_or_none(decision.idd),
            "max_sim": _finite_or_none(decision.max_sim),
            "score": _finite_or_none(decision.score),
            "n_tokens": se.n_tokens,
            "labeled": event.response is not None,
            "buffer_size": len(self.policy),
            "embed_seconds": se.embed_seconds,
            "score_seconds": se.score_seconds,
            "select_seconds": select_seconds,
        }
        return [Output("decision", row)]

    def buffer_view(self) -> dict[str, Any]:
        """The buffer as it stands, for the per-user snapshot output."""
        samples = []
        for c in self.policy.samples():
            text = self.texts[c.event_id]
            samples.append({
                "event_id": c.event_id,
                "seq": c.seq,
                "domain": c.domain,
                "eoe": c.eoe,
                "dss": c.dss,
                "prompt": text.prompt,
                "response": text.response,
                "ts_ms": text.ts_ms,
            })
        return {"user_id": self.user_id, "policy": self.policy.name, "events_seen": self.n_events, "samples": samples}

    def snapshot(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "policy_name": self.policy.name,
            "policy": self.policy.snapshot(),
            "seen": sorted(self.seen),
            "texts": {k: asdict(v) for k, v in self.texts.items()},
            "n_events": self.n_events,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "UserState":
        policy = POLICIES[snap["policy_name"]].from_snapshot(snap["policy"])
        state = cls(snap["user_id"], policy)
        state.seen = set(snap["seen"])
        state.texts = {k: BufferedText(**v) for k, v in snap["texts"].items()}
        state.n_events = snap["n_events"]
        return state


def _finite_or_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _event_json(se: ScoredEvent) -> str:
    e = se.event
    obj = {"event_id": e.event_id, "user_id": e.user_id, "ts": e.ts_ms, "prompt": e.prompt}
    if e.response is not None:
        obj["response"] = e.response
    if e.meta:
        obj["meta"] = e.meta
    return json.dumps(obj, ensure_ascii=False)
