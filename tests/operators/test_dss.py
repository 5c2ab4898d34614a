"""DSS and dominant domain: token occurrences over lexicons, mean over domains, alphabetical ties."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.sample import GENERAL_DOMAIN
from operators.scores import DomainScore, DomainScorer, tokenize
from operators.scores.dss import _is_token

LEXICONS = {
    "medicine": frozenset({"doctor", "fever", "pain"}),
    "sport": frozenset({"goal", "match", "pain"}),
    "music": frozenset({"guitar", "song"}),
}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("Don't stop — the X-ray's fine.", ["don't", "stop", "the", "x-ray's", "fine"]),
        ("It’s COVID-19 in 2024", ["it's", "covid-19", "in", "2024"]),
        ("blood_pressure and -dash- 'quoted'", ["blood", "pressure", "and", "dash", "quoted"]),
        ("Café naïve Straße", ["café", "naïve", "straße"]),
        ("  ...  ", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_hand_worked_score():
    # Tokens: doctor doctor my pain (n = 4). medicine matches doctor, doctor, pain → 3/4;
    # sport matches pain → 1/4; music nothing. DSS = (3/4 + 1/4 + 0) / 3 = 1/3.
    result = DomainScorer(LEXICONS).score("Doctor, doctor: my pain!")
    assert result.domain == "medicine"
    assert result.overlaps == {"medicine": 0.75, "sport": 0.25}
    assert result.dss == pytest.approx(1 / 3)


def test_occurrences_count_with_multiplicity():
    # "song song song guitar" → music 4/4; a distinct-word count would give 2/4.
    result = DomainScorer(LEXICONS).score("song song song guitar")
    assert result.overlaps == {"music": 1.0}
    assert result.dss == pytest.approx(1 / 3)


def test_every_lexicon_counts_in_m_even_without_a_match():
    one = DomainScorer({"music": LEXICONS["music"]}).score("a song")
    three = DomainScorer(LEXICONS).score("a song")
    assert (one.dss, three.dss) == (0.5, pytest.approx(0.5 / 3))


@pytest.mark.parametrize("order", [("sport", "medicine"), ("medicine", "sport")])
def test_ties_go_to_the_alphabetically_first_domain(order):
    lexicons = {name: LEXICONS[name] for name in order}
    result = DomainScorer(lexicons).score("goal and fever")  # 1/3 each
    assert result.domain == "medicine"
    assert list(result.overlaps) == ["medicine", "sport"]


@pytest.mark.parametrize("text", ["Hi there, how are you?", "", "!!! ...", "12 34"])
def test_no_match_is_general_with_zero_dss(text):
    assert DomainScorer(LEXICONS).score(text) == DomainScore(dss=0.0, domain=GENERAL_DOMAIN, overlaps={})


def test_scoring_is_case_insensitive():
    assert DomainScorer(LEXICONS).score("GUITAR").domain == "music"


def test_constructor_keeps_its_argument_and_does_not_mutate_it():
    lexicons = dict(LEXICONS)
    scorer = DomainScorer(lexicons)
    assert scorer.lexicons is lexicons
    assert lexicons == LEXICONS


@pytest.mark.parametrize(
    ("lexicons", "message"),
    [
        ({}, "lexicons is empty"),
        ({"general": frozenset({"hello"})}, "'general'"),
        ({"music": frozenset()}, "lexicon 'music' is empty"),
        ({"medicine": frozenset({"blood pressure"})}, "'blood pressure'"),
        ({"medicine": frozenset({"blood_pressure"})}, "'blood_pressure'"),
        ({"medicine": frozenset({"Fever"})}, "'Fever'"),
    ],
)
def test_bad_lexicons_raise_value_error_naming_them(lexicons, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DomainScorer(lexicons)


VOCABULARY = ["doctor", "fever", "pain", "goal", "match", "guitar", "song", "the", "a", "nice", "day"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=30))
def test_matches_a_naive_recount(words):
    text = " ".join(words)
    result = DomainScorer(LEXICONS).score(text)
    n = len(words)
    naive = {d: sum(w in lex for w in words) / n for d, lex in LEXICONS.items()} if n else {}
    nonzero = {d: v for d, v in naive.items() if v > 0}
    assert result.overlaps == pytest.approx(nonzero)
    assert result.dss == pytest.approx(sum(naive.values()) / len(LEXICONS))
    assert 0.0 <= result.dss <= 1.0
    if nonzero:
        best = max(nonzero.values())
        assert result.domain == min(d for d, v in nonzero.items() if v == best)
    else:
        assert result.domain == GENERAL_DOMAIN


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZé1_-' ’.ß"), max_size=8))
def test_entry_check_agrees_with_the_tokenizer(word):
    # The scorer validates entries with a fast check; it must accept exactly what tokenize keeps whole.
    assert _is_token(word) == (tokenize(word) == [word])
