"""ROUGE-1 scoring and evaluation (tiny random Llama; a stub model for exact answers)."""

from __future__ import annotations

import pytest
import torch

from models.evaluate import EvalResult, evaluate, rouge1_scores
from models.generate import GenerateConfig
from models.lm import tiny_llama


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=0)


class FixedAnswerModel:
    """Stands in for a causal LM: answers every prompt with the same token ids."""

    device = torch.device("cpu")

    def __init__(self, answer_ids: list[int]):
        self.answer_ids = answer_ids

    def generate(self, input_ids, attention_mask, **kwargs):
        tail = torch.tensor(self.answer_ids).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, tail], dim=1)


def test_rouge1_of_identical_is_one_of_disjoint_is_zero():
    assert rouge1_scores(["Paris is the capital.", "the cat sat"], ["Paris is the capital.", "dogs bark"]) == [1.0, 0.0]


def test_rouge1_partial_overlap_by_hand():
    # the cat sat / the cat ran: overlap 2 of 3 and 3 -> P = R = F = 2/3
    # Running dogs / the dog runs: run, dog match after stemming: P = 2/2, R = 2/3 -> F = 0.8
    assert rouge1_scores(["the cat sat", "Running dogs"], ["the cat ran", "the dog runs"]) == pytest.approx([2 / 3, 0.8])


def test_rouge1_needs_one_prediction_per_reference():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge1_scores(["a", "b"], ["a"])


def test_evaluate_returns_n_a_mean_in_unit_interval_and_the_predictions(tiny):
    model, tokenizer = tiny
    pairs = [("Hi", "Hello there!"), ("What is 2+2?", "4"), ("Name a colour.", "Blue.")]
    result = evaluate(model, tokenizer, pairs, GenerateConfig(max_new_tokens=6, batch_size=2))
    assert isinstance(result, EvalResult)
    assert result.n == 3 and len(result.predictions) == 3
    assert 0.0 <= result.rouge1_mean <= 1.0 and result.rouge1_std >= 0.0 and result.seconds > 0


def test_evaluate_scores_a_perfect_model_one_and_a_wrong_one_zero(tiny):
    _, tokenizer = tiny
    model = FixedAnswerModel(tokenizer.encode("Paris is the capital.", add_special_tokens=False) + [tokenizer.eos_token_id])
    perfect = evaluate(model, tokenizer, [("Capital of France?", "Paris is the capital.")] * 2, GenerateConfig())
    assert (perfect.rouge1_mean, perfect.rouge1_std, perfect.predictions) == (1.0, 0.0, ["Paris is the capital."] * 2)
    # one exact, one disjoint: mean 0.5, population std 0.5
    mixed = evaluate(model, tokenizer, [("a?", "Paris is the capital."), ("b?", "Dogs bark.")], GenerateConfig())
    assert (mixed.rouge1_mean, mixed.rouge1_std) == (0.5, 0.5)


def test_evaluate_needs_pairs(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="at least one"):
        evaluate(model, tokenizer, [], GenerateConfig())
