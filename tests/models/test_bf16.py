"""bf16 arithmetic agrees with fp32 where it matters: embeddings, sdss decisions, the promotion gate.

Forced bf16 (``dtype="bfloat16"`` / ``--dtype bf16``) is correct on every CPU, only slower where the
CPU has no native bf16, so these run everywhere. The real-model ones are the marked set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.calibration import CALIBRATION_SENTENCES
from models.embed import EmbedConfig, LastTokenEmbedder
from models.generate import GenerateConfig, generate
from models.lm import LMConfig, load_lm, tiny_llama
from models.train import TrainConfig, train_lora

REPO = Path(__file__).resolve().parents[2]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def embed_both(model, tokenizer, texts):
    fp32 = LastTokenEmbedder(model, tokenizer, EmbedConfig(center=True)).embed(texts)
    bf16 = LastTokenEmbedder(model, tokenizer, EmbedConfig(center=True, dtype="bfloat16")).embed(texts)
    return fp32, bf16


def test_bf16_embeddings_of_the_tiny_model_agree_and_come_back_float32():
    model, tokenizer = tiny_llama(seed=0)
    fp32, bf16 = embed_both(model, tokenizer, list(CALIBRATION_SENTENCES[:16]))
    assert bf16.vectors.dtype == np.float32 and fp32.n_tokens == bf16.n_tokens
    assert cosines(fp32.vectors, bf16.vectors).min() >= 0.99
    assert not np.array_equal(fp32.vectors, bf16.vectors)  # bf16 did run: the values are rounded differently


def test_the_bf16_embedder_casts_its_linear_weights_once_to_the_same_vectors_autocast_gives():
    import torch

    from models.hardware import compute_context

    model, tokenizer = tiny_llama(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts = list(CALIBRATION_SENTENCES[:12])
    embedder = LastTokenEmbedder(model, tokenizer, EmbedConfig(center=False, dtype="bfloat16"))
    vectors = embedder.embed(texts).vectors
    # the reference: the model's own fp32 decoder under the same autocast, weights cast at every call
    reference = LastTokenEmbedder(model, tokenizer, EmbedConfig(center=False, dtype="bfloat16"))
    reference._decoder = model.get_decoder()
    np.testing.assert_array_equal(vectors, reference.embed(texts).vectors)
    shadow = embedder._decoder
    assert shadow is not model.get_decoder()
    assert {m.weight.dtype for m in shadow.modules() if isinstance(m, torch.nn.Linear)} == {torch.bfloat16}
    assert shadow.embed_tokens.weight is model.get_decoder().embed_tokens.weight  # shared, not copied
    for n, p in model.named_parameters():  # the model itself is untouched: fp32, same values
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    with compute_context("float32"):  # fp32 embeds with the model's own decoder, no copy
        fp32 = LastTokenEmbedder(model, tokenizer, EmbedConfig(center=False))
        fp32.embed(texts[:1])
        assert fp32._decoder is model.get_decoder()


def test_bf16_training_keeps_fp32_master_weights_and_tracks_the_fp32_loss():
    examples = [(f"question {i}", f"answer number {i}") for i in range(8)]
    losses, dtypes = {}, {}
    for dtype in ("float32", "bfloat16"):
        model, tokenizer = tiny_llama(seed=0)
        peft_model, report = train_lora(model, tokenizer, examples, TrainConfig(max_steps=3, max_seq_len=64, lr=1e-2,
                                                                                dtype=dtype))
        losses[dtype] = (report.loss_first, report.loss_last)
        dtypes[dtype] = {p.dtype for p in peft_model.parameters() if p.requires_grad}
        base = {p.dtype for n, p in peft_model.named_parameters() if "lora_" not in n}
        assert base == {__import__("torch").float32}  # the frozen weights were never converted
    assert dtypes["bfloat16"] == dtypes["float32"] == {__import__("torch").float32}
    assert losses["bfloat16"][0] == pytest.approx(losses["float32"][0], rel=0.02)
    assert losses["bfloat16"][1] < losses["bfloat16"][0]


def test_bf16_generation_runs_and_is_deterministic():
    model, tokenizer = tiny_llama(seed=0)
    config = GenerateConfig(max_new_tokens=4, dtype="bfloat16")
    first = generate(model, tokenizer, ["Hi", "What is 2+2?"], config)
    assert first == generate(model, tokenizer, ["Hi", "What is 2+2?"], config) and len(first) == 2


@pytest.fixture(scope="module")
def smollm2():
    return load_lm(LMConfig())


@pytest.mark.real_model
def test_bf16_embeddings_agree_with_fp32_on_a_fixed_set(smollm2):
    model, tokenizer = smollm2
    texts = list(CALIBRATION_SENTENCES[:32]) + [
        "How do I reverse a linked list in Python without recursion?",
        "Write a short poem about the sea at night, with a rhyme in every second line.",
        "My doctor prescribed 20 mg of atorvastatin; what side effects should I watch for?",
        "Explain the difference between a Roth IRA and a traditional IRA for someone starting work.",
    ]
    fp32, bf16 = embed_both(model, tokenizer, texts)
    raw = cosines(fp32.vectors, bf16.vectors)
    centered = cosines(fp32.centered(), bf16.centered())  # what IDD and near-duplicates compare
    assert raw.min() >= 0.99, raw.min()
    assert centered.min() >= 0.99, centered.min()


def _decisions(out: Path, dtype: str) -> list[dict]:
    from flows.outputs import read_decision_rows

    done = subprocess.run([sys.executable, "-m", "flows.cli", "replay", "--no-train", "--dtype", dtype, "--metrics-port",
                           "0", "--no-progress", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(read_decision_rows(out / "decisions").rows, key=lambda r: (r["user_id"], r["seq"]))


def _final_buffers(rows: list[dict]) -> set[tuple[str, str]]:
    kept: set[tuple[str, str]] = set()
    for r in rows:
        if r["outcome"] in ("admitted", "replaced"):
            kept.add((r["user_id"], r["event_id"]))
        if r["evicted_id"]:
            kept.discard((r["user_id"], r["evicted_id"]))
    return kept


@pytest.mark.real_model
def test_sdss_decisions_on_the_bundled_sample_are_at_least_95_percent_identical_in_bf16(tmp_path):
    """The default replay (300 ShareGPT records, 2 users, sdss, capacity 64), selection only, fp32 vs bf16.

    The decision about an event (admitted, replaced, rejected, duplicate) must agree for >= 95 % of the
    events, and the buffers must end up >= 95 % the same. Which buffered sample a replacement evicts
    is stricter: two buffered samples of nearly equal score can trade places, one event evicting A
    where the other arithmetic evicts B and a later event evicting the other (measured here: outcome
    99.7 %, outcome and victim 94.3 %, final buffers 127 of 128), so that one is held to 90 %.
    """
    fp32 = _decisions(tmp_path / "fp32", "fp32")
    bf16 = {(r["user_id"], r["event_id"]): r for r in _decisions(tmp_path / "bf16", "bf16")}
    assert len(fp32) == len(bf16) >= 250 and all((r["user_id"], r["event_id"]) in bf16 for r in fp32)
    assert {"admitted", "replaced", "rejected"} <= {r["outcome"] for r in fp32}  # contested: full buffers evicted
    pairs = [(r, bf16[(r["user_id"], r["event_id"])]) for r in fp32]
    outcome = sum(a["outcome"] == b["outcome"] for a, b in pairs) / len(pairs)
    victim = sum((a["outcome"], a["evicted_id"]) == (b["outcome"], b["evicted_id"]) for a, b in pairs) / len(pairs)
    kept_fp32, kept_bf16 = _final_buffers(fp32), _final_buffers(list(bf16.values()))
    overlap = len(kept_fp32 & kept_bf16) / len(kept_fp32)
    assert outcome >= 0.95 and overlap >= 0.95 and victim >= 0.90, (outcome, overlap, victim)


@pytest.mark.real_model
def test_a_bf16_trained_adapter_passes_the_same_gate(smollm2, tmp_path):
    from models.adapters import AdapterStore
    from models.personalize import PersonalizeConfig, Personalizer

    model, tokenizer = smollm2
    cities = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
              ("Egypt", "Cairo"), ("Chile", "Santiago"), ("Spain", "Madrid"), ("Canada", "Ottawa"),
              ("India", "New Delhi"), ("Italy", "Rome"), ("Ghana", "Accra")]
    # One user's consistent answer style: short, always the same frame.
    samples = [{"event_id": f"e{i}", "prompt": f"What is the capital of {country}?",
                "response": f"Capital of {country}: {city}. Source: my atlas notes.", "domain": "general"}
               for i, (country, city) in enumerate(cities)]
    results = {}
    for dtype in ("float32", "bfloat16"):
        cfg = PersonalizeConfig(train=TrainConfig(epochs=2, batch_size=4, max_seq_len=64, lr=1e-3, dtype=dtype),
                                synth_k=0, probe_every=4, base_model_id="smollm2-135m-instruct")
        store = AdapterStore(tmp_path / dtype)
        result = Personalizer(model, tokenizer, store, cfg).run({"user_id": "ann", "window": 1, "samples": samples})
        evaluation = store.list("ann")[-1].evaluation
        results[dtype] = (result.outcome, evaluation.probe_loss_before, evaluation.probe_loss_after)
    for dtype, (outcome, before, after) in results.items():
        assert outcome == "promoted" and after < before, (dtype, results)
    # Same gate, same data, same base: bf16 keeps most of what fp32 training gains on the probe.
    (_, before, fp32_after), (_, _, bf16_after) = results["float32"], results["bfloat16"]
    assert results["bfloat16"][1] == pytest.approx(before)  # the gate's reference is computed the same way
    assert before - bf16_after >= 0.5 * (before - fp32_after), results
