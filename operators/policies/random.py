"""Random replacement: every new sample gets in, evicting a uniformly random buffered one."""

from __future__ import annotations

import math
from itertools import islice

from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class RandomReplacement(BufferPolicy):
    """When full, admit the new sample and evict a buffered one chosen uniformly at random.

    The paper's "random replacement" baseline. Unlike reservoir sampling it always admits,
    so an item's survival decays geometrically and the buffer is biased towards recent
    samples.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = RandomReplacement(capacity=2, seed=1)
    >>> for i, vec in enumerate([unit(1, 0), unit(0, 1), unit(1, 1), unit(1, 2)]):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=1.0, dss=0.0))
    ...     print(d.event_id, d.outcome, d.evicted)
    e0 admitted None
    e1 admitted None
    e2 replaced e0
    e3 replaced e2
    >>> [c.event_id for c in policy.samples()]
    ['e1', 'e3']
    """

    name = "random"

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        if len(self._samples) < self.capacity:
            return "admitted", None, math.nan
        k = int(self._rng.integers(len(self._samples)))
        # The k-th buffered id in arrival order, walked in C: a list of the ids cost 0.6 ms at capacity 100,000.
        return "replaced", next(islice(self._samples, k, None)), math.nan
