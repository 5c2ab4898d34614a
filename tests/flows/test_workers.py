"""More workers, the same result (issue 13's preamble): `edgetune replay --workers 2`, `python -m bytewax.run
flows.replay_flow:flow -w 2` and two processes of one cluster (`-i0`/`-i1 -a ...`) decide every event as one
worker does and leave the same buffers.

Each user's state lives on one worker (the stream is keyed by user), so the decisions must not depend on the
worker count. Scores are compared to 1e-4: the workers embed in other batch sizes, and padding moves the last
decimals (fp32 pinned, as in test_stop).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.test_stop import assert_same_decisions, decisions

REPO = Path(__file__).resolve().parents[2]
USERS = ("ann", "ben", "cem", "dan", "eve", "fay")  # enough that both workers hold users
SETTINGS = {"EDGETUNE_MODEL__LM": "tiny-random", "EDGETUNE_MODEL__DTYPE": "fp32",
            "EDGETUNE_SOURCE__SPLIT": "field", "EDGETUNE_SOURCE__LIMIT": "1000", "EDGETUNE_TRAIN__ENABLED": "false",
            "EDGETUNE_BUFFER__POLICY": "fifo", "EDGETUNE_BUFFER__CAPACITY": "4", "EDGETUNE_METRICS__PORT": "0"}


def write_events(path: Path) -> Path:
    """12 events per user, interleaved; a malformed line and a repeated event among them."""
    topics = ["garden", "code", "bike", "bread", "taxes", "knee", "rent"]
    with path.open("w") as fh:
        for i in range(12):
            for k, user in enumerate(USERS):
                t = topics[(i * 3 + k) % len(topics)]
                line = {"event_id": f"{user}-{i}", "user_id": user, "ts": 1_700_000_000_000 + i * 60_000 + k,
                        "prompt": f"Question {i} from {user}: how do I look after my {t}?"}
                if (i + k) % 3:
                    line["response"] = f"Answer {i}: keep notes on the {t}, {user}."
                fh.write(json.dumps(line) + "\n")
            if i == 5:
                fh.write('{"event_id": "bad", "user_id": \n')
                fh.write(json.dumps({"event_id": "ann-0", "user_id": "ann", "ts": 1_700_000_000_000,
                                     "prompt": "Question 0 from ann: how do I look after my garden?"}) + "\n")
    return path


def run(command: list[str], out: Path) -> Path:
    events = write_events(out.parent / "events.jsonl")
    env = {**os.environ, "PYTHONPATH": str(REPO), **SETTINGS, "EDGETUNE_OUTPUT__DIR": str(out),
           "EDGETUNE_SOURCE__PATH": str(events)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def by_user(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["user_id"], r["seq"]))


def buffers(out: Path) -> dict[str, list]:
    return {p.stem: [(s["event_id"], s["prompt"], s["response"]) for s in json.loads(p.read_text())["samples"]]
            for p in sorted((out / "buffers").glob("*.json"))}


def jsonl(out: Path, name: str) -> list[str]:
    """Every line of ``name`` and of its per-worker files (``name.w<N>.jsonl``), without ``source``, sorted."""
    lines = []
    for path in sorted(out.glob(f"{name}*.jsonl")):
        lines.extend(json.dumps({k: v for k, v in json.loads(line).items() if k != "source"}, sort_keys=True)
                     for line in path.read_text().split("\n") if line)
    return sorted(lines)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> Path:
    out = run([sys.executable, "-m", "flows.cli", "replay", "--no-progress"], tmp_path_factory.mktemp("w1") / "out")
    assert len(decisions(out)) == 12 * len(USERS) and set(buffers(out)) == set(USERS)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cluster(out: Path) -> Path:
    """Two processes of one Bytewax cluster (``-i0``/``-i1``), one environment, one output folder."""
    events = write_events(out.parent / "events.jsonl")
    env = {**os.environ, "PYTHONPATH": str(REPO), **SETTINGS, "EDGETUNE_OUTPUT__DIR": str(out),
           "EDGETUNE_SOURCE__PATH": str(events)}
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.replay_flow:flow", f"-i{i}", "-a", addresses],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    try:
        errors = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for e in errors]
    return out


@pytest.mark.parametrize("how", ["cli --workers 2", "bytewax.run -w 2", "bytewax.run -i0/-i1"])
def test_two_workers_decide_and_buffer_as_one_does(one_worker, tmp_path, how):
    if how.startswith("cli"):
        out = run([sys.executable, "-m", "flows.cli", "replay", "--no-progress", "--workers", "2"], tmp_path / "out")
    elif "-w" in how:
        out = run([sys.executable, "-m", "bytewax.run", "flows.replay_flow:flow", "-w", "2"], tmp_path / "out")
    else:
        out = run_cluster(tmp_path / "out")
    assert_same_decisions(by_user(decisions(out)), by_user(decisions(one_worker)))
    assert buffers(out) == buffers(one_worker)
    assert jsonl(out, "dead_letters") == jsonl(one_worker, "dead_letters")
    assert len(jsonl(out, "dead_letters")) == 2  # the malformed line and the repeat
    assert jsonl(out, "annotation_requests") == jsonl(one_worker, "annotation_requests")
    # Both workers held users (the per-worker files of worker 1 are not empty).
    assert (out / "annotation_requests.w1.jsonl").stat().st_size > 0


@pytest.mark.kafka
def test_edgetune_run_over_kafka_with_two_workers_decides_and_buffers_as_one_worker(kafka_broker, tmp_path):
    """The same events on a 2-partition topic of the real broker, read by `edgetune run` with 1 and 2 workers."""
    import uuid

    from kafka import KafkaProducer

    from flows.kafka import ensure_topics
    from tests.deployment import Deployment

    lines = write_events(tmp_path / "events.jsonl").read_text().split("\n")
    outs = {}
    for workers in (1, 2):
        base = f"workers.{uuid.uuid4().hex[:8]}"
        topics = {kind: f"{base}.{kind}" for kind in ("events", "annotations", "dead", "asks")}
        ensure_topics((kafka_broker.bootstrap,), {name: 2 for name in topics.values()})
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        for line in filter(None, lines):
            user = json.loads(line)["user_id"] if line.endswith("}") else "ann"
            producer.send(topics["events"], key=user.encode(), value=line.encode(), partition=USERS.index(user) % 2)
        producer.flush()
        producer.close()
        env = {**SETTINGS, "EDGETUNE_KAFKA__IDLE_STOP_S": "3"}
        dep = Deployment(kafka_broker.bootstrap, topics, tmp_path / f"w{workers}", "--workers", str(workers), env=env)
        try:
            dep.start()
            assert dep.wait_exit(600) == 0, dep.stderr()[-3000:]
        finally:
            dep.close()
        outs[workers] = dep.out
    assert len(decisions(outs[1])) == 12 * len(USERS)
    assert_same_decisions(by_user(decisions(outs[2])), by_user(decisions(outs[1])))
    assert buffers(outs[2]) == buffers(outs[1])
    assert jsonl(outs[2], "annotation_requests") == jsonl(outs[1], "annotation_requests")
    assert len(jsonl(outs[2], "dead_letters")) == len(jsonl(outs[1], "dead_letters")) == 2
    assert (outs[2] / "annotation_requests.w1.jsonl").stat().st_size > 0  # both workers held users
