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

__all__ = ["EvalResult", "evaluate", "rouge1_scores"]


@dataclass
class EvalResult:
    """ROUGE-1 F over ``n`` pairs: mean, population std, wall seconds, the predictions."""

    rouge1_mean: float
    rouge1_std: float
    n: int
    seconds: float
    predictions: list[str]


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
    )
