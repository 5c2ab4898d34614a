"""The local spool: what `edgetune serve` emits when there is no broker, and the stream that reads it.

    <spool>/conversations.jsonl   # served turns, one conversation event a line (operators/events.py)
    <spool>/annotations.jsonl     # feedback that became an answer, one annotation a line

Both files are append-only JSON lines, 0600 in a 0700 folder (they hold what the user
said). :class:`SpoolWriter` appends each record with one ``write`` on an ``O_APPEND``
descriptor and fsyncs it, so a reader never sees half a record from a live writer, and
an answered turn survives a crash of the server. :class:`SpoolSource` tails both files
as two Bytewax partitions, channel ``"event"`` and ``"annotation"`` like the Kafka flow's
two topics; each partition snapshots its byte offset, so a run with a recovery
directory resumes after the last record it read. Without one, a new run reads the
spool from its start (as the Kafka flow does with ``kafka.starting=earliest``), and the
per-user repeat guard dead-letters the events it has already seen.

The source never ends by itself: it polls for new lines every ``poll_seconds`` until a
stop is requested (SIGINT/SIGTERM, :func:`flows.stop.request_stop`), or, with
``idle_stop_s``, after that long without a new line (tests, one-off catch-up runs).

    python -m bytewax.run flows.spool:flow        # settings from EDGETUNE_* / EDGETUNE_CONFIG

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> writer = SpoolWriter(folder)
>>> writer.append("event", {"event_id": "e1", "user_id": "ann", "ts": 0, "prompt": "hi"})
>>> part = SpoolSource(folder).build_part("spool", "event", None)
>>> part.next_batch()
[('event', b'{"event_id":"e1","user_id":"ann","ts":0,"prompt":"hi"}')]
>>> part.snapshot() == (folder / EVENTS_FILE).stat().st_size
True
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.deadletters import json_line
from flows.selection import Components, build_components, flow_from_environment, select, write_outputs
from flows.stop import stopping
from operators.config import Settings
from operators.files import FILE_MODE, private_mkdir

__all__ = ["ANNOTATIONS_FILE", "EVENTS_FILE", "SpoolSource", "SpoolWriter", "build_flow"]

EVENTS_FILE = "conversations.jsonl"
ANNOTATIONS_FILE = "annotations.jsonl"
FILES = {"event": EVENTS_FILE, "annotation": ANNOTATIONS_FILE}


class SpoolWriter:
    """Appends records to the spool's files; thread-safe, one fsync per record."""

    def __init__(self, folder: str | Path):
        self.folder = private_mkdir(folder)
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        for channel, name in FILES.items():
            path = self.folder / name
            _end_torn_line(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
            self._fds[channel] = fd

    def append(self, channel: str, record: dict[str, Any]) -> None:
        """Write ``record`` as one line of the ``channel``'s file ("event" or "annotation")."""
        if channel not in FILES:
            raise ValueError(f"SpoolWriter.append(channel={channel!r}): expected one of {sorted(FILES)}")
        line = (json_line(record, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            fd = self._fds[channel]
            written = os.write(fd, line)  # O_APPEND: one write lands as a whole at the end
            if written != len(line):  # a full disk; the reader skips nothing but would wait on this line
                raise OSError(f"spool {FILES[channel]}: wrote {written} of {len(line)} bytes")
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _end_torn_line(path: Path) -> None:
    """A crash mid-write can leave a last line without its newline: end it, so the next record starts a line.

    The torn line is then an invalid event, which the stream dead-letters with its reason.
    """
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
    except FileNotFoundError:
        pass


class SpoolSource(FixedPartitionedSource[tuple[str, bytes], int]):
    """Tail the spool's two files: items ``(channel, line bytes)``, snapshot the byte offset.

    ``batch_lines`` bounds a batch; ``poll_seconds`` is how long an idle partition waits
    before looking again; ``idle_stop_s`` ends a partition after that long without a new
    line (None: only a stop request ends it).
    """

    def __init__(self, folder: str | Path, *, batch_lines: int = 64, poll_seconds: float = 0.2,
                 idle_stop_s: float | None = None, max_line_bytes: int = 1_048_576):
        if isinstance(batch_lines, bool) or not isinstance(batch_lines, int) or batch_lines < 1:
            raise ValueError(f"SpoolSource(batch_lines={batch_lines!r}) must be an int >= 1")
        if not poll_seconds > 0:
            raise ValueError(f"SpoolSource(poll_seconds={poll_seconds!r}) must be > 0, e.g. 0.2")
        if idle_stop_s is not None and not idle_stop_s > 0:
            raise ValueError(f"SpoolSource(idle_stop_s={idle_stop_s!r}) must be > 0 or None")
        self.folder = Path(folder)
        self.batch_lines = batch_lines
        self.poll_seconds = poll_seconds
        self.idle_stop_s = idle_stop_s
        self.max_line_bytes = max_line_bytes

    def list_parts(self) -> list[str]:
        return list(FILES)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _SpoolPartition:
        if for_part not in FILES:
            raise ValueError(f"step {step_id!r}: for_part={for_part!r} is not a spool partition; expected one of "
                             f"{sorted(FILES)}")
        private_mkdir(self.folder)
        return _SpoolPartition(self.folder / FILES[for_part], for_part, resume_state or 0, self)


class _SpoolPartition(StatefulSourcePartition[tuple[str, bytes], int]):
    def __init__(self, path: Path, channel: str, offset: int, config: SpoolSource):
        self._path = path
        self._channel = channel
        self._offset = offset
        self._config = config
        self._idle_since = time.monotonic()
        self._wait: datetime | None = None

    def next_batch(self) -> list[tuple[str, bytes]]:
        if stopping():
            raise StopIteration()
        lines = self._read()
        if lines:
            self._idle_since = time.monotonic()
            self._wait = None
            return [(self._channel, line) for line in lines]
        idle = self._config.idle_stop_s
        if idle is not None and time.monotonic() - self._idle_since >= idle:
            raise StopIteration()
        self._wait = datetime.now(timezone.utc) + timedelta(seconds=self._config.poll_seconds)
        return []

    def _read(self) -> list[bytes]:
        try:
            with open(self._path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size < self._offset:
                    raise ValueError(f"spool file {self._path} is shorter ({size} bytes) than the offset already read "
                                     f"({self._offset}): it was replaced or truncated; restore it, or start with a "
                                     "new recovery directory to read it from the start")
                fh.seek(self._offset)
                chunk = fh.read(min(size - self._offset, self._config.batch_lines * self._config.max_line_bytes))
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []  # no whole line yet
        whole = chunk[: end + 1]
        lines = whole.split(b"\n")[:-1][: self._config.batch_lines]
        self._offset += sum(len(line) + 1 for line in lines)
        return [line for line in lines if line.strip()]

    def next_awake(self) -> Optional[datetime]:
        return self._wait

    def snapshot(self) -> int:
        return self._offset


def build_flow(
    settings: Settings,
    components: Components | None = None,
    progress: Callable[[], None] | None = None,
    trainer_sink: Any | None = None,
    *,
    idle_stop_s: float | None = None,
) -> Dataflow:
    """The selection stream over the spool: served turns and feedback in, every output of the other flows out."""
    components = components or build_components(settings)
    flow = Dataflow("edgetune_spool")
    items = op.input("read", flow, SpoolSource(settings.spool_dir, idle_stop_s=idle_stop_s,
                                               max_line_bytes=settings.max_message_bytes))  # (channel, bytes)
    write_outputs(select(items, settings, components, progress), settings, trainer_sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return flow_from_environment(build_flow)
    raise AttributeError(name)
