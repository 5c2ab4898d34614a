"""Instruction-Following Difficulty, streamed: keep the hardest pairs whose prompt still helps (Superfiltering)."""

from __future__ import annotations


from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class IFD(BufferPolicy):
    """Keep the ``capacity`` candidates of highest IFD among those with IFD below ``max_ifd``.

    Source: Li et al., "Superfiltering: Weak-to-Strong Data Filtering for Fast
    Instruction-Tuning" (ACL 2024), which scores an instruction/answer pair with a small LM by
    the Instruction-Following Difficulty of Li et al. (NAACL 2024, "From Quantity to Quality")::

        IFD(Q, A) = loss(A | Q) / loss(A)

    the mean token loss of the answer after the instruction over the answer's own. Near 1 the
    instruction barely helps to predict the answer; at or above 1 it does not help at all and
    the pair is likely misaligned, so the paper drops it and keeps the highest-IFD rest (the
    pairs the model finds hardest to follow). The small LM is the point: a weak model's IFD
    ranks data much as a strong model's does, which here means the on-device model itself.

    Streaming version (a baseline, not the paper's batch top-k% filter): the candidate carries
    its precomputed ``ifd``; this policy only compares numbers.

    1. A candidate with ``ifd >= max_ifd`` or nan is ``"rejected"``, even while there is room.
    2. Otherwise fill first; then the candidate replaces the lowest-IFD buffered sample if its
       IFD is strictly higher. Ties keep the incumbent; among equal victims the older goes.
       The buffer is then the top ``capacity`` of the admissible offers so far (with distinct
       values). Embeddings, domains and quality scores are ignored. Score = the candidate's IFD.

    **Information the paper's setting lacks.** IFD needs the answer ``A`` before the sample is
    chosen for annotation. On a device the answer worth training on is the user's own, known
    only after asking them, which is exactly what the buffer decides. In edgetune's benchmark
    ``ifd`` is computed from the dataset's reference answer, information the device does not
    have, so this row is an optimistic baseline (an upper bound on what IFD could do here,
    not a selector the product could ship as is).

    Below, ``e1`` is misaligned (IFD >= 1) and ``e3`` unscored; ``e4`` displaces the lowest
    buffered pair, ``e5`` only ties the lowest and is turned away.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> policy = IFD(capacity=2)
    >>> for i, ifd in enumerate([0.6, 1.2, 0.3, float("nan"), 0.8, 0.6, 0.9]):
    ...     vec = np.eye(2, dtype=np.float32)[i % 2]
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=0.0, dss=0.0, ifd=ifd))
    ...     print(d.event_id, d.outcome, d.evicted, d.score)
    e0 admitted None 0.6
    e1 rejected None 1.2
    e2 admitted None 0.3
    e3 rejected None nan
    e4 replaced e2 0.8
    e5 rejected None 0.6
    e6 replaced e0 0.9
    >>> [(c.event_id, c.ifd) for c in policy.samples()]
    [('e4', 0.8), ('e6', 0.9)]
    """

    name = "ifd"

    def __init__(self, capacity: int = 64, seed: int = 0, max_ifd: float = 1.0):
        super().__init__(capacity=capacity, seed=seed)
        if isinstance(max_ifd, bool) or not isinstance(max_ifd, (int, float)) or not max_ifd > 0:
            raise ValueError(
                f"max_ifd must be a number > 0 (pairs with IFD at or above it are dropped as misaligned), "
                f"got {max_ifd!r}; e.g. max_ifd=1.0 as in the paper, or math.inf to keep every scored pair"
            )
        self.max_ifd = float(max_ifd)

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        ifd = float(c.ifd)
        if not ifd < self.max_ifd:  # nan compares false: an unscored pair is never kept
            return "rejected", None, ifd
        if len(self._samples) < self.capacity:
            return "admitted", None, ifd
        # min keeps the first of equal values, and the buffer is in arrival order: the older.
        victim = min(self._samples.values(), key=lambda s: s.ifd)
        if ifd > victim.ifd:
            return "replaced", victim.event_id, ifd
        return "rejected", None, ifd
