"""Per-user state size against stream length: the bounded duplicate guard (Defect 11, Must 9).

One user's ``UserState`` (FIFO buffer of 64, 576-d vectors like SmolLM2's, short texts) is
fed 10k, 100k and 1M distinct events; after each, the state is snapshotted the way a
Bytewax recovery epoch stores it (``pickle.dumps(state.snapshot())``) and the bytes and the
time of that call are recorded (median of 5). Two guards are compared on the same stream:

- ``bounded``: the shipped ring of the last ``buffer.dedup_window`` ids (4096);
- ``unbounded``: a window larger than the stream, i.e. every id kept, as before the bound.

FIFO carries the long run because the buffer policy does not change the guard and FIFO's offer
is the cheapest, so a million events take seconds; the buffer's share of the snapshot is the same
64 samples for every length. The shipped policy, sdss, runs the bounded guard to 100k events on
distinct random unit vectors (one vector for every event would be one near-copy after another),
so its buffer fills and keeps changing.

    python benchmarks/bench_state_size.py              # fifo: 10k, 100k, 1M; sdss: 10k, 100k
    python benchmarks/bench_state_size.py --quick      # 1k, 10k: smoke run into results/quick/
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadGate, base_parser, header, write_results  # noqa: E402  (puts the repository on sys.path)

import numpy as np  # noqa: E402

from operators.events import Event  # noqa: E402
from operators.policies import make_policy  # noqa: E402
from operators.scoring import ScoredEvent  # noqa: E402
from operators.state import UserState  # noqa: E402

DIM = 576  # SmolLM2-135M's hidden size
CAPACITY = 64
WINDOW = 4096  # buffer.dedup_window's default


def stream(vector: np.ndarray | None, start: int, stop: int):
    """Events ``start..stop-1``: all with ``vector``, or (None) each with its own seeded random unit vector."""
    for i in range(start, stop):
        event = Event(f"evt-{i:09d}", "user-0", i, f"question number {i}", "an answer")
        v = vector
        if v is None:
            v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
            v /= np.linalg.norm(v)
        yield ScoredEvent(event, v, 8, 0.5, 0.0, "general")


def measure(state: UserState, repeats: int = 5) -> tuple[int, float]:
    """(snapshot bytes, median seconds of snapshot() + pickle.dumps)."""
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        blob = pickle.dumps(state.snapshot())
        times.append(time.perf_counter() - t0)
        size = len(blob)
    return size, statistics.median(times)


def run(lengths: list[int], sdss_lengths: list[int], gate: LoadGate) -> list[dict]:
    vector = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)  # the state takes unit vectors (centered, normalised by the scorer)
    rows = []
    for policy, guard, window, sizes, vec in (("fifo", "bounded", WINDOW, lengths, vector),
                                              ("fifo", "unbounded", max(lengths) + 1, lengths, vector),
                                              ("sdss", "bounded", WINDOW, sdss_lengths, None)):
        state = UserState("user-0", make_policy(policy, capacity=CAPACITY), dedup_window=window)
        fed = 0
        gate.check(f"{policy} {guard}")
        for n in sizes:
            t0 = time.perf_counter()
            for se in stream(vec, fed, n):
                state.on_event(se)
            feed_s = time.perf_counter() - t0
            size, seconds = measure(state)
            rows.append({"policy": policy, "guard": guard, "dedup_window": window if guard == "bounded" else "all",
                         "events": n, "buffered": len(state.buffer),
                         "ids_held": len(state.seen), "snapshot_bytes": size, "snapshot_kib": size / 1024,
                         "snapshot_ms": seconds * 1000, "feed_us_per_event": feed_s / (n - fed) * 1e6})
            print(rows[-1], flush=True)
            fed = n
        gate.end(f"{policy} {guard}")
    return rows


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    lengths = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    sdss_lengths = [500, 2_000] if args.quick else [10_000, 100_000]
    gate = LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = header("bench_state_size", args.quick, with_torch=False,
                  extra={"buffer": f"fifo and sdss (shipped defaults), capacity {CAPACITY}, {DIM}-d float32", "threads": 1,
                         "measured": "pickle.dumps(UserState.snapshot()), median of 5"})
    rows = run(lengths, sdss_lengths, gate)
    bounded = [r for r in rows if r["guard"] == "bounded" and r["policy"] == "fifo"]
    unbounded = [r for r in rows if r["guard"] == "unbounded"]
    sdss = [r for r in rows if r["policy"] == "sdss"]
    small, large = bounded[0], bounded[-1]
    growth = large["snapshot_bytes"] / small["snapshot_bytes"] - 1
    sdss_growth = sdss[-1]["snapshot_bytes"] / sdss[0]["snapshot_bytes"] - 1
    targets = [{
        "target": f"snapshot size flat from {lengths[0]:,} to {lengths[-1]:,} events (within 10 %), fifo",
        "measured": f"{small['snapshot_kib']:.1f} -> {large['snapshot_kib']:.1f} KiB ({growth:+.1%})",
        "met": abs(growth) <= 0.10,
        "note": f"unbounded guard: {unbounded[0]['snapshot_kib']:.1f} -> {unbounded[-1]['snapshot_kib']:.1f} KiB",
    }, {
        "target": f"snapshot size flat from {sdss_lengths[0]:,} to {sdss_lengths[-1]:,} events (within 10 %), sdss",
        "measured": f"{sdss[0]['snapshot_kib']:.1f} -> {sdss[-1]['snapshot_kib']:.1f} KiB ({sdss_growth:+.1%})",
        "met": abs(sdss_growth) <= 0.10,
        "note": f"{sdss[-1]['buffered']} buffered at the end; {sdss[-1]['feed_us_per_event']:.0f} us per event fed",
    }]
    notes = [
        f"The bounded guard holds the last {WINDOW} event ids (setting buffer.dedup_window): a repeat within them, or "
        "of an event still in the buffer, is dead-lettered as duplicate_event; an older repeat is offered again.",
        "unbounded = every id kept (the behaviour before the bound), run on the same stream for comparison.",
        "snapshot_ms includes building the snapshot dict and pickling it; the machine is shared, see the load table.",
    ]
    write_results("bench_state_size", args.quick, head, {"sizes": rows}, targets, notes, gate,
                  title="Per-user state snapshot against stream length")


if __name__ == "__main__":
    main()
