"""The report: the finished cells aggregated into ``table.md``, ``table.csv`` and ``table.png``."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from operators.files import atomic_write

from .bookkeeping import command_line, machine, read_cell
from .costs import _embedding_lines, _measured_lines, _model_estimate_lines
from .data import cache_root
from .plan import BASELINES, MAIN_POLICIES, ROWS, SHIPPED, Cell, TableConfig, plan_cells


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    if n == 0 or math.isnan(mean):
        return "—"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}" if n > 1 else f"{mean * scale:.{digits}f}"


def aggregate(out: Path, cells: list[Cell]) -> dict[tuple[str, str], dict[str, Any]]:
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for cell in cells:
        result = read_cell(cell, out)
        entry = stats.setdefault((cell.dataset, cell.row), {"rouge": [], "loss": [], "train_s": [], "wall_s": [],
                                                            "examples": [], "synthetic": [], "seeds": [], "missing": [], "synth_s": [],
                                                            "results": []})
        if result is None:
            entry["missing"].append(cell.seed)
            continue
        entry["rouge"].append(result["rouge1"]["mean"])
        entry["loss"].append(result["test_loss"])
        entry["train_s"].append(result["train"]["seconds"])
        entry["synth_s"].append(result["synthesis"].get("seconds", 0.0))
        entry["wall_s"].append(result["wall_seconds"])
        entry["examples"].append(result["train"].get("examples", 0))
        entry["synthetic"].append(result["synthesis"].get("kept", 0))
        entry["seeds"].append(cell.seed)
        entry["results"].append(result)
    return stats


def write_report(cfg: TableConfig, out: Path, datasets: Sequence[str], seeds: int, whole_seeds: int) -> None:
    cells = plan_cells(datasets, seeds, whole_seeds)
    stats = aggregate(out, cells)
    done = [r for e in stats.values() for r in e["results"]]
    rows_csv = []
    for (dataset, row), e in stats.items():
        rm, rs = _mean_std(e["rouge"])
        lm_, ls = _mean_std(e["loss"])
        rows_csv.append({
            "dataset": dataset, "row": row, "tier": ROWS[row].tier, "n_seeds": len(e["rouge"]),
            "rouge1_mean": rm, "rouge1_std": rs, "test_loss_mean": lm_, "test_loss_std": ls,
            "train_seconds_mean": _mean_std(e["train_s"])[0], "synth_seconds_mean": _mean_std(e["synth_s"])[0], "cell_seconds_mean": _mean_std(e["wall_s"])[0],
            "train_examples_mean": _mean_std(e["examples"])[0], "synthetic_mean": _mean_std(e["synthetic"])[0],
            "seeds_done": " ".join(map(str, e["seeds"])), "seeds_missing": " ".join(map(str, e["missing"])),
            "rouge1_per_seed": " ".join(f"{v:.4f}" for v in e["rouge"]),
        })
    out.mkdir(parents=True, exist_ok=True)
    with (out / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows_csv[0]))
        writer.writeheader()
        writer.writerows(rows_csv)
    (out / "table.md").write_text(_markdown(cfg, out, datasets, stats, cells, done))
    _plot(out / "table.png", datasets, stats)


def _ran(stats: dict, datasets: Sequence[str], row: str) -> bool:
    """Whether any cell of ``row`` finished, on any of ``datasets``."""
    return any(stats.get((d, row), {}).get("rouge") for d in datasets)


def _gap_lines(dataset: str, stats: dict) -> list[str]:
    def mean(row: str, key: str = "rouge") -> float:
        return _mean_std(stats[(dataset, row)][key])[0] if (dataset, row) in stats else math.nan

    lines = []
    base, whole, sdss = mean("base"), mean("whole"), mean("sdss")
    baselines = {b: mean(b) for b in BASELINES if not math.isnan(mean(b))}
    if baselines and not math.isnan(sdss):
        best = max(baselines, key=baselines.get)
        for ours in ("sdss", "sdss-stream", SHIPPED):
            value = mean(ours)
            if math.isnan(value):
                continue
            verdict = "beats" if value > baselines[best] else "does NOT beat"
            noise = max(_mean_std(stats[(dataset, r)]["rouge"])[1] for r in (ours, best))
            within = abs(value - baselines[best]) <= noise
            lines.append(f"- {ours} {value * 100:.2f} {verdict} the best baseline ({best}, {baselines[best] * 100:.2f}): "
                         f"difference {100 * (value - baselines[best]):+.2f} ROUGE-1 points"
                         + (f", within one seed std ({100 * noise:.2f}): not a measurable difference" if within else "")
                         + (f" (baselines done: {', '.join(sorted(baselines))})" if len(baselines) < len(BASELINES) else ""))
        if not (math.isnan(base) or math.isnan(whole)):
            span = whole - base
            lines.append(f"- gap whole − base = {100 * span:+.2f} points" + ("; gap closed = (row − base)/(whole − base): "
                         + ", ".join(f"{r} {(mean(r) - base) / span:+.2f}" for r in (*MAIN_POLICIES, "sdss-stream", SHIPPED)
                                     if not math.isnan(mean(r))) if span > 0 else ""))
            if span > 0:
                lines.append(f"- (sdss − best baseline)/(whole − base) = {(sdss - baselines[best]) / span:+.2f}")
        lb = {b: mean(b, "loss") for b in BASELINES if not math.isnan(mean(b, "loss"))}
        if lb:
            best_l = min(lb, key=lb.get)
            lines.append(f"- test answer loss (lower is better): sdss {mean('sdss', 'loss'):.4f}, best baseline "
                         f"{best_l} {lb[best_l]:.4f}, base {mean('base', 'loss'):.4f}, whole {mean('whole', 'loss'):.4f}")
            base_l, whole_l = mean("base", "loss"), mean("whole", "loss")
            if not (math.isnan(base_l) or math.isnan(whole_l)) and base_l != whole_l:
                lines.append("- gap closed on test loss = (base − row)/(base − whole): "
                             + ", ".join(f"{r} {(base_l - mean(r, 'loss')) / (base_l - whole_l):+.2f}"
                                         for r in (*MAIN_POLICIES, "sdss-stream", SHIPPED) if not math.isnan(mean(r, "loss"))))
        if not (math.isnan(base) or math.isnan(whole)) and whole <= base:
            lines.append("- whole-stream training does not raise ROUGE-1 over the base model here, so the ROUGE-1 "
                         "gap is not a target any selection can close; see the answer-shape table below")
    return lines


def _markdown(cfg: TableConfig, out: Path, datasets: Sequence[str], stats: dict, cells: list[Cell], done: list[dict]) -> str:
    commands = sorted({r["command"] for r in done})
    machines = sorted({r["machine"] for r in done})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Policy table (Qin et al., DAC'24 protocol) — edgetune",
        "",
        f"Generated {now} by `{command_line()}`.",
        "",
        "Cells were produced by: " + ("; ".join(f"`{c}`" for c in commands) if commands else "(none yet)"),
        "",
        "Machine: " + ("; ".join(machines) if machines else machine()),
        "",
        "## Protocol and configuration",
        "",
        f"- model `{cfg.model}`; per dataset a single user's first {cfg.stream} labeled events; windows of "
        f"{cfg.window}; buffer {cfg.capacity}; at each window end (and at stream end) the buffer joins the training "
        f"set and is cleared (fresh policy); then **one** LoRA run on the accumulated set (the paper fine-tunes at "
        f"every checkpoint: collapsed into one run on the same final set to fit this CPU).",
        f"- LoRA r={cfg.rank}, alpha={2 * cfg.rank}, q/k/v/o, lr {cfg.lr}, {cfg.train_epochs} epoch(s), batch "
        f"{cfg.train_batch_size}, max {cfg.train_max_seq_len} tokens per example; seed drives the policy RNG, LoRA "
        f"init and shuffling.",
        f"- evaluation: ROUGE-1 F (rouge-score, stemmed) of greedy answers, {cfg.max_new_tokens} new tokens, prompts "
        f"cut to {cfg.eval_max_prompt_tokens} tokens, on "
        + {"all": f"the {cfg.test} labeled events after the stream whose conversation is not in the stream",
           "middle": f"one turn (the middle one) from each of the {cfg.test} conversations after the stream",
           "validation": f"the **validation split**: the middle turn of each of the {cfg.test} conversations that "
                         f"follow the first {cfg.test} after the stream (those hold both test sets)"}[cfg.test_turns]
        + "; also mean answer loss of the test references (nats/token).",
        f"- embeddings: SmolLM2 last-token state of `prompt + response` truncated to {cfg.embed_max_tokens} tokens, "
        f"centered on the calibration mean (as the flow does); sdss dup threshold {cfg.dup_threshold}.",
        "- `base` is seed-independent (greedy decoding of fixed weights) and runs once; `whole` runs "
        "fewer seeds because it trains on ~12x more examples.",
        f"- config digest `{cfg.digest()}`",
        "",
        "ROUGE-1 in points (x100), mean ± std over seeds (std of the seed means; a single value = one seed).",
        "",
    ]
    for tier, title in (("main", "Main table"), ("ablation", "Ablations (sdss with one score's weight at 0) and the domain-share variant"),
                        ("rule", "Combination rule: the scores' weights, with the shipped domain rule"),
                        ("synthesis", "Synthesis (sdss + k synthetic pairs per selected sample)")):
        rows = [r for r in ROWS.values() if r.tier == tier]
        if tier == "rule" and not any(_ran(stats, datasets, r.name) for r in rows):
            continue  # not run on this test set: no section of dashes
        if tier != "main":
            rows = [ROWS["sdss-stream" if tier == "rule" else "sdss"], *rows]
        lines += [f"## {title}", ""]
        header = "| row | " + " | ".join(f"{d} ROUGE-1 | {d} n | {d} test loss" for d in datasets)
        if tier == "synthesis":
            header += " | " + " | ".join(f"{d} synth s | {d} train s | {d} synthetic pairs" for d in datasets)
        lines += [header + " |", "|" + "---|" * (1 + 3 * len(datasets) + (3 * len(datasets) if tier == "synthesis" else 0))]
        for r in rows:
            cols = []
            for d in datasets:
                e = stats.get((d, r.name))
                if e is None:
                    cols += ["—", "0", "—"]
                    continue
                cols += [_fmt(*_mean_std(e["rouge"]), len(e["rouge"])), str(len(e["rouge"])),
                         _fmt(*_mean_std(e["loss"]), len(e["loss"]), scale=1.0, digits=3)]
            if tier == "synthesis":
                for d in datasets:
                    e = stats.get((d, r.name))
                    cols += [f"{_mean_std(e['synth_s'])[0]:.0f}" if e and e["synth_s"] else "—",
                             f"{_mean_std(e['train_s'])[0]:.0f}" if e and e["train_s"] else "—",
                             f"{_mean_std(e['synthetic'])[0]:.0f}" if e and e["synthetic"] else "—"]
            lines.append(f"| {r.name} — {r.label} | " + " | ".join(cols) + " |")
        lines.append("")
    lines += ["## Against the target (sdss beats every baseline, closes ≥ half the gap)", ""]
    for d in datasets:
        gap = _gap_lines(d, stats)
        lines += [f"**{d}**", ""] + (gap or ["- not enough finished cells yet"]) + [""]
    lines += ["## Training sets (seed 0): size and domain mix", "",
              "| dataset | row | examples | distinct convs | mean tokens | mean EOE | mean DSS | top domains |",
              "|---|---|---|---|---|---|---|---|"]
    for (d, row), e in stats.items():
        first = next((r for r in e["results"] if r["seed"] == min(e["seeds"])), None) if e["seeds"] else None
        if first is None or row == "base":
            continue
        ts = first["training_set"]
        top = ", ".join(f"{k} {v}" for k, v in list(ts["domain_mix"].items())[:4])
        lines.append(f"| {d} | {row} | {first['train']['examples']} | {ts['distinct_conversations']} | "
                     f"{ts['mean_tokens']:.0f} | {ts['mean_eoe']:.3f} | {ts['mean_dss']:.3f} | {top} |")
    lines += _answer_lines(cfg, out, datasets, stats)
    lines += _embedding_lines(cfg, out, datasets)
    lines += _model_estimate_lines(cfg, out, datasets, cells)
    lines += _measured_lines(out, cells)
    lines += ["", "## Cost and what is missing", ""]
    lines += _cost_lines(stats, cells, out)
    return "\n".join(lines) + "\n"


def test_references(cfg: TableConfig, out: Path, dataset: str) -> list[str] | None:
    """The test set's reference answers, in evaluation order.

    Kept beside the cells in ``<out>/references/<dataset>.json`` (small, committed) so the
    report can score answers without the gitignored cache; written from the cache when it
    is there.
    """
    saved = out / "references" / f"{dataset}.json"
    if saved.is_file():
        data = json.loads(saved.read_text())
        if data.get("data_key") == cfg.data_key():
            return data["references"]
    events = cache_root(out) / dataset / cfg.data_key() / "events.json"
    if not events.is_file():
        return None
    references = [e["response"] for e in json.loads(events.read_text())["test"]]
    saved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, json.dumps({"data_key": cfg.data_key(), "references": references}, ensure_ascii=False,
                                   indent=0).encode())
    return references


def answer_shape(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1 precision, recall and F (means over pairs) and mean words per answer.

    Unigram F rewards long answers on short references through recall on common words, so
    a model that learns the data's short style can lose F while gaining precision; this
    breakdown is what tells the two apart.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rouge1"] for pred, ref in zip(predictions, references, strict=True)]
    return {
        "precision": statistics.fmean(s.precision for s in scores),
        "recall": statistics.fmean(s.recall for s in scores),
        "f": statistics.fmean(s.fmeasure for s in scores),
        "words": statistics.fmean(len(p.split()) for p in predictions),
        "empty": sum(1 for p in predictions if not p.strip()) / len(predictions),
    }


def _answer_lines(cfg: TableConfig, out: Path, datasets: Sequence[str], stats: dict) -> list[str]:
    lines = ["", "## What the answers look like (ROUGE-1 precision / recall, answer length)", "",
             "Means over the test prompts and over seeds. Reference answers: "
             + ", ".join(f"{d} {statistics.fmean(len(r.split()) for r in refs):.1f} words"
                         for d in datasets if (refs := test_references(cfg, out, d))) + ".", "",
             "| dataset | row | ROUGE-1 P | ROUGE-1 R | ROUGE-1 F | answer words |", "|---|---|---|---|---|---|"]
    for d in datasets:
        refs = test_references(cfg, out, d)
        if refs is None:
            continue
        for r in ROWS:
            e = stats.get((d, r))
            if not e or not e["results"]:
                continue
            shapes = [answer_shape(res["predictions"], refs) for res in e["results"]]
            mean = {k: statistics.fmean(s[k] for s in shapes) for k in shapes[0]}
            lines.append(f"| {d} | {r} | {100 * mean['precision']:.2f} | {100 * mean['recall']:.2f} | "
                         f"{100 * mean['f']:.2f} | {mean['words']:.1f} |")
    return lines


def _cost_lines(stats: dict, cells: list[Cell], out: Path) -> list[str]:
    lines = ["| dataset | row | cells done | mean cell s | mean train s | mean eval s |", "|---|---|---|---|---|---|"]
    for (d, row), e in stats.items():
        if e["results"]:
            ev = statistics.fmean(r["eval_seconds"] + r.get("test_loss_seconds", 0.0) for r in e["results"])
            lines.append(f"| {d} | {row} | {len(e['results'])} | {_mean_std(e['wall_s'])[0]:.0f} | "
                         f"{_mean_std(e['train_s'])[0]:.0f} | {ev:.0f} |")
    missing = [c for c in cells if not c.path(out).is_file()]
    # Estimate what is left from measured cells: same (dataset, row), else same row, else same kind.
    by_row: dict[str, list[float]] = {}
    for (d, row), e in stats.items():
        by_row.setdefault(row, []).extend(e["wall_s"])
    estimate, unknown = 0.0, []
    for c in missing:
        own = stats.get((c.dataset, c.row), {}).get("wall_s") or by_row.get(c.row)
        if not own and ROWS[c.row].kind == "policy":
            own = [v for r in MAIN_POLICIES for v in by_row.get(r, [])]
        if own:
            estimate += statistics.fmean(own)
        else:
            unknown.append(str(c))
    lines += ["", f"Finished cells: {len(cells) - len(missing)} of {len(cells)}. Estimated time for the "
              f"{len(missing)} missing cells from the measured ones: **{estimate / 3600:.1f} h**"
              + (f" (+ {len(unknown)} cells with no measurement yet)" if unknown else "") + ".", ""]
    if missing:
        lines += ["Missing cells (in run order): " + ", ".join(f"`{c}`" for c in missing), ""]
    return lines


def _plot(path: Path, datasets: Sequence[str], stats: dict) -> None:
    """Bars per row with seed std: ROUGE-1 on top, test answer loss below (lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r.name for r in ROWS.values() if _ran(stats, datasets, r.name)]
    fig, axes = plt.subplots(2, len(datasets), figsize=(6.5 * len(datasets), 8), squeeze=False)
    colors = {"main": "#4c72b0", "ablation": "#dd8452", "rule": "#8172b3", "synthesis": "#55a868"}
    metrics = (("rouge", 100.0, "ROUGE-1 (x100), mean ± std over seeds"), ("loss", 1.0, "test answer loss (nats/token)"))
    for line, (key, scale, ylabel) in enumerate(metrics):
        for ax, d in zip(axes[line], datasets):
            means, errs, cols, labels, present = [], [], [], [], []
            for r in rows:
                e = stats.get((d, r))
                m, sd = _mean_std(e[key]) if e else (math.nan, math.nan)
                means.append(scale * m if not math.isnan(m) else 0.0)
                errs.append(scale * sd if not math.isnan(sd) else 0.0)
                cols.append("#c44e52" if r == "sdss" else ("#8c8c8c" if r in ("base", "whole") else colors[ROWS[r].tier]))
                labels.append(r + ("" if e and e[key] else " (missing)"))
                if e and e[key]:
                    present.append(scale * m)
            ax.bar(range(len(rows)), means, yerr=errs, color=cols, capsize=3)
            ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
            ax.set_title(d)
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", alpha=0.3)
            if present:
                pad = max(0.05 * (max(present) - min(present)), 0.02 * max(abs(v) for v in present) or 1.0)
                ax.set_ylim(max(0.0, min(present) - 3 * pad), max(present) + 3 * pad)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
