"""First in, first out: the buffer holds the newest ``capacity`` samples."""

from __future__ import annotations

import math

from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class FIFO(BufferPolicy):
    """Keep the newest ``capacity`` samples; when full, evict the oldest.

    The paper's FIFO baseline. On a temporally correlated stream it holds whatever the
    user talked about last, repetitive or not.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = FIFO(capacity=2)
    >>> for i, vec in enumerate([unit(1, 0), unit(0, 1), unit(1, 1)]):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=1.0, dss=0.0))
    ...     print(d.event_id, d.outcome, d.evicted)
    e0 admitted None
    e1 admitted None
    e2 replaced e0
    >>> [c.event_id for c in policy.samples()]
    ['e1', 'e2']
    """

    name = "fifo"

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        if len(self._samples) < self.capacity:
            return "admitted", None, math.nan
        oldest = next(iter(self._samples))  # the dict is in arrival order
        return "replaced", oldest, math.nan
