"""Forward-only uncertainty plus diversity against the buffer, streamed (UDS)."""

from __future__ import annotations

import math
from typing import Any

from operators.moments import RunningMoments
from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class UDS(BufferPolicy):
    """Keep the candidates that are uncertain for the model and unlike what the buffer holds.

    Source: Zou, Mao, Qu, Wang, Ji, "Utility-Diversity Aware Online Batch Selection for LLM
    Supervised Fine-tuning" (UDS, ICML 2026, arXiv 2510.16882). It scores a sample by the
    nuclear norm of its logits matrix (tokens x vocabulary), from a forward pass only: large
    when the model is unsure and its token predictions are varied. It adds diversity against
    a small memory of samples already seen, and keeps the top of a weighted sum. The paper
    selects within training batches, over whole training samples, and compares low-dimensional
    projections of the logits; here the memory is the buffer and the comparison is cosine.

    Streaming version: the candidate carries ``uncertainty``, the nuclear norm of the
    prompt's token-logit matrix divided by its token count (computed with the LM outside
    operators/). Diversity is ``1 - max cosine`` to the buffered samples (``1 - c.max_sim``;
    1.0 on an empty buffer, as new as an orthogonal sample). Both are standardised by their
    running mean and standard deviation over the offered candidates (``RunningMoments``, as
    SDSS does), and ``score = z(uncertainty) + diversity_weight * z(diversity)``.

    1. Fill first; then the candidate replaces the lowest-scoring buffered sample if its score
       is strictly higher (ties keep the incumbent; among equal victims the older goes).
    2. A buffered sample keeps the score it had when admitted. Its diversity has since changed
       with the buffer, but recomputing every buffered sample's diversity at each offer costs
       O(capacity^2) similarities; the frozen score also keeps the scale it was judged on
       (diversities run high while the buffer is filling, and so does their running mean).
    3. The candidate's diversity counts the victim it would replace, so a near-copy of the
       weakest sample cannot slip in by evicting it.

    **Fits the paper's setting.** It needs no response: the prompt alone, one forward pass on
    the device, before anyone is asked for an annotation. Domains, EOE and DSS are ignored.

    Below, ``e2`` copies ``e0``'s direction (diversity 0) and is rejected; ``e3`` is new and
    evicts ``e0``, the weakest; ``e4`` is near ``e1`` but far more uncertain, and evicts ``e3``.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = UDS(capacity=2)
    >>> stream = [(unit(1, 0, 0), 2.0), (unit(0, 1, 0), 4.0), (unit(1, 0, 0), 3.0),
    ...           (unit(0, 0, 1), 3.0), (unit(1, 1, 0), 6.0)]
    >>> for i, (vec, u) in enumerate(stream):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=0.0, dss=0.0, uncertainty=u))
    ...     print(d.event_id, d.outcome, d.evicted, round(1 - d.max_sim, 3) if i else "empty", round(d.score, 2))
    e0 admitted None empty 0.0
    e1 admitted None 1.0 1.0
    e2 rejected None 0.0 -1.41
    e3 replaced e0 1.0 0.58
    e4 replaced e3 0.293 0.92
    >>> [c.event_id for c in policy.samples()]
    ['e1', 'e4']
    """

    name = "uds"

    def __init__(self, capacity: int = 64, seed: int = 0, diversity_weight: float = 1.0):
        super().__init__(capacity=capacity, seed=seed)
        if (
            isinstance(diversity_weight, bool)
            or not isinstance(diversity_weight, (int, float))
            or not math.isfinite(diversity_weight)
            or diversity_weight < 0
        ):
            raise ValueError(
                f"diversity_weight must be a finite number >= 0 (weight of z(diversity) against z(uncertainty)), "
                f"got {diversity_weight!r}; e.g. diversity_weight=1.0, or 0.0 for uncertainty alone"
            )
        self.diversity_weight = float(diversity_weight)
        self._moments = RunningMoments(2)  # of (uncertainty, diversity) over the offers
        self._scores: dict[str, float] = {}  # buffered event_id -> score when admitted

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        if not math.isfinite(c.uncertainty):
            raise ValueError(
                f"candidate {c.event_id!r} has uncertainty {c.uncertainty!r}: the uds policy needs the prompt's "
                "logit nuclear norm per token; compute it before offering"
            )
        diversity = 1.0 - c.max_sim if math.isfinite(c.max_sim) else 1.0  # max_sim is -inf on an empty buffer
        self._moments.update([c.uncertainty, diversity])
        z_uncertainty, z_diversity = self._moments.z([c.uncertainty, diversity])
        score = float(z_uncertainty + self.diversity_weight * z_diversity)
        if len(self._samples) < self.capacity:
            self._scores[c.event_id] = score  # the base applies what _choose returns
            return "admitted", None, score
        victim = min(self._samples, key=self._scores.__getitem__)  # arrival order: ties pick the older
        if score <= self._scores[victim]:
            return "rejected", None, score
        del self._scores[victim]
        self._scores[c.event_id] = score
        return "replaced", victim, score

    def _buffer_changed(self) -> None:
        if len(self._scores) != len(self._samples):  # a sample was removed (e.g. deleted by the user)
            self._scores = {e: s for e, s in self._scores.items() if e in self._samples}

    def _state(self) -> dict[str, Any]:
        return {"moments": self._moments.state(), "scores": dict(self._scores)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._moments.load(state["moments"])
        self._scores = dict(state["scores"])
