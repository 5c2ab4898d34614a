"""Hostile input for the fault suite: hypothesis strategies for what a broken or malicious producer sends.

Each example is ``(channel, payload)``: channel ``"event"`` or ``"annotation"``, payload the
raw bytes of one Kafka message or JSONL line. The mix: events and annotations that are valid
but awkward (RTL text, combining marks, emoji and ZWJ sequences, zero-width and bidi controls,
a small pool of users and event ids so repeats happen), and everything that is not: invalid
JSON (cut short, garbage, invalid UTF-8), JSON that is not an object, missing and unknown
fields, wrong types, empty and huge strings, control characters, lone surrogates as JSON
escapes, negative, huge and malformed timestamps, NaN literals, a byte-order mark, deeply
nested JSON, and payloads over the size limit. Payloads never hold a raw newline or carriage
return and are never blank, so one payload is exactly one JSONL record.

The sizes assume the fault suite's limits (:data:`LIMITS`): prompts up to ``max_chars`` are
accepted, payloads over ``max_message_bytes`` are cut before parsing.

    corpus = draw(hostile(), 1200, seed=0)   # the same 1200 payloads in every run
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

LIMITS = {"max_chars": 2000, "max_message_bytes": 32_768, "dead_letter_excerpt_bytes": 512}
"""Settings the hostile corpus is sized for (small, so a thousand payloads replay in seconds)."""

USERS = ["ann", "Ann", "ben", "z\u00fcrich", "\u05e9\u05e8\u05d4", "\U0001F469\u200d\U0001F4BB", "u" * 256]
AWKWARD = [
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",  # RTL Hebrew
    "\u0645\u0631\u062d\u0628\u0627 123 abc",  # RTL Arabic with LTR digits
    "cafe\u0301 re\u0301sume\u0301",  # combining marks (NFC composes them)
    "\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467",  # skin tone, ZWJ family
    "zero\u200bwidth\u2060join\ufeffbom",  # zero-width characters, BOM inside text
    "\u202eevil\u202c override",  # bidi override
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",  # fullwidth
    "line\u2028sep\u2029para \u0085nel",  # Unicode line separators, NEL (C1 control)
    "Z\u0351\u0308\u0353\u035a\u0320a\u036b\u0306lgo",  # stacked combining marks
    "tab\there\nnew line\r\ncr",  # allowed whitespace controls
]
CONTROL = ["\x00", "\x07", "\x1b[31m", "\x7f", "\x9b", "\x0b", "\x1f"]
SURROGATES = ["\ud800", "\udfff", "\udc80", "\ud83d"]  # lone halves of UTF-16 pairs


def _words() -> st.SearchStrategy[str]:
    word = st.sampled_from(["how", "do", "I", "keep", "my", "garden", "code", "bike", "healthy", "bread", "taxes"])
    return st.lists(word, min_size=1, max_size=12).map(" ".join)


def text() -> st.SearchStrategy[str]:
    """Text an event may carry: plain, awkward Unicode, arbitrary code points, or spiced with controls."""
    plain = _words()
    return _mostly(st.one_of(plain, st.sampled_from(AWKWARD),
                             st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)),
                   st.one_of(st.tuples(plain, st.sampled_from(CONTROL), plain).map("".join),
                             st.tuples(plain, st.sampled_from(SURROGATES), plain).map("".join),
                             st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)))


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], tenths_good: int = 8) -> st.SearchStrategy[Any]:
    """``good`` in ``tenths_good`` of ten draws, else ``bad``."""
    return st.integers(0, 9).flatmap(lambda k: good if k < tenths_good else bad)


def ident(pool: list[str]) -> st.SearchStrategy[Any]:
    """An id field: mostly from a small pool (so repeats happen), sometimes broken."""
    return _mostly(st.sampled_from(pool), st.one_of(
        st.just(""), st.just("x" * 300), st.integers(-5, 5), st.none(), st.just(["e1"]),
        st.sampled_from(pool).map(lambda i: i + "\x00"), st.sampled_from(pool).map(lambda i: i + "\ud800"),
        st.sampled_from(pool).map(lambda i: "e\u0301" + i),  # NFD in an id: kept as given
    ), tenths_good=9)


def timestamp() -> st.SearchStrategy[Any]:
    return _mostly(st.integers(1_600_000_000_000, 1_800_000_000_000), st.one_of(
        st.just(0), st.integers(-10**15, -1), st.just(253_402_300_799_999), st.just(2**63 - 1), st.just(2**63),
        st.just(10**30), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.just([1]),
        st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00+05:30", "2024-05-01", "0001-01-01T00:00:00Z",
                         "9999-12-31T23:59:59Z", "2024-13-45T99:00:00Z", "yesterday", "", "1700000000000"]),
    ))


def meta() -> st.SearchStrategy[Any]:
    leaf = st.one_of(_words(), st.sampled_from(AWKWARD), st.integers(), st.floats(allow_nan=True), st.booleans(),
                     st.none())
    nested = st.recursive(leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text(), kids, max_size=3),
                          max_leaves=8)
    return st.one_of(
        st.dictionaries(_words(), nested, max_size=4),
        st.integers(30, 40).map(_deep_meta),  # around the depth limit (32)
        st.integers(400, 980).map(_deep_meta),  # deep enough to exhaust recursion in naive code
        st.just("not an object"), st.just([1, 2]),
    )


def _deep_meta(depth: int) -> dict:
    value: Any = "bottom"
    for _ in range(depth - 1):
        value = [value]
    return {"k": value}


@st.composite
def event_object(draw: st.DrawFn, annotation: bool = False) -> dict:
    """An event (or annotation) object, then maybe broken: a field dropped, retyped, added or oversized."""
    obj: dict[str, Any] = {
        "event_id": draw(ident([f"e{i}" for i in range(40)])),
        "user_id": draw(ident(USERS)),
        "ts": draw(timestamp()),
    }
    if annotation:
        obj["response"] = draw(_mostly(text(), st.one_of(st.just(""), st.none(), st.integers())))
    else:
        obj["prompt"] = draw(_mostly(text(), st.one_of(
            st.just(""), st.just("   \t "), st.none(), st.integers(), st.just({"p": 1}),
            st.integers(LIMITS["max_chars"] - 5, LIMITS["max_chars"] + 5).map("q".__mul__))))
        if draw(st.booleans()):
            obj["response"] = draw(_mostly(text(), st.one_of(st.just(""), st.none(), st.integers(),
                                                             st.integers(1000, 1500).map("r".__mul__))))
        if draw(st.booleans()):
            obj["meta"] = draw(meta())
    breakage = draw(st.sampled_from(["none"] * 8 + ["drop", "extra"]))
    if breakage == "drop":
        obj.pop(draw(st.sampled_from(sorted(obj))))
    elif breakage == "extra":
        obj[draw(st.sampled_from(["extra", "Prompt", "user", "", "\u202e"]))] = draw(st.integers())
    return obj


def _dumps(obj: Any, ascii_only: bool) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return json.dumps(obj, ensure_ascii=True).encode("ascii")


def _one_line(payload: bytes) -> bytes:
    """No raw line breaks (one payload is one JSONL record) and never blank."""
    payload = payload.replace(b"\n", b" ").replace(b"\r", b" ")
    return payload if payload.strip() else b"?" + payload


@st.composite
def hostile_payload(draw: st.DrawFn, annotation: bool = False) -> bytes:
    kind = draw(st.sampled_from(["object"] * 16 + ["cut", "garbage", "binary", "scalar", "nested", "oversized",
                                                     "bom", "dupkeys"]))
    obj = draw(event_object(annotation))
    line = _dumps(obj, draw(st.booleans()))
    if kind == "cut":
        line = line[: draw(st.integers(1, max(1, len(line) - 1)))]
    elif kind == "garbage":
        line = draw(st.sampled_from([b"{not json", b"}{", b"[1, 2", b"{'single': 'quotes'}", b"nul\x00byte",
                                     b"{\"event_id\": \"e1\",}", b"\\", b"\"unterminated"]))
    elif kind == "binary":
        line = b"\xff" + draw(st.binary(min_size=0, max_size=200))  # \xff never starts UTF-8
    elif kind == "scalar":
        line = draw(st.sampled_from([b"[]", b"42", b"\"a string\"", b"null", b"true", b"[{\"event_id\": \"e1\"}]"]))
    elif kind == "nested":
        depth = draw(st.integers(500, 12_000))
        line = b"[" * depth + b"]" * depth
    elif kind == "oversized":
        size = draw(st.integers(LIMITS["max_message_bytes"] + 1, LIMITS["max_message_bytes"] + 8_000))
        line = line[:-1] + b', "pad": "' + b"x" * size + b'"}' if line.endswith(b"}") else line + b"x" * size
    elif kind == "bom":
        line = b"\xef\xbb\xbf" + line
    elif kind == "dupkeys":
        line = line[:-1] + b', "event_id": "e1"}' if line.endswith(b"}") else line
    return _one_line(line)


def hostile() -> st.SearchStrategy[tuple[str, bytes]]:
    """``(channel, payload)``: mostly events, a quarter annotations."""
    return st.one_of(
        hostile_payload().map(lambda p: ("event", p)),
        hostile_payload().map(lambda p: ("event", p)),
        hostile_payload().map(lambda p: ("event", p)),
        hostile_payload(annotation=True).map(lambda p: ("annotation", p)),
    )


def draw(strategy: st.SearchStrategy[Any], n: int, seed_value: int = 0) -> list[Any]:
    """``n`` examples of ``strategy``, the same ones for the same seed and hypothesis version.

    Hypothesis (6.131+) also draws, now and then, constants it finds in the local modules
    loaded at the time (``sys.modules``), so the same seed gave another corpus in a single test
    file than in the whole suite or the benchmark. While drawing, that source is switched off
    (a private hook, left alone if a hypothesis version lacks it); hypothesis's own constants
    stay in.
    """
    out: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(seed_value)
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - another hypothesis layout
        providers = None
    hook = getattr(providers, "_get_local_constants", None)
    if hook is not None:
        empty = type(providers._local_constants)()
        providers._get_local_constants = lambda: empty
        providers.CONSTANTS_CACHE.cache.clear()
    try:
        collect()
    finally:
        if hook is not None:
            providers._get_local_constants = hook
            providers.CONSTANTS_CACHE.cache.clear()
    return out


def digest(items: list[tuple[str, bytes]]) -> str:
    """A short sha256 of a corpus, to tell two corpora apart in results."""
    import hashlib

    h = hashlib.sha256()
    for channel, payload in items:
        h.update(channel.encode() + len(payload).to_bytes(8, "big") + payload)
    return h.hexdigest()[:16]


# --- accounting: what became of every payload ------------------------------------------------------------


def expected_outcomes(items: list[tuple[str, bytes]], dedup_window: int = 4096) -> list[tuple[str, str | None]]:
    """For each ``(channel, payload)`` in stream order: ``(outcome, raw_sha256)``.

    ``outcome`` is ``"decided"``, ``"counted"`` (a valid annotation for an event the user sent: it attaches
    or is counted in edgetune_annotations_total, and is written to no file), ``"superseded"`` (an answer
    for an event the user never sent, followed by a newer answer for the same event, which replaces it
    while both wait), or the dead-letter reason (``unknown_event``: the last answer for an event the user
    never sent); ``raw_sha256`` is what the dead letter's field of that name must be (the payload's digest;
    for a repeated event or an answer, the digest of the event or answer as the per-user state writes it
    back). A ``counted`` or ``superseded`` answer may also have a dead letter (pushed out of a full stash of
    early answers while it waited, which depends on how the two topics interleave): its digest is given
    too, and the dead letter is optional.

    The validator is the real one (``flows.deadletters.parse_bounded`` under :data:`LIMITS` and the default
    PII redaction, as the flow runs it); repeats are found as the per-user state finds them: an accepted
    event whose id the same user sent within the last ``dedup_window`` accepted events. The flow's job,
    checked by :func:`tally`, is to get each payload to that outcome: none dropped on the way, none
    written twice.
    """
    import hashlib
    from collections import deque
    from types import SimpleNamespace

    from flows.deadletters import bound_dead_letter, parse_bounded
    from operators.events import Annotation, Rejected
    from operators.state import _annotation_json, _event_json

    def digest(raw: str) -> str:
        return bound_dead_letter({"reason": "", "raw": raw}, excerpt_bytes=0)["raw_sha256"]

    redactor = default_redactor()
    recent: dict[str, deque] = {}
    accepted: set[tuple[str, str]] = set()
    answers: dict[int, tuple[str, str]] = {}  # position -> (user, event) of each valid annotation
    out: list[tuple[str, str | None]] = []
    for channel, payload in items:
        parsed = parse_bounded((channel, payload), max_bytes=LIMITS["max_message_bytes"], max_chars=LIMITS["max_chars"],
                               redactor=redactor)
        if isinstance(parsed, Rejected):
            out.append((parsed.reason, hashlib.sha256(payload).hexdigest()))
        elif isinstance(parsed, Annotation):
            answers[len(out)] = (parsed.user_id, parsed.event_id)
            out.append(("answer", digest(_annotation_json(parsed))))
        else:
            ids = recent.setdefault(parsed.user_id, deque(maxlen=dedup_window))
            if parsed.event_id in ids:
                out.append(("duplicate_event", digest(_event_json(SimpleNamespace(event=parsed)))))
            else:
                ids.append(parsed.event_id)
                accepted.add((parsed.user_id, parsed.event_id))
                out.append(("decided", None))
    # Answers: events and answers may be read in any interleaving, so whether the event came is decided
    # over the whole stream; of the answers for an event that never came, the newest is dead-lettered.
    last = {key: pos for pos, key in answers.items()}
    for pos, key in answers.items():
        outcome = "counted" if key in accepted else "unknown_event" if last[key] == pos else "superseded"
        out[pos] = (outcome, out[pos][1])
    return out


def default_redactor() -> Any:
    """The PII redactor the flow uses under the default settings (``privacy.pii: redact``), or None if off."""
    from flows.selection import redactor_for
    from operators.config import load_settings

    return redactor_for(load_settings(**LIMITS))


def ids_of(payload: bytes) -> tuple[str, str] | None:
    """(user_id, event_id) of a payload that decodes to an object with string ids, by plain json."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("user_id"), str) and isinstance(obj.get("event_id"), str):
        return obj["user_id"], obj["event_id"]
    return None


def tally(items: list[tuple[str, bytes]], decision_rows: list[dict], dead_lines: list[str],
          dedup_window: int = 4096, ended: bool = True) -> dict[str, Any]:
    """Match every payload to its decision or dead letter; count what is missing and what is there twice.

    ``ended``: the run's input ended (``--idle-stop``, end of a replay), so every answer whose event never
    came is dead-lettered. After a stop by signal such an answer may still wait for its event in the
    user's state (the recovery store): without a dead letter it is counted as ``waiting``, not lost.

    ``decision_rows``: every row in the decision log's part files (copies included); ``dead_lines``:
    every line of the dead-letter file(s). Returns counts: ``payloads``, ``bad`` (payloads whose
    outcome is a dead letter), ``bad_dead_lettered``, ``decided``, ``counted``, ``superseded`` and ``waiting`` (valid answers),
    ``lost`` (no decision or dead letter found), ``decision_rows_twice`` (a (user, event) row in
    two part files), ``dead_letters_repeated`` (a line with the key of an earlier one,
    ``flows.outputs.dead_letter_key``: written again by at-least-once output after a restart, and
    removed by that key), ``unexpected`` (a decision or dead letter no payload accounts for, after that
    removal: a duplicate that dedup misses),
    ``max_dead_letter_bytes``, ``reasons``, and the first lost payloads and unexpected records.
    """
    from collections import Counter

    from flows.outputs import dead_letter_key

    decided = Counter((r["user_id"], r["event_id"]) for r in decision_rows)
    counts = Counter()
    keys: set = set()
    kept = []  # one line per dead-letter key: copies a resumed run wrote again go
    for line in dead_lines:
        key = dead_letter_key(json.loads(line))
        if key is not None and key in keys:
            counts["dead_letters_repeated"] += 1
            continue
        keys.add(key)
        kept.append(line)
    by_digest: dict[str, list[str]] = {}
    for line in kept:
        by_digest.setdefault(json.loads(line)["raw_sha256"], []).append(line)
    matched: set[str] = set()
    lost_examples = []
    optional = []  # digests of answers whose dead letter may or may not be there: matched after the required ones
    for (channel, payload), (outcome, sha) in zip(items, expected_outcomes(items, dedup_window)):
        counts["payloads"] += 1
        if outcome in ("counted", "superseded"):
            counts[outcome] += 1
            optional.append(sha)
            continue
        if outcome == "decided":
            key = ids_of(payload)
            if decided.get(key):
                decided[key] = -decided[key]  # matched; copies beyond the first are counted below
                counts["decided"] += 1
            else:
                counts["lost"] += 1
                lost_examples.append(payload[:120])
            continue
        pool = by_digest.get(sha, [])
        if outcome == "unknown_event" and not ended and not pool:
            counts["waiting"] += 1
            continue
        counts["bad"] += 1
        if pool:
            matched.add(pool.pop(0))
            counts["bad_dead_lettered"] += 1
        else:
            counts["lost"] += 1
            lost_examples.append(payload[:120])
    for sha in optional:
        pool = by_digest.get(sha, [])
        if pool:
            matched.add(pool.pop(0))
    counts["decision_rows_twice"] = sum(-c - 1 for c in decided.values() if c < 0)
    unexpected = [f"decision {key!r}" for key, c in decided.items() if c > 0]  # decisions no payload accounts for
    for pool in by_digest.values():
        for line in pool:
            if line in matched:  # a line without a key (no source), identical to a matched one
                counts["dead_letters_repeated"] += 1
            else:
                unexpected.append(line[:300])
    counts["unexpected"] = len(unexpected)
    sizes = [len(line.encode("utf-8")) for line in dead_lines]
    reasons = Counter(json.loads(line)["reason"] for line in kept if line not in unexpected)
    return {**{k: counts[k] for k in ("payloads", "bad", "bad_dead_lettered", "decided", "counted", "superseded", "waiting", "lost",
                                      "decision_rows_twice", "dead_letters_repeated", "unexpected")},
            "max_dead_letter_bytes": max(sizes, default=0), "reasons": dict(reasons), "lost_examples": lost_examples,
            "unexpected_examples": unexpected}
