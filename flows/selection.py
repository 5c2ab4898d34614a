"""The selection stream, shared by the replay and Kafka flows.

    raw payload ─> parse ─> embed+score (batched) ─> key by user ─> select (per-user buffer)
                     └─> dead letters <───────────────────────────────┘ (duplicates)

Every step calls into ``operators/`` (pure logic) or ``models/`` (torch);
nothing here decides anything about a sample.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from operators import metrics
from operators.config import Settings
from operators.events import Event, Rejected, parse_event
from operators.lexicons import load_lexicons
from operators.policies import make_policy
from operators.scoring import ScoredEvent, Scorer
from operators.state import Output, UserState


@dataclass
class Components:
    """What the stream needs that is expensive to build: built once per process."""

    settings: Settings
    embedder: Any
    scorer: Scorer


def build_components(settings: Settings) -> Components:
    from models.embed import EmbedConfig, make_embedder
    from models.lm import LMConfig, load_lm

    model, tokenizer = load_lm(LMConfig(model=settings.model.lm, cache_dir=settings.model.cache_dir, seed=settings.seed))
    embed_cfg = EmbedConfig(kind=settings.embed.kind, max_tokens=settings.embed.max_tokens, batch_size=settings.embed.batch_size)
    embedder = make_embedder(embed_cfg, model, tokenizer)
    scorer = Scorer(load_lexicons(settings.scoring.lexicons), settings.scoring.eoe_mode, settings.scoring.eoe_bins)
    return Components(settings, embedder, scorer)


def embed_and_score(events: list[Event], *, embedder: Any, scorer: Scorer) -> list[ScoredEvent]:
    """Embed a batch of events in one call (the costly part), then score each."""
    start = time.perf_counter()
    embedded = embedder.embed([e.text for e in events])
    elapsed = time.perf_counter() - start
    metrics.EMBED_SECONDS.observe(elapsed)
    metrics.EMBED_EVENTS.inc(len(events))
    share = elapsed / len(events)
    return [scorer.score(e, v, n, share) for e, v, n in zip(events, embedded.vectors, embedded.n_tokens)]


def user_seed(seed: int, user_id: str) -> int:
    """A per-user seed: users differ from each other, runs with the same seed do not."""
    return zlib.crc32(f"{seed}:{user_id}".encode()) & 0x7FFFFFFF


class SelectLogic(StatefulLogic):
    """Bytewax wrapper around one user's :class:`UserState`."""

    def __init__(self, settings: Settings, resume: dict | None):
        self.settings = settings
        self.state = UserState.from_snapshot(resume) if resume is not None else None

    def on_item(self, value: ScoredEvent) -> tuple[list[Output], bool]:
        if self.state is None:
            user = value.event.user_id
            b = self.settings.buffer
            params: dict[str, Any] = {"capacity": b.capacity, "seed": user_seed(self.settings.seed, user)}
            if b.policy == "sdss":
                params.update(dup_threshold=b.dup_threshold, weights=b.weights)
            self.state = UserState(user, make_policy(b.policy, **params))
            metrics.USERS.inc()
        return self.state.on_event(value), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        return [Output("snapshot", self.state.buffer_view())], StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return self.state.snapshot()


@dataclass
class SelectionOutputs:
    decisions: Stream  # dict rows of the decision log
    dead_letters: Stream  # dicts: reason, detail, raw, ...
    snapshots: Stream  # dicts: one user's buffer view


def select(raw: Stream, components: Components, progress: Callable[[], None] | None = None) -> SelectionOutputs:
    """Wire the selection steps onto a stream of raw payloads (bytes, str or dict)."""
    s = components.settings
    parsed = op.map("parse", raw, partial(parse_event, max_chars=s.max_chars))  # Event | Rejected
    checked = op.branch("validate", parsed, lambda p: isinstance(p, Event))
    scored = op.flat_map_batch(
        "embed", checked.trues, partial(embed_and_score, embedder=components.embedder, scorer=components.scorer)
    )  # ScoredEvent
    keyed = op.key_on("key", scored, lambda se: se.event.user_id)  # (user_id, ScoredEvent)
    selected = op.stateful("select", keyed, partial(SelectLogic, s))  # (user_id, Output)
    outputs = op.key_rm("unkey", selected)  # Output
    decisions = op.filter_map("decisions", outputs, lambda o: o.payload if o.kind == "decision" else None)
    duplicates = op.filter_map("duplicates", outputs, lambda o: o.payload if o.kind == "dead_letter" else None)
    snapshots = op.filter_map("snapshots", outputs, lambda o: o.payload if o.kind == "snapshot" else None)
    invalid = op.map("describe", checked.falses, Rejected.to_dict)  # dict
    dead = op.merge("dead", invalid, duplicates)  # dict
    op.inspect("count_decisions", decisions, lambda _step, row: _counted(metrics.record_decision, row, progress))
    op.inspect("count_dead", dead, lambda _step, d: _counted(lambda x: metrics.record_dead_letter(x["reason"]), d, progress))
    return SelectionOutputs(decisions, dead, snapshots)


def _counted(record: Callable[[Any], None], item: Any, progress: Callable[[], None] | None) -> None:
    record(item)
    if progress is not None:
        progress()
