"""Replay a file or a bundled dataset through the selection stream.

    python -m bytewax.run flows.replay_flow:flow      # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune replay [PATH] [options]                  # the same flow from the CLI
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.replay import replay_events
from flows.replay_source import ReplaySource
from flows.selection import Components, build_components, select, write_outputs
from flows.trainer import trainer_for
from operators.config import Settings, load_settings
from operators.oracle import tag_events, with_oracle_answers


def replay_items(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The ``(channel, payload)`` items a replay feeds the stream, answers included in oracle mode."""
    src = settings.source
    records = replay_events(
        src.path if src.path is not None else src.dataset,
        n_users=src.users,
        split=src.split,
        limit=src.limit,
        seed=settings.seed,
    )
    if settings.annotation.replay_answers == "oracle":
        return with_oracle_answers(records, settings.annotation.answer_delay_events)
    return tag_events(records)


def build_flow(
    settings: Settings,
    components: Components | None = None,
    progress: Callable[[], None] | None = None,
    trainer_sink: Any | None = None,
) -> Dataflow:
    components = components or build_components(settings)
    flow = Dataflow("edgetune_replay")
    items = op.input("read", flow, ReplaySource(lambda: replay_items(settings), rate=settings.source.rate))  # (channel, payload)
    write_outputs(select(items, settings, components, progress), settings, trainer_sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.replay_flow:flow` builds the flow (and loads
    # the model) only when asked, so importing this module stays cheap.
    if name == "flow":
        settings = load_settings(os.environ.get("EDGETUNE_CONFIG"))
        components = build_components(settings)
        return build_flow(settings, components, trainer_sink=trainer_for(settings, components))
    raise AttributeError(name)
