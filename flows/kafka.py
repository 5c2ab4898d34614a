"""Kafka connectors for Bytewax, built on kafka-python.

Bytewax's own Kafka connector needs confluent-kafka; these use the
pure-Python kafka-python client instead. They carry bytes only: parsing
and validating events is the job of the steps that follow.

- `KafkaSource`: one Bytewax partition per Kafka partition. Each reads
  with a manually assigned consumer (no consumer group, no auto-commit)
  and snapshots the next offset to read, so a restart with a Bytewax
  recovery store resumes exactly where the last snapshot left off.
- `KafkaSink`: writes `(key, value)` items and flushes after every batch
  (at-least-once: a crash may re-send items since the last flush).
- `ensure_topics`: create topics that are missing.

Wiring, one step a line:

    flow = Dataflow("replay")
    records = op.input("read", flow, KafkaSource(KafkaSourceConfig(("127.0.0.1:9092",), "in")))
    # KafkaRecord
    pairs = op.map("pair", records, lambda r: (r.key, r.value))
    # (key bytes | None, value bytes)
    op.output("write", pairs, KafkaSink(KafkaSinkConfig(("127.0.0.1:9092",), "out")))
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Optional, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, OffsetOutOfRangeError

from flows.deadletters import json_line
from flows.stop import stopping
from operators import metrics

log = logging.getLogger(__name__)

__all__ = [
    "KafkaRecord",
    "KafkaSink",
    "KafkaSinkConfig",
    "KafkaSource",
    "KafkaSourceConfig",
    "OffsetLossError",
    "SinkItem",
    "ensure_topics",
]

# Kafka's own rule for topic names (legal characters, at most 249 of them).
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
# How long a resumed partition waits for the record before its saved offset.
_PROBE_TIMEOUT_S = 10.0
# Record batch header and per-record framing, more than kafka-python adds to one record.
_RECORD_OVERHEAD = 128

Key = Union[str, bytes, None]
Value = Union[bytes, str, dict]
SinkItem = tuple[Key, Value]
"""What `KafkaSink` writes: `(key, value)`; a dict value becomes UTF-8 JSON."""


# --- configuration --------------------------------------------------------


def _check_brokers(owner: str, brokers: Any) -> tuple[str, ...]:
    """Return `brokers` as a tuple of "host:port" strings, or raise."""
    example = "e.g. ('127.0.0.1:9092',)"
    if isinstance(brokers, (str, bytes)) or not isinstance(brokers, Iterable):
        msg = (
            f"{owner}.brokers={brokers!r} is a {type(brokers).__name__}; "
            f"expected a tuple of 'host:port' strings, {example}"
        )
        raise ValueError(msg)
    as_tuple = tuple(brokers)
    if not as_tuple:
        msg = f"{owner}.brokers={brokers!r} is empty; give at least one 'host:port', {example}"
        raise ValueError(msg)
    for broker in as_tuple:
        host, sep, port = str(broker).rpartition(":")
        if not isinstance(broker, str) or not sep or not host or not port.isdigit():
            msg = f"{owner}.brokers={brokers!r} has {broker!r}; expected 'host:port', {example}"
            raise ValueError(msg)
    return as_tuple


def _check_topic(owner: str, topic: Any) -> None:
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic):
        msg = (
            f"{owner}.topic={topic!r} is not a Kafka topic name; "
            "use 1-249 characters from [A-Za-z0-9._-]"
        )
        raise ValueError(msg)


@dataclass(frozen=True)
class KafkaSourceConfig:
    """Where and how `KafkaSource` reads.

    >>> KafkaSourceConfig(("127.0.0.1:9092",), "edgetune.conversations").starting
    'earliest'
    >>> KafkaSourceConfig(("127.0.0.1:9092",), "t", batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: KafkaSourceConfig.batch_size=0 must be an int >= 1; e.g. 500
    """

    brokers: tuple[str, ...]
    """Bootstrap servers, "host:port" each. A list is accepted and kept as a tuple."""
    topic: str
    """Topic to read; it must exist (see `ensure_topics`)."""
    starting: Literal["earliest", "latest"] = "earliest"
    """Where a partition starts when recovery has no offset for it yet.
    "latest" asks the broker for the end offset; Tansu answers with the
    number of record batches rather than records, so there "latest" can
    start early and re-read old records. Apache Kafka is exact."""
    batch_size: int = 500
    """Most records one partition hands to Bytewax per `next_batch`."""
    poll_timeout_s: float = 0.5
    """How long a partition that found nothing waits before polling again.
    The poll itself never blocks (Bytewax workers are cooperative), so this
    bounds the latency of a quiet topic and the CPU spent polling it."""
    idle_stop_s: Optional[float] = None
    """End a partition once it has seen no new record for this long. `None`
    reads forever. Meant for bounded replays and tests: the broker's end
    offsets are not used to detect the end (Tansu reports them wrongly)."""
    on_offset_loss: Literal["fail", "earliest"] = "fail"
    """What a partition does when its saved position no longer exists: the
    offset is beyond the log's end, the record before it is not the one read
    there (the topic was deleted and created again, or the broker lost its
    log), or the topic's partition count changed. "fail" stops the run with
    an error naming topic, partition and offsets; "earliest" re-reads the
    partition from its start (events already decided come back as
    duplicate_event dead letters while their ids are within the repeat
    guard's window, buffer.dedup_window ids per user; older ones are decided
    again and their decision rows replaced by key). Either way it is counted in
    edgetune_kafka_offset_loss_total and logged: never a silent skip."""
    max_message_bytes: int = 1_048_576
    """The consumer's per-partition fetch size (`max_partition_fetch_bytes`),
    so one fetch holds at least one message of the size the stream accepts.
    Larger messages are still delivered (brokers return a first record batch
    whatever its size), to be dead-lettered as too_large downstream."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "brokers", _check_brokers(owner, self.brokers))
        _check_topic(owner, self.topic)
        if not _is_count(self.max_message_bytes, minimum=1024):
            msg = f"{owner}.max_message_bytes={self.max_message_bytes!r} must be an int >= 1024; e.g. 1048576"
            raise ValueError(msg)
        if self.on_offset_loss not in ("fail", "earliest"):
            msg = f"{owner}.on_offset_loss={self.on_offset_loss!r}; expected 'fail' or 'earliest'"
            raise ValueError(msg)
        if self.starting not in ("earliest", "latest"):
            msg = f"{owner}.starting={self.starting!r}; expected 'earliest' or 'latest'"
            raise ValueError(msg)
        if not _is_count(self.batch_size, minimum=1):
            msg = f"{owner}.batch_size={self.batch_size!r} must be an int >= 1; e.g. 500"
            raise ValueError(msg)
        if not _positive_number(self.poll_timeout_s):
            msg = f"{owner}.poll_timeout_s={self.poll_timeout_s!r} must be a number of seconds > 0; e.g. 0.5"
            raise ValueError(msg)
        if self.idle_stop_s is not None and not _positive_number(self.idle_stop_s):
            msg = (
                f"{owner}.idle_stop_s={self.idle_stop_s!r} must be None (read forever) "
                "or a number of seconds > 0; e.g. 2.0"
            )
            raise ValueError(msg)


@dataclass(frozen=True)
class KafkaSinkConfig:
    """Where `KafkaSink` writes.

    >>> KafkaSinkConfig("127.0.0.1:9092", "out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: KafkaSinkConfig.brokers='127.0.0.1:9092' is a str; expected a tuple ...
    """

    brokers: tuple[str, ...]
    """Bootstrap servers, "host:port" each. A list is accepted and kept as a tuple."""
    topic: str
    """Topic to write; create it first (see `ensure_topics`)."""
    max_request_bytes: int = 1_048_576
    """The producer's `max_request_size`. A record whose key and value are
    larger is refused before it is sent, with an error naming the step."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "brokers", _check_brokers(owner, self.brokers))
        _check_topic(owner, self.topic)
        if not _is_count(self.max_request_bytes, minimum=1024):
            msg = f"{owner}.max_request_bytes={self.max_request_bytes!r} must be an int >= 1024; e.g. 1048576"
            raise ValueError(msg)


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _is_count(x: Any, minimum: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


# --- source ---------------------------------------------------------------


@dataclass(frozen=True)
class KafkaRecord:
    """One record read from Kafka, bytes as they were written.

    A tombstone (null value) arrives with `value == b""`.
    `timestamp_ms` is the record's timestamp, -1 when it has none.
    """

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    timestamp_ms: int


def _consumer(brokers: tuple[str, ...], client_id: str, **extra: Any) -> KafkaConsumer:
    # group_id=None: no consumer group, so nothing is committed to the
    # broker; positions live in Bytewax snapshots instead. A missing topic is
    # an error to report, never one for the client to create with the
    # broker's default partition count.
    return KafkaConsumer(
        bootstrap_servers=list(brokers),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        **extra,
    )


class OffsetLossError(RuntimeError):
    """A saved Kafka position that no longer exists on the broker (see `KafkaSourceConfig.on_offset_loss`)."""


def _fingerprint(record: Any) -> str:
    """A short digest of one record, to recognise it at the same offset after a restart."""
    h = hashlib.sha256()
    for part in (record.key or b"", record.value or b"", str(record.timestamp).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def _topic_id(consumer: KafkaConsumer, topic: str) -> Optional[str]:
    """The topic's id (KIP-516) in the consumer's metadata, or None if the broker or client gives none.

    A topic deleted and created again, or re-created by a broker that lost its
    log, gets a new id. kafka-python keeps it in its cluster metadata (Metadata
    v10+), which it refreshes after every lost connection; it has no public
    accessor on the consumer, hence the guarded lookup.
    """
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    lookup = getattr(cluster, "topic_id", None)
    found = lookup(topic) if callable(lookup) else None
    return None if found is None else str(found)


class _KafkaSourcePartition(StatefulSourcePartition[KafkaRecord, dict]):
    """Reads one Kafka partition; its snapshot is the next offset to read and what was read before it.

    The snapshot is ``{"offset", "last", "partitions", "topic_id"}``: the next
    offset, a fingerprint of the record just before it, the topic's partition
    count and its id. On resume the id is compared and the record before the
    offset is fetched again and compared, so a log that was lost or recreated
    is noticed even when the new log is longer than the saved offset. This does
    not use the broker's end offsets, which Tansu reports wrongly (it counts
    record batches): it fetches the record.

    While the run is live, a broker that restarts without its log is noticed the
    same way: the fetch at the current offset is out of range (the new log is
    shorter), or the topic's id changed (the topic was created again, and may
    already be longer than the offset). The batch is withheld and
    ``on_offset_loss`` decides. kafka-python refreshes metadata after a lost
    connection, so the id is checked before every batch at no cost; a batch the
    client fetched from the new log before its metadata caught up would be
    followed by the stop at the next batch: never a silent skip.
    """

    def __init__(
        self, step_id: str, config: KafkaSourceConfig, partition: int, resume: Optional[dict], partitions: int
    ) -> None:
        self._step_id = step_id
        self._config = config
        self._tp = TopicPartition(config.topic, partition)
        self._partitions = partitions
        self._last: Optional[str] = None
        self._consumer = _consumer(
            config.brokers,
            client_id=f"edgetune-{step_id}-{partition}",
            max_poll_records=config.batch_size,
            max_partition_fetch_bytes=config.max_message_bytes,
            # An offset that fell out of the log (retention, a broker that
            # lost its data) is an error, not a silent skip or re-read.
            auto_offset_reset="none",
        )
        self._consumer.assign([self._tp])
        self._consumer.partitions_for_topic(config.topic)  # fetches metadata, so the topic id is known now
        self._topic_id = _topic_id(self._consumer, config.topic)
        if resume is not None:
            self._next_offset = resume["offset"]
            self._last = resume.get("last")
            problem = self._check_resume(resume)
            if problem is None:
                self._consumer.seek(self._tp, self._next_offset)
            else:
                self._offset_lost(*problem)
        else:
            if config.starting == "earliest":
                self._consumer.seek_to_beginning(self._tp)
            else:
                self._consumer.seek_to_end(self._tp)
            # Resolve the position now, so a snapshot taken before the first
            # record pins where this run started.
            self._next_offset = self._resolve_position()
        self._last_record_at = time.monotonic()
        self._next_awake: Optional[datetime] = None

    def _check_resume(self, resume: dict) -> Optional[tuple[str, str]]:
        """None when the saved position is still there, else (kind, what was found)."""
        saved_parts = resume.get("partitions")
        if saved_parts is not None and saved_parts != self._partitions:
            return "partitions_changed", f"the topic had {saved_parts} partitions and has {self._partitions} now"
        offset = self._next_offset
        if offset == 0:
            return None  # nothing was read: whatever the log is now, reading it from 0 skips nothing
        saved_id = resume.get("topic_id")
        id_changed = None
        if saved_id is not None and self._topic_id is not None and saved_id != self._topic_id:
            id_changed = "recreated", f"the topic's id was {saved_id} and is {self._topic_id} now (it was created again)"
        # The record before the offset tells a shorter log (beyond_end) from a different one (recreated);
        # the topic id catches a recreated log whose record there happens to match, or one compacted away.
        self._consumer.seek(self._tp, offset - 1)
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        found = None
        while found is None and time.monotonic() < deadline:
            try:
                polled = self._consumer.poll(timeout_ms=500, max_records=1)
            except OffsetOutOfRangeError:
                return "beyond_end", "the broker answered that the offset is out of range"
            records = polled.get(self._tp, [])
            found = records[0] if records else None
        if found is None:
            return "beyond_end", f"no record at offset {offset - 1} within {_PROBE_TIMEOUT_S:.0f} s"
        if found.offset != offset - 1:
            return id_changed  # compacted away: the log is the same, a record was removed by compaction
        if self._last is not None and _fingerprint(found) != self._last:
            return "recreated", f"the record at offset {offset - 1} is not the one read there before"
        return id_changed

    def _offset_lost(self, kind: str, found: str) -> None:
        action = self._config.on_offset_loss
        metrics.KAFKA_OFFSET_LOSS.labels(kind=kind, action=action).inc()
        where = f"{self._where()}: saved offset {self._next_offset}: {found} ({kind})"
        if action == "fail":
            msg = (
                f"{where}. The broker lost or recreated the topic's log (since the last run, or while this one "
                "was reading), so going on would skip or misread events. To re-read the partition from its start, set "
                "kafka.on_offset_loss=earliest (EDGETUNE_KAFKA__ON_OFFSET_LOSS=earliest); to start over, "
                "remove the recovery directory; if the partition count changed on purpose, recreate the "
                "recovery directory too."
            )
            self._consumer.close()
            raise OffsetLossError(msg)
        log.warning("%s; on_offset_loss=earliest: re-reading the partition from its start", where)
        self._consumer.seek_to_beginning(self._tp)
        self._last = None
        self._topic_id = _topic_id(self._consumer, self._config.topic)
        self._next_offset = self._resolve_position()

    def _where(self) -> str:
        return f"step {self._step_id!r}, topic {self._tp.topic!r} partition {self._tp.partition}"

    def _resolve_position(self) -> int:
        try:
            position = self._consumer.position(self._tp, timeout_ms=30_000)
        except KafkaError as exc:
            msg = f"{self._where()}: could not find the {self._config.starting} offset: {exc!r}"
            raise RuntimeError(msg) from exc
        if position is None:
            msg = f"{self._where()}: broker gave no {self._config.starting} offset within 30 s"
            raise RuntimeError(msg)
        return position

    def next_batch(self) -> list[KafkaRecord]:
        if stopping():  # SIGINT/SIGTERM: end the partition; its snapshot keeps the position
            raise StopIteration
        try:
            polled = self._consumer.poll(timeout_ms=0, max_records=self._config.batch_size)
        except OffsetOutOfRangeError:
            # Live: the broker's log is now shorter than what this partition read (it lost its data).
            self._offset_lost("beyond_end", "the broker answered that the offset is out of range while reading")
            return []
        except KafkaError as exc:
            msg = f"{self._where()}: reading at offset {self._next_offset} failed: {exc!r}"
            raise RuntimeError(msg) from exc
        raw = polled.get(self._tp, [])
        current_id = _topic_id(self._consumer, self._config.topic)
        if self._next_offset == 0:
            self._topic_id = current_id  # nothing read yet: a new log is read from its start, nothing skipped
        elif self._topic_id is not None and current_id is not None and current_id != self._topic_id:
            # Live: the topic was created again; its log may already reach past our offset. Withhold the batch.
            was, self._topic_id = self._topic_id, current_id
            self._offset_lost("recreated", f"the topic's id changed from {was} to {current_id} while reading "
                                           f"({len(raw)} records fetched from the new log withheld)")
            return []
        elif self._topic_id is None:
            self._topic_id = current_id
        now = time.monotonic()
        if not raw:
            idle_stop_s = self._config.idle_stop_s
            if idle_stop_s is not None and now - self._last_record_at >= idle_stop_s:
                raise StopIteration
            self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=self._config.poll_timeout_s)
            return []
        self._last_record_at = now
        self._next_awake = None  # more may be buffered: ask again at once
        self._next_offset = raw[-1].offset + 1
        self._last = _fingerprint(raw[-1])
        return [
            KafkaRecord(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=b"" if r.value is None else r.value,
                timestamp_ms=-1 if r.timestamp is None else r.timestamp,
            )
            for r in raw
        ]

    def next_awake(self) -> Optional[datetime]:
        return self._next_awake

    def snapshot(self) -> dict:
        return {"offset": self._next_offset, "last": self._last, "partitions": self._partitions,
                "topic_id": self._topic_id}

    def close(self) -> None:
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[KafkaRecord, dict]):
    """Read one topic; every Kafka partition is a Bytewax partition.

    Emits `KafkaRecord`s. Resume state is a small dict per partition (the
    next offset, a fingerprint of the record before it and the partition
    count; a plain int offset from older stores is accepted), stored by
    Bytewax recovery; nothing is committed to Kafka. A saved position the
    broker no longer has is handled by `KafkaSourceConfig.on_offset_loss`.
    Partition keys are "<topic>-<partition>", so a recovery store written for
    one topic is never applied to another.
    """

    def __init__(self, config: KafkaSourceConfig) -> None:
        self.config = config

    def _partitions(self) -> tuple[set[int], set[str]]:
        consumer = _consumer(self.config.brokers, client_id="edgetune-list-parts")
        try:
            partitions = consumer.partitions_for_topic(self.config.topic)
            known = set() if partitions else consumer.topics()
        finally:
            consumer.close()
        return set(partitions or ()), known

    def list_parts(self) -> list[str]:
        partitions, known = self._partitions()
        if not partitions:
            msg = (
                f"KafkaSource: topic {self.config.topic!r} does not exist on "
                f"{','.join(self.config.brokers)}; expected one of {sorted(known)}; "
                "create it first, e.g. ensure_topics(brokers, {topic: partitions})"
            )
            raise ValueError(msg)
        return [f"{self.config.topic}-{p}" for p in sorted(partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Union[dict, int, None]
    ) -> _KafkaSourcePartition:
        topic, _, partition = for_part.rpartition("-")
        if topic != self.config.topic or not partition.isdigit():
            msg = (
                f"step {step_id!r}: asked to build partition {for_part!r}; expected "
                f"'{self.config.topic}-<n>'. Is the recovery store from another topic?"
            )
            raise ValueError(msg)
        if _is_count(resume_state, minimum=0):  # written before fingerprints: an offset alone
            resume_state = {"offset": resume_state}
        if resume_state is not None and not (
            isinstance(resume_state, dict) and _is_count(resume_state.get("offset"), minimum=0)
        ):
            msg = (
                f"step {step_id!r}: resume state for {for_part!r} is {resume_state!r:.200}; "
                "expected {'offset': int >= 0, ...}. Is the recovery store from another source?"
            )
            raise ValueError(msg)
        partitions, _ = self._partitions()
        return _KafkaSourcePartition(step_id, self.config, int(partition), resume_state, len(partitions))


# --- sink -----------------------------------------------------------------


def _encode(step_id: str, item: Any) -> tuple[Optional[bytes], bytes]:
    """Turn a `SinkItem` into key and value bytes, or raise naming the step."""
    if not isinstance(item, tuple) or len(item) != 2:
        msg = (
            f"step {step_id!r}: KafkaSink expects (key, value) tuples; "
            f"got {type(item).__name__} {item!r:.200}"
        )
        raise TypeError(msg)
    key, value = item
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif key is not None and not isinstance(key, bytes):
        msg = (
            f"step {step_id!r}: KafkaSink key must be str, bytes or None; "
            f"got {type(key).__name__} {key!r:.200}"
        )
        raise TypeError(msg)
    if isinstance(value, dict):
        value = json_line(value, sort_keys=False).encode("utf-8")
    elif isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes):
        msg = (
            f"step {step_id!r}: KafkaSink value must be bytes, str or dict; "
            f"got {type(value).__name__} {value!r:.200}"
        )
        raise TypeError(msg)
    return key, value


class _KafkaSinkPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, step_id: str, config: KafkaSinkConfig, worker_index: int) -> None:
        self._step_id = step_id
        self._config = config
        self._client_id = f"edgetune-{step_id}-{worker_index}"
        self._topic = config.topic
        self._max_bytes = config.max_request_bytes
        self._producer = self._new_producer()

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=list(self._config.brokers),
            client_id=self._client_id,
            acks="all",
            max_request_size=self._config.max_request_bytes,
            allow_auto_create_topics=False,
            # Not idempotent: the sink is at-least-once anyway (consumers de-duplicate by key), and an
            # idempotent producer cannot go on when a broker restarts without its producer state
            # (UnknownProducerIdError, then a failing InitProducerId: the run stopped in the trial).
            enable_idempotence=False,
        )

    def write_batch(self, items: list[SinkItem]) -> None:
        encoded = [self._checked(item) for item in items]
        failed, pending = self._send(encoded)
        if failed:
            first = failed[0].exception
            msg = (
                f"step {self._step_id!r}: {len(failed)} of {len(pending)} records "
                f"were not written to topic {self._topic!r}; first error: {first!r}"
            )
            raise RuntimeError(msg) from first

    def _checked(self, item: SinkItem) -> tuple[Optional[bytes], bytes]:
        key, value = _encode(self._step_id, item)
        # The producer would fail the send with MessageSizeTooLargeError; say which step
        # and limit instead. edgetune's own records are bounded (see operators.config).
        size = len(value) + len(key or b"") + _RECORD_OVERHEAD
        if size > self._max_bytes:
            msg = (
                f"step {self._step_id!r}: a record of {size} bytes (with overhead) exceeds "
                f"max_request_bytes={self._max_bytes} for topic {self._topic!r}; bound the "
                "record upstream or raise max_request_bytes (and the broker's message.max.bytes)"
            )
            raise ValueError(msg)
        return key, value

    def _send(self, encoded: list[tuple[Optional[bytes], bytes]]) -> tuple[list, list]:
        """Send every record and block until the broker has them; returns (failed, all) futures."""
        pending = [self._producer.send(self._topic, key=key, value=value) for key, value in encoded]
        # Block until the broker has every record of the batch; Bytewax
        # only moves on (and snapshots upstream) after we return.
        self._producer.flush()
        return [f for f in pending if not f.succeeded()], pending

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


class KafkaSink(DynamicSink[SinkItem]):
    """Write `(key, value)` items to one topic from every worker.

    Keys are str (UTF-8), bytes or None; values bytes, str (UTF-8) or dict
    (compact UTF-8 JSON). Records with equal keys land on the same Kafka
    partition. Each batch is flushed with acks="all" before the step moves
    on: at-least-once, so consumers should de-duplicate (e.g. by event_id).
    """

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaSinkPartition:
        return _KafkaSinkPartition(step_id, self.config, worker_index)


# --- admin ----------------------------------------------------------------


def ensure_topics(
    brokers: Iterable[str], topics: Mapping[str, int], *, replication_factor: int = 1
) -> None:
    """Create each topic in `topics` (name -> partition count) that is missing.

    Topics that already exist are left as they are, whatever their
    partition count. Returns once the new topics are visible in metadata.
    """
    brokers = _check_brokers("ensure_topics", brokers)
    for name, partitions in topics.items():
        _check_topic("ensure_topics", name)
        if not _is_count(partitions, minimum=1):
            msg = f"ensure_topics: topic {name!r} has partitions={partitions!r}; expected an int >= 1"
            raise ValueError(msg)
    if not topics:
        return
    admin = KafkaAdminClient(bootstrap_servers=list(brokers), client_id="edgetune-admin")
    try:
        request = {
            name: {"num_partitions": partitions, "replication_factor": replication_factor}
            for name, partitions in topics.items()
        }
        response = admin.create_topics(request, raise_errors=False)
        created = []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code != _TOPIC_ALREADY_EXISTS:
                msg = (
                    f"ensure_topics: creating topic {result['name']!r} failed with "
                    f"Kafka error {code}: {result.get('error_message')}"
                )
                raise RuntimeError(msg)
        admin.wait_for_topics(created)
    finally:
        admin.close()
