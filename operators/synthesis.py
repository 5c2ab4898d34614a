"""Synthetic question–answer pairs: the prompt that asks for them, the parser that
reads them back, and the ROUGE-1 sanity check that decides which ones to keep.

The paper (Qin et al., DAC'24) prompts the local LLM to write pairs that are
"semantically similar" to an annotated buffered sample and filters them with a
ROUGE-1-based check. Their prompt and thresholds were not released; ours are
below, with the numbers that chose them. Everything here is pure Python: the
generation itself lives in ``models/synth.py``.

>>> text = render_synth_prompt(DEFAULT_SYNTH_TEMPLATE, "How do I boil an egg?", "Put it in boiling water.", k=2)
>>> "How do I boil an egg?" in text and "2" in text
True
>>> parse_pairs("Q: How do I fry an egg?\\nA: Use a hot pan.\\nQ: How long to poach an egg?")
[('How do I fry an egg?', 'Use a hot pan.'), ('How long to poach an egg?', '')]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SYNTH_TEMPLATE",
    "DROP_REASONS",
    "MAX_EXAMPLE_CHARS",
    "FilterResult",
    "SynthFilter",
    "parse_pairs",
    "render_synth_prompt",
    "rouge1_f",
]

DEFAULT_SYNTH_TEMPLATE = (
    "Here is a conversation turn.\n"
    "User: {prompt}\n"
    "Assistant: {response}\n\n"
    "Write {k} new, different question{s} the same user could ask about this topic, "
    "each followed by a short, helpful answer. "
    'Start each question with "Q:" and each answer with "A:".'
)
"""The prompt asking the LLM for ``k`` pairs like the example (fields ``prompt``,
``response``, ``k``, and ``s``: the plural ending, ``""`` when k is 1).

Tuned on SmolLM2-135M-Instruct with k=3 (sampling, T=0.7, top-p 0.9), counting
parsed questions whose ROUGE-1 F against the source question lies in [0.2, 0.8).
On 6 ShareGPT + 6 Chit Chat turns (one per conversation record): a plain "write k new pairs about the
same topic as this example" prompt, 6 of 60 (17 copies of the example at
>= 0.8); framing the example as a conversation turn and asking for "new,
different questions the same user could ask", 20 of 53 (2 copies). On 12 other
turns, adding "short" to the answer request: 20 of 49 against 10 of 36. The
measurement turns of ``SynthFilter`` were not used for tuning."""

# An example longer than this (characters, ~4 per token) is cut in the middle, so
# that the instruction after it survives the generator's prompt-length limit.
MAX_EXAMPLE_CHARS = 600


def render_synth_prompt(template: str, prompt: str, response: str, k: int, max_chars: int = MAX_EXAMPLE_CHARS) -> str:
    """Fill ``template`` with the example pair and ``k``.

    The example question and answer are each cut to ``max_chars`` characters
    (head and tail kept, joined by `` … ``).

    >>> render_synth_prompt("{k}: {prompt} / {response}", "abcdefghij", "x", k=3, max_chars=6)
    '3: abc … hij / x'
    >>> render_synth_prompt("{prompt}", "q", "a", k=0)
    Traceback (most recent call last):
    ...
    ValueError: render_synth_prompt k=0 must be a positive int
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"render_synth_prompt k={k!r} must be a positive int")
    return template.format(
        prompt=_clip(prompt.strip(), max_chars), response=_clip(response.strip(), max_chars), k=k, s="" if k == 1 else "s"
    )


# A marker opening a question or an answer: "Q:", "Q1:", "Question 2:", "**A:**",
# "1. Q:", "- Answer:"... Group "kind" is its first letter.
_MARKER = re.compile(
    r"""
    (?P<lead>^|(?<=\s))                     # line start, or inline after whitespace
    (?:[-*•#>]+\s*)?                        # bullet / heading / quote
    (?:\(?\d{1,3}[.):]\s*)?                 # "1." "2)" "(3)"
    (?:\*\*|__)?                            # bold open
    (?P<kind>Q|A|Question|Answer)
    \s*\d{0,3}\s*                           # "Q1", "Question 2"
    (?:\*\*|__)?\s*:\s*(?:\*\*|__)?       # colon (not "." or ")": "a) ..." is a list item), bold close
    """,
    re.VERBOSE | re.MULTILINE | re.IGNORECASE,
)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Read ``(question, answer)`` pairs out of model output in "Q: … A: …" form.

    Robust to numbering ("1. Q:", "Q2:", "Question 3:"), bullets and bold
    markers, both parts on one line, and extra whitespace. A question without an
    answer (the model stopped or moved on) comes back with ``""`` as its answer,
    so the filter can count it; an answer without a question and text before the
    first marker are ignored. Markers at a line start always count; an inline
    marker only when it switches kind (``A:`` after a question), so "plan A: …"
    inside an answer does not split it. An empty part followed by a marker of the
    same kind ("A:\nA: text") is a stutter: the second marker carries the text.
    Pairs with neither question nor answer (a run of bare markers) are left out.

    >>> parse_pairs('''Sure! Here are 2 pairs:
    ... 1. **Q:** What is  a cat?
    ...    **A:** A small  pet.
    ... 2. Question 2: Why do cats purr?   Answer: Contentment, mostly.''')
    [('What is a cat?', 'A small pet.'), ('Why do cats purr?', 'Contentment, mostly.')]
    >>> parse_pairs("Q: One?\\nQ: Two?\\nA: Yes, plan A: works.\\nA: stray answer")
    [('One?', ''), ('Two?', 'Yes, plan A: works.')]
    >>> parse_pairs("no markers at all")
    []
    """
    segments: list[tuple[str, int, int]] = []  # (kind, body start, marker start)
    current = None
    for match in _MARKER.finditer(text):
        kind = match.group("kind")[0].upper()
        at_line_start = _only_space_before(text, match.start())
        if not at_line_start and kind == current:
            continue  # inline, same kind: part of the text ("plan A: ...")
        segments.append((kind, match.end(), match.start()))
        current = kind
    bodies = []
    for i, (kind, body_start, _) in enumerate(segments):
        body_end = segments[i + 1][2] if i + 1 < len(segments) else len(text)
        bodies.append((kind, _tidy(text[body_start:body_end])))
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for i, (kind, body) in enumerate(bodies):
        if not body and i + 1 < len(bodies) and bodies[i + 1][0] == kind:
            continue  # "A:\nA: text": a stuttered marker, the next one carries the text
        if kind == "Q":
            if question is not None:
                pairs.append((question, ""))
            question = body
        elif question is not None:
            pairs.append((question, body))
            question = None
    if question is not None:
        pairs.append((question, ""))
    return [pair for pair in pairs if pair != ("", "")]  # bare "Q:\nA:" lines carry nothing


@functools.lru_cache(maxsize=1)
def _scorer():
    # Same settings as the evaluation metric (models/evaluate.py), so the filter
    # and the paper's ROUGE-1 agree on what "overlap" means.
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_f(a: str, b: str) -> float:
    """ROUGE-1 F-measure of two texts (symmetric), rouge-score with Porter stemming.

    rouge-score keeps only ``[a-z0-9]`` tokens: text in other scripts scores 0.

    >>> rouge1_f("the cat sat", "the cat sat")
    1.0
    >>> rouge1_f("the cat sat", "a dog ran")
    0.0
    >>> round(rouge1_f("cats sitting", "a cat sits"), 3)  # cat, sit match after stemming: P=2/3, R=2/2
    0.8
    """
    return _scorer().score(a, b)["rouge1"].fmeasure


@dataclass
class FilterResult:
    """Pairs kept, and how many were dropped for each reason."""

    kept: list[tuple[str, str]]
    dropped: dict[str, int] = field(default_factory=dict)


DROP_REASONS = ("empty_question", "empty_answer", "answer_copies_question", "near_copy", "off_topic", "duplicate")
"""Why a synthetic pair is dropped, in the order the checks run."""


@dataclass
class SynthFilter:
    """ROUGE-1 sanity check for synthetic pairs, against their source sample.

    A pair is kept only if, in this order:

    - its question and answer are non-empty (``empty_question``, ``empty_answer``);
    - its answer is not a copy of its question, ROUGE-1 F < ``dedup``
      (``answer_copies_question``);
    - its question's ROUGE-1 F against the source question lies in
      [``low``, ``high``): at or above ``high`` it restates the source and adds
      nothing (``near_copy``); below ``low`` it shares almost no words with it
      and is off-topic (``off_topic``);
    - its question's ROUGE-1 F against every already kept question is below
      ``dedup`` (``duplicate``).

    Why ``low=0.1, high=0.8, dedup=0.9`` — measured on SmolLM2-135M-Instruct,
    sampling at T=0.7, top-p 0.9: 171 parsed questions from 44 ShareGPT and Chit
    Chat turns (24 used to tune the template, 20 held out and run with k=1 and
    k=3); every question with F >= 0.1 and all 69 held-out ones read by hand.

    - F >= 0.8 against the source question: restatements, 7 of 7 ("Does one
      pay long-term capital gains taxes on a savings account?", 0.86, for a
      source asking exactly that). A plainer "write k pairs like this example"
      prompt copied the example outright (17 of 60 questions at >= 0.8).
    - 0.6–0.8: paraphrases in new words (0.64: "Is it justifiable to use Spring
      State Machine and Spring Workflow in a single project?" for "can i use
      spring state machine and workflow together and is it justified?"). Kept:
      the user's need in new wording is what synthesis is for.
    - 0.1–0.3: about half on topic, half generic questions that share only
      stop words ("how", "you") with a short chit-chat source. A low of 0.2
      instead of 0.1 did not raise that share and halved the held-out yield
      (k=1: 2 instead of 4 kept pairs from 20 samples).
    - below 0.1 (49 of the 69 held-out questions): off topic, except about 6
      loosely related ones against sources of 100+ words, where recall is tiny.
      Sources in other scripts always land here: rouge-score sees no tokens.
    - duplicates: repeated questions score >= 0.94 against each other, while
      different questions in a shared frame reach 0.83 ("How to make a good
      friend?" / "How to make a good conversation?"); hence ``dedup=0.9``.

    Unigram overlap has known blind spots: a relevant short question scores low
    against a long source (recall is small), and two short questions in the same
    frame score high. It is a sanity check, not a judge of quality.

    Args:
        low: lowest question-vs-source ROUGE-1 F kept (inclusive).
        high: question-vs-source ROUGE-1 F from which a pair is a near-copy (exclusive bound).
        dedup: ROUGE-1 F from which two texts count as the same (duplicates, copied answers).

    >>> filt = SynthFilter(low=0.2, high=0.8, dedup=0.8)
    >>> result = filt.filter("How do I boil an egg?", "Boil it for 8 minutes.", [
    ...     ("How do I boil an egg?", "Put it in water."),              # F = 1.0: near_copy
    ...     ("How long should I poach an egg?", "About four minutes."), # F = 2*4/(7+6) = 0.62: kept
    ...     ("What is the capital of France?", "Paris."),               # F = 0: off_topic
    ...     ("How do I peel an egg?", ""),                              # no answer
    ... ])
    >>> result.kept
    [('How long should I poach an egg?', 'About four minutes.')]
    >>> result.dropped
    {'near_copy': 1, 'off_topic': 1, 'empty_answer': 1}
    """

    low: float = 0.1
    high: float = 0.8
    dedup: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(
                f"SynthFilter low={self.low!r}, high={self.high!r} must satisfy 0 <= low < high <= 1"
            )
        if not 0.0 < self.dedup <= 1.0:
            raise ValueError(f"SynthFilter.dedup={self.dedup!r} must be in (0, 1]")

    def filter(self, source_prompt: str, source_response: str, pairs: Sequence[tuple[str, str]]) -> FilterResult:
        """Keep the pairs that pass every check, in their input order."""
        kept: list[tuple[str, str]] = []
        dropped: dict[str, int] = {}
        for question, answer in pairs:
            reason = self._reject(source_prompt, question.strip(), answer.strip(), kept)
            if reason is None:
                kept.append((question.strip(), answer.strip()))
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        return FilterResult(kept=kept, dropped=dropped)

    def _reject(self, source: str, question: str, answer: str, kept: list[tuple[str, str]]) -> str | None:
        if not question:
            return "empty_question"
        if not answer:
            return "empty_answer"
        if rouge1_f(answer, question) >= self.dedup:
            return "answer_copies_question"
        overlap = rouge1_f(question, source)
        if overlap >= self.high:
            return "near_copy"
        if overlap < self.low:
            return "off_topic"
        if any(rouge1_f(question, other) >= self.dedup for other, _ in kept):
            return "duplicate"
        return None


# --- internals -------------------------------------------------------------------


def _clip(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = (max_chars + 1) // 2
    return text[:head].rstrip() + " … " + text[len(text) - max_chars // 2 :].lstrip()


def _only_space_before(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return not text[line_start:pos].strip()


_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_EDGE_MARKUP = re.compile(r"^(?:\*\*|__)+|(?:\*\*|__)+$")
# A body that starts with more markers ("A: A: A: ..."): the model stuttered.
_LEADING_MARKERS = re.compile(r"^(?:(?:\*\*|__)?(?:Q|A|Question|Answer)\s*(?:\*\*|__)?\s*:\s*)+", re.IGNORECASE)


def _tidy(body: str) -> str:
    """Collapse runs of spaces, blank lines, stray bold markers, stuttered markers and
    enclosing quotes; trim."""
    body = _SPACES.sub(" ", body)
    body = "\n".join(line.strip() for line in body.strip().splitlines())
    body = _BLANK_LINES.sub("\n", body)
    body = _EDGE_MARKUP.sub("", body).strip()
    body = _LEADING_MARKERS.sub("", body).strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'" and body.count(body[0]) == 2:
        body = body[1:-1].strip()  # the whole part quoted: "What is Java?"
    return body
