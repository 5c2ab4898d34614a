"""Reservoir sampling (Vitter's Algorithm R): the buffer is a uniform sample of the stream."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

from operators.policies.base import BufferPolicy
from operators.sample import NEAR_COPY, Candidate


class Reservoir(BufferPolicy):
    """Admit the n-th offer with probability ``capacity / n``, replacing a uniformly random slot.

    After n offers every offered sample is buffered with the same probability
    ``capacity / n``, whatever its position in the stream: an unbiased baseline that the
    paper lacks. Draw ``j`` uniformly in ``[0, n)``; if ``j < capacity`` the sample replaces
    the ``j``-th buffered one (any fixed slot order gives a uniform victim).

    ``dedup`` (off by default; a second-round candidate of the selection benchmark) turns away a
    candidate whose cosine to a buffered sample is at least ``dedup`` as a ``"duplicate"``, which
    then does not count as an offer: the sample is uniform over the stream's non-duplicates, and
    the user is never asked to annotate a near-copy of what the buffer holds.

    If the user deleted a sample, the free slot is refilled by the next offer; the
    uniformity guarantee then holds only approximately.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = Reservoir(capacity=2, seed=3)
    >>> for i, vec in enumerate([unit(1, 0), unit(0, 1), unit(1, 1), unit(1, 2), unit(2, 1)]):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=1.0, dss=0.0))
    ...     print(d.event_id, d.outcome, d.evicted)
    e0 admitted None
    e1 admitted None
    e2 rejected None
    e3 replaced e0
    e4 replaced e1
    >>> [c.event_id for c in policy.samples()], policy.seen
    (['e3', 'e4'], 5)
    """

    name = "reservoir"

    def __init__(self, capacity: int = 64, seed: int = 0, dedup: float | None = None):
        super().__init__(capacity=capacity, seed=seed)
        if dedup is not None and not 0.0 < dedup <= 1.0:
            raise ValueError(f"dedup must be None (off) or a cosine in (0, 1], got {dedup!r}; e.g. 0.95")
        self.dedup = None if dedup is None else float(dedup)
        self.seen = 0  # offers counted by Algorithm R (replayed buffered events excluded)

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        if self.dedup is not None and c.max_sim >= self.dedup:
            return NEAR_COPY, None, math.nan
        self.seen += 1
        if len(self._samples) < self.capacity:
            return "admitted", None, math.nan
        j = int(self._rng.integers(self.seen))
        if j >= self.capacity:
            return "rejected", None, math.nan
        return "replaced", next(islice(self._samples, j, None)), math.nan  # the j-th id, without a list of all

    def _state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
