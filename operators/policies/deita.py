"""Quality first, then a diversity filter: a streaming rule in the spirit of DEITA."""

from __future__ import annotations

import math

import numpy as np

from operators.moments import RunningMoments
from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class Deita(BufferPolicy):
    """Keep the highest-quality candidates that are not too close to anything already kept.

    Source: Liu et al., "What Makes Good Data for Alignment? A Comprehensive Study of Automatic
    Data Selection in Instruction Tuning" (ICLR 2024). DEITA sorts a pool by a quality x
    complexity score and walks it best first, adding a sample only if its cosine similarity to
    its nearest already-selected sample is below a threshold (their "Repr Filter"). Their
    scores come from fine-tuned LLaMA scorers that read the response; here the quality is
    label-free, from the prompt alone: ``2 z(EOE) + z(DSS)``, sdss's shipped weights without
    IDD, whose job the filter takes over. z is over every offer so far (Welford).

    Streaming version:

    1. A candidate whose cosine to a buffered sample is at least ``threshold`` is
       ``"rejected"`` (the filter; it still counts in the quality statistics).
    2. Fill first.
    3. Then the victim is the lowest-quality buffered sample of any domain (ties: the older);
       the candidate replaces it if its quality is strictly higher and it passes the filter
       against the buffer without the victim. Score = the candidate's quality.

    Below, ``e1`` is within the threshold of ``e0``; ``e3`` has the best quality but is too
    close to ``e2``; ``e4`` replaces the weakest, ``e0``.

    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = Deita(capacity=2, threshold=0.9)
    >>> stream = [(unit(1, 0, 0), 0.2), (unit(1, 0.1, 0), 0.9), (unit(0, 1, 0), 0.6),
    ...           (unit(0, 1, 0.1), 0.95), (unit(0, 0, 1), 0.7)]
    >>> for i, (vec, eoe) in enumerate(stream):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=eoe, dss=0.0))
    ...     print(d.event_id, d.outcome, d.evicted, round(d.score, 2))
    e0 admitted None 0.0
    e1 rejected None 2.0
    e2 admitted None 0.23
    e3 rejected None 1.93
    e4 replaced e0 0.22
    >>> [c.event_id for c in policy.samples()]
    ['e2', 'e4']
    """

    name = "deita"

    def __init__(self, capacity: int = 64, seed: int = 0, threshold: float = 0.9,
                 weights: tuple[float, float] = (2.0, 1.0)):
        super().__init__(capacity=capacity, seed=seed)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] (a cosine similarity), got {threshold!r}; e.g. 0.9")
        weights = tuple(float(w) for w in weights)
        if len(weights) != 2 or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"weights must be 2 finite non-negative numbers (EOE, DSS), not both zero, got {weights!r}")
        self.threshold = float(threshold)
        self.weights = weights
        self._moments = RunningMoments(2)

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        x = np.array([c.eoe, c.dss], dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"candidate {c.event_id!r} has a non-finite score (eoe, dss) = {tuple(x)}; score it first")
        self._moments.update(x)
        quality = self._quality(c)
        if len(self._samples) < self.capacity:
            return ("rejected", None, quality) if c.max_sim >= self.threshold else ("admitted", None, quality)
        victim = min(self._samples.values(), key=self._quality)  # min keeps the first: the older
        if quality <= self._quality(victim):
            return "rejected", None, quality
        nearest = next((sim for j, sim in self._index.nearest(c.embedding, 2) if j != victim.event_id), -math.inf)
        return ("rejected", None, quality) if nearest >= self.threshold else ("replaced", victim.event_id, quality)

    def _quality(self, c: Candidate) -> float:
        z = self._moments.z([c.eoe, c.dss])
        return float(self.weights[0] * z[0] + self.weights[1] * z[1])

    def _state(self) -> dict:
        return self._moments.state()

    def _load_state(self, state: dict) -> None:
        self._moments.load(state)
