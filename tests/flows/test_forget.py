"""`edgetune forget --user U`: after a replay of two users with training, held-out events and a recovery
store, nothing in any file names the forgotten user or holds their text, the other user's files are byte for
byte as they were, and a resumed run goes on with the forgotten user starting afresh."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from flows.forget import forget_user
from flows.outputs import read_decision_rows
from operators.heldout import is_heldout
from operators.pending import PendingRuns
from tests.mentions import mentions

REPO = Path(__file__).resolve().parents[2]
ANN, BEN = "u-ann", "u-ben"
# Words only ann's events hold: if any file still has one, something of hers was kept.
ANN_WORDS = ["quokka", "marzipan", "theremin", "kumquat", "zeppelin", "origami", "saffron", "bandoneon"]
BEN_WORDS = ["tractor", "granite", "harbour", "walnut", "compass", "lantern", "glacier", "falcon"]
FIRST, TOTAL = 17, 34  # records in the first run, then in the resumed one


def _records() -> list[bytes]:
    lines = []
    for i in range(16):
        for user, words in ((ANN, ANN_WORDS), (BEN, BEN_WORDS)):
            word = words[i % len(words)]
            lines.append(json.dumps({"event_id": f"{user}-e{i:02d}", "user_id": user, "ts": 1_709_283_600_000 + i * 60_000,
                                     "prompt": f"Tell me about the {word}, part {i}",
                                     "response": f"The {word} is a fine thing, part {i}."}).encode())
    lines.insert(5, f'{{"event_id": "{ANN}-bad", "user_id": "{ANN}", "prompt": "my quokka'.encode())  # malformed
    lines.insert(9, json.dumps({"event_id": f"{BEN}-bad", "user_id": BEN, "ts": 0, "prompt": " "}).encode())
    assert len(lines) == TOTAL
    return lines


def _replay(events: Path, out: Path, recovery: Path, limit: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "replay", str(events), "--split", "field", "--model", "tiny-random",
         "--metrics-port", "0", "--no-progress", "--answers", "keep", "--heldout", "0.2", "--window", "4",
         "--capacity", "4", "--limit", str(limit), "--out", str(out), "--recovery-dir", str(recovery)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "EDGETUNE_TRAIN__MAX_STEPS": "1", "EDGETUNE_TRAIN__MAX_SEQ_LEN": "64",
             "EDGETUNE_TRAIN__PROBE_EVERY": "4"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path, user: str) -> list[bytes]:
    return [ln for ln in path.read_bytes().split(b"\n") if ln.strip() and json.loads(ln).get("user_id") == user]


def _store(recovery: Path) -> dict[tuple[str, str, int], bytes]:
    con = sqlite3.connect(next(recovery.glob("*.sqlite3")))
    try:
        return {(s, k, e): b for s, k, e, b in con.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps")}
    finally:
        con.close()


def test_forget_deletes_one_user_and_leaves_the_other_as_it_was(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(_records()) + b"\n")
    out, recovery = tmp_path / "out", tmp_path / "rec"
    _replay(events, out, recovery, FIRST)
    assert mentions([out, recovery], [ANN, *ANN_WORDS], hidden_parquet=True)  # the check below can see her
    assert (out / "adapters" / ANN).is_dir() and (out / "heldout.jsonl").exists()
    ben_before = {
        "buffer": (out / "buffers" / f"{BEN}.json").read_bytes(),
        "adapters": _files_of(out / "adapters" / BEN),
        "decisions": [r for r in read_decision_rows(out / "decisions").rows if r["user_id"] == BEN],
        "dead": _lines(out / "dead_letters.jsonl", BEN),
        "heldout": _lines(out / "heldout.jsonl", BEN),
        "store": {k: b for k, b in _store(recovery).items() if k[1] == BEN},
    }
    assert ben_before["decisions"] and ben_before["dead"] and ben_before["store"]

    assert main(["forget", "--user", ANN, "--out", str(out), "--recovery-dir", str(recovery)]) == 0
    printed = capsys.readouterr().out
    assert "adapter versions" in printed and "Kafka topics still hold" in printed

    assert mentions([out, recovery], [ANN, *ANN_WORDS], hidden_parquet=True) == []
    assert (out / "buffers" / f"{BEN}.json").read_bytes() == ben_before["buffer"]
    assert _files_of(out / "adapters" / BEN) == ben_before["adapters"]
    assert read_decision_rows(out / "decisions").rows == ben_before["decisions"]
    assert _lines(out / "dead_letters.jsonl", BEN) == ben_before["dead"]
    assert _lines(out / "heldout.jsonl", BEN) == ben_before["heldout"]
    assert {k: b for k, b in _store(recovery).items() if k[1] == BEN} == ben_before["store"]
    assert main(["forget", "--user", ANN, "--out", str(out), "--recovery-dir", str(recovery)]) == 0  # again: nothing
    assert "decision rows              0" in capsys.readouterr().out

    # The store still works: the replay resumes after record FIRST, and ann starts afresh.
    _replay(events, out, recovery, TOTAL)
    rows = read_decision_rows(out / "decisions").rows
    ann = [r for r in rows if r["user_id"] == ANN]
    ben = [r for r in rows if r["user_id"] == BEN]
    assert ann and [r["seq"] for r in ann] == list(range(len(ann)))  # a fresh state counts from 0
    after = [json.loads(line) for line in _records()[FIRST:] if line.endswith(b"}")]
    assert {r["event_id"] for r in ann} == {e["event_id"] for e in after if e["user_id"] == ANN
                                            and not is_heldout(e, 0.2)}  # only what came after the resume point
    assert [r["seq"] for r in ben] == list(range(len(ben)))  # ben's state went on where it was
    assert len(ben) > len(ben_before["decisions"])
    snap = json.loads((out / "buffers" / f"{ANN}.json").read_text())
    assert snap["events_seen"] == len(ann)
    from models.adapters import AdapterStore

    versions = AdapterStore(out / "adapters").list(ANN)
    assert versions and versions[0].version == 1
    assert all(set(m.sample_ids) <= {r["event_id"] for r in ann} for m in versions)


def test_journal_worker_files_and_leftovers_are_covered(tmp_path):
    out = tmp_path / "out"
    (out / "buffers").mkdir(parents=True)
    (out / "buffers" / "ann.json").write_text('{"user_id": "ann"}')
    (out / "buffers" / ".ann.json.x1.tmp").write_text('{"user_id": "ann"}')
    (out / "buffers" / "anna.json").write_text('{"user_id": "anna"}')
    (out / "dead_letters.jsonl").write_text('{"reason": "a", "user_id": "ann"}\n{"reason": "b", "user_id": "bob"}\n')
    (out / "dead_letters.w1.jsonl").write_text(
        '{"reason": "malformed_json", "user_id": null, "raw": "{\\"user_id\\": \\"ann\\", \\"prompt\\": \\"x"}\n'
        '{"reason": "malformed_json", "user_id": null, "raw": "{\\"user_id\\": \\"anna\\""}\n'
        '{"reason": "torn", "raw": "{\\"user_id\\": \\"ann')
    journal = PendingRuns(out / "adapters" / ".pending")
    journal.put({"user_id": "ann", "window": 1, "samples": []})
    kept = journal.put({"user_id": "bob", "window": 1, "samples": []})
    (out / "adapters" / ".pending" / "000000000009-00.json.bad").write_text('{"user_id": "ann", "wind')
    done = forget_user("ann", out, out / "adapters")
    assert (done.buffer, done.dead_letters, done.pending_runs) == (1, 3, 1)
    assert sorted(p.name for p in (out / "buffers").iterdir()) == ["anna.json"]
    assert (out / "dead_letters.jsonl").read_text() == '{"reason": "b", "user_id": "bob"}\n'
    assert '"anna' in (out / "dead_letters.w1.jsonl").read_text() and '\\"ann\\"' not in (out / "dead_letters.w1.jsonl").read_text()
    assert sorted(p.name for p in (out / "adapters" / ".pending").iterdir()) == [kept]


def test_forget_refuses_while_another_process_holds_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dead_letters.jsonl").write_text('{"reason": "a", "user_id": "ann"}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'ab'); print('open', "
                               "flush=True); time.sleep(60)", str(out / "dead_letters.jsonl")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ValueError, match=rf"pid {holder.pid}.*stop the run first"):
            forget_user("ann", out, out / "adapters")
        assert main(["forget", "--user", "ann", "--out", str(out)]) == 2
        assert "ann" in (out / "dead_letters.jsonl").read_text()  # nothing was changed
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{holder.pid}").exists():
        time.sleep(0.1)
    assert forget_user("ann", out, out / "adapters").dead_letters == 1
