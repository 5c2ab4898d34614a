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


OUTCOMES = ("admitted", "replaced", "rejected", "duplicate")
"""``admitted``: took a free slot; ``replaced``: evicted another sample;
``rejected``: not kept; ``duplicate``: not kept because it nearly copies a buffered sample."""


@dataclass(frozen=True)
class Decision:
    """What a policy did with one candidate."""

    event_id: str
    outcome: str
    evicted: str | None = None
    idd: float = math.nan
    max_sim: float = math.nan
    score: float = math.nan

    @property
    def admitted(self) -> bool:
        return self.outcome in ("admitted", "replaced")
