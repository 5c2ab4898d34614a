"""The selection stream, shared by the replay and Kafka flows.

    (channel, payload) ─> parse ─> embed+score events (batched) ─> key by user ─> select (per-user state)
                            └─> dead letters <──────────────────────────────────────┘ (repeated ids)
    select emits typed rows (operators.rows), each routed to its own stream by type: decision rows,
    annotation requests, annotation outcomes, training requests, buffer views, and Rejected repeats.

Every step calls into ``operators/`` (pure logic) or ``models/`` (torch);
nothing here decides anything about a sample.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from flows.deadletters import bound_dead_letter, parse_bounded
from flows.sinks import DecisionLogSink, JsonlSink, SnapshotSink
from flows.stop import stopping
from operators import metrics
from operators.config import Settings, load_settings
from operators.events import Annotation, Event, Rejected
from operators.lexicons import load_lexicons
from operators.policies import make_policy
from operators.redact import Redactor
from operators.scoring import ScoredEvent, Scorer
from operators.rows import AnnotationRequest, AnswerOutcome, BufferView, DecisionRow, TrainRequest
from operators.state import Output, UserState


@dataclass
class Components:
    """What the stream needs that is expensive to build: built once per process."""

    embedder: Any
    scorer: Scorer
    model: Any = None
    tokenizer: Any = None


def build_components(settings: Settings) -> Components:
    from models.configure import embed_config, load_model
    from models.embed import make_embedder

    model, tokenizer = load_model(settings)
    embedder = make_embedder(embed_config(settings), model, tokenizer)
    scorer = Scorer(load_lexicons(settings.scoring.lexicons), settings.scoring.eoe_mode, settings.scoring.eoe_bins)
    return Components(embedder, scorer, model, tokenizer)


def embed_and_score(items: list[Event | Annotation], *, embedder: Any, scorer: Scorer) -> list[ScoredEvent | Annotation]:
    """Embed the batch's events in one call (the costly part) and score each; annotations pass through in place."""
    events = [x for x in items if isinstance(x, Event)]
    if not events:
        return list(items)
    start = time.perf_counter()
    embedded = embedder.embed([e.text for e in events])
    elapsed = time.perf_counter() - start
    metrics.EMBED_SECONDS.observe(elapsed)
    metrics.EMBED_EVENTS.inc(len(events))
    share = elapsed / len(events)
    scored = iter(scorer.score_batch(events, embedded.vectors, embedded.n_tokens, share, embedded.mean))
    return [next(scored) if isinstance(x, Event) else x for x in items]


def user_seed(seed: int, user_id: str) -> int:
    """A per-user seed: users differ from each other, runs with the same seed do not."""
    return zlib.crc32(f"{seed}:{user_id}".encode()) & 0x7FFFFFFF


class SelectLogic(StatefulLogic):
    """Bytewax wrapper around one user's :class:`UserState`."""

    def __init__(self, settings: Settings, resume: dict | None):
        self.settings = settings
        self.state = UserState.from_snapshot(resume) if resume is not None else None
        self._snapshot_due: datetime | None = None  # a changed buffer is written by then (output.flush_seconds)

    def on_item(self, value: ScoredEvent | Annotation) -> tuple[list[Output], bool]:
        self._changed()
        if isinstance(value, Annotation):
            return self._state(value.user_id).on_annotation(value), StatefulLogic.RETAIN
        return self._state(value.event.user_id).on_event(value), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._snapshot_due

    def on_notify(self) -> tuple[list[Output], bool]:
        # A live stream has no end of input: write the user's buffer at least every flush_seconds.
        self._snapshot_due = None
        return [self.state.buffer_view()], StatefulLogic.RETAIN

    def _changed(self) -> None:
        seconds = self.settings.output.flush_seconds
        if seconds is not None and self._snapshot_due is None:
            self._snapshot_due = datetime.now(timezone.utc) + timedelta(seconds=seconds)

    def on_eof(self) -> tuple[list[Output], bool]:
        out: list[Output] = [self.state.buffer_view()]
        t = self.settings.train
        # A stop (SIGINT/SIGTERM) is not the end of the input: no window closes and early answers
        # keep waiting, so a restart goes on exactly as an uninterrupted run would.
        if not stopping():
            out += self.state.end_of_input()  # answers whose event never came: dead letters
        if t.enabled and t.train_on_eof and not stopping() and self.state.n_events > self.state.last_window_events:
            out.append(self.state.close_window("end_of_input"))
        return out, StatefulLogic.RETAIN

    def _state(self, user: str) -> UserState:
        if self.state is None:
            b, t = self.settings.buffer, self.settings.train
            policy = make_policy(b.policy, seed=user_seed(self.settings.seed, user), **b.policy_params())
            window_ms = round(t.window_seconds * 1000) if t.enabled and t.window_seconds else 0
            self.state = UserState(user, policy, t.window_events if t.enabled else 0, window_ms,
                                   self.settings.annotation.max_early, b.dedup_window)
            metrics.USERS.inc()
        return self.state

    def snapshot(self) -> dict:
        return self.state.snapshot()


@dataclass
class SelectionOutputs:
    decisions: Stream  # DecisionRow
    dead_letters: Stream  # dicts: reason, detail, raw (a bounded excerpt), ... (flows.deadletters)
    snapshots: Stream  # BufferView
    annotation_requests: Stream  # AnnotationRequest
    train_requests: Stream  # TrainRequest


def redactor_for(settings: Settings) -> Redactor | None:
    """The PII redactor ``privacy`` asks for; None when ``privacy.pii`` is off."""
    p = settings.privacy
    return None if p.pii == "off" else Redactor(p.pii_kinds, p.phone_regions, action=p.pii)


def select(raw: Stream, s: Settings, components: Components, progress: Callable[[], None] | None = None) -> SelectionOutputs:
    """Wire the selection steps onto a stream of ``(channel, payload)`` items, channel "event" or "annotation",
    or ``(channel, payload, source)``: ``source`` says where the payload was read, the same on every re-read
    (``topic/partition/offset``, ``replay/<n>``), and keys its dead letter, so readers can drop the copies an
    at-least-once restart writes (``flows.outputs.dead_letter_key``)."""
    redactor = redactor_for(s)
    parsed = op.map("parse", raw, partial(_parse, max_bytes=s.max_message_bytes, max_chars=s.max_chars,
                                          control_chars=s.source.control_chars,
                                          redactor=redactor))  # Event | Annotation | Rejected, PII redacted
    checked = op.branch("validate", parsed, lambda p: not isinstance(p, Rejected))
    scored = op.flat_map_batch(
        "embed", checked.trues, partial(embed_and_score, embedder=components.embedder, scorer=components.scorer)
    )  # ScoredEvent | Annotation
    keyed = op.key_on("key", scored, _user_of)  # (user_id, ScoredEvent | Annotation)
    selected = op.stateful("select", keyed, partial(SelectLogic, s))  # (user_id, Output)
    outputs = op.key_rm("unkey", selected)  # Output: one of the typed rows below
    decisions, repeats, requests, answers, windows, views = _route(outputs, DecisionRow, Rejected, AnnotationRequest,
                                                                   AnswerOutcome, TrainRequest, BufferView)
    invalid = op.merge("rejected", checked.falses, repeats)  # Rejected
    described = op.map("describe", invalid, Rejected.to_dict)  # dict
    dead = op.map("bound", described, partial(
        bound_dead_letter, excerpt_bytes=s.dead_letter_excerpt_bytes, redactor=redactor))  # dict, a few KiB at most, PII redacted
    op.inspect("count_decisions", decisions, lambda _step, row: _counted(metrics.record_decision, row.to_dict(), progress))
    op.inspect("count_dead", dead, lambda _step, d: _counted(_record_dead_letter, d, progress))
    op.inspect("count_requests", requests, lambda _step, _r: metrics.ANNOTATION_REQUESTS.inc())
    op.inspect("count_answers", answers, lambda _step, a: metrics.record_annotation(a.to_dict()))
    return SelectionOutputs(decisions, dead, views, requests, windows)


def _parse(item: tuple[str, Any] | tuple[str, Any, str], **validation: Any) -> Event | Annotation | Rejected:
    """Validate one ``(channel, payload[, source])`` item (``flows.deadletters.parse_bounded``) and count the PII
    redacted from it or dropped with it. ``source`` (where it was read) goes with the result: a dead letter's key."""
    found: dict[str, int] = {}
    parsed = parse_bounded(item[:2], found=found, **validation)
    if isinstance(parsed, Rejected):
        metrics.record_pii(parsed.pii, dropped=True)
    else:
        metrics.record_pii(found)
    return replace(parsed, source=item[2]) if len(item) > 2 else parsed


def _record_dead_letter(d: dict) -> None:
    metrics.record_dead_letter(d["reason"])
    if d["reason"] != "pii":  # a dropped event's PII was counted as dropped at parse
        metrics.record_pii(d.get("raw_pii", {}))


def _user_of(item: ScoredEvent | Annotation) -> str:
    return item.user_id if isinstance(item, Annotation) else item.event.user_id


def _route(outputs: Stream, *types: type) -> list[Stream]:
    """One stream per type, in order, by a chain of ``branch`` steps (``route_<kind>``).

    Each item goes to exactly one stream; one of none of these types is a bug in the step
    that made it, and stops the flow naming it."""
    streams = []
    for kind in types:
        split = op.branch(f"route_{kind.kind}", outputs, lambda o, kind=kind: isinstance(o, kind))
        streams.append(split.trues)
        outputs = split.falses
    op.inspect("unrouted", outputs, _unrouted)
    return streams


def _unrouted(_step_id: str, item: Any) -> None:
    raise TypeError(f"step 'select' emitted a {type(item).__name__}, which no output takes; "
                    "expected one of the rows of operators.rows or a Rejected")


def _counted(record: Callable[[Any], None], item: Any, progress: Callable[[], None] | None) -> None:
    record(item)
    if progress is not None:
        progress()


def write_outputs(selection: SelectionOutputs, settings: Settings, trainer_sink: Any | None = None) -> None:
    """The file outputs both flows share; ``trainer_sink`` receives training requests when training is on."""
    out = settings.output.dir
    rows = op.map("log_key", selection.decisions, lambda row: ("decisions", row.to_dict()))  # ("decisions", dict)
    op.output("log", rows, DecisionLogSink(out / "decisions", settings.output.flush_rows, settings.output.flush_seconds))
    op.output("dead_letter", selection.dead_letters, JsonlSink(out / "dead_letters.jsonl"))
    op.output("snapshot", op.map("view", selection.snapshots, BufferView.to_dict), SnapshotSink(out / "buffers"))
    op.output("ask", op.map("ask_row", selection.annotation_requests, AnnotationRequest.to_dict),
              JsonlSink(out / "annotation_requests.jsonl"))
    if trainer_sink is not None:
        op.output("train", op.map("window", selection.train_requests, TrainRequest.to_dict), trainer_sink)


def flow_from_environment(build_flow: Callable[..., Any]) -> Any:
    """``build_flow`` under the settings of ``EDGETUNE_CONFIG`` / ``EDGETUNE_*``, trainer included.

    Used by ``python -m bytewax.run flows.<name>:flow``, which builds the flow
    (and loads the model) only when it asks for the ``flow`` attribute. As the CLI
    does, it logs at INFO (unless logging was configured already), serves the
    Prometheus exporter on ``metrics.port`` (``EDGETUNE_METRICS__PORT``; 0: none)
    and stops cleanly on SIGINT/SIGTERM. With ``-w N`` the workers are threads of one
    process and share its one exporter; with several processes (``-i/-a`` or
    ``BYTEWAX_PROCESS_ID``) process *i* serves on ``metrics.port + i``
    (:func:`cluster_metrics_port`), so one environment fits every process; scrape each.
    Only process 0 resumes the training journal (``<adapters>/.pending/``) that all share.
    """
    import logging

    from flows import stop
    from flows.trainer import trainer_for

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if threading.current_thread() is threading.main_thread():
        stop.install_handlers()
    settings = load_settings(os.environ.get("EDGETUNE_CONFIG"))
    process = bytewax_process_id(sys.argv[1:], os.environ)
    port = cluster_metrics_port(settings.metrics.port, process)
    metrics.serve(port, settings.metrics.addr)
    logging.getLogger("edgetune").info("building the flow: model %s, metrics port %s", settings.model.lm, port)
    if process and settings.train.enabled:
        logging.getLogger("edgetune").info("process %d: the training journal left by an earlier run is resumed by "
                                           "process 0", process)
    components = build_components(settings)
    # Every process shares the adapters folder's journal; only process 0 resumes it, so no left-over request
    # trains twice.
    return build_flow(settings, components, trainer_sink=trainer_for(settings, components, resume=process == 0))


def bytewax_process_id(argv: list[str], environ: Any) -> int:
    """This process's id in a Bytewax cluster, read as ``python -m bytewax.run`` reads it; 0 alone.

    ``-i/--process-id`` in ``argv`` first, then ``BYTEWAX_PROCESS_ID``, then the Helm
    chart's ``BYTEWAX_POD_NAME`` minus ``BYTEWAX_STATEFULSET_NAME-``.

    >>> bytewax_process_id(["flows.kafka_flow:flow", "-i1", "-a", "h:1;h:2"], {})
    1
    >>> bytewax_process_id(["flows.kafka_flow:flow", "--process-id", "2", "-w", "2"], {"BYTEWAX_PROCESS_ID": "5"})
    2
    >>> bytewax_process_id(["flows.kafka_flow:flow"], {"BYTEWAX_PROCESS_ID": "3"})
    3
    >>> bytewax_process_id([], {"BYTEWAX_POD_NAME": "edgetune-4", "BYTEWAX_STATEFULSET_NAME": "edgetune"})
    4
    >>> bytewax_process_id(["flows.kafka_flow:flow", "-w", "2"], {})
    0
    """
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-i", "--process-id", type=int, default=None)
    known, _ = parser.parse_known_args(argv)
    if known.process_id is not None:
        return known.process_id
    if environ.get("BYTEWAX_PROCESS_ID"):
        return int(environ["BYTEWAX_PROCESS_ID"])
    pod, statefulset = environ.get("BYTEWAX_POD_NAME"), environ.get("BYTEWAX_STATEFULSET_NAME")
    if pod and statefulset:
        return int(pod.replace(statefulset + "-", ""))
    return 0


def cluster_metrics_port(port: int, process_id: int) -> int:
    """The exporter port of process ``process_id``: ``port + process_id``; 0 (no exporter) stays 0.

    >>> cluster_metrics_port(9464, 0), cluster_metrics_port(9464, 2), cluster_metrics_port(0, 2)
    (9464, 9466, 0)
    >>> cluster_metrics_port(65535, 1)
    Traceback (most recent call last):
    ...
    ValueError: metrics.port=65535 + process id 1 = 65536 is past 65535; choose a lower metrics.port (EDGETUNE_METRICS__PORT)
    """
    if not port:
        return 0
    if port + process_id > 65535:
        raise ValueError(f"metrics.port={port} + process id {process_id} = {port + process_id} is past 65535; "
                         "choose a lower metrics.port (EDGETUNE_METRICS__PORT)")
    return port + process_id
