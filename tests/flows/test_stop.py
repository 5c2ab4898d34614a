"""SIGINT and SIGTERM to `edgetune replay`: the batch in flight is finished, outputs are flushed, the summary is
printed, the exit code is flows.stop.EXIT_STOPPED, and a restart ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.sinks import read_decisions
from flows.stop import EXIT_STOPPED

REPO = Path(__file__).resolve().parents[2]
# Columns that depend on the run, not on the stream (seconds spent per stage).
TIMING = {"embed_seconds", "score_seconds", "select_seconds"}


def write_events(path: Path, n: int = 80) -> Path:
    topics = ["garden", "code", "bike", "bread", "taxes"]
    with path.open("w") as fh:
        for i in range(n):
            user = ("ann", "ben")[i % 2]
            fh.write(json.dumps({"event_id": f"{user}-{i}", "user_id": user, "ts": 1_700_000_000_000 + i * 1000,
                                 "prompt": f"Question {i}: how do I look after my {topics[i % 5]}?",
                                 "response": f"Answer {i} about {topics[i % 5]}."}) + "\n")
    return path


def command(events: Path, out: Path, recovery: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "replay", str(events), "--split", "field", "--model", "tiny-random",
            "--no-train", "--policy", "fifo", "--capacity", "6", "--metrics-port", "0", "--no-progress",
            "--answers", "keep", "--limit", "1000",
            # fp32: the scores are compared to 1e-4 across different batchings (a restart re-batches the
            # stream), and bf16 rounding depends on the batch more than that (decisions stay the same).
            "--dtype", "fp32",
            "--out", str(out), "--recovery-dir", str(recovery), "--epoch-seconds", "0.2", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "EDGETUNE_OUTPUT__FLUSH_ROWS": "1"}


def decisions(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_decisions(out / "decisions").to_pylist()]


def users_decided(out: Path) -> set[str]:
    if not list((out / "decisions").glob("part-*.parquet")):
        return set()
    return {r["user_id"] for r in decisions(out)}


def buffers(out: Path) -> dict[str, list[str]]:
    return {p.stem: [s["event_id"] for s in json.loads(p.read_text())["samples"]] for p in (out / "buffers").glob("*.json")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("whole")
    events = write_events(tmp / "events.jsonl")
    done = subprocess.run(command(events, tmp / "out", tmp / "rec"), cwd=REPO, env=environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return events, tmp / "out"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_and_a_restart_matches_an_uninterrupted_run(uninterrupted, tmp_path, sig):
    events, whole = uninterrupted
    out, recovery = tmp_path / "out", tmp_path / "rec"
    proc = subprocess.Popen(command(events, out, recovery, "--rate", "8"), cwd=REPO, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the stream has decided something for both users, so the stop comes mid-run and each
        # user has a buffer to snapshot.
        deadline = time.monotonic() + 300
        while users_decided(out) != {"ann", "ben"} and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STOPPED, stderr[-3000:]
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert "events decided" in stdout and "stopped by a signal" in stdout
    stopped = decisions(out)
    assert 0 < len(stopped) < 80  # stopped partway
    assert set(buffers(out)) == {r["user_id"] for r in stopped} == {"ann", "ben"}  # snapshots written at the stop

    again = subprocess.run(command(events, out, recovery), cwd=REPO, env=environment(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_decisions(decisions(out), decisions(whole))
    assert buffers(out) == buffers(whole)


def assert_same_decisions(got: list[dict], want: list[dict]) -> None:
    """Same rows, fields equal; scores to float noise (the paced run embeds in other batch sizes than the
    uninterrupted one, and padding moves the last decimals of a hidden state)."""
    assert [(r["user_id"], r["event_id"]) for r in got] == [(r["user_id"], r["event_id"]) for r in want]
    for g, w in zip(got, want):
        exact = {k: v for k, v in g.items() if not isinstance(v, float)}
        assert exact == {k: w[k] for k in exact}, (g, w)
        for k, v in g.items():
            if isinstance(v, float):
                assert v == pytest.approx(w[k], rel=1e-4, abs=1e-6), (k, g, w)


# --- a stop while training requests wait: they stay journaled, the next start trains them ----------------------

TRAINED = ("ann", "ben", "cem", "dan", "eve")  # one training window each, closed at the start of the stream
WINDOW = 4


def write_training_events(path: Path, fillers: int = 60) -> Path:
    """Each trained user's 4 events first (one window each), then users with 3 events each, who close no window.

    The fillers keep a paced replay going after every window has closed, so the stop comes while the stream runs.
    """
    with path.open("w") as fh:
        users = [(u, WINDOW) for u in TRAINED] + [(f"f{k:02d}", WINDOW - 1) for k in range(fillers)]
        for user, n in users:
            for i in range(n):
                fh.write(json.dumps({"event_id": f"{user}-{i}", "user_id": user, "ts": 1_700_000_000_000 + i * 1000,
                                     "prompt": f"Question {i} from {user}: how do I look after my garden?",
                                     "response": f"Answer {i} for {user}: water it weekly."}) + "\n")
    return path


def training_command(events: Path, out: Path, recovery: Path, *extra: str) -> list[str]:
    # 300 steps: a run takes seconds on tiny-random, while the 5 windows close within the first 20 events, so the
    # queue holds the others while the first trains (the assertions hold whatever the timing; only a stop that
    # comes after most runs ended would fail "len(left) >= 2").
    return [sys.executable, "-m", "flows.cli", "replay", str(events), "--split", "field", "--model", "tiny-random",
            "--policy", "fifo", "--capacity", "6", "--metrics-port", "0", "--no-progress", "--answers", "keep",
            "--all", "--dtype", "fp32", "--torch-threads", "1", "--train.window-events", str(WINDOW),
            "--no-train.train-on-eof", "--train.max-steps", "300", "--train.batch-size", "2",
            "--out", str(out), "--recovery-dir", str(recovery), "--epoch-seconds", "0.2", *extra]


def journaled(out: Path) -> list[Path]:
    folder = out / "adapters" / ".pending"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def versions(out: Path) -> dict[str, list[int]]:
    from models.adapters import AdapterStore

    store = AdapterStore(out / "adapters")
    return {user: [m.version for m in store.list(user)] for user in store.users()}


def test_a_stop_leaves_queued_training_journaled_and_the_next_start_trains_it(tmp_path):
    events = write_training_events(tmp_path / "events.jsonl")
    whole = subprocess.run(training_command(events, tmp_path / "whole", tmp_path / "whole-rec"), cwd=REPO,
                           env=environment(), capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    want = versions(tmp_path / "whole")
    assert set(want) == set(TRAINED) and all(len(v) == 1 for v in want.values()), want  # one window each, trained
    assert journaled(tmp_path / "whole") == []

    out, recovery = tmp_path / "out", tmp_path / "rec"
    proc = subprocess.Popen(training_command(events, out, recovery, "--rate", "10"), cwd=REPO, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Every window closed and journaled (the one in training included), none trained yet: stop now.
        deadline = time.monotonic() + 600
        while len(journaled(out)) < len(TRAINED) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        assert len(journaled(out)) == len(TRAINED)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STOPPED, stderr[-3000:]
    assert "stopped by a signal" in stdout and "Traceback" not in stderr, stderr[-3000:]
    left = journaled(out)
    trained = versions(out)
    # The stop finished at most the run in progress (and one that started before the signal was seen);
    # every other request is still in the journal, none was lost.
    assert len(left) >= 2, (left, trained)
    assert sum(len(v) for v in trained.values()) + len(left) == len(TRAINED), (left, trained)
    assert "training request(s) left journaled for the next start" in stderr
    assert 0 < len(decisions(out)) < len(events.read_text().splitlines())  # the stream was stopped partway

    again = subprocess.run(training_command(events, out, recovery), cwd=REPO, env=environment(),
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("resuming training for user") == len(left), again.stderr[-3000:]
    assert {u: len(v) for u, v in versions(out).items()} == {u: len(v) for u, v in want.items()}
    assert journaled(out) == []
