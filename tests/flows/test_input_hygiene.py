"""Control characters and NFC through the whole replay flow: dead-lettered, or stripped when configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bytewax.testing import run_main

from flows.replay_flow import build_flow
from flows.selection import build_components
from flows.sinks import read_decisions, read_jsonl
from operators.config import load_settings


def settings_for(out: Path, events: Path, **overrides):
    return load_settings(**{"model.lm": "tiny-random", "metrics.port": 0, "output.dir": out, "source.path": events,
                            "source.split": "field", "train.enabled": False, "buffer.policy": "fifo",
                            "annotation.replay_answers": "keep", **overrides})


@pytest.fixture(scope="module")
def components():
    return build_components(settings_for(Path("unused"), Path("unused.jsonl")))


@pytest.mark.parametrize("mode", ["reject", "strip"])
def test_control_characters_never_reach_a_buffer(components, tmp_path, mode):
    events = tmp_path / "events.jsonl"
    prompts = ["plain question", "nul\x00inside", "escape \x1b[31mred", "cafe\u0301 order"]
    events.write_text("".join(json.dumps({"event_id": f"e{i}", "user_id": "ann", "ts": i, "prompt": p}) + "\n"
                              for i, p in enumerate(prompts)))
    run_main(build_flow(settings_for(tmp_path / "out", events, **{"source.control_chars": mode}), components))
    buffered = json.loads(next((tmp_path / "out" / "buffers").glob("*.json")).read_text())["samples"]
    dead = read_jsonl(tmp_path / "out" / "dead_letters.jsonl") if (tmp_path / "out" / "dead_letters.jsonl").exists() else []
    decided = {r["event_id"] for r in read_decisions(tmp_path / "out" / "decisions").to_pylist()}
    texts = {s["event_id"]: s["prompt"] for s in buffered}
    assert texts["e3"] == "caf\u00e9 order"
    if mode == "reject":
        assert sorted((d["event_id"], d["reason"]) for d in dead) == [("e1", "control_chars"), ("e2", "control_chars")]
        assert decided == {"e0", "e3"}
    else:
        assert dead == [] and decided == {"e0", "e1", "e2", "e3"}
        assert (texts["e1"], texts["e2"]) == ("nulinside", "escape [31mred")
