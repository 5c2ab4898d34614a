"""Collect the targets of the benchmark runs into ``benchmarks/results/SUMMARY.md``.

    python benchmarks/summarize.py            # from results/*.json (full runs)
    python benchmarks/summarize.py --quick    # from results/quick/*.json

Each benchmark writes ``<name>.json`` with its header and targets; this only reads them, so
the summary always shows the numbers of the last run of each benchmark, with its command,
date and the load averages it ran under.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BENCHMARKS = ("bench_stream", "bench_flops", "bench_buffer", "bench_buffer_rss", "bench_authors_loop", "bench_faults",
              "bench_serve", "bench_replay")
OPTIONAL = ("bench_flops_rerun",)  # paired re-runs of a subset (bench_flops --configs ... --tag rerun), if present


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    args = p.parse_args()
    folder = C.results_dir(args.quick)
    rows, runs, missing, caveats = [], [], [], []
    for name in BENCHMARKS + OPTIONAL:
        path = folder / f"{name}.json"
        if not path.exists():
            if name in BENCHMARKS:
                missing.append(name)
            continue
        data = json.loads(path.read_text())
        h = data["header"]
        loads = [e["load1_at_start"] for e in data.get("load", []) if e.get("load1_at_start") is not None]
        waited = sum(e.get("waited_s") or 0 for e in data.get("load", []))
        runs.append({"benchmark": name, "date_utc": h["date_utc"], "load at start (1/5/15 min)": h["loadavg_at_start"],
                     "load1 during timed sections (min-max)": f"{min(loads):.2f}-{max(loads):.2f}" if loads else "",
                     "waited for quiet (s)": waited, "command": f"`{h['command']}`"})
        busy = [e["section"] for e in data.get("load", [])
                if not e["section"].endswith("(end)")
                and ((e.get("other_busy_cores") or 0) >= 0.5
                     or (e.get("other_busy_cores") is None and (e.get("load1_at_start") or 0) > 1.5))]
        if busy:
            caveats.append(f"`{name}`: {len(busy)} timed section(s) started while other processes kept >= 0.5 core "
                           "busy (sampled while the benchmark slept; the 1-minute load also counts the benchmark's own "
                           "previous section): " + ", ".join(busy) + ".")
        for t in data["targets"]:
            rows.append({"benchmark": name, "target": t["target"], "measured": t["measured"],
                         "met": "met" if t["met"] else "**missed**", "note": t.get("note", ""),
                         "command": f"`{t.get('command', h['command'])}`"})
    first = json.loads((folder / f"{BENCHMARKS[0]}.json").read_text())["header"] if not missing or BENCHMARKS[0] not in missing else None
    machine = ""
    if first:
        machine = (f"Machine: {first['cpu']} ({first['cpu_flags']}), {first['cores']} cores, {first['ram_gib']} GiB RAM; "
                   f"torch {first.get('version_torch')}, faiss {first.get('version_faiss')}, numpy {first.get('version_numpy')}, "
                   f"Python {first.get('version_python')}. The machine was shared with other work during the runs: "
                   "read each number with the load it was measured under.\n")
    md = ["# Benchmark summary\n\n", machine, "\n## Targets\n\n",
          C.md_table(rows, ["benchmark", "target", "measured", "met", "note", "command"]),
          "\n## Runs\n\n", C.md_table(runs),
          "\n## Sections measured on a busy machine\n\n"
          + ("".join(f"- {c}\n" for c in caveats) if caveats else "None.\n"),
          "\nDetails, per-configuration tables and notes: `benchmarks/results/<benchmark>.md`; raw rows in the CSV files.\n"]
    if missing:
        md.append(f"\nNot run yet: {', '.join(missing)}.\n")
    out = folder / "SUMMARY.md"
    out.write_text("".join(md))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
