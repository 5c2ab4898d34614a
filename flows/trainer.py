"""Training off the ingest path: a background worker that coalesces requests per user.

The stream hands training requests to :class:`TrainingService` through
:class:`TrainerSink` and goes on scoring and admitting. One worker thread runs
the requests in arrival order of users; a newer request for a user who is
still waiting replaces the older one (the newer buffer supersedes it). At the
end of the input the sink waits for the queue to drain, so a replay ends with its
adapters written; after SIGINT/SIGTERM (:func:`flows.stop.stopping`) it only lets the
run in progress finish (:meth:`TrainingService.stop`). Requests are journaled under
``<adapters>/.pending/`` until their run ends, so a process that stops mid-queue picks
them up at its next start;
a run that fails is retried with backoff a bounded number of times, then kept there
marked failed. The trainer has its own copies of the model and the tokenizer.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators import metrics
from operators.pending import PendingRuns

log = logging.getLogger(__name__)

# Under the adapters folder; the leading dot keeps it out of the adapter store's user listing.
PENDING_DIR = ".pending"


@dataclass
class _Queued:
    request: dict[str, Any]
    key: str | None  # journal key, None when the request could not be journaled
    attempts: int = 0  # failed attempts so far (across restarts, from the journal)
    due: float = 0.0  # monotonic time before which a retry does not start


class TrainingService:
    """Runs ``run(request)`` on one background thread, newest request per user wins.

    With a ``journal`` (:class:`operators.pending.PendingRuns`), every request is
    written to disk before it is queued and deleted when its run has trained or been
    skipped, and the requests an earlier process left there are queued again at start:
    a stop or a crash while a run waits or trains does not lose it. Processes that share
    one journal (a Bytewax cluster on one host) must let one of them resume it: the others
    pass ``resume=False``, or each would train every left-over request again.

    A run that raises is kept: the journal counts its attempts and records the error,
    and it is queued again after ``backoff_seconds`` (doubling per attempt) until it has
    failed ``max_attempts`` times, counted across restarts. Then it stays in the journal
    marked failed (shown by ``edgetune adapters list``, counted as
    ``edgetune_train_requests_total{outcome="failed_kept"}``) until the user's next window supersedes it. Only
    the last ``keep_results`` results stay in ``results``.

    >>> calls = []
    >>> def run(request):
    ...     calls.append(request["window"])
    ...     if len(calls) == 1:
    ...         raise RuntimeError("transient")
    ...     return "trained"
    >>> service = TrainingService(run, max_attempts=2, backoff_seconds=0)
    >>> service.submit({"user_id": "ann", "window": 1})
    >>> service.close()
    >>> calls, list(service.results)
    ([1, 1], ['trained'])

    :meth:`stop` ends after the run in progress and leaves the queue (in the journal) for the
    next start; :meth:`close` first trains the whole queue.

    >>> started, release = threading.Event(), threading.Event()
    >>> def slow(request):
    ...     started.set(); release.wait(); return request["user_id"]
    >>> service = TrainingService(slow)
    >>> service.submit({"user_id": "ann", "window": 1}); _ = started.wait()
    >>> service.submit({"user_id": "ben", "window": 1})
    >>> service.submit({"user_id": "cem", "window": 1})
    >>> release.set(); left = service.stop()
    >>> list(service.results), left
    (['ann'], 2)
    """

    def __init__(self, run: Callable[[dict[str, Any]], Any], journal: PendingRuns | None = None, *,
                 max_attempts: int = 3, backoff_seconds: float = 5.0, keep_results: int = 32,
                 clock: Callable[[], float] = time.monotonic, resume: bool = True):
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"TrainingService(max_attempts={max_attempts!r}) must be an int >= 1 (train.retry_attempts)")
        if not backoff_seconds >= 0:
            raise ValueError(f"TrainingService(backoff_seconds={backoff_seconds!r}) must be >= 0 (train.retry_backoff_seconds)")
        self._run = run
        self._journal = journal
        self._max_attempts = max_attempts
        self._backoff = float(backoff_seconds)
        self._clock = clock
        self._pending: OrderedDict[str, _Queued] = OrderedDict()  # user -> newest request, arrival order
        self._failed: dict[str, str] = {}  # user -> journal key of a run that used up its attempts
        self._busy = False
        self._cv = threading.Condition()
        self._closed = False
        self._stopped = False  # stop(): no run starts any more, the queue stays journaled
        self.results: deque[Any] = deque(maxlen=keep_results)
        if journal is not None and resume:  # resume=False: another process of the cluster resumes the journal
            for key, request in journal.load():
                user, attempts = request["user_id"], int(request.get("attempts", 0))
                if attempts >= max_attempts:
                    self._failed[user] = key
                    log.warning("training for user %s, window %s failed %d times in earlier runs; it stays journaled "
                                "as failed until the user's next window", user, request.get("window"), attempts)
                    continue
                self._pending[user] = _Queued({**request, "resumed": True}, key, attempts)
                metrics.TRAIN_REQUESTS.labels(outcome="resumed").inc()
                log.info("resuming training for user %s, window %s, left pending by an earlier run",
                         user, request.get("window"))
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
                self._forget(self._pending.pop(user).key)
            if user in self._failed:  # the newer buffer supersedes the run that kept failing
                self._forget(self._failed.pop(user))
            self._pending[user] = _Queued(request, key)
            metrics.TRAIN_REQUESTS.labels(outcome="queued").inc()
            metrics.TRAIN_QUEUE.set(len(self._pending))
            self._cv.notify_all()

    def failed(self) -> dict[str, str]:
        """``user -> journal key`` of the runs that used up their attempts (a copy)."""
        with self._cv:
            return dict(self._failed)

    def drain(self, abandon: Callable[[], bool] | None = None) -> bool:
        """Block until every submitted request has run, retries included (bounded by ``max_attempts``).

        ``abandon`` (e.g. :func:`flows.stop.stopping`) is asked every half second; once it
        says yes the wait ends with the queue as it is. True when the queue drained.
        """
        def done() -> bool:
            return not self._pending and not self._busy

        with self._cv:
            while not self._cv.wait_for(done, timeout=None if abandon is None else 0.5):
                if abandon():
                    return False
            return True

    def close(self) -> None:
        """Train the whole queue (:meth:`drain`), then end the worker thread."""
        self.drain()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def stop(self) -> int:
        """End after the run in progress, if any; start no other. Returns how many requests are left queued.

        Queued requests, retries waiting for their backoff included, keep their journal
        entries (``<adapters>/.pending/``), so the next start with a journal resumes them.
        Without a journal they are lost, and the log says so. Safe to call twice.
        """
        with self._cv:
            self._stopped = self._closed = True
            left = len(self._pending)
            unjournaled = sum(q.key is None for q in self._pending.values())
            self._cv.notify_all()
        self._thread.join()
        if left:
            log.info("stopping: %d training request(s) left journaled for the next start", left - unjournaled)
        if unjournaled:
            log.warning("stopping: %d training request(s) were not journaled and are dropped", unjournaled)
        return left

    def _next(self) -> tuple[str, _Queued] | None:
        """Under the lock: the oldest user whose request is due, waiting for one; None once closed and empty."""
        while True:
            if self._stopped or (self._closed and not self._pending):
                return None
            now = self._clock()
            for user, queued in self._pending.items():
                if queued.due <= now:
                    del self._pending[user]
                    return user, queued
            wake = min((q.due for q in self._pending.values()), default=None)
            self._cv.wait(None if wake is None else max(wake - now, 0.0))

    def _loop(self) -> None:
        while True:
            with self._cv:
                picked = self._next()
                if picked is None:
                    return
                user, queued = picked
                self._busy = True
                metrics.TRAIN_QUEUE.set(len(self._pending))
            request = queued.request
            try:
                result = self._run(request)
            except Exception as exc:  # a failed run must not stop the stream; it is kept, counted, retried
                metrics.TRAIN_RUNS.labels(outcome="failed").inc()
                delay = retry_delay(queued.attempts + 1, self._max_attempts, self._backoff)
                log.exception("training for user %s, window %s failed (attempt %d of %d); %s", user,
                              request.get("window"), queued.attempts + 1, self._max_attempts,
                              "no attempts left" if delay is None else f"retrying in {delay:.1f} s")
                self._failed_attempt(user, queued, f"{type(exc).__name__}: {exc}"[:500])
            else:
                self._forget(queued.key)
                self.results.append(result)
                try:
                    _record_result(user, request, result)
                except Exception:  # bookkeeping must not kill the trainer thread
                    log.exception("could not record the training result of user %s", user)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _failed_attempt(self, user: str, queued: _Queued, reason: str) -> None:
        """Count the failure in the journal, then queue a retry or keep the run as failed."""
        if queued.key is not None:
            try:
                self._journal.fail(queued.key, reason)
            except (OSError, ValueError):
                log.exception("could not record the failed training run of user %s in the journal", user)
        queued.attempts += 1
        with self._cv:
            if user in self._pending:  # a newer window arrived while this one ran: it supersedes this one
                self._forget(queued.key)
            elif (delay := retry_delay(queued.attempts, self._max_attempts, self._backoff)) is not None:
                queued.due = self._clock() + delay
                self._pending[user] = queued
                metrics.TRAIN_REQUESTS.labels(outcome="retried").inc()
                metrics.TRAIN_QUEUE.set(len(self._pending))
            else:
                metrics.TRAIN_REQUESTS.labels(outcome="failed_kept").inc()
                if queued.key is not None:
                    self._failed[user] = queued.key
                log.error("training for user %s, window %s failed %d times; not retried until the user's next window "
                          "(kept in the journal, see `edgetune adapters list`)", user, queued.request.get("window"),
                          queued.attempts)

    def _forget(self, key: str | None) -> None:
        if key is not None:
            self._journal.done(key)


def finish(service: TrainingService) -> None:
    """End ``service`` as the stream ended: at the end of the input train the whole queue; after a stop
    signal (also one during that wait) only the run in progress, leaving the rest journaled."""
    from flows.stop import stopping

    if stopping() or not service.drain(abandon=stopping):
        service.stop()
    else:
        service.close()


def retry_delay(failures: int, max_attempts: int, backoff_seconds: float) -> float | None:
    """Seconds to wait before the next attempt after ``failures`` failed ones; None when none is left.

    >>> [retry_delay(n, 4, 5.0) for n in (1, 2, 3, 4)]
    [5.0, 10.0, 20.0, None]
    """
    if failures >= max_attempts:
        return None
    return backoff_seconds * 2 ** (failures - 1)


def _record_result(user: str, request: dict[str, Any], result: Any) -> None:
    outcome = getattr(result, "outcome", "done")
    if outcome == "skipped":
        metrics.TRAIN_REQUESTS.labels(outcome="skipped").inc()
    else:
        metrics.TRAIN_RUNS.labels(outcome=outcome).inc()
        _record_report(result)
    log.info("training for user %s, window %s closed by %s%s: %s (%s)", user, request.get("window"),
             request.get("trigger", "?"), " (resumed)" if request.get("resumed") else "", outcome,
             getattr(result, "reason", ""))


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
    """At the end of the input, waits until the queue has trained; after a stop signal, does not wait."""

    def __init__(self, service: TrainingService):
        self._service = service

    def write_batch(self, items: list[dict]) -> None:
        for item in items:
            self._service.submit(item)

    def close(self) -> None:
        from flows.stop import stopping

        # A signal during the final drain ends the wait too; stop() lets the run in progress finish.
        if stopping() or not self._service.drain(abandon=stopping):
            self._service.stop()


class TrainerSink(DynamicSink[dict]):
    """Hands training requests to a shared :class:`TrainingService` (``runner``: what its runs call, if known)."""

    def __init__(self, service: TrainingService, runner: Any = None):
        self.service = service
        self.runner = runner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TrainerPart:
        return _TrainerPart(self.service)


def trainer_for(settings: Any, components: Any, *, resume: bool = True) -> TrainerSink | None:
    """The training sink a flow needs under ``settings``, or None when training is off.

    ``resume``: queue the requests an earlier process left journaled (False in every process
    of a cluster but the first, which share the adapters folder).
    """
    if not settings.train.enabled:
        return None
    from models.adapters import AdapterStore
    from models.configure import personalize_config
    from models.personalize import Personalizer

    # Private copies: the stream embeds with the originals on its own thread while the trainer
    # wraps its model in LoRA. A fast tokenizer is not safe to share between threads (models/tokens.py).
    model = copy.deepcopy(components.model)
    tokenizer = copy.deepcopy(components.tokenizer)
    personalizer = Personalizer(model, tokenizer, AdapterStore(settings.adapters_dir), personalize_config(settings))
    journal = PendingRuns(settings.adapters_dir / PENDING_DIR)
    t = settings.train
    service = TrainingService(personalizer.run, journal, max_attempts=t.retry_attempts,
                              backoff_seconds=t.retry_backoff_seconds, resume=resume)
    return TrainerSink(service, runner=personalizer)
