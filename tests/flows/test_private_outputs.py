"""No output that may hold user text is readable by group or others: the whole output tree is walked after a
replay with training (tiny model) and after a Kafka run, recovery stores included."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.test_kafka_flow import event, produce, topics  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "data" / "events.jsonl"


def open_to_others(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                mode = stat.S_IMODE(os.lstat(name).st_mode)
                if mode & 0o077:
                    found.append(f"{oct(mode)} {os.path.relpath(name, root)}")
    return found


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # umask 0: only the modes edgetune sets explicitly can keep files private.
    return subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0); from flows.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_replay_with_training_writes_nothing_others_can_read(tmp_path: Path) -> None:
    out, recovery = tmp_path / "out", tmp_path / "rec"
    done = run_cli("replay", str(EVENTS), "--split", "field", "--model", "tiny-random", "--metrics-port", "0",
                   "--no-progress", "--heldout", "0.3", "--window", "4", "--out", str(out), "--recovery-dir", str(recovery))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "heldout.jsonl").exists() and (out / "dead_letters.jsonl").exists()
    assert list((out / "adapters").rglob("*.safetensors"))  # training ran
    assert open_to_others(out, recovery) == []


@pytest.mark.kafka
def test_a_kafka_run_writes_nothing_others_can_read(kafka_broker, topics, tmp_path: Path) -> None:
    produce(kafka_broker, topics["events"], [event(u, i) for i in range(4) for u in ("ann", "ben")] + [b"{bad"])
    out, recovery = tmp_path / "out", tmp_path / "rec"
    done = run_cli("run", "--kafka", kafka_broker.bootstrap, "--events-topic", topics["events"],
                   "--dead-letter-topic", topics["dead"], "--idle-stop", "2", "--model", "tiny-random",
                   "--no-train", "--metrics-port", "0", "--no-progress", "--out", str(out),
                   "--recovery-dir", str(recovery), "--config", str(_config(tmp_path, topics)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "dead_letters.jsonl").exists() and (out / "annotation_requests.jsonl").exists()
    assert open_to_others(out, recovery) == []


def _config(tmp_path: Path, topics: dict[str, str]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"kafka:\n  annotations_topic: {topics['annotations']}\n  requests_topic: {topics['asks']}\n")
    return path
