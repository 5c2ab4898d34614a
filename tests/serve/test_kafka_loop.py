"""With a broker: served turns go to the conversations topic and feedback to the annotations topic, and the
Kafka flow (`edgetune run`) consumes them with no glue. Real Tansu broker, tiny random model."""

from __future__ import annotations

import json

import httpx
import pytest
from bytewax.testing import run_main

from flows.kafka_flow import build_flow
from flows.serve import Server
from flows.sinks import read_decisions
from flows.turns import KafkaTurns, emit_target
from models.adapters import AdapterStore
from models.lm import tiny_llama
from models.serving import AdapterPool
from operators.files import user_file_name
from tests.flows.test_kafka_flow import components, consume_all, settings_for, topics  # noqa: F401 (fixtures)
from tests.serve.helpers import running

pytestmark = pytest.mark.kafka


def test_served_turns_and_feedback_reach_the_kafka_flow(kafka_broker, topics, components, tmp_path):  # noqa: F811
    settings = settings_for(kafka_broker, topics, tmp_path, **{"serve.port": 0, "buffer.policy": "fifo",
                                                               "generate.max_new_tokens": 4})
    assert emit_target(settings) == "kafka"  # kafka.brokers is set: auto picks the broker
    model, tokenizer = tiny_llama(seed=0)
    server = Server(settings, AdapterPool(model, tokenizer, AdapterStore(settings.adapters_dir)), KafkaTurns(settings))
    with running(server, settings) as base:
        ids = []
        for prompt in ("How do I keep basil alive?", "Why does my bike chain squeak?"):
            reply = httpx.post(f"{base}/chat/completions", timeout=120, json={
                "model": "tiny-random", "user": "ann", "messages": [{"role": "user", "content": prompt}]}).json()
            ids.append(reply["id"])
        fb = httpx.post(f"{base}/feedback", json={"user": "ann", "id": ids[0], "preferred": "Water it daily."})
        assert fb.json()["annotation"] is True

    on_topic = consume_all(kafka_broker, topics["events"], expected=2)
    assert [e["event_id"] for e in sorted(on_topic, key=lambda e: e["ts"])] == ids
    assert all(e["meta"]["source"] == "serve" and "response" not in e for e in on_topic)
    (answer,) = consume_all(kafka_broker, topics["annotations"], expected=1)
    assert (answer["event_id"], answer["response"]) == (ids[0], "Water it daily.")

    run_main(build_flow(settings, components))  # what `edgetune run` runs
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    assert sorted(r["event_id"] for r in rows) == sorted(ids) and all(r["admitted"] for r in rows)
    buffered = json.loads((tmp_path / "buffers" / f"{user_file_name('ann')}.json").read_text())["samples"]
    assert {s["event_id"]: s["response"] for s in buffered} == {ids[0]: "Water it daily.", ids[1]: None}
    # ids[1] is asked about; ids[0] too if the flow read it before its answer (two topics: either order).
    asks = {a["event_id"] for a in consume_all(kafka_broker, topics["asks"], expected=2, timeout_s=5)}
    assert ids[1] in asks and asks <= set(ids)
