"""LoRA training on the tiny random Llama (SmolLM2's tokenizer and chat template)."""

from __future__ import annotations

import pytest
import torch

from models.generate import GenerateConfig, generate, render_prompt_ids
from models.lm import tiny_llama, weights_digest
from models.train import IGNORE_INDEX, TrainConfig, example_losses, mean_loss, render_example, train_lora

PAIRS = [
    ("What is the capital of France?", "Paris is the capital."),
    ("Name a color.", "Blue, like the sky."),
    ("Say hi", "Hello there, friend!"),
    ("2+2?", "Four."),
]


@pytest.fixture
def tiny():
    """A fresh random model each time (peft wraps models in place)."""
    return tiny_llama(seed=0)


def _inference_prompt_ids(tokenizer, prompt):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("rank", 0, "TrainConfig.rank=0 must be an int >= 1"),
        ("rank", 2.5, "TrainConfig.rank=2.5"),
        ("alpha", 0, "TrainConfig.alpha=0 must be > 0"),
        ("dropout", 1.0, "TrainConfig.dropout=1.0 must be in [0, 1)"),
        ("target_modules", "q_proj", "use ('q_proj',)"),
        ("target_modules", (), "must name at least one module"),
        ("lr", float("nan"), "TrainConfig.lr=nan"),
        ("epochs", 0, "TrainConfig.epochs=0"),
        ("max_steps", 0, "TrainConfig.max_steps=0"),
        ("batch_size", True, "TrainConfig.batch_size=True"),
        ("max_seq_len", 16, "TrainConfig.max_seq_len=16 must be an int >= 48"),
        ("seed", -1, "TrainConfig.seed=-1"),
        ("weight_decay", -0.1, "TrainConfig.weight_decay=-0.1"),
        ("max_grad_norm", 0, "TrainConfig.max_grad_norm=0"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(field, value, fragment):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{field: value})
    assert fragment in str(err.value)


def test_config_to_dict_is_json_ready():
    config = TrainConfig(target_modules=["q_proj", "v_proj"])
    assert config.target_modules == ("q_proj", "v_proj")
    assert config.to_dict()["target_modules"] == ["q_proj", "v_proj"]


# --- rendering ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("What is the capital of France?", "Paris."),
        ("Ünïcode — and emoji 🙂?", "Oui 🙂"),
        ("multi\nline\n\nprompt", "  leading spaces and\ttabs"),
        ("", ""),
    ],
)
def test_render_prefix_is_the_inference_prompt_and_only_the_answer_is_labelled(tiny, prompt, response):
    _, tokenizer = tiny
    ids, labels = render_example(tokenizer, prompt, response, max_seq_len=256)
    prefix = _inference_prompt_ids(tokenizer, prompt)
    assert ids[: len(prefix)] == prefix
    assert ids[: len(prefix)] == render_prompt_ids(tokenizer, prompt, 512)  # what generate() feeds the model
    assert labels[: len(prefix)] == [IGNORE_INDEX] * len(prefix)
    answer = tokenizer.encode(response, add_special_tokens=False)
    # the answer, then SmolLM2's end of turn <|im_end|>, which is also the eos generation stops on
    assert labels[len(prefix) :] == ids[len(prefix) :] == answer + [tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "<|im_end|>"


def test_render_cuts_a_long_answer_and_keeps_the_prefix_whole(tiny):
    _, tokenizer = tiny
    prompt = "Tell me a long story."
    ids, labels = render_example(tokenizer, prompt, "once upon a time " * 100, max_seq_len=64)
    prefix = _inference_prompt_ids(tokenizer, prompt)
    assert len(ids) == len(labels) == 64
    assert ids[: len(prefix)] == prefix
    assert ids[-1] != tokenizer.eos_token_id  # a cut answer does not teach stopping mid-sentence
    assert all(label != IGNORE_INDEX for label in labels[len(prefix) :])


def test_render_cuts_a_long_prompt_as_inference_does_leaving_room_for_the_answer(tiny):
    _, tokenizer = tiny
    prompt, response = "please read this " * 200, "Done reading, here is the short summary you asked for."
    max_seq_len = 96
    ids, labels = render_example(tokenizer, prompt, response, max_seq_len)
    answer = tokenizer.encode(response, add_special_tokens=False)
    n_prefix = labels.count(IGNORE_INDEX)
    reserve = min(len(answer) + 1, max_seq_len // 4)  # the answer is short: all of it fits
    assert len(ids) <= max_seq_len
    # the prefix is exactly what generation renders for the same prompt under the same budget
    assert ids[:n_prefix] == render_prompt_ids(tokenizer, prompt, max_seq_len - reserve)
    assert tokenizer.decode(ids[:n_prefix]).endswith("<|im_start|>assistant\n")
    assert ids[n_prefix:] == answer + [tokenizer.eos_token_id]


# --- loss ---------------------------------------------------------------------------


def test_mean_loss_equals_transformers_loss_for_one_example(tiny):
    model, tokenizer = tiny
    ids, labels = render_example(tokenizer, *PAIRS[0], max_seq_len=256)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    assert mean_loss(model, tokenizer, PAIRS[:1], max_seq_len=256) == pytest.approx(expected, rel=1e-5)


def test_mean_loss_is_token_weighted_so_batch_size_does_not_matter(tiny):
    model, tokenizer = tiny
    one = mean_loss(model, tokenizer, PAIRS, max_seq_len=256, batch_size=1)
    three = mean_loss(model, tokenizer, PAIRS, max_seq_len=256, batch_size=3)
    assert one == pytest.approx(three, rel=1e-5)


def test_example_losses_are_per_example_in_order_and_agree_with_transformers(tiny):
    model, tokenizer = tiny
    losses = example_losses(model, tokenizer, PAIRS, max_seq_len=256, batch_size=2)
    assert len(losses) == len(PAIRS)
    for (prompt, response), loss in zip(PAIRS, losses):
        ids, labels = render_example(tokenizer, prompt, response, max_seq_len=256)
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        assert loss == pytest.approx(expected, rel=1e-4)
    assert example_losses(model, tokenizer, PAIRS[::-1], max_seq_len=256, batch_size=3) == pytest.approx(losses[::-1], rel=1e-4)


@pytest.mark.parametrize("examples", [[], "not pairs", [("only a prompt",)]])
def test_empty_or_malformed_examples_raise(tiny, examples):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="examples"):
        train_lora(model, tokenizer, examples, TrainConfig(max_steps=1))
    with pytest.raises(ValueError, match="examples"):
        mean_loss(model, tokenizer, examples, max_seq_len=256)


# --- training -----------------------------------------------------------------------

# High lr: the tiny model's tied 64-wide random embeddings leave little room to move
# the loss (near-uniform logits, ln 49152 ≈ 10.8), so a default lr shows nothing in 20 steps.
FAST = TrainConfig(lr=3e-2, max_steps=20, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def trained():
    """Train once, record everything the tests below check (unloading last)."""
    model, tokenizer = tiny_llama(seed=0)
    prompts = [p for p, _ in PAIRS]
    greedy = GenerateConfig(max_new_tokens=6)
    probe = torch.tensor([render_example(tokenizer, *PAIRS[0], max_seq_len=256)[0]])
    out = {
        "digest_before": weights_digest(model),
        "loss_before": mean_loss(model, tokenizer, PAIRS, max_seq_len=256),
        "generated_before": generate(model, tokenizer, prompts, greedy),
    }
    with torch.no_grad():
        out["logits_before"] = model(input_ids=probe).logits
    rng_before = torch.get_rng_state()
    peft_model, report = train_lora(model, tokenizer, PAIRS, FAST)
    out["rng_untouched"] = torch.equal(rng_before, torch.get_rng_state())
    out.update(report=report, training=peft_model.training)
    out["loss_after"] = mean_loss(peft_model, tokenizer, PAIRS, max_seq_len=256)
    out["generated_after"] = generate(peft_model, tokenizer, prompts, greedy)
    with torch.no_grad():
        out["logits_after"] = peft_model(input_ids=probe).logits
    out["trainable"] = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    out["digest_after"] = weights_digest(peft_model.unload())
    return out


def test_training_lowers_the_loss_on_its_samples(trained):
    assert trained["loss_after"] < trained["loss_before"] - 0.2


def test_training_changes_logits_and_greedy_outputs(trained):
    assert (trained["logits_after"] - trained["logits_before"]).abs().max() > 1e-3
    assert trained["generated_after"] != trained["generated_before"]


def test_base_weights_are_unchanged(trained):
    assert trained["digest_after"] == trained["digest_before"]


def test_report_accounts_for_every_step(trained):
    report = trained["report"]
    assert report.steps == len(report.step_seconds) == 20
    assert report.samples == 20 * len(PAIRS)  # batch 4 = all four pairs each step
    assert report.tokens > 0 and report.tokens_per_s > 0
    assert report.seconds >= sum(report.step_seconds)
    # LoRA B starts at zero, so the first batch (all four pairs) sees the base model
    assert report.loss_first == pytest.approx(trained["loss_before"], rel=1e-5)
    assert report.loss_last < report.loss_first


def test_training_leaves_eval_mode_and_the_callers_rng(trained):
    assert trained["training"] is False
    assert trained["rng_untouched"]
    # 2 layers × (q, k, v, o) × (A + B); q/o are 64×64, k/v 64×32 (2 kv heads of 16)
    assert trained["trainable"] == 2 * (2 * 8 * (64 + 64) + 2 * 8 * (64 + 32))


def test_same_seed_gives_identical_losses_and_another_seed_does_not():
    config = TrainConfig(lr=1e-2, max_steps=2, batch_size=2, seed=7)
    runs = []
    for seed in (7, 7, 8):
        model, tokenizer = tiny_llama(seed=0)
        _, report = train_lora(model, tokenizer, PAIRS, TrainConfig(**{**config.to_dict(), "seed": seed}))
        runs.append([report.loss_first, report.loss_last, report.mean_loss])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_continuing_from_a_saved_adapter_starts_where_it_left_off(tmp_path):
    config = TrainConfig(lr=3e-2, max_steps=6, batch_size=4, dropout=0.0)
    model, tokenizer = tiny_llama(seed=0)
    first, _ = train_lora(model, tokenizer, PAIRS, config)
    first.save_pretrained(str(tmp_path / "adapter"))
    loss_after_first = mean_loss(first, tokenizer, PAIRS, max_seq_len=256)

    model, tokenizer = tiny_llama(seed=0)
    base_loss = mean_loss(model, tokenizer, PAIRS, max_seq_len=256)
    second, report = train_lora(
        model, tokenizer, PAIRS, TrainConfig(**{**config.to_dict(), "max_steps": 2}), init_adapter=tmp_path / "adapter"
    )
    # no dropout and one batch of all pairs: the first loss is the saved adapter's loss
    assert report.loss_first == pytest.approx(loss_after_first, rel=1e-5)
    assert report.loss_first < base_loss
    assert mean_loss(second, tokenizer, PAIRS, max_seq_len=256) < loss_after_first


def test_continuing_requires_a_matching_rank(tmp_path):
    model, tokenizer = tiny_llama(seed=0)
    first, _ = train_lora(model, tokenizer, PAIRS[:1], TrainConfig(max_steps=1, rank=4))
    first.save_pretrained(str(tmp_path / "adapter"))
    model, tokenizer = tiny_llama(seed=0)
    with pytest.raises(ValueError, match="rank=4.*rank=8"):
        train_lora(model, tokenizer, PAIRS, TrainConfig(max_steps=1), init_adapter=tmp_path / "adapter")


def test_a_model_that_already_carries_an_adapter_is_refused(tiny):
    model, tokenizer = tiny
    peft_model, _ = train_lora(model, tokenizer, PAIRS[:1], TrainConfig(max_steps=1))
    for wrapped in (peft_model, model):  # peft wrapped `model` in place
        with pytest.raises(ValueError, match="unload"):
            train_lora(wrapped, tokenizer, PAIRS, TrainConfig(max_steps=1))


def test_a_failed_run_gives_the_base_model_back(tiny, monkeypatch):
    import models.train

    model, tokenizer = tiny
    digest = weights_digest(model)

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(models.train, "_answer_loss_sum", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_lora(model, tokenizer, PAIRS, TrainConfig(max_steps=1))
    assert not hasattr(model, "peft_config")
    assert weights_digest(model) == digest
