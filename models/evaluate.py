"""ROUGE-1 of generated answers against reference answers — the paper's metric.

Generation is greedy (``GenerateConfig(do_sample=False)``, the default), so a
score depends only on the model and the prompts. ROUGE-1 F-measure from
``rouge-score`` with Porter stemming; its tokenizer keeps only ``[a-z0-9]``
tokens, so answers in other scripts score 0 whatever their quality.

Cost: dominated by generation, ``len(pairs) / batch_size`` batches of up to
``max_new_tokens`` decode steps each; scoring is milliseconds per pair.

Generation length, measured with the base SmolLM2-135M-Instruct on 20 held-out
turns (10 ShareGPT, 10 Chit Chat; batch 8, 1 torch thread, shared 2-core CPU):

===============  ===============  ========  =========  =======
max_new_tokens   ROUGE-1 mean±sd  ShareGPT  Chit Chat  seconds
===============  ===============  ========  =========  =======
64               0.128 ± 0.118    0.210     0.046      91
128              0.152 ± 0.142    0.264     0.040      104
===============  ===============  ========  =========  =======

ShareGPT references are long, so 64 tokens caps recall; Chit Chat replies are
one line, so length barely matters there. 128 costs 14 % more time here.

>>> rouge1_scores(["the cat sat"], ["the cat sat"])
[1.0]
>>> from models.lm import tiny_llama
>>> from models.generate import GenerateConfig
>>> model, tokenizer = tiny_llama(seed=0)
>>> result = evaluate(model, tokenizer, [("Hi", "Hello!"), ("2+2?", "4")], GenerateConfig(max_new_tokens=4))
>>> result.n, 0.0 <= result.rouge1_mean <= 1.0, len(result.predictions)
(2, True, 2)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.generate import GenerateConfig, generate
from operators.synthesis import rouge1_f

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["EvalResult", "Paired", "evaluate", "paired_difference", "rouge1_scores"]


@dataclass
class EvalResult:
    """ROUGE-1 F over ``n`` pairs: mean, population std, wall seconds, the predictions and
    each pair's score (for paired comparisons between models on the same prompts)."""

    rouge1_mean: float
    rouge1_std: float
    n: int
    seconds: float
    predictions: list[str]
    scores: list[float]


@dataclass(frozen=True)
class Paired:
    """``candidate − reference`` on the same prompts: mean difference, a 95 % bootstrap
    interval of that mean, and how many prompts each side wins (ties are neither)."""

    mean: float
    low: float
    high: float
    wins: int
    losses: int
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0: the two models measurably differ on these prompts."""
        return self.low > 0 or self.high < 0


def paired_difference(candidate: Sequence[float], reference: Sequence[float], resamples: int = 10_000,
                      seed: int = 0) -> Paired:
    """Compare two models' per-prompt scores on the same prompts.

    Prompts differ far more from each other than two models differ on one prompt, so the
    per-prompt differences, not the two means, carry the comparison; the interval is a
    percentile bootstrap over prompts (seeded: same input, same interval).

    >>> p = paired_difference([0.3, 0.4, 0.5, 0.6], [0.2, 0.3, 0.4, 0.5])
    >>> round(p.mean, 3), round(p.low, 3), round(p.high, 3), p.wins, p.losses, p.significant
    (0.1, 0.1, 0.1, 4, 0, True)
    >>> paired_difference([0.1], [0.1, 0.2])
    Traceback (most recent call last):
    ...
    ValueError: paired_difference needs one score per prompt on both sides, got 1 and 2
    """
    import numpy as np

    if len(candidate) != len(reference) or not candidate:
        raise ValueError(
            f"paired_difference needs one score per prompt on both sides, got {len(candidate)} and {len(reference)}"
        )
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Paired(float(diff.mean()), float(low), float(high), int((diff > 0).sum()), int((diff < 0).sum()), len(diff))


def rouge1_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-1 F-measure of each prediction against its reference.

    >>> rouge1_scores(["a cat", "dogs bark"], ["the cat", "cats meow"])
    [0.5, 0.0]
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"rouge1_scores got {len(predictions)} predictions but {len(references)} references; pass one of each per pair"
        )
    return [rouge1_f(prediction, reference) for prediction, reference in zip(predictions, references)]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    gen_config: GenerateConfig,
) -> EvalResult:
    """Answer each ``(prompt, reference)`` pair's prompt and score it against the reference."""
    if not pairs:
        raise ValueError("evaluate needs at least one (prompt, reference) pair; got none")
    start = time.perf_counter()
    predictions = generate(model, tokenizer, [prompt for prompt, _ in pairs], gen_config)
    scores = rouge1_scores(predictions, [reference for _, reference in pairs])
    return EvalResult(
        rouge1_mean=statistics.fmean(scores),
        rouge1_std=statistics.pstdev(scores),
        n=len(scores),
        seconds=time.perf_counter() - start,
        predictions=predictions,
        scores=scores,
    )
