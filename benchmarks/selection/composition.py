"""What each policy's training set covers of its user's test topics, and whether that predicts the adapter.

The cells record how a training set scored, not which samples it held. The positions are
recomputed here with :func:`cells.select` from the same features; a cell is used only if the
recomputed selection has exactly the outcomes (admitted / replaced / rejected / duplicate counts)
the cell recorded, so a change of the selection code cannot slip a different buffer in.

Per cell, over the training set's content turns (low-value turns have no topic):

- ``coverage``: the share of the user's test prompts whose topic occurs in the training set;
- ``tv``: the total-variation distance between the training set's topic distribution and the
  test prompts' (0: the same mix, 1: no topic in common).

Topics are the streams' own (chitchat: the conversation starter; ShareGPT: k-means clusters of an
embedder no policy uses), so the measure is independent of the scores under test. The correlation
with the adapter's quality is within user: each measure and metric minus the user's mean over the
policy rows, pooled over users (Pearson). It describes the table; it is not a causal estimate.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from .cells import select
from .features import Features
from .plan import ROWS, TableConfig

MEASURES = ("coverage", "tv")


def topic_match(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, float]:
    """``coverage`` and ``tv`` of one training set against one user's test prompts.

    >>> train = [{"topic": "a", "kind": "turn"}, {"topic": "a", "kind": "repeat"}, {"topic": "low-value", "kind": "low_value"}]
    >>> test = [{"topic": "a"}, {"topic": "b"}]
    >>> topic_match(train, test)
    {'coverage': 0.5, 'tv': 0.5}
    """
    topics = Counter(e["topic"] for e in train if e["kind"] != "low_value")
    wanted = Counter(t["topic"] for t in test)
    if not wanted:
        raise ValueError("the user has no test prompts: topic coverage is undefined")
    n_test = sum(wanted.values())
    coverage = sum(c for t, c in wanted.items() if t in topics) / n_test
    n_train = sum(topics.values())
    if n_train == 0:
        return {"coverage": coverage, "tv": 1.0}
    # sorted: a set of strings iterates in a per-process order, and float sums depend on the order
    tv = 0.5 * sum(abs(topics.get(t, 0) / n_train - wanted.get(t, 0) / n_test) for t in sorted(set(topics) | set(wanted)))
    return {"coverage": coverage, "tv": tv}


def composition(cells: dict, users: dict[str, list[dict[str, Any]]], feats: dict[str, Features],
                cfg: TableConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per reproduced policy cell (no synthesis rows: they train on more than the buffer), and
    the cells whose recomputed selection did not match their record."""
    rows, mismatched = [], []
    for (dataset, order, row), by_user in sorted(cells.items()):
        spec = ROWS.get(row)
        if dataset not in users or spec is None or spec.kind != "policy" or spec.synth_k:
            continue
        names = [u["user"] for u in users[dataset]]
        for name, cell in sorted(by_user.items()):
            user = users[dataset][names.index(name)]
            events = user["iid" if order == "iid" else "stream"]
            chosen, info = select(spec, names.index(name), events, feats[dataset], cfg)
            if info["outcomes"] != cell["selection"].get("outcomes"):
                mismatched.append(f"{dataset}/{order}/{row}/{name}")
                continue
            rows.append({"dataset": dataset, "stream": order, "row": row, "user": name,
                         **topic_match([events[i] for i in chosen], user["test"]),
                         "rouge1": 100.0 * float(np.mean(cell["rouge1"])), "answer_loss": float(np.mean(cell["answer_loss"]))})
    return rows, mismatched


def within_user_correlation(rows: list[dict[str, Any]], measure: str, metric: str) -> tuple[float, int]:
    """Pearson r of ``measure`` and ``metric`` after removing each user's mean; and the number of cells."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_user.setdefault(r["user"], []).append(r)
    xs, ys = [], []
    for group in by_user.values():
        if len(group) < 2:
            continue
        x = np.array([g[measure] for g in group])
        y = np.array([g[metric] for g in group])
        xs.append(x - x.mean())
        ys.append(y - y.mean())
    if not xs:
        return math.nan, 0
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan, len(x)
    return float(np.corrcoef(x, y)[0, 1]), len(x)


def markdown(rows: list[dict[str, Any]], mismatched: list[str]) -> list[str]:
    """The table.md section."""
    lines = ["## Test-topic coverage of each training set", "",
             "Recomputed selections (`benchmarks/selection/composition.py`); coverage = share of the user's test prompts",
             "whose topic the training set holds; TV = total-variation distance of the two topic mixes (lower: closer).", "",
             "| dataset | stream | row | users | coverage | TV |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["stream"], r["row"]), []).append(r)
    for (dataset, stream, row), g in sorted(groups.items()):
        lines.append(f"| {dataset} | {stream} | {row} | {len(g)} | {np.mean([x['coverage'] for x in g]):.3f} "
                     f"| {np.mean([x['tv'] for x in g]):.3f} |")
    lines += ["", "Within-user correlation over the policy rows (each value minus its user's mean; Pearson r, cells):", "",
              "| dataset | stream | coverage ~ ROUGE-1 | coverage ~ answer loss | TV ~ ROUGE-1 | TV ~ answer loss |",
              "|---|---|---|---|---|---|"]
    for dataset, stream in sorted({(d, s) for d, s, _ in groups}):
        part = [r for r in rows if r["dataset"] == dataset and r["stream"] == stream]
        cells = []
        for measure in MEASURES:
            for metric in ("rouge1", "answer_loss"):
                r, n = within_user_correlation(part, measure, metric)
                cells.append(f"{r:+.2f} ({n})" if math.isfinite(r) else f"– ({n})")
        lines.append(f"| {dataset} | {stream} | " + " | ".join(cells) + " |")
    if mismatched:
        lines += ["", f"Left out, recomputed selection differs from the cell's record: {', '.join(mismatched)}."]
    return lines + [""]
