"""Nearest-neighbour and IDD bookkeeping over one user's buffered embeddings, per domain."""

from __future__ import annotations

import math
import os

import faiss
import numpy as np

from operators.scores.idd import idd_from_sum, loo_idd

_NORM_TOLERANCE = 1e-3

# A buffer index holds tens of vectors and is searched one query at a time; FAISS's OpenMP
# threads cost far more than they save there (measured: ~9 ms vs ~0.1 ms per search on a
# busy 2-core host), and parallelism comes from Bytewax workers. This is process-wide, so
# an explicit OMP_NUM_THREADS wins.
if "OMP_NUM_THREADS" not in os.environ:
    faiss.omp_set_num_threads(1)


class DomainIndex:
    """Buffered embeddings split by dominant domain, searchable by cosine similarity.

    Each domain owns an exact inner-product FAISS index wrapped in ``IndexIDMap2``:
    exact because a buffer holds tens of vectors, and ``IndexIDMap2`` because samples
    get evicted, which graph indexes such as HNSW do not support. Vectors must be
    L2-normalised, so inner product is cosine similarity.

    Each domain also keeps the float64 sum of its vectors, which turns IDD of a new
    sample into one dot product (``idd_from_sum``). Float drift: ``add`` updates the
    sum incrementally and ``remove`` recomputes it from the stored vectors. Subtraction
    is where a running sum loses precision, so it never subtracts. The recomputation is
    a left-to-right sum in storage order, the same arithmetic as the incremental adds,
    so the sum is always bit-for-bit the sequential sum of the stored vectors; an index
    rebuilt by re-adding the same vectors in the same order (a restored snapshot) is
    identical to the original. Removal already costs O(n·d) inside FAISS, so the
    recomputation does not change its cost.

    >>> index = DomainIndex(dim=2)
    >>> index.add("a", "medicine", np.array([1.0, 0.0], dtype=np.float32))
    >>> index.add("b", "medicine", np.array([0.0, 1.0], dtype=np.float32))
    >>> index.add("c", "law", np.array([0.6, 0.8], dtype=np.float32))
    >>> len(index), index.domains()
    (3, ['law', 'medicine'])
    >>> query = np.array([1.0, 0.0], dtype=np.float32)
    >>> round(index.idd(query, "medicine"), 3)   # 1 - mean(1.0, 0.0)
    0.5
    >>> sim, nearest = index.max_sim(query, "law")
    >>> round(sim, 3), nearest
    (0.6, 'c')
    >>> index.remove("a")
    >>> index.loo_idd("medicine")
    {'b': 1.0}
    """

    def __init__(self, dim: int):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int (the embedding size), got {dim!r}")
        self.dim = dim
        self._flat: dict[str, faiss.IndexFlatIP] = {}
        self._indexes: dict[str, faiss.IndexIDMap2] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._where: dict[str, tuple[str, int]] = {}  # event_id -> (domain, faiss id)
        self._event_of: dict[int, str] = {}  # faiss id -> event_id
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._where

    def domains(self) -> list[str]:
        """Domains holding at least one vector, sorted: a fixed order keeps tie-breaks reproducible."""
        return sorted(self._indexes)

    def count(self, domain: str) -> int:
        index = self._indexes.get(domain)
        return 0 if index is None else index.ntotal

    def add(self, event_id: str, domain: str, vec: np.ndarray) -> None:
        if event_id in self._where:
            raise ValueError(f"event_id {event_id!r} is already indexed; remove it before adding it again")
        row = self._as_row(vec, "vec")
        if domain not in self._indexes:
            flat = faiss.IndexFlatIP(self.dim)
            self._flat[domain] = flat  # keep a Python reference: the ID map does not own it
            self._indexes[domain] = faiss.IndexIDMap2(flat)
            self._sums[domain] = np.zeros(self.dim, dtype=np.float64)
        fid = self._next_id
        self._next_id += 1
        self._indexes[domain].add_with_ids(row, np.array([fid], dtype=np.int64))
        self._sums[domain] += row[0].astype(np.float64)
        self._where[event_id] = (domain, fid)
        self._event_of[fid] = event_id

    def remove(self, event_id: str) -> None:
        if event_id not in self._where:
            raise KeyError(f"event_id {event_id!r} is not indexed")
        domain, fid = self._where.pop(event_id)
        del self._event_of[fid]
        index = self._indexes[domain]
        index.remove_ids(np.array([fid], dtype=np.int64))
        if index.ntotal == 0:
            del self._indexes[domain], self._flat[domain], self._sums[domain]
            return
        # cumsum is strictly left to right (each partial sum feeds the next), unlike sum(),
        # which may add pairwise: this is the exact arithmetic of the incremental adds.
        rows = self._flat[domain].reconstruct_n(0, index.ntotal).astype(np.float64)
        self._sums[domain] = np.cumsum(rows, axis=0)[-1]

    def vectors(self, domain: str) -> tuple[list[str], np.ndarray]:
        """Event ids and stored vectors of one domain, in insertion order."""
        index = self._indexes.get(domain)
        if index is None:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        fids = faiss.vector_to_array(index.id_map)
        return [self._event_of[int(f)] for f in fids], self._flat[domain].reconstruct_n(0, index.ntotal)

    def idd(self, vec: np.ndarray, domain: str) -> float:
        """In-domain dissimilarity of ``vec`` to the vectors of ``domain``: 1 - mean cosine."""
        if domain not in self._sums:
            return idd_from_sum(self._as_row(vec, "vec")[0], np.zeros(self.dim), 0)
        return idd_from_sum(self._as_row(vec, "vec")[0], self._sums[domain], self._indexes[domain].ntotal)

    def loo_idd(self, domain: str) -> dict[str, float]:
        """Each stored vector's IDD against the other vectors of its domain (leave-one-out)."""
        ids, vecs = self.vectors(domain)
        if not ids:
            return {}
        values = loo_idd(vecs, self._sums[domain])
        return {event_id: float(v) for event_id, v in zip(ids, values)}

    def max_sim(self, vec: np.ndarray, domain: str | None = None) -> tuple[float, str | None]:
        """Highest cosine similarity to a stored vector (in ``domain``, or in any); ``(-inf, None)`` if none."""
        if domain is not None and domain not in self._indexes:
            return -math.inf, None
        hits = self.search(self._as_row(vec, "vec"), 1, domain)[0]
        if not hits:
            return -math.inf, None
        event_id, sim = hits[0]
        return sim, event_id

    def nearest(self, vec: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most similar stored vectors across all domains, as ``(event_id, cosine)``."""
        return self.search(self._as_row(vec, "vec"), k)[0]

    def search(self, queries: np.ndarray, k: int, domain: str | None = None) -> list[list[tuple[str, float]]]:
        """Batched ``nearest``: one list of up to ``k`` ``(event_id, cosine)`` per query row, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (m, {self.dim}), got {queries.shape}")
        domains = [domain] if domain is not None else self.domains()
        results: list[list[tuple[str, float]]] = [[] for _ in range(len(queries))]
        for name in domains:
            index = self._indexes[name]
            sims, fids = index.search(queries, min(k, index.ntotal))
            for hits, row_sims, row_fids in zip(results, sims, fids):
                hits.extend((self._event_of[int(f)], float(s)) for s, f in zip(row_sims, row_fids) if f >= 0)
        # Stable sort: equal similarities stay in (sorted domain, FAISS) order, so ties are reproducible.
        return [sorted(hits, key=lambda hit: -hit[1])[:k] for hits in results]

    def _as_row(self, vec: np.ndarray, name: str) -> np.ndarray:
        row = np.ascontiguousarray(vec, dtype=np.float32).reshape(1, -1)
        if row.shape[1] != self.dim:
            raise ValueError(f"{name} must have {self.dim} values (the index dim), got {row.shape[1]}")
        norm = math.sqrt(float(np.dot(row[0], row[0])))  # np.linalg.norm costs more than the search
        if abs(norm - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"{name} must be L2-normalised (norm 1), got norm {norm:.4f}; divide it by its norm first")
        return row
