"""A resumable, optionally rate-limited Bytewax source over a replay.

``ReplaySource`` is the public, validated configuration; ``_ReplayPartition``
owns the iterator and snapshots a plain offset: how many records it has
emitted. On resume the records factory is called again and that many records
are skipped, so the factory must yield the same sequence every time (a replay
with a fixed seed does).

Wiring, one step a line:

    flow = Dataflow("replay")
    raw = op.input("read", flow, replay_source("tests/data/events.jsonl", split="field"))
    # bytes | dict, one event payload each
    op.output("print", raw, StdOutSink())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Optional, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.replay import RateLimiter, replay_events
from flows.stop import stopping

__all__ = ["ReplaySource", "replay_source"]

X = TypeVar("X")

_PARTITION = "replay"


class ReplaySource(FixedPartitionedSource[X, int]):
    """Emit ``records_factory()``'s items once each, at most ``rate`` per second.

    One partition, so one worker reads and order is kept. Its snapshot is the
    count of records emitted; a resumed run skips that many. ``rate=None``
    reads as fast as the flow takes batches of ``batch_size``; otherwise the
    partition tells Bytewax when the next record is due (``next_awake``)
    instead of sleeping, so the worker stays free. ``clock`` is a monotonic
    clock in seconds, injectable for tests.

    >>> from bytewax.testing import run_main, TestingSink
    >>> from bytewax.dataflow import Dataflow
    >>> import bytewax.operators as op
    >>> out = []
    >>> flow = Dataflow("doc")
    >>> op.output("out", op.input("read", flow, ReplaySource(lambda: range(5), batch_size=2)), TestingSink(out))
    >>> run_main(flow); out
    [0, 1, 2, 3, 4]
    """

    def __init__(
        self,
        records_factory: Callable[[], Iterable[X]],
        rate: float | None = None,
        batch_size: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(records_factory):
            raise ValueError(
                f"records_factory={records_factory!r} must be a callable returning a fresh iterable; "
                "wrap a list as `lambda: items` so a resumed run can re-read it"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1, e.g. 64")
        RateLimiter(rate)  # validates rate with a message naming it
        self.records_factory = records_factory
        self.rate = rate
        self.batch_size = batch_size
        self.clock = clock

    def list_parts(self) -> list[str]:
        """The single partition; Bytewax gives it to exactly one worker."""
        return [_PARTITION]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _ReplayPartition[X]:
        """Start reading, or resume after the ``resume_state`` records already emitted."""
        if for_part != _PARTITION:
            raise ValueError(f"step {step_id!r}: for_part={for_part!r} is not a partition of ReplaySource; expected {_PARTITION!r}")
        return _ReplayPartition(
            iter(self.records_factory()),
            resume_state or 0,
            self.batch_size,
            RateLimiter(self.rate, clock=self.clock),
        )


class _ReplayPartition(StatefulSourcePartition[X, int]):
    def __init__(self, records: Iterator[X], offset: int, batch_size: int, limiter: RateLimiter) -> None:
        # Skip what a previous run already emitted; islice with a start consumes without keeping.
        next(islice(records, offset, offset), None)
        self._records = records
        self._offset = offset
        self._batch_size = batch_size
        self._limiter = limiter

    def next_batch(self) -> list[X]:
        if stopping():  # SIGINT/SIGTERM: end here; the snapshot holds how many records went out
            raise StopIteration()
        room = min(self._batch_size, self._limiter.available())
        if room == 0:
            return []
        batch = list(islice(self._records, room))
        if not batch:
            raise StopIteration()
        self._limiter.consume(len(batch))
        self._offset += len(batch)
        return batch

    def next_awake(self) -> Optional[datetime]:
        if self._limiter.rate_per_s is None:
            return None
        pause = self._limiter.delay()
        # None lets Bytewax call again at once, which is right when a record is due.
        return datetime.now(timezone.utc) + timedelta(seconds=pause) if pause > 0 else None

    def snapshot(self) -> int:
        return self._offset


def replay_source(
    source: str | Path,
    *,
    rate: float | None = None,
    batch_size: int = 64,
    **replay_kwargs: Any,
) -> ReplaySource[Any]:
    """A :class:`ReplaySource` over ``flows.replay.replay_events(source, **replay_kwargs)``.

    >>> src = replay_source("tests/data/events.jsonl", split="field", rate=100.0)
    >>> src.rate, src.batch_size
    (100.0, 64)
    """
    return ReplaySource(partial(replay_events, source, **replay_kwargs), rate=rate, batch_size=batch_size)
