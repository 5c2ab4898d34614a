"""IDD, In-Domain Dissimilarity: how much a sample differs from its domain's buffer.

The paper calls IDD a *dissimilarity* where higher is better, but the authors'
code computes the mean cosine *similarity* to the buffered samples of the
dominant domain (0 when the domain has none), which would reward repeats. We
use ``IDD = 1 − mean cosine``, in [0, 2], and 1.0 (as new as an orthogonal
sample) when the domain holds nothing yet.

All vectors are L2-normalised, so cosine is a dot product and the mean cosine
to ``count`` buffered vectors is ``v · S / count`` with ``S`` their sum. A
policy that keeps ``S`` per domain (add on admit, subtract on evict) thus gets
IDD in O(d) per event, exactly equal to the pairwise mean up to float
rounding. Nearest-neighbour and near-duplicate queries need the individual
vectors; those go to the FAISS index owned by the policies, not here.
"""

from __future__ import annotations

import numpy as np


def _check_pair(vec: np.ndarray, domain_sum: np.ndarray) -> None:
    if vec.ndim != 1 or domain_sum.shape != vec.shape:
        raise ValueError(
            f"vec has shape {vec.shape} and domain_sum {domain_sum.shape}: need two 1-D vectors of the same "
            f"length; keep one running sum per domain with the embedding's dimension"
        )


def idd_from_sum(vec: np.ndarray, domain_sum: np.ndarray, count: int) -> float:
    """``1 − mean cosine`` of ``vec`` to ``count`` unit vectors summing to ``domain_sum``.

    Returns 1.0 when ``count == 0`` (an empty domain). The result is clipped to
    [0, 2], the range of ``1 − cosine``, to absorb float rounding.

    Against the two unit vectors (1, 0) and (0, 1), whose sum is (1, 1), the
    vector (1, 0) has cosines 1 and 0, mean 0.5:

    >>> idd_from_sum(np.array([1.0, 0.0]), np.array([1.0, 1.0]), count=2)
    0.5
    >>> idd_from_sum(np.array([1.0, 0.0]), np.zeros(2), count=0)
    1.0
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count={count!r}: need the number of buffered vectors as an integer >= 0")
    vec = np.asarray(vec)
    domain_sum = np.asarray(domain_sum)
    _check_pair(vec, domain_sum)
    if count == 0:
        return 1.0
    # float64 dot: a float32 running sum over many admits/evictions already carries rounding.
    mean_cos = float(np.dot(vec.astype(np.float64), domain_sum.astype(np.float64))) / count
    return min(2.0, max(0.0, 1.0 - mean_cos))


def loo_idd(vectors: np.ndarray, domain_sum: np.ndarray | None = None) -> np.ndarray:
    """Each row's IDD against the other rows (leave-one-out).

    ``vectors`` is an (n, d) array of unit rows and ``domain_sum`` their sum
    (computed when omitted). Row ``i``'s mean cosine to the others is
    ``(v_i · S − v_i · v_i) / (n − 1)``; ``v_i · v_i`` is 1 for unit vectors but
    is subtracted as computed so float32 rows stay exact. A lone member gets
    1.0, an empty array gives an empty result.

    Rows (1, 0), (0, 1), (1, 0): the first has cosines 0 and 1 to the others
    (mean 0.5), the second 0 and 0 (mean 0):

    >>> v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> loo_idd(v).tolist()
    [0.5, 1.0, 0.5]
    >>> loo_idd(v[:1]).tolist()
    [1.0]
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(
            f"vectors has shape {vectors.shape}: need an (n, d) array of unit rows; stack them with np.stack"
        )
    rows = vectors.astype(np.float64)
    total = rows.sum(axis=0) if domain_sum is None else np.asarray(domain_sum, dtype=np.float64)
    if total.shape != (rows.shape[1],):
        raise ValueError(
            f"domain_sum has shape {total.shape}: need ({rows.shape[1]},), the sum of the rows of vectors; "
            f"pass vectors.sum(axis=0) or omit it"
        )
    n = rows.shape[0]
    if n <= 1:
        return np.ones(n)
    self_dot = np.einsum("ij,ij->i", rows, rows)
    mean_cos = (rows @ total - self_dot) / (n - 1)
    return np.clip(1.0 - mean_cos, 0.0, 2.0)
