"""Per-event cost of scoring + buffer decision at capacity 64 and 100,000; many users; peak RSS vs stream length.

    python benchmarks/bench_buffer.py --parts cost    # cost per event, agreement, recall (~6 min)
    python benchmarks/bench_buffer.py --parts users   # many users x 64 samples: memory, per-event cost (~6 min)
    python benchmarks/bench_buffer.py --parts rss     # only the peak-RSS part (~2.5 min)
    python benchmarks/bench_buffer.py --quick --parts cost,users,rss   # smoke run (~1 min)

Part 1 (``cost``) — cost per offer. One user, one policy, synthetic L2-normalised embeddings
(576-d as SmolLM2, 384-d as MiniLM) drawn around per-domain centroids, on real ShareGPT texts so
that DSS and the dominant domain are real (see ``_synthetic.py``). The buffer is pre-filled to
capacity (through the policy's own ``_insert``, with each pre-fill sample's IDD and the running
score statistics computed as ``offer`` would; offering 100,000 samples one by one would itself
take hours of exact searches), then N further events are timed: ``Scorer.score_batch`` over each
source batch of 64 (EOE + DSS, what the flow's embed step does after the forward passes of a batch) and
``policy.offer`` one event at a time (IDD, near-duplicate search, the policy's choice, eviction and
insertion).

sdss is timed three ways on identical inputs:

- ``sdss-reference``: :class:`NumpySDSS` below, the rule written brute force in numpy (one dense
  float32 matrix per domain, exact ``matrix @ vector`` scans, running sums). It implements
  weights (1, 1, 1) and ``domain_quota="balanced"``;
- ``sdss-<index>``: ``operators.policies.SDSS`` as shipped, **pinned to the reference's rule**
  (``weights=(1, 1, 1), domain_quota="balanced"``), so its decisions can be compared. The row is
  named by the index the policy actually runs on: ``faiss-flat`` (``DomainIndex``, exact FAISS,
  capacity <= ``operators.index.LARGE_CAPACITY``), ``arrays`` (``ArrayIndex``, exact scans below
  ``APPROX_MIN`` vectors) or ``arrays+ivf`` (``ArrayIndex`` with its IVF index for the global
  near-duplicate search). At capacity 64 the decisions (outcome, evicted id) are **asserted**
  identical to the reference's on every timed offer; above, the agreement is measured, not asserted
  (table ``agreement``);
- ``sdss-default``: the shipped defaults (weights (2, 1, 1), ``domain_quota="stream"``), timed
  only: its rule is not the reference's.

At the large capacity, table ``recall`` also queries the pre-filled ``ArrayIndex`` with fresh
vectors and with near-copies of buffered rows (cosine spread around the 0.95 duplicate
threshold) and compares its ``max_sim`` with an exact scan: recall@1, the largest similarity
error, and how often the duplicate decision (``max_sim >= 0.95``) agrees.

The other policies (random, fifo, reservoir, kcenter) are timed as shipped; k-center (which
keeps an incremental nearest-neighbour cache above ``LARGE_CAPACITY``) at 64 and 10,000.

Both libraries run single-threaded (FAISS: ``operators/index.py`` sets 1 OpenMP thread; numpy's
BLAS is limited to 1 thread here), as one user's buffer runs on one Bytewax worker.

Part 2 (``users``) — many users. In a fresh subprocess per N, N users' ``UserState`` (the flow's
per-user step, shipped defaults: sdss (2, 1, 1) / stream at capacity 64, repeat window 4,096 ids)
are filled with 64 samples each (real ShareGPT prompt+response texts, each user's own copies;
synthetic 576-d vectors), then events routed to random users are timed through
``Scorer.score`` + ``UserState.on_event``. Memory per user = the RSS growth while building the
users / N; snapshot bytes = ``pickle.dumps(state.snapshot())`` (what a Bytewax recovery epoch
stores per changed user). N stops where the next size would not fit in the free RAM (estimated
from the previous size), and the figure per 100,000 users is extrapolated linearly.

Part 3 (``rss``) — peak RSS. A fresh subprocess per stream length streams N events (real ShareGPT
prompts cycled with fresh event ids, unlabeled, synthetic 576-d vectors, 8 users round-robin, sdss at capacity 64)
through ``Scorer.score`` and ``UserState.on_event`` (the flow's per-user step, including its
``seen`` set of event ids), and reports its peak RSS (``VmHWM``), RSS along the way, and the bytes held
by the ``seen`` sets.
"""

from __future__ import annotations

import json
import math
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (sets sys.path to the repository root)

import numpy as np  # noqa: E402

from operators import index as index_module  # noqa: E402
from operators.buffer import BufferedText  # noqa: E402
from operators.events import Event  # noqa: E402
from operators.lexicons import load_lexicons  # noqa: E402
from operators.policies import make_policy  # noqa: E402
from operators.policies.reservoir import Reservoir  # noqa: E402
from operators.policies.sdss import SDSS  # noqa: E402
from operators.sample import Candidate, Decision  # noqa: E402
from operators.scores import idd_from_sum  # noqa: E402
from operators.scoring import Scorer  # noqa: E402

from _synthetic import DomainSpace, n_tokens_estimate, prefill_candidates, real_events, text_domains  # noqa: E402

NAME = "bench_buffer"

REFERENCE_RULE = {"weights": (1.0, 1.0, 1.0), "domain_quota": "balanced"}
"""The rule :class:`NumpySDSS` implements; the shipped sdss is pinned to it wherever decisions are compared."""

SCORE_BATCH = 64
"""Events scored at once in the cost part: the flow's embed step embeds and scores each source batch in one call
(``flows.selection.embed_and_score``), and a replay's source batch is ``ReplaySource``'s default, 64 (not
imported: this benchmark loads no torch or bytewax)."""


# --- the brute-force numpy variant of the sdss rule ------------------------------------------


class _Rows:
    """One domain's buffered samples as dense arrays; removal moves the last row into the hole."""

    def __init__(self, dim: int) -> None:
        self.vecs = np.empty((16, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.arrival = np.empty(16, dtype=np.int64)
        self.scores = np.empty((16, 2), dtype=np.float64)  # eoe, dss
        self.sum = np.zeros(dim, dtype=np.float64)
        self.n = 0

    def add(self, event_id: str, vec: np.ndarray, arrival: int, eoe: float, dss: float) -> int:
        if self.n == len(self.vecs):  # grow by doubling: amortised O(d) per add
            self.vecs = np.concatenate([self.vecs, np.empty_like(self.vecs)])
            self.arrival = np.concatenate([self.arrival, np.empty_like(self.arrival)])
            self.scores = np.concatenate([self.scores, np.empty_like(self.scores)])
        row = self.n
        self.vecs[row] = vec
        self.arrival[row] = arrival
        self.scores[row] = (eoe, dss)
        self.ids.append(event_id)
        self.sum += vec.astype(np.float64)
        self.n += 1
        return row

    def remove(self, row: int) -> str | None:
        """Remove ``row``; returns the event id that moved into it (None if it was the last)."""
        self.sum -= self.vecs[row].astype(np.float64)
        last = self.n - 1
        moved = None
        if row != last:
            self.vecs[row] = self.vecs[last]
            self.arrival[row] = self.arrival[last]
            self.scores[row] = self.scores[last]
            self.ids[row] = self.ids[last]
            moved = self.ids[row]
        self.ids.pop()
        self.n -= 1
        return moved


class NumpySDSS:
    """The sdss rule of ``operators/policies/sdss.py``, brute force in numpy, without FAISS.

    Same steps, same float64 statistics and tie-breaks: near-duplicate exit, Welford moments,
    fill first, victim = lowest combined score (leave-one-out IDD) in the candidate's domain
    (or in the largest domain; equal sizes: the domain whose oldest buffered sample is
    oldest), candidate IDD without the victim, strict ``>`` to swap. Differences are in the
    bookkeeping only: domain sizes are counters (no scan), removal subtracts from the
    running sum instead of re-summing, rows move on removal (ties use an arrival counter).
    """

    name = "sdss-reference"

    def __init__(self, capacity: int, weights: tuple[float, float, float] = (1.0, 1.0, 1.0), dup_threshold: float = 0.95):
        self.capacity = capacity
        self.weights = weights
        self.dup_threshold = dup_threshold
        self._domains: dict[str, _Rows] = {}
        self._where: dict[str, tuple[str, int]] = {}
        self._emb: dict[str, np.ndarray] = {}
        self._arrivals = 0
        self._n = 0
        self._mean = np.zeros(3)
        self._m2 = np.zeros(3)

    def __len__(self) -> int:
        return len(self._where)

    # -- the rule ------------------------------------------------------------------------

    def offer(self, c: Candidate) -> Decision:
        rows = self._domains.get(c.domain)
        c.idd = idd_from_sum(c.embedding, rows.sum, rows.n) if rows and rows.n else 1.0
        c.max_sim = self._max_sim(c.embedding)
        if c.event_id in self._where:
            return Decision(c.event_id, "duplicate", None, c.idd, c.max_sim, math.nan)
        if c.max_sim >= self.dup_threshold:
            return Decision(c.event_id, "duplicate", None, c.idd, c.max_sim, math.nan)
        self.observe(c)
        if len(self._where) < self.capacity:
            self.insert(c)
            return Decision(c.event_id, "admitted", None, c.idd, c.max_sim, self._score1(c.eoe, c.dss, c.idd))
        victim, victim_score = self._weakest(self._victim_domain(c.domain))
        score = self._score1(c.eoe, c.dss, self._idd_without(c, victim))
        if score > victim_score:
            self._remove(victim)
            self.insert(c)
            return Decision(c.event_id, "replaced", victim, c.idd, c.max_sim, score)
        return Decision(c.event_id, "rejected", None, c.idd, c.max_sim, score)

    def observe(self, c: Candidate) -> None:
        x = np.array([c.eoe, c.dss, c.idd], dtype=np.float64)
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def insert(self, c: Candidate) -> None:
        rows = self._domains.get(c.domain)
        if rows is None:
            rows = self._domains[c.domain] = _Rows(len(c.embedding))
        row = rows.add(c.event_id, c.embedding, self._arrivals, c.eoe, c.dss)
        self._arrivals += 1
        self._where[c.event_id] = (c.domain, row)
        self._emb[c.event_id] = c.embedding

    def _remove(self, event_id: str) -> None:
        domain, row = self._where.pop(event_id)
        del self._emb[event_id]
        rows = self._domains[domain]
        moved = rows.remove(row)
        if moved is not None:
            self._where[moved] = (domain, row)
        if rows.n == 0:
            del self._domains[domain]

    def _max_sim(self, vec: np.ndarray) -> float:
        best = -math.inf
        for rows in self._domains.values():
            if rows.n:
                best = max(best, float((rows.vecs[: rows.n] @ vec).max()))
        return best

    def _std_z(self, x: np.ndarray) -> np.ndarray:
        std = np.sqrt(self._m2 / max(self._n, 1))
        return np.divide(x - self._mean, std, out=np.zeros_like(x, dtype=np.float64), where=std > 0)

    def _score1(self, eoe: float, dss: float, idd: float) -> float:
        z = self._std_z(np.array([eoe, dss, idd]))
        return float(sum(w * zk for w, zk in zip(self.weights, z)))

    def _victim_domain(self, domain: str) -> str:
        if domain in self._domains:
            return domain
        # largest domain; equal sizes: the one whose oldest buffered sample arrived first
        return min(self._domains, key=lambda d: (-self._domains[d].n, int(self._domains[d].arrival[: self._domains[d].n].min())))

    def _weakest(self, domain: str) -> tuple[str, float]:
        rows = self._domains[domain]
        n = rows.n
        if n <= 1:
            loo = np.ones(n)
        else:
            vecs = rows.vecs[:n].astype(np.float64)
            self_dot = np.einsum("ij,ij->i", vecs, vecs)
            loo = np.clip(1.0 - (vecs @ rows.sum - self_dot) / (n - 1), 0.0, 2.0)
        x = np.column_stack([rows.scores[:n, 0], rows.scores[:n, 1], loo])
        std = np.sqrt(self._m2 / max(self._n, 1))
        z = np.divide(x - self._mean, std, out=np.zeros_like(x), where=std > 0)
        w = self.weights
        score = w[0] * z[:, 0] + w[1] * z[:, 1] + w[2] * z[:, 2]
        low = score.min()
        tied = np.flatnonzero(score == low)
        row = int(tied[np.argmin(rows.arrival[tied])])
        return rows.ids[row], float(low)

    def _idd_without(self, c: Candidate, victim: str) -> float:
        v_domain, _ = self._where[victim]
        if v_domain != c.domain:
            return c.idd
        n = self._domains[c.domain].n
        if n <= 1:
            return 1.0
        sim_sum = n * (1.0 - c.idd) - float(np.dot(c.embedding, self._emb[victim]))
        return 1.0 - sim_sum / (n - 1)


# --- pre-fill and timing --------------------------------------------------------------------


def prefill(policy: Any, cands: list[Candidate]) -> None:
    """Fill ``policy`` to capacity with ``cands`` as ``offer`` would, minus the searches.

    Every pre-fill sample is admitted (the buffer has room); its IDD is computed against the
    domain's samples so far (O(d), running sums) and, for sdss, fed to the running score
    statistics. The near-duplicate search is skipped: the synthetic vectors are far below
    the threshold (checked on the timed offers, which do search).
    """
    if isinstance(policy, NumpySDSS):
        for c in cands:
            rows = policy._domains.get(c.domain)
            c.idd = idd_from_sum(c.embedding, rows.sum, rows.n) if rows and rows.n else 1.0
            policy.observe(c)
            policy.insert(c)
        return
    for c in cands:
        index = policy._index
        c.idd = index.idd(c.embedding, c.domain) if index is not None else 1.0
        if isinstance(policy, SDSS):
            policy._observe(c)
            policy._offered[c.domain] = policy._offered.get(c.domain, 0) + 1  # as _choose counts an offer
        policy._insert(c)
    policy._buffer_changed()
    if isinstance(policy, Reservoir):
        policy.seen = len(cands)


def index_kind(policy: Any) -> str:
    """The index a policy actually searches: ``faiss-flat``, ``arrays`` or ``arrays+ivf`` (after its pre-fill)."""
    index = policy._index
    if isinstance(index, index_module.ArrayIndex):
        return "arrays+ivf" if index.approximate else "arrays"
    return "faiss-flat"


def fresh_candidates(base: dict[str, Any]) -> list[Candidate]:
    return [Candidate(i, s, v, e, d, dom) for i, s, v, e, d, dom in
            zip(base["ids"], base["seqs"], base["vecs"], base["eoe"], base["dss"], base["domains"])]


def candidate_arrays(n: int, space: DomainSpace, domains: list[str], dss: list[float], seed: int) -> dict[str, Any]:
    cands = prefill_candidates(n, space, domains, dss, seed)
    return {"ids": [c.event_id for c in cands], "seqs": [c.seq for c in cands], "vecs": [c.embedding for c in cands],
            "eoe": [c.eoe for c in cands], "dss": [c.dss for c in cands], "domains": [c.domain for c in cands]}


def timed_events(pool: list[Event], pool_domains: list[str], space: DomainSpace, n: int, seed: int):
    rng = np.random.default_rng(seed + 1)
    picks = [(k * 7 + 3) % len(pool) for k in range(n)]  # spread over the pool, deterministic
    raws = space.raw([pool_domains[i] for i in picks], rng)
    events = []
    for k, i in enumerate(picks):
        e = pool[i]
        events.append((Event(f"t-{k}", "u0", e.ts_ms, e.prompt, e.response), raws[k], n_tokens_estimate(e.text)))
    return events


def time_offers(policy: Any, scorer: Scorer, events: list, capacity: int, time_cap_s: float,
                min_offers: int = 5, batch: int = SCORE_BATCH) -> tuple[dict[str, Any], list]:
    """Score each batch of ``batch`` events at once, as the flow scores an embedded batch
    (``Scorer.score_batch``), then offer its events one at a time; per-event seconds of each part
    (an event's scoring share is its batch's time over the batch size).

    Stops after ``time_cap_s`` seconds, but never before ``min_offers`` offers (a usable p99)."""
    score_s, offer_s, decisions = [], [], []
    started = time.perf_counter()
    for lo in range(0, len(events), batch):
        part = events[lo : lo + batch]
        t0 = time.perf_counter()
        scored = scorer.score_batch([e for e, _, _ in part], np.stack([r for _, r, _ in part]), [n for _, _, n in part])
        share = (time.perf_counter() - t0) / len(part)
        for k, se in enumerate(scored, start=lo):
            t1 = time.perf_counter()
            d = policy.offer(se.candidate(capacity + k))
            t2 = time.perf_counter()
            score_s.append(share)
            offer_s.append(t2 - t1)
            decisions.append((d.outcome, d.evicted))
        if t2 - started > time_cap_s and len(decisions) >= min_offers:
            break
    total = np.array(score_s) + np.array(offer_s)
    outcomes: dict[str, int] = {}
    for o, _ in decisions:
        outcomes[o] = outcomes.get(o, 0) + 1
    return {
        "offers_timed": len(decisions),
        "score_ms": 1e3 * float(np.mean(score_s)),
        "offer_ms": 1e3 * float(np.mean(offer_s)),
        "total_ms_mean": 1e3 * float(total.mean()),
        "total_ms_p50": 1e3 * float(np.median(total)),
        "total_ms_p99": 1e3 * float(np.percentile(total, 99)),
        "outcomes": " ".join(f"{k}={v}" for k, v in sorted(outcomes.items())),
    }, decisions


class _Timed:
    """Wrap a bound method to accumulate its seconds (for the where-does-it-go breakdown)."""

    def __init__(self, fn, acc: dict[str, float], key: str) -> None:
        self.fn, self.acc, self.key = fn, acc, key

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.acc[self.key] = self.acc.get(self.key, 0.0) + time.perf_counter() - t


def breakdown(policy: SDSS, scorer: Scorer, events: list, capacity: int) -> dict[str, float]:
    """ms per offer spent in each part of the shipped sdss offer (instrumented, separate pass)."""
    acc: dict[str, float] = {}
    idx = policy._index
    for obj, names in ((idx, ("idd", "max_sim", "loo_idd", "remove", "add")), (policy, ("_victim_domain", "_weakest"))):
        for n in names:
            setattr(obj, n, _Timed(getattr(obj, n), acc, n))
    t = time.perf_counter()
    for k, (event, raw, n_tok) in enumerate(events):
        policy.offer(scorer.score(event, raw, n_tok).candidate(10 * capacity + k))
    acc["offer_total_incl_score"] = time.perf_counter() - t
    for obj, names in ((idx, ("idd", "max_sim", "loo_idd", "remove", "add")), (policy, ("_victim_domain", "_weakest"))):
        for n in names:
            delattr(obj, n)
    return {f"{k}_ms": 1e3 * v / len(events) for k, v in acc.items()}


# --- peak RSS child -------------------------------------------------------------------------


def rss_child(n_events: int, n_users: int, dim: int, capacity: int, seed: int) -> dict[str, Any]:
    import psutil

    from operators.state import UserState
    from flows.selection import user_seed

    proc = psutil.Process()
    pool = real_events(2000, seed)
    pool_domains, _ = text_domains(pool)
    space = DomainSpace.make(dim, seed)
    scorer = Scorer(load_lexicons())
    states = {f"user-{u}": UserState(f"user-{u}", make_policy("sdss", capacity=capacity, seed=user_seed(seed, f"user-{u}")))
              for u in range(n_users)}
    rng = np.random.default_rng(seed)
    rss_after_setup = proc.memory_info().rss
    trace = []
    started = time.perf_counter()
    step = max(1, n_events // 10)
    chunk = 1000
    for start in range(0, n_events, chunk):
        ids = range(start, min(n_events, start + chunk))
        raws = space.raw([pool_domains[i % len(pool)] for i in ids], rng)
        for k, i in enumerate(ids):
            e = pool[i % len(pool)]
            user = f"user-{i % n_users}"
            event = Event(f"ev-{i}", user, e.ts_ms + i, e.prompt)  # unlabeled, as a device first sees it
            states[user].on_event(scorer.score(event, raws[k], n_tokens_estimate(e.prompt)))
            if (i + 1) % step == 0:
                trace.append((i + 1, proc.memory_info().rss))
    elapsed = time.perf_counter() - started
    seen_bytes = sum(sys.getsizeof(s.seen) + sum(sys.getsizeof(x) for x in s.seen) for s in states.values())
    return {
        "events": n_events,
        "users": n_users,
        "capacity": capacity,
        "dim": dim,
        "seconds": elapsed,
        "peak_rss_mib": vm_hwm_mib(),
        # ru_maxrss survives exec: a child forked from a big parent reports the parent's peak.
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "rss_after_setup_mib": rss_after_setup / 2**20,
        "rss_end_mib": proc.memory_info().rss / 2**20,
        "seen_ids": sum(len(s.seen) for s in states.values()),
        "seen_sets_mib": seen_bytes / 2**20,
        "buffered": sum(len(s.policy) for s in states.values()),
        "rss_trace_mib": [(n, round(r / 2**20, 1)) for n, r in trace],
    }


def vm_hwm_mib() -> float:
    """Peak resident set of this process image (``VmHWM``), reset by exec unlike ``ru_maxrss``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rss(n_events: int, n_users: int, dim: int, capacity: int, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(n_events), "--users", str(n_users),
           "--dim", str(dim), "--capacity", str(capacity), "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- many users child -----------------------------------------------------------------------


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def users_child(n_users: int, n_timed: int, dim: int, capacity: int, seed: int) -> dict[str, Any]:
    """Build ``n_users`` full users, measure their memory and snapshots, then time events routed to random users."""
    import gc

    from flows.selection import user_seed
    from operators.config import BufferConfig
    from operators.scores import eoe
    from operators.state import UserState

    shipped = BufferConfig()
    pool = [e for e in real_events(3000, seed) if e.response is not None]
    pool_domains, pool_dss = text_domains(pool)
    space = DomainSpace.make(dim, seed)
    scorer = Scorer(load_lexicons())
    rng = np.random.default_rng(seed)
    # EOE costs ~50 us a vector; pre-fill EOE values come from 4,096 vectors computed once (only scores, not memory).
    eoe_raw = space.raw([pool_domains[i % len(pool)] for i in range(4096)], rng)
    eoe_values = [eoe(r, 1, bins=100, mode="bins") for r in eoe_raw]
    del eoe_raw
    gc.collect()
    rss_before = rss_now()
    started = time.perf_counter()
    states: list[UserState] = []
    for u in range(n_users):
        user = f"user-{u}"
        policy = make_policy(shipped.policy, seed=user_seed(seed, user), **shipped.policy_params())
        state = UserState(user, policy, 800, 0, 256, shipped.dedup_window)  # the flow's defaults (train.window_events 800)
        picks = [(u * capacity + j) * 7 % len(pool) for j in range(capacity)]
        raw = space.raw([pool_domains[i] for i in picks], rng)
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for j, i in enumerate(picks):
            e = pool[i]
            event_id = f"{user}-e{j}"
            # what on_event + Buffer.offer store, minus the search: the repeat guard, the clock, the policy, the texts
            state.guard.admit(event_id)
            state.clock.advance(e.ts_ms)
            c = Candidate(event_id, j, unit[j].copy(), eoe_values[(u * capacity + j) % 4096], pool_dss[i], pool_domains[i])
            c.idd = policy._index.idd(c.embedding, c.domain) if policy._index is not None else 1.0
            policy._observe(c)
            policy._offered[c.domain] = policy._offered.get(c.domain, 0) + 1
            policy._insert(c)
            policy._counts["admitted"] += 1
            # each user's own copies of the words (a real user's texts are not shared with anyone's)
            state.buffer.texts[event_id] = BufferedText((e.prompt + ".")[:-1], (e.response + ".")[:-1], e.ts_ms, {})
            state.clock.count()
        states.append(state)
    build_s = time.perf_counter() - started
    gc.collect()
    rss_users = rss_now()
    per_user = (rss_users - rss_before) / n_users
    sample = [states[int(i)] for i in np.random.default_rng(seed + 1).choice(n_users, min(n_users, 200), replace=False)]
    blobs = [len(pickle.dumps(s.snapshot())) for s in sample]

    # events routed to random users, each user's buffer full: Scorer.score + UserState.on_event
    route = np.random.default_rng(seed + 2).integers(0, n_users, n_timed)
    ev_rng = np.random.default_rng(seed + 3)
    picks = [(k * 11 + 5) % len(pool) for k in range(n_timed)]
    raws = space.raw([pool_domains[i] for i in picks], ev_rng)
    per_event = np.empty(n_timed)
    outcomes: dict[str, int] = {}
    for k, (u, i) in enumerate(zip(route, picks)):
        e = pool[i]
        event = Event(f"user-{u}-t{k}", f"user-{u}", e.ts_ms + k, e.prompt, e.response)
        t0 = time.perf_counter()
        out = states[u].on_event(scorer.score(event, raws[k], n_tokens_estimate(e.text)))
        per_event[k] = time.perf_counter() - t0
        outcomes[out[0].outcome] = outcomes.get(out[0].outcome, 0) + 1
    rss_after_events = rss_now()

    # the repeat guard at its bound: dedup_window ids per user (a user with >= 4,096 events), on a sample of users
    guard_users = sample[: min(len(sample), 100)]
    gc.collect()
    before = rss_now()
    for s in guard_users:
        for k in range(shipped.dedup_window - len(s.guard)):
            s.guard.admit(f"{s.user_id}-old{k}")
    gc.collect()
    guard_full = (rss_now() - before) / len(guard_users)
    blobs_guard_full = [len(pickle.dumps(s.snapshot())) for s in guard_users]
    return {
        "users": n_users,
        "samples_per_user": capacity,
        "dim": dim,
        "build_s": build_s,
        "rss_before_users_mib": rss_before / 2**20,
        "rss_users_mib": rss_users / 2**20,
        "kib_per_user": per_user / 1024,
        "gib_per_100k_users": per_user * 100_000 / 2**30,
        "guard_full_extra_kib_per_user": guard_full / 1024,
        "snapshot_kib_mean": float(np.mean(blobs)) / 1024,
        "snapshot_kib_max": float(np.max(blobs)) / 1024,
        "snapshot_guard_full_kib_mean": float(np.mean(blobs_guard_full)) / 1024,
        "events_timed": n_timed,
        "event_ms_mean": 1e3 * float(per_event.mean()),
        "event_ms_p50": 1e3 * float(np.median(per_event)),
        "event_ms_p99": 1e3 * float(np.percentile(per_event, 99)),
        "outcomes": " ".join(f"{k}={v}" for k, v in sorted(outcomes.items())),
        "rss_after_events_mib": rss_after_events / 2**20,
        "peak_rss_mib": vm_hwm_mib(),
    }


def run_users(n_users: int, n_timed: int, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--users-child", str(n_users), "--events", str(n_timed),
           "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"users child (N={n_users}) failed with {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def project(args, kib_per_user: float, guard_extra_kib: float, largest: dict[str, Any]) -> list[dict[str, Any]]:
    """Users -> Bytewax workers and Kafka partitions for ``--proj-users`` users, every number derived (with its arithmetic)."""
    users = args.proj_users
    steady_kib = kib_per_user + guard_extra_kib
    budget_gib = args.proj_worker_state_gib
    per_worker = int(budget_gib * 2**20 // steady_kib)
    workers_mem = math.ceil(users / per_worker)
    ms = largest["event_ms_mean"]
    eps_worker = 1000.0 / ms
    eps_avg = users * args.proj_events_per_user_day / 86_400
    eps_peak = eps_avg * args.proj_peak_factor
    workers_cpu = math.ceil(eps_peak / eps_worker)
    workers = max(workers_mem, workers_cpu)
    partitions = 2 * workers
    snap_kib = largest["snapshot_guard_full_kib_mean"]
    changed = min(users, eps_avg * args.proj_epoch_s)  # at most one changed user per event in an epoch
    epoch_gib = changed * snap_kib / 2**20
    rows = [
        ("users", f"{users:,}", "assumed (--proj-users)"),
        ("memory per user, steady state", f"{steady_kib:.0f} KiB",
         f"{kib_per_user:.0f} KiB (64 samples, measured fit) + {guard_extra_kib:.0f} KiB (repeat guard at 4,096 ids, measured)"),
        ("user state per worker", f"{budget_gib:g} GiB", "assumed (--proj-worker-state-gib): a 2-core 24 GiB host like this one, "
         "1 worker per core, the rest for the embedding model, the runtime and headroom"),
        ("users per worker (memory)", f"{per_worker:,}", f"{budget_gib:g} GiB x 1,048,576 KiB/GiB / {steady_kib:.0f} KiB"),
        ("workers for memory", f"{workers_mem:,}", f"ceil({users:,} / {per_worker:,})"),
        ("selection cost per event", f"{ms:.3f} ms", f"measured mean at N={int(largest['users']):,} (Scorer.score + on_event; "
         "the embedding forward pass not included)"),
        ("events/s per worker (selection)", f"{eps_worker:,.0f}", f"1000 / {ms:.3f} ms"),
        ("events per user per day", f"{args.proj_events_per_user_day:g}", "assumed (--proj-events-per-user-day)"),
        ("events/s, average", f"{eps_avg:,.0f}", f"{users:,} x {args.proj_events_per_user_day:g} / 86,400 s"),
        ("events/s, peak", f"{eps_peak:,.0f}", f"{eps_avg:,.0f} x {args.proj_peak_factor:g} (assumed peak factor, --proj-peak-factor)"),
        ("workers for the peak event rate", f"{workers_cpu:,}", f"ceil({eps_peak:,.0f} / {eps_worker:,.0f})"),
        ("workers", f"{workers:,}", f"max({workers_mem:,} memory, {workers_cpu:,} events): memory bounds it"
         if workers_mem >= workers_cpu else f"max({workers_mem:,} memory, {workers_cpu:,} events): the event rate bounds it"),
        ("hosts (2 workers each)", f"{math.ceil(workers / 2):,}", f"ceil({workers:,} / 2)"),
        ("Kafka partitions (events and annotations topics, key user_id)", f"{partitions:,}",
         f"2 x {workers:,} workers: a user's events stay in order in one partition; 2 per worker lets a rebalance move "
         "whole partitions"),
        ("users per partition", f"{users / partitions:,.0f}", f"{users:,} / {partitions:,}"),
        ("snapshot per changed user", f"{snap_kib:.0f} KiB", "measured pickle.dumps(UserState.snapshot()), repeat guard full"),
        ("changed users per epoch", f"{changed:,.0f}", f"min({users:,}, {eps_avg:,.0f} events/s x {args.proj_epoch_s:g} s epoch) "
         "(at most one changed user per event; --epoch-seconds default 10)"),
        ("snapshot bytes per epoch, all workers", f"{epoch_gib:,.2f} GiB", f"{changed:,.0f} x {snap_kib:.0f} KiB / 1,048,576"),
        ("snapshot bytes per epoch, per worker", f"{epoch_gib * 1024 / workers:,.1f} MiB", f"{epoch_gib:,.2f} GiB x 1024 / {workers:,}"),
    ]
    return [{"quantity": q, "value": v, "arithmetic": a} for q, v, a in rows]


def run_users_part(args) -> None:
    """N users x 64 samples in a fresh subprocess per N; writes ``bench_buffer_users.*``."""
    quick = args.quick
    sizes = (200, 1_000) if quick else tuple(int(x) for x in args.user_sizes.split(","))
    n_timed = 1_000 if quick else args.events
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    gate.check("start")
    head = C.header(f"{NAME}_users", quick, with_torch=False, extra={
        "users": "UserState per user, shipped defaults: sdss weights (2, 1, 1), domain_quota stream, capacity 64, "
                 "repeat window 4,096 ids, train.window_events 800",
        "samples": "64 per user (full buffers): real ShareGPT prompt+response texts, each user's own string copies; "
                   "synthetic 576-d unit vectors; pre-filled through the policy's _insert (no search), then timed "
                   "events through Scorer.score + UserState.on_event",
        "events_timed_per_size": n_timed,
        "memory_available_gib_at_start": round(mem_available() / 2**30, 1),
    })
    rows: list[dict[str, Any]] = []
    skipped = []
    for n in sizes:
        if rows:  # would the next size fit? estimated from the last one, with a third to spare
            need = rows[-1]["kib_per_user"] * 1024 * n * 1.15 + 500 * 2**20
            if need > 0.85 * mem_available():
                skipped.append(f"N={n:,}: estimated {need / 2**30:.1f} GiB, {mem_available() / 2**30:.1f} GiB available")
                print(f"skipping N={n}: {skipped[-1]}", flush=True)
                continue
        load = gate.check(f"users {n}", wait=False)
        r = run_users(n, n_timed, args.seed)
        r["load1"] = round(load, 2)
        gate.end(f"users {n}")
        rows.append(r)
        print(r, flush=True)
    largest = rows[-1]
    # linear fit of RSS growth against N (bytes per user = slope), over the measured sizes
    ns = np.array([r["users"] for r in rows], dtype=float)
    mem = np.array([r["kib_per_user"] * r["users"] for r in rows])  # KiB of all users at each N
    slope = float(np.polyfit(ns, mem, 1)[0]) if len(rows) >= 2 else largest["kib_per_user"]
    gib_100k = slope * 1024 * 100_000 / 2**30
    guard_extra = largest["guard_full_extra_kib_per_user"]
    gib_100k_steady = (slope + guard_extra) * 1024 * 100_000 / 2**30
    fit = [{"fit": "RSS growth vs users, least squares over the measured N", "sizes": " ".join(f"{int(x):,}" for x in ns),
            "kib_per_user": slope, "gib_per_100k_users": gib_100k,
            "guard_full_extra_kib_per_user": guard_extra, "gib_per_100k_users_guard_full": gib_100k_steady,
            "snapshot_kib_per_user": largest["snapshot_kib_mean"],
            "snapshot_kib_per_user_guard_full": largest["snapshot_guard_full_kib_mean"]}]
    projection = project(args, slope, guard_extra, largest)
    cmd = head["command"]
    targets = [{
        "target": f"per-event cost <= 2 ms with {int(largest['users']):,} users x 64 samples (events to random users)",
        "measured": f"p50 {largest['event_ms_p50']:.3f} ms, p99 {largest['event_ms_p99']:.3f} ms, mean {largest['event_ms_mean']:.3f} ms",
        "met": largest["event_ms_mean"] <= 2.0,
        "note": f"met on the mean (as the capacity targets); p99 <= 2 ms: {'yes' if largest['event_ms_p99'] <= 2.0 else 'no'}; " + "; ".join(f"N={int(r['users']):,}: p50 {r['event_ms_p50']:.3f} / p99 {r['event_ms_p99']:.3f}" for r in rows),
        "command": cmd,
    }, {
        "target": "memory per 100k users x 64 samples, stated (extrapolated linearly from the measured N)",
        "measured": f"{gib_100k:.1f} GiB ({slope:.0f} KiB per user); {gib_100k_steady:.1f} GiB with every repeat guard at its 4,096 ids",
        "met": None,
        "note": f"measured up to N={int(largest['users']):,} ({largest['rss_users_mib'] / 1024:.1f} GiB RSS); snapshot "
                f"{largest['snapshot_kib_mean']:.0f} KiB per user ({largest['snapshot_guard_full_kib_mean']:.0f} KiB with a full guard)",
        "command": cmd,
    }]
    notes = [
        "Memory per user = (VmRSS after building the N users - VmRSS before) / N, in a fresh subprocess per N "
        "(`--users-child`); the fit is a least-squares line of that growth against N, and 100,000 users is its "
        "extrapolation (100,000 users do not fit in this machine's RAM beside the other jobs).",
        "A pre-filled user holds 64 event ids in its repeat guard; `guard_full_extra_kib_per_user` is the RSS growth when "
        "the guard of 100 users is filled to its bound (4,096 ids, what a user with >= 4,096 events holds), per user.",
        "Snapshot = `pickle.dumps(UserState.snapshot())` of 200 random users (the bytes a Bytewax recovery epoch "
        "writes for a user whose state changed).",
        "Per-event cost = `Scorer.score` (EOE + DSS of the real text) + `UserState.on_event` (repeat guard, window clock, "
        "sdss offer on the user's full FAISS buffer, texts) for events routed to uniformly random users; the "
        "embedding's forward pass is not included.",
    ] + [f"Not run: {x}." for x in skipped]
    notes.append("Table `projection`: 10M users on paper from these figures (assumptions in the rows marked "
                 "'assumed', set by --proj-* options); see benchmarks/README.md, '10M users'.")
    C.write_results(f"{NAME}_users", quick, head, {"users": rows, "fit": fit, "projection": projection}, targets, notes, gate,
                    title="Many users x 64 samples: memory per user, snapshot bytes, per-event cost")


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--rss-child", type=int, default=None, help=argparse_hidden())
    p.add_argument("--users-child", type=int, default=None, help=argparse_hidden())
    p.add_argument("--user-sizes", default="1000,10000,20000,30000", help="users part: the numbers of users, one child each")
    p.add_argument("--events", type=int, default=10_000, help="users part: events timed per number of users")
    p.add_argument("--proj-users", type=int, default=10_000_000, help="users part: users of the on-paper projection")
    p.add_argument("--proj-worker-state-gib", type=float, default=8.0, help="projection: RAM per worker for user state")
    p.add_argument("--proj-events-per-user-day", type=float, default=50.0, help="projection: events per user per day")
    p.add_argument("--proj-peak-factor", type=float, default=3.0, help="projection: peak / average event rate")
    p.add_argument("--proj-epoch-s", type=float, default=10.0, help="projection: Bytewax recovery epoch, seconds")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--capacity", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--big", type=int, default=100_000, help="the large capacity")
    p.add_argument("--big-offers", type=int, default=300, help="offers timed at the large capacities (at least)")
    p.add_argument("--parts", default="cost,rss",
                   help="which parts to run, comma-separated: 'cost' (writes bench_buffer.*), 'users' (bench_buffer_users.*), "
                        "'rss' (bench_buffer_rss.*)")
    args = p.parse_args()

    from threadpoolctl import threadpool_limits

    if args.rss_child is not None:
        with threadpool_limits(1):
            print(json.dumps(rss_child(args.rss_child, args.users, args.dim, args.capacity, args.seed)))
        return 0

    if args.users_child is not None:
        with threadpool_limits(1):
            print(json.dumps(users_child(args.users_child, args.events, 576, 64, args.seed)))
        return 0

    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not parts or parts - {"cost", "rss", "users"}:
        p.error(f"--parts={args.parts!r}: a comma-separated choice of 'cost', 'users' and 'rss'")
    if "rss" in parts:  # first, while this process is small (the children are fresh interpreters either way)
        run_rss_part(args)
    if "users" in parts:
        run_users_part(args)
    if "cost" in parts:
        run_cost_part(args)
    return 0


def run_rss_part(args) -> None:
    """Peak RSS of a short vs a long stream, each in a fresh subprocess; writes ``bench_buffer_rss.*``."""
    quick = args.quick
    rss_sizes = (2_000, 10_000) if quick else (10_000, 100_000)
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = C.header(f"{NAME}_rss", quick, with_torch=False, extra={
        "stream": f"real ShareGPT prompts cycled with fresh event ids, synthetic 576-d vectors, {args.users} users, sdss capacity 64",
    })
    rss_rows = []
    for n in rss_sizes:
        load = gate.check(f"rss {n} events", wait=False)  # memory, not time: no need to wait for a quiet machine
        r = run_rss(n, args.users, 576, 64, args.seed)
        r["load1"] = round(load, 2)
        r["rss_trace_mib"] = " ".join(f"{k}:{v}" for k, v in r["rss_trace_mib"])
        rss_rows.append(r)
        print(r, flush=True)
    small, large = rss_rows
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    seen_growth = large["seen_sets_mib"] - small["seen_sets_mib"]
    targets = [{"target": f"peak RSS flat within 10 % ({small['events']:,} vs {large['events']:,} events, capacity 64, {args.users} users)",
                "measured": f"{small['peak_rss_mib']:.1f} -> {large['peak_rss_mib']:.1f} MiB ({100 * growth:+.1f} %)",
                "met": abs(growth) <= 0.10,
                "note": f"seen sets: {small['seen_sets_mib']:.2f} -> {large['seen_sets_mib']:.2f} MiB (+{seen_growth:.2f} MiB)",
                "command": head["command"]}]
    notes = [
        "Peak RSS = `VmHWM` of /proc/self/status in a fresh subprocess per stream length (`--rss-child`). "
        "`ru_maxrss` is listed too but is not used: Linux carries it across fork+exec, so a child started from a "
        "large parent reports the parent's peak.",
        "`seen_sets_mib` = getsizeof of the per-user `seen` sets (`UserState.seen`, one id per event ever seen) plus "
        "their id strings: the only per-user structure that grows with the stream; `rss_trace_mib` samples the "
        "current RSS every 10 % of the stream (events:MiB).",
        "Load does not change memory; the sections only record it.",
    ]
    C.write_results(f"{NAME}_rss", quick, head, {"rss": rss_rows}, targets, notes, gate,
                    title="Peak RSS vs stream length (10k vs 100k events)")


def agreement(a: list, b: list) -> dict[str, Any]:
    """How often two decision sequences (outcome, evicted id) agree, offer by offer.

    After a first difference the two buffers differ by a sample, so later offers compare two
    slightly different states; the rate counts them all, ``first_difference`` says where it began."""
    n = min(len(a), len(b))
    diff = [i for i in range(n) if a[i] != b[i]]
    outcome_diff = sum(a[i][0] != b[i][0] for i in range(n))
    return {"offers": n, "decisions_agree": n - len(diff), "agreement_rate": (n - len(diff)) / n if n else math.nan,
            "outcomes_agree_rate": (n - outcome_diff) / n if n else math.nan,
            "first_difference": diff[0] if diff else None,
            "first_difference_was": f"{a[diff[0]]} vs {b[diff[0]]}" if diff else ""}


def recall(index: Any, space: DomainSpace, domains: list[str], n_queries: int, seed: int,
           threshold: float = 0.95) -> list[dict[str, Any]]:
    """``index.max_sim`` (IVF above APPROX_MIN) against an exact scan of every stored row.

    Half the queries are fresh vectors of random domains; half are near-copies of random stored
    rows, ``unit(v + s * g)`` with ``g`` a random unit direction and ``s`` uniform in [0.15, 0.5]
    (cosine to ``v`` about 0.99 to 0.89, both sides of the duplicate threshold)."""
    rng = np.random.default_rng(seed + 7)
    names = index.domains()
    mats = [index.rows(d).vecs[: index.rows(d).n] for d in names]
    fids = np.concatenate([index.rows(d).fids[: index.rows(d).n] for d in names])
    allv = np.concatenate(mats)
    half = n_queries // 2
    fresh = space.raw([domains[int(i)] for i in rng.integers(0, len(domains), half)], rng)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    src = allv[rng.integers(0, len(allv), n_queries - half)]
    g = rng.standard_normal(src.shape).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    near = src + rng.uniform(0.15, 0.5, (len(src), 1)).astype(np.float32) * g
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    rows = []
    for label, q in (("fresh", fresh), ("near-copies", near)):
        q = np.ascontiguousarray(q, dtype=np.float32)
        exact = np.empty(len(q))
        exact_fid = np.empty(len(q), dtype=np.int64)
        for lo in range(0, len(q), 128):
            sims = allv @ q[lo : lo + 128].T  # (n, m) float32, as the exact scan reads the rows
            arg = sims.argmax(axis=0)
            exact[lo : lo + 128] = sims[arg, np.arange(sims.shape[1])]
            exact_fid[lo : lo + 128] = fids[arg]
        t = time.perf_counter()
        approx, approx_fid = index.search_fids(q, 1)
        search_ms = 1e3 * (time.perf_counter() - t) / len(q)
        approx, approx_fid = approx[:, 0], approx_fid[:, 0]
        hit = (approx_fid == exact_fid) | (np.abs(approx - exact) <= 1e-6)  # an exact tie is a hit
        err = exact - approx
        dup_exact, dup_approx = exact >= threshold, approx >= threshold
        rows.append({"queries": label, "n": len(q), "stored": len(allv), "approximate": index.approximate,
                     "recall_at_1": float(hit.mean()), "max_sim_error_max": float(err.max()),
                     "max_sim_error_mean": float(err.mean()), "exact_dups": int(dup_exact.sum()),
                     "dup_decision_agree": float((dup_exact == dup_approx).mean()),
                     "dups_missed": int((dup_exact & ~dup_approx).sum()), "search_ms": search_ms,
                     "exact_max_sim_min": float(exact.min()), "exact_max_sim_max": float(exact.max())})
        print(rows[-1], flush=True)
    return rows


def run_cost_part(args) -> None:
    """Cost per offer at capacity 64 and the large capacity, all policies; writes ``bench_buffer.*``."""
    from threadpoolctl import threadpool_limits

    quick = args.quick
    big = 20_000 if quick else args.big  # quick: still above APPROX_MIN, so the IVF path runs
    dims = [576] if quick else [576, 384]
    kcenter_mid = 3_000 if quick else 10_000
    caps = [64, kcenter_mid, big]
    n_small, n_big = (50, 30) if quick else (500, args.big_offers)
    cap_s = 10.0 if quick else 60.0
    n_queries = 200 if quick else 1000

    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    gate.check("start")
    head = C.header(NAME, quick, with_torch=False, extra={
        "threads": "FAISS 1 OpenMP thread; numpy BLAS limited to 1 thread (threadpoolctl)",
        "embeddings": "synthetic, L2-normalised, around 21 per-domain centroids (20 lexicon domains + general)",
        "texts": "real ShareGPT prompt+response texts (DSS, dominant domain)",
        "reference_rule": f"NumpySDSS and the compared shipped sdss: {REFERENCE_RULE}",
        "default_rule": f"sdss-default: weights {SDSS().weights}, domain_quota {SDSS().domain_quota!r}",
        "index": (f"LARGE_CAPACITY {index_module.LARGE_CAPACITY}, APPROX_MIN {index_module.APPROX_MIN}, "
                  f"NPROBE {index_module.NPROBE}, RERANK {index_module.RERANK}, IVF codes: 8-bit PQ of "
                  f"{index_module.PQ_DIMS} dimensions a byte (float16 where PQ_DIMS does not divide the dim)"),
        "offers_timed": f"{n_small} at capacity 64, at least {n_big} above (time cap {cap_s:.0f} s per cell after that)",
    })
    scorer = Scorer(load_lexicons())
    pool = real_events(5000, args.seed)
    pool_domains, pool_dss = text_domains(pool)
    cost_rows: list[dict[str, Any]] = []
    agree_rows: list[dict[str, Any]] = []
    breakdown_rows: list[dict[str, Any]] = []
    recall_rows: list[dict[str, Any]] = []

    with threadpool_limits(1):
        for dim in dims:
            space = DomainSpace.make(dim, args.seed)
            events = timed_events(pool, pool_domains, space, max(n_small, n_big) + 20, args.seed)
            for cap in caps:
                print(f"dim={dim} capacity={cap}: generating pre-fill", flush=True)
                base = candidate_arrays(cap, space, pool_domains, pool_dss, args.seed + cap)
                n_off = n_small if cap <= 64 else n_big
                policies = ["sdss", "sdss-reference", "sdss-default", "random", "fifo", "reservoir", "kcenter"]
                if cap == kcenter_mid:
                    policies = ["sdss", "sdss-reference", "kcenter"]
                if cap == big:
                    policies = [x for x in policies if x != "kcenter"]
                decisions: dict[str, list] = {}
                for name in policies:
                    if name == "sdss-reference":
                        policy: Any = NumpySDSS(cap)
                    elif name == "sdss":
                        policy = make_policy("sdss", capacity=cap, seed=args.seed, **REFERENCE_RULE)
                    elif name == "sdss-default":
                        policy = make_policy("sdss", capacity=cap, seed=args.seed)
                    else:
                        policy = make_policy(name, capacity=cap, seed=args.seed)
                    t = time.perf_counter()
                    prefill(policy, fresh_candidates(base))
                    fill_s = time.perf_counter() - t
                    kind = "numpy-exact" if name == "sdss-reference" else index_kind(policy)
                    label = f"sdss-{kind}" if name == "sdss" else name
                    load = gate.check(f"dim={dim} cap={cap} {label}", wait=False)
                    stats, dec = time_offers(policy, scorer, events[:n_off], cap, cap_s,
                                             min_offers=n_off if name.startswith("sdss") else 5)
                    decisions[name] = dec
                    cost_rows.append({"dim": dim, "capacity": cap, "policy": label, "index": kind, **stats,
                                      "prefill_s": fill_s, "load1": round(load, 2)})
                    print(cost_rows[-1], flush=True)
                    if name == "sdss" and cap == big:
                        recall_rows += [{"dim": dim, "capacity": cap, **r} for r in
                                        recall(policy._index, space, pool_domains, n_queries, args.seed + dim)]
                        bd = breakdown(policy, scorer, events[n_off : n_off + 10], cap)
                        breakdown_rows.append({"dim": dim, "capacity": cap, "policy": label, **bd})
                    del policy
                shipped = next(r for r in cost_rows if r["dim"] == dim and r["capacity"] == cap and r["policy"].startswith("sdss-")
                               and r["policy"] not in ("sdss-reference", "sdss-default"))
                row = {"dim": dim, "capacity": cap, "compared": f"{shipped['policy']} (pinned {REFERENCE_RULE}) vs sdss-reference",
                       **agreement(decisions["sdss"], decisions["sdss-reference"])}
                agree_rows.append(row)
                print(row, flush=True)
                if cap <= 64 and row["first_difference"] is not None:  # the exact path: the real check
                    print(f"FAIL: shipped sdss and the reference disagree at capacity {cap}, offer "
                          f"{row['first_difference']}: {row['first_difference_was']}", flush=True)
        gate.end("cost")

    # --- targets --------------------------------------------------------------------------
    def pick(dim: int, cap: int, policy: str) -> dict[str, Any]:
        return next(r for r in cost_rows if r["dim"] == dim and r["capacity"] == cap and r["policy"] == policy)

    cmd = head["command"]
    targets = []
    for dim in dims:
        shipped = next(r["policy"] for r in cost_rows if r["dim"] == dim and r["capacity"] == big
                       and r["policy"] not in ("sdss-reference", "sdss-default") and r["policy"].startswith("sdss-"))
        for impl in ("sdss-default", shipped, "sdss-reference"):
            r = pick(dim, big, impl)
            small = next(x for x in cost_rows if x["dim"] == dim and x["capacity"] == 64
                         and (x["policy"] == impl or (impl == shipped and x["policy"] == "sdss-faiss-flat")))
            targets.append({"target": f"scoring+buffer per event at capacity {big:,} < 1 ms ({impl}, {dim}-d)",
                            "measured": f"{r['total_ms_mean']:.3f} ms mean, p50 {r['total_ms_p50']:.3f}, p99 {r['total_ms_p99']:.3f} "
                                        f"({r['offers_timed']} offers)",
                            "met": r["total_ms_mean"] < 1.0,
                            "note": f"score {r['score_ms']:.3f} + offer {r['offer_ms']:.3f} ms; at capacity 64: "
                                    f"{small['total_ms_mean']:.3f} ms ({small['policy']})", "command": cmd})
    for row in agree_rows:
        if row["capacity"] <= 64:
            targets.append({"target": f"sdss decisions identical to the exact reference at capacity {row['capacity']} ({row['dim']}-d)",
                            "measured": f"{row['decisions_agree']} of {row['offers']} offers", "met": row["first_difference"] is None,
                            "note": row["compared"], "command": cmd})
        else:
            targets.append({"target": f"agreement with the exact reference at capacity {row['capacity']:,} ({row['dim']}-d), measured",
                            "measured": f"{100 * row['agreement_rate']:.1f} % of {row['offers']} decisions"
                                        + (f", first difference at offer {row['first_difference']}" if row["first_difference"] is not None else ""),
                            "met": None, "note": row["compared"], "command": cmd})
    for r in recall_rows:
        targets.append({"target": f"approximate near-duplicate search at capacity {r['capacity']:,} ({r['dim']}-d, {r['queries']}): recall@1, measured",
                        "measured": f"recall@1 {r['recall_at_1']:.3f}; duplicate decision agrees on {100 * r['dup_decision_agree']:.1f} % "
                                    f"({r['dups_missed']} of {r['exact_dups']} duplicates missed)",
                        "met": None, "note": f"largest similarity error {r['max_sim_error_max']:.4f}; {r['n']} queries",
                        "command": cmd})
    for dim in dims:
        r = pick(dim, kcenter_mid, "kcenter")
        targets.append({"target": f"k-center incremental, measured at {kcenter_mid:,} ({dim}-d)",
                        "measured": f"{r['total_ms_mean']:.3f} ms per event (p99 {r['total_ms_p99']:.3f}, {r['offers_timed']} offers)",
                        "met": None, "note": f"at 64: {pick(dim, 64, 'kcenter')['total_ms_mean']:.3f} ms", "command": cmd})

    notes = [
        f"Per-event cost = `Scorer.score_batch` over batches of {SCORE_BATCH} events, as the flow's embed step scores a source batch "
        "(EOE histograms + DSS tokenisation of real prompt+response texts; each event's share is its batch's time over the "
        "batch size) + `policy.offer`; "
        "`score_ms` is the same work for every policy, so `offer_ms` is what the buffer itself costs.",
        "Pre-fill goes through the policies' own `_insert` (and, for sdss, the running score statistics and the offer "
        f"counts of the stream quota) instead of `offer`, because offering {big:,} samples one by one costs O(n^2 d) in exact searches.",
        f"`sdss-<index>` is the shipped SDSS class pinned to the reference's rule {REFERENCE_RULE}; the row name is the "
        "index it ran on (`faiss-flat` = DomainIndex, `arrays` = ArrayIndex exact scans, `arrays+ivf` = ArrayIndex with "
        "the IVF near-duplicate search). `sdss-default` is the class with its shipped defaults (timed only).",
        "At capacity 64 the decisions (outcome, evicted id) of the pinned shipped sdss must equal `sdss-reference`'s on "
        "every timed offer (the run fails after writing its results otherwise); at the larger capacities table "
        "`agreement` reports the rate instead.",
        "Table `recall`: the pre-filled index of the pinned shipped sdss at the large capacity, queried with fresh vectors "
        "and near-copies (see the module docstring); `search_ms` is that index's batched search time per query.",
        "`breakdown` instruments the pinned shipped sdss at the large capacity in a separate pass (the wrappers add a "
        "few microseconds): where the milliseconds of one offer go.",
        "k-center keeps every row's two nearest neighbours incrementally above LARGE_CAPACITY (ArrayIndex's "
        "neighbour cache); it is timed at 64 and "
        f"{kcenter_mid:,}, not at {big:,} (its pre-fill there would insert {big:,} rows with a neighbour search each).",
    ]
    C.write_results(NAME, quick, head, {"cost": cost_rows, "agreement": agree_rows, "recall": recall_rows,
                                        "breakdown": breakdown_rows},
                    targets, notes, gate, title="Scoring + buffer cost per event (capacity 64, 10,000 and 100,000)")
    failed = [r for r in agree_rows if r["capacity"] <= 64 and r["first_difference"] is not None]
    if failed:  # written first (the figures are still worth reading), then the run fails
        raise SystemExit(f"sdss decisions differ from the exact reference at capacity 64: {failed}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
