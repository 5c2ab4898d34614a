"""LoRA fine-tuning of a causal LM on (prompt, response) pairs, on CPU.

The loop in ``train_lora`` is deliberately straight-line (in the spirit of nanoGPT):
render every pair once, then for each step take a shuffled batch, pad it, run the
forward pass, back-propagate into the LoRA matrices only, and take an AdamW step.
No Trainer, no callbacks: what happens and what it costs can be read top to bottom.

Training text is exactly what inference sees: ``render_example`` builds the prefix
with ``models.generate.render_prompt_ids`` (the chat template with
``add_generation_prompt=True``), then appends the answer and the template's
end-of-turn token. The loss is taken on the answer tokens only.

Cost: a step is a forward and a backward pass through the whole frozen network —
the LoRA matrices are tiny, but the gradient must flow back through every layer
above the lowest adapted one to reach them — so it is several forward passes'
worth and linear in batch × length. Measured on SmolLM2-135M (fp32, rank 8 on
q/k/v/o, 2 shared AMD EPYC cores, load average ~5-6 from other jobs, so an idle
machine should be faster): batch 4 × 128 tokens ≈ 41 s/step (~12 tokens/s,
peak RSS 2.5 GB), batch 4 × 256 ≈ 73 s/step (~14 tokens/s, peak RSS 4.1 GB); a
no-grad forward of 4 × 128 took ~9.5 s in the same conditions.

>>> TrainConfig(rank=0)
Traceback (most recent call last):
...
ValueError: TrainConfig.rank=0 must be an int >= 1; 8 or 16 suit a 135M model
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.hardware import ComputeDtype, check_compute_dtype, compute_context
from operators.config import MIN_SEQ_LEN, TrainSettings

if TYPE_CHECKING:  # torch/peft are imported lazily: importing this module stays cheap
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TrainConfig", "TrainReport", "render_example", "train_lora", "mean_loss", "example_losses", "IGNORE_INDEX",
           "watch_steps"]

IGNORE_INDEX = -100  # label value the loss skips (prefix and padding)

# The smallest window that leaves room for SmolLM2's template (~31 tokens with its
# default system prompt) plus a short prompt and answer.
_MIN_SEQ_LEN = MIN_SEQ_LEN
_SHIPPED = TrainSettings()  # the defaults live in the settings tree


@dataclass
class TrainConfig:
    """How to fine-tune a LoRA adapter.

    Args:
        rank: LoRA rank r. Trainable parameters grow linearly with it
            (SmolLM2-135M, 4 attention projections, r=8: ~0.9 M, 0.7 %).
        alpha: LoRA scaling numerator; the update is scaled by ``alpha / rank``.
        dropout: dropout on the LoRA input during training, in [0, 1).
        target_modules: names of the linear layers that get a LoRA pair.
        lr: AdamW learning rate (constant, no warm-up: runs are tens of steps).
        epochs: passes over the examples; ignored when ``max_steps`` is set.
        max_steps: exact number of optimizer steps; the examples are re-shuffled and
            cycled as often as needed. ``None`` ⇒ ``epochs`` full passes.
        batch_size: examples per step. Memory grows with batch × longest example
            (the logits alone are batch × length × vocab floats).
        max_seq_len: tokens per example at most, template included; see
            ``render_example`` for how longer examples are cut.
        seed: seeds the LoRA initialisation, dropout and the shuffling.
        weight_decay: AdamW weight decay on the LoRA matrices.
        max_grad_norm: clip the gradient norm to this before each step (``None``
            disables); guards the few-example, high-lr regime against spikes.
        dtype: compute dtype of the forward pass: ``"float32"``, or ``"bfloat16"`` under
            autocast. Either way the LoRA matrices, their gradients and AdamW's moments
            are fp32 (master weights) and the loss is summed in fp32; only the matmuls
            round their inputs to bf16.

    >>> TrainConfig(target_modules=())
    Traceback (most recent call last):
    ...
    ValueError: TrainConfig.target_modules=() must name at least one module, e.g. ('q_proj', 'v_proj')
    >>> TrainConfig(max_steps=20).max_steps
    20
    """

    rank: int = _SHIPPED.rank
    alpha: float = _SHIPPED.alpha
    dropout: float = _SHIPPED.dropout
    target_modules: tuple[str, ...] = _SHIPPED.target_modules
    lr: float = _SHIPPED.lr
    epochs: int = _SHIPPED.epochs
    max_steps: int | None = _SHIPPED.max_steps
    batch_size: int = _SHIPPED.batch_size
    max_seq_len: int = _SHIPPED.max_seq_len
    seed: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    dtype: ComputeDtype = "float32"

    def __post_init__(self) -> None:
        check_compute_dtype("TrainConfig", self.dtype)
        _positive_int("rank", self.rank, "8 or 16 suit a 135M model")
        _positive_int("epochs", self.epochs, "1-3 for a buffer of 64 samples")
        _positive_int("batch_size", self.batch_size, "4 fits a 135M model on CPU")
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps, "or None to train for `epochs` passes")
        seq = self.max_seq_len
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < _MIN_SEQ_LEN:
            raise ValueError(
                f"TrainConfig.max_seq_len={self.max_seq_len!r} must be an int >= {_MIN_SEQ_LEN} "
                "(the chat template alone takes ~31 tokens); 256 is the default"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed={self.seed!r} must be a non-negative int")
        if not _finite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"TrainConfig.alpha={self.alpha!r} must be > 0; 2 * rank is usual")
        if not _finite(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"TrainConfig.dropout={self.dropout!r} must be in [0, 1); 0.05 is usual")
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"TrainConfig.lr={self.lr!r} must be > 0; 2e-4 is usual for LoRA")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay={self.weight_decay!r} must be >= 0; 0.0 disables it")
        if self.max_grad_norm is not None and (not _finite(self.max_grad_norm) or self.max_grad_norm <= 0):
            raise ValueError(
                f"TrainConfig.max_grad_norm={self.max_grad_norm!r} must be > 0, or None to disable clipping"
            )
        if isinstance(self.target_modules, str):
            raise ValueError(
                f"TrainConfig.target_modules={self.target_modules!r} must be a sequence of names, "
                f"not one string; use ({self.target_modules!r},)"
            )
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ValueError("TrainConfig.target_modules=() must name at least one module, e.g. ('q_proj', 'v_proj')")
        if not all(isinstance(name, str) and name for name in self.target_modules):
            raise ValueError(f"TrainConfig.target_modules={self.target_modules!r} must hold non-empty strings")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists), e.g. for an adapter manifest."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out


@dataclass
class TrainReport:
    """What one ``train_lora`` run did and what it cost.

    Attributes:
        steps: optimizer steps taken.
        samples: examples processed, summed over steps (an example seen twice counts twice).
        tokens: real (non-pad) tokens fed forward, summed over steps — what costs compute.
        loss_first, loss_last: answer loss of the first and the last batch (before each step's update).
        mean_loss: mean of the per-step batch losses.
        step_seconds: wall time of each step (collate, forward, backward, update).
        tokens_per_s: ``tokens / sum(step_seconds)``.
        seconds: wall time of the whole call, including rendering and wrapping.
    """

    steps: int
    samples: int
    tokens: int
    loss_first: float
    loss_last: float
    mean_loss: float
    step_seconds: list[float] = field(default_factory=list)
    tokens_per_s: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# Called after every optimizer step of any train_lora in the process: (step, total_steps, tokens
# so far, seconds so far). For progress displays only (flows/progress.py); see watch_steps.
_STEP_WATCHERS: list[Callable[[int, int, int, float], None]] = []


@contextlib.contextmanager
def watch_steps(callback: Callable[[int, int, int, float], None]) -> Iterator[None]:
    """Call ``callback(step, total_steps, tokens, seconds)`` after each training step while inside.

    A display hook: it sees every ``train_lora`` run of the process (the trainer runs on its own
    thread), and an exception it raises is logged by nobody and ignored.

    >>> from models.lm import tiny_llama
    >>> model, tokenizer = tiny_llama(seed=0)
    >>> seen = []
    >>> with watch_steps(lambda step, total, tokens, seconds: seen.append((step, total))):
    ...     _ = train_lora(model, tokenizer, [("hi", "hello")] * 2, TrainConfig(max_steps=2, batch_size=1))
    >>> seen
    [(1, 2), (2, 2)]
    """
    _STEP_WATCHERS.append(callback)
    try:
        yield
    finally:
        _STEP_WATCHERS.remove(callback)


def render_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one pair, rendered exactly as inference sees it.

    ``input_ids`` = the chat-template prefix for a single user turn with the
    assistant header (``models.generate.render_prompt_ids``, the function generation
    uses), then the response tokens, then the template's end-of-turn token (for
    SmolLM2 ``<|im_end|>``, which is also its eos: generation stops on it, so the
    adapter learns where to stop). ``labels`` are ``IGNORE_INDEX`` on the prefix: we
    train on the answer only.

    The response is tokenized on its own, not jointly with the prefix: at inference
    the model continues from the prefix one token at a time, so this is the token
    sequence it would have to produce.

    Longer than ``max_seq_len``: the prefix is kept whole if it leaves room for the
    answer — at least ``min(len(answer) + 1, max_seq_len // 4)`` tokens — and the
    answer's end is cut; a cut answer gets no end-of-turn token (we don't teach the
    model to stop mid-sentence). Otherwise the user's text is cut as
    ``render_prompt_ids`` cuts it at inference (middle removed, head and tail kept,
    re-rendered through the template) so the prefix fits that budget. This differs
    from the brief's "cut the prompt's start" on purpose: one cutting rule for
    training and inference, so a cut prompt trains on what generation would see
    under the same token budget.
    """
    from models.generate import render_prompt_ids

    answer = tokenizer.encode(response, add_special_tokens=False)
    end = _end_of_turn_id(tokenizer)
    reserve = min(len(answer) + 1, max_seq_len // 4)
    prefix = render_prompt_ids(tokenizer, prompt, max_seq_len - reserve)
    room = max_seq_len - len(prefix)
    completion = answer + [end] if len(answer) + 1 <= room else answer[:room]
    input_ids = prefix + completion
    labels = [IGNORE_INDEX] * len(prefix) + completion
    return input_ids, labels


def train_lora(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    config: TrainConfig,
    init_adapter: Path | None = None,
) -> tuple[PeftModel, TrainReport]:
    """Fine-tune a LoRA adapter on ``examples`` (``(prompt, response)`` pairs).

    A fresh LoRA (``config.rank`` etc.; B starts at zero, so step 0 is the base
    model) or, with ``init_adapter``, the adapter saved in that directory, loaded
    trainable, continues from its weights; its rank and target modules must then
    match ``config``.

    The base weights are frozen and never change, but peft wraps ``model`` in place
    (it swaps the targeted ``nn.Linear`` layers for LoRA layers that hold the
    original one). The returned ``PeftModel`` is in eval mode; save it with
    ``save_pretrained`` / ``AdapterStore.save``, then ``peft_model.unload()`` gives
    the plain base model back (same ``weights_digest``) for the next user. If
    training fails (or is interrupted), ``model`` is unwrapped before the error
    propagates.

    Same ``config.seed``, examples and base weights ⇒ the same losses and adapter.
    The global torch random state is left as it was.
    """
    import torch
    from peft import PeftModel

    started = time.perf_counter()
    pairs = _check_examples(examples)
    if isinstance(model, PeftModel) or hasattr(model, "peft_config"):
        raise ValueError(
            "train_lora(model=...) already carries a LoRA adapter; pass the plain base model "
            "(peft_model.unload() returns it), and init_adapter=<dir> to continue from an adapter"
        )
    pad_id = _pad_id(tokenizer)
    # Render once; every epoch reuses the token lists.
    rendered = [render_example(tokenizer, p, r, config.max_seq_len) for p, r in pairs]

    n = len(rendered)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.max_steps if config.max_steps is not None else config.epochs * steps_per_epoch

    losses: list[float] = []
    step_seconds: list[float] = []
    samples = tokens = 0
    # fork_rng: the seed below must not move the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # LoRA A initialisation and dropout masks
        peft_model = _wrap(model, config, init_adapter)
        try:
            # Only the LoRA matrices require grad, so AdamW keeps its two moment buffers
            # for ~1 M numbers, not 135 M: optimizer memory is negligible.
            trainable = [p for p in peft_model.parameters() if p.requires_grad]
            for p in trainable:  # fp32 master weights, even over a base loaded in bf16
                p.data = p.data.float()
            optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
            order_rng = torch.Generator().manual_seed(config.seed)  # shuffling, independent of dropout
            peft_model.train()

            step = 0
            while step < total_steps:
                order = torch.randperm(n, generator=order_rng).tolist()
                for start in range(0, n, config.batch_size):
                    if step == total_steps:
                        break
                    t0 = time.perf_counter()
                    batch = [rendered[i] for i in order[start : start + config.batch_size]]
                    input_ids, attention_mask, labels = _collate(batch, pad_id)
                    # Cost: forward + backward through every frozen layer (the gradient
                    # must reach the LoRA matrices in layer 0): ~4 no-grad forwards on
                    # this CPU; the activations kept for backward grow with batch ×
                    # length × layers (2.5 GB peak RSS at 4 × 128 for SmolLM2-135M).
                    # Autocast around the forward only: backward replays the same casts.
                    with compute_context(config.dtype):
                        loss_sum, n_tokens = _answer_loss_sum(peft_model, input_ids, attention_mask, labels)
                    loss = loss_sum / n_tokens
                    loss.backward()
                    if config.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step_seconds.append(time.perf_counter() - t0)

                    losses.append(loss.item())
                    samples += len(batch)
                    tokens += int(attention_mask.sum())
                    step += 1
                    for watch in list(_STEP_WATCHERS):
                        with contextlib.suppress(Exception):
                            watch(step, total_steps, tokens, sum(step_seconds))
            peft_model.eval()
        except BaseException:
            peft_model.unload()  # give the caller its plain base model back, then re-raise
            raise

    report = TrainReport(
        steps=len(losses),
        samples=samples,
        tokens=tokens,
        loss_first=losses[0],
        loss_last=losses[-1],
        mean_loss=sum(losses) / len(losses),
        step_seconds=step_seconds,
        tokens_per_s=tokens / max(sum(step_seconds), 1e-9),
        seconds=time.perf_counter() - started,
    )
    return peft_model, report


def mean_loss(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    max_seq_len: int,
    batch_size: int = 8,
) -> float:
    """Token-weighted mean answer loss (nats per answer token) over ``examples``, no grad.

    Each answer token counts once, whatever batch it lands in, so the value does not
    depend on ``batch_size``. Examples are rendered as ``render_example`` renders
    them and batched by length (less padding). The model's train/eval mode is
    restored afterwards.
    """
    sums, counts = _answer_losses(model, tokenizer, examples, max_seq_len, batch_size, "mean_loss")
    return sum(sums) / sum(counts)


def example_losses(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    max_seq_len: int,
    batch_size: int = 8,
) -> list[float]:
    """Each example's mean answer loss (nats per answer token), in the order given, no grad.

    For paired comparisons: two models scored on the same examples differ per example
    far less than examples differ from each other. Rendering and batching as
    ``mean_loss``; their token-weighted mean is ``mean_loss``.
    """
    sums, counts = _answer_losses(model, tokenizer, examples, max_seq_len, batch_size, "example_losses")
    return [total / n for total, n in zip(sums, counts)]


# --- internals -------------------------------------------------------------------


def _wrap(model, config: TrainConfig, init_adapter: Path | None):
    """A trainable ``PeftModel`` around ``model``: fresh LoRA, or the one in ``init_adapter``."""
    from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model

    if init_adapter is None:
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            bias="none",
        )
        return get_peft_model(model, lora)

    from models.adapters import verify_adapter_files

    init_adapter = Path(init_adapter)
    verify_adapter_files(init_adapter)  # safetensors only, weights as its manifest recorded them
    try:
        saved = PeftConfig.from_pretrained(str(init_adapter))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"train_lora(init_adapter={str(init_adapter)!r}) is not a PEFT adapter directory: {err}"
        ) from err
    targets = saved.target_modules
    saved_targets = [targets] if isinstance(targets, str) else sorted(targets)
    if saved.r != config.rank or saved_targets != sorted(config.target_modules):
        raise ValueError(
            f"train_lora(init_adapter={str(init_adapter)!r}) has rank={saved.r}, target_modules={saved_targets}, "
            f"but TrainConfig has rank={config.rank}, target_modules={sorted(config.target_modules)}; "
            "use the adapter's values, or init_adapter=None to start a fresh adapter"
        )
    return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)


def _answer_losses(model, tokenizer, examples, max_seq_len: int, batch_size: int, caller: str):
    """Per example, in input order: ``(sums of answer-token cross-entropies, answer-token counts)``.

    Examples are batched by length (less padding); the model's train/eval mode is restored.
    """
    import torch

    pairs = _check_examples(examples)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{caller}(batch_size={batch_size!r}) must be a positive int")
    pad_id = _pad_id(tokenizer)
    rendered = [render_example(tokenizer, p, r, max_seq_len) for p, r in pairs]
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i][0]))
    sums, counts = [0.0] * len(rendered), [0] * len(rendered)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                input_ids, attention_mask, labels = _collate([rendered[i] for i in rows], pad_id)
                row_sums, row_counts = _answer_loss_sum(model, input_ids, attention_mask, labels, per_row=True)
                for i, total, n in zip(rows, row_sums.tolist(), row_counts.tolist()):
                    sums[i], counts[i] = total, n
    finally:
        model.train(was_training)
    return sums, counts


def _answer_loss_sum(model, input_ids, attention_mask, labels, per_row: bool = False):
    """``(sum of answer-token cross-entropies, number of answer tokens)`` for one batch.

    Position ``t`` predicts token ``t + 1``. Cost: the LM head turns each kept
    position into a vocabulary-sized row (49k floats for SmolLM2) — for a small model
    that is a large share of the forward pass and of the activation memory — so we
    only ask for the logits from the first position whose prediction is scored
    (``logits_to_keep``), skipping the template and prompt that every row starts with.
    """
    import torch.nn.functional as F

    scored = labels[:, 1:] != IGNORE_INDEX
    width = input_ids.shape[1]
    first = int(scored.any(dim=0).nonzero()[0])  # first scored prediction position
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=width - first
    ).logits  # (batch, width - first, vocab): positions first .. width-1
    targets = labels[:, first + 1 :]
    if per_row:  # (per-row sums, per-row counts)
        per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX,
                                    reduction="none")
        return per_token.sum(dim=1), scored.sum(dim=1)
    loss_sum = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, int(scored.sum())


def _collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad one batch to its own longest example (dynamic padding).

    Right padding keeps each row's positions 0..len-1 as at inference without
    position-id bookkeeping; the attention mask hides the pads from real tokens and
    the labels ignore them.
    """
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask, labels


def _end_of_turn_id(tokenizer) -> int:
    """The token the chat template closes an assistant turn with.

    Found by rendering a turn around a marker and taking the first token after it
    if that is a special token (SmolLM2: ``<|im_end|>``); otherwise the eos token.
    """
    marker = "\x00edgetune-marker\x00"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        tail = text.split(marker, 1)[1]
        first = tokenizer.encode(tail, add_special_tokens=False)[:1]
        if first and first[0] in tokenizer.all_special_ids:
            return first[0]
    except (IndexError, ValueError):
        pass
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer's chat template has no end-of-turn token and the tokenizer no eos token")
    return tokenizer.eos_token_id


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return pad


def _check_examples(examples) -> list[tuple[str, str]]:
    if isinstance(examples, str | bytes):
        raise ValueError("examples must be a sequence of (prompt, response) pairs, not one string")
    pairs = list(examples)
    if not pairs:
        raise ValueError("examples is empty: training and evaluation need at least one (prompt, response) pair")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise ValueError(f"examples[{i}]={pair!r:.80} must be a (prompt, response) pair of strings")
    return [(p, r) for p, r in pairs]


def _positive_int(name: str, value, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TrainConfig.{name}={value!r} must be an int >= 1; {fix}")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
