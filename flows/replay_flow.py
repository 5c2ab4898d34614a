"""Replay a file or a bundled dataset through the selection stream.

    python -m bytewax.run flows.replay_flow:flow      # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune replay [PATH] [options]                  # the same flow from the CLI
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.deadletters import json_line
from flows.replay import replay_events
from flows.replay_source import ReplaySource
from flows.selection import Components, build_components, flow_from_environment, select, write_outputs
from operators.config import Settings
from operators.files import atomic_write, private_mkdir
from operators.heldout import is_heldout
from operators.oracle import tag_events, with_oracle_answers


def replay_records(settings: Settings) -> Iterator[Any]:
    """Every record of the configured replay, held-out ones included."""
    src = settings.source
    return replay_events(
        src.path if src.path is not None else src.dataset,
        n_users=src.users,
        split=src.split,
        limit=src.limit,
        seed=settings.seed,
    )


def write_heldout(settings: Settings) -> int:
    """Write the replay's held-out events to ``<out>/heldout.jsonl``; returns how many."""
    fraction = settings.source.heldout
    path = settings.output.dir / "heldout.jsonl"
    private_mkdir(path.parent)
    lines = []
    for rec in replay_records(settings):
        if is_heldout(rec, fraction):
            obj = rec if isinstance(rec, dict) else json.loads(rec)
            lines.append(json_line(obj, sort_keys=False) + "\n")
    atomic_write(path, "".join(lines).encode("utf-8"))  # 0600: held-out prompts and answers are user text
    return len(lines)


def replay_items(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The ``(channel, payload)`` items a replay feeds the stream, answers included in oracle mode."""
    fraction = settings.source.heldout
    records = (r for r in replay_records(settings) if not is_heldout(r, fraction))
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
    if name == "flow":
        return flow_from_environment(build_flow)
    raise AttributeError(name)
