"""End-to-end events/s and per-stage seconds per event of the selection stream, both embedders.

    python benchmarks/bench_stream.py            # full run (~5 min on a quiet machine)
    python benchmarks/bench_stream.py --quick    # smoke run

Events: real ShareGPT records from ``replay_events("sharegpt", ...)`` split over the default
number of users (``Settings().source.users``, topic split), in two text modes:

- ``prompt``: the response removed (an unlabeled event; the embedded text is the prompt);
- ``prompt+response``: as replayed (the embedded text is ``prompt + " " + response``).

Embedders: ``lm`` (SmolLM2-135M last-token state, calibration-centred, the default) and
``minilm`` (all-MiniLM-L6-v2). Components come from ``flows.selection.build_components`` with
the default settings (batch 8, max 512 tokens, sdss, capacity 64, `model.dtype` auto and the automatic
thread count, both recorded in the header), training off.

In-process, the same functions the flow calls are timed around each stage, in source batches
of 64 records (``ReplaySource``'s batch size, so ``embed`` sees the same batches):

- ``read``: pulling records from the replay iterator;
- ``parse``: ``operators.events.parse_item`` (validation);
- ``embed``: ``embedder.embed`` on the batch's texts (tokenise, forward, last token);
- ``score``: ``Scorer.score_batch`` (EOE + DSS, normalisation) over the embedded batch, as the
  flow's ``embed_and_score`` calls it;
- ``select``: ``UserState.on_event`` (duplicate guard, ``policy.offer`` = IDD + near-duplicate
  search + buffer decision, decision row) per event, one ``UserState`` per user as in
  ``SelectLogic``.

The buffers of a short stream are mostly filling, which is cheaper than deciding against a
full buffer, so ``select`` is also timed **at capacity 64**: one sdss buffer pre-filled to 64 with
other ShareGPT prompts embedded by the same embedder, then offered the stream's scored
events one by one (each offer against the same full buffer state as it evolves).

Share of scoring + buffer = (score + select at capacity) / (read + parse + embed + score +
select at capacity), per event. Then the same records go through the real Bytewax flow
(``flows.selection.select`` + ``write_outputs``, ``ReplaySource``, ``bytewax.testing.run_main``;
decision log, dead letters and snapshots written to a temporary folder) for the end-to-end
events/s with the dataflow's own overhead.
"""

from __future__ import annotations

import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

from flows.replay import replay_events  # noqa: E402
from operators.events import Event, parse_item  # noqa: E402

NAME = "bench_stream"
SOURCE_BATCH = 64  # ReplaySource's default batch size


def records_for(mode: str, n: int, users: int, seed: int) -> list[dict]:
    recs = []
    for r in replay_events("sharegpt", n_users=users, limit=n, seed=seed):
        if isinstance(r, dict):
            r = dict(r)
            if mode == "prompt":
                r.pop("response", None)
        recs.append(r)
    return recs


def settings_for(kind: str, out_dir: Path):
    from operators.config import load_settings

    return load_settings(**{"embed.kind": kind, "train.enabled": False, "output.dir": out_dir,
                            "annotation.replay_answers": "keep", "metrics.port": 0})


def run_in_process(records: list, settings, components) -> dict[str, Any]:
    """The flow's steps, called directly in source-sized batches, each stage timed."""
    from flows.selection import user_seed
    from operators.policies import make_policy
    from operators.state import UserState

    sw = C.Stopwatch()
    states: dict[str, UserState] = {}
    b = settings.buffer
    offer_s = 0.0
    scored_all = []
    n_events = 0
    t_start = time.perf_counter()
    source = iter(records)
    while True:
        with sw("read"):
            batch = list(islice(source, SOURCE_BATCH))
        if not batch:
            break
        with sw("parse"):
            parsed = [parse_item(("event", r), max_chars=settings.max_chars) for r in batch]
            events = [p for p in parsed if isinstance(p, Event)]
        with sw("embed"):
            embedded = components.embedder.embed([e.text for e in events])
        with sw("score"):  # the whole embedded batch at once, as flows.selection.embed_and_score scores it
            scored = components.scorer.score_batch(events, embedded.vectors, embedded.n_tokens, 0.0, embedded.mean)
        with sw("select"):
            for se in scored:
                user = se.event.user_id
                state = states.get(user)
                if state is None:
                    params: dict[str, Any] = {"capacity": b.capacity, "seed": user_seed(settings.seed, user)}
                    if b.policy == "sdss":
                        params.update(dup_threshold=b.dup_threshold, weights=b.weights)
                    state = states[user] = UserState(user, make_policy(b.policy, **params))
                out = state.on_event(se)
                offer_s += out[0].select_seconds if out[0].kind == "decision" else 0.0
        scored_all.extend(scored)
        n_events += len(events)
    wall = time.perf_counter() - t_start
    outcomes: dict[str, int] = {}
    decisions: dict[str, str] = {}
    for s in states.values():
        for k, v in s.policy.counts().items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {"seconds": sw.seconds, "wall": wall, "events": n_events, "offer_s": offer_s, "scored": scored_all,
            "outcomes": outcomes, "buffered": sum(len(s.policy) for s in states.values()), "users": len(states),
            "decisions": decisions, "states": states}


def select_at_capacity(scored: list, prefill_scored: list, settings) -> float:
    """Seconds per event of ``UserState.on_event`` against a full sdss buffer of 64."""
    from operators.policies import make_policy
    from operators.state import UserState

    b = settings.buffer
    state = UserState("u", make_policy("sdss", capacity=b.capacity, seed=0, dup_threshold=b.dup_threshold, weights=b.weights))
    for se in prefill_scored:  # until full: a few prompts are near-copies of others ("continue")
        if len(state.policy) >= b.capacity:
            break
        state.on_event(se)
    if len(state.policy) < b.capacity:
        raise RuntimeError(f"pre-fill left the buffer at {len(state.policy)}/{b.capacity}; need more pre-fill texts")
    total = 0.0
    for se in scored:
        t = time.perf_counter()
        state.on_event(se)
        total += time.perf_counter() - t
    return total / len(scored)


def prefill_scored(components, n: int, offset: int, users: int, seed: int) -> list:
    """``n`` other ShareGPT prompts (records ``offset``..), embedded and scored as user ``u``."""
    recs = list(replay_events("sharegpt", n_users=users, limit=offset + n + 20, seed=seed))[offset:]
    events = []
    for r in recs:
        if isinstance(r, dict):
            p = parse_item(("event", {**{k: v for k, v in r.items() if k != "response"}, "user_id": "u"}))
            if isinstance(p, Event):
                events.append(p)
    events = events[:n]
    emb = components.embedder.embed([e.text for e in events])
    return [components.scorer.score(e, v, k, 0.0, emb.mean) for e, v, k in zip(events, emb.vectors, emb.n_tokens)]


def run_flow(records: list, settings, components) -> tuple[float, int, int]:
    """Wall seconds of ``run_main`` over the records with the real selection flow; decisions, dead letters."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from flows.replay_source import ReplaySource
    from flows.selection import select, write_outputs
    from flows.sinks import read_decisions

    flow = Dataflow("bench_stream")
    items = op.input("read", flow, ReplaySource(lambda: [("event", r) for r in records]))  # (channel, payload)
    write_outputs(select(items, settings, components), settings)
    t = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - t
    decisions = read_decisions(settings.output.dir / "decisions")
    dead = settings.output.dir / "dead_letters.jsonl"
    n_dead = sum(1 for _ in dead.open()) if dead.exists() else 0
    return seconds, decisions.num_rows, n_dead


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--lm-events", type=int, default=32, help="events per run for the LM embedder, prompt+response")
    p.add_argument("--lm-prompt-events", type=int, default=96, help="events per run for the LM embedder, prompts")
    p.add_argument("--minilm-events", type=int, default=256, help="events per run for MiniLM (both modes)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sizes = {("lm", "prompt+response"): args.lm_events, ("lm", "prompt"): args.lm_prompt_events,
             ("minilm", "prompt+response"): args.minilm_events, ("minilm", "prompt"): args.minilm_events}
    if args.quick:
        sizes = {k: 8 for k in sizes}

    from flows.selection import build_components
    from models.configure import dtype_choice, thread_choice
    from operators.config import Settings

    users = Settings().source.users
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    # The stream's own arithmetic choice (model.dtype auto, automatic threads), as build_components makes it.
    dtype, threads = dtype_choice(Settings()), thread_choice(Settings())
    head = C.header(NAME, args.quick, extra={"users": users, "torch_threads": f"{threads.threads} ({threads.reason})",
                                             "dtype": f"{dtype.dtype} ({dtype.reason})",
                                             "events_per_run": {f"{k[0]}/{k[1]}": v for k, v in sizes.items()}})
    stage_rows, share_rows, flow_rows = [], [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream-"))
    for kind in ("lm", "minilm"):
        t = time.perf_counter()
        components = build_components(settings_for(kind, tmp / f"{kind}-init"))
        load_s = time.perf_counter() - t
        components.embedder.embed(["warm-up: the calibration mean is computed on the first call"])
        pre = prefill_scored(components, 96, 1000, users, args.seed)
        for mode in ("prompt", "prompt+response"):
            n = sizes[(kind, mode)]
            records = records_for(mode, n, users, args.seed)
            settings = settings_for(kind, tmp / f"{kind}-{mode}-inproc")
            label = f"{kind} / {mode}"
            load = gate.check(f"{label} in-process", wait=not stage_rows)  # wait before the first section only
            r = run_in_process(records, settings, components)
            at_cap = select_at_capacity(r["scored"], pre, settings)
            gate.end(f"{label} in-process")
            sec = r["seconds"]
            ev = r["events"]
            per = {k: v / ev for k, v in sec.items()}
            tokens = float(np.mean([s.n_tokens for s in r["scored"]]))
            stage_rows.append({"embedder": kind, "text": mode, "events": ev, "mean_lm_tokens": tokens,
                               "events_per_s": ev / r["wall"],
                               **{f"{k}_s_per_event": v for k, v in per.items()},
                               "offer_s_per_event": r["offer_s"] / ev,
                               "select_at_cap64_s_per_event": at_cap,
                               "users": r["users"], "buffered": r["buffered"],
                               "outcomes": " ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items()) if v),
                               "model_load_s": load_s, "load1": round(load, 2)})
            total_cap = per["read"] + per["parse"] + per["embed"] + per["score"] + at_cap
            total_nat = sum(per.values())
            share_rows.append({"embedder": kind, "text": mode,
                               "score_plus_select_at_cap64_ms": 1e3 * (per["score"] + at_cap),
                               "per_event_total_at_cap64_ms": 1e3 * total_cap,
                               "share_at_cap64_pct": 100 * (per["score"] + at_cap) / total_cap,
                               "share_as_streamed_pct": 100 * (per["score"] + per["select"]) / total_nat,
                               "embed_share_pct": 100 * per["embed"] / total_cap})
            print(stage_rows[-1], share_rows[-1], sep="\n", flush=True)

            flow_settings = settings_for(kind, tmp / f"{kind}-{mode}-flow")
            load = gate.check(f"{label} run_main", wait=False)
            seconds, n_dec, n_dead = run_flow(records, flow_settings, components)
            gate.end(f"{label} run_main")
            flow_rows.append({"embedder": kind, "text": mode, "records": len(records), "decisions": n_dec,
                              "dead_letters": n_dead, "seconds": seconds, "events_per_s": n_dec / seconds,
                              "in_process_events_per_s": ev / r["wall"],
                              "dataflow_overhead_pct": 100 * (seconds / n_dec - r["wall"] / ev) / (r["wall"] / ev),
                              "load1": round(load, 2)})
            print(flow_rows[-1], flush=True)
        del components

    def share(kind: str, mode: str) -> float:
        return next(r["share_at_cap64_pct"] for r in share_rows if r["embedder"] == kind and r["text"] == mode)

    targets = []
    for kind in ("lm", "minilm"):
        for mode in ("prompt", "prompt+response"):
            s = share(kind, mode)
            e2e = next(r["events_per_s"] for r in flow_rows if r["embedder"] == kind and r["text"] == mode)
            targets.append({"target": f"scoring+buffer share of per-event time <= 5 % at capacity 64 ({kind}, {mode})",
                            "measured": f"{s:.2f} %", "met": s <= 5.0,
                            "note": f"end to end (run_main): {e2e:.2f} events/s", "command": head["command"]})
    notes = [
        "All times are seconds per event. `embed` includes tokenisation; `select` = `UserState.on_event` as streamed "
        "(buffers mostly filling); `offer_s_per_event` is the `policy.offer` part of it; `select_at_cap64` is the same "
        "step against a full 64-sample buffer (see the module docstring).",
        "`events_per_s` (stages) is in-process wall time over the whole loop; the `flow` table runs the same records "
        "through `bytewax.testing.run_main` with the real selection flow and file sinks (the components, and so the "
        "loaded model, are shared, so model loading is not in either number; `model_load_s` reports it).",
        "`dataflow_overhead_pct` compares run_main's seconds per event with the in-process loop's; with the embedder "
        "dominating it is within run-to-run noise on a shared machine.",
        "Stream lengths differ per embedder (the LM on prompt+response costs ~1 s per event on 2 cores).",
    ]
    C.write_results(NAME, args.quick, head, {"stages": stage_rows, "share": share_rows, "flow": flow_rows},
                    targets, notes, gate, title="Selection stream: events/s and per-stage cost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
