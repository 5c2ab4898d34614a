"""Long random streams replayed through every policy: the decisions the selection benchmark depends on.

``python -m tests.operators.decision_replay`` writes ``fixtures/decisions.json.gz`` from the code it
runs with; it was generated from main's code before the large-capacity paths existed (issue 15), and
``test_decision_replay.py`` checks today's code against it, decision by decision, score by score.
The streams exercise what changes a buffer: several domains (unequal shares), clusters tight enough
for near-copies, evictions long after the buffer fills, re-offered ids, and user deletions.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np

from operators.policies import make_policy
from operators.sample import Candidate

FIXTURE = Path(__file__).parent / "fixtures" / "decisions.json.gz"
DIM = 48
EVENTS = 700
SEEDS = (0, 1, 2)
CAPACITIES = (64, 7)
DOMAINS = ("general", "law", "medicine", "sport", "tech")

# The selection benchmark's rows (benchmarks/selection/plan.py) plus the other sdss options.
SHIPPED = dict(weights=(2.0, 1.0, 1.0), dup_threshold=0.95, domain_quota="stream", scale="z", coverage=0.0)
CONFIGS: dict[str, tuple[str, dict]] = {
    "sdss": ("sdss", SHIPPED),
    "sdss-no-eoe": ("sdss", {**SHIPPED, "weights": (0.0, 1.0, 1.0)}),
    "sdss-no-dss": ("sdss", {**SHIPPED, "weights": (2.0, 0.0, 1.0)}),
    "sdss-no-idd": ("sdss", {**SHIPPED, "weights": (2.0, 1.0, 0.0)}),
    "sdss-rank": ("sdss", {**SHIPPED, "scale": "rank"}),
    "sdss-coverage": ("sdss", {**SHIPPED, "coverage": 1.0}),
    "sdss-rank-coverage": ("sdss", {**SHIPPED, "scale": "rank", "coverage": 0.5}),
    "sdss-balanced": ("sdss", {**SHIPPED, "domain_quota": "balanced", "weights": (1.0, 1.0, 1.0)}),
    "kcenter": ("kcenter", {}),
    "fifo": ("fifo", {}),
    "reservoir": ("reservoir", {}),
    "random": ("random", {}),
    "ifd": ("ifd", {}),
    "uds": ("uds", {}),
    "deita": ("deita", {}),
}


def stream(seed: int) -> list[tuple[str, object]]:
    """``("offer", Candidate)`` and ``("remove", event_id)`` steps, all from ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    centres = rng.standard_normal((12, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shares = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
    steps: list[tuple[str, object]] = []
    offered: list[str] = []
    for i in range(EVENTS):
        r = rng.random()
        if r < 0.03 and offered:  # a re-offered id (at-least-once delivery)
            steps.append(("reoffer", offered[int(rng.integers(len(offered)))]))
            continue
        if r < 0.05 and offered:  # the user deletes something (maybe not buffered)
            steps.append(("remove", offered[int(rng.integers(len(offered)))]))
            continue
        k = int(rng.integers(len(centres)))
        spread = 0.05 if rng.random() < 0.15 else 0.6  # tight draws give near-copies
        v = centres[k] + spread * rng.standard_normal(DIM) / math.sqrt(DIM)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        domain = DOMAINS[int(rng.choice(len(DOMAINS), p=shares))]
        eoe = float(np.round(rng.beta(5, 2), 3))  # rounded: ties between samples happen
        dss = 0.0 if rng.random() < 0.5 else float(rng.exponential(0.05))
        ifd = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.95 else math.nan
        unc = float(rng.gamma(2.0, 1.0))
        c = Candidate(f"e{i}", i, v, eoe=eoe, dss=dss, domain=domain, ifd=ifd, uncertainty=unc)
        offered.append(c.event_id)
        steps.append(("offer", c))
    return steps


def replay(config: str, capacity: int, seed: int) -> dict:
    """Every decision (outcome, evicted, idd, max_sim, score), removals' results and the final buffer."""
    name, params = CONFIGS[config]
    policy = make_policy(name, capacity=capacity, seed=seed, **params)
    candidates: dict[str, Candidate] = {}
    decisions: list[list] = []
    for i, (kind, arg) in enumerate(stream(seed)):
        if kind == "remove":
            decisions.append(["removed", policy.remove(arg)])
            continue
        c = candidates[arg] if kind == "reoffer" else arg
        candidates[c.event_id] = c
        d = policy.offer(c)
        decisions.append([d.outcome, d.evicted, d.idd, d.max_sim, d.score])
        if i == EVENTS // 2:  # a restored snapshot must carry on identically
            policy = type(policy).from_snapshot(policy.snapshot())
    return {"decisions": decisions, "buffer": [s.event_id for s in policy.samples()], "counts": policy.counts()}


def replay_all() -> dict[str, dict]:
    return {f"{config}/{capacity}/{seed}": replay(config, capacity, seed)
            for config in CONFIGS for capacity in CAPACITIES for seed in SEEDS}


def main() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(FIXTURE, "wt") as f:
        json.dump(replay_all(), f, separators=(",", ":"))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
