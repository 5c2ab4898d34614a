"""Prometheus metrics of the selection stream (names follow design.md).

Labels stay low-cardinality: ``outcome``, ``reason``, ``policy``, ``score``,
``domain`` (bounded by the lexicon count), never user text or user ids.

>>> record_decision({"outcome": "admitted", "policy": "fifo", "domain": "general", "eoe": 0.5, "dss": 0.0,
...                  "idd": 1.0, "buffer_size": 1, "evicted_id": None, "select_seconds": 1e-5})
>>> EVENTS.labels(outcome="admitted")._value.get() >= 1
True
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
_FAST_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0)
_SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

EVENTS = Counter("edgetune_events_total", "Events by what the selection did with them.", ["outcome"])
DEAD_LETTERS = Counter("edgetune_dead_letters_total", "Rejected payloads by reason.", ["reason"])
SCORES = Histogram("edgetune_score", "Distribution of sample scores (EOE, DSS, IDD).", ["score"], buckets=_SCORE_BUCKETS)
BUFFER_SAMPLES = Gauge("edgetune_buffer_samples", "Samples held in all users' buffers.", ["policy"])
BUFFER_REPLACEMENTS = Counter("edgetune_buffer_replacements_total", "Buffered samples evicted for a better one.", ["policy"])
ADMITTED_BY_DOMAIN = Counter("edgetune_admitted_total", "Samples admitted to a buffer, by dominant domain.", ["domain"])
USERS = Gauge("edgetune_users", "Users with state in this process.")
EMBED_SECONDS = Histogram("edgetune_embed_seconds", "Seconds to embed one batch.", buckets=_SLOW_BUCKETS)
EMBED_EVENTS = Counter("edgetune_embedded_events_total", "Events embedded.")
SCORE_SECONDS = Histogram("edgetune_score_seconds", "Seconds to compute EOE and DSS for one event.", buckets=_FAST_BUCKETS)
SELECT_SECONDS = Histogram("edgetune_select_seconds", "Seconds for IDD plus the buffer decision of one event.", buckets=_FAST_BUCKETS)


OFFSET_LOSS_KINDS = ("beyond_end", "recreated", "partitions_changed")
OFFSET_LOSS_ACTIONS = ("fail", "earliest")
KAFKA_OFFSET_LOSS = Counter(
    "edgetune_kafka_offset_loss_total",
    "Resumed Kafka partitions whose saved position was gone (kind: beyond_end, recreated, partitions_changed), "
    "by what the source did (action: fail, earliest).",
    ["kind", "action"],
)


def offset_loss_failed() -> bool:
    """Whether this process stopped a partition on a lost offset (``action="fail"`` counted).

    Process-wide state (the counters are), so no doctest here: ``tests/flows/test_offset_loss.py``
    drives it through a real run that fails on a recreated log.
    """
    return any(KAFKA_OFFSET_LOSS.labels(kind=k, action="fail")._value.get() > 0 for k in OFFSET_LOSS_KINDS)


PII_REDACTED = Counter(
    "edgetune_pii_redacted_total",
    "PII replaced by a token before anything was stored (privacy.pii), by kind (email, phone, card, account, "
    "address): in accepted events and annotations, and in the excerpts of dead letters for other reasons.",
    ["kind"],
)
PII_DROPPED = Counter(
    "edgetune_pii_dropped_total",
    "PII found in events and annotations dead-lettered as pii (privacy.pii=drop), by kind.",
    ["kind"],
)


def record_pii(counts: dict[str, int], *, dropped: bool = False) -> None:
    """Count the PII one event, annotation or dead letter held, per kind.

    >>> before = PII_REDACTED.labels(kind="email")._value.get()
    >>> record_pii({"email": 2})
    >>> PII_REDACTED.labels(kind="email")._value.get() - before
    2.0
    """
    for kind, n in counts.items():
        (PII_DROPPED if dropped else PII_REDACTED).labels(kind=kind).inc(n)


def record_decision(row: dict[str, Any]) -> None:
    """Count one decision-log row."""
    EVENTS.labels(outcome=row["outcome"]).inc()
    for name in ("eoe", "dss", "idd"):
        if row.get(name) is not None:
            SCORES.labels(score=name).observe(row[name])
    if row["outcome"] == "admitted":
        BUFFER_SAMPLES.labels(policy=row["policy"]).inc()
    if row["outcome"] == "replaced":
        BUFFER_REPLACEMENTS.labels(policy=row["policy"]).inc()
    if row["outcome"] in ("admitted", "replaced"):
        ADMITTED_BY_DOMAIN.labels(domain=row["domain"]).inc()
    if "score_seconds" in row:
        SCORE_SECONDS.observe(row["score_seconds"])
    SELECT_SECONDS.observe(row["select_seconds"])


def record_dead_letter(reason: str) -> None:
    EVENTS.labels(outcome="dead_letter").inc()
    DEAD_LETTERS.labels(reason=reason).inc()


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics``; a port of 0 means no server."""
    if port:
        try:
            start_http_server(port, addr=addr)
        except OSError as exc:
            raise ValueError(f"metrics.port={port}: cannot listen on {addr}:{port} ({exc}); choose a free port or 0 to disable") from exc


# The personalization loop: annotation, synthesis, training.
ANNOTATION_REQUESTS = Counter("edgetune_annotation_requests_total", "Admitted unlabeled samples the user was asked to answer.")
ANNOTATIONS = Counter(
    "edgetune_annotations_total",
    "Answers and asks by status: attached, replaced, unrequested, not_buffered (late: sample evicted, or its event not admitted), early (waiting for its event), unknown_event (its event never came: pushed out of the early stash or waiting at the end of input; also dead-lettered), unanswered (evicted before an answer).",
    ["status"],
)
ANNOTATION_LATENCY = Histogram(
    "edgetune_annotation_latency_seconds", "Event time from request to answer.",
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
)
SYNTHETIC_PAIRS = Counter("edgetune_synthetic_pairs_total", "Synthetic question-answer pairs by fate.", ["outcome"])
SYNTH_SECONDS = Histogram("edgetune_synth_seconds", "Seconds to synthesize pairs for one sample.", buckets=_SLOW_BUCKETS)
TRAIN_REQUESTS = Counter("edgetune_train_requests_total", "Training windows closed, by what became of them (queued, "
                         "coalesced, skipped; resumed: left pending by an earlier process; not_journaled: could not be written to "
                         "the pending-runs journal; retried: a failed run queued again after a backoff; failed_kept: a run that failed "
                         "train.retry_attempts times, kept in the journal marked failed until the user's next window).",
                         ["outcome"])
TRAIN_WINDOWS = Counter("edgetune_train_windows_total", "Training windows closed, by what closed them "
                        "(events, event_time, end_of_input).", ["trigger"])
TRAIN_RUNS = Counter("edgetune_train_runs_total", "Finished training runs by gate outcome (promoted, rejected, failed).", ["outcome"])
TRAIN_LOSS = Histogram("edgetune_train_loss", "Mean training loss of the last step of each run.", buckets=(0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12))
TRAIN_STEP_SECONDS = Histogram("edgetune_train_step_seconds", "Seconds per LoRA optimisation step.", buckets=_SLOW_BUCKETS)
TRAIN_TOKENS_PER_SECOND = Gauge("edgetune_train_tokens_per_second", "Training throughput of the last run.")
TRAIN_SAMPLES = Histogram("edgetune_train_samples", "Samples (real + synthetic) per training run.", buckets=(1, 4, 8, 16, 32, 64, 128, 256, 512))
TRAIN_QUEUE = Gauge("edgetune_train_queue", "Users waiting for a training run.")
ADAPTER_VERSIONS = Counter("edgetune_adapter_versions_total", "Adapter versions written.")


def record_annotation(payload: dict[str, Any]) -> None:
    """Count one annotation outcome emitted by the per-user state."""
    ANNOTATIONS.labels(status=payload["status"]).inc()
    if payload.get("latency_ms") is not None:
        ANNOTATION_LATENCY.observe(payload["latency_ms"] / 1000.0)


# Serving (flows/serve.py): the chat API and the turns it feeds back into the stream.
SERVE_REQUESTS = Counter("edgetune_serve_requests_total", "HTTP requests to `edgetune serve` by route and status.",
                         ["route", "status"])
SERVE_SECONDS = Histogram("edgetune_serve_seconds", "Seconds from request to the whole answer (plain or stream).",
                          ["mode"], buckets=_SLOW_BUCKETS)
SERVE_TTFT_SECONDS = Histogram("edgetune_serve_ttft_seconds", "Seconds from a chat request reaching the generation "
                               "worker's queue to its first generated text.", buckets=_SLOW_BUCKETS)
SERVE_TOKENS = Counter("edgetune_serve_tokens_total", "New tokens generated for served answers.")
SERVE_ANSWERS = Counter("edgetune_serve_answers_total", "Served answers by what answered: base (the user has no "
                        "promoted adapter) or adapter.", ["model"])
SERVE_ADAPTER_VERSION = Gauge("edgetune_serve_adapter_version", "Adapter version of each resident user adapter "
                              "(at most serve.max_resident users).", ["user"])
SERVE_ADAPTER_LOADS = Counter("edgetune_serve_adapter_loads_total", "Adapters loaded onto the base model (a new "
                              "version promoted, or one evicted from the LRU and asked for again).")
SERVE_SWITCH_SECONDS = Histogram("edgetune_serve_adapter_switch_seconds", "Seconds to make a user's adapter the "
                                 "active one before generating (loading it when not resident).", buckets=_FAST_BUCKETS)
SERVE_QUEUE = Gauge("edgetune_serve_queue", "Chat requests running or waiting for the generation worker.")
SERVE_TURNS = Counter("edgetune_serve_turns_total", "Served turns by fate: emitted into the stream as a conversation "
                      "event, failed (not recorded: 503), cancelled (the client left mid-stream).", ["outcome"])
SERVE_FEEDBACK = Counter("edgetune_serve_feedback_total", "Feedback by kind (up, down, preferred, request_answer) and "
                         "whether it became an annotation.", ["kind", "outcome"])


def record_served(answer: Any, resident: list[tuple[str, int]]) -> None:
    """Count one served answer (a ``models.serving.Answer``); ``resident``: the pool's loaded (user, version)s."""
    SERVE_TOKENS.inc(answer.n_tokens)
    SERVE_ANSWERS.labels(model="base" if answer.version is None else "adapter").inc()
    SERVE_SWITCH_SECONDS.observe(answer.switch_seconds)
    if answer.loaded:
        SERVE_ADAPTER_LOADS.inc()
    users = dict(resident)
    for user in _GAUGED_USERS - set(users):  # evicted users leave the gauge: its cardinality is bounded
        SERVE_ADAPTER_VERSION.remove(user)
    for user, version in users.items():
        SERVE_ADAPTER_VERSION.labels(user=user).set(version)
    _GAUGED_USERS.clear()
    _GAUGED_USERS.update(users)


_GAUGED_USERS: set[str] = set()


def _precreate(counter: Counter, *label_sets: dict[str, str]) -> None:
    """Create these children at 0, so the first increment is a 0 -> 1 step Prometheus sees, not a new series at 1.

    ``increase()`` needs two samples of a series; a labelled child that appears only at its
    first ``inc()`` is already 1 at its first scrape, and the alerts on it would miss it.

    The child exists before anything counted it (its value depends on what this process did since):

    >>> 'edgetune_kafka_offset_loss_total{action="fail",kind="recreated"} ' in exposition()
    True
    """
    for labels in label_sets:
        counter.labels(**labels)


def exposition() -> str:
    """The default registry as Prometheus scrapes it (text format)."""
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()


# Every child an alert in infra/prometheus/alerts.yml takes increase() of (bounded label values only).
_precreate(KAFKA_OFFSET_LOSS, *({"kind": k, "action": a} for k in OFFSET_LOSS_KINDS for a in OFFSET_LOSS_ACTIONS))
_precreate(TRAIN_REQUESTS, *({"outcome": o} for o in ("queued", "coalesced", "skipped", "resumed", "not_journaled",
                                                      "retried", "failed_kept")))
_precreate(TRAIN_RUNS, *({"outcome": o} for o in ("promoted", "rejected", "failed")))
_precreate(ANNOTATIONS, {"status": "unanswered"})
_precreate(SERVE_TURNS, *({"outcome": o} for o in ("emitted", "failed", "cancelled")))
_precreate(SERVE_REQUESTS, *({"route": "/v1/chat/completions", "status": st} for st in ("200", "429")))
