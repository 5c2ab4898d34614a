"""One battery over every score, as there is over every policy: input left as it was, same input
same value, finite and inside the score's documented range, bad input refused with a ValueError
that names it; and the streaming IDD against a naive recomputation at every prefix."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from operators.scores import DomainScorer, eoe, idd_from_sum, loo_idd

LEXICONS = {"medicine": frozenset({"fever", "doctor", "pill"}), "sport": frozenset({"goal", "match", "team"})}
WORDS = ["fever", "doctor", "goal", "match", "team", "the", "my", "is", "back", "again", "pill", "hello"]


@dataclass(frozen=True)
class Score:
    compute: Callable[[dict[str, Any]], float]  # from one sample's inputs
    low: float
    high: float
    bad: Callable[[], Any]  # a call the score must refuse with a ValueError ...
    names: str  # ... whose message names the bad input


def sample(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=16).astype(np.float32)
    unit = vec / np.linalg.norm(vec)
    members = rng.normal(size=(int(rng.integers(0, 6)), 16))
    members = (members / np.linalg.norm(members, axis=1, keepdims=True)).astype(np.float32)
    return {"embedding": vec, "unit": unit, "n_tokens": int(rng.integers(1, 400)),
            "text": " ".join(rng.choice(WORDS, size=int(rng.integers(0, 20)))),
            "domain_sum": members.sum(axis=0) if len(members) else np.zeros(16, np.float32), "count": len(members)}


SCORER = DomainScorer(LEXICONS)
SCORES: dict[str, Score] = {
    "eoe-bins": Score(lambda s: eoe(s["embedding"], s["n_tokens"], bins=100), 0.0, 1.0,
                      lambda: eoe(np.zeros((2, 2)), 3), "shape"),
    "eoe-authors": Score(lambda s: eoe(s["embedding"], s["n_tokens"], bins=100, mode="authors"), 0.0, math.log2(100),
                         lambda: eoe(np.ones(4), 0, mode="authors"), "n_tokens"),
    "dss": Score(lambda s: SCORER.score(s["text"]).dss, 0.0, 1.0,
                 lambda: DomainScorer({"medicine": frozenset({"two words"})}).score("x"), "medicine"),
    "idd": Score(lambda s: idd_from_sum(s["unit"], s["domain_sum"], s["count"]), 0.0, 2.0,
                 lambda: idd_from_sum(np.ones(3), np.ones(4), 1), "shape"),
}
ALL = pytest.mark.parametrize("name", sorted(SCORES))


@ALL
def test_a_score_leaves_its_input_as_it_was(name):
    for seed in range(20):
        s = sample(seed)
        before = copy.deepcopy(s)
        SCORES[name].compute(s)
        for key, value in before.items():
            assert np.array_equal(s[key], value) if isinstance(value, np.ndarray) else s[key] == value, (name, key)


@ALL
def test_same_input_same_value(name):
    for seed in range(20):
        assert SCORES[name].compute(sample(seed)) == SCORES[name].compute(sample(seed))


@ALL
def test_a_score_is_finite_and_inside_its_range(name):
    score = SCORES[name]
    values = [score.compute(sample(seed)) for seed in range(200)]
    assert all(math.isfinite(v) and score.low <= v <= score.high for v in values), (name, min(values), max(values))
    assert len(set(values)) > 1  # it reacts to its input


@ALL
def test_bad_input_is_refused_with_a_message_naming_it(name):
    with pytest.raises(ValueError, match=SCORES[name].names):
        SCORES[name].bad()


def test_streaming_idd_matches_the_naive_mean_cosine_at_every_prefix():
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(40, 16))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    running = np.zeros(16, np.float32)
    for n in range(len(rows)):
        vec = rows[n]
        naive = 1.0 if n == 0 else 1.0 - float(np.mean(rows[:n].astype(np.float64) @ vec.astype(np.float64)))
        assert idd_from_sum(vec, running, n) == pytest.approx(naive, abs=1e-5)
        running += vec
        loo = loo_idd(rows[: n + 1])
        for i in range(n + 1):
            others = np.delete(rows[: n + 1], i, axis=0).astype(np.float64)
            want = 1.0 if n == 0 else 1.0 - float(np.mean(others @ rows[i].astype(np.float64)))
            assert loo[i] == pytest.approx(want, abs=1e-5)
