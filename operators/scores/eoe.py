"""EOE, Entropy of Embedding: how much information a sample's embedding carries.

The authors' code takes the Shannon entropy (log2) of a 100-bin histogram of the
embedding's values and divides it by ``log2(n + 1)``, ``n`` being the number of
LM tokens of the text. The histogram entropy can never exceed ``log2(bins)``,
so dividing by a quantity that grows with the text's length rewards short
texts: a three-token greeting beats a 300-token explanation with the same
histogram. Our default (``mode="bins"``) divides by ``log2(bins)`` instead,
which is the largest value the entropy can take; the score then lies in
[0, 1] and is comparable across text lengths. ``mode="authors"`` keeps the
original normalisation for ablations and for comparison with the paper.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

EoeMode = Literal["bins", "authors"]
EOE_MODES: tuple[str, ...] = ("bins", "authors")


def histogram_counts(values: np.ndarray, bins: int) -> np.ndarray:
    """``numpy.histogram(values, bins)[0]`` for a 1-D float array, computed from its edges directly.

    >>> histogram_counts(np.array([0.0, 0.2, 0.5, 1.0]), bins=2).tolist()   # 0.5 opens the last bin
    [2, 2]
    >>> histogram_counts(np.array([3.0, 3.0]), bins=4).tolist()   # no spread: [2.5, 3.5] around it
    [0, 0, 2, 0]
    """
    lo, hi = values.min(), values.max()
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    index = np.searchsorted(edges, values, side="right") - 1
    index[index == bins] = bins - 1  # the maximum belongs to the last, closed bin
    return np.bincount(index, minlength=bins)


def histogram_entropy(values: np.ndarray, bins: int) -> float:
    """Shannon entropy in bits of a ``bins``-bin histogram of ``values``.

    The bins are ``numpy.histogram``'s: ``bins + 1`` edges spread evenly over [min, max]
    (min - 0.5 to max + 0.5 if all values are equal), each bin half-open, the last closed.
    Empty bins contribute nothing. The counts come from one ``searchsorted`` against those
    edges, the same counts as ``numpy.histogram`` at a third of its per-call cost (this runs
    once per event).

    >>> histogram_entropy(np.array([0.0, 0.0, 1.0, 1.0]), bins=2)
    1.0
    """
    counts = histogram_counts(values, bins)
    p = counts[counts > 0] / counts.sum()
    # Rounding can leave -0.0 or 1e-17 for a one-bin histogram; report a clean 0.
    return max(0.0, float(-(p * np.log2(p)).sum()))


def eoe(
    embedding: np.ndarray,
    n_tokens: int,
    *,
    bins: int = 100,
    mode: EoeMode = "bins",
) -> float:
    """Entropy of a raw (un-normalised) embedding, normalised by ``mode``.

    ``mode="bins"`` divides the histogram entropy by ``log2(bins)`` (score in
    [0, 1], length-neutral); ``mode="authors"`` divides it by
    ``log2(n_tokens + 1)`` as the authors' code does (favours short texts).
    ``n_tokens`` is validated in both modes so a caller bug surfaces early.

    Two values in each of two bins give 1 bit; ``log2(2) = 1`` and
    ``log2(3 + 1) = 2``:

    >>> e = np.array([0.0, 0.0, 1.0, 1.0])
    >>> eoe(e, n_tokens=3, bins=2)
    1.0
    >>> eoe(e, n_tokens=3, bins=2, mode="authors")
    0.5
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(
            f"bins={bins!r}: need an integer >= 2 (an entropy over one bin is always 0); pass e.g. bins=100"
        )
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ValueError(
            f"n_tokens={n_tokens!r}: need the text's LM token count as an integer >= 1; count tokens before scoring"
        )
    if mode not in EOE_MODES:
        raise ValueError(f"mode={mode!r}: unknown EOE normalisation; use one of {EOE_MODES}")
    values = np.asarray(embedding)
    if values.ndim != 1:
        raise ValueError(f"embedding has shape {values.shape}: need one 1-D vector; score a batch row by row")
    if values.size == 0:
        raise ValueError("embedding is empty: need a non-empty 1-D vector; check the embedder's output")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"embedding has dtype {values.dtype}: need real numbers; convert with .astype(np.float32)")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "embedding has non-finite values (nan or inf): need finite numbers; check the embedder's dtype and input"
        )
    # float64 so float16 embeddings with a narrow range still get distinct bin edges.
    entropy = histogram_entropy(values.astype(np.float64), bins)
    denominator = math.log2(bins) if mode == "bins" else math.log2(n_tokens + 1)
    return entropy / denominator
