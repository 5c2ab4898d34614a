"""A live Kafka run keeps disk at most output.flush_seconds behind: decision parts and buffer snapshots appear
while it runs, before any end of input; flows.stop ends it cleanly from another thread."""

from __future__ import annotations

import json
import threading
import time

import pytest
from bytewax.testing import run_main

from flows import stop
from flows.kafka_flow import build_flow
from flows.sinks import read_decisions
from tests.flows.test_kafka_flow import components, event, produce, settings_for, topics  # noqa: F401

pytestmark = pytest.mark.kafka


@pytest.fixture
def clean_stop():
    stop.reset()
    yield
    stop.reset()


def test_outputs_reach_disk_while_a_live_run_goes_on(kafka_broker, topics, components, tmp_path, clean_stop):
    out = tmp_path / "out"
    # No idle stop and fewer rows than flush_rows: only the time-based flush can write anything before the end.
    settings = settings_for(kafka_broker, topics, out, **{"kafka.idle_stop_s": None, "output.flush_seconds": 0.5,
                                                          "buffer.policy": "fifo", "buffer.capacity": 3})
    produce(kafka_broker, topics["events"], [event("eli", i) for i in range(5)])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_main(build_flow(settings, components))
        except BaseException as exc:  # reported below
            errors.append(exc)

    flow = threading.Thread(target=run, daemon=True)
    flow.start()
    seen_while_running = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and flow.is_alive():
        if (out / "buffers" / "eli.json").exists() and list((out / "decisions").glob("part-*.parquet")):
            seen_while_running = flow.is_alive()
            break
        time.sleep(0.1)
    stop.request_stop()
    flow.join(timeout=120)
    assert not flow.is_alive() and not errors, errors
    assert seen_while_running
    assert [r["event_id"] for r in read_decisions(out / "decisions").to_pylist()] == [f"eli-{i}" for i in range(5)]
    assert [s["event_id"] for s in json.loads((out / "buffers" / "eli.json").read_text())["samples"]] == ["eli-2", "eli-3", "eli-4"]
