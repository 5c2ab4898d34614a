"""Every policy makes exactly the decisions main's code made before issue 15's large-capacity paths.

The selection benchmark (benchmarks/selection) runs these policies at capacity 64 across sessions;
its cells stay comparable only if no decision, and no score, moves. The fixture was written by
``python -m tests.operators.decision_replay`` from the code before the change.
"""

import gzip
import json
import math

import pytest

from tests.operators.decision_replay import CAPACITIES, CONFIGS, FIXTURE, SEEDS, replay

with gzip.open(FIXTURE, "rt") as _f:
    FROZEN = json.load(_f)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_decisions_and_buffers_are_identical_to_the_frozen_ones(config, capacity):
    for seed in SEEDS:
        key = f"{config}/{capacity}/{seed}"
        got, want = replay(config, capacity, seed), FROZEN[key]
        for step, (g, w) in enumerate(zip(got["decisions"], want["decisions"])):
            assert len(g) == len(w) and all(_same(x, y) for x, y in zip(g, w)), f"{key} step {step}: {g} != {w}"
        assert len(got["decisions"]) == len(want["decisions"])
        assert got["buffer"] == want["buffer"], key
        assert got["counts"] == want["counts"], key


def test_the_fixture_covers_evictions_near_copies_and_removals():
    for capacity in CAPACITIES:
        runs = [FROZEN[f"sdss/{capacity}/{seed}"] for seed in SEEDS]
        assert all(r["counts"]["replaced"] > 20 and r["counts"]["duplicate"] > 0 for r in runs), capacity
        # a deletion of a buffered sample, in at least one seed per capacity
        assert any(d[0] == "removed" and d[1] for r in runs for d in r["decisions"]), capacity


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_the_large_capacity_path_makes_the_same_decisions_at_small_capacity(config, capacity, monkeypatch):
    """Forced onto ArrayIndex (exact search at this size), every policy decides as the exact path did.

    Scores may differ in the last float bits (numpy instead of FAISS inner products, running sums
    updated by subtraction). Under ``scale="rank"`` such a bit can move a value past an equal
    remembered one, a jump of a rank step (up to half the weight while the window is short), so
    there only idd and max_sim are compared. Outcomes, evicted ids and buffers may not differ.
    """
    import operators.index

    rank = CONFIGS[config][1].get("scale") == "rank"

    monkeypatch.setattr(operators.index, "LARGE_CAPACITY", 0)
    for seed in SEEDS:
        key = f"{config}/{capacity}/{seed}"
        got, want = replay(config, capacity, seed), FROZEN[key]
        for step, (g, w) in enumerate(zip(got["decisions"], want["decisions"])):
            assert g[:2] == w[:2], f"{key} step {step}: {g} != {w}"
            for x, y in zip(g[2:4] if rank else g[2:], w[2:]):
                assert _same(x, y) or abs(x - y) <= 1e-5 * max(1.0, abs(y)), f"{key} step {step}: {g} != {w}"
        assert got["buffer"] == want["buffer"], key
        assert got["counts"] == want["counts"], key
