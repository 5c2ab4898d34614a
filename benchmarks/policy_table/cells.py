"""Running cells: the buffer protocol's selection, one cell (select, synthesize, train, evaluate), and
the resumable loop over the pending cells."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from operators.files import atomic_write

from .bookkeeping import check_compatible, command_line, machine, read_cell
from .data import DatasetCache, Features, cache_root, prepare_dataset
from .model import LM, load_model, synthesize_pairs, train_resumable
from .plan import ROWS, Cell, Row, TableConfig
from .report import write_report

log = logging.getLogger("policy_table")


# --- selection -------------------------------------------------------------------------


def window_seed(seed: int, window: int) -> int:
    """A distinct policy seed per (cell seed, window).

    >>> window_seed(0, 0) != window_seed(0, 1) != window_seed(1, 0)
    True
    """
    return int(np.random.SeedSequence([seed, window]).generate_state(1)[0])


def select(row: Row, seed: int, features: Features, cfg: TableConfig) -> tuple[list[int], dict[str, Any]]:
    """Run the buffer protocol over the stream; return the training set's stream positions and stats."""
    from operators.policies import make_policy
    from operators.sample import Candidate

    params: dict[str, Any] = {}
    if row.policy == "sdss":
        params = {"weights": row.weights, "dup_threshold": cfg.dup_threshold, "domain_quota": row.domain_quota}
    n = len(features.domains)
    chosen: list[int] = []
    outcomes: Counter[str] = Counter()
    per_window: list[int] = []
    t0 = time.perf_counter()
    for w, start in enumerate(range(0, n, cfg.window)):
        policy = make_policy(row.policy, capacity=cfg.capacity, seed=window_seed(seed, w), **params)
        for i in range(start, min(start + cfg.window, n)):
            candidate = Candidate(f"s{i}", i, features.directions[i], float(features.eoe[i]),
                                  float(features.dss[i]), features.domains[i])
            outcomes[policy.offer(candidate).outcome] += 1
        kept = sorted(c.seq for c in policy.samples())
        chosen += kept
        per_window.append(len(kept))
    return chosen, {"select_seconds": time.perf_counter() - t0, "outcomes": dict(outcomes), "per_window": per_window}


def describe_set(indices: Sequence[int], cache: DatasetCache) -> dict[str, Any]:
    """What the training set looks like: domains, lengths, scores, distinct conversations."""
    f = cache.features
    idx = np.asarray(indices, dtype=int)
    domains = Counter(f.domains[i] for i in idx)
    return {
        "n": int(len(idx)),
        "domain_mix": dict(domains.most_common()),
        "n_domains": len(domains),
        "distinct_conversations": len({cache.stream[i]["conversation"] for i in idx}),
        "mean_tokens": float(f.n_tokens[idx].mean()) if len(idx) else math.nan,
        "mean_eoe": float(f.eoe[idx].mean()) if len(idx) else math.nan,
        "mean_dss": float(f.dss[idx].mean()) if len(idx) else math.nan,
        "mean_response_chars": float(np.mean([len(cache.stream[i]["response"]) for i in idx])) if len(idx) else math.nan,
    }


# --- one cell, and the run over the pending ones ------------------------------------


def run_cell(cell: Cell, cfg: TableConfig, out: Path, lm: LM, cache: DatasetCache) -> dict[str, Any]:
    """Select, (synthesize,) train, evaluate one cell; return its JSON-ready result."""
    from models.evaluate import evaluate
    from models.generate import GenerateConfig
    from models.train import TrainConfig, mean_loss

    row = ROWS[cell.row]
    started = time.time()
    result: dict[str, Any] = {"dataset": cell.dataset, "row": cell.row, "seed": cell.seed, "tier": row.tier}
    if row.kind == "base":
        indices: list[int] = []
    elif row.kind == "whole":
        indices = list(range(len(cache.stream)))
    else:
        indices, result["selection"] = select(row, cell.seed, cache.features, cfg)
    result["training_set"] = describe_set(indices, cache)
    examples = [(cache.stream[i]["prompt"], cache.stream[i]["response"]) for i in indices]

    synth: dict[str, Any] = {"k": row.synth_k, "kept": 0, "seconds": 0.0}
    if row.synth_k > 0:
        work = cache_root(out) / cell.dataset / cfg.data_key() / "synth" / f"{cfg.digest()}-{cell.row}-seed{cell.seed}.jsonl"
        pairs, synth = synthesize_pairs(lm, [cache.stream[i] for i in indices], row.synth_k, cell.seed, cfg, work)
        examples += pairs
    result["synthesis"] = synth

    test_pairs = [(e["prompt"], e["response"]) for e in cache.test]
    gen = GenerateConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size,
                         max_prompt_tokens=cfg.eval_max_prompt_tokens, no_repeat_ngram_size=0)
    model = lm.model
    train_info: dict[str, Any] = {"steps": 0, "samples": 0, "examples": 0, "seconds": 0.0}
    work = cache_root(out) / cell.dataset / cfg.data_key() / "train" / f"{cfg.digest()}-{cell.row}-seed{cell.seed}"
    if examples:
        tcfg = TrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, epochs=cfg.train_epochs,
                           batch_size=cfg.train_batch_size, max_seq_len=cfg.train_max_seq_len, seed=cell.seed)
        work.mkdir(parents=True, exist_ok=True)
        model, train_info = train_resumable(lm, examples, tcfg, cfg.train_chunk, work)
        log.info("%s: trained %d steps on %d examples in %.0f s", cell, train_info["steps"], len(examples),
                 train_info["seconds"])
    try:
        t0 = time.perf_counter()
        test_loss = mean_loss(model, lm.tokenizer, test_pairs, cfg.train_max_seq_len)
        loss_seconds = time.perf_counter() - t0
        ev = evaluate(model, lm.tokenizer, test_pairs, gen)
    finally:
        if model is not lm.model:
            lm.model = model.unload()  # the plain base model back, for the next cell
    if work.is_dir():
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # checkpoints of an interrupted run are no longer needed
    result.update(
        rouge1={"mean": ev.rouge1_mean, "std": ev.rouge1_std, "n": ev.n},
        test_loss=test_loss,
        train=train_info,
        eval_seconds=ev.seconds,
        test_loss_seconds=loss_seconds,
        wall_seconds=time.time() - started,
        predictions=ev.predictions,
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=dataclasses.asdict(cfg),
        config_digest=cfg.digest(),
        command=command_line(),
        machine=machine(),
        embed={"max_tokens": cfg.embed_max_tokens, "seconds": cache.embed_seconds, "tokens_per_s": cache.tokens_per_s},
    )
    return result


def run(cfg: TableConfig, out: Path, cells: list[Cell], report_after: bool, report_args: dict) -> None:
    pending = [c for c in cells if not c.path(out).is_file()]
    check_compatible((read_cell(c, out) for c in cells if c.path(out).is_file()), cfg, out)
    log.info("%d cells selected, %d already done, %d to run", len(cells), len(cells) - len(pending), len(pending))
    if not pending:
        return
    lm = load_model(cfg.model)
    log.info("model %s loaded in %.1f s", cfg.model, lm.load_seconds)
    caches: dict[str, DatasetCache] = {}
    for cell in pending:
        if cell.path(out).is_file():  # another process finished it meanwhile
            continue
        if cell.dataset not in caches:
            t0 = time.perf_counter()
            caches[cell.dataset] = prepare_dataset(cfg, cell.dataset, out, lm)
            c = caches[cell.dataset]
            log.info("dataset %s ready in %.1f s (embedding: %.0f s, %.0f tokens/s)", cell.dataset,
                     time.perf_counter() - t0, c.embed_seconds, c.tokens_per_s)
        log.info("cell %s: start", cell)
        result = run_cell(cell, cfg, out, lm, caches[cell.dataset])
        cell.path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cell.path(out), (json.dumps(result, indent=1, ensure_ascii=False) + "\n").encode())
        log.info("cell %s: ROUGE-1 %.4f, test loss %.4f, %.0f s (train %.0f s, eval %.0f s)", cell,
                 result["rouge1"]["mean"], result["test_loss"], result["wall_seconds"], result["train"]["seconds"],
                 result["eval_seconds"])
        if report_after:
            try:
                write_report(cfg, out, **report_args)
            except Exception:  # noqa: BLE001 - a report problem must not stop the table
                log.exception("report failed; cells are kept")
