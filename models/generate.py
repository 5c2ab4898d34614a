"""Batched chat generation: prompts in, the model's new text out.

Every prompt is rendered with the tokenizer's chat template exactly as training
renders a user turn (``apply_chat_template([{"role": "user", "content": p}],
add_generation_prompt=True)``), so an adapter sees at inference the same token
sequence it was trained to continue.

Batches are padded on the LEFT: a causal LM continues from the last position of
each row, so every row's real tokens must end at the same column. The attention
mask hides the pads, and ``generate`` derives position ids from that mask, so a
padded row produces what it would alone (up to float rounding, see the tests).

Cost (SmolLM2-135M-Instruct, fp32, 1 torch thread on a shared 2-core machine,
load average 3–6): decoding 64 new tokens ran at 9.4 tokens/s for one prompt and
30 tokens/s for a batch of 8 (decoding is memory-bound: a step reads every weight
once, whatever the batch), but the batch-of-8 prefill of 8 x 420 tokens took
19 s of the 37 s. Rows that finish early keep stepping (emitting pad) until the
whole batch is done, so batch prompts of similar length. On an oversubscribed
machine set ``torch.set_num_threads(1)``: two OpenMP threads competing with
other processes made a forward pass 5–20x slower.

>>> from models.lm import tiny_llama
>>> model, tokenizer = tiny_llama(seed=0)
>>> config = GenerateConfig(max_new_tokens=4, do_sample=True, seed=1)
>>> a = generate(model, tokenizer, ["Hi", "What is 2+2?"], config)
>>> a == generate(model, tokenizer, ["Hi", "What is 2+2?"], config)  # same seed, same text
True
>>> len(a), all(isinstance(text, str) for text in a)
(2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.hardware import ComputeDtype, check_compute_dtype, compute_context
from operators.config import GenerateSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["GenerateConfig", "generate", "render_prompt_ids"]

# Marks where a too-long prompt was cut (see ``render_prompt_ids``).
_ELLIPSIS = " … "
_SHIPPED = GenerateSettings()  # the defaults live in the settings tree


@dataclass
class GenerateConfig:
    """How to generate.

    Args:
        max_new_tokens: new tokens per prompt at most; generation time is roughly
            linear in it (one forward pass per token).
        do_sample: ``False`` — greedy (deterministic, used for evaluation);
            ``True`` — sample with ``temperature`` and ``top_p`` (used for synthesis).
        temperature: softmax temperature when sampling (> 0).
        top_p: nucleus sampling mass when sampling, in (0, 1]. No top-k cut is applied.
        seed: seeds the sampler. Same seed, prompts and ``batch_size`` ⇒ same text.
            Batch ``i`` is seeded with ``seed + i``, so a prompt's text depends on
            which batch it lands in, not on how many batches ran before.
        batch_size: prompts per ``generate`` call. Memory grows with
            ``batch_size * (prompt + new tokens)``; 8 suits a 135M model on CPU.
        max_prompt_tokens: rendered prompts (template included) longer than this are
            cut in the middle of the user's text (head and tail kept).
        no_repeat_ngram_size: if > 0, never emit a token that would repeat an
            n-gram of this size already in the sequence (prompt included). A
            135M model decoding greedily often loops on one line until the
            token budget ends; 0 leaves decoding untouched.
        dtype: compute dtype: ``"float32"``, or ``"bfloat16"`` under autocast (weights
            stay fp32). Greedy text can differ from fp32's where two tokens are
            nearly tied.

    >>> GenerateConfig(top_p=0)
    Traceback (most recent call last):
    ...
    ValueError: GenerateConfig.top_p=0 must be in (0, 1]; 0.9 is a usual choice
    """

    max_new_tokens: int = _SHIPPED.max_new_tokens
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    batch_size: int = _SHIPPED.batch_size
    max_prompt_tokens: int = _SHIPPED.max_prompt_tokens
    no_repeat_ngram_size: int = _SHIPPED.no_repeat_ngram_size
    dtype: ComputeDtype = "float32"

    def __post_init__(self) -> None:
        check_compute_dtype("GenerateConfig", self.dtype)
        for name in ("max_new_tokens", "batch_size", "max_prompt_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerateConfig.{name}={value!r} must be a positive int")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"GenerateConfig.seed={self.seed!r} must be a non-negative int")
        n = self.no_repeat_ngram_size
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"GenerateConfig.no_repeat_ngram_size={n!r} must be an int >= 0; 0 disables it")
        if not self.temperature > 0:
            raise ValueError(f"GenerateConfig.temperature={self.temperature!r} must be > 0; use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerateConfig.top_p={self.top_p!r} must be in (0, 1]; 0.9 is a usual choice")


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: GenerateConfig,
    streamer: Any = None,
) -> list[str]:
    """Answer each prompt as a single user turn; return only the new text.

    Special tokens are stripped and the text is whitespace-trimmed. Output order
    follows ``prompts``. ``streamer`` (a ``transformers`` streamer, one prompt only)
    receives the tokens as they are decoded: serving streams an answer with it.
    """
    import torch

    if isinstance(prompts, str):
        raise ValueError("generate(prompts=...) takes a sequence of strings, not one string; wrap it in a list")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("generate: the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"generate(streamer=...) streams one prompt; got {len(prompts)}")
    ids = [render_prompt_ids(tokenizer, prompt, config.max_prompt_tokens) for prompt in prompts]

    knobs = {"max_new_tokens": config.max_new_tokens, "do_sample": config.do_sample}
    if config.do_sample:
        knobs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
    if config.no_repeat_ngram_size:
        knobs["no_repeat_ngram_size"] = config.no_repeat_ngram_size
    if streamer is not None:
        knobs["streamer"] = streamer

    outputs: list[str] = []
    device = model.device
    for start in range(0, len(ids), config.batch_size):
        batch = ids[start : start + config.batch_size]
        width = max(len(row) for row in batch)
        # Left padding: real tokens end at the same column in every row.
        input_ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch], device=device)
        # fork_rng: seeding the sampler must not move the caller's random stream.
        with torch.random.fork_rng(devices=[]), torch.inference_mode(), compute_context(config.dtype):
            torch.manual_seed(config.seed + start // config.batch_size)
            # Cost: one prefill over batch*width tokens, then max_new_tokens decode
            # steps (each reads every weight once; KV cache grows by one column).
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **knobs,
            )
        new_tokens = out[:, width:]  # drop the prompt columns: only the answer is returned
        outputs.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def render_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, max_tokens: int) -> list[int]:
    """Token ids of ``prompt`` as a user turn plus the assistant header.

    If the rendering is longer than ``max_tokens``, the user's text (never the
    template) is cut in the middle — its head usually says what is asked, its
    tail often holds the actual question — and re-rendered, so the ids are still
    exactly what the chat template makes of the (shortened) text.

    >>> from models.lm import tiny_llama
    >>> _, tokenizer = tiny_llama()
    >>> ids = render_prompt_ids(tokenizer, "word " * 1000, max_tokens=64)
    >>> len(ids) <= 64, tokenizer.decode(ids).endswith("<|im_start|>assistant\\n")
    (True, True)
    """
    ids = _chat_ids(tokenizer, prompt)
    if len(ids) <= max_tokens:
        return ids
    overhead = len(_chat_ids(tokenizer, _ELLIPSIS.strip()))
    budget = max_tokens - overhead
    if budget < 2:
        raise ValueError(
            f"max_prompt_tokens={max_tokens} leaves no room for the user's text: the chat template "
            f"alone takes {overhead} tokens; raise max_prompt_tokens"
        )
    content = tokenizer.encode(prompt, add_special_tokens=False)
    # Re-tokenizing decoded pieces can merge differently at the seams; shrink until it fits.
    while budget >= 2:
        head, tail = content[: (budget + 1) // 2], content[len(content) - budget // 2 :]
        text = tokenizer.decode(head) + _ELLIPSIS + tokenizer.decode(tail)
        ids = _chat_ids(tokenizer, text)
        if len(ids) <= max_tokens:
            return ids
        budget -= len(ids) - max_tokens
    raise ValueError(f"could not fit the prompt into max_prompt_tokens={max_tokens}; raise it")


def _chat_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    # transformers 5 returns a BatchEncoding by default, 4.x a plain list.
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
