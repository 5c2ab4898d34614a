"""One user's buffer: the policy's samples and their texts, changed in one place.

The policy keeps each sample's embedding and scores; the words (prompt, answer, times)
stay here, beside it. Only :meth:`Buffer.offer` and :meth:`Buffer.remove` change what is
buffered, and each changes both, so ``texts`` always holds exactly the policy's samples.

>>> import numpy as np
>>> from operators.events import Annotation, Event
>>> from operators.policies import make_policy
>>> from operators.sample import Candidate
>>> buffer = Buffer(make_policy("fifo", capacity=1))
>>> def offer(i, answer=None):
...     event = Event(f"e{i}", "u", 100 * i, f"question {i}", answer)
...     decision, gone = buffer.offer(event, Candidate(f"e{i}", i, np.eye(2, dtype=np.float32)[i % 2], 0.5, 0.0))
...     return decision.outcome, decision.evicted, gone and gone.prompt, list(buffer.texts)
>>> offer(0)  # unlabeled: asked about at its own time, 0 ms
('admitted', None, None, ['e0'])
>>> buffer.attach(Annotation("e0", "u", 130, "an answer")), buffer.labeled_samples()
(('attached', 130), [{'event_id': 'e0', 'prompt': 'question 0', 'response': 'an answer', 'domain': 'general'}])
>>> offer(1, answer="labeled at the source")  # fifo of one: e0 leaves the policy and the texts together
('replaced', 'e0', 'question 0', ['e1'])
>>> buffer.attach(Annotation("e1", "u", 150, "late")), buffer.attach(Annotation("e0", "u", 160, "gone"))
(('unrequested', None), None)
>>> buffer.remove("e1"), len(buffer), buffer.texts
(True, 0, {})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from operators.events import Annotation, Event
from operators.policies import POLICIES, BufferPolicy
from operators.sample import Candidate, Decision

__all__ = ["Buffer", "BufferedText"]


@dataclass
class BufferedText:
    """What the buffer keeps of an event besides its embedding: the words."""

    prompt: str
    response: str | None
    ts_ms: int
    meta: dict[str, Any] = field(default_factory=dict)
    requested_ts_ms: int | None = None  # when the user was asked for an answer
    answered_ts_ms: int | None = None  # when the answer arrived (None: labeled at source or not yet)

    @property
    def unanswered(self) -> bool:
        """Asked about and not answered (yet)."""
        return self.requested_ts_ms is not None and self.answered_ts_ms is None


class Buffer:
    """A buffer ``policy`` and the texts of its samples, by event id."""

    def __init__(self, policy: BufferPolicy):
        self.policy = policy
        self.texts: dict[str, BufferedText] = {}

    def offer(self, event: Event, candidate: Candidate) -> tuple[Decision, BufferedText | None]:
        """Offer ``event`` (as ``candidate``) to the policy; returns its decision and the text of the
        sample it evicted (None if none). An admitted unlabeled event is marked as asked about."""
        decision = self.policy.offer(candidate)
        gone = self.texts.pop(decision.evicted, None) if decision.evicted is not None else None
        if decision.admitted:
            requested = event.ts_ms if event.response is None else None
            self.texts[event.event_id] = BufferedText(event.prompt, event.response, event.ts_ms, dict(event.meta),
                                                      requested_ts_ms=requested)
        return decision, gone

    def attach(self, a: Annotation) -> tuple[str, int | None] | None:
        """Attach an answer to its buffered sample: ``(status, latency_ms)``, or None if not buffered.

        ``attached`` (first answer) or ``replaced`` (a newer one), with the latency since the
        request; ``unrequested`` (labeled at the source: nothing was asked, nothing changes)."""
        text = self.texts.get(a.event_id)
        if text is None:
            return None
        if text.requested_ts_ms is None:
            return "unrequested", None
        status = "attached" if text.answered_ts_ms is None else "replaced"
        text.response = a.response
        text.answered_ts_ms = a.ts_ms
        return status, max(0, a.ts_ms - text.requested_ts_ms)

    def remove(self, event_id: str) -> bool:
        """Drop a buffered sample and its text; False if it was not buffered."""
        self.texts.pop(event_id, None)
        return self.policy.remove(event_id)

    def labeled_samples(self) -> list[dict[str, Any]]:
        """Buffered samples that have an answer, in arrival order: the user's training set."""
        out = []
        for c in self.policy.samples():
            text = self.texts[c.event_id]
            if text.response is not None:
                out.append({"event_id": c.event_id, "prompt": text.prompt, "response": text.response, "domain": c.domain})
        return out

    def view(self) -> list[dict[str, Any]]:
        """Every buffered sample with its scores and words, in arrival order."""
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
        return samples

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.texts

    def __len__(self) -> int:
        return len(self.policy)

    def snapshot(self) -> dict[str, Any]:
        return {"policy_name": self.policy.name, "policy": self.policy.snapshot(),
                "texts": {k: asdict(v) for k, v in self.texts.items()}}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "Buffer":
        buffer = cls(POLICIES[snap["policy_name"]].from_snapshot(snap["policy"]))
        buffer.texts = {k: BufferedText(**v) for k, v in snap["texts"].items()}
        return buffer
