"""Stateless scoring of one embedded event: EOE and DSS (IDD needs the buffer).

>>> from operators.events import Event
>>> scorer = Scorer({"medicine": frozenset({"fever", "doctor"})})
>>> se = scorer.score(Event("e1", "u1", 0, "my fever is back, doctor"), np.array([3.0, 4.0]), n_tokens=6)
>>> se.domain, round(se.dss, 2), se.embedding.tolist()
('medicine', 0.4, [0.6000000238418579, 0.800000011920929])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import time
from dataclasses import dataclass

import numpy as np

from operators.events import Event
from operators.sample import Candidate
from operators.scores import DomainScorer, eoe_batch


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
        raw = np.asarray(raw_embedding)
        if raw.ndim != 1:
            raise ValueError(f"embedding of event {event.event_id!r} has shape {raw.shape}: need one vector; use score_batch")
        return self.score_batch([event], raw[None, :], [n_tokens], embed_seconds, center)[0]

    def score_batch(
        self,
        events: Sequence[Event],
        raw_embeddings: np.ndarray,
        n_tokens: Sequence[int],
        embed_seconds: float = 0.0,
        center: np.ndarray | None = None,
    ) -> list[ScoredEvent]:
        """:meth:`score` of each event of an embedded batch (row ``i`` is event ``i``'s embedding), the
        same values; EOE's histograms are computed for the whole batch at once.

        >>> scorer = Scorer({"medicine": frozenset({"fever"})})
        >>> batch = scorer.score_batch([Event("a", "u", 0, "fever"), Event("b", "u", 0, "hi")],
        ...                            np.array([[3.0, 4.0], [1.0, 0.0]]), [1, 1])
        >>> [(se.domain, se.dss) for se in batch]
        [('medicine', 1.0), ('general', 0.0)]
        """
        start = time.perf_counter()
        raws = np.asarray(raw_embeddings, dtype=np.float32)
        if raws.ndim != 2 or len(raws) != len(events) or len(n_tokens) != len(events):
            raise ValueError(
                f"{len(events)} events need as many embedding rows and token counts, got shape {raws.shape} "
                f"and {len(n_tokens)} counts"
            )
        directions = raws if center is None else raws - np.asarray(center, dtype=np.float32)
        # Row by row, what np.linalg.norm computes for a float32 vector (a float32 dot, then its root).
        norms = np.sqrt(np.array([d.dot(d) for d in directions], dtype=np.float32))
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"embedding of event {events[i].event_id!r} has norm {float(norms[i])}; "
                             "the embedder produced a degenerate vector")
        units = [d / n for d, n in zip(directions, norms)]  # one array each: a buffered sample must not pin its batch
        entropies = eoe_batch(raws, list(n_tokens), bins=self.eoe_bins, mode=self.eoe_mode)
        domains = [self._domains.score(event.text) for event in events]
        share = (time.perf_counter() - start) / max(len(events), 1)
        return [ScoredEvent(e, u, n, h, d.dss, d.domain, embed_seconds, share)
                for e, u, n, h, d in zip(events, units, n_tokens, entropies, domains)]
