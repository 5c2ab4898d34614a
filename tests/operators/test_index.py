"""DomainIndex against a naive recomputation from the raw vectors, at every step of a random history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from operators.index import DomainIndex

DIM = 6


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def naive_idd(vec, rows) -> float:
    return 1.0 if len(rows) == 0 else 1.0 - float(np.mean([float(np.dot(vec, r)) for r in rows]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_recomputation_at_every_prefix(seed):
    rng = np.random.default_rng(seed)
    index, live = DomainIndex(DIM), {}  # live: event_id -> (domain, vector), the batch truth
    for step in range(120):
        if live and rng.random() < 0.4:
            victim = sorted(live)[int(rng.integers(len(live)))]
            index.remove(victim)
            del live[victim]
        else:
            live[f"e{step}"] = (str(rng.choice(["a", "b", "c"])), unit_rows(rng, 1)[0])
            index.add(f"e{step}", *live[f"e{step}"])

        by_domain = {}
        for event_id, (domain, vec) in live.items():
            by_domain.setdefault(domain, {})[event_id] = vec
        assert len(index) == len(live)
        assert index.domains() == sorted(by_domain)

        query = unit_rows(rng, 1)[0]
        for domain in ["a", "b", "c"]:
            rows = by_domain.get(domain, {})
            assert index.idd(query, domain) == pytest.approx(naive_idd(query, list(rows.values())), abs=1e-5)
            loo = index.loo_idd(domain)
            assert set(loo) == set(rows)
            for event_id, vec in rows.items():
                others = [v for e, v in rows.items() if e != event_id]
                assert loo[event_id] == pytest.approx(naive_idd(vec, others), abs=1e-5)

        # max_sim and nearest against numpy brute force
        ids = list(live)
        if not ids:
            assert index.max_sim(query) == (-math.inf, None)
            continue
        sims = np.array([float(np.dot(query, live[e][1])) for e in ids])
        best, event_id = index.max_sim(query)
        assert best == pytest.approx(sims.max(), abs=1e-5)
        assert event_id in ids and sims[ids.index(event_id)] == pytest.approx(sims.max(), abs=1e-5)
        for domain, rows in by_domain.items():
            sim, nearest = index.max_sim(query, domain)
            assert nearest in rows
            assert sim == pytest.approx(max(float(np.dot(query, v)) for v in rows.values()), abs=1e-5)
        k = min(3, len(ids))
        hits = index.nearest(query, 3)
        assert [s for _, s in hits] == pytest.approx(sorted(sims, reverse=True)[:k], abs=1e-5)


def test_running_sum_stays_the_exact_sequential_sum():
    # Many admit/evict cycles: the sum must not drift from the stored vectors' own sum.
    rng = np.random.default_rng(7)
    index, order = DomainIndex(DIM), []
    for step in range(400):
        index.add(f"e{step}", "a", unit_rows(rng, 1)[0])
        order.append(f"e{step}")
        if len(order) > 5:
            index.remove(order.pop(int(rng.integers(len(order)))))
    _, vecs = index.vectors("a")
    expected = np.zeros(DIM)
    for row in vecs:
        expected += row.astype(np.float64)
    assert np.array_equal(index._sums["a"], expected)


@pytest.mark.parametrize("size", [64, 200])
def test_sum_after_a_removal_is_the_sequential_sum_of_a_large_domain(size):
    # remove() re-sums the remaining rows with one numpy reduction over axis 0; it must add them
    # one after another as the incremental adds do, not pairwise, at a buffer's full size too.
    rng = np.random.default_rng(size)
    index = DomainIndex(576)
    for step in range(size + 1):
        vec = rng.standard_normal(576).astype(np.float32)
        index.add(f"e{step}", "a", vec / np.linalg.norm(vec))
    index.remove(f"e{size // 2}")
    _, vecs = index.vectors("a")
    expected = np.zeros(576)
    for row in vecs:
        expected += row.astype(np.float64)
    assert np.array_equal(index._sums["a"], expected)


def test_rebuilt_index_is_bit_identical():
    rng = np.random.default_rng(3)
    original, kept = DomainIndex(DIM), []
    for step in range(30):
        vec = unit_rows(rng, 1)[0]
        original.add(f"e{step}", "a", vec)
        kept.append((f"e{step}", vec))
        if step % 3 == 2:
            gone = kept.pop(0)[0]
            original.remove(gone)
    rebuilt = DomainIndex(DIM)
    for event_id, vec in kept:
        rebuilt.add(event_id, "a", vec)
    assert np.array_equal(original._sums["a"], rebuilt._sums["a"])
    assert original.loo_idd("a") == rebuilt.loo_idd("a")


def test_empty_domain_disappears_and_idd_is_one():
    index = DomainIndex(2)
    index.add("x", "law", np.array([1.0, 0.0], dtype=np.float32))
    index.remove("x")
    assert index.domains() == [] and len(index) == 0
    assert index.idd(np.array([1.0, 0.0], dtype=np.float32), "law") == 1.0
    assert index.loo_idd("law") == {}
    assert index.max_sim(np.array([1.0, 0.0], dtype=np.float32), "law") == (-math.inf, None)


def test_bad_input_is_refused_with_a_reason():
    index = DomainIndex(2)
    unit = np.array([1.0, 0.0], dtype=np.float32)
    index.add("x", "law", unit)
    with pytest.raises(ValueError, match="already indexed"):
        index.add("x", "law", unit)
    with pytest.raises(ValueError, match="2 values"):
        index.add("y", "law", np.ones(3, dtype=np.float32) / np.sqrt(3))
    with pytest.raises(ValueError, match="L2-normalised"):
        index.add("y", "law", np.array([3.0, 4.0], dtype=np.float32))
    with pytest.raises(KeyError):
        index.remove("nope")
    with pytest.raises(ValueError, match="dim"):
        DomainIndex(0)


def test_a_buffer_pickles_and_deep_copies_with_its_index():
    # Policies (and their FAISS index) must survive pickle and deepcopy: both rebuilt copies decide as the original.
    import copy
    import pickle

    from operators.policies import make_policy
    from operators.sample import Candidate

    rng = np.random.default_rng(5)
    rows = unit_rows(rng, 12)
    policy = make_policy("sdss", capacity=4, seed=0)
    for i, row in enumerate(rows[:8]):
        policy.offer(Candidate(f"e{i}", i, row, eoe=float(i % 3), dss=0.1 * (i % 2), domain="law" if i % 2 else "medicine"))
    copies = [pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy)]
    for i, row in enumerate(rows[8:], start=8):
        c = Candidate(f"e{i}", i, row, eoe=float(i % 3), dss=0.1, domain="law")
        expected = policy.offer(c)
        assert [repr(other.offer(c)) for other in copies] == [repr(expected)] * 2
