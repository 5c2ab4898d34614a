"""One cell of the selection table (select, synthesize, train, evaluate) and the resumable loop.

Several processes may run the loop at once: a cell is claimed by creating ``<cell>.claim``
exclusively (holding the claimer's host and PID); a claim whose process is gone is taken over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .features import Features
from .plan import ROWS, Cell, Row, TableConfig
from .streams import is_low_value

log = logging.getLogger("selection")


def window_seed(user_index: int, window: int, draw: int = 0) -> int:
    """The policy seed of one user's window; ``draw > 0`` gives the same policy another, independent draw."""
    entropy = [user_index, window, 0x5E1] + ([draw] if draw else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def select(row: Row, user_index: int, events: list[dict[str, Any]], feats: Features, cfg: TableConfig) -> tuple[list[int], dict[str, Any]]:
    """The buffer protocol: a fresh policy per window of ``cfg.window`` events; after each window its
    buffer joins the training set. Returns the chosen stream positions and what it cost the user."""
    from operators.policies import make_policy
    from operators.sample import Candidate

    a = feats.arrays
    chosen: list[int] = []
    outcomes: Counter[str] = Counter()
    for w, start in enumerate(range(0, len(events), cfg.window)):
        policy = make_policy(row.policy, capacity=cfg.capacity, seed=window_seed(user_index, w, row.draw), **dict(row.params))
        for e in events[start : start + cfg.window]:
            i = feats.row(e["prompt"], e["response"])
            c = Candidate(e["event_id"], e["seq"], a["directions"][i], float(a["eoe"][i]), float(a["dss"][i]),
                          str(a["domains"][i]))
            c.ifd, c.uncertainty = float(a["ifd"][i]), float(a["uncertainty"][i])
            outcomes[policy.offer(c).outcome] += 1
        chosen += sorted(c.seq for c in policy.samples())
    # An annotation request goes to the user when a sample enters the buffer, evicted later or not.
    return chosen, {"outcomes": dict(outcomes), "annotation_requests": outcomes["admitted"] + outcomes["replaced"]}


def describe(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a training set holds: low-value share, repeats, topics, conversations."""
    kinds = Counter(e["kind"] for e in events)
    return {"n": len(events), "kinds": dict(kinds), "low_value": sum(is_low_value(e["prompt"]) for e in events),
            "topics": len({e["topic"] for e in events if e["kind"] == "turn"}),
            "conversations": len({e["conversation"] for e in events}),
            "distinct_prompts": len({e["prompt"] for e in events})}


def run_cell(cell: Cell, user_index: int, user: dict[str, Any], feats: Features, cfg: TableConfig, lm: Any,
             gen_tokens: int, work: Path) -> dict[str, Any]:
    from benchmarks.policy_table.bookkeeping import command_line, machine
    from benchmarks.policy_table.model import synthesize_pairs, train_resumable
    from models.evaluate import evaluate
    from models.generate import GenerateConfig
    from models.train import TrainConfig, example_losses

    row = ROWS[cell.row]
    started = time.time()
    events = user["iid" if cell.order == "iid" else "stream"]
    result: dict[str, Any] = {"dataset": cell.dataset, "order": cell.order, "row": cell.row, "user": cell.user}
    if row.kind == "base":
        chosen, result["selection"] = [], {"annotation_requests": 0}
    elif row.kind == "whole":
        chosen, result["selection"] = list(range(len(events))), {"annotation_requests": len(events)}
    else:
        chosen, result["selection"] = select(row, user_index, events, feats, cfg)
    picked = [events[i] for i in chosen]
    result["training_set"] = describe(picked)
    examples = [(e["prompt"], e["response"]) for e in picked]
    result["synthesis"] = {"k": 0}
    if row.synth_k:
        pairs, result["synthesis"] = synthesize_pairs(lm, picked, row.synth_k, user_index, cfg, work / "synth.jsonl")
        examples += pairs
    model, train_info = lm.model, {"steps": 0, "seconds": 0.0}
    if examples:
        tcfg = TrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           max_seq_len=cfg.max_seq_len, seed=user_index)
        (work / "train").mkdir(parents=True, exist_ok=True)
        model, train_info = train_resumable(lm, examples, tcfg, cfg.train_chunk, work / "train")
    tests = [(t["prompt"], t["response"]) for t in user["test"]]
    if not tests:
        raise ValueError(f"user {cell.user} has no test prompts; build the streams with a larger StreamSpec.heldout")
    try:
        t0 = time.perf_counter()
        losses = example_losses(model, lm.tokenizer, tests, cfg.max_seq_len, cfg.eval_batch_size)
        loss_seconds = time.perf_counter() - t0
        ev = evaluate(model, lm.tokenizer, tests, GenerateConfig(
            max_new_tokens=gen_tokens, batch_size=cfg.eval_batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
            no_repeat_ngram_size=cfg.no_repeat_ngram_size))
    finally:
        if model is not lm.model:
            lm.model = model.unload()
    result.update(
        test_ids=[t["event_id"] for t in user["test"]], rouge1=ev.scores, answer_loss=losses,
        predictions=ev.predictions, gen_tokens=gen_tokens, train=train_info, eval_seconds=ev.seconds,
        loss_seconds=loss_seconds, wall_seconds=time.time() - started,
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=dataclasses.asdict(cfg), config_digest=cfg.digest(), command=command_line(), machine=machine())
    return result


def _claim(path: Path) -> bool:
    claim = path.with_suffix(".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        host, _, pid = claim.read_text().partition(" ")
        if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
            return False
        claim.write_text(me)  # its process is gone: take it over
        return True
    with os.fdopen(fd, "w") as handle:
        handle.write(me)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(cells: list[Cell], out: Path, cfg: TableConfig, load: Any) -> None:
    """Run every pending cell; ``load(dataset)`` returns ``(users by name, features, gen_tokens, lm)``."""
    from operators.files import atomic_write

    pending = [c for c in cells if not c.path(out).is_file()]
    log.info("%d cells, %d done, %d to run", len(cells), len(cells) - len(pending), len(pending))
    for cell in pending:
        path = cell.path(out)
        if path.is_file() or not _claim(path):
            continue
        try:
            users, feats, gen_tokens, lm = load(cell.dataset)
            names = list(users)
            work = out / "work" / cell.dataset / cell.order / cell.row / cell.user
            log.info("cell %s: start", cell)
            result = run_cell(cell, names.index(cell.user), users[cell.user], feats, cfg, lm, gen_tokens, work)
            atomic_write(path, (json.dumps(result, ensure_ascii=False) + "\n").encode())  # its folder: made by _claim
            log.info("cell %s: ROUGE-1 %.2f, answer loss %.3f, %d trained, %.0f s", cell,
                     100 * float(np.mean(result["rouge1"])), float(np.mean(result["answer_loss"])),
                     result["training_set"]["n"], result["wall_seconds"])
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        finally:
            path.with_suffix(".claim").unlink(missing_ok=True)
