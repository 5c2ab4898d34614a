"""Synthetic embeddings with a realistic domain spread, for the buffer benchmarks.

Texts are real ShareGPT events (prompt + response, as the flow embeds them), so DSS, the
dominant domain and the tokenizer cost are real; only the embedding is synthetic. Each text's
raw vector is drawn around a fixed random unit centroid of its dominant domain (one per
shipped lexicon domain, plus ``general``)::

    raw = 0.6 * centroid[domain] + noise,   noise ~ N(0, 0.8^2 / d) per coordinate

so two texts of one domain have cosine ~0.36 on average and texts of different domains ~0
(an LM's centered last-token states: unrelated texts ~0.07, a paraphrase pair ~0.7, see
``models/embed.py``). No pair comes near the 0.95 near-duplicate threshold, so every offer
takes the full decision path rather than the cheap duplicate exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flows.replay import replay_events
from operators.events import Event, parse_event
from operators.lexicons import load_lexicons
from operators.sample import GENERAL_DOMAIN, Candidate
from operators.scores import DomainScorer, eoe

CENTROID_WEIGHT = 0.6
NOISE_NORM = 0.8


def real_events(limit: int, seed: int = 0) -> list[Event]:
    """Valid ShareGPT events, in replay order (the few invalid records are skipped)."""
    events = [parse_event(r) for r in replay_events("sharegpt", n_users=1, split="round_robin", limit=limit, seed=seed)]
    return [e for e in events if isinstance(e, Event)]


@dataclass
class DomainSpace:
    """Per-domain centroids in ``dim`` dimensions and a generator of raw vectors around them."""

    dim: int
    domains: list[str]
    centroids: np.ndarray  # (n_domains, dim), unit rows
    seed: int

    @classmethod
    def make(cls, dim: int, seed: int = 0) -> "DomainSpace":
        domains = sorted(load_lexicons()) + [GENERAL_DOMAIN]
        rng = np.random.default_rng(seed)
        c = rng.standard_normal((len(domains), dim))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        return cls(dim, domains, c.astype(np.float32), seed)

    def raw(self, domains: list[str], rng: np.random.Generator) -> np.ndarray:
        """Raw (unnormalised) float32 vectors, one per domain name."""
        rows = np.array([self.domains.index(d) for d in domains])
        noise = rng.standard_normal((len(rows), self.dim)) * (NOISE_NORM / math.sqrt(self.dim))
        return (CENTROID_WEIGHT * self.centroids[rows] + noise).astype(np.float32)


def text_domains(events: list[Event]) -> tuple[list[str], list[float]]:
    """Dominant domain and DSS of each event's text, with the shipped lexicons."""
    scorer = DomainScorer(load_lexicons())
    scores = [scorer.score(e.text) for e in events]
    return [s.domain for s in scores], [s.dss for s in scores]


def n_tokens_estimate(text: str, max_tokens: int = 512) -> int:
    """LM token count stand-in (~4 characters a token, capped as the embedder truncates)."""
    return max(1, min(max_tokens, round(len(text) / 4)))


def prefill_candidates(n: int, space: DomainSpace, domains: list[str], dss: list[float], seed: int) -> list[Candidate]:
    """``n`` candidates with real (domain, DSS) pairs cycled from the pool and synthetic embeddings.

    EOE is computed on each raw vector exactly as the scorer does (mode "bins", 100 bins).
    """
    rng = np.random.default_rng(seed)
    picks = [i % len(domains) for i in range(n)]
    out: list[Candidate] = []
    chunk = 10_000
    for start in range(0, n, chunk):
        idx = picks[start : start + chunk]
        raw = space.raw([domains[i] for i in idx], rng)
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for k, i in enumerate(idx):
            seq = start + k
            out.append(Candidate(f"pre-{seq}", seq, unit[k], eoe(raw[k], 1, bins=100, mode="bins"), dss[i], domains[i]))
    return out
