"""One user's state in the selection stream: the composition of four small objects.

* :class:`~operators.repeats.RepeatGuard` drops repeated event ids (bounded memory);
* :class:`~operators.clock.WindowClock` says when a training window closes, and why;
* :class:`~operators.buffer.Buffer` is the buffer policy with its samples' texts;
* :class:`~operators.stash.AnswerStash` keeps answers that arrive before their event.

:class:`UserState` wires them for one event or answer at a time and turns what they
report into typed rows (``operators.rows``; a repeated id is a ``Rejected``). It is plain data: :meth:`UserState.snapshot` returns
picklable values (the four objects' snapshots, side by side in one flat dict) and
:meth:`UserState.from_snapshot` rebuilds an equal state, so a dataflow can checkpoint
it without adapters.

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
>>> out[0].outcome, out[0].evicted_id, sorted(state.texts)
('replaced', 'e0', ['e1'])
>>> state.on_event(scored(1))[0].reason
'duplicate_event'

Unlabeled admitted events are asked about; answers attach only to buffered samples:

>>> state = UserState("u1", make_policy("fifo", capacity=1))
>>> [o.kind for o in state.on_event(scored(0, answer=None))]
['decision', 'annotation_request']
>>> [o.status for o in state.on_annotation(Annotation("e0", "u1", 5, "an answer"))]
['attached']
>>> _ = state.on_event(scored(1, answer=None))  # evicts e0
>>> [o.status for o in state.on_annotation(Annotation("e0", "u1", 9, "late"))]
['not_buffered']
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Union

from operators.buffer import Buffer, BufferedText
from operators.clock import WindowClock
from operators.events import Annotation, Rejected
from operators.policies import BufferPolicy
from operators.repeats import REPEATED_EVENT, RepeatGuard
from operators.rows import AnnotationRequest, AnswerOutcome, BufferView, DecisionRow, TrainRequest
from operators.sample import Decision
from operators.scoring import ScoredEvent
from operators.stash import AnswerStash

__all__ = ["BufferedText", "Output", "REPEATED_EVENT", "UNKNOWN_EVENT", "UserState"]

UNKNOWN_EVENT = "unknown_event"
"""Dead-letter reason (and answer status) of an answer whose event never came: pushed out of the
stash of early answers, or still waiting when the input ended."""


Output = Union[DecisionRow, Rejected, AnnotationRequest, AnswerOutcome, TrainRequest, BufferView]
"""What the per-user step emits; its type routes it to a sink (``flows.selection``)."""


class UserState:
    """The per-user step: reject repeated event ids, offer the rest to the buffer,
    ask for answers to admitted unlabeled events, attach answers, close training windows.

    ``window_events`` and ``window_ms`` set the :class:`~operators.clock.WindowClock`
    (either may be 0: off); each closed window emits a ``train_request`` with the
    buffer's labeled samples. ``dedup_window`` bounds the
    :class:`~operators.repeats.RepeatGuard`: an event id repeated within the user's
    last that many ids, or while its event is buffered, is dead-lettered as
    ``duplicate_event``; an older repeat is offered again like a new event.

    An answer whose event has not arrived waits in the :class:`~operators.stash.AnswerStash`
    (up to ``max_early``, status ``early``) and attaches the moment its event is
    admitted, without asking again; one whose event is not admitted is ``not_buffered``
    (only buffered samples need answers). An answer pushed out of a full stash, or still
    waiting at :meth:`end_of_input`, is ``unknown_event`` and is dead-lettered, so no
    answer is dropped without a record.
    """

    def __init__(self, user_id: str, policy: BufferPolicy, window_events: int = 0, window_ms: int = 0,
                 max_early: int = 256, dedup_window: int = 4096):
        self.user_id = user_id
        self.guard = RepeatGuard(dedup_window)
        self.clock = WindowClock(window_events, window_ms)
        self.buffer = Buffer(policy)
        self.stash = AnswerStash(max_early)

    # -- verbs ---------------------------------------------------------------------------

    def on_event(self, se: ScoredEvent) -> list[Output]:
        event = se.event
        if not self.guard.admit(event.event_id, buffered=event.event_id in self.buffer):
            return [self._repeated(se)]
        out: list[Output] = []
        if trigger := self.clock.advance(event.ts_ms):  # closes before the event: it belongs to the next window
            out.append(self.close_window(trigger))
        seq = self.clock.n_events
        start = time.perf_counter()
        decision, gone = self.buffer.offer(event, se.candidate(seq))
        select_seconds = time.perf_counter() - start
        after: list[Output] = []
        if gone is not None and gone.unanswered:
            after.append(self._answer_outcome(decision.evicted, "unanswered"))
        early = self.stash.take(event.event_id)
        if decision.admitted:
            if event.response is None and early is None:
                after.append(AnnotationRequest(self.user_id, event.event_id, event.ts_ms, event.prompt))
            if early is not None:
                after += self.on_annotation(early)
        elif early is not None:
            after.append(self._answer_outcome(early.event_id, "not_buffered"))
        out.append(self._decision_row(se, seq, decision, select_seconds))
        out += after
        if trigger := self.clock.count():
            out.append(self.close_window(trigger))
        return out

    def on_annotation(self, a: Annotation) -> list[Output]:
        """Attach a user's answer to a buffered sample; one whose event has not arrived yet waits for it
        (up to ``max_early``); one for an event seen but not buffered is counted (``not_buffered``), one pushed
        out of the stash is dead-lettered (``unknown_event``)."""
        attached = self.buffer.attach(a)
        if attached is not None:
            return [self._answer_outcome(a.event_id, *attached)]
        if a.event_id in self.guard:
            return [self._answer_outcome(a.event_id, "not_buffered")]
        out = []
        for gone in self.stash.put(a):
            why = ("annotation.max_early is 0, so answers do not wait for their event" if not self.stash.max_early else
                   f"pushed out of the {self.stash.max_early} answers waiting for their event (annotation.max_early)")
            out += self._unknown_event(gone, why)
        if a.event_id in self.stash:
            out.append(self._answer_outcome(a.event_id, "early"))
        return out

    def end_of_input(self) -> list[Output]:
        """The input ended: the answers still waiting for their event never get one. Each is dead-lettered
        as ``unknown_event`` (and counted so) and leaves the stash, so no answer is dropped unseen."""
        out = []
        for a in self.stash.waiting():
            self.stash.take(a.event_id)
            out += self._unknown_event(a, "the input ended before the event arrived")
        return out

    def close_window(self, trigger: str = "end_of_input") -> TrainRequest:
        """A training window closes: hand the trainer this user's labeled buffer.

        ``trigger`` says what closed it: ``events``, ``event_time`` or ``end_of_input``."""
        window = self.clock.close()
        return TrainRequest(self.user_id, window, self.clock.n_events, trigger, self.buffer.labeled_samples())

    def labeled_samples(self) -> list[dict[str, Any]]:
        """Buffered samples that have an answer, in arrival order: the user's training set."""
        return self.buffer.labeled_samples()

    def buffer_view(self) -> BufferView:
        """The buffer as it stands, for the per-user snapshot output."""
        return BufferView(self.user_id, self.policy.name, self.clock.n_events, self.buffer.view())

    # -- snapshots: the parts' snapshots side by side, in the format kept since before the split --

    def snapshot(self) -> dict[str, Any]:
        b, c, g, s = self.buffer.snapshot(), self.clock.snapshot(), self.guard.snapshot(), self.stash.snapshot()
        return {
            "user_id": self.user_id,
            "policy_name": b["policy_name"],
            "policy": b["policy"],
            "seen": g["seen"],
            "texts": b["texts"],
            "n_events": c["n_events"],
            "n_windows": c["n_windows"],
            "last_window_events": c["last_window_events"],
            "window_events": c["window_events"],
            "window_ms": c["window_ms"],
            "window_end_ms": c["window_end_ms"],
            "max_early": s["max_early"],
            "dedup_window": g["dedup_window"],
            "early": s["early"],
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "UserState":
        """Rebuild from ``snapshot()``, or from a snapshot of any earlier version (each part reads its keys)."""
        buffer = Buffer.from_snapshot(snap)
        state = cls(snap["user_id"], buffer.policy)
        state.guard, state.clock = RepeatGuard.from_snapshot(snap), WindowClock.from_snapshot(snap)
        state.buffer, state.stash = buffer, AnswerStash.from_snapshot(snap)
        return state

    # -- read-only views of the parts, under the names they had before the split (tests, benchmarks, flows) --

    policy = property(lambda self: self.buffer.policy)
    texts = property(lambda self: self.buffer.texts)
    seen = property(lambda self: self.guard.recent)
    dedup_window = property(lambda self: self.guard.dedup_window)
    early = property(lambda self: self.stash.early)
    max_early = property(lambda self: self.stash.max_early)
    window_events = property(lambda self: self.clock.window_events)
    window_ms = property(lambda self: self.clock.window_ms)
    window_end_ms = property(lambda self: self.clock.window_end_ms)
    n_events = property(lambda self: self.clock.n_events)
    n_windows = property(lambda self: self.clock.n_windows)
    last_window_events = property(lambda self: self.clock.last_window_events)

    # -- what the step says --------------------------------------------------------------

    def _repeated(self, se: ScoredEvent) -> Rejected:
        event = se.event
        return Rejected(REPEATED_EVENT, f"event_id {event.event_id!r} was already seen for user {self.user_id!r}",
                        _event_json(se), "utf-8", self.user_id, event.event_id, source=event.source)

    def _unknown_event(self, a: Annotation, why: str) -> list[Output]:
        """An answer whose event never came: counted as ``unknown_event`` and dead-lettered with it in ``raw``."""
        return [self._answer_outcome(a.event_id, UNKNOWN_EVENT), Rejected(
            UNKNOWN_EVENT, f"an answer for event_id {a.event_id!r}, which user {self.user_id!r} never sent: {why}",
            _annotation_json(a), "utf-8", self.user_id, a.event_id, source=a.source)]

    def _decision_row(self, se: ScoredEvent, seq: int, decision: Decision, select_seconds: float) -> DecisionRow:
        event = se.event
        return DecisionRow(
            user_id=self.user_id,
            event_id=event.event_id,
            seq=seq,
            ts_ms=event.ts_ms,
            policy=self.policy.name,
            outcome=decision.outcome,
            admitted=decision.admitted,
            evicted_id=decision.evicted,
            domain=se.domain,
            eoe=se.eoe,
            dss=se.dss,
            idd=_finite_or_none(decision.idd),
            max_sim=_finite_or_none(decision.max_sim),
            score=_finite_or_none(decision.score),
            n_tokens=se.n_tokens,
            labeled=event.response is not None,
            buffer_size=len(self.buffer),
            embed_seconds=se.embed_seconds,
            score_seconds=se.score_seconds,
            select_seconds=select_seconds,
        )

    def _answer_outcome(self, event_id: str, status: str, latency_ms: int | None = None) -> AnswerOutcome:
        return AnswerOutcome(self.user_id, event_id, status, latency_ms)


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


def _annotation_json(a: Annotation) -> str:
    return json.dumps({"event_id": a.event_id, "user_id": a.user_id, "ts": a.ts_ms, "response": a.response},
                      ensure_ascii=False)
