"""The whole loop in one process, as a person runs it: `edgetune serve --with-stream`.

Chat through the openai client, answer the annotation requests the stream raises about
the served turns (one in place, one by a thumbs-up), let a training window close, and the
next answer comes from the user's new adapter, without a restart; the metrics show each
step. The tiny random model stands in for SmolLM2 (answers' quality does not matter here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from models.adapters import AdapterStore
from operators.files import user_file_name

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"edgetune serve exited ({proc.returncode}) waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-4000:]}")


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_serve_with_stream_closes_the_loop(tmp_path):
    out, log = tmp_path / "out", tmp_path / "serve.log"
    metrics_port = _free_port()
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--with-stream", "--model", "tiny-random", "--out", str(out),
           "--port", "0", "--metrics-port", str(metrics_port), "--policy", "fifo", "--window", "3",
           "--train.probe-every", "1000", "--output.flush-seconds", "0.3", "--max-new-tokens", "6", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = _wait(lambda: (m := re.search(r"edgetune serve: (http://127\.0\.0\.1:\d+/v1)", log.read_text()))
                    and m.group(1), "the server to listen", 180, proc, log)
        client = openai.OpenAI(base_url=url, api_key="unused-on-loopback", max_retries=0, timeout=120)

        def ask(prompt: str):
            return client.chat.completions.create(model="tiny-random", user="ann",
                                                  messages=[{"role": "user", "content": prompt}])

        first = ask("How do I water a cactus in winter?")
        second = ask("Which bread flour makes the best sourdough?")
        assert first.model_extra["adapter_version"] is None  # no adapter yet: the base model

        # The stream admitted both served turns and asks about them.
        def open_requests():
            listed = httpx.get(f"{url}/annotation-requests", params={"user": "ann"}).json()["requests"]
            return listed if {r["id"] for r in listed} == {first.id, second.id} else None

        requests = _wait(open_requests, "two annotation requests", 120, proc, log)
        assert {r["prompt"] for r in requests} == {"How do I water a cactus in winter?",
                                                    "Which bread flour makes the best sourdough?"}
        answered = httpx.post(f"{url}/annotation-requests/{first.id}/answer",
                              json={"user": "ann", "response": "Rarely: once a month at most."})
        assert answered.status_code == 200
        given = second.choices[0].message.content
        vote = {"rating": "up"} if given.strip() else {"preferred": "A strong bread flour."}
        assert httpx.post(f"{url}/feedback", json={"user": "ann", "id": second.id, **vote}).json()["annotation"]

        snapshot = out / "buffers" / f"{user_file_name('ann')}.json"

        def both_attached():
            try:
                samples = json.loads(snapshot.read_text())["samples"]
            except (FileNotFoundError, ValueError):
                return None
            return all(s["response"] for s in samples) and len(samples) == 2

        _wait(both_attached, "both answers attached to the buffered turns", 120, proc, log)
        ask("What is a good first houseplant?")  # the third event closes ann's training window
        store = AdapterStore(out / "adapters")
        _wait(lambda: store.latest("ann") == 1, "ann's first adapter to be trained and promoted", 300, proc, log)
        after = ask("How do I water a cactus in winter?")
        assert after.model_extra["adapter_version"] == 1 and after.system_fingerprint == "edgetune-v1"
        (manifest,) = store.list("ann")
        assert sorted(manifest.sample_ids) == sorted([first.id, second.id])  # trained on the answered served turns

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert _metric(text, "edgetune_serve_turns_total", outcome="emitted") == 4
        assert _metric(text, "edgetune_serve_answers_total", model="adapter") == 1
        assert _metric(text, "edgetune_serve_feedback_total", outcome="annotation") == 2
        assert _metric(text, "edgetune_annotation_requests_total") >= 2
        assert _metric(text, "edgetune_annotations_total", status="attached") == 2
        assert _metric(text, "edgetune_train_runs_total", outcome="promoted") == 1
        assert _metric(text, "edgetune_serve_adapter_version", user="ann") == 1
        assert _metric(text, "edgetune_serve_requests_total", route="/v1/chat/completions", status="200") == 4
        assert _metric(text, "edgetune_serve_requests_total", route="/v1/annotation-requests/{id}/answer",
                       status="200") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"edgetune serve did not stop on SIGTERM:\n{log.read_text()[-4000:]}")
    assert code == 3, log.read_text()[-4000:]  # stopped by a signal after flushing
    assert "Cactus" not in log.read_text() and "cactus" not in log.read_text()  # no conversation text in the log
