"""IDD = 1 − mean cosine to the dominant domain's buffered vectors, via a running sum."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.scores import idd_from_sum, loo_idd

E1, E2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def test_hand_worked_idd_from_sum():
    # Buffer {e1, e2}, sum (1, 1). e1 has cosines 1 and 0: mean 1/2, IDD 1/2.
    assert idd_from_sum(E1, E1 + E2, count=2) == 0.5
    # (e1 + e2)/√2 has cosines 1/√2 to both: IDD = 1 − 1/√2.
    diagonal = (E1 + E2) / np.sqrt(2)
    assert idd_from_sum(diagonal, E1 + E2, count=2) == pytest.approx(1 - 1 / np.sqrt(2))


@pytest.mark.parametrize(
    ("vec", "expected"),
    [(E1, 0.0), (E2, 1.0), (-E1, 2.0)],  # identical, orthogonal, opposite
)
def test_range_ends(vec, expected):
    assert idd_from_sum(vec, E1, count=1) == expected


def test_empty_domain_is_maximally_new():
    assert idd_from_sum(E1, np.zeros(2), count=0) == 1.0


def test_hand_worked_leave_one_out():
    # Rows e1, e2, e1 (sum (2, 1)). Row 0: cosines to e2, e1 = 0, 1 → IDD 1/2;
    # row 1: 0, 0 → 1; row 2 like row 0. Formula: (v·S − 1)/(n − 1) = (2 − 1)/2, (1 − 1)/2.
    rows = np.stack([E1, E2, E1])
    assert loo_idd(rows).tolist() == [0.5, 1.0, 0.5]
    assert loo_idd(rows, rows.sum(axis=0)).tolist() == [0.5, 1.0, 0.5]


def test_leave_one_out_small_cases():
    assert loo_idd(np.stack([E1])).tolist() == [1.0]
    assert loo_idd(np.zeros((0, 2))).shape == (0,)


def unit_rows(n: int, d: int, seed: int, dtype=np.float64) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(dtype)


def naive_loo(rows: np.ndarray) -> list[float]:
    rows = rows.astype(np.float64)
    out = []
    for i, v in enumerate(rows):
        others = [float(v @ w) for j, w in enumerate(rows) if j != i]
        out.append(1.0 - sum(others) / len(others) if others else 1.0)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(2, 16), st.integers(0, 2**32 - 1))
def test_leave_one_out_equals_naive_pairwise(n, d, seed):
    rows = unit_rows(n, d, seed)
    assert loo_idd(rows) == pytest.approx(naive_loo(rows), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(2, 16), st.integers(0, 2**32 - 1))
def test_idd_from_sum_equals_naive_mean(n, d, seed):
    rows = unit_rows(n + 1, d, seed)
    vec, buffer = rows[0], rows[1:]
    naive = 1.0 - float(np.mean(buffer @ vec))
    assert idd_from_sum(vec, buffer.sum(axis=0), count=n) == pytest.approx(naive, abs=1e-9)


def test_running_sum_through_admits_and_evictions_matches_a_recount():
    # The way a policy uses it: keep S per domain, add on admit, subtract on evict, in float32.
    rows = unit_rows(40, 32, seed=7, dtype=np.float32)
    buffer: list[int] = []
    running = np.zeros(32, dtype=np.float32)
    for i in range(40):
        if len(buffer) == 8:
            evicted = buffer.pop(0)
            running -= rows[evicted]
        naive = 1.0 - float(np.mean(rows[buffer] @ rows[i])) if buffer else 1.0
        assert idd_from_sum(rows[i], running, len(buffer)) == pytest.approx(naive, abs=1e-5)
        buffer.append(i)
        running += rows[i]


def test_inputs_are_not_mutated():
    rows = unit_rows(3, 4, seed=1)
    copy = rows.copy()
    loo_idd(rows)
    idd_from_sum(rows[0], rows.sum(axis=0), 3)
    assert np.array_equal(rows, copy)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: idd_from_sum(E1, E1, count=-1), "count=-1"),
        (lambda: idd_from_sum(E1, E1, count=1.5), "count=1.5"),
        (lambda: idd_from_sum(E1, np.ones(3), count=1), "domain_sum (3,)"),
        (lambda: loo_idd(E1), "vectors has shape (2,)"),
        (lambda: loo_idd(np.stack([E1, E2]), np.ones(3)), "domain_sum has shape (3,)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
