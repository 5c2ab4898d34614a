"""Tokenizing without touching a tokenizer's mutable state.

A Hugging Face *fast* tokenizer keeps its truncation and padding settings on the
shared Rust object: ``tokenizer(texts, truncation=True, max_length=m)`` first calls
``enable_truncation(m)`` on it, and any call without truncation (``encode``,
``apply_chat_template``) calls ``no_truncation()`` before encoding. Two threads using
one tokenizer therefore race: one thread's encode can run under the other's setting
(texts come back untruncated, or cut to someone else's ``max_length``) or, in some
``tokenizers`` versions, fail with "Already borrowed".

Everything in ``models/`` encodes with truncation and padding off, the state a
tokenizer is left in by :func:`detach_state`, and truncates in Python here, so no
call ever writes to the shared object. ``encode_truncated`` gives exactly what
``tokenizer(texts, truncation=True, max_length=m)["input_ids"]`` gives.

>>> from models.lm import tiny_llama
>>> _, tokenizer = tiny_llama()
>>> ids = encode_truncated(tokenizer, ["hi", "one two three four five six"], max_tokens=4)
>>> [len(row) for row in ids]
[1, 4]
>>> tokenizer.backend_tokenizer.truncation is None  # nothing was set on the tokenizer
True
>>> ids == tokenizer(["hi", "one two three four five six"], truncation=True, max_length=4)["input_ids"]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["detach_state", "encode_truncated"]


def detach_state(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Switch a fast tokenizer's stored truncation and padding off, once, before it is shared.

    Some ``tokenizer.json`` files ship with truncation or padding enabled; transformers
    switches it off at the first call that asks for none, i.e. a write in the middle of
    the stream. Doing it at load time means later calls only ever read. Slow
    (pure Python) tokenizers keep no such state and are returned unchanged.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
    return tokenizer


def encode_truncated(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids per text with the tokenizer's special tokens, at most ``max_tokens`` each.

    Same result as ``tokenizer(texts, truncation=True, max_length=max_tokens)``: the
    text's tokens are cut on ``tokenizer.truncation_side`` so that the text plus its
    special tokens fit, and the special tokens are kept. Unlike that call it never
    changes the tokenizer, so threads may share one tokenizer.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"encode_truncated(max_tokens={max_tokens!r}) must be a positive int")
    texts = list(texts)
    if not texts:
        return []
    # verbose=False: the "longer than model_max_length" warning is about the untruncated ids we cut below.
    full = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    long = [i for i, row in enumerate(full) if len(row) > max_tokens]
    if not long:
        return [list(row) for row in full]
    content = tokenizer([texts[i] for i in long], add_special_tokens=False, verbose=False)["input_ids"]
    out = [list(row) for row in full]
    for i, text_ids in zip(long, content):
        out[i] = _cut(full[i], text_ids, max_tokens, tokenizer.truncation_side)
    return out


def _cut(full: list[int], text_ids: list[int], max_tokens: int, side: str) -> list[int]:
    """``full`` (special tokens around ``text_ids``) with the text cut to fit ``max_tokens``.

    >>> _cut([101, 7, 8, 9, 102], [7, 8, 9], 4, "right")
    [101, 7, 8, 102]
    >>> _cut([101, 7, 8, 9, 102], [7, 8, 9], 4, "left")
    [101, 8, 9, 102]
    """
    n_special = len(full) - len(text_ids)
    room = max_tokens - n_special
    if room < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for text next to {n_special} special tokens; raise it")
    for start in range(n_special + 1):  # where the text sits between the special tokens
        if full[start : start + len(text_ids)] == text_ids:
            kept = text_ids[:room] if side == "right" else text_ids[len(text_ids) - room :]
            return full[:start] + kept + full[start + len(text_ids) :]
    raise ValueError(
        "the tokenizer's special tokens are not a prefix and suffix around the text's tokens; "
        "encode_truncated cannot cut this tokenizer's output"
    )
