"""Streaming greedy k-center (core-set) selection in embedding space."""

from __future__ import annotations

import math

import numpy as np

from operators.policies.base import BufferPolicy
from operators.sample import Candidate


class KCenter(BufferPolicy):
    """Keep buffered samples spread out: replace one end of the closest pair with a farther newcomer.

    The paper's K-Center baseline (Sener & Savarese's core-set), made streaming. Distance is
    cosine distance ``1 - cos``. The rule, when the buffer is full:

    1. ``d_new`` = distance from the candidate to its nearest buffered sample (``1 - max_sim``);
       ``(a, b)`` = the closest buffered pair, at distance ``d_min`` (ties: earliest-arrived ``a``).
    2. If ``d_new <= d_min`` the candidate is rejected: it is no farther from the buffer than
       the buffer's own most redundant pair.
    3. Otherwise evict whichever of ``a``/``b`` leaves the larger minimum separation among the
       remaining samples plus the candidate (ties: the older one) and admit the candidate.

    Once full, the buffer's minimum pairwise distance never decreases (every new pair is at
    least ``d_new > d_min`` apart), the quantity greedy farthest-point selection (Gonzalez,
    2-approximate offline) grows; this streaming rule is a heuristic without that bound. Score = ``d_new``. Domains and quality scores are ignored. With
    ``capacity=1`` there is no pair, so the first sample stays.

    Above ``operators.index.LARGE_CAPACITY`` the buffer lives in an ``ArrayIndex`` that keeps
    every sample's two nearest neighbours up to date as samples come and go (an insertion is
    compared with every buffered vector, a removal re-searches only the samples that had it as
    a neighbour), and the closest pair and the separations are array minima over that cache:
    the same rule, incremental instead of an all-pairs search per change.

    The closest pair comes from FAISS searches of the buffered vectors (k=3: self, first and
    second neighbour, enough to know each sample's nearest neighbour after removing ``a`` or
    ``b``) and is cached until the buffer changes, so a rejected offer costs one search.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> policy = KCenter(capacity=3)
    >>> stream = [unit(1, 0, 0), unit(1, 0.1, 0), unit(0, 1, 0), unit(1, 0.05, 0), unit(0, 0, 1)]
    >>> for i, vec in enumerate(stream):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=1.0, dss=0.0))
    ...     print(d.event_id, d.outcome, d.evicted, round(d.score, 3))
    e0 admitted None inf
    e1 admitted None 0.005
    e2 admitted None 0.9
    e3 rejected None 0.001
    e4 replaced e1 1.0
    >>> [c.event_id for c in policy.samples()]
    ['e0', 'e2', 'e4']
    """

    name = "kcenter"
    _needs_neighbours = True

    def __init__(self, capacity: int = 64, seed: int = 0):
        super().__init__(capacity=capacity, seed=seed)
        # Caches derived from the buffer (not state: rebuilt on demand, so snapshots skip them).
        self._closest: tuple[float, str | None, str | None] | None = None
        self._nn: dict[str, list[tuple[str, float]]] = {}

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        d_new = 1.0 - c.max_sim  # +inf on an empty buffer
        if len(self._samples) < self.capacity:
            return "admitted", None, d_new
        d_min, a, b = self._closest_pair_large() if self._large else self._closest_pair()
        if a is None or d_new <= d_min:
            return "rejected", None, d_new
        separation = self._separation_without_large if self._large else self._separation_without
        keep_if_drop_a = separation(a, c)
        keep_if_drop_b = separation(b, c)
        victim = b if keep_if_drop_b > keep_if_drop_a else a  # a arrived first: ties evict the older
        return "replaced", victim, d_new

    def _buffer_changed(self) -> None:
        self._closest = None

    def _neighbours(self) -> dict[str, list[tuple[str, float]]]:
        """Each buffered sample's two nearest other samples, as (event_id, distance)."""
        ids = list(self._samples)
        vecs = np.stack([self._samples[i].embedding for i in ids])
        hits = self._index.search(vecs, 3)
        return {i: [(j, 1.0 - s) for j, s in row if j != i][:2] for i, row in zip(ids, hits)}

    def _closest_pair(self) -> tuple[float, str | None, str | None]:
        if self._closest is None:
            self._nn = self._neighbours() if len(self._samples) >= 2 else {}
            best = (math.inf, None, None)
            for i, row in self._nn.items():  # arrival order, strict < : ties keep the earliest
                if row and row[0][1] < best[0]:
                    best = (row[0][1], i, row[0][0])
            self._closest = best
        return self._closest

    def _separation_without(self, gone: str, c: Candidate) -> float:
        """Minimum pairwise distance of the buffer minus ``gone`` plus the candidate."""
        sep = math.inf
        for i, row in self._nn.items():
            if i != gone:
                rest = [dist for j, dist in row if j != gone]
                sep = min(sep, rest[0] if rest else math.inf)
        to_candidate = [1.0 - s for j, s in self._index.nearest(c.embedding, 2) if j != gone]
        return min(sep, to_candidate[0] if to_candidate else math.inf)

    # -- the large-capacity path: array minima over the index's nearest-neighbour cache ------

    def _closest_pair_large(self) -> tuple[float, str | None, str | None]:
        if self._closest is None:
            best = (math.inf, None, None, math.inf)  # distance, a, b, a's insertion stamp
            for domain in self._index.domains():
                rows = self._index.rows(domain)
                sims, fids = self._index.neighbours(domain)
                dist = 1.0 - sims[:, 0]
                d = float(dist.min())
                if d == math.inf or d > best[0]:
                    continue
                tied = np.flatnonzero(dist == d)
                i = int(tied[np.argmin(rows.stamps[tied])])
                if d < best[0] or rows.stamps[i] < best[3]:  # ties keep the earliest arrived
                    a, b = self._index.event_ids(np.array([rows.fids[i], fids[i, 0]]))
                    best = (d, a, b, int(rows.stamps[i]))
            d, a, b, _ = best
            # The pair's distance is in both ends' rows, so a is the older end (the exact path's
            # tie-break), whichever of the two float roundings came out lower.
            if a is not None and self._index.fid(b) < self._index.fid(a):
                a, b = b, a
            self._closest = (d, a, b)
        return self._closest

    def _separation_without_large(self, gone: str, c: Candidate) -> float:
        gone_fid = self._index.fid(gone)
        sep = math.inf
        for domain in self._index.domains():
            rows = self._index.rows(domain)
            sims, fids = self._index.neighbours(domain)
            nearest = np.where(fids[:, 0] == gone_fid, sims[:, 1], sims[:, 0])
            nearest = nearest[rows.fids[: rows.n] != gone_fid]
            if len(nearest):
                sep = min(sep, float((1.0 - nearest).min()))
        to_candidate = [1.0 - s for j, s in self._index.nearest(c.embedding, 2) if j != gone]
        return min(sep, to_candidate[0] if to_candidate else math.inf)
