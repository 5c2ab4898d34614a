"""Answering users with their own adapters: one base model, several peft named adapters.

:class:`AdapterPool` keeps up to ``max_resident`` users' adapters loaded on one base
model (``PeftModel.load_adapter(..., adapter_name=...)``) and evicts the least
recently used one past that. Each request asks the :class:`~models.adapters.AdapterStore`
for the user's ``latest`` (one small file read), so a promotion or a rollback takes
effect at the user's next request, with no restart and no watcher thread: a version
that is no longer anyone's latest is simply not asked for again and ages out of the
LRU.

Every adapter is checked before it is used, as ``models.adapters.load_adapter`` does:
the files first (``verify_adapter_files``: safetensors only, digests as the manifest
recorded them), then that it really changes the logits. A refused version raises
(``AdapterIntegrityError``); it is never replaced silently by an older one.

Generation goes through ``models.generate.generate`` (the chat template and decoding of
``edgetune generate``); streaming passes a streamer to it. The pool is not thread-safe:
the server calls it from its one generation thread only.

>>> import tempfile
>>> from models.adapters import AdapterStore
>>> from models.generate import GenerateConfig
>>> from models.lm import tiny_llama
>>> model, tokenizer = tiny_llama(seed=0)
>>> pool = AdapterPool(model, tokenizer, AdapterStore(Path(tempfile.mkdtemp())), max_resident=2)
>>> answer = pool.answer("ann", "Hi", GenerateConfig(max_new_tokens=3))
>>> answer.version is None, isinstance(answer.text, str)  # no adapter yet: the base model answers
(True, True)
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from models.adapters import AdapterNotAppliedError, AdapterStore, load_adapter, verify_adapter_files
from models.generate import GenerateConfig, generate, render_prompt_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LATEST", "AdapterPool", "Answer", "TokenCallback"]

log = logging.getLogger(__name__)

LATEST = object()
"""``AdapterPool.answer(version=LATEST)``: whatever the store says is the user's latest."""

TokenCallback = Callable[[str], None]
"""Receives each piece of decoded text as generation produces it."""


@dataclass(frozen=True)
class Answer:
    """What one request got: the text, the adapter version that answered (None: the base
    model), how many new tokens, and the seconds spent switching adapters (0 when resident)."""

    text: str
    version: int | None
    n_tokens: int
    n_prompt_tokens: int
    switch_seconds: float
    loaded: bool  # the adapter was loaded for this request (not resident before)


class AdapterPool:
    """The base ``model`` with users' adapters from ``store``, at most ``max_resident`` loaded."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, store: AdapterStore,
                 max_resident: int = 4):
        if isinstance(max_resident, bool) or not isinstance(max_resident, int) or max_resident < 1:
            raise ValueError(f"AdapterPool(max_resident={max_resident!r}) must be an int >= 1 (serve.max_resident)")
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.max_resident = max_resident
        self._peft: Any = None  # the PeftModel once the first adapter is loaded
        self._resident: OrderedDict[tuple[str, int], str] = OrderedDict()  # (user, version) -> adapter name, LRU first
        self._names = 0

    def resident(self) -> list[tuple[str, int]]:
        """``(user, version)`` of the loaded adapters, least recently used first."""
        return list(self._resident)

    def latest(self, user: str) -> int | None:
        """The version that answers ``user`` now (the store's ``latest``; None: the base model)."""
        return self.store.latest(user)

    def answer(self, user: str, prompt: str, config: GenerateConfig, on_text: TokenCallback | None = None,
               version: int | None | object = LATEST) -> Answer:
        """Answer ``prompt`` with ``user``'s latest adapter (or ``version``: None for the base model);
        ``on_text`` receives the text as it is decoded."""
        version = self.latest(user) if version is LATEST else version
        start = time.perf_counter()
        loaded = version is not None and (user, version) not in self._resident
        with self._using(user, version) as model:
            switch = time.perf_counter() - start
            streamer = _Streamer(self.tokenizer, on_text) if on_text is not None else None
            counter = _Counter()
            text = generate(model, self.tokenizer, [prompt], config, streamer=_Both(streamer, counter))[0]
        n_prompt = len(render_prompt_ids(self.tokenizer, prompt, config.max_prompt_tokens))
        return Answer(text, version, counter.n_tokens, n_prompt, switch, loaded)

    # --- internals -------------------------------------------------------------------

    @contextmanager
    def _using(self, user: str, version: int | None) -> Iterator[Any]:
        if version is None:
            if self._peft is None:
                yield self.model
            else:
                with self._peft.disable_adapter():  # LoRA layers bypassed: the plain base model
                    yield self._peft
            return
        name = self._resident.get((user, version))
        if name is None:
            name = self._load(user, version)
        self._resident.move_to_end((user, version))
        self._peft.set_adapter(name)
        yield self._peft

    def _load(self, user: str, version: int) -> str:
        path = self.store.path(user, version)
        if self._peft is None:
            # The first adapter wraps the base model in place (checked: files and logits).
            self._peft = load_adapter(self.model, path)
            name = "default"
        else:
            verify_adapter_files(path)  # safetensors only, weights as the manifest recorded them
            self._names += 1
            name = f"adapter{self._names}"
            self._peft.load_adapter(str(path), adapter_name=name)
            self._check_applied(name, path)
        self._resident[(user, version)] = name
        log.info("loaded adapter v%d of a user (%d resident)", version, len(self._resident))
        while len(self._resident) > self.max_resident:
            (_, _), old = self._resident.popitem(last=False)
            self._peft.delete_adapter(old)  # never the one just loaded: it is the most recent
        return name

    def _check_applied(self, name: str, path: Path, min_logit_change: float = 1e-6) -> None:
        """As ``load_adapter`` checks the first adapter: a named one must move the logits too."""
        import torch

        self._peft.set_adapter(name)
        vocab = self._peft.get_input_embeddings().num_embeddings
        probe = (torch.arange(1, 17) * 7919 % vocab).unsqueeze(0)
        with torch.inference_mode():
            with_adapter = self._peft(input_ids=probe).logits
            with self._peft.disable_adapter():
                without = self._peft(input_ids=probe).logits
        change = (with_adapter - without).abs().max().item()
        if not change > min_logit_change:
            self._peft.delete_adapter(name)
            raise AdapterNotAppliedError(f"adapter {str(path)!r} changes the logits by at most {change:.3g}: it is "
                                         "not applied (trained for another base model, or untrained)")


class _Streamer:
    """Decoded text pieces to a callback, the prompt skipped (``transformers.TextStreamer`` semantics)."""

    def __init__(self, tokenizer: Any, on_text: TokenCallback):
        from transformers import TextStreamer

        class _Forward(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    on_text(text)

        self._inner = _Forward(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def put(self, value: Any) -> None:
        self._inner.put(value)

    def end(self) -> None:
        self._inner.end()


class _Counter:
    """Counts the new tokens (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.n_tokens = 0
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.n_tokens += int(value.numel())

    def end(self) -> None:
        pass


class _Both:
    def __init__(self, *streamers: Any):
        self._streamers = [s for s in streamers if s is not None]

    def put(self, value: Any) -> None:
        for s in self._streamers:
            s.put(value)

    def end(self) -> None:
        for s in self._streamers:
            s.end()
