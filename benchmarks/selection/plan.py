"""The selection table's one configuration, its rows and its cells in the order they run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ORDERS = ("realistic", "iid")


@dataclass(frozen=True)
class Row:
    """``kind``: ``base`` (no training), ``whole`` (every stream event), ``policy`` (the buffer protocol)."""

    name: str
    kind: str
    policy: str | None = None
    params: tuple[tuple[str, object], ...] = ()
    synth_k: int = 0
    label: str = ""
    draw: int = 0  # 0: the table's seeds; k > 0: the same policy's k-th other random draw (same LoRA seed)


SHIPPED = (("weights", (2.0, 1.0, 1.0)), ("domain_quota", "stream"), ("dup_threshold", 0.95))


def _sdss(*weights: float) -> tuple[tuple[str, object], ...]:
    return (("weights", tuple(weights)), ("domain_quota", "stream"), ("dup_threshold", 0.95))


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("base", "base", label="no training"),
    Row("whole", "whole", label="every stream event trained (upper reference)"),
    Row("random", "policy", "random", label="random replacement"),
    Row("fifo", "policy", "fifo", label="FIFO"),
    Row("reservoir", "policy", "reservoir", label="reservoir sampling"),
    Row("kcenter", "policy", "kcenter", label="K-Center (core-set)"),
    Row("ifd", "policy", "ifd", label="IFD, Superfiltering-style (reads the reference answer)"),
    Row("uds", "policy", "uds", label="UDS-style: logit nuclear norm + diversity"),
    Row("sdss", "policy", "sdss", SHIPPED, label="ours as shipped: EOE x2 + DSS + IDD, stream quota"),
    Row("sdss-no-eoe", "policy", "sdss", _sdss(0, 1, 1), label="sdss without EOE"),
    Row("sdss-no-dss", "policy", "sdss", _sdss(2, 0, 1), label="sdss without DSS"),
    Row("sdss-no-idd", "policy", "sdss", _sdss(2, 1, 0), label="sdss without IDD"),
    Row("sdss-synth1", "policy", "sdss", SHIPPED, synth_k=1, label="sdss + 1 synthetic pair per sample"),
    Row("sdss-synth3", "policy", "sdss", SHIPPED, synth_k=3, label="sdss + 3 synthetic pairs per sample"),
    # Candidate rules, tried on the validation users only (benchmarks/README.md); sdss-no-dss is the fourth.
    Row("sdss-rank", "policy", "sdss", (*SHIPPED, ("scale", "rank")), label="candidate: sdss on running ranks, not z-values"),
    Row("sdss-coverage", "policy", "sdss", (*SHIPPED, ("coverage", 1.0)), label="candidate: sdss + k-center coverage term"),
    Row("deita", "policy", "deita", label="candidate: DEITA-style, quality (2 EOE + DSS) first, then a 0.9 cosine diversity filter"),
    # Round 2 (benchmarks/README.md), after round 1 failed and the table users' ablations pointed away from the scores.
    Row("sdss-reservoir", "policy", "sdss", (*SHIPPED, ("admission", "reservoir")),
        label="round 2: reservoir admission, sdss's weakest-in-domain victim"),
    Row("reservoir-dedup", "policy", "reservoir", (("dedup", 0.95),), label="round 2: reservoir sampling without near-copies"),
    # A second random draw of two naive policies: how far a result moves when only the draw changes.
    Row("random-draw2", "policy", "random", label="random replacement, a second draw", draw=1),
    Row("reservoir-draw2", "policy", "reservoir", label="reservoir sampling, a second draw", draw=1),
    # Two more draws of each, so that sdss can be set against each naive policy's mean over four draws.
    Row("random-draw3", "policy", "random", label="random replacement, a third draw", draw=2),
    Row("reservoir-draw3", "policy", "reservoir", label="reservoir sampling, a third draw", draw=2),
    Row("random-draw4", "policy", "random", label="random replacement, a fourth draw", draw=3),
    Row("reservoir-draw4", "policy", "reservoir", label="reservoir sampling, a fourth draw", draw=3),
)}
DRAWS = {r.name: r.policy for r in ROWS.values() if r.draw}
"""Each further-draw row and the row whose first draw it repeats; report.py pairs them."""
BASELINES = ("random", "fifo", "reservoir", "kcenter", "ifd", "uds")
NAIVE = ("random", "fifo", "reservoir", "kcenter")
CANDIDATES = ("sdss-rank", "sdss-no-dss", "sdss-coverage", "deita")
"""At most four, fixed before any validation cell; judged against shipped sdss by ``report.verdict``."""
ROUND2 = ("sdss-reservoir", "reservoir-dedup")
"""The second round, fixed before any of its validation cells; judged by ``report.verdict`` under round 2's rule."""
VALIDATION_ROWS = ("sdss", "reservoir", *CANDIDATES, *ROUND2)
SYNTH_USERS = 3  # synthesis rows run on the first 3 users of each dataset: they cost 3-10x a plain cell


@dataclass(frozen=True)
class TableConfig:
    """Everything that decides a cell's value; its digest is in every cell, and cells of another
    digest are never mixed into the table."""

    model: str = "smollm2-135m-instruct"
    dtype: str = "float32"  # fp32 everywhere: the table spans machines, and bf16 is 5x slower on some
    threads: int = 1
    window: int = 600  # events per window; the buffer joins the training set and is cleared after each
    capacity: int = 64
    rank: int = 8
    lr: float = 2e-4
    epochs: int = 1
    batch_size: int = 4
    max_seq_len: int = 128  # training and the test answer loss
    no_repeat_ngram_size: int = 3  # the product's generate/eval decoding
    max_prompt_tokens: int = 256
    eval_batch_size: int = 8
    synth_tokens_per_pair: int = 96
    synth_batch_size: int = 8
    train_chunk: int = 400

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Cell:
    dataset: str
    order: str  # "realistic" | "iid" | "both" (base and whole see the same events either way)
    row: str
    user: str

    def path(self, out: Path) -> Path:
        return out / "cells" / self.dataset / self.order / self.row / f"{self.user}.json"

    def __str__(self) -> str:
        return f"{self.dataset}/{self.order}/{self.row}/{self.user}"


def plan_cells(datasets: list[str], users: dict[str, list[str]]) -> list[Cell]:
    """Every cell, most informative first, user-major inside each tier so that any prefix of the run
    has the same rows for every user it reached:

    1. base and sdss, reservoir, random on the realistic streams (the headline comparison);
    2. fifo and kcenter, then sdss, reservoir, random on the iid control;
    3. whole (the upper reference: 1,200 training samples, 10x a policy cell);
    4. the modern selectors (ifd, uds) on realistic streams; 5. the ablations;
    6. the rest of the iid rows; 7. synthesis (first ``SYNTH_USERS`` users);
    8. a second random draw of random and reservoir (added after the rest had run, to measure the draw noise);
    9. their third and fourth draws (added later still, for a mean over four draws).
    """
    tiers: list[list[tuple[str, str]]] = [
        [("both", "base"), ("realistic", "sdss"), ("realistic", "reservoir"), ("realistic", "random")],
        [("realistic", "fifo"), ("realistic", "kcenter"), ("iid", "sdss"), ("iid", "reservoir"), ("iid", "random")],
        [("both", "whole")],
        [("realistic", "ifd"), ("realistic", "uds")],
        [("realistic", "sdss-no-eoe"), ("realistic", "sdss-no-dss"), ("realistic", "sdss-no-idd")],
        [("iid", "fifo"), ("iid", "kcenter"), ("iid", "ifd"), ("iid", "uds")],
        [("realistic", "sdss-synth1"), ("realistic", "sdss-synth3")],
        [("realistic", "random-draw2"), ("realistic", "reservoir-draw2")],
        [("realistic", f"{policy}-draw{k}") for k in (3, 4) for policy in ("random", "reservoir")],
    ]
    cells: list[Cell] = []
    for tier in tiers:
        n_users = max(len(users[d]) for d in datasets)
        for k in range(n_users):
            for dataset in datasets:
                if k >= len(users[dataset]):
                    continue
                for order, row in tier:
                    if ROWS[row].synth_k and k >= SYNTH_USERS:
                        continue
                    cells.append(Cell(dataset, order, row, users[dataset][k]))
    return cells


def plan_validation_cells(datasets: list[str], users: dict[str, list[str]]) -> list[Cell]:
    """The validation users' cells: shipped sdss, reservoir (for scale) and the candidates, on the
    realistic streams only (the rule is judged there), user-major so a prefix pairs every row."""
    n_users = max(len(users[d]) for d in datasets)
    return [Cell(d, "realistic", row, users[d][k]) for k in range(n_users) for d in datasets if k < len(users[d])
            for row in VALIDATION_ROWS]
