"""The answer stash: one user's answers that arrived before their event, waiting for it.

Answers and events come from separate Kafka topics read independently, and after a
restart from a checkpoint both are re-read, so an answer can arrive first. The stash keeps
up to ``max_early`` of them, oldest first; a full stash gives up its oldest to make room,
and a repeated answer replaces the waiting one and queues last. ``max_early=0`` keeps none.
What leaves it without its event (pushed out, or still waiting when the input ends:
:meth:`AnswerStash.waiting`) is handed back, so the caller can dead-letter it.

>>> from operators.events import Annotation
>>> stash = AnswerStash(max_early=2)
>>> [[a.event_id for a in stash.put(Annotation(e, "u", t, f"answer {t}"))]
...  for e, t in (("e1", 1), ("e2", 2), ("e1", 3), ("e3", 4))]
[[], [], [], ['e2']]
>>> list(stash.early), stash.take("e1").response, stash.take("e1")
(['e1', 'e3'], 'answer 3', None)
>>> [a.event_id for a in AnswerStash(max_early=0).put(Annotation("e4", "u", 5, "no room"))]
['e4']
>>> AnswerStash.from_snapshot(stash.snapshot()).snapshot()
{'max_early': 2, 'early': [{'event_id': 'e3', 'user_id': 'u', 'ts_ms': 4, 'response': 'answer 4'}]}
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from operators.events import Annotation

__all__ = ["AnswerStash"]


class AnswerStash:
    """Up to ``max_early`` early answers, by event id, oldest first."""

    def __init__(self, max_early: int = 256):
        self.max_early = max_early
        self.early: dict[str, Annotation] = {}  # insertion order is arrival order

    def put(self, a: Annotation) -> list[Annotation]:
        """Keep ``a`` until its event arrives; returns the answers given up to make room
        (``a`` itself when ``max_early`` is 0)."""
        if not self.max_early:
            return [a]
        gone = []
        if a.event_id not in self.early and len(self.early) >= self.max_early:
            oldest = next(iter(self.early))
            gone.append(self.early.pop(oldest))
        self.early.pop(a.event_id, None)  # a repeated early answer: the newest wins, and queues last
        self.early[a.event_id] = a
        return gone

    def take(self, event_id: str) -> Annotation | None:
        """The answer waiting for ``event_id``, which leaves the stash; None if none waits."""
        return self.early.pop(event_id, None)

    def waiting(self) -> list[Annotation]:
        """The answers still waiting, oldest first (the stash keeps them)."""
        return list(self.early.values())

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.early

    def __len__(self) -> int:
        return len(self.early)

    def snapshot(self) -> dict[str, Any]:
        # ``source`` only when known, so snapshots keep the format they had before it existed
        return {"max_early": self.max_early,
                "early": [{k: v for k, v in asdict(a).items() if k != "source" or v is not None} for a in self.early.values()]}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "AnswerStash":
        """Rebuild from ``snapshot()``; snapshots from before the stash have neither key."""
        stash = cls(snap.get("max_early", 256))
        stash.early = {a["event_id"]: Annotation(**a) for a in snap.get("early", [])}
        return stash
