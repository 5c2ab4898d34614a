"""DSS, Domain Specific Score, and the dominant domain of a text.

With ``T`` the text's word tokens (``n`` of them) and ``m`` domain lexicons
``l_1 .. l_m``::

    overlap_i = |T ∩ l_i| / n          DSS = (1/m) · Σ_i overlap_i
    dominant domain = argmax_i overlap_i

``|T ∩ l_i|`` counts token *occurrences*: "pain, pain, pain" has n = 3 and
overlaps medicine 3 times, so overlap_i is the share of the text's tokens that
belong to domain i and lies in [0, 1], as does DSS. Counting distinct words
while dividing by a count with multiplicity would mix two units.

A word listed in several lexicons counts once for each of them. Ties for the
dominant domain go to the alphabetically first domain name so that replays are
deterministic; a text with no lexicon word (or no word at all) gets the domain
:data:`~operators.sample.GENERAL_DOMAIN` and DSS 0.

Lexicon entries are single words, matched exactly against tokens (no stemming:
the shipped lexicons carry the inflected forms themselves). Multi-word entries
are not supported: WordNet collocations such as ``blood_pressure`` are dropped
when the shipped lexicons are built, and :class:`DomainScorer` rejects an entry
that is not one token, rather than silently never matching it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from itertools import chain
from dataclasses import dataclass, field

from operators.sample import GENERAL_DOMAIN

# A word is a run of letters or digits (any script), optionally joined by inner
# apostrophes or hyphens, so "don't", "x-ray" and "covid-19" stay one token.
# Underscores are excluded because WordNet uses them to join multi-word entries.
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``, punctuation dropped.

    >>> tokenize("The X-ray shows a fracture, doesn't it?")
    ['the', 'x-ray', 'shows', 'a', 'fracture', "doesn't", 'it']
    """
    return _WORD.findall(text.lower().replace("’", "'"))


def _is_token(word: str) -> bool:
    # Same as tokenize(word) == [word], without building a list per entry (lexicons hold ~40k words).
    return _WORD.fullmatch(word) is not None and word == word.lower() and "’" not in word


@dataclass(frozen=True)
class DomainScore:
    """DSS of one text, its dominant domain, and the non-zero per-domain overlaps.

    ``overlaps`` maps each domain with at least one matching token to
    ``|T ∩ l_i| / n``; domains without a match are left out to keep decision
    logs small (their overlap is 0).

    >>> DomainScore(dss=0.25, domain="medicine", overlaps={"medicine": 0.5})
    DomainScore(dss=0.25, domain='medicine', overlaps={'medicine': 0.5})
    """

    dss: float
    domain: str
    overlaps: dict[str, float] = field(default_factory=dict)


class DomainScorer:
    """Scores texts against fixed domain lexicons in O(tokens) per text.

    The constructor inverts the lexicons once into a word → domains table, so
    scoring a text is one dictionary look-up per token, independent of the
    number and size of the lexicons.

    >>> scorer = DomainScorer({"medicine": frozenset({"fever", "doctor"}),
    ...                        "sport": frozenset({"goal", "match"})})
    >>> scorer.score("Doctor, my fever is back")  # 2 of 5 tokens; DSS = (2/5 + 0/5) / 2
    DomainScore(dss=0.2, domain='medicine', overlaps={'medicine': 0.4})
    >>> scorer.score("Hello there!").domain
    'general'
    """

    def __init__(self, lexicons: Mapping[str, frozenset[str]]) -> None:
        self.lexicons = lexicons
        if not lexicons:
            raise ValueError("lexicons is empty: need at least one domain; pass operators.lexicons.load_lexicons()")
        word_domains: dict[str, list[str]] = {}
        # Sorted so every word's domain tuple, and hence the overlaps dict, is in name order.
        for domain in sorted(lexicons):
            words = lexicons[domain]
            if domain == GENERAL_DOMAIN:
                raise ValueError(
                    f"lexicons has a domain named {domain!r}: that name is reserved for texts matching no "
                    f"lexicon; rename it"
                )
            if not words:
                raise ValueError(
                    f"lexicon {domain!r} is empty: it would only dilute DSS; add words or remove the domain"
                )
            for word in words:
                if not _is_token(word):
                    raise ValueError(
                        f"lexicon {domain!r} has entry {word!r}, which is not one lower-case word token "
                        f"(it would never match); write single lower-case words, one per entry"
                    )
                word_domains.setdefault(word, []).append(domain)
        self._word_domains: dict[str, tuple[str, ...]] = {w: tuple(d) for w, d in word_domains.items()}
        self._m = len(lexicons)

    def score(self, text: str) -> DomainScore:
        """DSS, dominant domain and non-zero overlaps of ``text``.

        >>> scorer = DomainScorer({"b": frozenset({"x"}), "a": frozenset({"x", "y"})})
        >>> scorer.score("x x z w")  # both domains match 2 of 4 tokens: tie → 'a'
        DomainScore(dss=0.5, domain='a', overlaps={'a': 0.5, 'b': 0.5})
        >>> scorer.score("")
        DomainScore(dss=0.0, domain='general', overlaps={})
        """
        tokens = tokenize(text)
        # One look-up per token; most tokens are in no lexicon, so only the hits' domain tuples are kept
        # and counted in C.
        word_domains = self._word_domains
        counts = Counter(chain.from_iterable([word_domains[t] for t in tokens if t in word_domains]))
        if not counts:
            return DomainScore(dss=0.0, domain=GENERAL_DOMAIN, overlaps={})
        n = len(tokens)
        overlaps = {domain: counts[domain] / n for domain in sorted(counts)}
        # Highest count first, then alphabetical: min over (-count, name).
        dominant = min(counts, key=lambda d: (-counts[d], d))
        return DomainScore(dss=sum(counts.values()) / (n * self._m), domain=dominant, overlaps=overlaps)
