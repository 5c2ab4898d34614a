"""Replay a file or a bundled dataset through the selection stream.

    python -m bytewax.run flows.replay_flow:flow      # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune replay [PATH] [options]                  # the same flow from the CLI
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.replay import replay_events
from flows.replay_source import ReplaySource
from flows.selection import Components, build_components, select
from flows.sinks import DecisionLogSink, JsonlSink, SnapshotSink
from operators.config import Settings, load_settings


def build_flow(settings: Settings, components: Components | None = None, progress: Callable[[], None] | None = None) -> Dataflow:
    components = components or build_components(settings)
    src, out = settings.source, settings.output.dir
    records = partial(
        replay_events,
        src.path if src.path is not None else src.dataset,
        n_users=src.users,
        split=src.split,
        limit=src.limit,
        seed=settings.seed,
    )
    flow = Dataflow("edgetune_replay")
    raw = op.input("read", flow, ReplaySource(records, rate=src.rate))  # bytes | dict
    selection = select(raw, components, progress)
    op.output("log", op.key_on("log_key", selection.decisions, lambda _: "decisions"), DecisionLogSink(out / "decisions"))
    op.output("dead_letter", selection.dead_letters, JsonlSink(out / "dead_letters.jsonl"))
    op.output("snapshot", selection.snapshots, SnapshotSink(out / "buffers"))
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.replay_flow:flow` builds the flow (and loads
    # the model) only when asked, so importing this module stays cheap.
    if name == "flow":
        return build_flow(load_settings(os.environ.get("EDGETUNE_CONFIG")))
    raise AttributeError(name)
