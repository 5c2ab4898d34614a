"""Synthesis prompt, pair parser, ROUGE-1 and the sanity-check filter.

ROUGE-1 values in comments are worked out by hand with rouge-score's rules:
lower-case, keep ``[a-z0-9]`` runs, Porter-stem words longer than 3 letters;
F = 2·overlap / (|a| + |b|) in unigram counts.
"""

from __future__ import annotations

import pytest

from operators.synthesis import (
    DEFAULT_SYNTH_TEMPLATE,
    DROP_REASONS,
    FilterResult,
    SynthFilter,
    parse_pairs,
    render_synth_prompt,
    rouge1_f,
)

SOURCE_Q = "How do I boil an egg?"  # how do i boil an egg: 6 tokens
SOURCE_A = "Boil it for 8 minutes."

# --- the prompt ------------------------------------------------------------------------


def test_default_template_carries_the_example_and_k():
    text = render_synth_prompt(DEFAULT_SYNTH_TEMPLATE, "  How do I boil an egg? ", "Boil it.", k=3)
    assert "How do I boil an egg?\n" in text and "Boil it." in text
    assert "Write 3 new" in text and '"Q:"' in text and '"A:"' in text


def test_a_long_example_is_cut_in_the_middle_so_the_instruction_survives():
    text = render_synth_prompt(DEFAULT_SYNTH_TEMPLATE, "A" * 5000 + " end?", "B" * 5000, k=1, max_chars=100)
    assert len(text) < 600
    assert "end?" in text and " … " in text and text.endswith('each answer with "A:".')


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_positive_int(k):
    with pytest.raises(ValueError, match="k="):
        render_synth_prompt(DEFAULT_SYNTH_TEMPLATE, "q", "a", k=k)


# --- the parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Q: What?\nA: That.", [("What?", "That.")]),
        # numbering, bold, spacing
        ("1. Q: One?\n   A:   First.\n\n2. **Q:** Two?\n**A:** Second.", [("One?", "First."), ("Two?", "Second.")]),
        ("Q1: One?\nA1: First.\nQ2: Two?\nA2: Second.", [("One?", "First."), ("Two?", "Second.")]),
        ("Question 1: One?\nAnswer: First.", [("One?", "First.")]),
        ("- Q: One?\n- A: First.", [("One?", "First.")]),
        # question and answer on one line
        ("Q: One? A: First. Q: Two?\nA: Second.", [("One?", "First."), ("Two?", "Second.")]),
        # preamble ignored; missing final answer kept with "" for the filter to count
        ("Sure! Here they are.\nQ: One?\nA: First.\nQ: Two?", [("One?", "First."), ("Two?", "")]),
        # two questions in a row: the first has no answer
        ("Q: One?\nQ: Two?\nA: Second.", [("One?", ""), ("Two?", "Second.")]),
        # an answer without a question is ignored
        ("A: orphan\nQ: One?\nA: First.\nA: another orphan", [("One?", "First.")]),
        # a multi-line answer keeps its lines, blank lines collapsed
        ("Q: Steps?\nA: 1. Boil.\n\n2. Peel.", [("Steps?", "1. Boil.\n2. Peel.")]),
        # "plan A:" inside an answer and "a)" list items do not split
        ("Q: Plans?\nA: Use plan A: wait.\na) first\nb) second", [("Plans?", "Use plan A: wait.\na) first\nb) second")]),
        # stuttered markers and enclosing quotes are removed
        ('Q: "What is Java?"\nA: A: A: A:', [("What is Java?", "")]),
        ("Sure. Q:\n\nOne?\nA:\nA:\n\nFirst.", [("One?", "First.")]),
        # a run of bare markers is nothing; a bare question with an answer is kept for the filter
        ("Q:\nA:\nQ:\nA:\nQ:\nA: orphaned answer", [("", "orphaned answer")]),
        ("", []),
        ("no markers here", []),
    ],
)
def test_parse_pairs(text, expected):
    assert parse_pairs(text) == expected


# --- ROUGE-1 ----------------------------------------------------------------------------


def test_rouge1_identical_is_one_and_disjoint_is_zero():
    assert rouge1_f("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge1_f("the cat sat", "dogs bark loudly") == 0.0
    assert rouge1_f("", "anything") == 0.0


def test_rouge1_stems_and_is_symmetric():
    # cats->cat, sitting->sit, sits->sit: overlap 2, |a| = 2, |b| = 3: F = 4/5
    assert rouge1_f("cats sitting", "a cat sits") == pytest.approx(0.8)
    assert rouge1_f("a cat sits", "cats sitting") == pytest.approx(0.8)


# --- the filter -------------------------------------------------------------------------


def test_filter_keeps_the_band_and_counts_each_reason():
    filt = SynthFilter(low=0.2, high=0.8, dedup=0.8)
    pairs = [
        # how do i boil an egg vs source: identical, F = 1.0 >= high
        ("How do I boil an egg?", "Put it in water."),
        # what is the capit of franc: no overlap, F = 0 < low
        ("What is the capital of France?", "Paris."),
        # how long should i poach an egg (7) vs source (6): overlap 4 -> F = 8/13 = 0.615: kept
        ("How long should I poach an egg?", "About four minutes."),
        # + "for" (8 tokens): vs source F = 8/14 = 0.571 (in band), but vs the kept question
        # overlap 7 -> F = 14/15 = 0.933 >= dedup: duplicate
        ("How long should I poach an egg for?", "Four minutes."),
        ("Can I boil an egg in a microwave?", "   "),  # blank answer
        ("Why do eggs float?", "Why do eggs float?"),  # answer vs question F = 1.0 >= dedup
        ("  ", "Something."),  # blank question
        # is a boil egg healthi (5) vs source (6): overlap boil, egg -> F = 4/11 = 0.364: kept
        ("  Is a boiled egg healthy? ", " Yes, it is rich in protein."),
        # how do i fri an egg: overlap 5 of 6 -> F = 10/12 = 0.833 >= high
        ("How do I fry an egg?", "In a pan."),
    ]
    result = filt.filter(SOURCE_Q, SOURCE_A, pairs)
    assert isinstance(result, FilterResult)
    assert result.kept == [
        ("How long should I poach an egg?", "About four minutes."),
        ("Is a boiled egg healthy?", "Yes, it is rich in protein."),  # stripped
    ]
    assert result.dropped == {
        "near_copy": 2,
        "off_topic": 1,
        "duplicate": 1,
        "empty_answer": 1,
        "answer_copies_question": 1,
        "empty_question": 1,
    }
    assert set(result.dropped) <= set(DROP_REASONS)
    assert len(result.kept) + sum(result.dropped.values()) == len(pairs)


def test_band_is_low_inclusive_high_exclusive():
    # red green pink white vs red green blue yellow: overlap 2 of 4 and 4 -> F = 0.5 exactly
    pair = [("red green pink white", "an answer")]
    assert SynthFilter(low=0.5, high=0.9).filter("red green blue yellow", "", pair).kept == pair
    assert SynthFilter(low=0.1, high=0.5).filter("red green blue yellow", "", pair).dropped == {"near_copy": 1}
    assert SynthFilter(low=0.51, high=0.9).filter("red green blue yellow", "", pair).dropped == {"off_topic": 1}


def test_filter_does_not_mutate_its_input_and_is_repeatable():
    filt = SynthFilter()
    pairs = [("How long should I poach an egg?", "Four minutes."), ("How long should I poach an egg?", "Five.")]
    before = list(pairs)
    first = filt.filter(SOURCE_Q, SOURCE_A, pairs)
    assert pairs == before
    assert filt.filter(SOURCE_Q, SOURCE_A, pairs) == first
    assert first.dropped == {"duplicate": 1}  # same question twice: F = 1.0 >= dedup


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"low": 0.5, "high": 0.5}, "must satisfy 0 <= low < high <= 1"),
        ({"low": -0.1}, "low=-0.1"),
        ({"high": 1.5}, "high=1.5"),
        ({"dedup": 0.0}, "SynthFilter.dedup=0.0 must be in (0, 1]"),
    ],
)
def test_filter_config_errors_name_the_field(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        SynthFilter(**kwargs)
    assert fragment in str(err.value)
