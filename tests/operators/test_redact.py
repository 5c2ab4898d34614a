"""operators/redact.py: every kind found in hand-written text, and the look-alikes left alone.

Expected outputs are written by hand. The card and account numbers are the networks' and
banks' published test numbers; the Luhn sums are worked out in the comments.
"""

from __future__ import annotations

import json

import pytest

from flows.deadletters import bound_dead_letter
from operators.config import Settings
from operators.events import Annotation, Event, Rejected, parse_annotation, parse_event
from operators.redact import KINDS, MAX_SPAN, TOKENS, Redactor

R = Redactor()


@pytest.mark.parametrize("text, expected, counts", [
    # e-mail
    ("Reach me at j.smith+work@mail.example.co.uk, please.", "Reach me at [EMAIL], please.", {"email": 1}),
    ("ANN@EXAMPLE.ORG or ann@example.org", "[EMAIL] or [EMAIL]", {"email": 2}),
    ("Schreib an jürgen@münchen.de", "Schreib an [EMAIL]", {"email": 1}),
    # phone: national formats of the default regions (US, GB), and any country with +
    ("Call (415) 555-0132 or 415.555.0199 today", "Call [PHONE] or [PHONE] today", {"phone": 2}),
    ("My mobile is 07911 123456.", "My mobile is [PHONE].", {"phone": 1}),
    ("Berlin office +49 30 901820, Paris +33 1 42 68 53 00", "Berlin office [PHONE], Paris [PHONE]", {"phone": 2}),
    # card: 4111 1111 1111 1111 -> digits in even places from the right doubled: 7 x 2 + 4 x 2 = 22, the rest
    # 8 x 1 = 8; 22 + 8 = 30 is a multiple of 10: Luhn-valid.
    ("Card 4111 1111 1111 1111 exp 12/27", "Card [CARD] exp 12/27", {"card": 1}),
    ("mastercard 5555-5555-5555-4444, amex 3782 822463 10005", "mastercard [CARD], amex [CARD]", {"card": 2}),
    ("no spaces: 4111111111111111.", "no spaces: [CARD].", {"card": 1}),
    ("4111 1111 1111 1111 2 times", "[CARD] 2 times", {"card": 1}),  # the longest run of groups that is a card
    # account: IBANs (the textbook GB and DE examples) and digits after an "account" keyword
    ("Pay to GB82 WEST 1234 5698 7654 32 by Friday", "Pay to [ACCOUNT] by Friday", {"account": 1}),
    ("IBAN DE89370400440532013000.", "IBAN [ACCOUNT].", {"account": 1}),
    ("iban gb82west12345698765432", "iban [ACCOUNT]", {"account": 1}),
    ("My account number is 12345678, acct #987654321", "My account number is [ACCOUNT], acct #[ACCOUNT]",
     {"account": 2}),
    # street addresses
    ("He lives at 221B Baker Street, London.", "He lives at [ADDRESS], London.", {"address": 1}),
    ("1600 Pennsylvania Ave NW, Washington", "[ADDRESS], Washington", {"address": 1}),
    ("4 Privet Dr, Apt 2 in Little Whinging", "[ADDRESS] in Little Whinging", {"address": 1}),
    ("350 5th Avenue", "[ADDRESS]", {"address": 1}),
    ("Hauptstraße 5 oder Berliner Straße 12a", "[ADDRESS] oder [ADDRESS]", {"address": 2}),
    ("au 12 rue de Rivoli", "au [ADDRESS]", {"address": 1}),
])
def test_each_kind_is_replaced_by_its_token(text, expected, counts):
    assert R.redact(text) == (expected, counts)


@pytest.mark.parametrize("text", [
    "Dates: 2024-01-15, 15/01/2024, 01.15.2024, Jan 15 2024, 2024-03-01T09:00:00Z",
    "Times: 10:30, 18:45:00, 7 pm, 09:00-17:30",
    "Versions: 3.11.2, v2.0.1, Chrome/58.0.3029.110, torch==2.13.0",
    "Numbers: 42, 1,234,567, 1234567890, 0.5551234, 20240115, 100000000000, $1,234.56, 99.5%",
    "Luhn-invalid: 4111 1111 1111 1112 and 1234 5678 9012 3456",  # sums 31 and 64: not multiples of 10
    "Luhn-valid but no card network starts with 1: 1111 1111 1111 1117",  # 8 x 2 + (7 + 7 x 1) = 30
    "Mixed separators: 4111 1111-1111 1111",
    "An IBAN with one digit off: DE89370400440532013001",
    "ISBN 978-3-16-148410-0, UUID 123e4567-e89b-12d3-a456-426614174000, IP 192.168.1.10, port 8080",
    "root@localhost and a@b are not addresses with a domain",
    "In 2019 Wall Street fell. 10 Tips For The Perfect Drive. 5 Ways To Drive Safely.",
    "I ran 5 miles down the street. Take 2 tablets. Chapter 3 begins.",
    "The score was 3-2 and the account was closed.",
])
def test_look_alikes_are_left_alone(text):
    assert R.redact(text) == (text, {})


def test_tokens_are_not_found_again():
    once, _ = R.redact("ann@example.org, +44 20 7946 0958, 4111111111111111, GB82WEST12345698765432, 10 Downing Street")
    assert once == "[EMAIL], [PHONE], [CARD], [ACCOUNT], [ADDRESS]"
    assert R.redact(once) == (once, {})
    assert set(TOKENS) == set(KINDS)


def test_only_the_kinds_asked_for_and_the_regions_given():
    text = "ann@example.org, 020 7946 0958, +44 20 7946 0958"
    assert Redactor(kinds=("phone",), phone_regions=("US",)).redact(text) == (
        "ann@example.org, 020 7946 0958, [PHONE]", {"phone": 1})  # national GB format: not a US number
    assert Redactor(kinds=("phone",), phone_regions=("GB",)).redact(text)[1] == {"phone": 2}


def test_overlapping_finds_keep_the_longer():
    # The card's digits also hold phone-shaped runs; the card, the longer find, wins.
    assert R.find("4111 1111 1111 1111") == [R.find("4111 1111 1111 1111")[0]]
    assert R.find("4111 1111 1111 1111")[0].kind == "card"


def test_no_find_is_longer_than_max_span():
    longest = "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com"  # 64 + 1 + 182 + 4 = 251 characters
    assert R.redact(longest) == ("[EMAIL]", {"email": 1})
    too_long = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".com"  # 260: longer than an address may be
    assert len(too_long) > MAX_SPAN and R.redact(too_long)[1] == {}
    assert R.redact("a" * 65 + "@example.com")[1] == {}  # local parts are at most 64 characters


def test_bad_settings_name_the_field_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"privacy.phone_regions: 'XX' .* such as 'US'"):
        Settings(privacy={"phone_regions": ["XX"]})
    with pytest.raises(ValueError, match=r"privacy.pii_kinds is empty while privacy.pii='redact'.*off"):
        Settings(privacy={"pii_kinds": []})
    with pytest.raises(ValueError, match="privacy.pii"):
        Settings(privacy={"pii": "maybe"})
    assert Settings(privacy={"pii": "off", "pii_kinds": []}).privacy.pii == "off"
    with pytest.raises(ValueError, match=r"privacy.pii_kinds: \['ssn'\]"):
        Redactor(kinds=("ssn",))


# --- in validation --------------------------------------------------------------------------------


def _event(**fields) -> bytes:
    return json.dumps({"event_id": "e1", "user_id": "u1", "ts": 0, **fields}).encode()


def test_validation_redacts_prompt_response_and_meta_but_never_ids():
    raw = _event(user_id="ann@example.org", prompt="Mail ann@example.org", response="Call 415-555-0132",
                 meta={"note": ["4 Privet Drive"], "ann@example.org": 1})
    found: dict[str, int] = {}
    e = parse_event(raw, redactor=R, found=found)
    assert isinstance(e, Event)
    assert (e.user_id, e.prompt, e.response) == ("ann@example.org", "Mail [EMAIL]", "Call [PHONE]")
    assert e.meta == {"note": ["[ADDRESS]"], "ann@example.org": 1}  # keys are kept, like ids
    assert found == {"email": 1, "phone": 1, "address": 1}
    assert parse_event(raw).prompt == "Mail ann@example.org"  # no redactor, no redaction


def test_drop_dead_letters_the_event_and_its_dead_letter_holds_no_pii():
    raw = _event(prompt="Mail ann@example.org or call 415-555-0132", response="ok")
    rejected = parse_event(raw, redactor=Redactor(action="drop"))
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.user_id, rejected.event_id) == ("pii", "u1", "e1")
    assert rejected.detail == "prompt holds PII (email 1, phone 1); dropped as privacy.pii is drop"
    assert rejected.pii == {"email": 1, "phone": 1}
    letter = bound_dead_letter(rejected.to_dict(), excerpt_bytes=4096, redactor=Redactor(action="drop"))
    text = json.dumps(letter)
    assert "ann@example.org" not in text and "555-0132" not in text
    assert "Mail [EMAIL] or call [PHONE]" in letter["raw"] and letter["raw_pii"] == {"email": 1, "phone": 1}
    assert parse_event(_event(prompt="nothing here"), redactor=Redactor(action="drop")).prompt == "nothing here"


def test_annotations_are_redacted_or_dropped_too():
    raw = json.dumps({"event_id": "e1", "user_id": "u1", "ts": 0, "response": "write to ann@example.org"})
    found: dict[str, int] = {}
    a = parse_annotation(raw, redactor=R, found=found)
    assert isinstance(a, Annotation) and (a.response, found) == ("write to [EMAIL]", {"email": 1})
    assert parse_annotation(raw, redactor=Redactor(action="drop")).reason == "pii"


def test_a_rejected_payloads_excerpt_and_detail_are_redacted():
    # Malformed JSON: the validator cannot read the fields, so the excerpt is the raw text.
    rejected = parse_event(b'{"event_id": "e1", "prompt": "my card is 4111 1111 1111 1111', redactor=R)
    letter = bound_dead_letter(rejected.to_dict(), excerpt_bytes=4096, redactor=R)
    assert letter["raw"] == '{"event_id": "e1", "prompt": "my card is [CARD]' and letter["raw_pii"] == {"card": 1}
    bad_ts = parse_event(_event(prompt="hi", ts="call 415-555-0132"), redactor=R)
    assert bad_ts.reason == "bad_timestamp" and "555-0132" in bad_ts.detail
    letter = bound_dead_letter(bad_ts.to_dict(), excerpt_bytes=4096, redactor=R)
    assert "555-0132" not in json.dumps(letter) and "[PHONE]" in letter["detail"]


def test_a_huge_payload_is_redacted_without_leaking_pii_cut_at_the_excerpt():
    excerpt = 64
    payload = ("x" * (excerpt - 6) + " ann@example.org " + "y" * 5_000_000).encode()  # cut inside the address
    letter = bound_dead_letter({"reason": "too_large", "detail": "", "raw": payload.decode()}, excerpt_bytes=excerpt,
                               redactor=R)
    assert letter["raw"].startswith("x" * (excerpt - 6) + " [EMA") and "ann@" not in letter["raw"]
    assert letter["raw_bytes"] == len(payload) and letter["raw_truncated"]
    # Bytes that are not UTF-8 keep their base64 excerpt, with the PII in them replaced.
    letter = bound_dead_letter({"reason": "invalid_utf8", "detail": "", "raw": "", "raw_encoding": "base64",
                                **_b64(b"\xff call 415-555-0132")}, excerpt_bytes=excerpt, redactor=R)
    assert letter["raw_encoding"] == "base64" and _unb64(letter["raw"]) == b"\xff call [PHONE]"


def _b64(data: bytes) -> dict:
    import base64

    return {"raw": base64.b64encode(data).decode()}


def _unb64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)
