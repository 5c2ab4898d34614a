"""The unit every buffer policy handles: one scored event, and what a policy decided about it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

GENERAL_DOMAIN = "general"
"""Dominant domain of a text that matches no lexicon word."""


@dataclass
class Candidate:
    """A scored event offered to a user's buffer.

    ``embedding`` is L2-normalised float32; ``idd`` and ``max_sim`` depend on what the
    buffer holds at offer time: a policy fills them in its own copy (the buffered sample,
    and the ``Decision``) and leaves the offered candidate as it was.
    ``ifd`` and ``uncertainty`` are optional features computed elsewhere with the LM,
    read only by the ``ifd`` and ``uds`` policies; nan when not computed.

    >>> c = Candidate("e1", 0, np.array([1.0, 0.0], dtype=np.float32), eoe=0.5, dss=0.1, domain="medicine")
    >>> c.domain, math.isnan(c.idd), math.isnan(c.ifd)
    ('medicine', True, True)
    """

    event_id: str
    seq: int
    embedding: np.ndarray
    eoe: float
    dss: float
    domain: str = GENERAL_DOMAIN
    idd: float = field(default=math.nan)
    max_sim: float = field(default=math.nan)
    ifd: float = field(default=math.nan)  # loss(answer | prompt) / loss(answer), see policies/ifd.py
    uncertainty: float = field(default=math.nan)  # prompt-logit nuclear norm per token, see policies/uds.py

    def with_features(self, idd: float, max_sim: float) -> Candidate:
        """A copy with the two buffer-dependent features set (``dataclasses.replace`` without its
        per-field machinery: every offer makes one).

        >>> c = Candidate("e1", 0, np.array([1.0, 0.0], dtype=np.float32), eoe=0.5, dss=0.1)
        >>> d = c.with_features(0.25, 0.75)
        >>> d.idd, d.max_sim, d.eoe, d.embedding is c.embedding, math.isnan(c.idd)
        (0.25, 0.75, 0.5, True, True)
        """
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.idd, copy.max_sim = idd, max_sim
        return copy


NEAR_COPY = "duplicate"
"""Outcome of a candidate that nearly copies a buffered sample (sdss: cosine >= ``dup_threshold``)."""

REOFFERED = "duplicate"
"""Outcome of a candidate whose event id is already buffered (a replay reaching the policy directly)."""

OUTCOMES = ("admitted", "replaced", "rejected", "duplicate")
"""``admitted``: took a free slot; ``replaced``: evicted another sample; ``rejected``: not kept;
``duplicate``: not kept, and not counted as an offer by the policy, for one of two reasons.

"Duplicate" means three different things in edgetune, under three names in the code; the
logged values stay as they were, so decision logs and dead letters compare across versions:

* a **repeated event id** (:data:`operators.repeats.REPEATED_EVENT`, the dead-letter reason
  ``duplicate_event``): the user's :class:`operators.repeats.RepeatGuard` saw the id among
  their recent ids, or buffered; the event never reaches the policy or the decision log;
* a **re-offered id** (:data:`REOFFERED`, outcome ``duplicate``): a candidate whose event id
  the policy already buffers; ``BufferPolicy.offer`` changes nothing. In the flow the guard
  catches these first, so this outcome never reaches the decision log from there;
* a **near copy** (:data:`NEAR_COPY`, outcome ``duplicate``): sdss leaves out a candidate whose
  embedding is within ``dup_threshold`` cosine of a buffered one. In the decision log,
  ``duplicate`` always has this meaning.
"""


@dataclass(frozen=True)
class Decision:
    """What a policy did with one candidate.

    ``outcome`` is one of :data:`OUTCOMES`; ``duplicate`` is a near copy (:data:`NEAR_COPY`) or an
    id already buffered (:data:`REOFFERED`), never a repeated event id (the guard's, see ``OUTCOMES``).
    ``idd`` and ``max_sim`` are the candidate's as of this offer; ``score`` is the policy's (nan if none).
    """

    event_id: str
    outcome: str
    evicted: str | None = None
    idd: float = math.nan
    max_sim: float = math.nan
    score: float = math.nan

    @property
    def admitted(self) -> bool:
        return self.outcome in ("admitted", "replaced")
