"""Collect the targets of the benchmark runs into ``benchmarks/results/SUMMARY.md``, one section per kind of CPU.

    python benchmarks/summarize.py            # from results/cpu-*/*.json (full runs)
    python benchmarks/summarize.py --quick    # from results/quick/*.json

Each benchmark writes ``<name>.json`` with its header and targets into the folder of the CPU it ran on
(``results/cpu-amd-epyc/``, ``results/cpu-intel-xeon/``, see ``_common.results_dir``); this only reads
them, so the summary shows the last run of each benchmark on each kind of CPU, with its command, date,
commit, CPU flags and the load averages it ran under.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BENCHMARKS = ("bench_stream", "bench_flops", "bench_buffer", "bench_buffer_users", "bench_buffer_rss", "bench_state_size",
              "bench_authors_loop", "bench_faults", "bench_serve", "bench_replay")
OPTIONAL = ("bench_flops_rerun",)  # paired re-runs of a subset (bench_flops --configs ... --tag rerun), if present


def _met(value) -> str:
    return "measured" if value is None else "met" if value else "**missed**"


def section(folder: Path) -> tuple[list[str], list[str]]:
    """Markdown of one CPU kind's folder, and the benchmarks not run there."""
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
        runs.append({"benchmark": name, "date_utc": h["date_utc"], "commit": h.get("commit", "not recorded"),
                     "cpu": f"{h['cpu']} ({h['cpu_flags']}), {h['cores']} cores",
                     "load at start (1/5/15 min)": h["loadavg_at_start"],
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
            rows.append({"benchmark": name, "target": t["target"], "measured": t["measured"], "met": _met(t["met"]),
                         "note": t.get("note", ""), "command": f"`{t.get('command', h['command'])}`"})
    md = ["\n### Targets\n\n", C.md_table(rows, ["benchmark", "target", "measured", "met", "note", "command"]),
          "\n### Runs\n\n", C.md_table(runs),
          "\n### Sections measured on a busy machine\n\n" + ("".join(f"- {c}\n" for c in caveats) if caveats else "None.\n")]
    return md, missing


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    args = p.parse_args()
    folders = [C.results_dir(True)] if args.quick else sorted(f for f in C.RESULTS.glob("cpu-*") if f.is_dir())
    md = ["# Benchmark summary\n\n",
          "One section per kind of CPU (`benchmarks/results/<cpu kind>/`); the machines were shared with other work, "
          "so read each number with the load it was measured under (the Runs table and the per-benchmark `load` "
          "tables). The `commit` column is the code each run measured (not recorded before it was added to the "
          "header).\n"]
    for folder in folders:
        body, missing = section(folder)
        md.append(f"\n## {folder.name}\n")
        md += body
        if missing:
            md.append(f"\nNot run on this kind: {', '.join(missing)}.\n")
    md.append("\nDetails, per-configuration tables and notes: `benchmarks/results/<cpu kind>/<benchmark>.md`; raw rows in "
              "the CSV files.\n")
    out = (C.results_dir(True) if args.quick else C.RESULTS) / "SUMMARY.md"
    out.write_text("".join(md))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
