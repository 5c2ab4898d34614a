"""The progress display: periodic lines when stderr is not a terminal, one redrawn line when it is."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from flows.progress import Progress

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "data" / "events.jsonl"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_show_stage_rate_and_eta_and_stay_quiet_while_nothing_moves():
    out, clock = io.StringIO(), Clock()
    p = Progress(total=100, stream=out, tty=False, interval=10, quiet_after=60, clock=clock)
    p.stage("select")
    for second in range(1, 51):  # 2 events per second for 50 s
        clock.now = float(second)
        p.event()
        p.event()
        p.tick()
    clock.now = 100.0
    p.tick()  # nothing moved for 50 s: not yet quiet_after
    clock.now = 111.0
    p.tick()  # 61 s: a liveness line
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "edgetune: select 0/100 events"
    assert "edgetune: select 20/100 events, 2.0 ev/s, ETA 40 s" in lines
    assert len([line for line in lines if line.startswith("edgetune: select")]) == 1 + 5 + 1  # every 10 s, then one
    assert lines[-1] == "edgetune: done: 100 events in 111 s"
    assert "\r" not in out.getvalue()


def test_on_a_terminal_the_line_is_redrawn_in_place():
    out, clock = io.StringIO(), Clock()
    p = Progress(total=None, stream=out, tty=True, clock=clock)
    p.stage("select")
    clock.now = 2.0
    p.event()
    p.tick()
    p.close()
    text = out.getvalue()
    assert text.startswith("\redgetune: select 0 events") and "\redgetune: select 1 events, 0.5 ev/s" in text
    assert text.endswith("\n") and text.count("\n") == 1 and "ETA" not in text  # no total, no ETA


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_replay_with_stderr_a_pipe_prints_its_stages(tmp_path):
    done = run_cli("replay", str(EVENTS), "--split", "field", "--model", "tiny-random", "--metrics-port", "0",
                   "--window", "4", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("edgetune: ")]
    assert lines[0].startswith("edgetune: load model")
    assert any(line.startswith("edgetune: select ") for line in lines)
    train = [line for line in lines if line.startswith("edgetune: train run ")]
    assert train and "tok/s, ETA" in train[0]
    assert lines[-1].startswith("edgetune: done: ") and "training run(s)" in lines[-1]
    assert "arithmetic: " in done.stderr  # the dtype and thread choice is logged


def test_no_progress_prints_no_progress_lines(tmp_path):
    done = run_cli("replay", str(EVENTS), "--split", "field", "--model", "tiny-random", "--metrics-port", "0",
                   "--no-train", "--no-progress", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "edgetune: " not in done.stderr.replace("edgetune: stopped", "")
