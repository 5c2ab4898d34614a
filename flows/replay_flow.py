"""Replay a file or a bundled dataset through the selection stream.

    python -m bytewax.run flows.replay_flow:flow      # settings from EDGETUNE_* / EDGETUNE_CONFIG
    edgetune replay [PATH] [options]                  # the same flow from the CLI
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.deadletters import json_line
from flows.replay import replay_events
from flows.replay_source import ReplaySource
from flows.selection import Components, build_components, flow_from_environment, redactor_for, select, write_outputs
from operators import metrics
from operators.config import Settings
from operators.files import atomic_write, private_mkdir
from operators.heldout import is_heldout
from operators.oracle import tag_events, with_oracle_answers

log = logging.getLogger(__name__)


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
    """Write the replay's held-out events to ``<out>/heldout.jsonl``; returns how many.

    Their text goes through the PII redactor as the stream's does (``privacy``): redacted, or,
    under ``privacy.pii=drop``, the event is left out (counted in the log and in metrics).
    """
    fraction = settings.source.heldout
    path = settings.output.dir / "heldout.jsonl"
    private_mkdir(path.parent)
    redactor = redactor_for(settings)
    lines, dropped = [], 0
    for rec in replay_records(settings):
        if is_heldout(rec, fraction):
            obj = rec if isinstance(rec, dict) else json.loads(rec)
            if redactor is not None:
                text, found = redactor.redact_value({k: v for k, v in obj.items() if k not in _IDENTITY})
                metrics.record_pii(found, dropped=redactor.action == "drop")
                if found and redactor.action == "drop":
                    dropped += 1
                    continue
                obj = {k: obj[k] if k in _IDENTITY else text[k] for k in obj}
            lines.append(json_line(obj, sort_keys=False) + "\n")
    atomic_write(path, "".join(lines).encode("utf-8"))  # 0600: held-out prompts and answers are user text
    if dropped:
        log.info("left %d held-out events holding PII out of %s (privacy.pii is drop)", dropped, path)
    return len(lines)


_IDENTITY = ("event_id", "user_id", "ts")  # never rewritten: ids are identities, ts is not text


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
    items = op.input("read", flow, ReplaySource(lambda: _numbered(replay_items(settings)), rate=settings.source.rate))  # (channel, payload, source)
    write_outputs(select(items, settings, components, progress), settings, trainer_sink)
    return flow


def _numbered(items: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any, str]]:
    """Each item with its place in the replay, ``replay/<n>`` (answers included): a replay yields the same
    items every time, so the place names the same payload when a resumed run reads it again."""
    return ((channel, payload, f"replay/{n}") for n, (channel, payload) in enumerate(items))


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return flow_from_environment(build_flow)
    raise AttributeError(name)
