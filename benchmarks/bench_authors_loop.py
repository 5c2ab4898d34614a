"""The same scoring + buffer work done the authors' way vs ours, on the same events and embeddings.

    python benchmarks/bench_authors_loop.py            # full run (400 events, ~3 min)
    python benchmarks/bench_authors_loop.py --quick    # smoke run

The first author's released code (no licence; described in ``/work/shared/paper.md``, not
copied) does, for every event: read the domain lexicons from disk, score DSS by Python set
intersection with each lexicon, compute IDD as a Python loop of per-pair cosines over the
buffered samples of the dominant domain, and find the victim by a linear scan. The
functions below (``authors_*``) are written from that description only.

To compare cost on equal terms, both loops apply **our** selection rule (``sdss``: EOE in
"bins" mode, DSS counting token occurrences, IDD = 1 - mean cosine, near-duplicate exit,
z-scored sum, leave-one-out IDD of buffered samples, per-domain victim) with weights (1, 1, 1)
and ``domain_quota="balanced"`` (``RULE``; the shipped SDSS is constructed with it, since its
defaults are (2, 1, 1) and ``"stream"``); only the way of computing differs:

============================  =======================================  ===========================================
work per event                authors' way (this file)                 ours (``Scorer.score_batch`` + ``SDSS.offer``)
============================  =======================================  ===========================================
lexicons                      re-read from disk (20 files, ~41k words)  loaded once, inverted to word -> domains
DSS                           set intersection with each lexicon        one dict look-up per token
IDD, near-duplicate search    Python loop of per-pair cosines           running sums (IDD), FAISS search (max sim)
victim                        linear scan; each buffered sample's        one leave-one-out pass with the domain sum
                              leave-one-out IDD by a per-pair loop
============================  =======================================  ===========================================

Both loops must then keep the same buffer; the decisions (outcome, evicted id) are compared
event by event. A third loop, ``authors-dss``, is the authors' way with the authors' DSS
(distinct words: ``|set(T) & l_i| / n``); its rule differs from ours, so only its cost and how
many decisions it changes are reported.

Events: the first N valid ShareGPT records, prompts only (what a device sees before any
answer), one user, capacity 64 (so the buffer is full for most of the run). Embeddings:
SmolLM2-135M last-token states with the calibration mean (the flow's default), computed once
before timing.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

from operators.events import Event  # noqa: E402
from operators.lexicons import DATA_DIR, load_lexicons  # noqa: E402
from operators.policies import make_policy  # noqa: E402
from operators.sample import GENERAL_DOMAIN  # noqa: E402
from operators.scores import tokenize  # noqa: E402
from operators.scoring import Scorer  # noqa: E402

from _synthetic import real_events  # noqa: E402

SOURCE_BATCH = 64  # ReplaySource's default batch: the events the flow's embed step scores in one call

NAME = "bench_authors_loop"
BINS = 100
DUP = 0.95
WEIGHTS = (1.0, 1.0, 1.0)
RULE = {"weights": WEIGHTS, "domain_quota": "balanced"}
"""The sdss rule both loops apply: AuthorsLoop implements it, and the shipped SDSS is pinned to it."""


# --- the authors' way, written from the description ----------------------------------------


def authors_read_lexicons(folder: Path) -> dict[str, set[str]]:
    """Every ``<domain>.txt`` of the folder, read again (as the authors' loop does per sample)."""
    lexicons = {}
    for path in sorted(folder.glob("*.txt")):
        if path.name.startswith("LICENSE"):
            continue
        words = set()
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                word = line.split("#", 1)[0].strip().lower()
                if word:
                    words.add(word)
        lexicons[path.stem] = words
    return lexicons


def authors_dss(tokens: list[str], lexicons: dict[str, set[str]], occurrences: bool) -> tuple[float, str]:
    """DSS and dominant domain by set intersection with each lexicon.

    ``occurrences=True`` counts every occurrence of an intersecting word (our rule);
    ``False`` counts distinct words (the authors' rule).
    """
    n = len(tokens)
    if n == 0:
        return 0.0, GENERAL_DOMAIN
    token_set = set(tokens)
    counts = Counter(tokens) if occurrences else None
    hits: dict[str, int] = {}
    for domain in sorted(lexicons):
        common = token_set & lexicons[domain]
        k = sum(counts[w] for w in common) if occurrences else len(common)
        if k:
            hits[domain] = k
    if not hits:
        return 0.0, GENERAL_DOMAIN
    best = None
    for domain in sorted(hits):  # highest count, ties alphabetical
        if best is None or hits[domain] > hits[best]:
            best = domain
    return sum(hits.values()) / (n * len(lexicons)), best


def authors_eoe(raw: np.ndarray) -> float:
    counts, _ = np.histogram(raw.astype(np.float64), bins=BINS)
    p = counts[counts > 0] / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum())) / math.log2(BINS)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class AuthorsLoop:
    """Our sdss rule, computed per event the authors' way. Buffer: a list in arrival order."""

    def __init__(self, capacity: int, occurrences: bool = True) -> None:
        self.capacity = capacity
        self.occurrences = occurrences
        self.buffer: list[dict[str, Any]] = []
        self.n = 0
        self.mean = np.zeros(3)
        self.m2 = np.zeros(3)
        self.seconds: dict[str, float] = {}

    def _tick(self, key: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.seconds[key] = self.seconds.get(key, 0.0) + t1 - t0
        return t1

    def _score(self, eoe: float, dss: float, idd: float) -> float:
        std = np.sqrt(self.m2 / max(self.n, 1))
        x = np.array([eoe, dss, idd]) - self.mean
        z = np.divide(x, std, out=np.zeros(3), where=std > 0)
        return float(sum(w * zk for w, zk in zip(WEIGHTS, z)))

    def _idd(self, vec: np.ndarray, members: list[dict[str, Any]]) -> float:
        if not members:
            return 1.0
        total = 0.0
        for m in members:  # per-pair cosine, one at a time
            total += cosine(vec, m["vec"])
        return min(2.0, max(0.0, 1.0 - total / len(members)))

    def offer(self, event: Event, raw: np.ndarray, center: np.ndarray) -> tuple[str, str | None]:
        t = time.perf_counter()
        lexicons = authors_read_lexicons(DATA_DIR)
        t = self._tick("lexicons", t)
        dss, domain = authors_dss(tokenize(event.text), lexicons, self.occurrences)
        t = self._tick("dss", t)
        eoe = authors_eoe(raw)
        direction = raw - center.astype(np.float32)
        vec = direction / float(np.linalg.norm(direction))
        t = self._tick("eoe", t)
        same = [m for m in self.buffer if m["domain"] == domain]
        idd = self._idd(vec, same)
        max_sim = -math.inf
        for m in self.buffer:
            max_sim = max(max_sim, cosine(vec, m["vec"]))
        t = self._tick("idd+dup", t)
        outcome, victim = self._decide(event.event_id, vec, eoe, dss, idd, max_sim, domain, same)
        self._tick("victim", t)
        return outcome, victim

    def _decide(self, event_id, vec, eoe, dss, idd, max_sim, domain, same) -> tuple[str, str | None]:
        if max_sim >= DUP:
            return "duplicate", None
        x = np.array([eoe, dss, idd], dtype=np.float64)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        sample = {"id": event_id, "vec": vec, "eoe": eoe, "dss": dss, "domain": domain}
        if len(self.buffer) < self.capacity:
            self.buffer.append(sample)
            return "admitted", None
        # victim domain: the candidate's, else the largest (equal sizes: first in arrival order)
        sizes: dict[str, int] = {}
        for m in self.buffer:
            sizes[m["domain"]] = sizes.get(m["domain"], 0) + 1
        vdomain = domain if domain in sizes else max(sizes, key=sizes.__getitem__)
        members = [m for m in self.buffer if m["domain"] == vdomain]
        victim, victim_score = None, math.inf
        for m in members:  # linear scan, each member's leave-one-out IDD by per-pair loop
            others = [o for o in members if o is not m]
            score = self._score(m["eoe"], m["dss"], self._idd(m["vec"], others))
            if score < victim_score:
                victim, victim_score = m, score
        if vdomain == domain:
            cand_idd = self._idd(vec, [m for m in same if m is not victim])
        else:
            cand_idd = idd
        if self._score(eoe, dss, cand_idd) > victim_score:
            self.buffer.remove(victim)
            self.buffer.append(sample)
            return "replaced", victim["id"]
        return "rejected", None


# --- main ------------------------------------------------------------------------------------


def _per_event(passes: list[dict[str, float]], n_events: int) -> dict[str, float]:
    """Per-event milliseconds of the median pass (by total time), with each column of that pass, and
    the first pass's total (``cold_ms``: first calls, cold caches), from each pass's seconds per column.

    >>> _per_event([{"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 0.5}], 1000)
    {'ms_per_event': 2.5, 'cold_ms': 4.0, 'a_ms': 2.0, 'b_ms': 0.5}
    """
    totals = [sum(p.values()) for p in passes]
    median = sorted(range(len(passes)), key=totals.__getitem__)[len(passes) // 2]
    return {"ms_per_event": 1e3 * totals[median] / n_events, "cold_ms": 1e3 * totals[0] / n_events,
            **{f"{k}_ms": 1e3 * v / n_events for k, v in passes[median].items()}}


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=400)
    p.add_argument("--capacity", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7, help="passes of ours over the events, a fresh buffer each (default: 7)")
    p.add_argument("--authors-repeats", type=int, default=3, help="passes of each authors'-way loop (default: 3)")
    args = p.parse_args()
    if args.repeats < 1 or args.authors_repeats < 1:
        p.error("--repeats and --authors-repeats must be at least 1")
    n_events = 120 if args.quick else args.events

    import torch

    from models.embed import EmbedConfig, make_embedder
    from models.lm import LMConfig, load_lm

    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = C.header(NAME, args.quick, extra={"events": n_events, "capacity": args.capacity, "rule": f"sdss {RULE} in both loops",
                                             "torch_threads": torch.get_num_threads()})
    pool = real_events(n_events + 50)
    events = [Event(e.event_id, "u0", e.ts_ms, e.prompt) for e in pool[:n_events]]  # prompts only

    model, tokenizer = load_lm(LMConfig())
    embedder = make_embedder(EmbedConfig(kind="lm", center=True), model, tokenizer)
    t = time.perf_counter()
    embedded = embedder.embed([e.text for e in events])
    embed_s = time.perf_counter() - t
    raws, n_tokens, center = embedded.vectors, embedded.n_tokens, embedded.mean
    del model, embedder

    rows: list[dict[str, Any]] = []
    decisions: dict[str, list] = {}
    buffers: dict[str, list[str]] = {}

    # ours: the flow's scorer and policy, lexicons loaded once (outside the timed loop, as in the flow)
    scorer = Scorer(load_lexicons())
    # Pinned to the rule AuthorsLoop implements (the shipped defaults are weights (2, 1, 1) and domain_quota
    # "stream"): both loops must make the same decisions, so only the way of computing differs.
    batch = SOURCE_BATCH  # the flow scores each source batch at once (flows.selection.embed_and_score)
    load = gate.check("ours")
    passes = []
    for _ in range(args.repeats):  # a fresh buffer each pass, the same events: every pass must decide the same
        policy = make_policy("sdss", capacity=args.capacity, seed=0, **RULE)
        score_s = offer_s = 0.0
        ours = []
        for lo in range(0, n_events, batch):
            t0 = time.perf_counter()
            scored = scorer.score_batch(events[lo : lo + batch], raws[lo : lo + batch], n_tokens[lo : lo + batch], center=center)
            t1 = time.perf_counter()
            for seq, se in enumerate(scored, start=lo):
                d = policy.offer(se.candidate(seq))
                ours.append((d.outcome, d.evicted))
            t2 = time.perf_counter()
            score_s += t1 - t0
            offer_s += t2 - t1
        if passes and ours != decisions["ours"]:
            raise AssertionError("two passes of ours over the same events decided differently")
        decisions["ours"] = ours
        passes.append({"score": score_s, "offer": offer_s})
    gate.end("ours")
    buffers["ours"] = [c.event_id for c in policy.samples()]
    rows.append({"loop": "ours", "events": n_events, "passes": len(passes), **_per_event(passes, n_events), "load1": round(load, 2)})

    for label, occurrences in (("authors-way (our rule)", True), ("authors-dss (distinct words)", False)):
        load = gate.check(label, wait=False)
        passes = []
        for _ in range(args.authors_repeats):
            loop = AuthorsLoop(args.capacity, occurrences)
            out = [loop.offer(e, raw, center) for e, raw in zip(events, raws)]
            if passes and out != decisions[label]:
                raise AssertionError(f"two passes of {label} over the same events decided differently")
            decisions[label] = out
            passes.append(dict(loop.seconds))
        gate.end(label)
        buffers[label] = [m["id"] for m in loop.buffer]
        rows.append({"loop": label, "events": n_events, "passes": len(passes), **_per_event(passes, n_events), "load1": round(load, 2)})
        print(rows[-1], flush=True)

    ours_ms = rows[0]["ms_per_event"]
    for r in rows:
        r["ratio_vs_ours"] = r["ms_per_event"] / ours_ms

    agree_rows = []
    for label in ("authors-way (our rule)", "authors-dss (distinct words)"):
        a, b = decisions["ours"], decisions[label]
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        agree_rows.append({"compared": f"ours vs {label}", "events": len(a), "decisions_differing": len(diff),
                           "first_difference": diff[0] if diff else None,
                           "same_final_buffer": sorted(buffers["ours"]) == sorted(buffers[label]),
                           "final_buffer_overlap": len(set(buffers["ours"]) & set(buffers[label]))})
    same_rule = agree_rows[0]
    ratio = rows[1]["ms_per_event"] / ours_ms
    targets = [{
        "target": "authors'-way scoring+buffer / ours, same events and embeddings >= 100x",
        "measured": f"{ratio:.0f}x ({rows[1]['ms_per_event']:.2f} ms vs {ours_ms:.3f} ms per event)",
        "met": ratio >= 100,
        "note": (f"same decisions on all {same_rule['events']} events" if same_rule["decisions_differing"] == 0
                 else f"{same_rule['decisions_differing']} decisions differ (first at {same_rule['first_difference']})")
                + f"; median passes; first passes: {rows[1]['cold_ms'] / rows[0]['cold_ms']:.0f}x "
                  f"({rows[1]['cold_ms']:.2f} vs {rows[0]['cold_ms']:.3f} ms)",
        "command": head["command"],
    }]
    notes = [
        f"Embeddings computed once before timing: {n_events} prompts in {embed_s:.1f} s (not part of either loop).",
        f"`ours` = `Scorer.score_batch` over each source batch of {SOURCE_BATCH} events, as the flow's embed step scores them, + `SDSS.offer` per "
        "event (lexicons loaded once before the loop, as `build_components` does); per-event figures divide by the events.",
        f"Each loop runs several passes over the same events ({args.repeats} of ours, {args.authors_repeats} of each "
        "authors' loop), a fresh buffer each, and every pass must make the same decisions. `ms_per_event` is the median "
        "pass (a long-running flow is warm), `cold_ms` the first pass (first calls, cold caches); the ratio uses the medians, "
        "and the cold ratio is in the targets' note.",
        "Authors'-way columns: `lexicons_ms` re-reading the 20 lexicon files, `dss_ms` set intersections, `eoe_ms` "
        "histogram + normalisation, `idd+dup_ms` per-pair cosine loops for IDD and the near-duplicate check, "
        "`victim_ms` the linear victim scan with per-pair leave-one-out IDD.",
        "The authors' own buffer stored each sample's score at admission and scanned for the minimum; scoring the "
        "buffered samples with their *current* leave-one-out IDD is our rule, so the authors'-way loop pays O(n_d^2) "
        "pair cosines for it. Without the lexicon re-read the ratio would be the `ratio_vs_ours` of the remaining "
        "columns; see the per-column times.",
        "The 'authors-dss' loop uses the authors' distinct-word DSS: a different rule, so differing decisions are "
        "expected there; it is reported for cost only.",
    ]
    C.write_results(NAME, args.quick, head, {"cost": rows, "agreement": agree_rows}, targets, notes, gate,
                    title="Authors'-way scoring + buffer loop vs ours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
