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
    """``numpy.histogram(row, bins)[0]`` of a 1-D float array, or of each row of a 2-D one.

    A row's bins are ``numpy.histogram``'s: ``bins + 1`` edges from ``numpy.linspace`` over
    [min, max] (min - 0.5 to max + 0.5 if the row is constant), each bin half-open, the last
    closed. Each value's bin is first estimated arithmetically, then moved by at most one so
    that it lies between its bin's edges, as ``numpy.histogram`` does; a batch of rows costs
    about as much as one row (the flow scores an embedded batch at once).

    >>> histogram_counts(np.array([0.0, 0.2, 0.5, 1.0]), bins=2).tolist()   # 0.5 opens the last bin
    [2, 2]
    >>> histogram_counts(np.array([[3.0, 3.0], [0.0, 1.0]]), bins=4).tolist()  # a constant row: [2.5, 3.5]
    [[0, 0, 2, 0], [1, 0, 0, 1]]
    """
    rows = np.atleast_2d(values)
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    flat = lo == hi
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    # Per row, the arithmetic of a scalar linspace: no row has a zero step (constant rows were widened).
    edges = np.linspace(lo, hi, bins + 1, axis=1)
    index = ((rows - lo[:, None]) / (hi - lo)[:, None] * bins).astype(np.intp)
    np.clip(index, 0, bins - 1, out=index)
    r = np.arange(len(rows))[:, None]
    index -= rows < edges[r, index]
    index += (rows >= edges[r, index + 1]) & (index != bins - 1)
    counts = np.bincount((index + r * bins).ravel(), minlength=len(rows) * bins).reshape(len(rows), bins)
    return counts[0] if np.ndim(values) == 1 else counts


def histogram_entropy(values: np.ndarray, bins: int) -> float:
    """Shannon entropy in bits of a ``bins``-bin histogram of ``values``.

    The bins are ``numpy.histogram``'s (:func:`histogram_counts`); empty bins contribute nothing.

    >>> histogram_entropy(np.array([0.0, 0.0, 1.0, 1.0]), bins=2)
    1.0
    """
    return _entropy(histogram_counts(values, bins))


def _entropy(counts: np.ndarray, total: int | None = None) -> float:
    """Entropy in bits of one histogram; ``total`` is ``counts.sum()`` when the caller knows it."""
    p = counts[counts > 0] / (counts.sum() if total is None else total)
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
    values = np.asarray(embedding)
    if values.ndim != 1:
        raise ValueError(f"embedding has shape {values.shape}: need one 1-D vector; score a batch with eoe_batch")
    return eoe_batch(values[None, :], [n_tokens], bins=bins, mode=mode)[0]


def eoe_batch(
    embeddings: np.ndarray,
    n_tokens: list[int],
    *,
    bins: int = 100,
    mode: EoeMode = "bins",
) -> list[float]:
    """:func:`eoe` of each row of ``embeddings`` (one per text), the same values, at about the cost of one.

    >>> eoe_batch(np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]]), [3, 3], bins=2)
    [1.0, 1.0]
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(
            f"bins={bins!r}: need an integer >= 2 (an entropy over one bin is always 0); pass e.g. bins=100"
        )
    for n in n_tokens:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(
                f"n_tokens={n!r}: need the text's LM token count as an integer >= 1; count tokens before scoring"
            )
    if mode not in EOE_MODES:
        raise ValueError(f"mode={mode!r}: unknown EOE normalisation; use one of {EOE_MODES}")
    values = np.asarray(embeddings)
    if values.ndim != 2 or values.shape[0] != len(n_tokens):
        raise ValueError(
            f"embeddings has shape {values.shape} for {len(n_tokens)} token counts: need one row per text"
        )
    if values.shape[1] == 0:
        raise ValueError("embedding is empty: need a non-empty 1-D vector; check the embedder's output")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"embedding has dtype {values.dtype}: need real numbers; convert with .astype(np.float32)")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"embedding of row {int(np.flatnonzero(~finite)[0])} has non-finite values (nan or inf): need finite "
            "numbers; check the embedder's dtype and input"
        )
    # float64 so float16 embeddings with a narrow range still get distinct bin edges.
    counts = histogram_counts(values.astype(np.float64), bins)
    total = values.shape[1]  # every value lands in one bin, so each row's counts sum to the row's length
    out = []
    for row, n in zip(counts, n_tokens):
        denominator = math.log2(bins) if mode == "bins" else math.log2(n + 1)
        out.append(_entropy(row, total) / denominator)
    return out
