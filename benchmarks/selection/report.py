"""paired.csv, table.md and the forest plot from the finished cells.

A comparison pairs the two rows' scores prompt by prompt over the users where both cells exist.
The 95 % interval is a percentile bootstrap that resamples prompts *within* each user (stratified),
so every resample keeps each user's weight; the spread of the per-user mean differences is
reported beside it (variance across users and streams, not across LoRA seeds: each user is one
stream and one LoRA seed).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .plan import BASELINES, CANDIDATES, DRAWS, ROUND2, ROWS, TableConfig

METRICS = {"rouge1": 100.0, "answer_loss": 1.0}  # ROUGE-1 reported in points
POLICY_ROWS = [r for r in ROWS if ROWS[r].kind == "policy"]
COMPARE_TO = ("base", *BASELINES)
VARIANTS = ("sdss-no-eoe", "sdss-no-dss", "sdss-no-idd", "sdss-synth1", "sdss-synth3")
"""The ablations and synthesis rows: each is also paired against shipped sdss."""


def load_cells(out: Path, cfg: TableConfig) -> dict[tuple[str, str, str], dict[str, dict]]:
    """``(dataset, order, row) -> {user: cell}``; base and whole (order "both") appear under both orders."""
    cells: dict[tuple[str, str, str], dict[str, dict]] = {}
    for path in sorted((out / "cells").glob("*/*/*/*.json")):
        cell = json.loads(path.read_text())
        if cell["config_digest"] != cfg.digest():
            continue  # made under another configuration: never mixed in
        orders = ("realistic", "iid") if cell["order"] == "both" else (cell["order"],)
        for order in orders:
            cells.setdefault((cell["dataset"], order, cell["row"]), {})[cell["user"]] = cell
    return cells


def paired(a: dict[str, dict], b: dict[str, dict], metric: str, resamples: int = 4000, seed: int = 0) -> dict[str, Any] | None:
    users = sorted(set(a) & set(b))
    if not users:
        return None
    diffs = []
    for u in users:
        if a[u]["test_ids"] != b[u]["test_ids"]:
            raise ValueError(f"user {u}: the two cells were scored on different test prompts")
        diffs.append(np.asarray(a[u][metric], float) - np.asarray(b[u][metric], float))
    scale = METRICS[metric]
    rng = np.random.default_rng(seed)
    n = sum(len(d) for d in diffs)
    total = np.zeros(resamples)
    for d in diffs:
        total += d[rng.integers(0, len(d), size=(resamples, len(d)))].sum(axis=1)
    boot = total / n
    lo, hi = np.percentile(boot, [2.5, 97.5])
    per_user = [float(d.mean()) * scale for d in diffs]
    users_lo, users_hi = over_users(per_user)
    return {"diff": float(np.concatenate(diffs).mean()) * scale, "lo": float(lo) * scale, "hi": float(hi) * scale,
            "n_prompts": n, "n_users": len(users), "user_std": float(np.std(per_user, ddof=1)) if len(users) > 1 else math.nan,
            "users_lo": users_lo, "users_hi": users_hi, "per_user": per_user}


def over_users(per_user: list[float]) -> tuple[float, float]:
    """95 % t-interval of the mean of the per-user differences: each user is one independent draw of
    stream, selection and adapter, so this interval also holds what a different draw would have moved,
    which the prompt bootstrap (adapters fixed) leaves out. ``nan`` with fewer than 2 users.

    >>> [round(x, 3) for x in over_users([1.0, 2.0, 3.0])]   # mean 2, sd 1, t(2) = 4.303
    [-0.484, 4.484]
    """
    n = len(per_user)
    if n < 2:
        return math.nan, math.nan
    from scipy import stats

    mean, se = float(np.mean(per_user)), float(np.std(per_user, ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return mean - half, mean + half


def draw_means(cells: dict) -> dict[tuple[str, str, str], dict[str, dict]]:
    """Each naive policy with further draws, as one pseudo-row ``<policy>-mean<k>``: per user, every
    per-prompt score averaged over the policy's ``k`` draws, for the users where all ``k`` cells exist
    (``k``: the first draw and every further draw with any finished cell).
    One draw is a noisy estimate of what a policy gives a user; the mean over draws is a better one.

    >>> c = lambda *x: {"test_ids": [1, 2], "rouge1": list(x), "answer_loss": list(x),
    ...                 "selection": {"annotation_requests": 10}, "training_set": {"n": 128, "low_value": 2}}
    >>> cells = {("d", "realistic", "random"): {"u1": c(0.0, 1.0), "u2": c(0.0, 0.0)},
    ...          ("d", "realistic", "random-draw2"): {"u1": c(1.0, 1.0)}}
    >>> m = draw_means(cells)
    >>> list(m), m[("d", "realistic", "random-mean2")]["u1"]["rouge1"]   # u2 lacks its second draw
    ([('d', 'realistic', 'random-mean2')], [0.5, 1.0])
    """
    out: dict[tuple[str, str, str], dict[str, dict]] = {}
    for dataset, order in sorted({(d, o) for d, o, _ in cells}):
        for first in sorted(set(DRAWS.values())):
            rows = [first, *sorted(r for r, f in DRAWS.items() if f == first and (dataset, order, r) in cells)]
            found = [cells.get((dataset, order, r), {}) for r in rows]
            users = sorted(set.intersection(*(set(f) for f in found)))
            if len(rows) < 2 or not users:
                continue
            mean: dict[str, dict] = {}
            for u in users:
                draws = [f[u] for f in found]
                if any(d["test_ids"] != draws[0]["test_ids"] for d in draws):
                    raise ValueError(f"user {u}: {first}'s draws were scored on different test prompts")
                mean[u] = {"test_ids": draws[0]["test_ids"],
                           **{m: np.mean([d[m] for d in draws], axis=0).tolist() for m in METRICS},
                           "selection": {"annotation_requests": float(np.mean([d["selection"]["annotation_requests"] for d in draws]))},
                           "training_set": {k: float(np.mean([d["training_set"][k] for d in draws])) for k in ("n", "low_value")}}
            out[(dataset, order, f"{first}-mean{len(rows)}")] = mean
    return out


def write_report(out: Path, cfg: TableConfig, stream_stats: dict[str, list[dict]], split: str = "test",
                 topics: Any = None) -> None:
    """paired.csv, table.md, headline.md and forest.png from ``out``'s finished cells. The candidate rules
    are judged only on the ``validation`` split; on the test users they are ablations like the others.

    ``topics(cells)``, if given, returns :func:`composition.composition`'s rows and mismatches for the
    cells: they go to composition.csv and a table.md section."""
    cells = load_cells(out, cfg)
    rows_out = []
    for (dataset, order, row), mine in sorted(cells.items()):
        if row not in POLICY_ROWS and row != "whole":
            continue
        if row in DRAWS:
            bases: tuple[str, ...] = (DRAWS[row],)  # the same policy's first draw: what the draw alone moves
        elif row in CANDIDATES or row in ROUND2 or row in VARIANTS:
            bases = (*COMPARE_TO, "sdss")
        else:
            bases = COMPARE_TO
        for base in bases:
            if base == row or (dataset, order, base) not in cells:
                continue
            for metric in METRICS:
                p = paired(mine, cells[(dataset, order, base)], metric)
                if p:
                    rows_out.append({"dataset": dataset, "stream": order, "metric": metric, "policy": row,
                                     "baseline": base, **{k: p[k] for k in ("diff", "lo", "hi", "n_prompts", "n_users")},
                                     "user_std": p["user_std"], "users_lo": p["users_lo"], "users_hi": p["users_hi"]})
    means = draw_means(cells)
    for (dataset, order, name), theirs in sorted(means.items()):
        if (dataset, order, "sdss") not in cells:
            continue
        for metric in METRICS:
            p = paired(cells[(dataset, order, "sdss")], theirs, metric)
            if p:
                rows_out.append({"dataset": dataset, "stream": order, "metric": metric, "policy": "sdss", "baseline": name,
                                 **{k: p[k] for k in ("diff", "lo", "hi", "n_prompts", "n_users", "user_std", "users_lo", "users_hi")}})
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "paired.csv", rows_out,
               ["dataset", "stream", "metric", "policy", "baseline", "diff", "lo", "hi", "n_prompts", "n_users", "user_std",
                "users_lo", "users_hi"])
    extra: list[str] = []
    if topics is not None:
        from .composition import markdown

        comp, mismatched = topics(cells)
        _write_csv(out / "composition.csv", comp, ["dataset", "stream", "row", "user", "coverage", "tv", "rouge1", "answer_loss"])
        extra = markdown(comp, mismatched)
    (out / "table.md").write_text(_markdown(cells, rows_out, cfg, stream_stats, judge=split == "validation", extra=extra))
    (out / "headline.md").write_text(headline({**cells, **means}, rows_out))
    _forest(out / "forest.png", rows_out)


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    """``rows`` as CSV with ``fields`` as columns, floats to 4 decimals."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in fields})


README_BEGIN, README_END = "<!-- selection:begin -->", "<!-- selection:end -->"
HEADLINE_ROWS = ("base", "whole", "random", "fifo", "reservoir", "kcenter", "ifd", "uds", "sdss")


def headline(cells: dict, rows_out: list[dict]) -> str:
    """Per dataset, the realistic streams' rows with sdss's paired difference against each: the README's table."""
    pairs = {(r["dataset"], r["baseline"], r["metric"]): r for r in rows_out
             if r["policy"] == "sdss" and r["stream"] == "realistic"}
    machines = sorted({c["machine"] for users in cells.values() for c in users.values() if "machine" in c})
    lines = ["Cells ran on: " + "; ".join(machines) + " (fp32, 1 thread per process).", ""] if machines else []
    for dataset in sorted({d for d, _, _ in cells}):
        rows = [r for r in HEADLINE_ROWS if (dataset, "realistic", r) in cells]
        rows += sorted(r for d, o, r in cells if d == dataset and o == "realistic" and "-mean" in r)
        if not rows:
            continue
        lines += [f"**{dataset}**, realistic streams (ROUGE-1 in points; answer loss in nats/token, lower is better; "
                  "sdss − row: paired, 95 % stratified bootstrap over prompts, then the 95 % t-interval over users, which also holds "
                  "each user's draw of stream, selection and adapter; ** marks a prompt interval excluding 0, †† the users' as well)", "",
                  "| row | users | ROUGE-1 | answer loss | annotation requests | low-value kept | sdss − row, ROUGE-1 | sdss − row, answer loss |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            users = cells[(dataset, "realistic", row)]
            r1 = np.mean([np.mean(c["rouge1"]) for c in users.values()]) * 100
            loss = np.mean([np.mean(c["answer_loss"]) for c in users.values()])
            req = np.mean([c["selection"]["annotation_requests"] for c in users.values()])
            low = np.mean([c["training_set"]["low_value"] for c in users.values()])
            diffs = []
            for metric, fmt in (("rouge1", "{:+.2f}"), ("answer_loss", "{:+.3f}")):
                p = pairs.get((dataset, row, metric))
                if p is None:
                    diffs.append("")
                    continue
                mark = "**" if p["lo"] > 0 or p["hi"] < 0 else ""
                dag = "††" if mark and (p["users_lo"] > 0 or p["users_hi"] < 0) else ""
                diffs.append(f"{mark}{fmt.format(p['diff'])}{mark}{dag} [{fmt.format(p['lo'])}, {fmt.format(p['hi'])}]; "
                             f"users [{fmt.format(p['users_lo'])}, {fmt.format(p['users_hi'])}]")
            lines.append(f"| {row} | {len(users)} | {r1:.2f} | {loss:.3f} | {req:.0f} | {low:.1f} of {np.mean([c['training_set']['n'] for c in users.values()]):.0f} | {diffs[0]} | {diffs[1]} |")
        lines.append("")
    return "\n".join(lines)


def splice_readme(readme: Path, out: Path) -> None:
    """Copy ``headline.md`` between the README's selection markers, so it shows only what the cells hold."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} markers to write the table between")
    head, rest = text.split(README_BEGIN, 1)
    note = "Copied from `benchmarks/results/selection/headline.md` by `python -m benchmarks.selection report --readme README.md`."
    readme.write_text(head + README_BEGIN + "\n" + note + "\n\n" + (out / "headline.md").read_text() + README_END + rest.split(README_END, 1)[1])


def _markdown(cells: dict, rows_out: list[dict], cfg: TableConfig, stream_stats: dict[str, list[dict]], judge: bool,
              extra: list[str] = ()) -> str:
    lines = ["# Selection on realistic user streams", "",
             f"Generated by `python -m benchmarks.selection report` from the finished cells (configuration `{cfg.digest()}`).", ""]
    machines = sorted({c["machine"] for users in cells.values() for c in users.values()})
    lines += ["Machines the cells ran on: " + "; ".join(machines) if machines else "No cell has finished yet.", ""]
    lines += compute_lines(cells)
    lines += ["## Mean per row", "", "| dataset | stream | row | users | ROUGE-1 | answer loss | annotation requests | trained samples | low-value kept |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, order, row), users in sorted(cells.items()):
        r1 = np.mean([np.mean(c["rouge1"]) for c in users.values()]) * 100
        loss = np.mean([np.mean(c["answer_loss"]) for c in users.values()])
        req = np.mean([c["selection"]["annotation_requests"] for c in users.values()])
        n = np.mean([c["training_set"]["n"] for c in users.values()])
        low = np.mean([c["training_set"]["low_value"] for c in users.values()])
        lines.append(f"| {dataset} | {order} | {row} | {len(users)} | {r1:.2f} | {loss:.3f} | {req:.0f} | {n:.0f} | {low:.1f} |")
    lines += ["", "## Paired differences (policy - baseline; 95 % stratified bootstrap)", "",
              "`95 % CI` resamples test prompts within user with the adapters fixed (the issue's interval); `over users` is a",
              "t-interval of the per-user differences, which also holds the draw of each user's stream, selection and adapter;",
              "** marks the first excluding 0, †† the second as well.", "",
              "| dataset | stream | metric | policy | baseline | diff | 95 % CI | over users | prompts | users | std over users |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows_out:
        if r["policy"] not in ("sdss", "whole"):
            continue
        mark = " **" if r["lo"] > 0 or r["hi"] < 0 else ""
        mark += "††" if mark and (r["users_lo"] > 0 or r["users_hi"] < 0) else ""
        lines.append(f"| {r['dataset']} | {r['stream']} | {r['metric']} | {r['policy']} | {r['baseline']} | {r['diff']:+.3f}{mark.strip()} "
                     f"| [{r['lo']:+.3f}, {r['hi']:+.3f}] | [{r['users_lo']:+.3f}, {r['users_hi']:+.3f}] | {r['n_prompts']} "
                     f"| {r['n_users']} | {r['user_std']:.3f} |")
    variants = [r for r in rows_out if r["policy"] in VARIANTS and r["baseline"] == "sdss"]
    if variants:
        lines += ["", "## Ablations and synthesis against shipped sdss (row - sdss)", "",
                  "| dataset | stream | row | ROUGE-1 diff [95 % CI] | answer loss diff [95 % CI] | users |", "|---|---|---|---|---|---|"]
        by_row: dict[tuple, dict[str, dict]] = {}
        for r in variants:
            by_row.setdefault((r["dataset"], r["stream"], r["policy"]), {})[r["metric"]] = r
        for (dataset, stream, row), m in sorted(by_row.items(), key=lambda kv: (kv[0][0], kv[0][1], VARIANTS.index(kv[0][2]))):
            if set(m) != set(METRICS):
                continue
            cell = _both_metrics(m)
            lines.append(f"| {dataset} | {stream} | {row} | {cell[0]} | {cell[1]} | {m['rouge1']['n_users']} |")
    draws = [r for r in rows_out if r["policy"] in DRAWS and r["baseline"] == DRAWS[r["policy"]]]
    if draws:
        lines += ["", "## The draw alone: a further random draw of the same policy (k-th draw - first)", "",
                  "Only the policy's random seed differs; the users, streams, LoRA seed and test prompts are the same. The",
                  "intervals resample test prompts with both adapters fixed, as every interval above does, so a difference",
                  "that excludes 0 here is one the intervals above would also call real: it measures how much they leave out.",
                  "Against these draws sdss is also set against each policy's mean over its draws (`<policy>-mean<k>` in the",
                  "paired differences above, and in the headline).", "",
                  "| dataset | stream | row | ROUGE-1 diff [95 % CI] | answer loss diff [95 % CI] | users |", "|---|---|---|---|---|---|"]
        by_draw: dict[tuple, dict[str, dict]] = {}
        for r in draws:
            by_draw.setdefault((r["dataset"], r["stream"], r["policy"]), {})[r["metric"]] = r
        for (dataset, stream, row), m in sorted(by_draw.items()):
            if set(m) != set(METRICS):
                continue
            cell = _both_metrics(m)
            lines.append(f"| {dataset} | {stream} | {row} vs {DRAWS[row]} | {cell[0]} | {cell[1]} | {m['rouge1']['n_users']} |")
    decided = verdict(rows_out) if judge else {}
    if decided:
        lines += ["", "## Candidate rules against shipped sdss (the rules committed in benchmarks/README.md)", "",
                  "Round 1: a candidate passes on a dataset if, on the realistic streams, its ROUGE-1 interval against sdss",
                  "lies above 0 and its answer-loss interval's low end is <= 0; it wins only if it passes on every dataset.",
                  "Round 2: it passes on a dataset if neither metric is worse beyond its interval; it wins if it passes on",
                  "every dataset and is better beyond the interval on at least one metric of one dataset.", "",
                  "| candidate | round | dataset | ROUGE-1 diff [95 % CI] | answer loss diff [95 % CI] | passes |",
                  "|---|---|---|---|---|---|"]
        for name, v in decided.items():
            for dataset, d in v["datasets"].items():
                r, a = d["rouge1"], d["answer_loss"]
                passes = "yes" if d["passes"] else "no"
                if v["round"] == 2:
                    passes += ", better" if d["better"] else ""
                lines.append(f"| {name} | {v['round']} | {dataset} | {r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] "
                             f"| {a['diff']:+.3f} [{a['lo']:+.3f}, {a['hi']:+.3f}] | {passes} |")
            lines.append(f"| **{name}** | {v['round']} | all | | | **{'WINS' if v['wins'] else 'does not win'}** |")
    lines += ["", "Every comparison, every row: `paired.csv`.", ""]
    lines += extra
    lines += ["## Stream statistics", ""]
    for dataset, stats in stream_stats.items():
        keys = [k for k in stats[0] if k not in ("user",)]
        lines += [f"### {dataset}", "", "| user | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += ["| " + s["user"] + " | " + " | ".join(str(s[k]) for k in keys) + " |" for s in stats]
        lines.append("")
    return "\n".join(lines) + "\n"


def _both_metrics(m: dict[str, dict]) -> list[str]:
    """ROUGE-1 and answer-loss cells of one paired row: diff (** if its interval excludes 0) and interval."""
    return [f"{x['diff']:+{w}}{'**' if x['lo'] > 0 or x['hi'] < 0 else ''} [{x['lo']:+{w}}, {x['hi']:+{w}}]"
            for x, w in ((m["rouge1"], ".2f"), (m["answer_loss"], ".3f"))]


def compute_lines(cells: dict) -> list[str]:
    """What the finished cells cost, from their own wall times (each cell is one process on one thread)."""
    seen = {id(c): c for users in cells.values() for c in users.values()}  # base/whole appear under both orders
    if not seen:
        return []
    by_kind: dict[tuple[str, str], list[float]] = {}
    for c in seen.values():
        kind = ROWS[c["row"]].kind if c["row"] in ROWS else "other"
        kind = "synthesis" if kind == "policy" and ROWS[c["row"]].synth_k else kind
        by_kind.setdefault((c["dataset"], kind), []).append(float(c["wall_seconds"]))
    total = sum(sum(v) for v in by_kind.values())
    lines = [f"Compute: {len(seen)} cells, {total / 3600:.1f} cell-hours of wall time (one thread each; a cell's wall time "
             "includes any time it shared the cores or was paused, so this is an upper bound on the quiet cost).", "",
             "| dataset | kind | cells | median s per cell | hours |", "|---|---|---|---|---|"]
    for (dataset, kind), v in sorted(by_kind.items()):
        lines.append(f"| {dataset} | {kind} | {len(v)} | {float(np.median(v)):.0f} | {sum(v) / 3600:.1f} |")
    return lines + [""]


def verdict(rows_out: list[dict]) -> dict[str, dict]:
    """The committed rules applied to each candidate, per dataset, on realistic streams against shipped sdss.

    Round 1 (``CANDIDATES``): ROUGE-1 ``lo > 0`` and answer-loss ``lo <= 0`` on every dataset present.
    Round 2 (``ROUND2``): on every dataset neither metric is worse beyond its interval (ROUGE-1 ``hi >= 0``,
    answer loss ``lo <= 0``), and on at least one dataset one metric is better beyond it (ROUGE-1
    ``lo > 0`` or answer loss ``hi < 0``).

    >>> rows = [{"policy": p, "baseline": "sdss", "stream": "realistic", "dataset": d, "metric": m,
    ...          "diff": x, "lo": lo, "hi": hi} for p in ("deita", "sdss-reservoir") for d, m, x, lo, hi in [
    ...     ("chitchat", "rouge1", 1.2, 0.3, 2.0), ("chitchat", "answer_loss", 0.01, -0.01, 0.03),
    ...     ("sharegpt", "rouge1", 0.5, -0.2, 1.1), ("sharegpt", "answer_loss", -0.02, -0.04, 0.0)]]
    >>> v = verdict(rows)["deita"]
    >>> v["round"], v["datasets"]["chitchat"]["passes"], v["datasets"]["sharegpt"]["passes"], v["wins"]
    (1, True, False, False)
    >>> v = verdict(rows)["sdss-reservoir"]
    >>> v["round"], v["datasets"]["chitchat"]["better"], v["datasets"]["sharegpt"]["not_worse"], v["wins"]
    (2, True, True, True)
    """
    found: dict[str, dict[str, dict]] = {}
    for r in rows_out:
        if (r["policy"] in CANDIDATES or r["policy"] in ROUND2) and r["baseline"] == "sdss" and r["stream"] == "realistic":
            found.setdefault(r["policy"], {}).setdefault(r["dataset"], {})[r["metric"]] = r
    out = {}
    for name, datasets in found.items():
        complete = {d: m for d, m in sorted(datasets.items()) if set(m) == set(METRICS)}
        if not complete:
            continue
        if name in CANDIDATES:
            judged = {d: {**m, "passes": m["rouge1"]["lo"] > 0 and m["answer_loss"]["lo"] <= 0} for d, m in complete.items()}
            out[name] = {"round": 1, "datasets": judged, "wins": all(j["passes"] for j in judged.values())}
            continue
        judged = {}
        for d, m in complete.items():
            not_worse = m["rouge1"]["hi"] >= 0 and m["answer_loss"]["lo"] <= 0
            better = m["rouge1"]["lo"] > 0 or m["answer_loss"]["hi"] < 0
            judged[d] = {**m, "not_worse": not_worse, "better": better, "passes": not_worse}
        out[name] = {"round": 2, "datasets": judged,
                     "wins": all(j["not_worse"] for j in judged.values()) and any(j["better"] for j in judged.values())}
    return out


def _forest(path: Path, rows_out: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Against the baselines only: base's gap is an order larger and would flatten them (it is in table.md).
    shown = [r for r in rows_out if r["policy"] == "sdss" and r["baseline"] != "base"]
    if not shown:
        return
    panels = sorted({(r["dataset"], r["metric"]) for r in shown})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * max(8, len(shown) // len(panels) + 2)), squeeze=False)
    for ax, (dataset, metric) in zip(axes[0], panels):
        mine = [r for r in shown if r["dataset"] == dataset and r["metric"] == metric]
        ys = range(len(mine))
        for y, r in zip(ys, mine):
            colour = "tab:blue" if r["stream"] == "realistic" else "tab:gray"
            if math.isfinite(r["users_lo"]):  # thin, behind: the interval over users
                ax.plot([r["users_lo"], r["users_hi"]], [y, y], color=colour, lw=0.8, alpha=0.5)
            ax.errorbar(r["diff"], y, xerr=[[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]], fmt="o", color=colour, lw=2)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(list(ys), [f"vs {r['baseline']} ({r['stream']})" for r in mine], fontsize=8)
        ax.set_title(f"{dataset}: sdss - baseline, {'ROUGE-1 points' if metric == 'rouge1' else 'answer loss (nats)'}\n"
                     "thick: prompt bootstrap; thin: over users", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
