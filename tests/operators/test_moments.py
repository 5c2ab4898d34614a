"""Running moments against a batch recomputation at every prefix."""

from __future__ import annotations

import numpy as np
import pytest

from operators.moments import RunningMoments


def test_running_moments_match_numpy_at_every_prefix():
    # Large offset, small spread: where a naive sum of squares would lose the variance.
    xs = 1e6 + np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 0.01, 5.0]
    m = RunningMoments(3)
    for k, x in enumerate(xs, start=1):
        m.update(x)
        assert m.n == k
        np.testing.assert_allclose(m.mean, xs[:k].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(m.std(), xs[:k].std(axis=0), rtol=1e-6, atol=1e-9)


def test_z_is_zero_without_spread_and_standardised_with_it():
    m = RunningMoments(2)
    for x in ([1.0, 5.0], [3.0, 5.0], [5.0, 5.0]):  # mean 3, population std sqrt(8/3)
        m.update(x)
    z = m.z([3.0 + np.sqrt(8 / 3), 7.0])
    assert z[0] == pytest.approx(1.0) and z[1] == 0.0
    assert RunningMoments(2).z([1.0, 2.0]).tolist() == [0.0, 0.0]  # nothing seen yet


def test_state_round_trip_continues_identically():
    a, b = RunningMoments(2), RunningMoments(2)
    for x in ([0.1, 2.0], [0.7, -1.0], [0.3, 0.5]):
        a.update(x)
    b.load(a.state())
    a.update([0.9, 0.0])
    b.update([0.9, 0.0])
    assert a.state() == b.state()


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_bad_size_names_the_parameter(size):
    with pytest.raises(ValueError, match="size"):
        RunningMoments(size)


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="expected 3 scores"):
        RunningMoments(3).update([1.0, 2.0])
