"""Event and annotation schema, and validation that returns bad input as data.

A conversation event is a JSON object with ``event_id``, ``user_id``, ``ts``
(RFC 3339 string or epoch milliseconds), ``prompt``, optional ``response`` and
optional ``meta``. An annotation is the user's preferred answer to an event the
device asked about: ``event_id``, ``user_id``, ``response``, ``ts``.

Validation never raises on bad input: it returns a :class:`Rejected` carrying a
machine-readable ``reason`` and the raw payload, so the flow can send it to the
dead-letter output and keep running.

>>> parse_event(b'{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "hi"}')
Event(event_id='e1', user_id='u1', ts_ms=0, prompt='hi', response=None, meta={})
>>> parse_event(b'{"event_id": "e1"').reason
'malformed_json'
>>> parse_event({"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "  "}).reason
'empty_prompt'
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

if TYPE_CHECKING:
    from operators.redact import Redactor

REASONS = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_field",
    "empty_prompt",
    "empty_response",
    "too_large",
    "bad_timestamp",
    "duplicate_event",
    "control_chars",
    "pii",
    "too_deep",
    "unknown_event",
)
"""Every reason a payload can be dead-lettered for (``duplicate_event`` and ``unknown_event``, an answer
whose event never came, are found by the per-user state, the others by validation)."""

_EVENT_FIELDS = {"event_id": True, "user_id": True, "ts": True, "prompt": True, "response": False, "meta": False}
_ANNOTATION_FIELDS = {"event_id": True, "user_id": True, "ts": True, "response": True}
_MAX_ID_CHARS = 256
MAX_META_DEPTH = 32
"""Deepest nesting of lists and objects ``meta`` may hold. Deeper meta is ``too_deep``: every
later step that walks it (NFC, snapshots, JSON outputs) recurses, and a few hundred levels
exhaust Python's recursion limit (a crash on every restart at the same message)."""

ControlChars = Literal["reject", "strip"]
# C0 controls but tab, newline and carriage return; DEL; C1 controls (Unicode category Cc).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# JSON may spell half a UTF-16 pair ("\ud800"): such a str cannot be written as UTF-8 anywhere.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Event:
    """A validated conversation event; ``response`` is ``None`` when unlabeled."""

    event_id: str
    user_id: str
    ts_ms: int
    prompt: str
    response: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)
    """Where the payload was read (``topic/partition/offset``, ``replay/<n>``): a dead letter's idempotency key."""

    @property
    def text(self) -> str:
        """The text that is embedded and scored: prompt, then response when known."""
        return self.prompt if self.response is None else f"{self.prompt} {self.response}"


@dataclass(frozen=True)
class Annotation:
    """A user's preferred response to an event the device asked about."""

    event_id: str
    user_id: str
    ts_ms: int
    response: str
    source: str | None = field(default=None, compare=False, repr=False)
    """Where the payload was read, as ``Event.source``."""


@dataclass(frozen=True)
class Rejected:
    """A payload that failed validation, with why and the payload itself.

    ``pii``: for reason ``pii``, what was found, per kind (the payload itself is redacted only
    when it is cut to a dead-letter excerpt, ``flows.deadletters``).
    """

    kind: ClassVar[str] = "dead_letter"  # the per-user step emits one for a repeated event id, too

    reason: str
    detail: str
    raw: str
    raw_encoding: str = "utf-8"
    user_id: str | None = None
    event_id: str | None = None
    pii: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    """Where the payload was read, as ``Event.source``."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
            "raw_encoding": self.raw_encoding,
            "user_id": self.user_id,
            "event_id": self.event_id,
        }
        if self.pii:
            out["pii"] = dict(self.pii)
        if self.source is not None:
            out["source"] = self.source
        return out


Parsed = Union[Event, Annotation, Rejected]


def parse_event(raw: bytes | str | dict, *, max_chars: int = 20_000, control_chars: ControlChars = "reject",
                redactor: Redactor | None = None, found: dict[str, int] | None = None) -> Event | Rejected:
    r"""Validate one conversation event; see the module docstring for the schema.

    Text (prompt, response, the strings in ``meta``) is NFC-normalized. Control characters
    other than tab, newline and carriage return dead-letter the event as ``control_chars``,
    or, with ``control_chars="strip"``, are removed; in ids they are always rejected (a
    stripped id would be another event's). Lone UTF-16 surrogates are ``invalid_utf8``.

    With a ``redactor`` (``operators.redact``), PII in the text is replaced by tokens, or, if
    the redactor's action is ``"drop"``, the event is dead-lettered as ``pii``. Ids are never
    rewritten: they are identities (keep them pseudonymous). ``found``, if given, is filled with
    how many pieces of each kind were replaced (for metrics; the event itself does not carry
    them, so nothing about its PII reaches the per-user state).

    >>> from operators.redact import Redactor
    >>> found = {}
    >>> parse_event('{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "I am ann@example.org"}',
    ...             redactor=Redactor(), found=found).prompt, found
    ('I am [EMAIL]', {'email': 1})
    >>> parse_event('{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "I am ann@example.org"}',
    ...             redactor=Redactor(action="drop")).detail
    'prompt holds PII (email 1); dropped as privacy.pii is drop'

    >>> parse_event('{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "a\\u0000b"}').reason
    'control_chars'
    >>> parse_event('{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "a\\u0000b"}', control_chars="strip").prompt
    'ab'
    >>> parse_event('{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "cafe\\u0301"}').prompt == "caf\u00e9"
    True
    """
    checked = _object_with_timestamp(raw, _EVENT_FIELDS, control_chars)
    if isinstance(checked, Rejected):
        return checked
    obj, ts = checked
    prompt, response, meta = obj["prompt"], obj.get("response"), obj.get("meta", {})
    if not prompt.strip():
        return _reject("empty_prompt", "prompt is empty or whitespace", raw, obj)
    if response is not None and not response.strip():
        return _reject("empty_response", "response is present but empty; omit it for an unlabeled event", raw, obj)
    size = len(prompt) + len(response or "")
    if size > max_chars:
        return _reject("too_large", f"prompt+response has {size} characters, limit is {max_chars}", raw, obj)
    private = _without_pii({"prompt": prompt, "response": response, "meta": dict(meta)}, redactor, raw, obj)
    if isinstance(private, Rejected):
        return private
    text, pii = private
    _add(found, pii)
    return Event(obj["event_id"], obj["user_id"], ts, text["prompt"], text["response"], text["meta"])


def parse_annotation(raw: bytes | str | dict, *, max_chars: int = 20_000, control_chars: ControlChars = "reject",
                     redactor: Redactor | None = None, found: dict[str, int] | None = None) -> Annotation | Rejected:
    """Validate one annotation (text rules as in :func:`parse_event`).

    >>> parse_annotation('{"event_id": "e1", "user_id": "u1", "ts": "2024-01-01T00:00:00Z", "response": "ok"}')
    Annotation(event_id='e1', user_id='u1', ts_ms=1704067200000, response='ok')
    """
    checked = _object_with_timestamp(raw, _ANNOTATION_FIELDS, control_chars)
    if isinstance(checked, Rejected):
        return checked
    obj, ts = checked
    if not obj["response"].strip():
        return _reject("empty_response", "annotation response is empty", raw, obj)
    if len(obj["response"]) > max_chars:
        return _reject("too_large", f"response has {len(obj['response'])} characters, limit is {max_chars}", raw, obj)
    private = _without_pii({"response": obj["response"]}, redactor, raw, obj)
    if isinstance(private, Rejected):
        return private
    text, pii = private
    _add(found, pii)
    return Annotation(obj["event_id"], obj["user_id"], ts, text["response"])


def parse_item(item: tuple[str, bytes | str | dict], *, max_chars: int = 20_000,
               control_chars: ControlChars = "reject", redactor: Redactor | None = None,
               found: dict[str, int] | None = None) -> Parsed:
    """Validate a ``(channel, payload)`` pair: channel ``"event"`` or ``"annotation"``.

    >>> parse_item(("annotation", {"event_id": "e1", "user_id": "u1", "ts": 3, "response": "yes"})).response
    'yes'
    """
    channel, raw = item
    if channel == "event":
        return parse_event(raw, max_chars=max_chars, control_chars=control_chars, redactor=redactor, found=found)
    if channel == "annotation":
        return parse_annotation(raw, max_chars=max_chars, control_chars=control_chars, redactor=redactor,
                                found=found)
    raise ValueError(f"parse_item: channel must be 'event' or 'annotation', got {channel!r}")


def _object_with_timestamp(raw: bytes | str | dict, spec: dict[str, bool],
                           control_chars: ControlChars) -> tuple[dict, int] | Rejected:
    """Decode, check the fields against ``spec``, clean the text and parse ``ts``: what events and annotations share."""
    if control_chars not in ("reject", "strip"):
        raise ValueError(f"control_chars={control_chars!r} must be 'reject' or 'strip' (setting source.control_chars)")
    obj = _decode(raw)
    if isinstance(obj, Rejected):
        return obj
    bad = _check_fields(obj, spec, raw)
    if bad:
        return bad
    obj = _clean_text(obj, raw, control_chars)
    if isinstance(obj, Rejected):
        return obj
    ts = _timestamp(obj["ts"])
    if ts is None:
        return _reject("bad_timestamp", f"ts must be RFC 3339 or epoch ms, got {obj['ts']!r}", raw, obj)
    return obj, ts


def _decode(raw: bytes | str | dict) -> dict | Rejected:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected("invalid_utf8", str(exc), base64.b64encode(bytes(raw)).decode("ascii"), "base64")
    elif isinstance(raw, str):
        text = raw
    else:
        return Rejected("not_an_object", f"expected bytes, str or dict, got {type(raw).__name__}", repr(raw))
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejected("malformed_json", str(exc), text)
    if not isinstance(obj, dict):
        return Rejected("not_an_object", f"expected a JSON object, got {type(obj).__name__}", text)
    return obj


def _check_fields(obj: dict, spec: dict[str, bool], raw: Any) -> Rejected | None:
    for name, required in spec.items():
        if required and name not in obj:
            return _reject("missing_field", f"field {name!r} is required", raw, obj)
    unknown = sorted(set(obj) - set(spec))
    if unknown:
        return _reject("unknown_field", f"unknown field(s) {unknown}; put extra data under 'meta'", raw, obj)
    for name in ("event_id", "user_id"):
        value = obj[name]
        if not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS:
            return _reject("wrong_type", f"{name} must be a non-empty string of at most {_MAX_ID_CHARS} characters, got {value!r:.80}", raw, obj)
    for name in ("prompt", "response"):
        optional_null = name in spec and not spec[name] and obj.get(name) is None
        if name in obj and not optional_null and not isinstance(obj[name], str):
            return _reject("wrong_type", f"{name} must be a string, got {type(obj[name]).__name__}", raw, obj)
    if "meta" in obj and not isinstance(obj["meta"], dict):
        return _reject("wrong_type", f"meta must be an object, got {type(obj['meta']).__name__}", raw, obj)
    if "meta" in obj and _depth_over(obj["meta"], MAX_META_DEPTH):
        return _reject("too_deep", f"meta nests lists and objects more than {MAX_META_DEPTH} levels deep", raw, obj)
    return None


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (walked without recursion).

    >>> _depth_over({"a": [1, {"b": []}]}, 4), _depth_over({"a": [1, {"b": []}]}, 3)
    (False, True)
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _clean_text(obj: dict, raw: Any, control_chars: ControlChars) -> dict | Rejected:
    r"""``obj`` with its text NFC-normalized and, under ``"strip"``, control characters removed; or why not.

    >>> _clean_text({"user_id": "u", "event_id": "e\x1b", "prompt": "p"}, "", "strip").reason
    'control_chars'
    >>> _clean_text({"user_id": "u", "event_id": "e", "prompt": "x\x7fy", "meta": {"k": ["\x1b[1m"]}}, "", "strip")
    {'user_id': 'u', 'event_id': 'e', 'prompt': 'xy', 'meta': {'k': ['[1m']}}
    """
    for name in ("event_id", "user_id"):
        problem = _text_problem(obj[name])
        if problem:  # ids are identities: never rewritten, so stripping cannot merge two events
            reason, what = problem
            return _reject(reason, f"{name} {what}", raw, obj)
    cleaned = dict(obj)
    for name in ("prompt", "response", "meta"):
        if name not in obj or obj[name] is None:
            continue
        try:
            cleaned[name] = _clean_value(obj[name], name, control_chars)
        except _BadText as bad:
            return _reject(bad.reason, bad.detail, raw, obj)
    return cleaned


class _BadText(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _clean_value(value: Any, where: str, control_chars: ControlChars) -> Any:
    """Strings NFC-normalized (and stripped of control characters if asked), inside lists and dicts too."""
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem and (problem[0] != "control_chars" or control_chars == "reject"):
            raise _BadText(problem[0], f"{where} {problem[1]}")
        if problem:
            value = _CONTROL.sub("", value)
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_clean_value(v, f"{where}[{i}]", control_chars) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {_clean_value(k, f"{where} key", control_chars): _clean_value(v, f"{where}.{k}", control_chars)
                for k, v in value.items()}
    return value


def _text_problem(text: str) -> tuple[str, str] | None:
    r"""``(reason, what)`` when ``text`` holds a lone surrogate or a control character, else None.

    >>> _text_problem("tab\tnewline\ncr\r ok")
    >>> _text_problem("bell\x07")
    ('control_chars', 'holds control character U+0007 at offset 4 (tab, newline and carriage return are allowed)')
    """
    found = _SURROGATE.search(text)
    if found:
        return "invalid_utf8", f"holds a lone UTF-16 surrogate U+{ord(found.group()):04X} at offset {found.start()}"
    found = _CONTROL.search(text)
    if found:
        return ("control_chars", f"holds control character U+{ord(found.group()):04X} at offset {found.start()} "
                "(tab, newline and carriage return are allowed)")
    return None


def _without_pii(text: dict[str, Any], redactor: Redactor | None, raw: Any,
                 obj: dict) -> tuple[dict[str, Any], dict[str, int]] | Rejected:
    """``text`` (field -> value) with PII replaced and the counts per kind; or, under ``drop``, why not."""
    if redactor is None:
        return text, {}
    out: dict[str, Any] = {}
    total: dict[str, int] = {}
    holding = []
    for name, value in text.items():
        out[name], found = redactor.redact_value(value)
        if found:
            holding.append(name)
            for kind, n in found.items():
                total[kind] = total.get(kind, 0) + n
    if total and redactor.action == "drop":
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(total.items()))
        rejected = _reject("pii", f"{', '.join(holding)} {'holds' if len(holding) == 1 else 'hold'} PII ({kinds}); "
                           "dropped as privacy.pii is drop", raw, obj)
        return dataclasses.replace(rejected, pii=total)
    return out, total


def _add(found: dict[str, int] | None, pii: dict[str, int]) -> None:
    if found is not None:
        for kind, n in pii.items():
            found[kind] = found.get(kind, 0) + n


MAX_TS_MS = 253_402_300_799_999
"""The latest epoch-ms timestamp accepted: 9999-12-31T23:59:59.999Z, the end of RFC 3339 (and of
``datetime``). A larger integer is ``bad_timestamp``: it would not fit the decision log's int64
column, and the sink would fail on it at every restart."""


def _timestamp(value: Any) -> int | None:
    """Epoch ms from an int or an RFC 3339 string, or None.

    >>> _timestamp(1_700_000_000_000), _timestamp(-1), _timestamp(10**30), _timestamp("2024-01-01T00:00:00Z")
    (1700000000000, None, None, 1704067200000)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_TS_MS else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp() * 1000)
    return None


def _reject(reason: str, detail: str, raw: Any, obj: dict) -> Rejected:
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).decode("utf-8")
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, default=str, ensure_ascii=False)
    user = obj.get("user_id") if isinstance(obj.get("user_id"), str) else None
    event = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    return Rejected(reason, detail, text, "utf-8", user, event)
