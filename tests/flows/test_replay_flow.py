"""End to end: replay files through the whole selection stream with the tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from bytewax.testing import run_main

from flows.replay_flow import build_flow
from flows.selection import build_components
from flows.sinks import read_decisions, read_jsonl
from operators.config import load_settings

DATA = Path(__file__).parent.parent / "data"
EVENTS = DATA / "events.jsonl"
REPO = Path(__file__).resolve().parents[2]


def settings_for(out: Path, **overrides):
    base = {
        "model.lm": "tiny-random",
        "metrics.port": 0,
        "output.dir": out,
        "source.path": EVENTS,
        "source.split": "field",
        "train.enabled": False,
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture(scope="module")
def components():
    return build_components(settings_for(Path("unused")))


def replay(components, out: Path, **overrides):
    settings = settings_for(out, **overrides)
    run_main(build_flow(settings, components))
    return settings


def snapshots(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["user_id"]: json.loads(p.read_text()) for p in (out / "buffers").glob("*.json")}


def test_every_event_is_decided_or_dead_lettered(components, tmp_path):
    replay(components, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 4})
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    dead = read_jsonl(tmp_path / "dead_letters.jsonl")
    # The replay's oracle answers every line that carries a response, also bad-2, whose event is rejected
    # (no prompt): that answer never finds its event, and is dead-lettered when the input ends.
    answers = [d for d in dead if d["reason"] == "unknown_event"]
    assert [(d["user_id"], d["event_id"]) for d in answers] == [("bob", "bad-2")]
    dead = [d for d in dead if d["reason"] != "unknown_event"]
    lines = EVENTS.read_bytes().splitlines()
    assert len(rows) + len(dead) == len([ln for ln in lines if ln.strip()])
    # The sample file holds one malformed line of each kind, written by hand.
    assert Counter(d["reason"] for d in dead) == Counter({
        "malformed_json": 1, "missing_field": 1, "wrong_type": 1, "empty_prompt": 1,
        "duplicate_event": 1, "invalid_utf8": 1, "not_an_object": 1, "bad_timestamp": 1,
    })
    dup = next(d for d in dead if d["reason"] == "duplicate_event")
    assert dup["user_id"] == "alice" and dup["event_id"] == "a-03"
    utf8 = next(d for d in dead if d["reason"] == "invalid_utf8")
    assert utf8["raw_encoding"] == "base64" and utf8["raw"]
    # FIFO keeps each user's newest four events.
    for user, snap in snapshots(tmp_path).items():
        mine = [r["event_id"] for r in rows if r["user_id"] == user]
        assert [s["event_id"] for s in snap["samples"]] == mine[-4:]
        assert snap["events_seen"] == len(mine)


def test_decision_log_columns_are_filled(components, tmp_path):
    replay(components, tmp_path, **{"buffer.capacity": 3})
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    assert {r["policy"] for r in rows} == {"sdss"}
    for r in rows:
        assert 0.0 <= r["eoe"] <= 1.0 and 0.0 <= r["dss"] <= 1.0
        assert r["idd"] is not None and 0.0 <= r["idd"] <= 2.0
        assert r["buffer_size"] <= 3 and r["n_tokens"] > 0
        assert r["outcome"] in {"admitted", "replaced", "rejected", "duplicate"}
        if r["evicted_id"] is not None:
            assert r["outcome"] == "replaced"
    per_user = Counter(r["user_id"] for r in rows)
    assert per_user == Counter({"alice": 10, "bob": 10, "carol": 10})


def test_same_seed_gives_same_decisions(components, tmp_path):
    def decisions(out, seed):
        replay(components, out, **{"buffer.policy": "random", "buffer.capacity": 3, "seed": seed})
        return [(r["event_id"], r["outcome"], r["evicted_id"]) for r in read_decisions(out / "decisions").to_pylist()]

    first, again = decisions(tmp_path / "a", 7), decisions(tmp_path / "b", 7)
    assert first == again
    others = [decisions(tmp_path / f"s{seed}", seed) for seed in (1, 2, 3)]
    assert any(o != first for o in others)


def test_oracle_answers_only_buffered_samples(components, tmp_path):
    replay(components, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 2,
                                    "annotation.replay_answers": "oracle", "annotation.answer_delay_events": 3})
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    asked = read_jsonl(tmp_path / "annotation_requests.jsonl")
    admitted = {(r["user_id"], r["event_id"]) for r in rows if r["admitted"]}
    answered_at_source = {(r["user_id"], r["event_id"]) for r in rows if r["labeled"]}
    assert not answered_at_source  # oracle mode withholds every response
    assert {(a["user_id"], a["event_id"]) for a in asked} == admitted
    # Answers arrive 3 records later; with 2 slots some samples were evicted before theirs came.
    for snap in snapshots(tmp_path).values():
        assert all(s["response"] for s in snap["samples"])


def test_bytewax_run_entry_point(tmp_path):
    env = dict(os.environ, EDGETUNE_MODEL__LM="tiny-random", EDGETUNE_METRICS__PORT="0",
               EDGETUNE_OUTPUT__DIR=str(tmp_path), EDGETUNE_SOURCE__PATH=str(EVENTS),
               EDGETUNE_SOURCE__SPLIT="field", EDGETUNE_TRAIN__ENABLED="false")
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.replay_flow:flow"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_decisions(tmp_path / "decisions").num_rows == 30


@pytest.mark.parametrize("command", [[], ["config"], ["replay"], ["run"], ["summary"], ["forget"]])
def test_cli_help(command):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: edgetune" in proc.stdout


def test_replay_trains_versioned_adapters_per_user(components, tmp_path):
    from flows.trainer import trainer_for
    from models.adapters import AdapterStore

    settings = settings_for(tmp_path, **{
        "train.enabled": True, "train.window_events": 4, "train.max_steps": 1, "train.max_seq_len": 64,
        "train.probe_every": 4, "synth.k": 0, "buffer.capacity": 6, "annotation.replay_answers": "oracle",
        "annotation.answer_delay_events": 1,
    })
    from prometheus_client import REGISTRY

    def windows(trigger):
        return REGISTRY.get_sample_value("edgetune_train_windows_total", {"trigger": trigger}) or 0.0

    before = {t: windows(t) for t in ("events", "end_of_input")}
    sink = trainer_for(settings, components)
    run_main(build_flow(settings, components, trainer_sink=sink))
    sink.service.close()
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    own = {u: {r["event_id"] for r in rows if r["user_id"] == u} for u in ("alice", "bob", "carol")}
    assert windows("events") - before["events"] == sum(len(ids) // 4 for ids in own.values())
    assert windows("end_of_input") - before["end_of_input"] == sum(len(ids) % 4 > 0 for ids in own.values())
    store = AdapterStore(settings.adapters_dir)
    assert store.users() == ["alice", "bob", "carol"]
    for user, ids in own.items():
        manifests = store.list(user)
        assert manifests, user
        for m in manifests:
            assert set(m.sample_ids) <= ids  # A's adapter saw only A's events
            assert m.base_model == "tiny-random" and m.status in {"promoted", "rejected"}


def test_a_training_run_left_pending_by_a_stopped_process_runs_when_the_flow_starts_again(components, tmp_path):
    from flows.trainer import PENDING_DIR, trainer_for
    from models.adapters import AdapterStore
    from operators.pending import PendingRuns

    settings = settings_for(tmp_path, **{
        "train.enabled": True, "train.window_events": 10_000, "train.train_on_eof": False, "train.max_steps": 1,
        "train.max_seq_len": 64, "train.probe_every": 4, "synth.k": 0,
    })
    # What a process that stopped while dave's window waited for the trainer leaves behind.
    samples = [{"event_id": f"d{i}", "prompt": f"question {i}", "response": f"answer {i}", "domain": "general"}
               for i in range(6)]
    PendingRuns(settings.adapters_dir / PENDING_DIR).put(
        {"user_id": "dave", "window": 3, "events_seen": 900, "trigger": "events", "samples": samples})
    sink = trainer_for(settings, components)
    run_main(build_flow(settings, components, trainer_sink=sink))
    sink.service.close()
    store = AdapterStore(settings.adapters_dir)
    assert store.users() == ["dave"]  # no window of this replay closes, so only the resumed run trained
    (manifest,) = store.list("dave")
    assert set(manifest.sample_ids) | set(manifest.probe_ids) == {s["event_id"] for s in samples}
    assert PendingRuns(settings.adapters_dir / PENDING_DIR).load() == []


def test_event_time_windows_close_where_each_users_event_clock_crosses_a_boundary(components, tmp_path):
    from bytewax.testing import TestingSink

    requests: list[dict] = []
    settings = settings_for(tmp_path, **{"train.enabled": True, "train.window_events": 0, "train.window_seconds": 600,
                                         "buffer.policy": "fifo", "buffer.capacity": 4})
    run_main(build_flow(settings, components, trainer_sink=TestingSink(requests)))
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    expected = []
    for user in ("alice", "bob", "carol"):
        own = [r for r in rows if r["user_id"] == user]  # decision order is the user's arrival order
        newest_window = None
        for seen, r in enumerate(own):  # naive: a close before each event whose 10-minute slot is past every earlier one
            slot = r["ts_ms"] // 600_000
            if newest_window is not None and slot > newest_window:
                expected.append((user, seen, "event_time"))
            newest_window = slot if newest_window is None else max(newest_window, slot)
        expected.append((user, len(own), "end_of_input"))
    got = [(r["user_id"], r["events_seen"], r["trigger"]) for r in requests]
    assert sorted(got) == sorted(expected)
    assert sum(t == "event_time" for _, _, t in got) >= 3  # the sample file spans ~30 minutes per user


def test_metrics_count_what_the_flow_did(components, tmp_path):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {r: value("edgetune_dead_letters_total", reason=r) for r in ("malformed_json", "duplicate_event")}
    admitted_before = value("edgetune_events_total", outcome="admitted")
    requests_before = value("edgetune_annotation_requests_total")
    replay(components, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 4, "annotation.replay_answers": "oracle"})
    assert value("edgetune_dead_letters_total", reason="malformed_json") == before["malformed_json"] + 1
    assert value("edgetune_dead_letters_total", reason="duplicate_event") == before["duplicate_event"] + 1
    assert value("edgetune_events_total", outcome="admitted") == admitted_before + 12  # 3 users x 4 free slots
    assert value("edgetune_annotation_requests_total") == requests_before + 30  # fifo admits every event


@pytest.mark.real_model
def test_replay_with_the_real_model(tmp_path):
    settings = load_settings(**{"metrics.port": 0, "output.dir": tmp_path, "source.dataset": "chitchat", "source.limit": 24,
                                "source.users": 2, "buffer.capacity": 8, "train.enabled": False, "embed.max_tokens": 128})
    run_main(build_flow(settings))
    rows = read_decisions(tmp_path / "decisions").to_pylist()
    assert len(rows) == 24 and {r["user_id"] for r in rows} == {"user-0", "user-1"}
    assert all(0 < r["eoe"] <= 1 for r in rows)
    assert any(r["outcome"] in ("replaced", "rejected", "duplicate") for r in rows)  # 12 events per user, 8 slots
    assert any(r["domain"] != "general" for r in rows)
