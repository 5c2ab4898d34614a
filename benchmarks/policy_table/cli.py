"""The command line: ``python -m benchmarks.policy_table`` (see the package's docstring)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .bookkeeping import read_cell, set_command_args
from .cells import run
from .costs import measure
from .data import set_cache_root
from .plan import DATASETS, DEFAULT_OUT, ROWS, TEST_TURNS, TableConfig, matches, parse_only, plan_cells
from .readme import splice_readme
from .report import write_report

log = logging.getLogger("policy_table")


def _package_doc() -> str:
    """The package's docstring (the protocol), whose first paragraph is the parser's description."""
    return importlib.import_module(__package__).__doc__


def build_parser() -> argparse.ArgumentParser:
    d = TableConfig()
    p = argparse.ArgumentParser(prog="python -m benchmarks.policy_table", description=_package_doc().split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="'smollm2-135m-instruct', or 'tiny-random' for a smoke run")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS))
    p.add_argument("--stream", type=int, default=d.stream, help="labeled events per stream (S)")
    p.add_argument("--window", type=int, default=d.window, help="events per window (W)")
    p.add_argument("--capacity", type=int, default=d.capacity, help="buffer capacity (B)")
    p.add_argument("--test", type=int, default=d.test, help="held-out test pairs (T)")
    p.add_argument("--test-turns", choices=TEST_TURNS, default=d.test_turns,
                   help="all: the first T turns of the conversations after the stream; middle: one turn (the middle "
                   "one) from each of T conversations; validation: the middle turn of each of the next T conversations "
                   "(disjoint from both test sets: choose rules here)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per policy/ablation/rule/synthesis row")
    p.add_argument("--whole-seeds", type=int, default=1, help="seeds for the whole-stream row (costly)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="greedy tokens per test answer")
    p.add_argument("--eval-max-prompt-tokens", type=int, default=d.eval_max_prompt_tokens)
    p.add_argument("--train-max-seq-len", type=int, default=d.train_max_seq_len)
    p.add_argument("--train-epochs", type=int, default=d.train_epochs)
    p.add_argument("--train-batch-size", type=int, default=d.train_batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--train-chunk", type=int, default=d.train_chunk,
                   help="longer training sets are trained in checkpointed pieces of this many examples (resumable)")
    p.add_argument("--embed-max-tokens", type=int, default=d.embed_max_tokens)
    p.add_argument("--synth-tokens-per-pair", type=int, default=d.synth_tokens_per_pair,
                   help="new-token budget per requested synthetic pair")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}, or <that>/quarter with --preset quarter; with --test-turns middle/validation: <that>/<rule> or <that>/quarter-<rule>")
    p.add_argument("--cache", type=Path, default=None, help="shared cache folder (default <out>/cache; "
                   "--preset quarter uses the full table's cache, whose embeddings it reuses)")
    p.add_argument("--preset", choices=("paper", "quarter"), default="paper",
                   help="paper: the knobs as given; quarter: stream/window/capacity divided by 4 (1150/200/16: "
                   "same 6 windows and 8%% selection ratio) so the main table fits a few hours on 2 cores")
    p.add_argument("--only", default=None, help="filter cells, e.g. dataset=chitchat,row=sdss+random,seed=0")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many cells")
    p.add_argument("--list", action="store_true", help="show done/pending cells and exit")
    p.add_argument("--measure", action="store_true", help="time embedding, a few LoRA steps, evaluation and synthesis; "
                   "write <out>/costs.json with an estimate for the table, and exit")
    p.add_argument("--report", action="store_true", help="aggregate finished cells into table.csv/.md/.png and exit")
    p.add_argument("--readme", type=Path, default=None,
                   help="with --report: also copy the main and ablation tables between the policy-table markers of this file")
    p.add_argument("--no-report", action="store_true", help="do not refresh the report after each cell")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    set_command_args(argv)
    args = build_parser().parse_args(argv)
    # default folder: <preset>-<test turns>, dropping "paper" and "all" (the folders made before either existed)
    folder = "-".join(part for part in (args.preset, args.test_turns) if part not in ("paper", "all"))
    if args.preset == "quarter":
        args.stream, args.window, args.capacity = args.stream // 4, args.window // 4, args.capacity // 4
        args.cache = args.cache or DEFAULT_OUT / "cache"
    args.out = args.out or (DEFAULT_OUT / folder if folder else DEFAULT_OUT)
    set_cache_root(args.cache)
    if not log.handlers:  # our own handler: the root logger (and pytest's capture) stay untouched
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # a library's basicConfig on the root logger would print every line twice
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in datasets if d not in DATASETS]
    if bad:
        raise SystemExit(f"--datasets: unknown {bad}; use a subset of {list(DATASETS)}")
    cfg = TableConfig(
        model=args.model, stream=args.stream, window=args.window, capacity=args.capacity, test=args.test,
        max_new_tokens=args.max_new_tokens, eval_max_prompt_tokens=args.eval_max_prompt_tokens,
        train_max_seq_len=args.train_max_seq_len, train_epochs=args.train_epochs,
        train_batch_size=args.train_batch_size, lr=args.lr, embed_max_tokens=args.embed_max_tokens,
        synth_tokens_per_pair=args.synth_tokens_per_pair, train_chunk=args.train_chunk,
        test_turns=args.test_turns,
    )
    out: Path = args.out
    only = parse_only(args.only)
    unknown_rows = only.get("row", set()) - set(ROWS)
    if unknown_rows:
        raise SystemExit(f"--only row={sorted(unknown_rows)} unknown; rows are {list(ROWS)}")
    every = plan_cells(datasets, args.seeds, args.whole_seeds)
    cells = [c for c in every if matches(c, only)]
    report_args = {"datasets": datasets, "seeds": args.seeds, "whole_seeds": args.whole_seeds}
    if args.list:
        for c in cells:
            r = read_cell(c, out)
            state = f"done  ROUGE-1 {r['rouge1']['mean']:.4f}  {r['wall_seconds']:.0f} s" if r else "pending"
            print(f"{str(c):40s} {state}")
        print(f"{sum(c.path(out).is_file() for c in cells)}/{len(cells)} done")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.measure:
        costs = measure(cfg, out, datasets)
        print(json.dumps({d: e["estimate"] for d, e in costs["datasets"].items()}, indent=1))
        return 0
    if args.report:
        write_report(cfg, out, **report_args)
        print(out / "table.md")
        if args.readme:
            splice_readme(args.readme, out / "table.md", args.test_turns)
            print(args.readme)
        return 0
    if args.max_cells is not None:
        cells = [c for c in cells if not c.path(out).is_file()][: args.max_cells]
    run(cfg, out, cells, report_after=not args.no_report, report_args=report_args)
    if not args.no_report:
        write_report(cfg, out, **report_args)
    return 0
