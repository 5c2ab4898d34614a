"""Wall time of the README's main job, `edgetune replay` with its defaults, from a first run.

    python benchmarks/bench_replay.py            # the main job from nothing (~3 min on an idle 2-core machine)
    python benchmarks/bench_replay.py --quick    # smoke run: 40 records, no first-run conversion

The job runs as a user would start it, in a subprocess: ``python -m flows.cli replay`` with no
settings flags but a fresh output folder and a fresh, empty model cache (``--model.cache-dir``),
so the GGUF-to-safetensors conversion of the first run is inside the measured time, and the
arithmetic is chosen by ``model.dtype`` auto and the automatic thread count, as a newcomer's run
would choose them. stderr is a pipe, so the progress display prints its periodic lines; each
line is timestamped as it arrives, which splits the wall time into stages:

- ``load``: start of the process to the first ``select`` line (imports, conversion, model load,
  the arithmetic choice);
- ``select``: to the moment all events are decided (embedding, scores, buffers, annotation);
- ``train``: to the end of the process (the per-user LoRA runs, their gates, the summary).

Outcome, read back from the adapter store: per user, the version trained, whether the gate
promoted it, and its probe loss before and after (the job proves personalization only if the
adapters are promoted and their probe loss falls).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "bench_replay"
REPO = Path(__file__).resolve().parents[1]
TARGET_S = 180.0


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it (default: a temporary one)")
    args = p.parse_args()
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = C.header(NAME, args.quick, with_torch=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_replay-"))
    work.mkdir(parents=True, exist_ok=True)
    out, cache = work / "out", work / "models"
    cmd = [sys.executable, "-m", "flows.cli", "replay", "--out", str(out), "--metrics-port", "0"]
    if args.quick:
        cmd += ["--limit", "40"]  # and the shared model cache: a smoke run does not convert
    else:
        cmd += ["--model.cache-dir", str(cache)]
    load = gate.check("replay")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.monotonic() - start, line.rstrip("\n")))
    stdout = proc.stdout.read() if proc.stdout else ""
    code = proc.wait()
    wall = time.monotonic() - start
    gate.end("replay")
    progress = [(t, line) for t, line in lines if line.startswith("edgetune: ")]
    if code != 0:
        print("\n".join(line for _, line in lines[-40:]), file=sys.stderr)
        raise SystemExit(f"the replay failed with exit code {code}")

    first_select = next((t for t, line in progress if line.startswith("edgetune: select")), None)
    events_done = next((float(m.group(1)) for _, line in progress
                        if (m := re.search(r"events done: \d+ in (\d+) s", line))), None)
    arithmetic = next((line.split("arithmetic: ", 1)[1] for _, line in lines if "arithmetic: " in line), "")
    stage_rows = [
        {"stage": "load (imports, first-run conversion, model load, arithmetic choice)", "seconds": first_select},
        {"stage": "select (embed, score, buffer, annotate)",
         "seconds": None if events_done is None or first_select is None else events_done - first_select},
        {"stage": "train (LoRA runs, gates, summary)", "seconds": None if events_done is None else wall - events_done},
        {"stage": "total wall", "seconds": wall},
    ]

    from models.adapters import AdapterStore

    store = AdapterStore(out / "adapters")
    user_rows = []
    for user in store.users():
        for m in store.list(user):
            report = m.train_report or {}
            user_rows.append({"user": user, "version": m.version, "status": m.status, "n_real": m.n_real,
                              "steps": report.get("steps"), "tokens": report.get("tokens"),
                              "tokens_per_s": report.get("tokens_per_s"), "train_seconds": report.get("seconds"),
                              "dtype": (m.train_config or {}).get("dtype", "float32"),
                              "probe_loss_before": m.evaluation.probe_loss_before,
                              "probe_loss_after": m.evaluation.probe_loss_after})
    promoted = [r for r in user_rows if r["status"] == "promoted"]
    falls = [r for r in promoted if r["probe_loss_after"] is not None and r["probe_loss_before"] is not None
             and r["probe_loss_after"] < r["probe_loss_before"]]
    same_outcome = bool(user_rows) and len(falls) == len(user_rows)
    targets = [
        {"target": "main job (`edgetune replay`, defaults, first run with conversion) <= 3 min wall on an idle machine",
         "measured": f"{wall:.0f} s ({wall / 60:.1f} min); load1 {load:.2f} at start",
         "met": wall <= TARGET_S and not args.quick, "note": arithmetic, "command": head["command"]},
        {"target": "same outcome: every user's adapter promoted, probe loss falls",
         "measured": f"{len(falls)} of {len(user_rows)} adapters promoted with a falling probe loss",
         "met": same_outcome, "note": "; ".join(f"{r['user']}: {r['probe_loss_before']:.3f} -> {r['probe_loss_after']:.3f}"
                                                for r in user_rows if r["probe_loss_after"] is not None),
         "command": head["command"]},
    ]
    notes = [
        f"Command run: `{' '.join(['python', '-m', 'flows.cli'] + cmd[3:])}` (PYTHONPATH = the repository), "
        "stderr a pipe (the progress display's periodic lines, below).",
        f"Arithmetic chosen by the run: {arithmetic or 'not logged'}.",
        "Stage split from the arrival time of the progress lines: `load` ends at the first `select` line, `select` at "
        "the `events done` time printed by the train lines.",
    ]
    progress_rows = [{"t_s": round(t, 1), "line": line} for t, line in progress]
    summary_rows = [{"stdout": line} for line in stdout.splitlines() if line.strip()][:40]
    C.write_results(NAME, args.quick, head, {"stages": stage_rows, "adapters": user_rows, "progress": progress_rows,
                                             "summary": summary_rows}, targets, notes, gate,
                    title="The main job: `edgetune replay` with its defaults, first run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
