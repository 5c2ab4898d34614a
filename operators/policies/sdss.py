"""Ours: self-supervised data selection by EOE, DSS and IDD together (Qin et al., DAC'24)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from operators.config import BufferConfig
from operators.moments import RunningMoments, RunningRanks
from operators.policies.base import BufferPolicy
from operators.sample import NEAR_COPY, Candidate


_SHIPPED = BufferConfig()  # the defaults live in the settings tree


class SDSS(BufferPolicy):
    """Keep the samples with the best combined EOE/DSS/IDD score, per dominant domain, never near-copies.

    The paper publishes each score alone but not how the three combine; this is our rule.

    1. **Comparable scales.** EOE, DSS and IDD have unrelated units and spreads, so each is
       standardised by its running mean and standard deviation (Welford) over the offered
       candidates, and the score is ``sum(w_k * z_k)``. ``weights`` default to the shipped
       (2, 1, 1): EOE doubled, which led equal weights on both datasets' validation users in
       the policy table; a zero weight removes that score exactly (used for ablations). Near-duplicates are left out
       of the statistics: a burst of copies would collapse a score's spread and let it
       dominate the sum, and copies say nothing about the distribution of distinct content.
    2. **No near-copies.** If the candidate's cosine to any buffered sample is at least
       ``dup_threshold`` it is a ``"duplicate"`` and is not kept, so a repetitive run of chat
       occupies at most one slot.
    3. **Fill first.** While there is room, every non-duplicate is admitted (as the paper does).
    4. **Then compete within the dominant domain.** The victim is the lowest-scoring buffered
       sample of the candidate's domain. Buffered samples' IDD is their *current*
       leave-one-out IDD within their domain, because it changes as the buffer changes (a
       sample that was novel on arrival may since have gained near neighbours). If the
       candidate's domain has no buffered sample, the victim comes from the largest domain
       instead, so a new domain can enter and no domain monopolises the buffer. This is
       ``domain_quota="balanced"``: it drifts towards equal domain shares.
       ``domain_quota="stream"`` (the shipped default) instead takes the victim from the domain whose buffer count
       most exceeds its share of the (non-duplicate) offers so far — the candidate's own
       domain when that is the most over-represented — so the buffer mirrors the mix of the
       user's own conversations, with scores choosing *within* each domain's share.
    5. **Swap if better.** The candidate's IDD is measured against the domain *without the
       victim* (what it would be after the swap, like the victim's leave-one-out IDD), so it
       is not penalised for resembling the very sample it would replace. It is admitted if
       its score is strictly higher; ties keep the incumbent. Ties between victims go to the
       older sample, and between equally large domains to the one that arrived first.

    Two options, off as shipped, are candidates for a better rule (benchmarks/README.md, selection):

    - ``scale="rank"`` puts each score on its running mid-rank among the last 1,024 offers
      (:class:`operators.moments.RunningRanks`) instead of its z-value, so a heavy-tailed score
      (DSS: mostly 0, rare values at z = 14) cannot outvote the others;
    - ``coverage > 0`` adds ``coverage * scale(d)``, where ``d`` is the cosine distance to the
      nearest buffered sample of any domain (k-center's quantity; the candidate's is measured
      without the victim, a buffered sample's against the rest of the buffer).

    A third, also off as shipped, is a second-round candidate (benchmarks/README.md, round 2):

    - ``admission="reservoir"`` lets the scores decide only who leaves. Once the buffer is full a
      non-duplicate candidate enters with reservoir sampling's probability ``capacity / n`` (n: the
      non-duplicate offers so far), so what enters is a uniform sample of the user's stream, and it then
      replaces the victim of step 4 whatever the two scores are.

    ``Decision.score`` is the candidate's combined score as compared (nan for duplicates).

    **Large capacities** (above ``operators.index.LARGE_CAPACITY``) run the same rule on an
    ``ArrayIndex`` (per-domain arrays, running sums updated on removal, an IVF index for the
    near-duplicate search from ``operators.index.APPROX_MIN`` vectors). The victim search is
    vectorised and exact without an O(n d) scan per offer: each buffered sample's dot product
    with its domain's sum is cached against the sum at the last refresh; since then the sum has
    moved by a vector ``D``, so every cached IDD is within ``|D| / (n - 1)`` of the current one.
    Scores bounded that way rule out all but the few samples that could be the weakest, whose
    IDD is then computed exactly; the cache is refreshed when too many remain. Domain sizes
    and first arrivals come from the arrays, not from a pass over the buffer.

    Below, ``e2`` nearly copies ``e0``; ``e3`` has the lowest EOE; ``e4`` has a high EOE but
    is close to ``e1``, so its IDD is low; ``e5`` opens a new domain and replaces the
    weakest sample of the largest one.

    >>> import numpy as np
    >>> from operators.sample import Candidate
    >>> def unit(*xs):
    ...     v = np.array(xs, dtype=np.float32)
    ...     return v / np.linalg.norm(v)
    >>> # equal weights and the balanced quota keep the arithmetic short
    >>> policy = SDSS(capacity=2, weights=(1.0, 1.0, 1.0), domain_quota="balanced")
    >>> stream = [(unit(1, 0, 0), 0.2, "law"), (unit(0, 1, 0), 0.9, "law"), (unit(1, 0.01, 0), 0.9, "law"),
    ...           (unit(0, 0, 1), 0.1, "law"), (unit(1, 1, 1), 0.8, "law"), (unit(1, 0, 1), 0.5, "medicine")]
    >>> for i, (vec, eoe, domain) in enumerate(stream):
    ...     d = policy.offer(Candidate(f"e{i}", i, vec, eoe=eoe, dss=0.1, domain=domain))
    ...     print(d.event_id, d.outcome, d.evicted, round(d.score, 2))
    e0 admitted None 0.0
    e1 admitted None 1.0
    e2 duplicate None nan
    e3 rejected None -0.84
    e4 rejected None -0.88
    e5 replaced e0 0.5
    >>> [(c.event_id, c.domain) for c in policy.samples()]
    [('e1', 'law'), ('e5', 'medicine')]
    """

    name = "sdss"

    def __init__(
        self,
        capacity: int = 64,
        seed: int = 0,
        weights: tuple[float, float, float] = _SHIPPED.weights,
        dup_threshold: float = _SHIPPED.dup_threshold,
        domain_quota: str = _SHIPPED.domain_quota,
        scale: str = _SHIPPED.scale,
        coverage: float = _SHIPPED.coverage,
        admission: str = _SHIPPED.admission,
    ):
        super().__init__(capacity=capacity, seed=seed)
        if domain_quota not in ("balanced", "stream"):
            raise ValueError(f"domain_quota must be 'balanced' or 'stream', got {domain_quota!r}")
        self.domain_quota = domain_quota
        self._offered: dict[str, int] = {}  # non-duplicate offers per dominant domain (for "stream")
        weights = tuple(float(w) for w in weights)
        if len(weights) != 3 or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(
                f"weights must be 3 finite non-negative numbers (EOE, DSS, IDD), not all zero, got {weights!r}; "
                "e.g. weights=(1.0, 1.0, 1.0), or (1.0, 0.0, 1.0) to ablate DSS"
            )
        if not 0.0 < dup_threshold <= 1.0:
            raise ValueError(f"dup_threshold must be in (0, 1] (a cosine similarity), got {dup_threshold!r}; e.g. 0.95")
        if scale not in ("z", "rank"):
            raise ValueError(f"scale must be 'z' or 'rank', got {scale!r}")
        if admission not in ("score", "reservoir"):
            raise ValueError(f"admission must be 'score' (shipped) or 'reservoir', got {admission!r}")
        self.admission = admission
        if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not math.isfinite(coverage) or coverage < 0:
            raise ValueError(f"coverage must be a finite number >= 0 (the weight of the distance term), got {coverage!r}; e.g. 1.0")
        self.weights = weights
        self.dup_threshold = float(dup_threshold)
        self.scale = scale
        self.coverage = float(coverage)
        self._moments = RunningMoments(3)  # of (EOE, DSS, IDD) over non-duplicate offers
        self._ranks = RunningRanks(3) if scale == "rank" else None
        self._distances = (RunningRanks(1) if scale == "rank" else RunningMoments(1)) if coverage else None
        self._needs_neighbours = bool(coverage)  # the large-capacity index keeps nearest neighbours for it

    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        if c.max_sim >= self.dup_threshold:
            return NEAR_COPY, None, math.nan
        self._observe(c)
        self._offered[c.domain] = self._offered.get(c.domain, 0) + 1
        if len(self._samples) < self.capacity:
            return "admitted", None, self._score(c.eoe, c.dss, c.idd, 1.0 - c.max_sim)
        if self.admission == "reservoir" and int(self._rng.integers(sum(self._offered.values()))) >= self.capacity:
            return "rejected", None, math.nan
        victim, victim_score = self._weakest(self._victim_domain(c.domain))
        score = self._score(c.eoe, c.dss, self._idd_without(c, victim), self._distance_without(c, victim))
        if self.admission == "reservoir":
            return "replaced", victim, score
        return ("replaced", victim, score) if score > victim_score else ("rejected", None, score)

    def _observe(self, c: Candidate) -> None:
        x = (float(c.eoe), float(c.dss), float(c.idd))
        if not (math.isfinite(x[0]) and math.isfinite(x[1]) and math.isfinite(x[2])):
            raise ValueError(
                f"candidate {c.event_id!r} has a non-finite score (eoe, dss, idd) = {x}; score it first"
            )
        self._moments.update(x)
        if self._ranks is not None:
            self._ranks.update(x)
        if self._distances is not None and math.isfinite(c.max_sim):
            self._distances.update([1.0 - c.max_sim])

    def _score(self, eoe: float, dss: float, idd: float, distance: float = math.nan) -> float:
        if self._ranks is None and self._distances is None:  # as shipped: the z-sum, in plain floats
            z_e, z_d, z_i = self._moments.zs((eoe, dss, idd))
            w_e, w_d, w_i = self.weights
            return w_e * z_e + w_d * z_d + w_i * z_i  # the general path's sum, term for term
        if self._ranks is not None:
            z = self._ranks.rank([eoe, dss, idd])
        else:
            z = self._moments.zs((eoe, dss, idd))  # no spread yet: every sample ties
        score = float(sum(w * zk for w, zk in zip(self.weights, z)))
        if self._distances is not None and math.isfinite(distance):
            scaled = self._distances.rank([distance]) if self.scale == "rank" else self._distances.z([distance])
            score += self.coverage * float(scaled[0])
        return score

    def _victim_domain(self, domain: str) -> str:
        if not self._large:
            if self.domain_quota == "balanced" and self._index.count(domain):
                return domain  # the candidate's own domain has buffered samples: no sizes needed
            # Usually one domain is strictly the answer and the arrival order below only breaks ties.
            sizes = self._index.sizes()
            total = sum(self._offered.values())
            if self.domain_quota == "stream" and total > 0:
                over = {d: n - self.capacity * self._offered.get(d, 0) / total for d, n in sizes.items()}
            elif domain in sizes:
                return domain
            else:
                over = sizes
            top = max(over.values())
            leaders = [d for d, v in over.items() if v == top]
            if len(leaders) == 1:
                return leaders[0]
        sizes = {}
        if self._large:  # the same dict, ordered by each domain's first buffered arrival
            for d in sorted(self._index.domains(), key=self._index.first_stamp):
                sizes[d] = self._index.count(d)
        for s in self._samples.values() if not self._large else ():  # arrival order: equal sizes go to the first arrived
            sizes[s.domain] = sizes.get(s.domain, 0) + 1
        total = sum(self._offered.values())
        if self.domain_quota == "stream" and total > 0:
            # Over-representation of each buffered domain against its share of the offers.
            return max(sizes, key=lambda d: sizes[d] - self.capacity * self._offered.get(d, 0) / total)
        return domain if domain in sizes else max(sizes, key=sizes.__getitem__)

    def _weakest(self, domain: str) -> tuple[str, float]:
        if self._large:
            return self._weakest_large(domain)
        loo = self._index.loo_idd(domain)  # the domain's samples in arrival order
        samples = self._samples
        best: tuple[str, float] | None = None
        if self._ranks is None and self._distances is None:
            # As shipped: _score's z-sum inlined, the same operations in the same order (this loop
            # runs over every buffered sample of the victim's domain, at every offer).
            (m_e, m_d, m_i), (s_e, s_d, s_i) = self._moments.plain()
            w_e, w_d, w_i = self.weights
            for event_id, idd in loo.items():
                s = samples[event_id]
                score = (w_e * ((float(s.eoe) - m_e) / s_e if s_e > 0 else 0.0)
                         + w_d * ((float(s.dss) - m_d) / s_d if s_d > 0 else 0.0)
                         + w_i * ((idd - m_i) / s_i if s_i > 0 else 0.0))
                if best is None or score < best[1]:  # strict: ties keep the older sample as victim
                    best = (event_id, score)
            return best
        distance = self._buffered_distances(domain) if self._distances is not None else {}
        for event_id, idd in loo.items():
            s = samples[event_id]
            score = self._score(s.eoe, s.dss, idd, distance.get(event_id, math.nan))
            if best is None or score < best[1]:  # strict: ties keep the older sample as victim
                best = (event_id, score)
        return best

    def _buffered_distances(self, domain: str) -> dict[str, float]:
        """Cosine distance from each buffered sample of ``domain`` to its nearest other buffered sample."""
        ids = [s.event_id for s in self._samples.values() if s.domain == domain]
        hits = self._index.search(np.stack([self._samples[i].embedding for i in ids]), 2)
        return {i: next((1.0 - sim for j, sim in row if j != i), math.nan) for i, row in zip(ids, hits)}

    def _distance_without(self, c: Candidate, victim: str) -> float:
        """The candidate's cosine distance to its nearest buffered sample other than ``victim``."""
        if self._distances is None:
            return math.nan
        return next((1.0 - sim for j, sim in self._index.nearest(c.embedding, 2) if j != victim), math.nan)

    _REFRESH_ABOVE = 256  # candidates left after the bounds: more, and the cache is refreshed

    def _scaled(self, columns: list[np.ndarray]) -> list[np.ndarray]:
        """``_score``'s per-component scaling of (EOE, DSS, IDD) arrays, elementwise."""
        if self._ranks is not None:
            out = []
            for k, x in enumerate(columns):
                col = np.asarray(self._ranks._sorted[k])
                n = len(col)
                if n == 0:
                    out.append(np.full(len(x), 0.5))
                    continue
                below, upto = np.searchsorted(col, x, "left"), np.searchsorted(col, x, "right")
                out.append((below + 0.5 * (upto - below)) / n)
            return out
        std = self._moments.std()
        return [np.divide(x - self._moments.mean[k], std[k], out=np.zeros(len(x)), where=std[k] > 0) if std[k] > 0
                else np.zeros(len(x)) for k, x in enumerate(columns)]

    def _scaled_distance(self, d: np.ndarray) -> np.ndarray:
        finite = np.isfinite(d)
        out = np.zeros(len(d))
        if self.scale == "rank":
            col = np.asarray(self._distances._sorted[0])
            if len(col) == 0:
                out[finite] = 0.5
            else:
                below, upto = np.searchsorted(col, d[finite], "left"), np.searchsorted(col, d[finite], "right")
                out[finite] = (below + 0.5 * (upto - below)) / len(col)
        else:
            std = float(self._distances.std()[0])
            if std > 0:
                out[finite] = (d[finite] - self._distances.mean[0]) / std
        return self.coverage * out

    def _may_be_weakest_z(self, rows, n, distance, slack) -> np.ndarray | None:
        """Under z-scaling the score is linear in (EOE, DSS, p, distance): rows that may be the weakest.

        ``None`` where that shortcut does not apply (rank scaling, or an IDD near the clip at 0 or 2).
        """
        if self._ranks is not None:
            return None
        p = rows.p[:n]
        # idd = 1 - (p - 1) / (n - 1) within slack; the clip to [0, 2] must not be in play. Every cached dot
        # is within 1.001 |base| + p_err of 0, which settles that without a pass over p unless the domain
        # is nearly one direction.
        reach = (1.001 * float(np.linalg.norm(rows.base)) + rows.p_err + 1.0) / (n - 1)
        if 1.0 - reach < 2 * slack or 1.0 + reach > 2.0 - 2 * slack:
            if 1.0 - (float(p.max()) - 1.0) / (n - 1) < 2 * slack or 1.0 - (float(p.min()) - 1.0) / (n - 1) > 2.0 - 2 * slack:
                return None
        std = self._moments.std()
        a, b, c = (self.weights[k] / std[k] if std[k] > 0 else 0.0 for k in range(3))
        lin = rows.extra[:n] @ np.array([a, b])  # a * eoe + b * dss in one pass (extra holds EOE, DSS)
        lin -= (c / (n - 1)) * p
        if self._distances is not None:
            sd = float(self._distances.std()[0])
            if sd > 0:
                m = float(self._distances.mean[0])
                lin = lin + np.where(np.isfinite(distance), (self.coverage / sd) * (np.nan_to_num(distance) - m), 0.0)
        lo, hi = float(lin.min()), float(lin.max())
        spread = 2.0 * c * slack + 1e-9 * (1.0 + max(-lo, hi) + abs(a) + abs(b) + abs(c))
        return np.flatnonzero(lin <= lo + spread)

    def _weakest_large(self, domain: str) -> tuple[str, float]:
        """``_weakest`` on the arrays: bound every sample's score, score exactly only those that may be lowest."""
        index = self._index
        rows = index.rows(domain)
        n = rows.n
        vecs, stamps, fids = rows.vecs[:n], rows.stamps[:n], rows.fids[:n]
        eoe, dss = rows.extra[:n, 0], rows.extra[:n, 1]
        if self._distances is not None:
            distance = 1.0 - index.neighbours(domain)[0][:, 0]
            distance[~np.isfinite(distance)] = np.nan
        else:
            distance = None  # no coverage term: no distances to read
        if n == 1:
            return index.event_ids(fids)[0], self._score(float(eoe[0]), float(dss[0]), 1.0,
                                                         math.nan if distance is None else float(distance[0]))
        for attempt in (0, 1):
            if rows.p is None or attempt:
                index.refresh_dots(domain)
            # |v . D| <= 1.001 |D| (unit rows, norm tolerance); the self dot is 1 within 0.0021; the cached
            # dots are within p_err of v . base.
            slack = (1.001 * float(np.linalg.norm(rows.drift)) + 0.0021 + rows.p_err) / (n - 1)
            may = self._may_be_weakest_z(rows, n, distance, slack)
            if may is not None:
                if len(may) <= self._REFRESH_ABOVE or attempt:
                    break
                continue
            est = 1.0 - (rows.p[:n] - 1.0) / (n - 1)
            z_e, z_d, z_lo = self._scaled([eoe, dss, np.clip(est - slack, 0.0, 2.0)])
            z_hi = self._scaled([np.clip(est + slack, 0.0, 2.0)] * 3)[2]
            rest = self.weights[0] * z_e + self.weights[1] * z_d
            if self._distances is not None:
                rest = rest + self._scaled_distance(distance)
            low, high = rest + self.weights[2] * z_lo, rest + self.weights[2] * z_hi
            tol = 1e-9 * (1.0 + np.abs(high))
            may = np.flatnonzero(low - tol <= float((high + tol).min()))
            if len(may) <= self._REFRESH_ABOVE or attempt:
                break
        v = vecs[may].astype(np.float64)
        mean_cos = (v @ rows.sum - np.einsum("ij,ij->i", v, v)) / (n - 1)
        idd = np.clip(1.0 - mean_cos, 0.0, 2.0)
        # Vectorised exact scores pick the few lowest; those are rescored with _score itself, so the
        # victim's score is bit for bit what the exact path compares the candidate with.
        z_e, z_d, z_i = self._scaled([eoe[may], dss[may], idd])
        vec_scores = self.weights[0] * z_e + self.weights[1] * z_d + self.weights[2] * z_i
        if self._distances is not None:
            vec_scores = vec_scores + self._scaled_distance(distance[may])
        lowest = float(vec_scores.min())
        close = np.flatnonzero(vec_scores <= lowest + 1e-9 * (1.0 + abs(lowest)))
        d_may = np.full(len(may), np.nan) if distance is None else distance[may]
        scores = {k: self._score(float(eoe[may[k]]), float(dss[may[k]]), float(idd[k]), float(d_may[k])) for k in close}
        best = min(scores, key=lambda k: (scores[k], stamps[may[k]]))  # ties: the older sample
        return index.event_ids(fids[may[best : best + 1]])[0], scores[best]

    def _idd_without(self, c: Candidate, victim: str) -> float:
        """The candidate's IDD against its domain's buffered samples other than ``victim``."""
        n = self._index.count(c.domain)
        v = self._samples[victim]
        if v.domain != c.domain:
            return c.idd
        if n <= 1:
            return 1.0
        sim_sum = n * (1.0 - c.idd) - float(np.dot(c.embedding, v.embedding))
        return 1.0 - sim_sum / (n - 1)

    def _state(self) -> dict[str, Any]:
        state = {**self._moments.state(), "offered": dict(self._offered)}
        if self._ranks is not None:
            state["ranks"] = self._ranks.state()
        if self._distances is not None:
            state["distances"] = self._distances.state()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self._moments.load(state)
        self._offered = dict(state.get("offered", {}))
        if self._ranks is not None:
            self._ranks.load(state["ranks"])
        if self._distances is not None:
            self._distances.load(state["distances"])
