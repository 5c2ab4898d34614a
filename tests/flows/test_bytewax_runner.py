"""`python -m bytewax.run flows.replay_flow:flow` has what `edgetune replay` has: INFO logs, the Prometheus
exporter on EDGETUNE_METRICS__PORT, and a clean stop on SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_bytewax_runner_logs_serves_metrics_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGETUNE_MODEL__LM": "tiny-random",
           "EDGETUNE_SOURCE__PATH": str(REPO / "tests" / "data" / "events.jsonl"), "EDGETUNE_SOURCE__SPLIT": "field",
           "EDGETUNE_SOURCE__RATE": "2", "EDGETUNE_TRAIN__ENABLED": "false", "EDGETUNE_METRICS__PORT": str(port),
           "EDGETUNE_OUTPUT__DIR": str(tmp_path / "out")}
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.replay_flow:flow"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scraped = ""
    try:
        deadline = time.monotonic() + 300
        while "edgetune_events_total{" not in scraped and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    scraped = r.read().decode()
            except OSError:
                pass
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "edgetune_events_total{" in scraped, stderr[-3000:]
    assert "INFO edgetune building the flow" in stderr
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 0, stderr[-3000:]
    assert (tmp_path / "out" / "buffers").is_dir()
