"""Batched chat generation (tiny random Llama, a stub model for exact slicing) and
synthesis end to end on a stub; one check on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch

from models.generate import GenerateConfig, generate, render_prompt_ids
from models.lm import tiny_llama
from models.synth import SynthResult, synth_gen_config, synthesize
from operators.synthesis import SynthFilter

PROMPTS = ["Hi", "What is the capital of France?", "Tell me a long story about a dragon who learned to fly."]


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=0)


class EchoModel:
    """Stands in for a causal LM: appends fixed ``tail`` ids to each row and records its inputs."""

    device = torch.device("cpu")

    def __init__(self, tail: list[int]):
        self.tail = tail
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
        tail = torch.tensor(self.tail).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, tail], dim=1)


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("max_new_tokens", 0, "GenerateConfig.max_new_tokens=0 must be a positive int"),
        ("batch_size", 0, "GenerateConfig.batch_size=0 must be a positive int"),
        ("max_prompt_tokens", True, "GenerateConfig.max_prompt_tokens=True"),
        ("seed", -1, "GenerateConfig.seed=-1 must be a non-negative int"),
        ("temperature", 0.0, "GenerateConfig.temperature=0.0 must be > 0"),
        ("top_p", 1.5, "GenerateConfig.top_p=1.5 must be in (0, 1]"),
        ("no_repeat_ngram_size", -1, "GenerateConfig.no_repeat_ngram_size=-1 must be an int >= 0"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(field, value, fragment):
    with pytest.raises(ValueError) as err:
        GenerateConfig(**{field: value})
    assert fragment in str(err.value)


def test_no_repeat_ngram_size_stops_greedy_loops(tiny):
    model, tokenizer = tiny
    prompt = render_prompt_ids(tokenizer, PROMPTS[1], 512)
    ids = torch.tensor([prompt])

    def answer(**knobs):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=30,
                             do_sample=False, pad_token_id=tokenizer.eos_token_id, **knobs)
        return out[0, len(prompt):].tolist()

    def bigrams(seq):
        return [tuple(seq[i : i + 2]) for i in range(len(seq) - 1)]

    plain = answer()
    assert len(set(bigrams(plain))) < len(bigrams(plain))  # the random model loops when greedy
    config = GenerateConfig(max_new_tokens=30, no_repeat_ngram_size=2)
    echo = EchoModel([5])
    generate(echo, tokenizer, [PROMPTS[1]], config)
    assert echo.calls[0]["no_repeat_ngram_size"] == 2
    free = prompt + answer(no_repeat_ngram_size=2)
    seen = bigrams(free)
    new = range(len(prompt) - 1, len(seen))  # bigrams that end in a generated token
    assert len(new) == 30 and all(seen[i] not in seen[:i] for i in new)  # none repeats an earlier one
    text = generate(model, tokenizer, [PROMPTS[1]], config)[0]
    assert text == tokenizer.decode(free[len(prompt):], skip_special_tokens=True).strip()


def test_a_bare_string_is_refused_not_split_into_characters(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="sequence of strings"):
        generate(model, tokenizer, "Hi", GenerateConfig())


# --- sampling and greedy --------------------------------------------------------------


def test_same_seed_same_text_other_seed_other_text(tiny):
    model, tokenizer = tiny
    config = GenerateConfig(max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, seed=3)
    first = generate(model, tokenizer, PROMPTS, config)
    assert generate(model, tokenizer, PROMPTS, config) == first
    other = generate(model, tokenizer, PROMPTS, GenerateConfig(max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, seed=4))
    assert other != first  # a random model samples from ~49k nearly equal tokens


def test_seeding_leaves_the_callers_random_stream_alone(tiny):
    model, tokenizer = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, tokenizer, PROMPTS[:1], GenerateConfig(max_new_tokens=2, do_sample=True))
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def untied(tiny):
    """A random Llama with an untied output layer. The tied tiny model greedily repeats
    its last input token ("\n" after the chat template) whatever the context, which
    would make a batch-vs-alone comparison pass trivially."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = tiny
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def test_greedy_batch_equals_one_by_one(untied):
    # Prompts of 1, 7 and 12 words: in a batch of 3 the short ones are left-padded.
    # Padding must not leak into attention or positions, so every row matches its solo run.
    model, tokenizer = untied
    batched = generate(model, tokenizer, PROMPTS, GenerateConfig(max_new_tokens=12, batch_size=3))
    alone = [generate(model, tokenizer, [p], GenerateConfig(max_new_tokens=12, batch_size=1))[0] for p in PROMPTS]
    assert batched == alone
    assert len(set(batched)) > 1  # not trivially equal (e.g. all empty)


# --- what goes in and what comes out ---------------------------------------------------


def test_rows_are_left_padded_with_a_matching_mask(tiny):
    _, tokenizer = tiny
    model = EchoModel(tail=[tokenizer.eos_token_id])
    generate(model, tokenizer, PROMPTS[:2], GenerateConfig(batch_size=2))
    (call,) = model.calls
    ids, mask = call["input_ids"], call["attention_mask"]
    short, long_ = (render_prompt_ids(tokenizer, p, 512) for p in PROMPTS[:2])
    pad = len(long_) - len(short)
    assert pad > 0
    assert ids[0, :pad].tolist() == [tokenizer.pad_token_id] * pad and ids[0, pad:].tolist() == short
    assert ids[1].tolist() == long_
    assert mask[0].tolist() == [0] * pad + [1] * len(short) and mask[1].tolist() == [1] * len(long_)
    assert call["do_sample"] is False and "temperature" not in call  # greedy passes no sampling knobs


def test_only_the_new_text_comes_back_without_special_tokens(tiny):
    _, tokenizer = tiny
    answer = tokenizer.encode(" Paris, of course. ", add_special_tokens=False)
    model = EchoModel(tail=answer + [tokenizer.eos_token_id, tokenizer.pad_token_id])
    out = generate(model, tokenizer, PROMPTS, GenerateConfig(batch_size=2))
    assert out == ["Paris, of course."] * 3  # no prompt, no <|im_end|>, trimmed
    assert len(model.calls) == 2  # 3 prompts in batches of 2


def test_prompt_is_the_chat_template_with_generation_prompt(tiny):
    _, tokenizer = tiny
    ids = render_prompt_ids(tokenizer, "Hi", 512)
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert ids == list(expected)


def test_a_long_prompt_is_cut_in_the_middle_keeping_template_head_and_tail(tiny):
    _, tokenizer = tiny
    prompt = "START " + "filler " * 600 + "END?"
    ids = render_prompt_ids(tokenizer, prompt, 80)
    text = tokenizer.decode(ids)
    assert len(ids) <= 80
    assert "START" in text and "END?" in text and "…" in text
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_a_budget_below_the_template_is_a_config_error(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match="raise max_prompt_tokens"):
        render_prompt_ids(tokenizer, "word " * 100, 10)


# --- synthesis: one generation, parsed and filtered ---------------------------------------


def test_synthesize_parses_filters_and_caps_at_k(tiny):
    _, tokenizer = tiny
    text = (
        "Q: How long should I poach an egg?\nA: About four minutes.\n"   # F vs source 0.615: kept
        "Q: How do I boil an egg?\nA: In water.\n"                       # F = 1.0: near_copy
        "Q: Is a boiled egg healthy?\nA: Yes, it is rich in protein.\n"  # F = 0.364: kept, but beyond k=1
        "Q: What is the capital of France?\nA: Paris.\n"                 # F = 0: off_topic
    )
    model = EchoModel(tail=tokenizer.encode(text, add_special_tokens=False))
    result = synthesize(model, tokenizer, "How do I boil an egg?", "Boil it for 8 minutes.", k=1,
                        gen_config=synth_gen_config(1), filt=SynthFilter(low=0.2, high=0.8, dedup=0.8))
    assert isinstance(result, SynthResult)
    assert result.pairs == [("How long should I poach an egg?", "About four minutes.")]
    assert result.dropped == {"near_copy": 1, "off_topic": 1, "surplus": 1}
    assert result.raw_text == text.strip() and result.seconds > 0
    (call,) = model.calls
    assert call["do_sample"] is True and call["max_new_tokens"] == synth_gen_config(1).max_new_tokens
    assert "How do I boil an egg?" in tokenizer.decode(call["input_ids"][0])


# --- the real model ----------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_answers_a_simple_prompt():
    from models.lm import LMConfig, load_lm

    model, tokenizer = load_lm(LMConfig())
    (answer,) = generate(model, tokenizer, ["What is the capital of France?"], GenerateConfig(max_new_tokens=12))
    assert answer.strip()
    assert "<|im_end|>" not in answer and "assistant" not in answer[:10]
