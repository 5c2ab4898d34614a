r"""PII redaction: find e-mail addresses, phone numbers, card numbers, account numbers and street
addresses in text and replace each with a token that names its kind.

=========  ==============  =======================================================================
kind       token           how it is found
=========  ==============  =======================================================================
email      ``[EMAIL]``     ``local@domain.tld`` (a bounded pattern; no TLD, no match: ``root@localhost``)
phone      ``[PHONE]``     Google's libphonenumber (``phonenumbers``): numbers valid in one of
                           ``phone_regions`` written nationally, or in any country with ``+``
card       ``[CARD]``      13-19 digits, optionally in groups of 3-6 split by one kind of
                           separator, starting 2-6 (the card networks' ranges), Luhn-valid
account    ``[ACCOUNT]``   an IBAN valid for its country (length, format, mod-97, via
                           ``python-stdnum``), or 6-20 digits right after "account number",
                           "acct no", "a/c" and the like
address    ``[ADDRESS]``   house number + capitalised street name + street type ("221B Baker
                           Street", "1600 Pennsylvania Ave NW", "4 Privet Dr, Apt 2"); German
                           name+type+number ("Hauptstraße 5", "Berliner Straße 12a"); French
                           number+type+name ("12 rue de Rivoli")
=========  ==============  =======================================================================

Why these libraries (chosen for edgetune, which runs offline on a device):

- ``phonenumbers`` (the Python port of Google's libphonenumber, released every few weeks)
  knows every country's numbering plan and ships its metadata in the wheel; its matcher
  finds numbers in running text and, at ``Leniency.VALID``, only numbers that can exist,
  so "1234567890", dates and times are left alone.
- ``python-stdnum`` (pure Python, no dependencies, maintained since 2010) validates IBANs
  per country and computes the Luhn check.
- Not presidio-analyzer: its pattern recognizers do run without a spaCy model, but the
  package pulls in spaCy (with thinc and blis, ~390 MB installed with its dependencies), its
  e-mail recognizer's ``tldextract`` tries to fetch the public suffix list over the network
  at first use, and ``AnalyzerEngine`` tries to download a spaCy model. Its phone
  recognizer is ``phonenumbers`` and its card check is Luhn: the same checks as here.
- Not scrubadub: no release since 2023, and its address detector needs further packages.
- Street addresses: no offline library finds them in free text reliably (libpostal parses
  an address it is given, it does not find one), so a documented pattern is used.

What is not found (the limits of the patterns): addresses without a house number ("Baker
Street"), PO boxes, postcodes and city lines on their own, street names written in lower
case, other languages' street forms; phone numbers written nationally for a region not in
``phone_regions``; account numbers other than IBANs without an "account" keyword before
them; e-mail addresses without a dot in the domain; names, dates of birth and other PII
this module does not look for. Title-case headings such as "5 Ways Forward Drive" could
be taken for an address; function words ("To", "For", "The", ...) in the name rule most
of them out, and so does a year after "in"/"since" ("in 2019 Wall Street").

>>> r = Redactor()
>>> r.redact("Write to jane.doe@example.com or call +44 20 7946 0958.")
('Write to [EMAIL] or call [PHONE].', {'email': 1, 'phone': 1})
>>> r.redact("Card 4111 1111 1111 1111 (not 4111 1111 1111 1112), IBAN GB82 WEST 1234 5698 7654 32.")
('Card [CARD] (not 4111 1111 1111 1112), IBAN [ACCOUNT].', {'card': 1, 'account': 1})
>>> r.redact("I live at 221B Baker Street since 2019-03-01, version 3.11.2, at 10:30.")
('I live at [ADDRESS] since 2019-03-01, version 3.11.2, at 10:30.', {'address': 1})
>>> r.redact("[EMAIL] and [PHONE] stay as they are")  # tokens are never found again: redacting twice changes nothing
('[EMAIL] and [PHONE] stay as they are', {})
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from stdnum import iban, luhn

__all__ = ["KINDS", "MAX_SPAN", "TOKENS", "Action", "Found", "Redactor"]

Action = Literal["redact", "drop"]

KINDS = ("email", "phone", "card", "account", "address")
"""Every kind of PII the redactor finds, in the order overlapping finds of equal length prefer."""

TOKENS = {kind: f"[{kind.upper()}]" for kind in KINDS}
"""What each kind is replaced with: ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[ACCOUNT]``, ``[ADDRESS]``."""

MAX_SPAN = 256
"""No find is longer than this many characters (longer matches are not PII: an e-mail address has
at most 254), so text cut this far after a point has every find before that point whole (see
``flows.deadletters``)."""

_DEFAULT_REGIONS = ("US", "GB")

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}(?![\w-])")
# Digits in groups: one run of 13-19, or 3-6-digit groups split by a single space or hyphen.
_CARD = re.compile(r"(?<![\w-])(?:[0-9]{13,19}|[0-9]{3,6}(?:[ -][0-9]{3,6}){1,5})(?![\w]|-[0-9])")
_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![\w])")
_ACCOUNT = re.compile(r"(?i)\b(?:account|acct|a/c)\.?(?:\s{0,3}(?:number|num|no\.?|nr\.?|#))?"
                      r"(?:\s{0,3}(?:is|:|#|=))?\s{0,3}([0-9](?:[ -]?[0-9]){5,19})(?![\w])")
_STREET_TYPES = ("Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way|"
                 "Parkway|Pkwy|Highway|Hwy|Crescent|Close|Square|Sq")
_NAME_WORD = r"(?:[A-Z][A-Za-z'’-]{0,24}|[0-9]{1,3}(?:st|nd|rd|th))"
_ADDRESS_EN = re.compile(
    r"(?<![\w.,-])([0-9]{1,5}[A-Za-z]?(?:[-–][0-9]{1,5}[A-Za-z]?)?)\s{1,3}"  # house number, "221B", "12-14"
    rf"((?:{_NAME_WORD}\s{{1,3}}){{1,3}})"  # one to three capitalised words of the street's name
    rf"(?i:{_STREET_TYPES})\b\.?"  # the street type, any case
    r"(?:\s{1,3}(?:N|S|E|W|NE|NW|SE|SW)\b)?"  # "1600 Pennsylvania Ave NW"
    r"(?:,?\s{1,3}(?i:apt|apartment|suite|ste|unit|flat|floor)\.?\s{0,3}#?\s{0,3}[0-9A-Za-z]{1,5}\b)?")
_ADDRESS_DE = re.compile(
    r"\b(?:[A-ZÄÖÜ][a-zäöüß]{1,30}(?:straße|strasse|str\.|weg|gasse|platz|allee)"
    r"|[A-ZÄÖÜ][a-zäöüß]{1,30}\s(?:Straße|Strasse|Weg|Gasse|Platz|Allee))\s{1,3}[0-9]{1,4}[a-z]?\b")
_ADDRESS_FR = re.compile(
    r"(?<![\w.,-])[0-9]{1,4}(?:\s?(?:bis|ter))?,?\s{1,3}(?i:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)\s{1,3}"
    r"(?:(?:de|du|des|la|le|l'|d')\s{0,3}){0,3}[A-ZÉÈ][\w'’-]{1,30}(?:\s{1,3}[A-ZÉÈ][\w'’-]{1,30}){0,3}")
# Words a street's name hardly holds but a title-case heading does ("10 Tips For The Perfect Drive").
_NOT_IN_STREET_NAMES = frozenset("a an and at best by for from how in into my of on or our the their this to top "
                                 "ways why with your".split())
_YEAR_CONTEXT = frozenset("in since by until from of year before after during circa around".split())
_DECIMAL = re.compile(r"[0-9]+[.,][0-9]+")


@dataclass(frozen=True)
class Found:
    """One piece of PII in a text: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: str


class Redactor:
    """Finds and replaces PII of ``kinds``; phone numbers written without ``+`` are read as numbers of
    ``phone_regions`` (ISO 3166 codes). ``action`` tells the validator (``operators.events``) what to do
    with an event holding PII: ``"redact"`` it, or ``"drop"`` it (dead letter ``pii``); dead-letter
    excerpts are redacted either way.

    Finds never overlap: of two that do, the longer is kept (on a tie, the kind earlier in
    :data:`KINDS`), so the digits of a card are not also a phone number.

    >>> r = Redactor(kinds=("email",))
    >>> r.find("mail ann@example.org, call 020 7946 0958")
    [Found(start=5, end=20, kind='email')]
    >>> r.redact_value({"note": ["ann@example.org"], "n": 3})
    ({'note': ['[EMAIL]'], 'n': 3}, {'email': 1})
    >>> Redactor(kinds=("phone",), phone_regions=("XX",))
    Traceback (most recent call last):
    ...
    ValueError: privacy.phone_regions: 'XX' is not a region phonenumbers knows; use ISO 3166 codes such as 'US', 'GB', 'DE'
    """

    def __init__(self, kinds: Iterable[str] = KINDS, phone_regions: Iterable[str] = _DEFAULT_REGIONS,
                 action: Action = "redact"):
        self.kinds = tuple(kinds)
        self.phone_regions = tuple(phone_regions)
        self.action = action
        if action not in ("redact", "drop"):
            raise ValueError(f"privacy.pii: action={action!r} must be 'redact' or 'drop' (or no redactor for 'off')")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"privacy.pii_kinds: {unknown} not known; choose from {list(KINDS)}")
        for region in self.phone_regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"privacy.phone_regions: {region!r} is not a region phonenumbers knows; "
                                 "use ISO 3166 codes such as 'US', 'GB', 'DE'")

    def find(self, text: str) -> list[Found]:
        """Every piece of PII in ``text``, in order, none overlapping."""
        found: list[Found] = []
        for kind in self.kinds:
            found.extend(f for f in _FINDERS[kind](self, text) if f.end - f.start <= MAX_SPAN)
        # Longest first, then earlier kinds; keep each find that overlaps nothing kept before it.
        kept: list[Found] = []
        for f in sorted(found, key=lambda f: (-(f.end - f.start), KINDS.index(f.kind), f.start)):
            if all(f.end <= k.start or f.start >= k.end for k in kept):
                kept.append(f)
        return sorted(kept, key=lambda f: f.start)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with every find replaced by its kind's token, and how many of each kind were replaced.

        >>> Redactor().redact("account no. 12345678 at 4 Privet Drive")
        ('account no. [ACCOUNT] at [ADDRESS]', {'account': 1, 'address': 1})
        """
        return self.replace(text, self.find(text))

    @staticmethod
    def replace(text: str, found: list[Found]) -> tuple[str, dict[str, int]]:
        """``text`` with the (sorted, non-overlapping) ``found`` spans replaced by their tokens."""
        parts, counts, at = [], {}, 0
        for f in found:
            parts += [text[at:f.start], TOKENS[f.kind]]
            counts[f.kind] = counts.get(f.kind, 0) + 1
            at = f.end
        parts.append(text[at:])
        return "".join(parts), counts

    def redact_value(self, value: Any) -> tuple[Any, dict[str, int]]:
        """Strings redacted inside lists and dict values too (keys and other values are kept)."""
        if isinstance(value, str):
            return self.redact(value)
        counts: dict[str, int] = {}
        if isinstance(value, list):
            out = []
            for item in value:
                item, found = self.redact_value(item)
                out.append(item)
                _add(counts, found)
            return out, counts
        if isinstance(value, dict):
            redacted = {}
            for key, item in value.items():
                redacted[key], found = self.redact_value(item)
                _add(counts, found)
            return redacted, counts
        return value, counts

    # --- one finder per kind ------------------------------------------------------------------

    def _emails(self, text: str) -> Iterable[Found]:
        return (Found(m.start(), m.end(), "email") for m in _EMAIL.finditer(text))

    def _phones(self, text: str) -> Iterable[Found]:
        seen = set()
        for region in self.phone_regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                if (m.start, m.end) in seen or _DECIMAL.fullmatch(m.raw_string):  # "0.5551234" is a number
                    continue
                if text[m.start - 1:m.start] in ("/", ".") or re.match(r"\.[0-9]", text[m.end:m.end + 2]):
                    continue  # part of a path or a dotted version: "Chrome/58.0.3029.110"
                seen.add((m.start, m.end))
                yield Found(m.start, m.end, "phone")

    def _cards(self, text: str) -> Iterable[Found]:
        for m in _CARD.finditer(text):
            groups = re.split(r"([ -])", m.group())
            separators = set(groups[1::2])
            if len(separators) > 1:  # "1234 5678-9012 3456" mixes separators: not how a card is written
                continue
            digits = groups[::2]
            # The longest run of whole groups from the first that is a card: "4111 1111 1111 1111 2" is one.
            for n in range(len(digits), 0, -1):
                number = "".join(digits[:n])
                if 13 <= len(number) <= 19 and number[0] in "23456" and luhn.is_valid(number):
                    end = m.start() + sum(len(g) for g in digits[:n]) + (n - 1)
                    yield Found(m.start(), end, "card")
                    break

    def _accounts(self, text: str) -> Iterable[Found]:
        for m in _IBAN.finditer(text):
            candidate = m.group()
            # Shorten at spaces until it is a valid IBAN: "GB82 WEST 1234 5698 7654 32 AND" ends before "AND".
            while candidate:
                if iban.is_valid(candidate):
                    yield Found(m.start(), m.start() + len(candidate), "account")
                    break
                candidate = candidate.rpartition(" ")[0]
        for m in _ACCOUNT.finditer(text):
            yield Found(m.start(1), m.end(1), "account")

    def _addresses(self, text: str) -> Iterable[Found]:
        for m in _ADDRESS_EN.finditer(text):
            words = m.group(2).split()
            if any(w.lower() in _NOT_IN_STREET_NAMES for w in words):
                continue
            number = m.group(1)
            before = text[max(0, m.start() - 12):m.start()].split()
            if (len(number) == 4 and number.isdigit() and 1000 <= int(number) <= 2099 and before
                    and before[-1].lower() in _YEAR_CONTEXT):
                continue  # "in 2019 Wall Street ..." is a year
            yield Found(m.start(), m.end(), "address")
        for pattern in (_ADDRESS_DE, _ADDRESS_FR):
            yield from (Found(m.start(), m.end(), "address") for m in pattern.finditer(text))


_FINDERS = {"email": Redactor._emails, "phone": Redactor._phones, "card": Redactor._cards,
            "account": Redactor._accounts, "address": Redactor._addresses}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
