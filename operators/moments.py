"""Running mean and standard deviation of a few scores, one offer at a time (Welford)."""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningMoments:
    """Mean and population standard deviation of the ``size``-vectors seen so far, in O(size) memory.

    Policies standardise scores of unrelated units by these moments over the offered
    candidates. Welford's update is used because a running sum of squares cancels
    catastrophically once the mean is large against the spread. ``z`` is 0 for a component
    with no spread yet (fewer than two distinct values): every sample ties on it.

    >>> m = RunningMoments(2)
    >>> for x in ([1.0, 10.0], [3.0, 10.0]):
    ...     m.update(x)
    >>> m.n, m.mean.tolist(), m.std().tolist()
    (2, [2.0, 10.0], [1.0, 0.0])
    >>> m.z([4.0, 12.0]).tolist()   # (4 - 2) / 1; the second has no spread
    [2.0, 0.0]
    """

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1 (scores tracked), got {size!r}; e.g. size=3")
        self.size = size
        self.n = 0
        self.mean = np.zeros(size)
        self.m2 = np.zeros(size)  # sum of squared deviations from the current mean

    def update(self, x: Any) -> None:
        x = self._vector(x)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))

    def z(self, x: Any) -> np.ndarray:
        std = self.std()
        return np.divide(self._vector(x) - self.mean, std, out=np.zeros(self.size), where=std > 0)

    def state(self) -> dict[str, Any]:
        """Plain data for a snapshot; ``load`` is its inverse."""
        return {"n": self.n, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        self.mean = np.array(state["mean"], dtype=np.float64)
        self.m2 = np.array(state["m2"], dtype=np.float64)

    def _vector(self, x: Any) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        if x.shape != (self.size,):
            raise ValueError(f"expected {self.size} scores, got shape {x.shape}")
        return x
