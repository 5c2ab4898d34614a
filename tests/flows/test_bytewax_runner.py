"""`python -m bytewax.run flows.replay_flow:flow` (and `flows.kafka_flow:flow`) has what `edgetune replay` (`run`)
has: INFO logs, the Prometheus exporter on EDGETUNE_METRICS__PORT, and a clean stop on SIGINT (SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


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
    run_scrape_and_stop("flows.replay_flow:flow", env, port, signal.SIGINT, tmp_path)


@pytest.mark.kafka
def test_the_bytewax_runner_runs_the_kafka_flow_with_logs_and_metrics(kafka_broker, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    from flows.kafka import ensure_topics
    from tests.flows.test_kafka_flow import event

    base = f"runner{os.getpid()}x{time.monotonic_ns() % 10**9}"
    topics = {kind: f"{base}.{kind}" for kind in ("events", "annotations", "dead", "asks")}
    ensure_topics((kafka_broker.bootstrap,), {name: 1 for name in topics.values()})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for i in range(6):
        producer.send(topics["events"], value=event("ann", i))
    producer.flush()
    producer.close()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGETUNE_MODEL__LM": "tiny-random",
           "EDGETUNE_TRAIN__ENABLED": "false", "EDGETUNE_METRICS__PORT": str(port),
           "EDGETUNE_OUTPUT__DIR": str(tmp_path / "out"), "EDGETUNE_KAFKA__BROKERS": kafka_broker.bootstrap,
           "EDGETUNE_KAFKA__EVENTS_TOPIC": topics["events"], "EDGETUNE_KAFKA__ANNOTATIONS_TOPIC": topics["annotations"],
           "EDGETUNE_KAFKA__DEAD_LETTER_TOPIC": topics["dead"], "EDGETUNE_KAFKA__REQUESTS_TOPIC": topics["asks"]}
    run_scrape_and_stop("flows.kafka_flow:flow", env, port, signal.SIGTERM, tmp_path)


def run_scrape_and_stop(flow: str, env: dict, port: int, sig: signal.Signals, tmp_path: Path) -> None:
    """Run ``flow`` under Bytewax's runner until its exporter counts events, stop it with ``sig``, check what it left."""
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", flow], cwd=REPO, env=env,
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
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "edgetune_events_total{" in scraped, stderr[-3000:]
    assert "INFO edgetune building the flow" in stderr
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 0, stderr[-3000:]
    assert (tmp_path / "out" / "buffers").is_dir()


def test_two_processes_of_a_cluster_with_one_environment_each_serve_metrics_on_their_own_port(tmp_path: Path) -> None:
    """``-i0``/``-i1`` with the same EDGETUNE_METRICS__PORT: process i serves on port + i, both answer a scrape."""
    base = free_port()
    while True:  # base and base + 1 both free
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            base = free_port()
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGETUNE_MODEL__LM": "tiny-random",
           "EDGETUNE_SOURCE__PATH": str(REPO / "tests" / "data" / "events.jsonl"), "EDGETUNE_SOURCE__SPLIT": "field",
           "EDGETUNE_SOURCE__RATE": "2", "EDGETUNE_TRAIN__ENABLED": "false", "EDGETUNE_METRICS__PORT": str(base),
           "EDGETUNE_OUTPUT__DIR": str(tmp_path / "out")}
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.replay_flow:flow", f"-i{i}", "-a", addresses],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    scraped = {0: "", 1: ""}
    errors = {}
    try:
        deadline = time.monotonic() + 300
        while not all("edgetune_events_total" in text for text in scraped.values()) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-3000:] for p in procs]
            for i in (0, 1):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{base + i}/metrics", timeout=2) as r:
                        scraped[i] = r.read().decode()
                except OSError:
                    pass
            time.sleep(0.3)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for i, p in enumerate(procs):
            errors[i] = p.communicate(timeout=300)[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i in (0, 1):
        assert "edgetune_events_total" in scraped[i], (i, errors.get(i, "")[-3000:])
        assert f"metrics port {base + i}" in errors[i], errors[i][-3000:]
        assert "cannot listen" not in errors[i] and "Traceback" not in errors[i], errors[i][-3000:]
