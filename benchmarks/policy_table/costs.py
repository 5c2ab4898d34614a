"""What a cell costs: unit costs measured before choosing defaults (``--measure``), a cost model from
forward throughput, and the embedding cache's measured progress; the last three are report sections."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from operators.files import atomic_write

from .bookkeeping import machine
from .data import cache_root, chunk_files, load_split
from .model import load_model, synthesize_pairs
from .plan import ROWS, Cell, Row, TableConfig

log = logging.getLogger("policy_table")


# --- measuring a cell's cost before choosing defaults -------------------------------------


def measure(cfg: TableConfig, out: Path, datasets: Sequence[str], embed_lengths: Sequence[int] = (64, 128, 256),
            n_embed: int = 64, train_steps: int = 4, n_eval: int = 16) -> dict[str, Any]:
    """Time the pieces of a cell on this machine and extrapolate to the whole table.

    Per dataset: embedding throughput at several ``embed_max_tokens`` (``n_embed`` events spread
    over the stream), LoRA step seconds at ``cfg`` (``train_steps`` steps on stream examples, the
    first step dropped as warm-up), greedy evaluation seconds per test prompt, test-loss seconds,
    and one synthesis batch (k=1). Written to ``<out>/costs.json``; the report quotes it.
    """
    from models.embed import EmbedConfig, make_embedder
    from models.evaluate import evaluate
    from models.generate import GenerateConfig
    from models.train import TrainConfig, mean_loss, train_lora

    lm = load_model(cfg.model)
    costs: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             "machine": machine(), "load_avg_before": list(os.getloadavg()),
                             "model_load_seconds": lm.load_seconds, "config": dataclasses.asdict(cfg), "datasets": {}}
    for d in datasets:
        stream, test = load_split(d, cfg.stream, cfg.test, cfg.test_turns)
        step = max(1, len(stream) // n_embed)
        spread = stream[::step][:n_embed]
        entry: dict[str, Any] = {"embed": {}}
        for max_tokens in embed_lengths:
            embedder = make_embedder(EmbedConfig(kind="lm", max_tokens=max_tokens, center=True), lm.model, lm.tokenizer)
            embedder.embed(["warm up"])  # computes the calibration mean once, outside the timing
            t0 = time.perf_counter()
            embedded = embedder.embed([f"{e['prompt']} {e['response']}" for e in spread])
            seconds = time.perf_counter() - t0
            entry["embed"][str(max_tokens)] = {
                "seconds_per_event": seconds / len(spread), "mean_tokens": statistics.fmean(embedded.n_tokens),
                "tokens_per_s": sum(embedded.n_tokens) / seconds, "stream_seconds": seconds / len(spread) * cfg.stream}
            log.info("%s embed@%d: %.3f s/event, %.0f tokens/s", d, max_tokens, seconds / len(spread),
                     sum(embedded.n_tokens) / seconds)
        examples = [(e["prompt"], e["response"]) for e in spread[: cfg.train_batch_size * train_steps]]
        tcfg = TrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, max_steps=train_steps,
                           batch_size=cfg.train_batch_size, max_seq_len=cfg.train_max_seq_len, seed=0)
        peft_model, report = train_lora(lm.model, lm.tokenizer, examples, tcfg)
        lm.model = peft_model.unload()
        steady = report.step_seconds[1:] or report.step_seconds
        entry["train"] = {"step_seconds": statistics.fmean(steady), "all_steps": report.step_seconds,
                          "tokens_per_s": report.tokens_per_s, "tokens_per_step": report.tokens / report.steps}
        log.info("%s train: %.1f s/step (batch %d, max %d tokens)", d, entry["train"]["step_seconds"],
                 cfg.train_batch_size, cfg.train_max_seq_len)
        pairs = [(e["prompt"], e["response"]) for e in test]
        gen = GenerateConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size,
                             max_prompt_tokens=cfg.eval_max_prompt_tokens, no_repeat_ngram_size=0)
        ev = evaluate(lm.model, lm.tokenizer, pairs[:n_eval], gen)
        t0 = time.perf_counter()
        mean_loss(lm.model, lm.tokenizer, pairs, cfg.train_max_seq_len)
        entry["eval"] = {"seconds_per_prompt": ev.seconds / ev.n, "test_loss_seconds": time.perf_counter() - t0,
                         "rouge1_base_subset": ev.rouge1_mean}
        log.info("%s eval: %.2f s/prompt at %d new tokens", d, ev.seconds / ev.n, cfg.max_new_tokens)
        with tempfile.TemporaryDirectory() as tmp:
            _, synth = synthesize_pairs(lm, spread[: cfg.synth_batch_size], 1, 0, cfg, Path(tmp) / "s.jsonl")
        entry["synth_batch_seconds_k1"] = synth["seconds"]
        entry["synth_kept_of_8_k1"] = synth["kept"]
        entry["estimate"] = _estimate(cfg, entry)
        costs["datasets"][d] = entry
    costs["load_avg_after"] = list(os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "costs.json", (json.dumps(costs, indent=1) + "\n").encode())
    return costs


def _estimate(cfg: TableConfig, entry: dict[str, Any]) -> dict[str, float]:
    """Seconds per cell kind for one dataset, from measured unit costs."""
    n_windows = math.ceil(cfg.stream / cfg.window)
    selected = n_windows * min(cfg.capacity, cfg.window)
    step = entry["train"]["step_seconds"]
    evaluation = entry["eval"]["seconds_per_prompt"] * cfg.test + entry["eval"]["test_loss_seconds"]
    steps = lambda n: math.ceil(n / cfg.train_batch_size) * cfg.train_epochs  # noqa: E731
    synth_batches = math.ceil(selected / cfg.synth_batch_size)
    embed = entry["embed"].get(str(cfg.embed_max_tokens), {}).get("stream_seconds", math.nan)
    return {
        "embed_stream": embed,
        "base": evaluation,
        "policy": steps(selected) * step + evaluation,
        "whole": steps(cfg.stream) * step + evaluation,
        "synth1": synth_batches * entry["synth_batch_seconds_k1"] + steps(2 * selected) * step + evaluation,
        "synth3": synth_batches * 3 * entry["synth_batch_seconds_k1"] + steps(4 * selected) * step + evaluation,
    }


# --- report sections: the embedding cache's progress, a cost model, the measured unit costs ---


def _embedding_lines(cfg: TableConfig, out: Path, datasets: Sequence[str]) -> list[str]:
    """Progress and measured throughput of the per-dataset embedding cache (also while it is partial)."""
    lines = ["", "## Shared per-dataset cache: embedding the stream (measured)", "",
             "| dataset | events embedded | LM tokens | seconds | tokens/s | s/event | state |", "|---|---|---|---|---|---|---|"]
    for d in datasets:
        folder = cache_root(out) / d / cfg.data_key()
        n = tokens = 0
        seconds = 0.0
        for part in chunk_files(cfg, out, d):
            with np.load(part, allow_pickle=False) as saved:
                n += len(saved["n_tokens"])
                tokens += int(saved["n_tokens"].sum())
                seconds += float(saved["seconds"])
        state = "complete" if (folder / "features.npz").is_file() else ("partial (resumes)" if n else "not started")
        rate = f"{tokens / seconds:.0f}" if seconds else "—"
        per = f"{seconds / n:.2f}" if n else "—"
        lines.append(f"| {d} | {n}/{cfg.stream} | {tokens} | {seconds:.0f} | {rate} | {per} | {state} |")
    return lines


IDLE_FORWARD_TOKENS_PER_S = 177.0
"""SmolLM2-135M no-grad forward throughput of the shipped embedder on this machine when idle (load 0.55):
``benchmarks/results/cpu-amd-epyc/bench_flops.md``, "default (shipped embedder)" row."""

TEMPLATE_TOKENS = 31  # SmolLM2's chat template with its default system prompt, per training/eval example


def _model_estimate_lines(cfg: TableConfig, out: Path, datasets: Sequence[str], cells: list[Cell]) -> list[str]:
    """A cost model for the table before any cell has run, from measured forward throughput.

    Units: a training token costs ~3 forward tokens (forward + backward); a test prompt's prefill
    is forward tokens; a greedy decode step of a batch costs ~ one batch-width forward. Example
    lengths come from the cached LM token counts (``min(max_seq_len, template + tokens)``). Two
    throughputs: the idle one measured by ``bench_flops`` and the one our embedding cache saw
    (under whatever load shared the machine). Superseded by the measured cell costs below.
    """
    rates = {"idle (bench_flops)": IDLE_FORWARD_TOKENS_PER_S}
    tok = sec = 0.0
    for d in datasets:
        for part in chunk_files(cfg, out, d):
            with np.load(part, allow_pickle=False) as saved:
                tok += float(saved["n_tokens"].sum())
                sec += float(saved["seconds"])
    if sec:
        rates["as measured here"] = tok / sec
    lengths: dict[str, float] = {}
    for d in datasets:
        folder = cache_root(out) / d / cfg.data_key()
        counts = [np.load(p, allow_pickle=False)["n_tokens"] for p in chunk_files(cfg, out, d)]
        if counts:
            lengths[d] = float(np.concatenate(counts).mean())
        elif (folder / "events.json").is_file():  # not embedded yet: ~4 characters per token
            stream = json.loads((folder / "events.json").read_text())["stream"]
            lengths[d] = statistics.fmean(min(cfg.embed_max_tokens, (len(e["prompt"]) + len(e["response"]) + 1) / 4)
                                          for e in stream)
    if not lengths:
        return []
    lines = ["", "## Cost model before cells finish (an estimate, not a measurement)", "",
             "Training token = 3 forward tokens; prefill = forward tokens; a decode step of a batch of "
             f"{cfg.eval_batch_size} ≈ {cfg.eval_batch_size} forward tokens. Mean example length from the cached token "
             "counts, or characters / 4 where not embedded yet (" + ", ".join(f"{d} {v:.0f}" for d, v in lengths.items()) + f" tokens, capped at "
             f"{cfg.embed_max_tokens}) plus {TEMPLATE_TOKENS} template tokens.", "",
             "| forward tokens/s | " + " | ".join(f"{d}: embed / policy cell / whole cell / eval" for d in lengths)
             + " | main rows only | whole planned table |", "|---|" + "---|" * (len(lengths) + 2)]
    n_windows = math.ceil(cfg.stream / cfg.window)
    for name, rate in rates.items():
        cols, total, main = [], 0.0, 0.0
        for d, mean_tokens in lengths.items():
            example = min(cfg.train_max_seq_len, mean_tokens + TEMPLATE_TOKENS)
            prompt = min(cfg.eval_max_prompt_tokens, mean_tokens + TEMPLATE_TOKENS)
            evaluation = (cfg.test * prompt + cfg.max_new_tokens * math.ceil(cfg.test / cfg.eval_batch_size)
                          * cfg.eval_batch_size + cfg.test * example) / rate
            train = lambda n: n * cfg.train_epochs * example * 3 / rate  # noqa: E731
            selected = n_windows * min(cfg.capacity, cfg.window)
            kinds = {"base": evaluation, "policy": train(selected) + evaluation, "whole": train(cfg.stream) + evaluation,
                     "synth1": train(2 * selected) + evaluation + selected * cfg.synth_tokens_per_pair / rate,
                     "synth3": train(4 * selected) + evaluation + selected * 3 * cfg.synth_tokens_per_pair / rate}
            embed = cfg.stream * mean_tokens / rate
            total += embed + sum(kinds[_cell_kind(ROWS[c.row])] for c in cells if c.dataset == d)
            main += embed + sum(kinds[_cell_kind(ROWS[c.row])] for c in cells if c.dataset == d and ROWS[c.row].tier == "main")
            cols.append(f"{embed / 60:.0f} / {kinds['policy'] / 60:.0f} / {kinds['whole'] / 60:.0f} / {evaluation / 60:.1f} min")
        lines.append(f"| {name}: {rate:.0f} | " + " | ".join(cols) + f" | {main / 3600:.1f} h | **{total / 3600:.1f} h** |")
    return lines


def _cell_kind(row: Row) -> str:
    return {"base": "base", "whole": "whole"}.get(row.kind, f"synth{row.synth_k}" if row.synth_k else "policy")


def _measured_lines(out: Path, cells: list[Cell]) -> list[str]:
    """The ``--measure`` unit costs and the full-table estimate made from them, before any cell ran."""
    path = out / "costs.json"
    if not path.is_file():
        return []
    costs = json.loads(path.read_text())
    lines = ["", f"## Measured unit costs (`--measure`, {costs['when']}, load average before/after "
             f"{costs['load_avg_before'][0]:.1f}/{costs['load_avg_after'][0]:.1f})", "",
             "| dataset | embed s/event @64/128/256 tokens | LoRA s/step | eval s/prompt | test-loss s | synth s/batch of 8 (k=1) |",
             "|---|---|---|---|---|---|"]
    total = 0.0
    for d, e in costs["datasets"].items():
        emb = " / ".join(f"{e['embed'][k]['seconds_per_event']:.3f}" for k in sorted(e["embed"], key=int))
        lines.append(f"| {d} | {emb} | {e['train']['step_seconds']:.1f} | {e['eval']['seconds_per_prompt']:.2f} | "
                     f"{e['eval']['test_loss_seconds']:.0f} | {e['synth_batch_seconds_k1']:.0f} |")
    lines += ["", "Estimated wall time per cell (s), from those unit costs:", "",
              "| dataset | embed stream (once) | base | policy | whole | sdss-synth1 | sdss-synth3 |", "|---|---|---|---|---|---|---|"]
    for d, e in costs["datasets"].items():
        est = e["estimate"]
        lines.append(f"| {d} | " + " | ".join(f"{est[k]:.0f}" for k in ("embed_stream", "base", "policy", "whole", "synth1", "synth3")) + " |")
        total += est["embed_stream"] if not math.isnan(est["embed_stream"]) else 0.0
    by_tier: Counter[str] = Counter()
    for c in cells:
        e = costs["datasets"].get(c.dataset)
        if e:
            seconds = e["estimate"][_cell_kind(ROWS[c.row])]
            by_tier["main, seed 0" if ROWS[c.row].tier == "main" and c.seed == 0 else ROWS[c.row].tier] += seconds
            total += seconds
    lines += ["", "Estimate for the whole planned table: **" + f"{total / 3600:.1f} h**" + " ("
              + ", ".join(f"{k} {v / 3600:.1f} h" for k, v in by_tier.items()) + ", embedding included)."]
    return lines
