"""`edgetune adapters list` shows journaled training runs next to the versions."""

from __future__ import annotations

from flows.cli import main
from flows.trainer import PENDING_DIR
from operators.pending import PendingRuns


def test_list_shows_a_pending_run_even_for_a_user_without_versions_and_leaves_it_in_place(tmp_path, capsys):
    journal = PendingRuns(tmp_path / "adapters" / PENDING_DIR)
    journal.put({"user_id": "zed", "window": 1, "samples": [{"event_id": "a"}]})
    journal.put({"user_id": "zed", "window": 2, "samples": [{"event_id": "a"}, {"event_id": "b"}]})
    assert main(["adapters", "list", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "zed  (latest: base model)" in out
    assert "pending    window 2 (2 labeled samples)" in out and "window 1" not in out
    assert len(list(journal.root.glob("*.json"))) == 2  # listing prunes nothing: that is the trainer's job


def test_list_without_adapters_or_pending_runs_says_so(tmp_path, capsys):
    assert main(["adapters", "list", "--out", str(tmp_path)]) == 0
    assert "no adapters under" in capsys.readouterr().out


def test_list_shows_a_run_that_failed_with_its_attempts_and_reason(tmp_path, capsys):
    journal = PendingRuns(tmp_path / "adapters" / PENDING_DIR)
    retrying = journal.put({"user_id": "amy", "window": 4, "samples": [{"event_id": "a"}]})
    journal.fail(retrying, "RuntimeError: Already borrowed")
    given_up = journal.put({"user_id": "bea", "window": 2, "samples": []})
    for _ in range(3):
        journal.fail(given_up, "ValueError: bad sample")
    assert main(["adapters", "list", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pending    window 4 (1 labeled samples): failed 1 of 3 attempts, last: RuntimeError: Already borrowed" in out
    assert "failed     window 2 (0 labeled samples): failed 3 of 3 attempts, last: ValueError: bad sample" in out


def test_a_latest_adapter_whose_weights_were_swapped_is_refused_by_generate_and_flagged_by_list(tmp_path, capsys):
    from models.adapters import AdapterStore
    from tests.models.test_adapters import _lora, _manifest

    store = AdapterStore(tmp_path / "adapters")
    first = store.save("alice", _lora(seed=1), _manifest("alice"))
    second = store.save("alice", _lora(seed=2), _manifest("alice"))
    store.promote("alice", first)
    store.promote("alice", second)
    weights = store.path("alice", second) / "adapter_model.safetensors"
    weights.write_bytes((store.path("alice", first) / "adapter_model.safetensors").read_bytes())

    args = ["--out", str(tmp_path), "--model", "tiny-random"]
    assert main(["generate", "--user", "alice", "hi", "--max-new-tokens", "2", *args]) == 2
    err = capsys.readouterr().err
    assert "edgetune: error:" in err and "changed after training, so this version is not used" in err
    assert main(["adapters", "list", *args]) == 0
    out = capsys.readouterr().out
    assert "weights ok" in out and "weights REFUSED" in out
    # Rolling the tampered version back makes generate answer with the intact one again.
    assert main(["adapters", "rollback", "--user", "alice", *args]) == 0
    assert main(["generate", "--user", "alice", "hi", "--max-new-tokens", "2", *args]) == 0
    assert f"[adapter v{first} of alice]" in capsys.readouterr().err


def test_the_summary_after_a_run_names_a_failed_training_run(tmp_path, capsys):
    from flows.cli import print_adapters

    journal = PendingRuns(tmp_path / PENDING_DIR)
    journal.fail(journal.put({"user_id": "amy", "window": 4, "samples": []}), "RuntimeError: out of memory")
    print_adapters(tmp_path)
    out = capsys.readouterr().out
    assert "training for user amy, window 4 failed 1 time(s), last: RuntimeError: out of memory" in out
    assert "no adapters trained" in out
