"""Training off the ingest path: a background worker that coalesces requests per user.

The stream hands training requests to :class:`TrainingService` through
:class:`TrainerSink` and goes on scoring and admitting. One worker thread runs
the requests in arrival order of users; a newer request for a user who is
still waiting replaces the older one (the newer buffer supersedes it). At the
end of a run the sink waits for the queue to drain, so a replay ends with its
adapters written. Requests are journaled under ``<adapters>/.pending/`` until
their run ends, so a process that stops mid-queue picks them up at its next start.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators import metrics
from operators.pending import PendingRuns

log = logging.getLogger(__name__)

# Under the adapters folder; the leading dot keeps it out of the adapter store's user listing.
PENDING_DIR = ".pending"


class TrainingService:
    """Runs ``run(request)`` on one background thread, newest request per user wins.

    With a ``journal`` (:class:`operators.pending.PendingRuns`), every request is
    written to disk before it is queued and deleted when its run ends, and the
    requests an earlier process left there are queued again at start: a stop or a
    crash while a run waits or trains does not lose it.
    """

    def __init__(self, run: Callable[[dict[str, Any]], Any], journal: PendingRuns | None = None):
        self._run = run
        self._journal = journal
        self._pending: OrderedDict[str, tuple[dict[str, Any], str | None]] = OrderedDict()  # user -> (request, key)
        self._busy = False
        self._cv = threading.Condition()
        self._closed = False
        self.results: list[Any] = []
        if journal is not None:
            for key, request in journal.load():
                self._pending[request["user_id"]] = ({**request, "resumed": True}, key)
                metrics.TRAIN_REQUESTS.labels(outcome="resumed").inc()
                log.info("resuming training for user %s, window %s, left pending by an earlier run",
                         request["user_id"], request.get("window"))
            metrics.TRAIN_QUEUE.set(len(self._pending))
        self._thread = threading.Thread(target=self._loop, name="edgetune-trainer", daemon=True)
        self._thread.start()

    def submit(self, request: dict[str, Any]) -> None:
        metrics.TRAIN_WINDOWS.labels(trigger=request.get("trigger", "end_of_input")).inc()
        key = None
        if self._journal is not None:
            try:
                key = self._journal.put(request)
            except (OSError, TypeError, ValueError):  # a full disk must not stop the stream: train, unjournaled
                metrics.TRAIN_REQUESTS.labels(outcome="not_journaled").inc()
                log.exception("could not journal the training request of user %s, window %s; it runs, but a stop "
                              "before it ends loses it", request.get("user_id"), request.get("window"))
        with self._cv:
            user = request["user_id"]
            if user in self._pending:
                metrics.TRAIN_REQUESTS.labels(outcome="coalesced").inc()
                self._forget(self._pending.pop(user)[1])
            self._pending[user] = (request, key)
            metrics.TRAIN_REQUESTS.labels(outcome="queued").inc()
            metrics.TRAIN_QUEUE.set(len(self._pending))
            self._cv.notify_all()

    def drain(self) -> None:
        """Block until every submitted request has run."""
        with self._cv:
            self._cv.wait_for(lambda: not self._pending and not self._busy)

    def close(self) -> None:
        self.drain()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                _user, (request, key) = self._pending.popitem(last=False)
                self._busy = True
                metrics.TRAIN_QUEUE.set(len(self._pending))
            try:
                result = self._run(request)
                self.results.append(result)
                outcome = getattr(result, "outcome", "done")
                if outcome == "skipped":
                    metrics.TRAIN_REQUESTS.labels(outcome="skipped").inc()
                else:
                    metrics.TRAIN_RUNS.labels(outcome=outcome).inc()
                    _record_report(result)
                log.info("training for user %s, window %s closed by %s%s: %s (%s)", request["user_id"], request.get("window"),
                         request.get("trigger", "?"), " (resumed)" if request.get("resumed") else "", outcome,
                         getattr(result, "reason", ""))
            except Exception:  # a failed run must not stop the stream; it is counted and logged
                metrics.TRAIN_RUNS.labels(outcome="failed").inc()
                log.exception("training for user %s failed", request["user_id"])
            finally:
                # A failed run is forgotten too: one that fails on its data would otherwise fail at every start.
                self._forget(key)
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _forget(self, key: str | None) -> None:
        if key is not None:
            self._journal.done(key)


def _record_report(result: Any) -> None:
    report = getattr(result, "report", None) or {}
    if report.get("step_seconds"):
        for s in report["step_seconds"]:
            metrics.TRAIN_STEP_SECONDS.observe(s)
        metrics.TRAIN_LOSS.observe(report["loss_last"])
        metrics.TRAIN_TOKENS_PER_SECOND.set(report["tokens_per_s"])
    metrics.TRAIN_SAMPLES.observe(result.n_real + result.n_synthetic)
    if result.version is not None:
        metrics.ADAPTER_VERSIONS.inc()


class _TrainerPart(StatelessSinkPartition[dict]):
    def __init__(self, service: TrainingService):
        self._service = service

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            self._service.submit(item)

    def close(self) -> None:
        self._service.drain()


class TrainerSink(DynamicSink[dict]):
    """Hands training requests to a shared :class:`TrainingService`."""

    def __init__(self, service: TrainingService):
        self.service = service

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TrainerPart:
        return _TrainerPart(self.service)


def trainer_for(settings: Any, components: Any) -> TrainerSink | None:
    """The training sink a flow needs under ``settings``, or None when training is off."""
    if not settings.train.enabled:
        return None
    import copy

    from models.adapters import AdapterStore
    from models.personalize import Personalizer, personalize_config

    # A private copy: the stream embeds with the original while the trainer wraps its copy in LoRA.
    model = copy.deepcopy(components.model)
    personalizer = Personalizer(model, components.tokenizer, AdapterStore(settings.adapters_dir), personalize_config(settings))
    journal = PendingRuns(settings.adapters_dir / PENDING_DIR)
    return TrainerSink(TrainingService(personalizer.run, journal))
