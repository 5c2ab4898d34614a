"""Synthesize question–answer pairs similar to one annotated sample.

One sampled generation asks the local LLM for ``k`` pairs
(``operators.synthesis.DEFAULT_SYNTH_TEMPLATE``); the text is parsed and passed
through the ROUGE-1 sanity check (``operators.synthesis.SynthFilter``); at most
``k`` pairs come back. The prompt, parser and filter are pure Python in
``operators/``; this module only adds the model call.

Cost: one ``generate`` call of at most ``gen_config.max_new_tokens`` tokens,
sized to ``k`` by ``synth_gen_config``. Measured on SmolLM2-135M-Instruct (1 torch
thread, shared 2-core CPU), 20 held-out ShareGPT + Chit Chat turns:

====  ===========  ==========  ================  ============================
k     s / sample   new tokens  >= 1 pair parsed  kept (band [0.1, 0.8))
====  ===========  ==========  ================  ============================
1     8.1          65          11 / 20           4 of 20 asked, 4 samples
3     17.8         146         13 / 20           5 of 60 asked, 3 samples
====  ===========  ==========  ================  ============================

Asking for 3 pairs took 2.2x the time for about the same number of usable pairs:
the 135M model's extra pairs are mostly off-topic or unanswered. Hence
``DEFAULT_K = 1``.

>>> from models.lm import tiny_llama
>>> from operators.synthesis import SynthFilter
>>> model, tokenizer = tiny_llama(seed=0)
>>> result = synthesize(model, tokenizer, "How do I boil an egg?", "Boil it for 8 minutes.",
...                     k=2, gen_config=synth_gen_config(2, max_new_tokens_per_pair=8), filt=SynthFilter())
>>> len(result.pairs) <= 2, result.seconds > 0  # a random model writes no parseable pairs
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.generate import GenerateConfig, generate
from operators.synthesis import DEFAULT_SYNTH_TEMPLATE, SynthFilter, parse_pairs, render_synth_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_K", "SynthResult", "synth_gen_config", "synthesize"]

DEFAULT_K = 1
"""Pairs asked per annotated sample (see the table above)."""

# New tokens budgeted per requested pair. Measured: a parsed pair averaged ~60
# tokens at k=3; the budget leaves room for a preamble ("Sure! Here are...").
TOKENS_PER_PAIR = 96


@dataclass
class SynthResult:
    """What one synthesis call produced.

    Attributes:
        pairs: kept ``(question, answer)`` pairs, at most ``k``.
        raw_text: the model's whole output (for logs at DEBUG and for tuning).
        dropped: reason → count, from the filter, plus ``"surplus"`` for valid
            pairs beyond ``k``.
        seconds: wall time of the generation, parsing and filtering.
    """

    pairs: list[tuple[str, str]]
    raw_text: str
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def synth_gen_config(k: int, seed: int = 0, max_new_tokens_per_pair: int = TOKENS_PER_PAIR) -> GenerateConfig:
    """A sampling ``GenerateConfig`` sized for ``k`` pairs (T=0.7, top-p 0.9).

    >>> synth_gen_config(3).max_new_tokens
    288
    """
    return GenerateConfig(max_new_tokens=k * max_new_tokens_per_pair, do_sample=True, seed=seed, batch_size=1,
                          max_prompt_tokens=512, no_repeat_ngram_size=0)


def synthesize(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    k: int,
    gen_config: GenerateConfig,
    filt: SynthFilter,
    template: str = DEFAULT_SYNTH_TEMPLATE,
) -> SynthResult:
    """Ask the model for ``k`` pairs like ``(prompt, response)``; keep those ``filt`` accepts.

    Seeded through ``gen_config.seed``: the same sample, model and seed give the
    same pairs. Use a sampling config (``do_sample=True``): greedy decoding tends
    to copy the example back, which the filter then drops as a near-copy.
    """
    (result,) = synthesize_many(model, tokenizer, [(prompt, response)], k, gen_config, filt, template)
    return result


def synthesize_many(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[tuple[str, str]],
    k: int,
    gen_config: GenerateConfig,
    filt: SynthFilter,
    template: str = DEFAULT_SYNTH_TEMPLATE,
) -> list[SynthResult]:
    """:func:`synthesize` for many ``(prompt, response)`` samples, ``gen_config.batch_size`` per call.

    Decoding reads every weight once per step whatever the batch, so a batch of
    8 costs far less than 8 single calls. Each result's ``seconds`` is its share
    of the whole call.
    """
    start = time.perf_counter()
    requests = [render_synth_prompt(template, prompt, response, k) for prompt, response in samples]
    texts = generate(model, tokenizer, requests, gen_config)
    share = (time.perf_counter() - start) / max(1, len(samples))
    results = []
    for (prompt, response), raw_text in zip(samples, texts):
        result = filt.filter(prompt, response, parse_pairs(raw_text))
        dropped = dict(result.dropped)
        if len(result.kept) > k:
            dropped["surplus"] = len(result.kept) - k
        results.append(SynthResult(pairs=result.kept[:k], raw_text=raw_text, dropped=dropped, seconds=share))
    return results
