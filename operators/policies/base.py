"""What every buffer policy shares: the buffer, its index, the offer template and snapshots."""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from operators import index as _index_module
from operators.index import ArrayIndex, DomainIndex
from operators.sample import OUTCOMES, REOFFERED, Candidate, Decision


class BufferPolicy(ABC):
    """A bounded buffer of one user's candidates that decides, one offer at a time, what to keep.

    ``offer`` is a template: it fills the candidate's ``idd`` (against buffered samples of
    its domain) and ``max_sim`` (against all buffered samples), asks the subclass's
    ``_choose`` what to do, then applies it. Subclasses only decide; they never touch the
    buffer, so the capacity and consistency checks live in one place.

    The constructor only stores its arguments plus empty state, so ``params()`` rebuilds an
    equivalent fresh policy and ``snapshot()`` is plain picklable data. Randomness comes
    only from ``seed``.
    """

    name: ClassVar[str]

    def __init__(self, capacity: int = 64, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(
                f"capacity must be an int >= 1 (samples kept per user), got {capacity!r}; e.g. capacity=64"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}; e.g. seed=0")
        self.capacity = capacity
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._samples: dict[str, Candidate] = {}  # arrival order: dicts keep insertion order
        self._index: DomainIndex | ArrayIndex | None = None  # built on first offer, when the embedding size is known
        self._counts = {outcome: 0 for outcome in OUTCOMES}

    # -- the decision, supplied by each policy ------------------------------------------

    @abstractmethod
    def _choose(self, c: Candidate) -> tuple[str, str | None, float]:
        """Return ``(outcome, victim event_id or None, score)`` for ``c``; ``c.idd``/``c.max_sim`` are set."""

    def _state(self) -> dict[str, Any]:
        """Policy-specific state beyond the buffer and the rng, as plain data."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``_state``."""

    def _buffer_changed(self) -> None:
        """Called after every change to the buffer, for policies that cache derived values."""

    # -- verbs ---------------------------------------------------------------------------

    def offer(self, c: Candidate) -> Decision:
        if self._index is None:
            self._index = self._new_index(int(np.asarray(c.embedding).shape[-1]))
        # The offered candidate is not touched: the buffer keeps its own copy, with the two
        # features that depend on what the buffer holds at this offer.
        max_sim, idd = self._index.features(c.embedding, c.domain)
        c = c.with_features(idd, max_sim)
        if c.event_id in self._samples:
            # A re-offered id (at-least-once delivery) must not be kept twice or change state.
            outcome, victim, score = REOFFERED, None, float("nan")
        else:
            outcome, victim, score = self._choose(c)
            self._check_choice(c, outcome, victim)
            if victim is not None:
                self._discard(victim)
            if outcome in ("admitted", "replaced"):
                self._insert(c)
            if victim is not None or outcome in ("admitted", "replaced"):
                self._buffer_changed()
        self._counts[outcome] += 1
        return Decision(c.event_id, outcome, victim, idd=c.idd, max_sim=c.max_sim, score=score)

    def samples(self) -> list[Candidate]:
        """Buffered candidates in arrival order (``idd``/``max_sim`` as of their offer).

        These are the buffered objects themselves, not copies: treat them as read-only.
        """
        return list(self._samples.values())

    def remove(self, event_id: str) -> bool:
        """Drop a buffered sample (e.g. the user deleted it); ``False`` if it was not buffered."""
        if event_id not in self._samples:
            return False
        self._discard(event_id)
        self._buffer_changed()
        return True

    def counts(self) -> dict[str, int]:
        """How many offers ended in each outcome so far."""
        return dict(self._counts)

    def params(self) -> dict[str, Any]:
        """Constructor arguments, read back by name: ``type(p)(**p.params())`` is a fresh clone."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: getattr(self, n) for n in names}

    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._samples

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain picklable data from which ``from_snapshot`` rebuilds an identical policy."""
        return {
            "name": self.name,
            "params": self.params(),
            "samples": [_candidate_to_dict(c) for c in self._samples.values()],
            "rng": self._rng.bit_generator.state,
            "counts": dict(self._counts),
            "state": self._state(),
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> BufferPolicy:
        """Rebuild a policy; it makes exactly the decisions the original would have made."""
        klass = cls._class_for(snap["name"])
        policy = klass(**snap["params"])
        for fields in snap["samples"]:
            policy._insert(Candidate(**{**fields, "embedding": np.array(fields["embedding"])}))
        policy._rng.bit_generator.state = snap["rng"]
        policy._counts = dict(snap["counts"])
        policy._load_state(snap["state"])
        return policy

    @classmethod
    def _class_for(cls, name: str) -> type[BufferPolicy]:
        if getattr(cls, "name", None) == name:
            return cls
        from operators.policies import POLICIES  # late import: the registry imports this module

        if name not in POLICIES or not issubclass(POLICIES[name], cls):
            raise ValueError(
                f"snapshot is of policy {name!r}, which {cls.__name__} cannot restore; valid: {sorted(POLICIES)}"
            )
        return POLICIES[name]

    # -- buffer mutation, kept in one place so the dict and the index never disagree ----

    def _insert(self, c: Candidate) -> None:
        if self._index is None:
            self._index = self._new_index(int(np.asarray(c.embedding).shape[-1]))
        if self._large:
            self._index.add(c.event_id, c.domain, c.embedding, (c.eoe, c.dss))
        else:
            self._index.add(c.event_id, c.domain, c.embedding)
        self._samples[c.event_id] = c

    _needs_neighbours: ClassVar[bool] = False  # policies that read each sample's nearest neighbours

    def _new_index(self, dim: int) -> DomainIndex | ArrayIndex:
        """The exact FAISS ``DomainIndex`` up to ``operators.index.LARGE_CAPACITY``, an ``ArrayIndex`` above it."""
        if self.capacity <= _index_module.LARGE_CAPACITY:
            return DomainIndex(dim)
        return ArrayIndex(dim, n_extra=2, neighbours=self._needs_neighbours)

    @property
    def _large(self) -> bool:
        """Whether this policy runs on the large-capacity path (its index is an ``ArrayIndex``)."""
        return isinstance(self._index, ArrayIndex)

    def _discard(self, event_id: str) -> None:
        del self._samples[event_id]
        self._index.remove(event_id)

    def _check_choice(self, c: Candidate, outcome: str, victim: str | None) -> None:
        # These are bugs in a policy, not bad input: fail loudly rather than corrupt the buffer.
        full = len(self._samples) >= self.capacity
        ok = (
            (outcome == "admitted" and victim is None and not full)
            or (outcome == "replaced" and victim in self._samples)
            or (outcome in ("rejected", "duplicate") and victim is None)
        )
        if not ok:
            raise RuntimeError(
                f"{type(self).__name__}._choose returned ({outcome!r}, {victim!r}) for {c.event_id!r} "
                f"with {len(self._samples)}/{self.capacity} buffered"
            )


def _candidate_to_dict(c: Candidate) -> dict[str, Any]:
    fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    fields["embedding"] = np.array(c.embedding, copy=True)  # same dtype: restored arithmetic is identical
    return fields
