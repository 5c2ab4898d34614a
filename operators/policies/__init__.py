"""Buffer policies: which of a user's conversations to keep, one offer at a time.

>>> sorted(POLICIES)
['deita', 'fifo', 'ifd', 'kcenter', 'random', 'reservoir', 'sdss', 'uds']
>>> make_policy("fifo", capacity=8)
FIFO(capacity=8, seed=0)
"""

from __future__ import annotations

from typing import Any

from operators.policies.base import BufferPolicy
from operators.policies.deita import Deita
from operators.policies.fifo import FIFO
from operators.policies.ifd import IFD
from operators.policies.kcenter import KCenter
from operators.policies.random import RandomReplacement
from operators.policies.reservoir import Reservoir
from operators.policies.sdss import SDSS
from operators.policies.uds import UDS

POLICIES: dict[str, type[BufferPolicy]] = {
    cls.name: cls for cls in (SDSS, RandomReplacement, FIFO, Reservoir, KCenter, IFD, UDS, Deita)
}
"""Every policy by name. ``ifd`` and ``uds`` read features (``Candidate.ifd``, ``.uncertainty``) that the
benchmark computes and the product's stream does not yet, so operators/config.py does not offer them;
``deita`` is a candidate rule of the selection benchmark, offered once it wins there."""


def make_policy(name: str, **params: Any) -> BufferPolicy:
    """A fresh policy by registry name; ``params`` go to its constructor."""
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}")
    return POLICIES[name](**params)


__all__ = [
    "POLICIES", "BufferPolicy", "Deita", "FIFO", "IFD", "KCenter", "RandomReplacement", "Reservoir", "SDSS", "UDS",
    "make_policy",
]
