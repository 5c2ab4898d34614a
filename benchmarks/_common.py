"""What every benchmark shares: the machine header, the load gate, timers and result files.

Each benchmark writes, into ``benchmarks/results/<cpu kind>/`` (``cpu-amd-epyc``, ``cpu-intel-xeon``: one
folder per kind of CPU, so each kind's figures are kept) or ``results/quick/`` for ``--quick``:

- ``<name>.md`` — a header (command, date, machine, versions, load averages), one Markdown
  table per measurement, and notes;
- ``<name>.csv`` (or ``<name>__<table>.csv`` when there are several tables) — the same rows,
  with the header as ``# key: value`` comment lines;
- ``<name>.json`` — the header plus the benchmark's targets (``target``, ``measured``, ``met``:
  true, false, or None for a figure the issue asks to be measured without a threshold),
  which ``benchmarks/summarize.py`` collects into ``SUMMARY.md``.

The header records the git commit the run measured (``commit``; ``-dirty`` when tracked files
had uncommitted changes; result files under ``benchmarks/results/`` do not count, since a
queue of benchmarks rewrites them as it goes).

The machine is shared: before each timed section, :class:`LoadGate` waits (sleeping and
re-checking) while the 1-minute load average is above a threshold, up to a total budget per
run, and records the load at every check either way, so each number can be read next to the
load it was measured under.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"

if str(REPO) not in sys.path:  # run as `python benchmarks/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO))


def results_dir(quick: bool) -> Path:
    """Full runs go to ``results/<cpu kind>/`` (:func:`cpu_kind`), so a run on one kind of CPU never
    overwrites another kind's figures; smoke runs to ``results/quick/``."""
    out = RESULTS / "quick" if quick else RESULTS / cpu_kind()
    out.mkdir(parents=True, exist_ok=True)
    return out


def cpu_kind(model: str | None = None) -> str:
    """The results folder of a CPU model: ``cpu-amd-epyc``, ``cpu-intel-xeon``, else a slug of the model name.

    >>> cpu_kind("AMD EPYC"), cpu_kind("Intel(R) Xeon(R) Processor"), cpu_kind("Apple M2")
    ('cpu-amd-epyc', 'cpu-intel-xeon', 'cpu-apple-m2')
    """
    import re

    name = (model if model is not None else cpu_model()).lower()
    for key, kind in (("epyc", "cpu-amd-epyc"), ("xeon", "cpu-intel-xeon")):
        if key in name:
            return kind
    return "cpu-" + (re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", name)).strip("-") or "unknown")


def command_line() -> str:
    """The exact command that is running, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_str = str(script.relative_to(REPO))
    except ValueError:
        script_str = str(script)
    return shlex.join(["python", script_str, *sys.argv[1:]])


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags() -> str:
    """The SIMD flags that decide matmul speed (avx2, fma, avx512*, amx*)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            keep = [f for f in flags if f in ("avx", "avx2", "fma", "f16c") or f.startswith(("avx512", "amx", "avx_vnni"))]
            return " ".join(sorted(keep)) or "none"
    return "unknown"


def git_commit() -> str:
    """The measured code: ``git rev-parse --short HEAD``, with ``-dirty`` if tracked files other than the
    committed results (``benchmarks/results/``, which earlier benchmarks of a queue rewrite) differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty" if dirty else "")


def ram_gib() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except ImportError:  # pragma: no cover - psutil is installed
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def versions(with_torch: bool = True) -> dict[str, str]:
    import faiss
    import numpy

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "faiss": faiss.__version__}
    try:
        import importlib.metadata as md

        out["bytewax"] = md.version("bytewax")
        out["transformers"] = md.version("transformers")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    if with_torch:
        import torch

        out["torch"] = torch.__version__
    else:
        try:
            import importlib.metadata as md

            out["torch"] = md.version("torch") + " (not imported)"
        except Exception:  # noqa: BLE001
            out["torch"] = "unknown"
    return out


def load1() -> float:
    return os.getloadavg()[0]


def busy_cores_now(interval: float = 0.5) -> float:
    """Cores kept busy by *other* work right now: system-wide CPU use over ``interval`` seconds,
    sampled while this process sleeps. The 1-minute load average lags; this does not."""
    import psutil

    return round(psutil.cpu_percent(interval=interval) / 100 * (os.cpu_count() or 1), 2)


def loadavg_str() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


@dataclass
class LoadGate:
    """Wait for a quiet machine before a timed section, within a total budget, and log the load.

    ``check(label)`` sleeps ``step_s`` at a time while the 1-minute load average is above
    ``limit`` (or other processes keep more than ``busy_limit`` cores busy right now: the
    1-minute average lags behind a job that just started) and the run's waiting budget (``budget_s``) is not spent, then records
    ``(label, load before, load after waiting, seconds waited)``. It never refuses to run:
    a section measured on a busy machine is measured and marked as such. Benchmarks wait
    before their first timed section (and after heavy untimed set-up); between sections
    of one run they only record (``wait=False``): the run's own previous section raises
    the 1-minute average, and waiting it out each time would double the runtime.
    """

    limit: float = 1.5
    budget_s: float = 1200.0
    busy_limit: float = 1.0
    step_s: float = 60.0
    log: list[dict[str, Any]] = field(default_factory=list)
    waited_s: float = 0.0

    def check(self, label: str, wait: bool = True) -> float:
        """Wait (if ``wait``) while the load is high, then record it; returns the 1-minute load."""
        step = self.step_s
        before = load1()
        waited = 0.0
        while wait and self.waited_s + waited < self.budget_s and (load1() > self.limit or busy_cores_now(2.0) > self.busy_limit):
            print(f"[load gate] {label}: load1={load1():.2f} (limit {self.limit}), other processes busy on "
                  f"{busy_cores_now():.2f} cores (limit {self.busy_limit}); sleeping {step:.0f} s", flush=True)
            time.sleep(step)
            waited += step
        self.waited_s += waited
        after = load1()
        others = busy_cores_now()
        self.log.append({
            "section": label,
            "load1_before_wait": round(before, 2),
            "load1_at_start": round(after, 2),
            "other_busy_cores": others,
            "waited_s": round(waited),
            "quiet": after <= self.limit,
        })
        print(f"[load gate] {label}: load1={after:.2f}, other processes busy on {others} cores (waited {waited:.0f} s)", flush=True)
        return after

    def end(self, label: str) -> None:  # noqa: D401
        """Record the load when a section ends (the 1-minute average now covers the section itself)."""
        self.log.append({"section": f"{label} (end)", "load1_before_wait": None,
                         "load1_at_start": round(load1(), 2), "waited_s": 0, "quiet": load1() <= self.limit})


def header(name: str, quick: bool, with_torch: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a reader needs to reproduce or discount a result."""
    h = {
        "benchmark": name,
        "command": command_line(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "mode": "quick (smoke run, not a result)" if quick else "full",
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib(), 1),
        "loadavg_at_start": loadavg_str(),
        **{f"version_{k}": v for k, v in versions(with_torch).items()},
    }
    if extra:
        h.update(extra)
    return h


def md_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        if abs(x) >= 0.01:
            return f"{x:.3f}"
        return f"{x:.3g}"
    return str(x).replace("|", "\\|")


def write_results(
    name: str,
    quick: bool,
    head: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    targets: list[dict[str, Any]],
    notes: Iterable[str] = (),
    gate: LoadGate | None = None,
    title: str | None = None,
) -> Path:
    """Write ``<name>.md``, the CSV(s) and ``<name>.json``; returns the Markdown path."""
    out = results_dir(quick)
    if gate is not None:
        tables = {**tables, "load": gate.log}
    head_lines = [f"# {k}: {v}" for k, v in head.items()]
    for key, rows in tables.items():
        path = out / (f"{name}.csv" if len(tables) == 1 else f"{name}__{key}.csv")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as fh:
            fh.write("\n".join(head_lines) + "\n")
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    md = [f"# {title or name}\n"]
    md.append("| | |\n|---|---|\n" + "".join(f"| {k} | `{v}` |\n" if k == "command" else f"| {k} | {v} |\n"
                                          for k, v in head.items()))
    if targets:
        shown = [{**t, "met": "measured" if t.get("met") is None else t["met"]} for t in targets]
        md.append("\n## Targets\n\n" + md_table(shown, ["target", "measured", "met", "note"]))
    for key, rows in tables.items():
        md.append(f"\n## {key}\n\n" + md_table(rows))
    notes = list(notes)
    if notes:
        md.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    path = out / f"{name}.md"
    path.write_text("".join(md))
    (out / f"{name}.json").write_text(json.dumps({"header": head, "targets": targets, "load": gate.log if gate else []},
                                                indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


class Stopwatch:
    """Accumulate ``perf_counter`` seconds per stage: ``with sw("embed"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None

    def __call__(self, stage: str) -> "Stopwatch":
        self._stage = stage
        return self

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._start


def base_parser(description: str):
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, results go to results/quick/")
    p.add_argument("--load-limit", type=float, default=1.5, help="wait while the 1-minute load average is above this")
    p.add_argument("--busy-limit", type=float, default=1.0,
                   help="also wait while other processes keep more than this many cores busy")
    p.add_argument("--max-wait", type=float, default=1200.0,
                   help="total seconds this run may spend waiting for the load to drop (0: never wait)")
    return p
