"""Tokenizing without writing to the tokenizer: the same ids as transformers' truncation, and no race.

The race test runs the stream's embedding and the trainer's encodes on two threads over
one shared tokenizer. Before ``models/tokens.py`` every embedding call switched the
tokenizer's truncation on and every training encode switched it off, so a call on one
thread ran under the other thread's setting: in two runs of this test on the old code, 20 and
14 of the 300 embedding calls came back untruncated and 91 and 101 training encodes differed
from the same encode run alone.
"""

from __future__ import annotations

import copy
import threading

import pytest
from transformers import AutoTokenizer

from models.embed import EmbedConfig, LastTokenEmbedder, minilm_dir
from models.lm import tiny_llama
from models.tokens import detach_state, encode_truncated
from models.train import render_example

TEXTS = ["hi", "one two three", "word " * 40, "naïve café " * 30 + "end", "x" * 300, "🙂 " * 25]


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=0, hidden=8, layers=1)


def _minilm_tokenizer():
    return detach_state(AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("which", ["smollm2", "minilm"])  # no special tokens; [CLS] ... [SEP]
def test_ids_are_those_of_transformers_truncation(tiny, which, side):
    tokenizer = copy.deepcopy(tiny[1]) if which == "smollm2" else _minilm_tokenizer()
    tokenizer.truncation_side = side
    reference = copy.deepcopy(tokenizer)  # the call below sets truncation on it, so keep it apart
    for max_tokens in (3, 8, 16, 512):
        expected = reference(TEXTS, truncation=True, max_length=max_tokens)["input_ids"]
        assert encode_truncated(tokenizer, TEXTS, max_tokens) == expected, (which, side, max_tokens)
    assert tokenizer.backend_tokenizer.truncation is None


def test_too_small_a_budget_for_the_special_tokens_is_refused():
    with pytest.raises(ValueError, match="max_tokens=2 leaves no room"):
        encode_truncated(_minilm_tokenizer(), ["a long enough text"], 2)


def test_loaded_tokenizers_carry_no_truncation_or_padding_state():
    tokenizer = _minilm_tokenizer()
    tokenizer.backend_tokenizer.enable_truncation(7)
    tokenizer.backend_tokenizer.enable_padding(length=9)
    detach_state(tokenizer)
    assert tokenizer.backend_tokenizer.truncation is None and tokenizer.backend_tokenizer.padding is None


def race(embed_tokenizer, train_tokenizer, model, rounds: int = 300) -> dict[str, list]:
    """Embed on one thread while rendering training examples on another; every mismatch found."""
    embedder = LastTokenEmbedder(model, embed_tokenizer, EmbedConfig(max_tokens=16, batch_size=8))
    texts = [f"word{i} " * (40 + i) for i in range(8)]
    pairs = [(f"question {i} " * 10, f"answer {i} " * 30) for i in range(4)]
    # What each call gives alone (computed on a private copy, before the threads start).
    alone = copy.deepcopy(train_tokenizer)
    expected_counts = [min(len(row), 16) for row in alone(texts)["input_ids"]]
    expected_ids = [render_example(alone, p, r, 256)[0] for p, r in pairs]
    found: dict[str, list] = {"embed": [], "train": [], "errors": []}
    done = threading.Event()

    def embedding() -> None:
        try:
            for _ in range(rounds):
                counts = embedder.embed(texts).n_tokens
                if counts != expected_counts:
                    found["embed"].append(counts)
        except Exception as exc:  # "Already borrowed" in some tokenizers versions
            found["errors"].append(repr(exc))
        finally:
            done.set()

    def training() -> None:
        try:
            while not done.is_set():
                for (prompt, response), ids in zip(pairs, expected_ids):
                    got = render_example(train_tokenizer, prompt, response, 256)[0]
                    if got != ids:
                        found["train"].append(len(got))
        except Exception as exc:
            found["errors"].append(repr(exc))

    threads = [threading.Thread(target=embedding), threading.Thread(target=training)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return found


def test_embedding_and_training_encodes_on_two_threads_over_one_tokenizer_all_have_the_right_length(tiny):
    model, tokenizer = tiny
    shared = copy.deepcopy(tokenizer)
    assert race(shared, shared, model) == {"embed": [], "train": [], "errors": []}
