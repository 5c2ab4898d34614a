"""Every models/ config built from the settings tree, in one place.

The dataclasses in models/ take their defaults from the tree's sections (so a
default lives once), and these functions carry a run's settings over to them:

>>> from operators.config import Settings
>>> s = Settings(train={"rank": 4}, generate={"max_new_tokens": 32})
>>> personalize_config(s).train.rank, generate_config(s).max_new_tokens, generate_config(s).no_repeat_ngram_size
(4, 32, 3)
>>> embed_config(Settings(embed={"kind": "minilm"})).center  # centering is for the LM's anisotropic states
False

``model.dtype`` is resolved once per process (``compute_dtype``, models/hardware.py) and
handed to the embedding and training configs, and to generation when named explicitly
(``generation_dtype``: ``auto`` decodes in fp32); the weights stay fp32:

>>> s = Settings(model={"dtype": "bf16"})
>>> embed_config(s).dtype, train_config(s).dtype, generate_config(s).dtype
('bfloat16', 'bfloat16', 'bfloat16')
>>> lm_config(s).dtype
'float32'
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.embed import EmbedConfig
from models.generate import GenerateConfig
from models.lm import LMConfig
from models.personalize import PersonalizeConfig
from models.train import TrainConfig

if TYPE_CHECKING:
    from models.hardware import DtypeChoice, ThreadChoice
    from operators.config import Settings

log = logging.getLogger(__name__)


def lm_config(settings: Settings) -> LMConfig:
    return LMConfig(model=settings.model.lm, cache_dir=settings.model.cache_dir, seed=settings.seed)


def compute_dtype(settings: Settings) -> str:
    """``"float32"`` or ``"bfloat16"``: ``model.dtype`` resolved for this machine (see ``dtype_choice``)."""
    return dtype_choice(settings).dtype


def dtype_choice(settings: Settings) -> DtypeChoice:
    """``model.dtype`` on this machine, decided once per process (``auto``: cached per CPU model)."""
    return _dtype_choice(settings.model.dtype, Path(settings.model.cache_dir).expanduser())


def thread_choice(settings: Settings) -> ThreadChoice:
    """``embed.torch_threads``, or (None) the thread count measured faster at the first call of the process."""
    return _thread_choice(settings.embed.torch_threads, compute_dtype(settings))


def embed_config(settings: Settings) -> EmbedConfig:
    e = settings.embed
    return EmbedConfig(kind=e.kind, max_tokens=e.max_tokens, batch_size=e.batch_size, center=e.center and e.kind == "lm",
                       dtype=compute_dtype(settings))


def train_config(settings: Settings) -> TrainConfig:
    t = settings.train
    return TrainConfig(rank=t.rank, alpha=t.alpha, dropout=t.dropout, target_modules=tuple(t.target_modules), lr=t.lr,
                       epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size, max_seq_len=t.max_seq_len,
                       seed=settings.seed, dtype=compute_dtype(settings))


def personalize_config(settings: Settings) -> PersonalizeConfig:
    t, s = settings.train, settings.synth
    return PersonalizeConfig(train=train_config(settings), synth_k=s.k, synth_tokens_per_pair=s.tokens_per_pair,
                             synth_low=s.low, synth_high=s.high, synth_dedup=s.dedup, probe_every=t.probe_every,
                             gate_tolerance=t.gate_tolerance, base_model_id=settings.model.lm)


def generate_config(settings: Settings, **overrides: Any) -> GenerateConfig:
    """Greedy answers as `generate`, `eval` and serving give them; ``overrides`` for one call's choices."""
    g = settings.generate
    return GenerateConfig(**{"max_new_tokens": g.max_new_tokens, "no_repeat_ngram_size": g.no_repeat_ngram_size,
                             "batch_size": g.batch_size, "max_prompt_tokens": g.max_prompt_tokens,
                             "dtype": generation_dtype(settings), **overrides})


def generation_dtype(settings: Settings) -> str:
    """The compute dtype of decoding: fp32 under ``auto``; bf16 only when asked for by name.

    bf16 here is autocast over fp32 weights, and autocast casts every weight it uses at every
    call. Embedding and training amortise that cast over a batch of whole sequences; decoding
    calls the model once per new token, so it casts the whole model once per token. Measured on
    the AMX Xeon (1 thread, SmolLM2, greedy, 48 tokens): 6.1 tokens/s under autocast against
    16.3 in fp32 at batch 1, and equal at batch 8. So ``auto`` never picks it for generation.

    >>> from operators.config import Settings
    >>> generation_dtype(Settings(model={"dtype": "auto"})), generation_dtype(Settings(model={"dtype": "bf16"}))
    ('float32', 'bfloat16')
    """
    return "float32" if settings.model.dtype == "auto" else compute_dtype(settings)


def load_model(settings: Settings) -> tuple[Any, Any]:
    """The configured causal LM and tokenizer, with torch's thread count set first.

    ``embed.torch_threads`` is process-wide and applies to everything torch does here
    (embedding, generation, training): on a machine shared with other jobs, more OpenMP
    threads than free cores made forward passes 5-20x slower. Unset, the count is
    measured (``thread_choice``). The weights load in fp32 whatever ``model.dtype`` says:
    bf16 is a compute dtype (autocast), so adapters and digests do not depend on it.
    """
    import torch

    from models.lm import load_lm

    dtype, threads = dtype_choice(settings), thread_choice(settings)
    torch.set_num_threads(threads.threads)
    log.info("arithmetic: %s on %s (%s%s); %d torch thread(s) (%s)", dtype.dtype, dtype.cpu or "this CPU", dtype.reason,
             ", cached" if dtype.cached else "", threads.threads, threads.reason)
    return load_lm(lm_config(settings))


@functools.lru_cache(maxsize=8)
def _dtype_choice(requested: str, cache_dir: Path) -> DtypeChoice:
    from models.hardware import choose_dtype

    return choose_dtype(requested, cache_dir)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _thread_choice(requested: int | None, dtype: str) -> ThreadChoice:
    from models.hardware import choose_threads

    return choose_threads(requested, dtype)  # type: ignore[arg-type]
