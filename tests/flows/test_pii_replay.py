"""PII end to end: after a replay with training, held-out events and a recovery store, no file of the
output or recovery tree holds any of the PII the input carried; metrics count it per kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bytewax.testing import run_main

from flows.outputs import read_jsonl_file
from flows.replay_flow import build_flow
from flows.selection import build_components
from flows.sinks import read_jsonl
from operators.config import load_settings
from operators.heldout import is_heldout
from tests.mentions import mentions

REPO = Path(__file__).resolve().parents[2]

EMAIL, PHONE, CARD = "ann.lee@example.org", "(415) 555-0132", "4111 1111 1111 1111"
IBAN, ADDRESS = "GB82 WEST 1234 5698 7654 32", "221B Baker Street"
# Each piece as written, and the forms a careless sink could turn it into (digits run together).
LEAKS = (EMAIL, "ann.lee@", PHONE, "555-0132", "4155550132", CARD, "4111111111111111", IBAN, "GB82WEST",
         ADDRESS, "Baker Street")


def _event(i: int, user: str, prompt: str, response: str, **extra) -> bytes:
    return json.dumps({"event_id": f"{user}-{i:02d}", "user_id": user, "ts": 1_709_283_600_000 + 60_000 * i,
                       "prompt": prompt, "response": response, **extra}).encode()


PII_EVENTS = [
    _event(1, "ann", f"My e-mail is {EMAIL}, can you fix my signature?", f"Sure: Ann Lee, {EMAIL}"),
    _event(2, "ben", f"Call me at {PHONE} about the order", f"I will call {PHONE} at noon"),
    _event(3, "ann", f"Is card {CARD} still valid?", f"Check the card {CARD} with your bank"),
    _event(4, "ben", f"Send the refund to {IBAN} please", f"Refund to {IBAN} is on its way"),
    _event(5, "ann", f"Deliver the parcel to {ADDRESS}", f"Delivery to {ADDRESS} is booked",
           meta={"note": f"ring twice at {ADDRESS}"}),
]
PLAIN = ["How do I boil an egg?", "What is a good stretch for the back?", "How do I reverse a list in Python?",
         "Which wine goes with fish?", "How long does bread dough rise?", "What is the capital of Peru?"]
PLAIN_EVENTS = [_event(10 + i, user, q, "A short and plain answer.")
                for i, (user, q) in enumerate((u, q) for q in PLAIN for u in ("ann", "ben"))]
BAD_LINES = [
    f'{{"event_id": "ann-bad", "user_id": "ann", "prompt": "my mail is {EMAIL}'.encode(),  # malformed JSON
    json.dumps({"event_id": "ben-x", "user_id": "ben", "ts": 0, "prompt": f"call {PHONE}", "extra": CARD}).encode(),
    PII_EVENTS[0],  # a duplicate event id
]
# Hand count of what the stream finds when every event keeps its response (annotation.replay_answers=keep).
REDACTED = {"email": 2 + 1 + 2, "phone": 2 + 1, "card": 2 + 1, "account": 2, "address": 3}


def _write_events(path: Path) -> Path:
    lines = PII_EVENTS + PLAIN_EVENTS + BAD_LINES
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def leaks_in(*roots: Path) -> list[str]:
    """``file: leak`` for every PII string found in any file under ``roots`` (Parquet read as values)."""
    return mentions(roots, LEAKS, hidden_parquet=False)


def test_a_cli_replay_with_training_leaves_no_pii_in_any_file(tmp_path):
    events = _write_events(tmp_path / "events.jsonl")
    records = [json.loads(line) for line in PII_EVENTS]
    assert any(is_heldout(r, 0.3) for r in records)  # some PII goes to the held-out file...
    assert not all(is_heldout(r, 0.3) for r in records)  # ...and some through the stream
    out, recovery = tmp_path / "out", tmp_path / "rec"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "replay", str(events), "--split", "field", "--model", "tiny-random",
         "--metrics-port", "0", "--no-progress", "--heldout", "0.3", "--window", "4", "--capacity", "6",
         "--out", str(out), "--recovery-dir", str(recovery)],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert leaks_in(out, recovery) == []
    assert not any(leak in done.stdout + done.stderr for leak in LEAKS)  # nor the summary or the logs
    # The text is still there, with tokens in place of the PII.
    heldout = (out / "heldout.jsonl").read_text()
    buffers = "".join(p.read_text() for p in (out / "buffers").glob("*.json"))
    asked = (out / "annotation_requests.jsonl").read_text()
    assert "[" in heldout and any(t in heldout + buffers + asked for t in ("[EMAIL]", "[CARD]", "[ADDRESS]"))
    assert list((out / "adapters").rglob("*.safetensors"))  # training ran on the redacted samples
    dead = read_jsonl(out / "dead_letters.jsonl")
    assert {"malformed_json", "unknown_field"} <= {d["reason"] for d in dead}
    assert next(d for d in dead if d["reason"] == "malformed_json")["raw_pii"] == {"email": 1}


@pytest.fixture(scope="module")
def components():
    return build_components(load_settings(**{"model.lm": "tiny-random", "metrics.port": 0}))


def _replay(components, out: Path, events: Path, **overrides) -> None:
    settings = load_settings(**{"model.lm": "tiny-random", "metrics.port": 0, "output.dir": out, "source.path": events,
                                "source.split": "field", "train.enabled": False,
                                "annotation.replay_answers": "keep", **overrides})
    run_main(build_flow(settings, components))


def _counts(name: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {k: REGISTRY.get_sample_value(name, {"kind": k}) or 0.0 for k in REDACTED}


def test_metrics_count_what_was_redacted_per_kind(components, tmp_path):
    events = _write_events(tmp_path / "events.jsonl")
    before = _counts("edgetune_pii_redacted_total")
    _replay(components, tmp_path / "out", events)
    after = _counts("edgetune_pii_redacted_total")
    assert {k: after[k] - before[k] for k in REDACTED} == REDACTED
    assert leaks_in(tmp_path / "out") == []


def test_drop_dead_letters_events_with_pii_and_keeps_the_rest(components, tmp_path):
    events = _write_events(tmp_path / "events.jsonl")
    before = _counts("edgetune_pii_dropped_total")
    _replay(components, tmp_path / "out", events, **{"privacy.pii": "drop"})
    after = _counts("edgetune_pii_dropped_total")
    # Five events and the repeat of the first (dropped at parse, before the duplicate guard).
    assert {k: after[k] - before[k] for k in REDACTED} == {"email": 4, "phone": 2, "card": 2, "account": 2, "address": 3}
    dead = read_jsonl_file(tmp_path / "out" / "dead_letters.jsonl").records  # every line, repeats included
    pii = [d for d in dead if d["reason"] == "pii"]
    assert sorted(d["event_id"] for d in pii) == ["ann-01", "ann-01", "ann-03", "ann-05", "ben-02", "ben-04"]
    assert leaks_in(tmp_path / "out") == []
    buffers = [json.loads(p.read_text()) for p in (tmp_path / "out" / "buffers").glob("*.json")]
    kept = {s["event_id"] for b in buffers for s in b["samples"]}
    assert kept and all(int(e.split("-")[1]) >= 10 for e in kept)  # only the plain events


def test_off_keeps_text_as_sent(components, tmp_path):
    events = _write_events(tmp_path / "events.jsonl")
    _replay(components, tmp_path / "out", events, **{"privacy.pii": "off"})
    assert leaks_in(tmp_path / "out")  # the switch really switches
