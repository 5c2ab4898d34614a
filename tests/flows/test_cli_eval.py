"""`edgetune eval` end to end on the tiny model: base and every adapter version, paired against base."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from models.adapters import AdapterStore
from models.lm import tiny_llama
from models.personalize import PersonalizeConfig, Personalizer
from models.train import TrainConfig


def test_eval_scores_base_and_each_version_on_the_users_heldout_prompts(tmp_path, capsys):
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=6, max_seq_len=64, lr=3e-2), synth_k=0, probe_every=4,
                            base_model_id="tiny-random")
    samples = [{"event_id": f"ann-{i}", "prompt": f"what colour is item {i}", "response": "blue",
                "domain": "general"} for i in range(12)]
    Personalizer(model, tokenizer, AdapterStore(tmp_path / "out" / "adapters"), cfg).run(
        {"user_id": "ann", "window": 1, "events_seen": 12, "samples": samples})
    heldout = tmp_path / "heldout.jsonl"
    lines = [{"event_id": f"h{i}", "user_id": u, "prompt": f"what colour is thing {i}", "response": "blue",
              "ts": 1_700_000_000_000 + i} for i in range(3) for u in ("ann", "bob")]
    heldout.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    report = tmp_path / "eval.json"

    code = main(["eval", str(heldout), "--model", "tiny-random", "--out", str(tmp_path / "out"),
                 "--max-new-tokens", "4", "--report", str(report), "--user", "ann"])

    assert code == 0
    rows = json.loads(report.read_text())
    assert [(r["user_id"], r["model"]) for r in rows] == [("ann", "base"), ("ann", "v1")]  # --user filters bob out
    base, v1 = rows
    assert base["n"] == v1["n"] == 3 and len(v1["predictions"]) == 3
    assert base["decoding"]["max_new_tokens"] == 4 and base["decoding"]["no_repeat_ngram_size"] == 3  # the default
    assert v1["answer_loss"] < base["answer_loss"]  # trained on "blue" answers: the reference got likelier
    assert v1["loss_vs_base"]["mean"] < 0 and v1["loss_vs_base"]["lower"] == 3
    low, high = v1["vs_base"]["ci95"]
    assert low <= v1["vs_base"]["mean"] <= high and v1["vs_base"]["wins"] + v1["vs_base"]["losses"] <= 3
    out = capsys.readouterr()
    assert "vs base" in out.out and "skipped 1 held-out lines: malformed_json 1" in out.err


def test_eval_versions_latest_scores_only_what_generate_answers_with(tmp_path):
    model, tokenizer = tiny_llama(seed=0)
    cfg = PersonalizeConfig(train=TrainConfig(max_steps=3, max_seq_len=64, lr=3e-2), synth_k=0, probe_every=4,
                            base_model_id="tiny-random")
    store = AdapterStore(tmp_path / "out" / "adapters")
    for window in (1, 2, 3):
        samples = [{"event_id": f"w{window}-{i}", "prompt": f"what colour is item {i}", "response": "blue",
                    "domain": "general"} for i in range(8 * window)]
        Personalizer(model, tokenizer, store, cfg).run(
            {"user_id": "ann", "window": window, "events_seen": 8 * window, "samples": samples})
    versions = [m.version for m in store.list("ann")]
    assert versions == [1, 2, 3] and store.latest("ann") is not None
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("\n".join(json.dumps({"event_id": f"h{i}", "user_id": "ann", "prompt": f"thing {i}",
                                              "response": "blue", "ts": 1}) for i in range(2)))
    models = {}
    for versions_arg in ("all", "latest"):
        report = tmp_path / f"eval-{versions_arg}.json"
        assert main(["eval", str(heldout), "--model", "tiny-random", "--out", str(tmp_path / "out"),
                     "--max-new-tokens", "2", "--report", str(report), "--versions", versions_arg]) == 0
        models[versions_arg] = [r["model"] for r in json.loads(report.read_text())]
    assert models["all"] == ["base", "v1", "v2", "v3"]
    assert models["latest"] == ["base", f"v{store.latest('ann')}"]


def test_eval_without_labeled_heldout_events_is_a_clear_error(tmp_path, capsys):
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"event_id": "e", "user_id": "ann", "prompt": "hi", "ts": 1}) + "\n")
    assert main(["eval", str(heldout), "--model", "tiny-random", "--out", str(tmp_path)]) == 2
    assert "no labeled held-out events" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_torch_threads_reaches_eval_and_generate(command, tmp_path):
    import torch

    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"event_id": "e", "user_id": "ann", "prompt": "hi", "response": "hello", "ts": 1}))
    args = [str(heldout)] if command == "eval" else ["hi"]
    try:
        assert main([command, *args, "--model", "tiny-random", "--out", str(tmp_path / "out"),
                     "--max-new-tokens", "2", "--torch-threads", str(wanted)]) == 0
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
