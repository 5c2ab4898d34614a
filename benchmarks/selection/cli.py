"""The selection table's command line.

Steps: ``streams`` (build the users), ``features`` (per-event features, resumable chunks),
``run`` (the pending cells, resumable; several processes may share the list), ``report``
(paired.csv, table.md, forest.png), ``all`` (the three in turn). ``--smoke`` runs the same code
on a tiny random model and a few short streams, into a temporary folder unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results" / "selection"
DATASETS = ("chitchat", "sharegpt")
log = logging.getLogger("selection")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.selection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("streams", "features", "run", "report", "all"))
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default: %(default)s)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="the table's users or the validation users, for choosing a rule (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results/selection)")
    p.add_argument("--only", default=None, help="run only cells whose row is in this +-separated list")
    p.add_argument("--readme", type=Path, default=None, help="report: also copy the headline table into this README")
    p.add_argument("--smoke", action="store_true", help="tiny model, short streams: checks the code, not the method")
    return p


def configs(smoke: bool):
    from benchmarks.selection.features import FeatureConfig
    from benchmarks.selection.plan import TableConfig
    from benchmarks.selection.streams import StreamSpec

    if not smoke:
        # Test prompts per user from the pilot's paired spread of ROUGE-1 differences (the quarter table's
        # committed predictions, 40 prompts): 80 % power at 1.0 point needs 23-100 prompts on ShareGPT and
        # 46-1,300 on chitchat, whose answers are short and cheap to generate: 6 x 50 and 6 x 100.
        return {"sharegpt": StreamSpec(), "chitchat": StreamSpec(test_per_user=100, heldout=0.6)}, FeatureConfig(), TableConfig()
    small = StreamSpec(users=2, validation_users=1, length=60, heldout=0.5, test_per_user=4, max_conversations=300,
                       sharegpt_topics=4)
    return ({d: small for d in DATASETS},
            FeatureConfig(chunk=16, embed_tokens=32, ifd_tokens=64),
            TableConfig(model="tiny-random", window=30, capacity=4, max_seq_len=64, max_prompt_tokens=64,
                        synth_tokens_per_pair=16, train_chunk=40))


def generation_tokens(users: list[dict], tokenizer) -> int:
    """The rule for the generation length, fixed before any cell: the median length (SmolLM2 tokens)
    of the validation users' test references, clipped to [32, 128] (128 bounds the cost), so a
    typical answer can reach a typical reference's length and recall means something."""
    lengths = [len(tokenizer.encode(t["response"], add_special_tokens=False))
               for u in users if u["split"] == "validation" for t in u["test"]]
    return int(min(128, max(32, statistics.median(lengths)))) if lengths else 64


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.policy_table.bookkeeping import set_command_args
    from benchmarks.selection.features import distinct_pairs, ensure_features, load_features
    from benchmarks.selection.plan import plan_cells, plan_validation_cells
    from benchmarks.selection.streams import build

    set_command_args(argv if argv is not None else __import__("sys").argv[1:], module="benchmarks.selection")
    spec, fcfg, cfg = configs(args.smoke)
    import torch

    torch.set_num_threads(cfg.threads)
    out = args.out
    if out is None:
        if args.smoke:
            import tempfile

            out = Path(tempfile.mkdtemp(prefix="selection-smoke-"))
        else:
            out = RESULTS
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"--datasets: {d!r} is not one of {list(DATASETS)}")
    lm_box: list = []

    def lm():
        if not lm_box:
            from benchmarks.policy_table.model import load_model

            lm_box.append(load_model(cfg.model))
        return lm_box[0]

    users = {d: build(d, spec[d], out / "streams") for d in datasets}
    folder = {d: out / "features" / f"{d}-{spec[d].digest()}-{fcfg.key()}" / args.split for d in datasets}
    chosen = {d: [u for u in users[d] if u["split"] == args.split] for d in datasets}
    if args.step in ("features", "all"):
        for d in datasets:
            pairs = distinct_pairs(chosen[d])
            log.info("%s: %d distinct pairs for the %s users", d, len(pairs), args.split)
            ensure_features(lm(), pairs, folder[d], fcfg)
    if args.step in ("run", "all"):
        from benchmarks.selection.cells import run

        loaded: dict[str, tuple] = {}

        def load(dataset: str):
            if dataset not in loaded:
                feats = load_features(folder[dataset], distinct_pairs(chosen[dataset]), fcfg)
                gen = generation_tokens(users[dataset], lm().tokenizer)
                log.info("%s: generation length %d tokens (median validation reference, clipped to [32, 128])", dataset, gen)
                loaded[dataset] = ({u["user"]: u for u in chosen[dataset]}, feats, gen, lm())
            return loaded[dataset]

        plan = plan_cells if args.split == "test" else plan_validation_cells
        cells = plan(datasets, {d: [u["user"] for u in chosen[d]] for d in datasets})
        if args.only:
            keep = set(args.only.split("+"))
            cells = [c for c in cells if c.row in keep]
        cells_out = out if args.split == "test" else out / "validation"
        run(cells, cells_out, cfg, load)
    if args.step in ("report", "all"):
        from benchmarks.selection.report import write_report

        stats = {d: json.loads((out / "streams" / f"{d}.json").read_text())["stats"] for d in datasets}
        topics = None
        if all(folder[d].is_dir() for d in datasets):  # the features the selections are recomputed from
            from benchmarks.selection.composition import composition

            def topics(cells):
                feats = {d: load_features(folder[d], distinct_pairs(chosen[d]), fcfg) for d in datasets}
                return composition(cells, chosen, feats, cfg)
        write_report(out if args.split == "test" else out / "validation", cfg, stats, split=args.split, topics=topics)
        if args.readme:
            from benchmarks.selection.report import splice_readme

            splice_readme(args.readme, out if args.split == "test" else out / "validation")
        log.info("report written to %s", out)
    return 0
