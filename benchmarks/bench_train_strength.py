"""How hard should a window's LoRA run train? Epochs x learning rate, judged on a validation split.

    python -m benchmarks.bench_train_strength --threads 1                      # ShareGPT grid
    python -m benchmarks.bench_train_strength --dataset chitchat --threads 1
    python -m benchmarks.bench_train_strength --report                         # table from finished runs

The product trains each user's adapter on a few dozen buffered samples. With the first defaults
(1 epoch at lr 2e-4: ~24 optimizer steps) the adapters lowered the answer loss of the user's
held-out turns but did not move ROUGE-1. This benchmark asks whether a stronger run does, and
what it costs, without looking at any test set:

* training set: the ``sdss-stream`` selection of seed 0 from the policy table's quarter preset
  (its cached stream, embeddings and scores; 6 windows x 16 = 96 examples);
* validation set: ``--val`` labeled events that come after the policy table's stream *and* test
  events, from conversations that appear in neither. Neither the table's test prompts nor the
  replay's held-out turns are used, so a default picked here is not tuned to what it is judged on;
* per setting: train (product ``TrainConfig``, max 256 tokens like ``edgetune``'s default), then
  answer loss and greedy ROUGE-1 (``--max-new-tokens``, 128 like ``edgetune eval``) on the
  validation prompts, each paired against the base model with a bootstrap 95 % interval.

Each finished setting is one JSON file under ``--out``; a rerun skips it (resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks import policy_table as pt
from operators.files import atomic_write

log = logging.getLogger("bench_train_strength")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_strength"
GRID = ((1, 2e-4), (3, 2e-4), (3, 1e-3), (6, 1e-3))


def load_validation(dataset: str, stream: int, test: int, n: int) -> list[dict]:
    """``n`` labeled events after the policy table's stream and test events, from conversations in neither.

    The committed results used exactly this split; ``tests/benchmarks/test_train_strength.py`` checks it
    against ``policy_table.load_split``."""
    from flows.replay import replay_events
    from operators.events import Event, parse_event

    used: set[str] = set()
    seen_stream = seen_test = 0
    out: list[dict] = []
    for raw in replay_events(dataset, n_users=1, split="round_robin", seed=0):
        event = parse_event(raw)
        if not isinstance(event, Event) or event.response is None:
            continue
        conversation = str(event.meta.get("conversation", event.event_id))
        if seen_stream < stream:  # load_split's stream
            seen_stream += 1
            used.add(conversation)
        elif seen_test < test:
            # Skips past `test` *conversations*, not turns: at least as far as load_split's `test` turns
            # reach (chitchat's 40 test turns are 3 conversations), so the split is disjoint either way.
            if conversation not in used:
                seen_test += 1
                used.add(conversation)
        elif conversation not in used:
            out.append({"event_id": event.event_id, "prompt": event.prompt, "response": event.response,
                        "conversation": conversation})
            used.add(conversation)  # one turn per conversation: validation prompts are independent
            if len(out) == n:
                return out
    raise ValueError(f"dataset {dataset!r} has only {len(out)} validation events after the stream and test; asked {n}")


def run_setting(name: str, epochs: int, lr: float, examples: list[tuple[str, str]], val: list[tuple[str, str]],
                lm: pt.LM, args: argparse.Namespace) -> dict[str, Any]:
    from models.evaluate import evaluate
    from models.generate import GenerateConfig
    from models.train import TrainConfig, example_losses, train_lora

    model, report = lm.model, None
    saved = args.out / "adapters" / f"{args.dataset}-{name}"  # gitignored; lets other decodings reuse it
    if epochs and (saved / "report.json").is_file():
        from peft import PeftModel
        from models.train import TrainReport

        model = PeftModel.from_pretrained(lm.model, str(saved)).eval()
        report = TrainReport(**json.loads((saved / "report.json").read_text()))
    elif epochs:
        cfg = TrainConfig(lr=lr, epochs=epochs, max_seq_len=args.max_seq_len, seed=0)
        model, report = train_lora(lm.model, lm.tokenizer, examples, cfg)
        log.info("%s: %d steps in %.0f s, loss %.3f -> %.3f", name, len(report.step_seconds), report.seconds,
                 report.loss_first, report.loss_last)
        model.save_pretrained(str(saved))
        atomic_write(saved / "report.json", json.dumps(dataclasses.asdict(report)).encode())
    try:
        losses = example_losses(model, lm.tokenizer, val, args.max_seq_len)
        gen = GenerateConfig(max_new_tokens=args.max_new_tokens, batch_size=8, max_prompt_tokens=256,
                             no_repeat_ngram_size=args.no_repeat_ngram_size)
        ev = evaluate(model, lm.tokenizer, val, gen)
    finally:
        if model is not lm.model:
            lm.model = model.unload()
    words = [len(p.split()) for p in ev.predictions]
    return {"name": name, "epochs": epochs, "lr": lr, "examples": len(examples),
            "no_repeat_ngram_size": args.no_repeat_ngram_size,
            "train": dataclasses.asdict(report) if report else None,
            "losses": losses, "rouge1": ev.scores,
            "answer_words": statistics.fmean(words), "eval_seconds": ev.seconds,
            "predictions": ev.predictions, "max_new_tokens": args.max_new_tokens, "max_seq_len": args.max_seq_len}


def report(out: Path) -> str:
    """The README of ``out``: how the finished settings were made, then one table per dataset and decoding."""
    from models.evaluate import paired_difference

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = ["# Training strength and decoding, judged on a validation split", "",
             "Made by `python -m benchmarks.bench_train_strength --report` from these runs:", ""]
    lines += [f"- `{c}`" for c in sorted({r["command"] for r in runs})]
    lines += ["", "Machines: " + "; ".join(sorted({r["machine"] for r in runs})), "",
              "Train seconds are wall time on a shared machine (other jobs ran beside it). "
              "Answer loss: nats/token of the reference answer (lower is better); ROUGE-1: F of greedy "
              "answers (higher is better); \"vs base\": mean per-prompt difference with a bootstrap 95 % "
              "interval over the prompts; wins/losses: prompts where ROUGE-1 rose/fell.", ""]
    for dataset, nr in sorted({(r["dataset"], r.get("no_repeat_ngram_size", 0)) for r in runs}):
        group = [r for r in runs if r["dataset"] == dataset and r.get("no_repeat_ngram_size", 0) == nr]
        base = next((r for r in group if r["epochs"] == 0), None)
        if base is None:
            continue
        decoding = f"greedy, no repeated {nr}-gram" if nr else "plain greedy"
        lines += [f"### {dataset}, {decoding}, {base['max_new_tokens']} new tokens "
                  f"(validation: {len(base['rouge1'])} prompts)", "",
                  "| setting | steps | train s | answer loss | vs base [95 % CI] | ROUGE-1 (x100) | vs base [95 % CI] "
                  "| words | wins/losses |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(group, key=lambda r: (r["epochs"], r["lr"])):
            loss, rouge = statistics.fmean(r["losses"]), 100 * statistics.fmean(r["rouge1"])
            steps = len(r["train"]["step_seconds"]) if r["train"] else 0
            secs = f"{r['train']['seconds']:.0f}" if r["train"] else "—"
            if r is base:
                lines.append(f"| base | 0 | — | {loss:.3f} | — | {rouge:.2f} | — | {r['answer_words']:.0f} | — |")
                continue
            dl = paired_difference(r["losses"], base["losses"])
            dr = paired_difference(r["rouge1"], base["rouge1"])
            lines.append(
                f"| {r['epochs']} ep, lr {r['lr']:g} | {steps} | {secs} | {loss:.3f} | {dl.mean:+.3f} "
                f"[{dl.low:+.3f}, {dl.high:+.3f}] | {rouge:.2f} | {100 * dr.mean:+.2f} [{100 * dr.low:+.2f}, "
                f"{100 * dr.high:+.2f}] | {r['answer_words']:.0f} | {dr.wins}/{dr.losses} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train_strength", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sharegpt", choices=pt.DATASETS)
    p.add_argument("--val", type=int, default=40, help="validation prompts")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--grid", default=",".join(f"{e}:{lr:g}" for e, lr in GRID), help="epochs:lr,...")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="decoding: 0 = plain greedy")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report", action="store_true", help="print the table of finished settings and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.report:
        text = report(args.out)
        (args.out / "README.md").write_text(text)
        print(text)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = pt.TableConfig(stream=1150, window=200, capacity=16)  # the quarter preset's selection
    out_table = pt.DEFAULT_OUT / "quarter"
    pt.set_cache_root(pt.DEFAULT_OUT / "cache")
    lm = pt.load_model(cfg.model)
    cache = pt.prepare_dataset(cfg, args.dataset, out_table, lm)
    indices, _ = pt.select(pt.ROWS["sdss-stream"], 0, cache.features, cfg)
    examples = [(cache.stream[i]["prompt"], cache.stream[i]["response"]) for i in indices]
    val = [(e["prompt"], e["response"]) for e in load_validation(args.dataset, cfg.stream, cfg.test, args.val)]
    settings = [("base", 0, 0.0)] + [
        (f"e{e}-lr{lr}", int(e), float(lr)) for e, lr in (s.split(":") for s in args.grid.split(","))]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, epochs, lr in settings:
        decode = f"-nr{args.no_repeat_ngram_size}" if args.no_repeat_ngram_size else ""
        path = args.out / f"{args.dataset}-{name}{decode}.json"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        result = run_setting(name, epochs, lr, examples, val, lm, args)
        command = shlex.join(["python", "-m", "benchmarks.bench_train_strength", *(sys.argv[1:] if argv is None else argv)])
        result.update(dataset=args.dataset, wall_seconds=time.perf_counter() - t0, command=command, machine=pt.machine())
        atomic_write(path, json.dumps(result, ensure_ascii=False, indent=1).encode())
        log.info("%s: ROUGE-1 %.4f, loss %.3f (%.0f s)", name, statistics.fmean(result["rouge1"]),
                 statistics.fmean(result["losses"]), result["wall_seconds"])
    print(report(args.out))  # --report also writes it to <out>/README.md
    return 0


if __name__ == "__main__":
    sys.exit(main())
