"""Every models/ config built from the settings tree, in one place.

The dataclasses in models/ take their defaults from the tree's sections (so a
default lives once), and these functions carry a run's settings over to them:

>>> from operators.config import Settings
>>> s = Settings(train={"rank": 4}, generate={"max_new_tokens": 32})
>>> personalize_config(s).train.rank, generate_config(s).max_new_tokens, generate_config(s).no_repeat_ngram_size
(4, 32, 3)
>>> embed_config(Settings(embed={"kind": "minilm"})).center  # centering is for the LM's anisotropic states
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.embed import EmbedConfig
from models.generate import GenerateConfig
from models.lm import LMConfig
from models.personalize import PersonalizeConfig
from models.train import TrainConfig

if TYPE_CHECKING:
    from operators.config import Settings


def lm_config(settings: Settings) -> LMConfig:
    return LMConfig(model=settings.model.lm, cache_dir=settings.model.cache_dir, seed=settings.seed)


def embed_config(settings: Settings) -> EmbedConfig:
    e = settings.embed
    return EmbedConfig(kind=e.kind, max_tokens=e.max_tokens, batch_size=e.batch_size, center=e.center and e.kind == "lm")


def train_config(settings: Settings) -> TrainConfig:
    t = settings.train
    return TrainConfig(rank=t.rank, alpha=t.alpha, dropout=t.dropout, target_modules=tuple(t.target_modules), lr=t.lr,
                       epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size, max_seq_len=t.max_seq_len,
                       seed=settings.seed)


def personalize_config(settings: Settings) -> PersonalizeConfig:
    t, s = settings.train, settings.synth
    return PersonalizeConfig(train=train_config(settings), synth_k=s.k, synth_tokens_per_pair=s.tokens_per_pair,
                             synth_low=s.low, synth_high=s.high, synth_dedup=s.dedup, probe_every=t.probe_every,
                             gate_tolerance=t.gate_tolerance, base_model_id=settings.model.lm)


def generate_config(settings: Settings, **overrides: Any) -> GenerateConfig:
    """Greedy answers as `generate`, `eval` and serving give them; ``overrides`` for one call's choices."""
    g = settings.generate
    return GenerateConfig(**{"max_new_tokens": g.max_new_tokens, "no_repeat_ngram_size": g.no_repeat_ngram_size,
                             "batch_size": g.batch_size, "max_prompt_tokens": g.max_prompt_tokens, **overrides})


def load_model(settings: Settings) -> tuple[Any, Any]:
    """The configured causal LM and tokenizer, with torch's thread count set first.

    ``embed.torch_threads`` is process-wide and applies to everything torch does here
    (embedding, generation, training): on a machine shared with other jobs, more OpenMP
    threads than free cores made forward passes 5-20x slower.
    """
    from models.lm import load_lm

    if settings.embed.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.embed.torch_threads)
    return load_lm(lm_config(settings))
