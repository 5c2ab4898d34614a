"""The personalization runner and the background trainer, on the tiny random model."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from flows.trainer import TrainingService
from operators.pending import PendingRuns
from models.adapters import AdapterStore
from models.lm import tiny_llama
from models.personalize import PersonalizeConfig, Personalizer, is_probe
from models.train import TrainConfig


def request(user: str, n: int, offset: int = 0) -> dict:
    samples = [{"event_id": f"{user}-{i}", "prompt": f"question {i} of {user}", "response": f"answer {i}", "domain": "general"}
               for i in range(offset, offset + n)]
    return {"user_id": user, "window": 1, "events_seen": n, "samples": samples}


@pytest.fixture
def personalizer(tmp_path):
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=2, max_seq_len=64, lr=1e-2), synth_k=0, probe_every=4,
                            base_model_id="tiny-random")
    return Personalizer(model, tokenizer, AdapterStore(tmp_path / "adapters"), cfg)


def test_probe_samples_are_never_trained_on(personalizer):
    result = personalizer.run(request("ann", 16))
    (manifest,) = personalizer.store.list("ann")
    probe = {f"ann-{i}" for i in range(16) if is_probe(f"ann-{i}", 4)}
    assert probe and not probe & set(manifest.sample_ids)
    assert result.n_probe == len(probe) and result.n_real == 16 - len(probe)
    assert manifest.evaluation.probe_loss_before is not None and manifest.evaluation.probe_loss_after is not None


def test_each_user_trains_only_on_their_own_samples(personalizer):
    personalizer.run(request("ann", 8))
    personalizer.run(request("bob", 8))
    for user in ("ann", "bob"):
        for m in personalizer.store.list(user):
            assert m.user_id == user and all(i.startswith(f"{user}-") for i in m.sample_ids)


def test_second_run_warm_starts_and_is_gated(personalizer):
    first = personalizer.run(request("ann", 12))
    second = personalizer.run(request("ann", 12, offset=4))
    assert [m.version for m in personalizer.store.list("ann")] == [1, 2]
    m2 = personalizer.store.list("ann")[1]
    assert m2.train_config["warm_start_from"] == (first.version if first.outcome == "promoted" else None)
    latest = personalizer.store.latest("ann")
    if second.outcome == "rejected":
        assert latest != 2 and m2.status == "rejected"
    else:
        assert latest == 2


def test_synthetic_pairs_are_made_once_per_sample_and_leave_with_it(tmp_path, monkeypatch):
    import models.synth

    asked: list[list[str]] = []
    real = models.synth.synthesize_many

    def recording(model, tokenizer, samples, *args, **kwargs):  # the real synthesis, with its inputs recorded
        asked.append([prompt for prompt, _ in samples])
        return real(model, tokenizer, samples, *args, **kwargs)

    monkeypatch.setattr(models.synth, "synthesize_many", recording)
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=1, max_seq_len=64), synth_k=1, synth_tokens_per_pair=16,
                            probe_every=4, base_model_id="tiny-random")
    personalizer = Personalizer(model, tokenizer, AdapterStore(tmp_path / "adapters"), cfg)

    def trained(first: int, last: int) -> list[str]:
        return [f"question {i} of ann" for i in range(first, last) if not is_probe(f"ann-{i}", 4)]

    first = personalizer.run(request("ann", 8))
    second = personalizer.run(request("ann", 8, offset=4))  # samples 0-3 left the buffer, 8-11 arrived
    assert asked == [trained(0, 8), trained(8, 12)]  # 4-7 kept their pairs: not synthesized again
    assert {event_id for _, event_id in personalizer._synthetic} == {f"ann-{i}" for i in range(4, 12)
                                                                      if not is_probe(f"ann-{i}", 4)}
    manifests = personalizer.store.list("ann")
    assert [m.n_synthetic for m in manifests] == [first.n_synthetic, second.n_synthetic]


def test_a_window_that_would_repeat_the_last_run_exactly_is_skipped(tmp_path):
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=2, max_seq_len=64, lr=1e-2), synth_k=0, probe_every=4,
                            base_model_id="tiny-random", warm_start=False)  # every run starts from base
    personalizer = Personalizer(model, tokenizer, AdapterStore(tmp_path / "adapters"), cfg)
    first = personalizer.run(request("ann", 12))
    again = personalizer.run({**request("ann", 12), "window": 2})  # the next window, the buffer unchanged
    assert first.outcome in ("promoted", "rejected") and again.outcome == "skipped"
    assert "same training set, probe, starting point and config as v1" in again.reason
    assert [m.version for m in personalizer.store.list("ann")] == [1]
    assert personalizer.store.list("ann")[0].probe_ids == [f"ann-{i}" for i in range(12) if is_probe(f"ann-{i}", 4)]

    # ann-14 is a probe sample: the training set is unchanged, but the gate's verdict may not be.
    assert is_probe("ann-14", 4)
    new_probe = request("ann", 12)
    new_probe["samples"].append(request("ann", 1, offset=14)["samples"][0])
    assert personalizer.run(new_probe).outcome != "skipped"
    changed_config = Personalizer(model, tokenizer, personalizer.store, replace(cfg, train=replace(cfg.train, lr=2e-2)))
    assert changed_config.run(new_probe).outcome != "skipped"
    assert [m.version for m in personalizer.store.list("ann")] == [1, 2, 3]
    assert personalizer.store.list("ann")[1].sample_ids == personalizer.store.list("ann")[0].sample_ids


def test_a_promoted_version_is_the_next_starting_point_so_the_same_samples_train_again(personalizer):
    first = personalizer.run(request("ann", 12))
    second = personalizer.run({**request("ann", 12), "window": 2})  # the next window, the buffer unchanged
    # Promoted: the next run warm-starts from v1, a different start, so it trains. Rejected: it would repeat v1.
    assert second.outcome == ("skipped" if first.outcome == "rejected" else second.outcome)
    assert first.outcome == "rejected" or second.outcome != "skipped"


def test_a_window_delivered_again_trains_nothing(personalizer):
    # After a crash the stream re-emits the windows it closed since its last checkpoint: each is a repeat.
    first = personalizer.run(request("ann", 12))
    again = personalizer.run({**request("ann", 12), "resumed": True})
    assert first.outcome in ("promoted", "rejected") and again.outcome == "skipped"
    assert "window 1 was trained already as v1" in again.reason and again.version == 1
    personalizer.run({**request("ann", 12, offset=4), "window": 2})
    latest = personalizer.store.latest("ann")
    assert personalizer.run(request("ann", 12)).outcome == "skipped"  # window 1 once more, after window 2
    assert [m.version for m in personalizer.store.list("ann")] == [1, 2] and personalizer.store.latest("ann") == latest
    assert [m.window for m in personalizer.store.list("ann")] == [1, 2]


class _StopBeforeGate(AdapterStore):
    """A store whose second gate never happens: the process stops between saving a version and gating it."""

    gates = 0

    def promote(self, user, version):
        self._stop()
        super().promote(user, version)

    def reject(self, user, version, reason):
        self._stop()
        super().reject(user, version, reason)

    def _stop(self):
        self.gates += 1
        if self.gates == 2:
            raise KeyboardInterrupt("the process stops here")


def test_a_version_left_a_candidate_by_a_stop_gets_its_gate_when_the_window_comes_again(tmp_path):
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=2, max_seq_len=64, lr=1e-2), synth_k=0, probe_every=4,
                            base_model_id="tiny-random")
    whole = Personalizer(model, tokenizer, AdapterStore(tmp_path / "whole"), cfg)
    stopped = Personalizer(model, tokenizer, _StopBeforeGate(tmp_path / "stopped"), cfg)
    windows = [request("ann", 12), {**request("ann", 12, offset=6), "window": 2}]
    for req in windows:
        whole.run(req)
    stopped.run(windows[0])
    with pytest.raises(KeyboardInterrupt):
        stopped.run(windows[1])
    assert [m.status for m in stopped.store.list("ann")][-1] == "candidate"
    resumed = stopped.run({**windows[1], "resumed": True})  # the journal runs it again at the next start
    assert "saved by a run that stopped before its gate" in resumed.reason and resumed.version == 2
    want = [(m.version, m.status, m.weights_sha256) for m in whole.store.list("ann")]
    assert [(m.version, m.status, m.weights_sha256) for m in stopped.store.list("ann")] == want
    assert stopped.store.latest("ann") == whole.store.latest("ann")


def test_a_request_without_training_samples_is_skipped(personalizer):
    probe_only = [f"p{i}" for i in range(200) if is_probe(f"p{i}", 4)][:2]
    req = {"user_id": "cat", "samples": [{"event_id": i, "prompt": "q", "response": "a"} for i in probe_only]}
    assert personalizer.run(req).outcome == "skipped"
    assert personalizer.store.list("cat") == []


def test_training_service_coalesces_requests_per_user():
    started, release, ran = threading.Event(), threading.Event(), []

    def run(req):
        ran.append((req["user_id"], req["window"]))
        if req["window"] == 0:
            started.set()
            release.wait(10)

    service = TrainingService(run)
    service.submit({"user_id": "ann", "window": 0})
    assert started.wait(10)
    for w in (1, 2, 3):  # arrive while ann's first run is busy: only the newest survives
        service.submit({"user_id": "ann", "window": w})
    service.submit({"user_id": "bob", "window": 1})
    release.set()
    service.close()
    assert ran == [("ann", 0), ("ann", 3), ("bob", 1)]


def test_stop_finishes_the_run_in_progress_and_leaves_the_queue_journaled_for_the_next_start(tmp_path):
    started, release, ran = threading.Event(), threading.Event(), []

    def run(req):
        ran.append(req["user_id"])
        started.set()
        release.wait(10)

    service = TrainingService(run, PendingRuns(tmp_path))
    service.submit({"user_id": "ann", "window": 1})
    assert started.wait(10)
    service.submit({"user_id": "ben", "window": 1})
    service.submit({"user_id": "cem", "window": 1})
    release.set()
    assert service.stop() == 2
    assert ran == ["ann"]
    assert sorted(r["user_id"] for r in PendingRuns(tmp_path).pending()) == ["ben", "cem"]

    again = TrainingService(lambda req: ran.append(req["user_id"]), PendingRuns(tmp_path))
    again.close()
    assert ran == ["ann", "ben", "cem"]
    assert PendingRuns(tmp_path).pending() == []


def test_two_processes_sharing_one_journal_train_a_left_over_request_once(tmp_path):
    """A Bytewax cluster on one host: every process has a TrainingService over the same adapters/.pending."""
    PendingRuns(tmp_path).put({"user_id": "ann", "window": 3, "samples": []})
    ran = []
    first = TrainingService(lambda req: ran.append(("process 0", req["window"])), PendingRuns(tmp_path))
    other = TrainingService(lambda req: ran.append(("process 1", req["window"])), PendingRuns(tmp_path), resume=False)
    first.close()
    other.close()
    assert ran == [("process 0", 3)]  # with resume=True in both, each process trained window 3
    assert PendingRuns(tmp_path).pending() == []


def test_a_signal_during_the_final_drain_ends_the_wait():
    release = threading.Event()
    service = TrainingService(lambda req: release.wait(10))
    service.submit({"user_id": "ann", "window": 1})
    service.submit({"user_id": "ben", "window": 1})
    asked = []
    assert service.drain(abandon=lambda: asked.append(1) or True) is False  # nothing trained yet
    assert asked
    release.set()
    assert service.stop() <= 1


def test_training_service_survives_a_failing_run():
    def run(req):
        if req["user_id"] == "bad":
            raise RuntimeError("boom")
        return req["user_id"]

    service = TrainingService(run, backoff_seconds=0)
    service.submit({"user_id": "bad"})
    service.submit({"user_id": "good"})
    service.close()
    assert list(service.results) == ["good"]


def test_training_service_keeps_only_the_last_results():
    service = TrainingService(lambda req: req["window"], keep_results=3)
    for window in range(10):
        service.submit({"user_id": f"u{window}", "window": window})
    service.close()
    assert list(service.results) == [7, 8, 9]


def requests(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("edgetune_train_requests_total", {"outcome": outcome}) or 0.0


class SteppingClock:
    """A clock that moves 1,000 s per reading: every backoff is over by the next look, so no test waits."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1000.0
        return self.now


def test_a_failing_run_is_retried_with_backoff_then_kept_in_the_journal_marked_failed(tmp_path, caplog):
    calls = []

    def run(req):
        calls.append(req["window"])
        raise RuntimeError("out of memory")

    retries, kept = requests("retried"), requests("failed_kept")
    service = TrainingService(run, PendingRuns(tmp_path), max_attempts=3, backoff_seconds=10, clock=SteppingClock())
    with caplog.at_level("ERROR", logger="flows.trainer"):
        service.submit({"user_id": "ann", "window": 1, "samples": []})
        service.close()
    assert calls == [1, 1, 1]
    tails = [r.getMessage().rsplit("; ", 1)[-1] for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert tails == ["retrying in 10.0 s", "retrying in 20.0 s", "no attempts left"]
    (entry,) = PendingRuns(tmp_path).pending()
    assert (entry["window"], entry["attempts"], entry["last_error"]) == (1, 3, "RuntimeError: out of memory")
    assert requests("retried") - retries == 2
    assert requests("failed_kept") - kept == 1
    assert service.failed().keys() == {"ann"}


def test_a_run_that_used_up_its_attempts_is_not_run_again_at_the_next_start_but_the_next_window_replaces_it(tmp_path):
    journal = PendingRuns(tmp_path)
    key = journal.put({"user_id": "ann", "window": 1, "samples": []})
    for _ in range(3):
        journal.fail(key, "RuntimeError: boom")
    ran = []
    service = TrainingService(lambda req: ran.append(req["window"]), PendingRuns(tmp_path), max_attempts=3)
    service.drain()
    assert ran == [] and service.failed() == {"ann": key}
    assert [r["attempts"] for r in PendingRuns(tmp_path).pending()] == [3]  # still shown as failed
    service.submit({"user_id": "ann", "window": 2, "samples": []})
    service.close()
    assert ran == [2] and service.failed() == {}
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_failed_in_an_earlier_process_resumes_with_its_attempts_counted(tmp_path):
    journal = PendingRuns(tmp_path)
    journal.fail(journal.put({"user_id": "ann", "window": 1, "samples": []}), "RuntimeError: killed")
    calls = []

    def run(req):
        calls.append(req["window"])
        raise RuntimeError("still failing")

    service = TrainingService(run, PendingRuns(tmp_path), max_attempts=2, backoff_seconds=0)
    service.close()
    assert calls == [1]  # one attempt left of two
    assert [r["attempts"] for r in PendingRuns(tmp_path).pending()] == [2]


def test_a_run_that_fails_once_and_then_trains_leaves_nothing_in_the_journal(tmp_path):
    calls = []

    def run(req):
        calls.append(req["window"])
        if len(calls) == 1:
            raise RuntimeError("Already borrowed")
        return "trained"

    service = TrainingService(run, PendingRuns(tmp_path), backoff_seconds=0)
    service.submit({"user_id": "ann", "window": 1, "samples": []})
    service.close()
    assert calls == [1, 1] and list(service.results) == ["trained"]
    assert list(tmp_path.iterdir()) == []


def test_runs_that_were_waiting_or_training_when_the_process_stopped_run_at_the_next_start(tmp_path):
    started, release, ran = threading.Event(), threading.Event(), []

    def stuck(req):  # the first process: ann's run is in progress when it "stops"
        started.set()
        release.wait(10)
        raise RuntimeError("the process stopped")

    first = TrainingService(stuck, PendingRuns(tmp_path), backoff_seconds=0)
    first.submit({"user_id": "ann", "window": 1})
    assert started.wait(10)
    for user, window in [("bob", 1), ("ann", 2), ("bob", 2)]:
        first.submit({"user_id": user, "window": window})
    # Nothing of the first process runs again; a new one starts on the same journal.
    second = TrainingService(lambda req: ran.append((req["user_id"], req["window"])), PendingRuns(tmp_path))
    second.close()
    # ann's window 1 (training) is superseded by window 2; bob's coalesced window 1 left no file behind
    assert ran == [("ann", 2), ("bob", 2)]
    assert PendingRuns(tmp_path).load() == []
    release.set()
    first.close()


def test_finished_runs_leave_nothing_to_resume_and_failed_ones_stay_marked_failed(tmp_path):
    def run(req):
        if req["user_id"] == "bad":
            raise RuntimeError("boom")
        return req["user_id"]

    service = TrainingService(run, PendingRuns(tmp_path), backoff_seconds=0)
    for user in ("bad", "good"):
        service.submit({"user_id": user, "window": 1})
    service.close()
    assert list(service.results) == ["good"]
    assert [(r["user_id"], r["attempts"], r["last_error"]) for r in PendingRuns(tmp_path).pending()] == [
        ("bad", 3, "RuntimeError: boom")]


def test_a_journal_that_cannot_be_written_does_not_stop_training(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the journal folder should be")
    service = TrainingService(lambda req: req["window"], PendingRuns(blocker / "pending"))
    service.submit({"user_id": "ann", "window": 1})
    service.close()
    assert list(service.results) == [1]


def test_the_base_weights_digest_is_of_the_base_model_whoever_trains_first(tmp_path):
    # It was computed lazily after train_lora had wrapped the model, so it held the first run's LoRA
    # weights: another value in every process (a restart), and repeats were no longer recognised.
    from models.lm import weights_digest

    model, tokenizer = tiny_llama(seed=0)
    base = weights_digest(model)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=1, max_seq_len=64), synth_k=0, probe_every=4,
                            base_model_id="tiny-random")
    for i, user in enumerate(("ann", "bob")):
        Personalizer(model, tokenizer, AdapterStore(tmp_path / str(i)), cfg).run(request(user, 8))
        assert [m.base_weights_digest for m in AdapterStore(tmp_path / str(i)).list(user)] == [base]
