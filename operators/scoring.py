"""Stateless scoring of one embedded event: EOE and DSS (IDD needs the buffer).

>>> from operators.events import Event
>>> scorer = Scorer({"medicine": frozenset({"fever", "doctor"})})
>>> se = scorer.score(Event("e1", "u1", 0, "my fever is back, doctor"), np.array([3.0, 4.0]), n_tokens=6)
>>> se.domain, round(se.dss, 2), se.embedding.tolist()
('medicine', 0.4, [0.6000000238418579, 0.800000011920929])
"""

from __future__ import annotations

from collections.abc import Mapping
import time
from dataclasses import dataclass

import numpy as np

from operators.events import Event
from operators.sample import Candidate
from operators.scores import DomainScorer, eoe


@dataclass(frozen=True)
class ScoredEvent:
    """An event with its normalised embedding and its buffer-independent scores."""

    event: Event
    embedding: np.ndarray
    n_tokens: int
    eoe: float
    dss: float
    domain: str
    embed_seconds: float = 0.0
    score_seconds: float = 0.0

    def candidate(self, seq: int) -> Candidate:
        return Candidate(self.event.event_id, seq, self.embedding, self.eoe, self.dss, self.domain)


class Scorer:
    """Computes EOE on the raw embedding and DSS on the text, once per event."""

    def __init__(self, lexicons: Mapping[str, frozenset[str]], eoe_mode: str = "bins", eoe_bins: int = 100):
        self.lexicons = lexicons
        self.eoe_mode = eoe_mode
        self.eoe_bins = eoe_bins
        self._domains = DomainScorer(lexicons)

    def score(
        self,
        event: Event,
        raw_embedding: np.ndarray,
        n_tokens: int,
        embed_seconds: float = 0.0,
        center: np.ndarray | None = None,
    ) -> ScoredEvent:
        """EOE reads the raw embedding; the stored direction is ``raw - center``, normalised.

        An LM's last-token states share a large common component (mean pairwise
        cosine ~0.73 for unrelated texts with SmolLM2); subtracting a fixed
        calibration mean before normalising makes cosine, and so IDD and the
        near-duplicate test, about content rather than that shared offset.
        """
        start = time.perf_counter()
        raw = np.asarray(raw_embedding, dtype=np.float32)
        direction = raw if center is None else raw - np.asarray(center, dtype=np.float32)
        norm = float(np.sqrt(direction.dot(direction)))  # what np.linalg.norm computes for a 1-D float32 vector
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"embedding of event {event.event_id!r} has norm {norm}; the embedder produced a degenerate vector")
        entropy = eoe(raw, n_tokens, bins=self.eoe_bins, mode=self.eoe_mode)
        domain = self._domains.score(event.text)
        elapsed = time.perf_counter() - start
        return ScoredEvent(event, direction / norm, n_tokens, entropy, domain.dss, domain.domain, embed_seconds, elapsed)
