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

    Every buffered vector sits in one exact inner-product FAISS index wrapped in
    ``IndexIDMap2``: exact because a buffer holds tens of vectors, and ``IndexIDMap2``
    because samples get evicted, which graph indexes such as HNSW do not support. Vectors
    must be L2-normalised, so inner product is cosine similarity. Each domain keeps its
    members' rows as a float32 array in insertion order; a search restricted to one
    domain (rare: no shipped policy makes one) runs FAISS's same flat kernel over those rows.

    Each domain also keeps the float64 sum of its vectors, which turns IDD of a new
    sample into one dot product (``idd_from_sum``). Float drift: ``add`` updates the
    sum incrementally and ``remove`` recomputes it from the stored vectors. Subtraction
    is where a running sum loses precision, so it never subtracts. The recomputation is
    a left-to-right sum in storage order, the same arithmetic as the incremental adds,
    so the sum is always bit-for-bit the sequential sum of the stored vectors; an index
    rebuilt by re-adding the same vectors in the same order (a restored snapshot) is
    identical to the original. Removal already costs O(n·d) inside FAISS and in the
    row array, so the recomputation does not change its cost.

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
        # Every vector, for the searches across domains that every offer makes (a flat inner product
        # is computed per pair, so a similarity has the same bits whichever flat index computes it).
        self._all_flat = faiss.IndexFlatIP(dim)
        self._all = faiss.IndexIDMap2(self._all_flat)
        # Output buffers of the one-query search of every offer, passed to FAISS's C++ search directly:
        # its Python wrapper's checks and allocations cost half as much as the search itself. (Plain
        # arrays, not their swig pointers, so that the index still pickles and deep-copies.)
        self._top_sim = np.empty((1, 1), dtype=np.float32)
        self._top_fid = np.empty((1, 1), dtype=np.int64)
        # Each domain's event ids and float32 rows in insertion order (removal keeps it): a domain is read
        # back, searched and re-summed from these.
        self._members: dict[str, list[str]] = {}
        self._rows: dict[str, np.ndarray] = {}
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
        return sorted(self._members)

    def count(self, domain: str) -> int:
        members = self._members.get(domain)
        return 0 if members is None else len(members)

    def sizes(self) -> dict[str, int]:
        """How many vectors each domain holds (domains in no particular order)."""
        return {domain: len(members) for domain, members in self._members.items()}

    def add(self, event_id: str, domain: str, vec: np.ndarray) -> None:
        if event_id in self._where:
            raise ValueError(f"event_id {event_id!r} is already indexed; remove it before adding it again")
        row = self._as_row(vec, "vec")
        if domain not in self._members:
            self._sums[domain] = np.zeros(self.dim, dtype=np.float64)
            self._members[domain] = []
            self._rows[domain] = np.empty((8, self.dim), dtype=np.float32)
        fid = self._next_id
        self._next_id += 1
        self._all.add_with_ids(row, np.array([fid], dtype=np.int64))
        self._sums[domain] += row[0].astype(np.float64)
        self._where[event_id] = (domain, fid)
        self._event_of[fid] = event_id
        members, rows = self._members[domain], self._rows[domain]
        if len(members) == len(rows):
            rows = self._rows[domain] = np.concatenate([rows, np.empty_like(rows)])
        rows[len(members)] = row[0]
        members.append(event_id)

    def remove(self, event_id: str) -> None:
        if event_id not in self._where:
            raise KeyError(f"event_id {event_id!r} is not indexed")
        domain, fid = self._where.pop(event_id)
        del self._event_of[fid]
        self._all.remove_ids(np.array([fid], dtype=np.int64))
        members, rows = self._members[domain], self._rows[domain]
        if len(members) == 1:
            del self._sums[domain], self._members[domain], self._rows[domain]
            return
        at = members.index(event_id)
        del members[at]
        rows[at : len(members)] = rows[at + 1 : len(members) + 1]
        # The exact arithmetic of the incremental adds: numpy sums pairwise only along the contiguous
        # axis, and reduces axis 0 of a C-ordered array row after row, strictly left to right (the same
        # bits as cumsum(axis=0)[-1], tests/operators/test_index.py, at a tenth of its cost).
        self._sums[domain] = rows[: len(members)].astype(np.float64).sum(axis=0)

    def vectors(self, domain: str) -> tuple[list[str], np.ndarray]:
        """Event ids and stored vectors of one domain, in insertion order."""
        members = self._members.get(domain)
        if members is None:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return list(members), self._rows[domain][: len(members)].copy()

    def idd(self, vec: np.ndarray, domain: str) -> float:
        """In-domain dissimilarity of ``vec`` to the vectors of ``domain``: 1 - mean cosine."""
        return self._row_idd(self._as_row(vec, "vec")[0], domain)

    def features(self, vec: np.ndarray, domain: str) -> tuple[float, float]:
        """``(max_sim(vec)[0], idd(vec, domain))``, the two buffer-dependent features of every offer, with
        ``vec`` checked once: the same bits as the two calls.

        >>> index = DomainIndex(dim=2)
        >>> index.add("a", "law", np.array([0.6, 0.8], dtype=np.float32))
        >>> q = np.array([1.0, 0.0], dtype=np.float32)
        >>> index.features(q, "law") == (index.max_sim(q)[0], index.idd(q, "law"))
        True
        """
        row = self._as_row(vec, "vec")
        return (self._top1(row)[0] if self._all.ntotal else -math.inf), self._row_idd(row[0], domain)

    def _row_idd(self, row: np.ndarray, domain: str) -> float:
        """``idd_from_sum(row, domain sum, count)`` for a checked row, without its argument checks (the row and
        the sum are this index's own arrays): 1.0 for an empty domain, else 1 - mean cosine clipped to [0, 2]."""
        members = self._members.get(domain)
        if members is None:
            return 1.0
        mean_cos = float(np.dot(row.astype(np.float64), self._sums[domain])) / len(members)
        return min(2.0, max(0.0, 1.0 - mean_cos))

    def loo_idd(self, domain: str) -> dict[str, float]:
        """Each stored vector's IDD against the other vectors of its domain (leave-one-out)."""
        members = self._members.get(domain)
        if not members:
            return {}
        values = loo_idd(self._rows[domain][: len(members)], self._sums[domain])
        return dict(zip(members, values.tolist()))

    def max_sim(self, vec: np.ndarray, domain: str | None = None) -> tuple[float, str | None]:
        """Highest cosine similarity to a stored vector (in ``domain``, or in any); ``(-inf, None)`` if none."""
        if domain is not None and domain not in self._members:
            return -math.inf, None
        if domain is None:  # across domains: straight to the index
            if self._all.ntotal == 0:
                return -math.inf, None
            sim, fid = self._top1(self._as_row(vec, "vec"))
            return sim, self._event_of[fid]
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
        if domain is not None:
            members = self._members[domain]
            flat = faiss.IndexFlatIP(self.dim)  # the domain's rows in insertion order, as a domain index held them
            flat.add(self._rows[domain][: len(members)])
            sims, rows = flat.search(queries, min(k, flat.ntotal))
            return [[(members[int(r)], float(s)) for s, r in zip(row_sims, row_rows) if r >= 0]
                    for row_sims, row_rows in zip(sims, rows)]
        if self._all.ntotal == 0:
            return [[] for _ in range(len(queries))]
        sims, fids = self._all.search(queries, min(k, self._all.ntotal))
        # FAISS returns each row best first; equal similarities come in a fixed order, so ties are reproducible.
        event_of = self._event_of
        return [[(event_of[int(f)], float(s)) for s, f in zip(row_sims, row_fids) if f >= 0]
                for row_sims, row_fids in zip(sims, fids)]

    def _top1(self, row: np.ndarray) -> tuple[float, int]:
        """The most similar stored vector to one checked ``row`` across domains, as ``(cosine, faiss id)``:
        what ``self._all.search(row, 1)`` computes, through FAISS's C++ search without its Python wrapper."""
        self._all.search_c(1, faiss.swig_ptr(row), 1, faiss.swig_ptr(self._top_sim), faiss.swig_ptr(self._top_fid), None)
        return float(self._top_sim[0, 0]), int(self._top_fid[0, 0])

    def _as_row(self, vec: np.ndarray, name: str) -> np.ndarray:
        row = np.ascontiguousarray(vec, dtype=np.float32).reshape(1, -1)
        if row.shape[1] != self.dim:
            raise ValueError(f"{name} must have {self.dim} values (the index dim), got {row.shape[1]}")
        norm = math.sqrt(float(np.dot(row[0], row[0])))  # np.linalg.norm costs more than the search
        if abs(norm - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"{name} must be L2-normalised (norm 1), got norm {norm:.4f}; divide it by its norm first")
        return row


LARGE_CAPACITY = 2048
"""Policies with a larger capacity use :class:`ArrayIndex`; at or below it, :class:`DomainIndex` (the exact
path the selection benchmark's capacity-64 cells were made with, kept bit for bit)."""

APPROX_MIN = 16_384
"""An :class:`ArrayIndex` holding this many vectors or more answers global searches from an IVF index."""


class _Rows:
    """One domain's rows as growable arrays; a removal moves the last row into the hole (O(d))."""

    __slots__ = ("vecs", "fids", "stamps", "slots", "extra", "n", "sum", "removals", "p", "base", "drift", "p_err", "first")

    def __init__(self, dim: int, n_extra: int):
        self.vecs = np.empty((16, dim), dtype=np.float32)
        self.fids = np.empty(16, dtype=np.int64)
        self.stamps = np.empty(16, dtype=np.int64)  # insertion order: ties go to the older row
        self.slots = np.empty(16, dtype=np.int64)  # each row's slot in ArrayIndex's location table (its IVF id)
        self.extra = np.empty((16, n_extra), dtype=np.float64)
        self.n = 0
        self.sum = np.zeros(dim, dtype=np.float64)
        self.removals = 0
        # Cached ``vecs[i] . base`` for the victim search (``ArrayIndex.refresh_dots``), each within
        # ``p_err`` of the exact value; ``drift = sum - base``.
        self.p: np.ndarray | None = None
        self.base: np.ndarray | None = None
        self.drift: np.ndarray | None = None
        self.p_err = 0.0
        self.first: int | None = None  # the oldest stamp, cached until that row leaves

    def grow(self) -> None:
        size = 2 * len(self.fids)
        for name in ("vecs", "fids", "stamps", "slots", "extra"):
            old = getattr(self, name)
            new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        if self.p is not None:
            p = np.empty(size)
            p[: self.n] = self.p[: self.n]
            self.p = p


class ArrayIndex:
    """The same questions as :class:`DomainIndex`, answered fast at capacities of 10^4-10^5 vectors.

    - **Per-domain arrays.** Each domain's vectors, FAISS-free ids, insertion stamps and a few
      float columns (``extra``, e.g. EOE and DSS) are dense numpy arrays, so a policy scores a
      whole domain with array arithmetic (:meth:`rows`). Removal moves the domain's last row
      into the hole: storage order is not arrival order, so ties are broken by ``stamps``.
    - **Running sums updated on removal.** A domain's float64 sum gains a vector on ``add`` and
      loses it on ``remove`` (O(d)); subtraction drifts by rounding, so every
      ``RESUM_EVERY`` removals of a domain the sum is recomputed from its rows.
    - **Search.** Below :data:`APPROX_MIN` vectors, searches are exact scans of the arrays.
      From there on, global searches (no ``domain``) go to a FAISS IVF index (inner product,
      8-bit product-quantizer codes of :data:`PQ_DIMS` dimensions a byte, float16 codes where
      ``PQ_DIMS`` does not divide ``dim``; ``nlist`` = n / 64 capped at 1,024, k-means trained once on
      the vectors held when the threshold is crossed, ``nprobe`` :data:`NPROBE`); its best
      :data:`RERANK` hits are re-ranked by exact inner products with the stored float32 rows, so
      every similarity reported is exact and only a missed neighbour is an error. The codes
      only choose the candidates: a near-copy (cosine >= 0.95) outranks the rest of its lists by
      far more than the codes' error, so it is missed only if its list is not probed. Training
      is a one-off pause at the ``approx_min``-th vector (576-d: about 2.7 s, against 0.8 s for
      float16 codes, on a busy 2-core Xeon). **Removal strategy:** the IVF index keeps
      a hash-table direct map (``DirectMap.Hashtable``), so ``remove_ids`` finds the vector's
      inverted list in O(1) and moves that list's last entry into the hole — no tombstones and
      no rebuilds; the centroids stay those of the training set (recall against an exact scan
      is measured in benchmarks/bench_buffer.py). The IVF ids are slots of a location table
      (slot -> domain, row; slots are reused), so a re-rank gathers its rows by array indexing.
      A search restricted to one domain is always exact.
    - **Nearest-neighbour cache** (``neighbours=True``, for k-center and sdss's coverage term):
      every row's two nearest other rows (similarity and id), kept up to date incrementally. An
      ``add`` compares the new vector with every row (exact scan) or with its IVF neighbours
      (approximate, :data:`NEIGHBOUR_HITS` of them); a ``remove`` re-searches only the rows whose
      cached neighbours included the removed one.

    ``vectors`` returns rows in storage order, not insertion order.
    """

    RESUM_EVERY = 1024

    def __init__(self, dim: int, n_extra: int = 0, *, neighbours: bool = False, approx_min: int = APPROX_MIN):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int (the embedding size), got {dim!r}")
        self.dim = dim
        self.n_extra = n_extra
        self.approx_min = approx_min
        self._rows: dict[str, _Rows] = {}
        self._where: dict[str, tuple[str, int]] = {}  # event_id -> (domain, row)
        self._by_fid: dict[int, str] = {}  # fid -> event_id
        self._fid_of: dict[str, int] = {}
        self._next = 0
        # Where each row lives, as arrays indexed by slot (a row's IVF id): a re-rank looks its candidates
        # up with numpy indexing instead of two dict look-ups each (cache misses at 10^5 rows). Slots of
        # removed rows are reused, so the table is as long as the most rows ever held.
        self._slot_code = np.empty(1024, dtype=np.int64)  # slot -> domain code
        self._slot_row = np.empty(1024, dtype=np.int64)  # slot -> row within the domain
        self._free_slots: list[int] = []
        self._slots_used = 0
        self._codes: dict[str, int] = {}  # domain -> code, never reassigned
        self._by_code: list[_Rows | None] = []  # code -> the domain's rows (None while it is empty)
        self._ivf = None
        self._nn = {} if neighbours else None  # domain -> (sims (n, 2) float64, fids (n, 2) int64)

    # -- bookkeeping ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._where

    def domains(self) -> list[str]:
        return sorted(self._rows)

    def count(self, domain: str) -> int:
        rows = self._rows.get(domain)
        return 0 if rows is None else rows.n

    def rows(self, domain: str) -> _Rows | None:
        """The domain's arrays (read-only; valid up to ``.n``)."""
        return self._rows.get(domain)

    def first_stamp(self, domain: str) -> int:
        """Insertion stamp of the domain's oldest row (domains sort by it as by their first arrival)."""
        rows = self._rows[domain]
        if rows.first is None:
            rows.first = int(rows.stamps[: rows.n].min())
        return rows.first

    def event_ids(self, fids: np.ndarray) -> list[str]:
        return [self._by_fid[int(f)] for f in fids]

    def fid(self, event_id: str) -> int:
        return self._fid_of[event_id]

    def add(self, event_id: str, domain: str, vec: np.ndarray, extra: tuple[float, ...] = ()) -> None:
        if event_id in self._where:
            raise ValueError(f"event_id {event_id!r} is already indexed; remove it before adding it again")
        row = _as_unit_row(vec, self.dim, "vec")[0]
        rows = self._rows.get(domain)
        if rows is None:
            rows = self._rows[domain] = _Rows(self.dim, self.n_extra)
            if domain not in self._codes:
                self._codes[domain] = len(self._by_code)
                self._by_code.append(None)
            self._by_code[self._codes[domain]] = rows
            if self._nn is not None:
                self._nn[domain] = (np.full((16, 2), -np.inf), np.full((16, 2), -1, dtype=np.int64))
        if rows.n == len(rows.fids):
            rows.grow()
            if self._nn is not None:
                sims, fids = self._nn[domain]
                self._nn[domain] = (np.concatenate([sims, np.full_like(sims, -np.inf)]),
                                    np.concatenate([fids, np.full_like(fids, -1)]))
        fid = self._next
        self._next += 1
        i = rows.n
        rows.vecs[i] = row
        rows.fids[i] = fid
        rows.stamps[i] = fid
        rows.extra[i] = extra
        slot = self._take_slot()
        self._slot_code[slot], self._slot_row[slot] = self._codes[domain], i
        rows.slots[i] = slot
        row64 = row.astype(np.float64)
        rows.sum += row64
        if rows.p is not None:
            rows.p[i] = float(row64 @ rows.base)
            rows.drift += row64
        rows.n += 1
        self._where[event_id] = (domain, i)
        self._by_fid[fid] = event_id
        self._fid_of[event_id] = fid
        if self._nn is not None:
            self._neighbours_after_add(domain, i)
        if self._ivf is not None:
            self._ivf.add_with_ids(row.reshape(1, -1), np.array([slot], dtype=np.int64))
        elif len(self._where) >= self.approx_min:
            self._build_ivf()

    def remove(self, event_id: str) -> None:
        if event_id not in self._where:
            raise KeyError(f"event_id {event_id!r} is not indexed")
        domain, i = self._where.pop(event_id)
        fid = self._fid_of.pop(event_id)
        del self._by_fid[fid]
        rows = self._rows[domain]
        row64 = rows.vecs[i].astype(np.float64)
        if rows.first == rows.stamps[i]:
            rows.first = None
        last = rows.n - 1
        slot = int(rows.slots[i])
        self._free_slots.append(slot)
        if i != last:
            rows.vecs[i], rows.fids[i], rows.stamps[i], rows.slots[i], rows.extra[i] = (
                rows.vecs[last], rows.fids[last], rows.stamps[last], rows.slots[last], rows.extra[last])
            self._slot_row[rows.slots[i]] = i
            if rows.p is not None:
                rows.p[i] = rows.p[last]
            if self._nn is not None:
                sims, fids = self._nn[domain]
                sims[i], fids[i] = sims[last], fids[last]
            self._where[self._by_fid[int(rows.fids[i])]] = (domain, i)
        rows.n = last
        if self._nn is not None:
            sims, fids = self._nn[domain]
            sims[last], fids[last] = -np.inf, -1
        if self._ivf is not None:
            ids = np.array([slot], dtype=np.int64)
            self._ivf.remove_ids(faiss.IDSelectorArray(1, faiss.swig_ptr(ids)))
        if rows.n == 0:
            del self._rows[domain]
            self._by_code[self._codes[domain]] = None
            if self._nn is not None:
                del self._nn[domain]
        else:
            rows.sum -= row64
            if rows.drift is not None:
                rows.drift -= row64
            rows.removals += 1
            if rows.removals % self.RESUM_EVERY == 0:
                rows.sum = rows.vecs[: rows.n].astype(np.float64).sum(axis=0)
                if rows.p is not None:  # the cached dots stay valid; only their distance to the sum is re-measured
                    rows.drift = rows.sum - rows.base
        if self._nn is not None:
            self._neighbours_after_remove(fid)

    def refresh_dots(self, domain: str) -> _Rows:
        """Re-base the domain's cached dot products ``p[i] = vecs[i] . base`` on its current sum.

        One float32 BLAS pass over the rows (a float64 pass would first copy them to float64, about
        ten times the time at 10^4 rows); ``p_err`` bounds the rounding of every ``p[i]``:
        ``|fl(v . b) - v . b| <= gamma_d |v| |b|`` in any summation order (Higham, Accuracy and Stability
        of Numerical Algorithms, 3.1), plus ``u |v| |b|`` for rounding ``b`` to float32, with ``|v| <= 1.001``.
        ``add`` extends the cache in float64; ``remove`` keeps it. ``drift`` (``sum - base``) says how far
        the sum has moved since.
        """
        rows = self._rows[domain]
        n = rows.n
        rows.base = rows.sum.copy()
        rows.drift = np.zeros(self.dim)
        rows.p = np.empty(len(rows.fids))
        rows.p[:n] = rows.vecs[:n] @ rows.base.astype(np.float32)
        u = 2.0**-24
        gamma = self.dim * u / (1.0 - self.dim * u)
        rows.p_err = (gamma * (1.0 + u) + u) * (1.0 + _NORM_TOLERANCE) * float(np.linalg.norm(rows.base)) * (1.0 + 1e-9)
        return rows

    # -- the questions DomainIndex answers ------------------------------------------------

    def vectors(self, domain: str) -> tuple[list[str], np.ndarray]:
        rows = self._rows.get(domain)
        if rows is None:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return self.event_ids(rows.fids[: rows.n]), rows.vecs[: rows.n].copy()

    def domain_sum(self, domain: str) -> np.ndarray:
        rows = self._rows.get(domain)
        return np.zeros(self.dim) if rows is None else rows.sum

    def idd(self, vec: np.ndarray, domain: str) -> float:
        row = _as_unit_row(vec, self.dim, "vec")[0]
        rows = self._rows.get(domain)
        if rows is None:
            return idd_from_sum(row, np.zeros(self.dim), 0)
        return idd_from_sum(row, rows.sum, rows.n)

    def loo_idd(self, domain: str) -> dict[str, float]:
        ids, vecs = self.vectors(domain)
        if not ids:
            return {}
        return {e: float(v) for e, v in zip(ids, loo_idd(vecs, self._rows[domain].sum))}

    def features(self, vec: np.ndarray, domain: str) -> tuple[float, float]:
        """``(max_sim(vec)[0], idd(vec, domain))``, as :meth:`DomainIndex.features`."""
        return self.max_sim(vec)[0], self.idd(vec, domain)

    def max_sim(self, vec: np.ndarray, domain: str | None = None) -> tuple[float, str | None]:
        if domain is not None and domain not in self._rows:
            return -math.inf, None
        row = _as_unit_row(vec, self.dim, "vec")
        if self._ivf is not None and domain is None:  # the near-duplicate search of every offer: no detours
            sims, fids = self._ivf_search(row, 1)
            return (float(sims[0, 0]), self._by_fid[int(fids[0, 0])]) if fids[0, 0] >= 0 else (-math.inf, None)
        hits = self.search(row, 1, domain)[0]
        return (hits[0][1], hits[0][0]) if hits else (-math.inf, None)

    def nearest(self, vec: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.search(_as_unit_row(vec, self.dim, "vec"), k)[0]

    def search(self, queries: np.ndarray, k: int, domain: str | None = None) -> list[list[tuple[str, float]]]:
        """Up to ``k`` ``(event_id, cosine)`` per query row, best first (ties: the older row first)."""
        sims, fids = self.search_fids(queries, k, domain)
        return [[(self._by_fid[int(f)], float(s)) for s, f in zip(rs, rf) if f >= 0] for rs, rf in zip(sims, fids)]

    def search_fids(self, queries: np.ndarray, k: int, domain: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (m, {self.dim}), got {queries.shape}")
        if self._ivf is not None and domain is None:
            return self._ivf_search(queries, k)
        names = [domain] if domain is not None else list(self._rows)
        parts = [(self._rows[d].vecs[: self._rows[d].n] @ queries.T, self._rows[d].fids[: self._rows[d].n],
                  self._rows[d].stamps[: self._rows[d].n]) for d in names if d in self._rows]
        m = len(queries)
        if not parts:
            return np.full((m, k), -np.inf), np.full((m, k), -1, dtype=np.int64)
        sims = np.concatenate([p[0] for p in parts]).T.astype(np.float64)  # (m, n)
        fids = np.concatenate([p[1] for p in parts])
        stamps = np.concatenate([p[2] for p in parts])
        kk = min(k, sims.shape[1])
        out_s = np.full((m, k), -np.inf)
        out_f = np.full((m, k), -1, dtype=np.int64)
        for q in range(m):
            top = np.argpartition(-sims[q], kk - 1)[:kk] if kk < sims.shape[1] else np.arange(sims.shape[1])
            order = top[np.lexsort((stamps[top], -sims[q, top]))]
            out_s[q, :kk], out_f[q, :kk] = sims[q, order], fids[order]
        return out_s, out_f

    # -- the approximate index --------------------------------------------------------------

    def _build_ivf(self) -> None:
        vecs = np.concatenate([r.vecs[: r.n] for r in self._rows.values()])
        slots = np.concatenate([r.slots[: r.n] for r in self._rows.values()])
        nlist = int(min(1024, max(16, len(vecs) // 64)))
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.dim % PQ_DIMS == 0 and len(vecs) >= PQ_MIN_TRAIN:
            # 8-bit product-quantizer codes, one byte per PQ_DIMS dimensions: a scan reads a 32nd of
            # the float32 bytes and sums table lookups; the exact re-rank makes up for the coarser ranking.
            ivf = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.dim // PQ_DIMS, 8, faiss.METRIC_INNER_PRODUCT)
            ivf.pq.cp.seed = 1234
            ivf.pq.cp.niter = 10
        else:
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = 1234
        ivf.cp.niter = 10
        ivf.train(vecs)
        ivf.nprobe = NPROBE
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.add_with_ids(vecs, slots)
        self._quantizer = quantizer  # the IVF index does not own it
        self._ivf = ivf

    def _ivf_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF candidates (compressed codes), re-ranked by exact float32 inner products with the stored rows."""
        _, cand = self._ivf.search(queries, max(k, RERANK))  # slots
        out_s = np.full((len(queries), k), -np.inf)
        out_f = np.full((len(queries), k), -1, dtype=np.int64)
        for q, slots in enumerate(cand):
            slots = slots[slots >= 0]
            if not len(slots):
                continue
            codes, at = self._slot_code[slots], self._slot_row[slots]
            sims, fids = np.empty(len(slots)), np.empty(len(slots), dtype=np.int64)
            for code in set(codes.tolist()):  # the lists probed hold one to a few domains
                hit = codes == code
                rows = self._by_code[code]
                sims[hit] = rows.vecs[at[hit]] @ queries[q]
                fids[hit] = rows.fids[at[hit]]
            order = np.lexsort((fids, -sims))[:k]  # ties: the older (smaller id) first
            out_s[q, : len(order)], out_f[q, : len(order)] = sims[order], fids[order]
        return out_s, out_f

    def _take_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        slot = self._slots_used
        self._slots_used += 1
        if slot == len(self._slot_code):
            self._slot_code = np.concatenate([self._slot_code, np.empty_like(self._slot_code)])
            self._slot_row = np.concatenate([self._slot_row, np.empty_like(self._slot_row)])
        return slot

    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    # -- nearest-neighbour cache ------------------------------------------------------------

    def neighbours(self, domain: str) -> tuple[np.ndarray, np.ndarray]:
        """The domain's rows' two nearest other rows: similarities (n, 2), -inf if none, and fids (-1 if none)."""
        sims, fids = self._nn[domain]
        n = self._rows[domain].n
        return sims[:n], fids[:n]

    def _neighbours_after_add(self, domain: str, i: int) -> None:
        row = self._rows[domain].vecs[i]
        fid = int(self._rows[domain].fids[i])
        if self._ivf is None:
            # Exact: every existing row is compared with the new one.
            best_s, best_f, best_t = [], [], []
            for name, rows in self._rows.items():
                n = rows.n - (1 if name == domain else 0)  # the new row is the domain's last
                if n <= 0:
                    continue
                s = (rows.vecs[:n] @ row).astype(np.float64)
                self._offer_neighbour(name, np.arange(n), s, fid)
                best_s.append(s), best_f.append(rows.fids[:n]), best_t.append(rows.stamps[:n])
            if best_s:
                s, f, t = np.concatenate(best_s), np.concatenate(best_f), np.concatenate(best_t)
                top = np.lexsort((t, -s))[:2]
                sims, fids = self._nn[domain]
                sims[i] = -np.inf
                fids[i] = -1
                sims[i, : len(top)], fids[i, : len(top)] = s[top], f[top]
            return
        hs, hf = self._ivf_search(row.reshape(1, -1), NEIGHBOUR_HITS + 1)
        keep = (hf[0] >= 0) & (hf[0] != fid)
        hs, hf = hs[0][keep].astype(np.float64), hf[0][keep]
        for s, f in zip(hs, hf):
            d, j = self._where[self._by_fid[int(f)]]
            self._offer_neighbour(d, np.array([j]), np.array([s]), fid)
        sims, fids = self._nn[domain]
        sims[i], fids[i] = -np.inf, -1
        sims[i, : min(2, len(hs))], fids[i, : min(2, len(hs))] = hs[:2], hf[:2]

    def _offer_neighbour(self, domain: str, idx: np.ndarray, s: np.ndarray, fid: int) -> None:
        sims, fids = self._nn[domain]
        first = s > sims[idx, 0]  # strict: an equal, older neighbour stays first
        second = ~first & (s > sims[idx, 1])
        a = idx[first]
        sims[a, 1], fids[a, 1] = sims[a, 0], fids[a, 0]
        sims[a, 0], fids[a, 0] = s[first], fid
        b = idx[second]
        sims[b, 1], fids[b, 1] = s[second], fid

    def _neighbours_after_remove(self, fid: int) -> None:
        for name, rows in self._rows.items():
            sims, fids = self._nn[name]
            hit = np.flatnonzero((fids[: rows.n] == fid).any(axis=1))
            if not len(hit):
                continue
            hs, hf = self.search_fids(rows.vecs[hit], 3)
            for r, row_s, row_f in zip(hit, hs, hf):
                own = rows.fids[r]
                keep = (row_f >= 0) & (row_f != own)
                s2, f2 = row_s[keep][:2], row_f[keep][:2]
                sims[r], fids[r] = -np.inf, -1
                sims[r, : len(s2)], fids[r, : len(f2)] = s2, f2


NPROBE = 8
"""Inverted lists an IVF search visits (``nlist`` is a 64th of the vectors held at training, at most 1,024)."""

RERANK = 16
"""IVF hits re-ranked exactly per query: the codes only choose candidates, similarities are exact."""

PQ_DIMS = 8
"""Dimensions per byte of the IVF's product-quantizer codes (``dim / PQ_DIMS`` sub-quantizers of 256 centroids);
a ``dim`` that ``PQ_DIMS`` does not divide gets float16 codes instead."""

PQ_MIN_TRAIN = 4096
"""Fewest vectors the product quantizer is trained on (256 centroids per sub-quantizer); fewer: float16 codes."""

NEIGHBOUR_HITS = 16
"""IVF neighbours of a new vector whose nearest-neighbour cache it may enter, above :data:`APPROX_MIN`."""


def _as_unit_row(vec: np.ndarray, dim: int, name: str) -> np.ndarray:
    row = np.ascontiguousarray(vec, dtype=np.float32).reshape(1, -1)
    if row.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} values (the index dim), got {row.shape[1]}")
    norm = math.sqrt(float(np.dot(row[0], row[0])))
    if abs(norm - 1.0) > _NORM_TOLERANCE:
        raise ValueError(f"{name} must be L2-normalised (norm 1), got norm {norm:.4f}; divide it by its norm first")
    return row
