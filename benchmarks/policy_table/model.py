"""The model side of a cell: the LM, synthetic pairs from it, and LoRA training in resumable pieces."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.files import atomic_write

from .plan import TableConfig

log = logging.getLogger("policy_table")


@dataclass
class LM:
    model: Any
    tokenizer: Any
    load_seconds: float


def load_model(name: str) -> LM:
    from models.lm import LMConfig, load_lm

    t0 = time.perf_counter()
    model, tokenizer = load_lm(LMConfig(model=name))
    return LM(model, tokenizer, time.perf_counter() - t0)


def synthesize_pairs(lm: LM, samples: list[dict], k: int, seed: int, cfg: TableConfig, work: Path) -> tuple[list[tuple[str, str]], dict]:
    """k synthetic pairs per sample with the base model, ``models/synth.py``'s prompt, parser and
    filter, generated ``synth_batch_size`` prompts at a time (decoding is memory-bound, so a batch
    of 8 costs little more than one prompt). Progress is appended to ``work`` (JSONL, one line per
    batch) so an interrupted cell resumes its synthesis."""
    from models.synth import synth_gen_config, synthesize_many
    from operators.synthesis import SynthFilter

    done: dict[int, dict] = {}
    if work.is_file():
        for line in work.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                done[entry["batch"]] = entry
    filt = SynthFilter()  # the product's band (operators/config.py SynthConfig has the same defaults)
    size = cfg.synth_batch_size
    for b, start in enumerate(range(0, len(samples), size)):
        if b in done:
            continue
        batch = samples[start : start + size]
        gen = dataclasses.replace(synth_gen_config(k, seed=seed * 100_003 + b, max_new_tokens_per_pair=cfg.synth_tokens_per_pair),
                                  batch_size=size)
        t0 = time.perf_counter()
        kept, dropped = [], Counter()
        for result in synthesize_many(lm.model, lm.tokenizer, [(s["prompt"], s["response"]) for s in batch], k, gen, filt):
            kept += result.pairs
            dropped.update(result.dropped)
        entry = {"batch": b, "pairs": kept, "dropped": dict(dropped), "seconds": time.perf_counter() - t0}
        work.parent.mkdir(parents=True, exist_ok=True)
        with work.open("a") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        done[b] = entry
        log.info("synthesis batch %d/%d: %d pairs kept (%.1f s)", b + 1, math.ceil(len(samples) / size), len(kept), entry["seconds"])
    pairs = [tuple(p) for b in sorted(done) for p in done[b]["pairs"]]
    dropped_total: Counter[str] = Counter()
    for entry in done.values():
        dropped_total.update(entry["dropped"])
    return pairs, {"k": k, "kept": len(pairs), "requested": k * len(samples), "dropped": dict(dropped_total),
                   "seconds": sum(e["seconds"] for e in done.values())}


def train_resumable(lm: LM, examples: list[tuple[str, str]], tcfg: Any, chunk: int, work: Path) -> tuple[Any, dict[str, Any]]:
    """LoRA-train on ``examples`` for ``tcfg.epochs`` epochs, in pieces of at most ``chunk`` examples
    that are checkpointed, so a long run (the whole-stream row: ~1,150 steps) survives the end of a
    session and resumes at the last finished piece.

    Each epoch visits every example once, in a seeded order, cut into pieces; a piece is one
    ``train_lora`` epoch that starts from the previous piece's adapter (``init_adapter``). Only
    AdamW's moment estimates restart at a piece boundary. A set of at most ``chunk`` examples is
    a single plain ``train_lora`` call, so the policy rows (<= 384 examples) are unaffected.
    Returns the trained ``PeftModel`` (the caller unloads it) and the summed training report.
    """
    from models.train import train_lora

    epochs = tcfg.epochs
    if len(examples) <= chunk:
        model, report = train_lora(lm.model, lm.tokenizer, examples, tcfg)
        return model, _train_info([report], len(examples))
    rng = np.random.default_rng([tcfg.seed, 7919])
    pieces = []
    for _ in range(epochs):
        order = rng.permutation(len(examples))
        pieces += [order[i : i + chunk] for i in range(0, len(examples), chunk)]
    progress_file = work / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {"done": 0, "reports": []}
    piece_cfg = dataclasses.replace(tcfg, epochs=1, max_steps=None)
    for j in range(progress["done"], len(pieces)):
        init = work / f"piece{j - 1}" if j > 0 else None
        model, report = train_lora(lm.model, lm.tokenizer, [examples[i] for i in pieces[j]],
                                   dataclasses.replace(piece_cfg, seed=tcfg.seed * 1000 + j), init_adapter=init)
        progress["reports"].append(dataclasses.asdict(report))
        log.info("training piece %d/%d: %d steps, %.0f s, loss %.3f -> %.3f", j + 1, len(pieces), report.steps,
                 report.seconds, report.loss_first, report.loss_last)
        if j == len(pieces) - 1:
            break
        tmp = Path(tempfile.mkdtemp(prefix=".piece-", dir=work))
        model.save_pretrained(str(tmp))
        import shutil

        shutil.rmtree(work / f"piece{j}", ignore_errors=True)  # left by a run stopped before its progress was saved
        os.replace(tmp, work / f"piece{j}")
        progress["done"] = j + 1
        atomic_write(progress_file, json.dumps(progress).encode())
        lm.model = model.unload()
        if init is not None:
            shutil.rmtree(init, ignore_errors=True)
    from models.train import TrainReport

    return model, _train_info([TrainReport(**r) for r in progress["reports"]], len(examples))


def _train_info(reports: list[Any], n_examples: int) -> dict[str, Any]:
    steps = sum(r.step_seconds.__len__() for r in reports)
    all_steps = [s for r in reports for s in r.step_seconds]
    return {"steps": steps, "samples": sum(r.samples for r in reports), "examples": n_examples,
            "tokens": sum(r.tokens for r in reports), "seconds": sum(r.seconds for r in reports),
            "pieces": len(reports), "loss_first": reports[0].loss_first, "loss_last": reports[-1].loss_last,
            "mean_loss": statistics.fmean(r.mean_loss for r in reports),
            "mean_step_seconds": statistics.fmean(all_steps),
            "tokens_per_s": sum(r.tokens for r in reports) / max(sum(all_steps), 1e-9)}
