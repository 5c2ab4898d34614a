"""EOE: histogram entropy of the embedding's values, normalised by bins or by text length."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from operators.scores import eoe, histogram_entropy


def test_two_equal_bins_hold_one_bit():
    # [0, 0, 1, 1] in 2 bins: counts (2, 2), p = (1/2, 1/2), H = 1 bit.
    e = np.array([0.0, 0.0, 1.0, 1.0])
    assert histogram_entropy(e, bins=2) == 1.0
    assert eoe(e, n_tokens=3, bins=2) == 1.0  # 1 / log2(2)
    assert eoe(e, n_tokens=3, bins=2, mode="authors") == 0.5  # 1 / log2(3 + 1)


def test_skewed_histogram():
    # [0, 0, 0, 1] in 2 bins: p = (3/4, 1/4), H = -(3/4·log2 3/4 + 1/4·log2 1/4) = 2 - (3/4)·log2 3 ≈ 0.8113.
    e = np.array([0.0, 0.0, 0.0, 1.0])
    assert eoe(e, n_tokens=1, bins=2) == pytest.approx(2 - 0.75 * math.log2(3))


def test_four_distinct_values_in_eight_bins():
    # [0, 1, 2, 3] in 8 bins of width 3/8: each value alone in its bin, H = log2 4 = 2 bits; 2 / log2 8 = 2/3.
    e = np.array([0.0, 1.0, 2.0, 3.0])
    assert eoe(e, n_tokens=5, bins=8) == pytest.approx(2 / 3)
    assert eoe(e, n_tokens=3, bins=8, mode="authors") == pytest.approx(1.0)  # 2 / log2(4)


def test_constant_embedding_has_zero_entropy():
    assert eoe(np.full(16, 0.3, dtype=np.float32), n_tokens=10) == 0.0


def test_affine_change_of_values_keeps_the_histogram():
    # Bins span [min, max], so scaling by 2 and shifting by -1 (exact in binary) changes nothing.
    e = np.array([0.0, 0.25, 0.5, 0.5, 1.0, 0.75])
    assert eoe(2 * e - 1, n_tokens=4, bins=4) == eoe(e, n_tokens=4, bins=4)


def test_authors_mode_favours_short_texts_and_bins_mode_does_not():
    e = np.array([0.0, 0.0, 1.0, 1.0])
    short, long_ = eoe(e, 3, bins=2, mode="authors"), eoe(e, 255, bins=2, mode="authors")
    assert (short, long_) == (0.5, 0.125)  # 1 / log2(4) and 1 / log2(256)
    assert eoe(e, 3, bins=2) == eoe(e, 255, bins=2) == 1.0


def test_float16_and_integer_embeddings_are_accepted():
    assert eoe(np.array([0, 0, 1, 1], dtype=np.int64), n_tokens=1, bins=2) == 1.0
    assert eoe(np.array([0, 0, 1, 1], dtype=np.float16), n_tokens=1, bins=2) == 1.0


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 64), elements=st.floats(-10, 10, width=32)),
    st.integers(1, 512),
    st.integers(2, 128),
)
def test_bins_mode_lies_in_unit_interval(embedding, n_tokens, bins):
    assert 0.0 <= eoe(embedding, n_tokens, bins=bins) <= 1.0 + 1e-12


def test_input_is_not_mutated():
    e = np.array([3.0, 1.0, 2.0])
    eoe(e, 2)
    assert e.tolist() == [3.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"embedding": np.ones(4), "n_tokens": 3, "bins": 1}, "bins=1"),
        ({"embedding": np.ones(4), "n_tokens": 3, "bins": 2.5}, "bins=2.5"),
        ({"embedding": np.ones(4), "n_tokens": 0}, "n_tokens=0"),
        ({"embedding": np.ones(4), "n_tokens": 3, "mode": "tokens"}, "mode='tokens'"),
        ({"embedding": np.array([]), "n_tokens": 3}, "embedding is empty"),
        ({"embedding": np.array([0.0, np.nan]), "n_tokens": 3}, "non-finite"),
        ({"embedding": np.array([0.0, np.inf]), "n_tokens": 3}, "non-finite"),
        ({"embedding": np.ones((2, 3)), "n_tokens": 3}, "shape (2, 3)"),
        ({"embedding": np.array(["a", "b"]), "n_tokens": 3}, "dtype"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, names):
    with pytest.raises(ValueError, match=re.escape(names)):
        eoe(**kwargs)


def test_histogram_counts_are_numpys_on_real_shaped_and_awkward_inputs():
    from operators.scores.eoe import histogram_counts

    rng = np.random.default_rng(7)
    cases = [rng.standard_normal(576) for _ in range(200)]
    cases += [np.round(rng.standard_normal(576), 1) for _ in range(50)]  # many values exactly on bin edges
    cases += [np.full(9, 2.5), np.array([0.0, 1.0]), np.linspace(-1.0, 1.0, 101), rng.standard_normal(576) * 1e-8 + 3.0]
    for values in cases:
        for bins in (2, 7, 100):
            assert np.array_equal(histogram_counts(values, bins), np.histogram(values, bins=bins)[0]), (values[:4], bins)
