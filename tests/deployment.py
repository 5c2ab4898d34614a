"""`edgetune run` as a live deployment for the fault suite and its benchmark: started, killed, restarted.

`Deployment` runs `python -m flows.cli run` over given topics in its own process, with a
recovery store, and keeps each attempt's stdout and stderr in files. `kill()` sends SIGKILL,
`terminate()` SIGTERM and waits for the exit code; `close()` (also a finalizer) ends whatever
still runs, by PID. The readers below look at an output folder as it is on disk while the
process runs: decision rows (every copy in every part file), buffers, dead letters, adapters,
the training journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
TIMING = {"embed_seconds", "score_seconds", "select_seconds"}  # depend on the run, not on the stream


class Deployment:
    """One `edgetune run` deployment: its command, output folder and recovery store, and the live process."""

    def __init__(self, bootstrap: str, topics: dict[str, str], root: Path, *flags: str,
                 env: Optional[dict[str, str]] = None) -> None:
        self.root = Path(root)
        self.out = self.root / "out"
        self.recovery = self.root / "recovery"
        self.command = [
            sys.executable, "-m", "flows.cli", "run", "--kafka", bootstrap,
            "--events-topic", topics["events"], "--dead-letter-topic", topics["dead"],
            "--metrics-port", "0", "--no-progress", "--out", str(self.out), "--recovery-dir", str(self.recovery),
            *flags,
        ]
        self.env = {
            **os.environ, "PYTHONPATH": str(REPO),
            "EDGETUNE_KAFKA__ANNOTATIONS_TOPIC": topics["annotations"],
            "EDGETUNE_KAFKA__REQUESTS_TOPIC": topics["asks"],
            **(env or {}),
        }
        self.proc: Optional[subprocess.Popen] = None
        self.attempts = 0
        self.exit_codes: list[int] = []  # of every attempt that ended (-9: killed)

    def start(self) -> None:
        if self.alive:
            raise RuntimeError("Deployment.start(): the previous process still runs")
        self.attempts += 1
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(logs / f"run{self.attempts}.out", "w"), stderr=open(logs / f"run{self.attempts}.err", "w"),
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, as a crash or an OOM kill would end it."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self._reap(timeout_s=30)

    def terminate(self, timeout_s: float = 300.0) -> int:
        """SIGTERM, then wait for the exit code (flows.stop.EXIT_STOPPED after a clean stop)."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        return self._reap(timeout_s)

    def wait_exit(self, timeout_s: float) -> Optional[int]:
        try:
            return self._reap(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _reap(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.exit_codes.append(rc)
        return rc

    def stdout(self, attempt: Optional[int] = None) -> str:
        return (self.root / "logs" / f"run{attempt or self.attempts}.out").read_text(errors="replace")

    def stderr(self, attempt: Optional[int] = None) -> str:
        return (self.root / "logs" / f"run{attempt or self.attempts}.err").read_text(errors="replace")

    def close(self) -> None:
        """End the process if it still runs (by its PID); safe to call twice."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def wait(self, until: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``until()`` while the process runs; fail naming ``what`` if it dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if until():
                return
            if not self.alive:
                raise AssertionError(f"edgetune run exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     + self.stderr()[-4000:])
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n" + self.stderr()[-4000:])


# --- the output folder as it is on disk ---------------------------------------------------------------


def decision_copies(out: Path) -> list[dict]:
    """Every decision row in every part file, copies included (readers keep one per (user, event))."""
    rows = []
    for part in sorted((out / "decisions").glob("part-*.parquet")):
        try:
            rows.extend(pq.read_table(part).to_pylist())
        except OSError:  # renamed into place while we listed: read at the next poll
            continue
    return rows


def decided_per_user(out: Path) -> Counter:
    return Counter(r["user_id"] for r in {(r["user_id"], r["event_id"]): r for r in decision_copies(out)}.values())


def decisions(out: Path) -> list[dict]:
    """One row per (user, event), in stream order per user, without the timing columns."""
    rows = {(r["user_id"], r["event_id"]): r for r in decision_copies(out)}
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in sorted(rows.values(), key=lambda r: (r["user_id"], r["seq"]))]


def buffers(out: Path) -> dict[str, dict]:
    return {s["user_id"]: s for s in (json.loads(p.read_text()) for p in sorted((out / "buffers").glob("*.json")))}


def dead_letter_lines(out: Path) -> list[str]:
    path = out / "dead_letters.jsonl"
    # "\n" only: str.splitlines would also split inside JSON strings holding U+2028 or U+0085.
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line] if path.exists() else []


def journal(out: Path) -> list[Path]:
    """Training requests still journaled (waiting, training, or failed) under the adapters folder."""
    folder = out / "adapters" / ".pending"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def adapters(out: Path) -> dict[str, list[dict]]:
    """Per user, each complete version's manifest (as a dict), oldest first."""
    from models.adapters import AdapterStore

    store = AdapterStore(out / "adapters")
    return {user: [m.to_dict() for m in store.list(user)] for user in store.users()}


def latest(out: Path) -> dict[str, Optional[int]]:
    from models.adapters import AdapterStore

    store = AdapterStore(out / "adapters")
    return {user: store.latest(user) for user in store.users()}
