"""Input hygiene in event and annotation validation: control characters, NFC, lone surrogates."""

from __future__ import annotations

import json
import unicodedata

import pytest

from operators.events import REASONS, Annotation, Event, Rejected, parse_annotation, parse_event, parse_item

DECOMPOSED = "cafe\u0301"  # "e" + COMBINING ACUTE ACCENT: 5 code points
COMPOSED = "caf\u00e9"  # the single code point "é": 4 code points


def event(prompt: str = "hello", **extra) -> bytes:
    """A JSONL line as a producer would write it: json.dumps escapes control characters (\\u0000)."""
    return json.dumps({"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": prompt, **extra}).encode()


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\x0b"])  # NUL, ESC, DEL, NEL (C1), VT
def test_a_control_character_in_the_prompt_is_dead_lettered_with_its_reason(char):
    out = parse_event(event(f"before{char}after"))
    assert isinstance(out, Rejected)
    assert out.reason == "control_chars" and "control_chars" in REASONS
    assert f"U+{ord(char):04X} at offset 6" in out.detail and out.event_id == "e1" and out.user_id == "u1"


@pytest.mark.parametrize("field", ["response", "meta"])
def test_control_characters_in_the_response_and_meta_are_dead_lettered_too(field):
    value = "ok\x1b[31m" if field == "response" else {"tags": ["red\x00"]}
    assert parse_event(event(**{field: value})).reason == "control_chars"


def test_tab_newline_and_carriage_return_are_kept():
    out = parse_event(event("line one\r\n\tline two\n"))
    assert isinstance(out, Event) and out.prompt == "line one\r\n\tline two\n"


def test_strip_mode_removes_them_and_keeps_the_rest():
    out = parse_event(event("a\x00b\x1b[1mc\x7fd\te", response="r\x00", meta={"k": "v\x1b"}), control_chars="strip")
    assert isinstance(out, Event)
    assert (out.prompt, out.response, out.meta) == ("ab[1mcd\te", "r", {"k": "v"})


def test_a_prompt_that_is_only_control_characters_is_empty_once_stripped():
    assert parse_event(event("\x00\x1b\x7f"), control_chars="strip").reason == "empty_prompt"


def test_an_id_with_a_control_character_is_rejected_even_in_strip_mode():
    raw = json.dumps({"event_id": "e\x001", "user_id": "u1", "ts": 0, "prompt": "hi"})
    out = parse_event(raw, control_chars="strip")
    assert out.reason == "control_chars" and out.detail.startswith("event_id holds")


def test_text_is_nfc_normalized():
    out = parse_event(event(f"{DECOMPOSED} au lait", response=DECOMPOSED, meta={"place": DECOMPOSED}))
    assert isinstance(out, Event)
    assert out.prompt == f"{COMPOSED} au lait" and len(out.prompt) == len("café au lait")
    assert out.response == COMPOSED and out.meta == {"place": COMPOSED}
    assert unicodedata.is_normalized("NFC", out.prompt)
    # Both spellings of the same text are the same event text afterwards.
    assert parse_event(event(COMPOSED)).prompt == parse_event(event(DECOMPOSED)).prompt


def test_annotations_follow_the_same_rules():
    base = {"event_id": "e1", "user_id": "u1", "ts": 0}
    assert parse_annotation(json.dumps({**base, "response": "fine\x00"})).reason == "control_chars"
    out = parse_annotation(json.dumps({**base, "response": DECOMPOSED}))
    assert isinstance(out, Annotation) and out.response == COMPOSED
    stripped = parse_item(("annotation", json.dumps({**base, "response": "a\x1bb"})), control_chars="strip")
    assert stripped.response == "ab"


def test_a_lone_surrogate_escape_is_invalid_utf8():
    out = parse_event(b'{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "half \\ud800 a pair"}')
    assert out.reason == "invalid_utf8" and "U+D800" in out.detail


def test_a_raw_control_byte_inside_a_json_string_stays_malformed_json():
    # JSON itself forbids unescaped control characters in strings.
    assert parse_event(b'{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "a\x00b"}').reason == "malformed_json"


def test_an_unknown_mode_is_a_configuration_error_naming_the_setting():
    with pytest.raises(ValueError, match="source.control_chars"):
        parse_event(event(), control_chars="drop")


@pytest.mark.parametrize("depth", [33, 500, 950])
def test_meta_nested_deeper_than_the_limit_is_too_deep_not_a_crash(depth):
    # 500-989 levels parse as JSON but used to exhaust the recursion limit in the text cleaning: a crash
    # on every restart at the same message. The limit counts meta itself as level 1.
    line = '{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "p", "meta": {"k": %s}}' % ("[" * (depth - 1) + "]" * (depth - 1))
    out = parse_event(line)
    assert out.reason == "too_deep" and "too_deep" in REASONS and out.event_id == "e1"
    at_limit = '{"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "p", "meta": {"k": %s}}' % ("[" * 31 + "]" * 31)
    assert isinstance(parse_event(at_limit), Event)


@pytest.mark.parametrize("ts", [2**63 - 1, 2**63, 10**30])
def test_an_epoch_ms_past_the_year_9999_is_a_bad_timestamp_not_a_crash_in_the_decision_log(ts):
    # It used to be accepted, and the decision log's int64 column then failed at every restart.
    assert parse_event(event(ts=ts)).reason == "bad_timestamp"
    assert isinstance(parse_event(event(ts=253_402_300_799_999)), Event)
