"""One user's state in the selection stream: repeat guard, buffer policy, buffered texts.

The state is plain data: :meth:`UserState.snapshot` returns picklable values
and :meth:`UserState.from_snapshot` rebuilds an equal state, so a dataflow can
checkpoint it without adapters.

>>> import numpy as np
>>> from operators.events import Annotation, Event
>>> from operators.policies import make_policy
>>> from operators.scoring import ScoredEvent
>>> state = UserState("u1", make_policy("fifo", capacity=1))
>>> def scored(i, answer="an answer"):
...     event = Event(f"e{i}", "u1", i, f"question {i}", answer)
...     return ScoredEvent(event, np.eye(2, dtype=np.float32)[i % 2], 3, 0.5, 0.0, "general")
>>> [o.kind for o in state.on_event(scored(0))]
['decision']
>>> out = state.on_event(scored(1))
>>> out[0].payload["outcome"], out[0].payload["evicted_id"], sorted(state.texts)
('replaced', 'e0', ['e1'])
>>> state.on_event(scored(1))[0].payload["reason"]
'duplicate_event'

Unlabeled admitted events are asked about; answers attach only to buffered samples:

>>> state = UserState("u1", make_policy("fifo", capacity=1))
>>> [o.kind for o in state.on_event(scored(0, answer=None))]
['decision', 'annotation_request']
>>> [o.payload["status"] for o in state.on_annotation(Annotation("e0", "u1", 5, "an answer"))]
['attached']
>>> _ = state.on_event(scored(1, answer=None))  # evicts e0
>>> [o.payload["status"] for o in state.on_annotation(Annotation("e0", "u1", 9, "late"))]
['not_buffered']
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from operators.events import Annotation
from operators.policies import BufferPolicy, POLICIES
from operators.recent import RecentIds
from operators.scoring import ScoredEvent

REPEATED_EVENT = "duplicate_event"
"""Dead-letter reason of a repeated event id (one of three "duplicates": see ``operators.sample.OUTCOMES``)."""


@dataclass(frozen=True)
class Output:
    """Something the per-user step emits; ``kind`` routes it to a sink."""

    kind: str  # "decision" | "dead_letter" | "snapshot" | "annotation_request" | "annotation" | "train_request"
    payload: dict[str, Any]


@dataclass
class BufferedText:
    """What the buffer keeps of an event besides its embedding: the words."""

    prompt: str
    response: str | None
    ts_ms: int
    meta: dict[str, Any] = field(default_factory=dict)
    requested_ts_ms: int | None = None  # when the user was asked for an answer
    answered_ts_ms: int | None = None  # when the answer arrived (None: labeled at source or not yet)


class UserState:
    """The per-user step: reject repeated event ids, offer the rest to the buffer policy,
    ask for answers to admitted unlabeled events, attach answers, close training windows.

    Two triggers close a training window, each emitting a ``train_request`` that
    carries the buffer's labeled samples; either may be off (0):

    * ``window_events``: every that many accepted events (the paper's protocol);
    * ``window_ms``: event-time tumbling windows ``[k*window_ms, (k+1)*window_ms)``
      since the epoch. The user's own events are the clock: the first event at or
      past the open window's end closes it (before that event is offered, since
      it belongs to the next window), so a quiet user's window stays open until
      they speak again or the input ends. Several empty windows skipped at once
      close nothing; an event older than the open window (late) is still offered
      but opens nothing.

    Repeat guard: an event id repeated within the user's last ``dedup_window`` event
    ids, or while its event is still in the buffer, is dead-lettered as
    ``duplicate_event`` (:data:`REPEATED_EVENT`); an older repeat is offered again like a new event. The memory
    this takes is bounded by ``dedup_window`` ids, whatever the stream's length.

    An answer can arrive before its event: the two come from separate Kafka topics
    read independently, and after a restart from a checkpoint both are re-read.
    Up to ``max_early`` such answers wait (status ``early``) and attach the moment
    their event is admitted, without asking again; an answer pushed out of a full
    stash is ``unknown_event``, one whose event is not admitted ``not_buffered``.
    """

    def __init__(self, user_id: str, policy: BufferPolicy, window_events: int = 0, window_ms: int = 0,
                 max_early: int = 256, dedup_window: int = 4096):
        self.user_id = user_id
        self.policy = policy
        self.window_events = window_events
        self.window_ms = window_ms
        self.max_early = max_early
        self.dedup_window = dedup_window
        self.early: dict[str, Annotation] = {}  # answers whose event has not arrived, oldest first
        self.seen = RecentIds(dedup_window)  # the last dedup_window event ids: bounded, see operators/recent.py
        self.texts: dict[str, BufferedText] = {}
        self.n_events = 0
        self.n_windows = 0
        self.last_window_events = 0
        self.window_end_ms: int | None = None  # end of the open event-time window

    def on_event(self, se: ScoredEvent) -> list[Output]:
        event = se.event
        if event.event_id in self.seen or event.event_id in self.texts:
            return [Output("dead_letter", {
                "reason": REPEATED_EVENT,
                "detail": f"event_id {event.event_id!r} was already seen for user {self.user_id!r}",
                "raw": _event_json(se),
                "raw_encoding": "utf-8",
                "user_id": self.user_id,
                "event_id": event.event_id,
            })]
        self.seen.add(event.event_id)  # the oldest id leaves once dedup_window are held
        closed = self._advance_event_time(event.ts_ms)
        seq = self.n_events
        self.n_events += 1
        start = time.perf_counter()
        decision = self.policy.offer(se.candidate(seq))
        select_seconds = time.perf_counter() - start
        out: list[Output] = []
        if decision.evicted is not None:
            gone = self.texts.pop(decision.evicted, None)
            if gone is not None and gone.requested_ts_ms is not None and gone.answered_ts_ms is None:
                out.append(self._answer_outcome(decision.evicted, "unanswered"))
        early = self.early.pop(event.event_id, None)
        if decision.admitted:
            text = BufferedText(event.prompt, event.response, event.ts_ms, dict(event.meta))
            self.texts[event.event_id] = text
            if event.response is None:
                text.requested_ts_ms = event.ts_ms
                if early is None:
                    out.append(Output("annotation_request", {"user_id": self.user_id, "event_id": event.event_id,
                                                             "ts_ms": event.ts_ms, "prompt": event.prompt}))
            if early is not None:
                out += self.on_annotation(early)
        elif early is not None:
            out.append(self._answer_outcome(early.event_id, "not_buffered"))
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
        out.insert(0, Output("decision", row))
        if self.window_events and self.n_events % self.window_events == 0:
            out.append(self.close_window("events"))
        return closed + out

    def _advance_event_time(self, ts_ms: int) -> list[Output]:
        """Close the open event-time window if ``ts_ms`` lies past its end; open the one ``ts_ms`` falls in."""
        if not self.window_ms or (self.window_end_ms is not None and ts_ms < self.window_end_ms):
            return []
        crossed = self.window_end_ms is not None and self.n_events > self.last_window_events
        self.window_end_ms = (ts_ms // self.window_ms + 1) * self.window_ms
        return [self.close_window("event_time")] if crossed else []

    def on_annotation(self, a: Annotation) -> list[Output]:
        """Attach a user's answer to a buffered sample; one whose event has not arrived yet waits for it
        (up to ``max_early``); anything else is counted and dropped."""
        text = self.texts.get(a.event_id)
        if text is None:
            if a.event_id in self.seen:
                return [self._answer_outcome(a.event_id, "not_buffered")]
            return self._wait_for_event(a) if self.max_early else [self._answer_outcome(a.event_id, "unknown_event")]
        if text.requested_ts_ms is None:
            status, latency = "unrequested", None  # labeled at the source: nothing was asked
        else:
            status, latency = ("attached" if text.answered_ts_ms is None else "replaced"), max(0, a.ts_ms - text.requested_ts_ms)
            text.response = a.response
            text.answered_ts_ms = a.ts_ms
        return [self._answer_outcome(a.event_id, status, latency)]

    def _wait_for_event(self, a: Annotation) -> list[Output]:
        """Keep an answer whose event has not arrived; a full stash gives up its oldest."""
        out = []
        if a.event_id not in self.early and len(self.early) >= self.max_early:
            oldest = next(iter(self.early))
            del self.early[oldest]
            out.append(self._answer_outcome(oldest, "unknown_event"))
        self.early.pop(a.event_id, None)  # a repeated early answer: the newest wins, and queues last
        self.early[a.event_id] = a
        return out + [self._answer_outcome(a.event_id, "early")]

    def _answer_outcome(self, event_id: str, status: str, latency_ms: int | None = None) -> Output:
        return Output("annotation", {"user_id": self.user_id, "event_id": event_id, "status": status, "latency_ms": latency_ms})

    def labeled_samples(self) -> list[dict[str, Any]]:
        """Buffered samples that have an answer, in arrival order: the user's training set."""
        out = []
        for c in self.policy.samples():
            text = self.texts[c.event_id]
            if text.response is not None:
                out.append({"event_id": c.event_id, "prompt": text.prompt, "response": text.response, "domain": c.domain})
        return out

    def close_window(self, trigger: str = "end_of_input") -> Output:
        """A training window closes: hand the trainer this user's labeled buffer.

        ``trigger`` says what closed it: ``events``, ``event_time`` or ``end_of_input``."""
        self.n_windows += 1
        self.last_window_events = self.n_events
        return Output("train_request", {"user_id": self.user_id, "window": self.n_windows, "events_seen": self.n_events,
                                        "trigger": trigger, "samples": self.labeled_samples()})

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
            "seen": self.seen.snapshot(),
            "texts": {k: asdict(v) for k, v in self.texts.items()},
            "n_events": self.n_events,
            "n_windows": self.n_windows,
            "last_window_events": self.last_window_events,
            "window_events": self.window_events,
            "window_ms": self.window_ms,
            "window_end_ms": self.window_end_ms,
            "max_early": self.max_early,
            "dedup_window": self.dedup_window,
            "early": [asdict(a) for a in self.early.values()],
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "UserState":
        policy = POLICIES[snap["policy_name"]].from_snapshot(snap["policy"])
        state = cls(snap["user_id"], policy, snap["window_events"], snap.get("window_ms", 0))  # .get: older snapshots
        state.window_end_ms = snap.get("window_end_ms")
        state.max_early = snap.get("max_early", state.max_early)
        state.early = {a["event_id"]: Annotation(**a) for a in snap.get("early", [])}
        # Older snapshots hold every id ever seen as a sorted list: the last dedup_window of them are kept.
        state.dedup_window = snap.get("dedup_window", state.dedup_window)
        state.seen = RecentIds.from_snapshot(snap["seen"], state.dedup_window)
        state.texts = {k: BufferedText(**v) for k, v in snap["texts"].items()}
        state.n_events = snap["n_events"]
        state.n_windows = snap["n_windows"]
        state.last_window_events = snap["last_window_events"]
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
