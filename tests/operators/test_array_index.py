"""ArrayIndex, the large-capacity index: exact answers below APPROX_MIN, a working IVF removal above it."""

import numpy as np
import pytest

from operators.index import ArrayIndex, DomainIndex
from operators.scores import loo_idd


def _unit(rng, n, dim=24):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _churn(index, rng, vecs, steps=400, domains=("a", "b", "c")):
    """Add and remove at random; returns the live {event_id: (domain, vec)}."""
    live = {}
    for i in range(steps):
        if live and rng.random() < 0.4:
            e = list(live)[int(rng.integers(len(live)))]
            index.remove(e)
            del live[e]
        else:
            d = domains[int(rng.integers(len(domains)))]
            index.add(f"e{i}", d, vecs[i])
            live[f"e{i}"] = (d, vecs[i])
    return live


def test_sums_idd_and_search_match_a_brute_force_after_churn():
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 400)
    index = ArrayIndex(24)
    live = _churn(index, rng, vecs)
    q = _unit(rng, 1)[0]
    for d in ("a", "b", "c"):
        members = np.array([v for dd, v in live.values() if dd == d], dtype=np.float64)
        np.testing.assert_allclose(index.domain_sum(d), members.sum(axis=0), atol=1e-9)
        assert index.idd(q, d) == pytest.approx(1 - (members @ q).mean(), abs=1e-9)
        ids, _ = index.vectors(d)
        want = dict(zip(ids, loo_idd(np.array([live[e][1] for e in ids]))))
        assert index.loo_idd(d) == pytest.approx(want, abs=1e-9)
    all_ids = list(live)
    sims = np.array([live[e][1] for e in all_ids]) @ q
    best = [all_ids[i] for i in np.argsort(-sims)[:5]]
    assert [e for e, _ in index.nearest(q, 5)] == best


def test_the_neighbour_cache_is_every_rows_two_nearest_others():
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 300)
    index = ArrayIndex(24, neighbours=True)
    live = _churn(index, rng, vecs, steps=300)
    ids = list(live)
    m = np.array([live[e][1] for e in ids])
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    for d in index.domains():
        s, f = index.neighbours(d)
        rows = index.rows(d)
        for r in range(rows.n):
            e = index.event_ids(rows.fids[r : r + 1])[0]
            order = np.argsort(-sims[ids.index(e)])[:2]
            assert index.event_ids(f[r]) == [ids[j] for j in order]
            np.testing.assert_allclose(s[r], sims[ids.index(e)][order], atol=1e-6)


def test_above_approx_min_searches_go_to_ivf_and_removals_leave_it():
    rng = np.random.default_rng(2)
    centres = _unit(rng, 40)
    vecs = centres[rng.integers(40, size=3000)] + 0.3 * rng.standard_normal((3000, 24)).astype(np.float32)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    index = ArrayIndex(24, approx_min=1000)
    for i in range(1500):
        index.add(f"e{i}", "a" if i % 3 else "b", vecs[i])
    assert index.approximate
    for i in range(0, 1500, 2):
        index.remove(f"e{i}")
    assert index._ivf.ntotal == len(index) == 750
    # A removed vector is never found again; a kept one is its own nearest neighbour.
    for i in range(0, 200):
        hit, sim = index.nearest(vecs[i], 1)[0]
        if i % 2:
            assert hit == f"e{i}" and sim == pytest.approx(1.0, abs=1e-5)
        else:
            assert hit != f"e{i}"
    # Recall of the nearest neighbour for fresh queries, against an exact scan.
    live = [f"e{i}" for i in range(1, 1500, 2)]
    m = vecs[1:1500:2]
    queries = vecs[1500:1700]
    exact = [live[j] for j in np.argmax(queries @ m.T, axis=1)]
    got = [index.nearest(q, 1)[0][0] for q in queries]
    assert np.mean([a == b for a, b in zip(got, exact)]) >= 0.9


def test_array_index_refuses_what_domain_index_refuses():
    for index in (ArrayIndex(3), DomainIndex(3)):
        with pytest.raises(ValueError, match="L2-normalised"):
            index.add("x", "a", np.array([1.0, 1.0, 0.0], dtype=np.float32))
        index.add("x", "a", np.array([1.0, 0.0, 0.0], dtype=np.float32))
        with pytest.raises(ValueError, match="already indexed"):
            index.add("x", "a", np.array([1.0, 0.0, 0.0], dtype=np.float32))
        with pytest.raises(KeyError):
            index.remove("y")


def _clustered(rng, n, dim, n_centres, noise):
    centres = _unit(rng, n_centres, dim)
    v = centres[rng.integers(n_centres, size=n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_cached_dots_are_within_their_stated_rounding_and_stay_valid_through_churn_and_resums():
    rng = np.random.default_rng(3)
    vecs = _clustered(rng, 4000, 64, 1, 0.1)  # one tight cluster: a long domain sum, the hard case for float32
    index = ArrayIndex(64)
    index.RESUM_EVERY = 50  # several re-sums below
    for i in range(2000):
        index.add(f"e{i}", "a", vecs[i])
    rows = index.refresh_dots("a")
    exact = rows.vecs[: rows.n].astype(np.float64) @ rows.base
    err = np.abs(rows.p[: rows.n] - exact)
    assert 0 < err.max() <= rows.p_err  # float32 did round, and never by more than the bound says
    assert rows.p_err < 1e-4 * np.linalg.norm(rows.base)  # a bound tight enough to prune with
    live = [f"e{i}" for i in range(2000)]
    for i in range(2000, 2400):  # replacements, as a full buffer sees them
        index.remove(live.pop(int(rng.integers(len(live)))))
        index.add(f"e{i}", "a", vecs[i])
        live.append(f"e{i}")
    rows = index.rows("a")
    assert rows.removals >= 400 and rows.p is not None  # re-sums happened and kept the cache
    np.testing.assert_allclose(rows.drift, rows.sum - rows.base, atol=1e-9)
    now = rows.vecs[: rows.n].astype(np.float64) @ rows.sum
    assert np.all(np.abs(rows.p[: rows.n] - now) <= 1.001 * np.linalg.norm(rows.drift) + rows.p_err)


def test_product_quantizer_codes_find_every_near_copy_with_its_exact_similarity():
    import faiss

    rng = np.random.default_rng(4)
    vecs = _clustered(rng, 7000, 64, 30, 0.8 / 8)
    index = ArrayIndex(64, approx_min=5000)
    for i in range(6000):
        index.add(f"e{i}", "a" if i % 4 else "b", vecs[i])
    assert isinstance(index._ivf, faiss.IndexIVFPQ)  # 64 = 8 sub-quantizers of PQ_DIMS dimensions
    for i in range(0, 6000, 5):
        index.remove(f"e{i}")
    assert index._ivf.ntotal == len(index) == 4800
    live = [i for i in range(6000) if i % 5]
    m = vecs[live]
    # near-copies of live and of removed rows, cosine about 0.99 to 0.89 (both sides of 0.95)
    src = vecs[rng.integers(0, 6000, 400)]
    g = rng.standard_normal(src.shape).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = src + rng.uniform(0.15, 0.5, (400, 1)).astype(np.float32) * g
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    sims = q @ m.T
    dups = 0
    for j in range(400):
        best = int(np.argmax(sims[j]))
        got, nearest = index.max_sim(q[j])
        assert nearest in index
        assert (got >= 0.95) == (sims[j, best] >= 0.95), j
        if sims[j, best] >= 0.95:
            dups += 1
            assert nearest == f"e{live[best]}" and got == pytest.approx(float(sims[j, best]), abs=1e-6)
    assert dups > 50
