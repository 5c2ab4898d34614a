"""Poison-message safety: a size limit before parsing, and dead letters of bounded size.

Two rules keep one bad message from stopping the stream or filling the disk:

- :func:`parse_bounded` rejects a payload larger than ``max_bytes`` as
  ``too_large`` *before* decoding it, so no JSON parser, validator or embedder
  ever sees it.
- :func:`bound_dead_letter` turns a rejected payload into a record of bounded
  size: at most ``excerpt_bytes`` of the payload (UTF-8 when the excerpt decodes,
  base64 otherwise), plus its full size and sha256, so an operator can still
  match the record against the producer's copy. ``detail``, ``user_id``,
  ``event_id`` and ``source`` are cut to fixed lengths too (a wrong-typed id may be huge).
  Every sink of dead letters (JSONL, Kafka topic) then writes a few KiB at most,
  whatever the input was.
- With a redactor (``operators.redact``; setting ``privacy.pii`` redact or drop), the
  excerpt and ``detail`` are redacted before they are cut, so no dead letter holds PII the
  redactor finds; ``raw_pii`` counts what was replaced. ``raw_bytes`` and ``raw_sha256``
  still describe the payload as received, so it can be matched with the producer's copy:
  a digest of the whole payload holds none of its text.

>>> d = bound_dead_letter({"reason": "malformed_json", "detail": "Expecting value", "raw": "x" * 10_000,
...                        "raw_encoding": "utf-8", "user_id": None, "event_id": None}, excerpt_bytes=8)
>>> d["raw"], d["raw_bytes"], d["raw_truncated"], d["raw_sha256"] == hashlib.sha256(b"x" * 10_000).hexdigest()
('xxxxxxxx', 10000, True, True)
>>> parse_bounded(("event", b"{" + b" " * 2000 + b"}"), max_bytes=1024, max_chars=100).reason
'too_large'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from operators.events import Parsed, Rejected, parse_item
from operators.redact import MAX_SPAN, Redactor

__all__ = ["DETAIL_CHARS", "ID_CHARS", "bound_dead_letter", "dead_letter_bytes", "json_line", "parse_bounded"]

DETAIL_CHARS = 1024
"""Longest ``detail`` a dead letter keeps (an unknown-field list can be as long as the payload)."""
ID_CHARS = 256
"""Longest ``user_id`` / ``event_id`` a dead letter keeps (the validator's own limit for a valid id)."""
_ENVELOPE_BYTES = 2048
"""Room for the JSON keys, reason, sha256 and sizes around the cut fields (measured: under 400 bytes)."""


def dead_letter_bytes(excerpt_bytes: int) -> int:
    """An upper bound of one bounded dead letter's JSON size, for sizing producers.

    JSON escapes grow text up to 6 bytes per byte or character (``\\u0000``);
    base64 grows the excerpt by only 4/3.

    >>> dead_letter_bytes(4096)
    37394
    """
    return 6 * excerpt_bytes + 6 * (DETAIL_CHARS + 3 * ID_CHARS + 3) + _ENVELOPE_BYTES  # ids and source


def parse_bounded(item: tuple[str, Any], *, max_bytes: int, max_chars: int, **validation: Any) -> Parsed:
    """Validate a ``(channel, payload)`` item, rejecting a payload over ``max_bytes`` before parsing it.

    Only raw payloads (bytes or str, as read from Kafka or a JSONL line) are
    measured; a dict was decoded by a replay reader already and is bounded by
    ``max_chars`` in validation. ``validation`` goes on to
    ``operators.events.parse_item`` (e.g. ``control_chars``).
    """
    channel, raw = item
    size = _size(raw)
    if size is not None and size > max_bytes:
        detail = (f"payload has {size} bytes, max_message_bytes is {max_bytes}; it was not parsed "
                  "(raise max_message_bytes if such messages are legitimate)")
        if isinstance(raw, str):
            return Rejected("too_large", detail, raw)
        try:
            return Rejected("too_large", detail, bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            return Rejected("too_large", detail, base64.b64encode(bytes(raw)).decode("ascii"), "base64")
    return parse_item(item, max_chars=max_chars, **validation)


def bound_dead_letter(record: dict[str, Any], *, excerpt_bytes: int, redactor: Redactor | None = None) -> dict[str, Any]:
    """A dead-letter record with the payload cut to ``excerpt_bytes`` and its size and sha256 added.

    ``record`` is what the validator or the per-user state emits: ``reason``,
    ``detail``, ``raw`` (text, or base64 when ``raw_encoding`` is ``"base64"``),
    ``user_id``, ``event_id``. The result has the same keys plus ``raw_bytes``,
    ``raw_sha256`` and ``raw_truncated``; ``raw_encoding`` says how the excerpt
    is written. The input is not changed.

    >>> d = bound_dead_letter({"reason": "invalid_utf8", "detail": "", "raw": "/w==", "raw_encoding": "base64"},
    ...                       excerpt_bytes=64)
    >>> d["raw"], d["raw_encoding"], d["raw_bytes"], d["raw_truncated"]
    ('/w==', 'base64', 1, False)
    >>> bound_dead_letter({"reason": "r", "detail": "", "raw": "é" * 3}, excerpt_bytes=3)["raw"]  # no half character
    'é'
    >>> from operators.redact import Redactor
    >>> d = bound_dead_letter({"reason": "malformed_json", "detail": "", "raw": '{"prompt": "mail ann@example.org'},
    ...                       excerpt_bytes=64, redactor=Redactor())
    >>> d["raw"], d["raw_pii"], d["raw_bytes"]
    ('{"prompt": "mail [EMAIL]', {'email': 1}, 32)
    """
    payload = _payload_bytes(record.get("raw"), record.get("raw_encoding", "utf-8"))
    source, found = payload, {}
    if redactor is not None:
        source, found = _redacted_head(payload, excerpt_bytes, redactor)
    excerpt = source[:excerpt_bytes]
    text = _utf8_prefix(excerpt, whole=len(source) <= excerpt_bytes)
    out = dict(record)
    if text is not None:
        out["raw"], out["raw_encoding"] = text, "utf-8"
    else:
        out["raw"], out["raw_encoding"] = base64.b64encode(excerpt).decode("ascii"), "base64"
    out["raw_bytes"] = len(payload)
    out["raw_sha256"] = hashlib.sha256(payload).hexdigest()
    out["raw_truncated"] = len(payload) > excerpt_bytes
    detail = record.get("detail")
    if redactor is not None and isinstance(detail, str):
        head = detail[:DETAIL_CHARS + MAX_SPAN]
        redacted, more = _redacted_text(head, len(head) == len(detail), redactor)
        detail = redacted if len(head) == len(detail) else redacted + "…"
        _add(found, more)
    out["detail"] = _cut(detail, DETAIL_CHARS)
    if found:
        out["raw_pii"] = found
    for key in ("user_id", "event_id"):
        out[key] = _cut(record.get(key), ID_CHARS)
    if record.get("source") is not None:
        out["source"] = _cut(record["source"], ID_CHARS)
    return out


def _redacted_head(payload: bytes, excerpt_bytes: int, redactor: Redactor) -> tuple[bytes, dict[str, int]]:
    """The start of ``payload``, long enough for an excerpt of ``excerpt_bytes``, with its PII replaced.

    Only the first ``excerpt_bytes + 4 * MAX_SPAN`` bytes are read: a 20 MB payload is not
    scanned whole. Bytes that are not UTF-8 come back as they were (``surrogateescape``).

    >>> _redacted_head(b"call 415-555-0132 now", 8, Redactor())
    (b'call [PHONE] now', {'phone': 1})
    """
    window = payload[:excerpt_bytes + 4 * MAX_SPAN]  # MAX_SPAN characters are at most 4 * MAX_SPAN bytes
    text, counts = _redacted_text(window.decode("utf-8", "surrogateescape"), len(window) == len(payload), redactor)
    return text.encode("utf-8", "surrogateescape"), counts


def _redacted_text(text: str, whole: bool, redactor: Redactor) -> tuple[str, dict[str, int]]:
    """``text`` with its PII replaced; when ``text`` is only the head of something longer (not ``whole``),
    its last ``MAX_SPAN`` characters are let go unless a find reaches into them.

    A piece of PII cut by the end of the head might not be recognised; no find is longer than
    ``MAX_SPAN``, so what is kept holds no part of one.

    >>> head = "mail ann@example.org" + " " * MAX_SPAN + "bob@exam"  # the rest, "ple.org", was not read
    >>> text, counts = _redacted_text(head, False, Redactor())  # 284 characters read, the first 284 - 256 kept
    >>> text == "mail [EMAIL]" + " " * 8, counts
    (True, {'email': 1})
    """
    found = redactor.find(text)
    if not whole:
        keep = max(0, len(text) - MAX_SPAN)
        found = [f for f in found if f.start < keep]
        text = text[:max([keep, *(f.end for f in found)])]
    return redactor.replace(text, found)


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n


def json_line(obj: Any, *, sort_keys: bool = True) -> str:
    """Compact JSON text of ``obj`` that always encodes as UTF-8, so no sink fails on what a user typed.

    Text stays readable (non-ASCII characters as they are); only when ``obj`` holds
    a lone surrogate (JSON input may escape one, ``"\\udc80"``) is everything
    written with ASCII escapes, which decode back to the same string.

    >>> json_line({"b": "é", "a": 1})
    '{"a":1,"b":"é"}'
    >>> print(json_line({"p": chr(0xDC80)}))
    {"p":"\\udc80"}
    """
    text = json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, sort_keys=sort_keys, separators=(",", ":"))
    return text


def _size(raw: Any) -> int | None:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return len(raw)
    if isinstance(raw, str):
        # At least len(raw) bytes; encode only when it could be over the limit.
        return len(raw.encode("utf-8", "surrogatepass"))
    return None


def _payload_bytes(raw: Any, encoding: str) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    text = raw if isinstance(raw, str) else str(raw)
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass  # not base64 after all: keep the text as it came
    try:
        return text.encode("utf-8", "surrogateescape")  # bytes a reader escaped come back as they were
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate from a JSON escape: not UTF-8, so base64


def _utf8_prefix(excerpt: bytes, *, whole: bool) -> str | None:
    """``excerpt`` as text, dropping a character the cut split in two; None when it is not UTF-8."""
    try:
        return excerpt.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut in the middle of a character shows as an incomplete sequence at the very end.
        if not whole and exc.start >= len(excerpt) - 3 and exc.reason == "unexpected end of data":
            try:
                return excerpt[: exc.start].decode("utf-8")
            except UnicodeDecodeError:
                return None
        return None


def _cut(value: Any, limit: int) -> Any:
    """``value`` cut to ``limit`` characters, lone surrogates spelled out so the text encodes as UTF-8."""
    if not isinstance(value, str):
        return value
    if len(value) > limit:
        value = value[:limit] + "…"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
