"""Adapter versions on disk, the promotion gate, and load-time verification."""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime
from pathlib import Path

import pytest
import torch

from models.adapters import (
    LATEST,
    MANIFEST,
    AdapterNotAppliedError,
    AdapterStore,
    Evaluation,
    Manifest,
    load_adapter,
    promotion_gate,
    training_data_digest,
)
from models.lm import tiny_llama
from models.train import TrainConfig
from operators.files import user_file_name


def _lora(seed: int = 0, zero: bool = False):
    """A LoRA-wrapped tiny model; B is random (as if trained) unless ``zero``."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_llama(seed=0)
    config = TrainConfig()
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules)
    )
    peft_model = get_peft_model(model, lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.zeros_like(param) if zero else torch.randn(param.shape, generator=generator) * 0.1)
    return peft_model


@pytest.fixture(scope="module")
def adapter():
    return _lora(seed=1)


def _manifest(user: str, **overrides) -> Manifest:
    samples = [(f"{user}-e{i}", f"text {i}") for i in range(3)]
    fields = dict(
        user_id=user,
        base_model="tiny-random-h64-l2-s0",
        base_weights_digest="0" * 64,
        data_digest=training_data_digest(samples),
        sample_ids=[sample_id for sample_id, _ in samples],
        n_real=2,
        n_synthetic=1,
        seed=0,
        train_config=TrainConfig().to_dict(),
        train_report={"steps": 1, "loss_first": 2.0, "loss_last": 1.5},
        evaluation=Evaluation(probe_loss_before=2.0, probe_loss_after=1.8, general_loss_base=3.0, general_loss=3.05),
    )
    fields.update(overrides)
    return Manifest(**fields)


def _save(store: AdapterStore, user: str, peft_model) -> int:
    return store.save(user, peft_model, _manifest(user))


# --- versions -----------------------------------------------------------------------


def test_versions_increase_and_start_as_candidates(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    assert [_save(store, "alice", adapter) for _ in range(3)] == [1, 2, 3]
    listed = store.list("alice")
    assert [m.version for m in listed] == [1, 2, 3]
    assert {m.status for m in listed} == {"candidate"}
    assert store.latest("alice") is None  # nothing promoted: the base model serves
    files = {p.name for p in store.path("alice", 2).iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", MANIFEST} <= files


def test_manifest_round_trips_with_version_time_and_status_filled_in(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    given = _manifest("alice", status="promoted", status_reason="ignored")
    version = store.save("alice", adapter, given)
    (stored,) = store.list("alice")
    assert stored.version == version == 1
    assert stored.status == "candidate" and stored.status_reason == ""
    assert datetime.fromisoformat(stored.created_at).tzinfo is not None
    assert stored.evaluation == given.evaluation
    assert stored.train_config == TrainConfig().to_dict()
    assert json.loads((store.path("alice", 1) / MANIFEST).read_text())["sample_ids"] == given.sample_ids


def test_concurrent_saves_get_distinct_versions(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    other = AdapterStore(tmp_path)  # a second store object on the same root shares the lock
    versions: list[int] = []
    threads = [
        threading.Thread(target=lambda s=s: versions.append(_save(s, "alice", adapter)))
        for s in [store, other] * 3
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert [m.version for m in store.list("alice")] == [1, 2, 3, 4, 5, 6]


def test_a_crashed_save_is_invisible_and_its_number_is_not_reused(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    assert _save(store, "alice", adapter) == 1
    user_dir = tmp_path / user_file_name("alice")
    # A crash mid-save leaves a temp dir; a version dir without a manifest is incomplete.
    (user_dir / ".tmp-crashed").mkdir()
    (user_dir / ".tmp-crashed" / "adapter_config.json").write_text("{")
    (user_dir / "v2").mkdir()
    (user_dir / "v2" / "adapter_model.safetensors").write_bytes(b"half")
    assert [m.version for m in store.list("alice")] == [1]
    with pytest.raises(ValueError, match="no complete version v2"):
        store.path("alice", 2)
    assert _save(store, "alice", adapter) == 3
    assert [m.version for m in store.list("alice")] == [1, 3]
    assert store.users() == ["alice"]


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    class Broken:
        def save_pretrained(self, path, **kwargs):
            (Path(path) / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError("disk full")

    store = AdapterStore(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        store.save("alice", Broken(), _manifest("alice"))
    assert list((tmp_path / "alice").iterdir()) == []
    assert store.list("alice") == []


def test_save_refuses_a_manifest_of_another_user(tmp_path, adapter):
    with pytest.raises(ValueError, match="does not match"):
        AdapterStore(tmp_path).save("alice", adapter, _manifest("bob"))


# --- promotion, rejection, rollback -------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "current", "tolerance", "promote"),
    [
        (1.0, 2.0, 0.0, True),  # better
        (2.0, 2.0, 0.0, True),  # equal is "not worse"
        (2.05, 2.0, 0.0, False),  # worse
        (2.05, 2.0, 0.1, True),  # worse, within tolerance
        (math.nan, 2.0, 0.0, False),  # a diverged run never passes
        (math.inf, 2.0, 0.0, False),
        (1.0, math.nan, 0.0, True),  # nothing sane to beat
    ],
)
def test_promotion_gate(candidate, current, tolerance, promote):
    ok, reason = promotion_gate(candidate, current, tolerance)
    assert ok is promote
    assert "candidate probe loss" in reason


def test_promotion_gate_rejects_a_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance=-0.1"):
        promotion_gate(1.0, 1.0, tolerance=-0.1)


def test_a_gate_rejected_version_never_becomes_latest(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    v1 = _save(store, "alice", adapter)
    store.promote("alice", v1)
    v2 = _save(store, "alice", adapter)
    ok, reason = promotion_gate(candidate_probe_loss=2.5, current_probe_loss=2.0)
    assert not ok
    store.reject("alice", v2, reason)
    assert store.latest("alice") == v1
    assert [(m.status, m.status_reason) for m in store.list("alice")] == [("promoted", ""), ("rejected", reason)]
    with pytest.raises(ValueError, match="rejected"):
        store.promote("alice", v2)
    assert store.latest("alice") == v1
    with pytest.raises(ValueError, match="use rollback"):
        store.reject("alice", v1, "changed my mind")


def test_rollback_restores_the_previous_promoted_version_then_the_base(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    for _ in range(3):
        _save(store, "alice", adapter)
    store.promote("alice", 1)
    store.reject("alice", 2, "worse on probe")
    store.promote("alice", 3)
    assert store.latest("alice") == 3

    assert store.rollback("alice") == 1  # skips the rejected v2
    assert store.latest("alice") == 1
    assert store.rollback("alice") is None  # back to the base model
    assert store.latest("alice") is None
    assert not (tmp_path / "alice" / LATEST).exists()
    assert [m.status for m in store.list("alice")] == ["rolled_back", "rejected", "rolled_back"]
    with pytest.raises(ValueError, match="nothing to roll back"):
        store.rollback("alice")

    store.promote("alice", 3)  # a rolled-back version can be re-promoted
    assert store.latest("alice") == 3


def test_latest_pointer_is_a_plain_file_and_no_temp_files_remain(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    store.promote("alice", _save(store, "alice", adapter))
    user_dir = tmp_path / "alice"
    assert (user_dir / LATEST).read_text() == "1\n"
    assert sorted(p.name for p in user_dir.iterdir()) == [LATEST, "v1"]
    assert [p for p in user_dir.rglob(".tmp-*")] == []


def test_a_corrupt_latest_pointer_is_reported(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    _save(store, "alice", adapter)
    (tmp_path / "alice" / LATEST).write_text("7\n")
    with pytest.raises(ValueError, match="not a complete version"):
        store.latest("alice")


# --- users ----------------------------------------------------------------------------


def test_each_users_folder_holds_only_that_users_versions(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    for user in ["alice", "bob", "alice"]:
        _save(store, user, adapter)
    store.promote("bob", 1)
    assert store.users() == ["alice", "bob"]
    assert [m.version for m in store.list("alice")] == [1, 2]
    assert [m.version for m in store.list("bob")] == [1]
    for user in ["alice", "bob"]:
        for version_dir in (tmp_path / user_file_name(user)).glob("v*"):
            manifest = json.loads((version_dir / MANIFEST).read_text())
            assert manifest["user_id"] == user
            assert all(sample_id.startswith(f"{user}-") for sample_id in manifest["sample_ids"])
    assert store.latest("alice") is None and store.latest("bob") == 1


def test_a_path_traversing_user_stays_inside_the_store(tmp_path, adapter):
    root = tmp_path / "store"
    store = AdapterStore(root)
    store.save("../evil", adapter, _manifest("../evil"))
    assert store.path("../evil", 1).resolve().is_relative_to(root.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert store.users() == ["../evil"]


def test_a_device_name_user_gets_a_hashed_folder_and_an_older_plain_folder_is_still_read(tmp_path, adapter):
    store = AdapterStore(tmp_path / "new")
    _save(store, "con", adapter)
    assert [p.name for p in (tmp_path / "new").iterdir()] == [user_file_name("con")] != ["con"]
    # A store written before device names were hashed holds the plain folder "con".
    (tmp_path / "new" / user_file_name("con")).rename(tmp_path / "new" / "con")
    store.promote("con", 1)
    assert store.users() == ["con"] and store.latest("con") == 1
    assert _save(store, "con", adapter) == 2 and [p.name for p in (tmp_path / "new").iterdir()] == ["con"]


# --- loading ----------------------------------------------------------------------------


def test_load_adapter_applies_a_trained_adapter(tmp_path, adapter):
    store = AdapterStore(tmp_path)
    version = _save(store, "alice", adapter)
    model, _ = tiny_llama(seed=0)
    probe = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        base = model(input_ids=probe).logits
    loaded = load_adapter(model, store.path("alice", version))
    with torch.no_grad():
        assert (loaded(input_ids=probe).logits - base).abs().max() > 1e-3
        assert torch.allclose(loaded(input_ids=probe).logits, adapter(input_ids=probe).logits, atol=1e-5)
    assert not loaded.training


def test_load_adapter_raises_on_a_no_op_adapter(tmp_path):
    store = AdapterStore(tmp_path)
    version = _save(store, "alice", _lora(zero=True))
    model, _ = tiny_llama(seed=0)
    with pytest.raises(AdapterNotAppliedError, match="not applied"):
        load_adapter(model, store.path("alice", version))
    assert not hasattr(model, "peft_config")  # unwrapped again: the base model is usable as before


def test_load_adapter_raises_on_a_directory_without_an_adapter(tmp_path):
    model, _ = tiny_llama(seed=0)
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_adapter(model, tmp_path)


# --- data digest ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ([("1", "x"), ("2", "y")], [("2", "y"), ("1", "x")], True),  # order does not matter
        ([("1", "x")], [("1", "y")], False),  # text matters
        ([("1", "x")], [("2", "x")], False),  # ids matter
        ([("1", "ab"), ("2", "c")], [("1", "a"), ("2", "bc")], False),  # field boundaries matter
        ([], [], True),
    ],
)
def test_training_data_digest(a, b, same):
    assert (training_data_digest(a) == training_data_digest(b)) is same


def test_train_save_load_round_trip(tmp_path):
    from models.lm import weights_digest
    from models.train import mean_loss, train_lora

    pairs = [("Say hi", "Hello there!"), ("2+2?", "Four.")]
    model, tokenizer = tiny_llama(seed=0)
    digest = weights_digest(model)
    config = TrainConfig(lr=3e-2, max_steps=3)
    trained, report = train_lora(model, tokenizer, pairs, config)
    loss = mean_loss(trained, tokenizer, pairs, max_seq_len=config.max_seq_len)
    store = AdapterStore(tmp_path)
    manifest = _manifest("alice", base_weights_digest=digest, train_report=report.to_dict(), seed=config.seed)
    version = store.save("alice", trained, manifest)

    fresh, _ = tiny_llama(seed=0)
    assert weights_digest(fresh) == store.list("alice")[0].base_weights_digest  # the base it was trained on
    loaded = load_adapter(fresh, store.path("alice", version))
    assert mean_loss(loaded, tokenizer, pairs, max_seq_len=config.max_seq_len) == pytest.approx(loss, rel=1e-6)


# --- integrity: safetensors only, weights as the manifest recorded them -------------------


def test_the_manifest_records_the_sha256_of_the_weights_file(tmp_path, adapter):
    import hashlib

    store = AdapterStore(tmp_path)
    version = _save(store, "alice", adapter)
    weights = store.path("alice", version) / "adapter_model.safetensors"
    (manifest,) = store.list("alice")
    assert manifest.weights_sha256 == {"adapter_model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert store.integrity("alice", version) == "ok"


def test_a_swapped_weights_file_is_refused_and_the_model_is_left_unwrapped(tmp_path, adapter):
    from models.adapters import AdapterIntegrityError

    store = AdapterStore(tmp_path)
    first, second = _save(store, "alice", adapter), _save(store, "alice", _lora(seed=2))
    # Someone replaces v1's weights with other (valid, loadable) weights.
    (store.path("alice", first) / "adapter_model.safetensors").write_bytes(
        (store.path("alice", second) / "adapter_model.safetensors").read_bytes())
    model, _ = tiny_llama(seed=0)
    with pytest.raises(AdapterIntegrityError, match="changed after training"):
        load_adapter(model, store.path("alice", first))
    assert not hasattr(model, "peft_config")
    assert store.integrity("alice", first).startswith("REFUSED")
    assert store.integrity("alice", second) == "ok"
    load_adapter(model, store.path("alice", second)).unload()  # the untouched version still loads


def test_a_warm_start_from_a_swapped_adapter_is_refused(tmp_path, adapter):
    from models.adapters import AdapterIntegrityError
    from models.train import train_lora

    store = AdapterStore(tmp_path)
    version = _save(store, "alice", adapter)
    weights = store.path("alice", version) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    model, tokenizer = tiny_llama(seed=0)
    with pytest.raises(AdapterIntegrityError, match="sha256"):
        train_lora(model, tokenizer, [("q", "a")], TrainConfig(max_steps=1), init_adapter=store.path("alice", version))


@pytest.mark.parametrize("keep_safetensors", [False, True])
def test_a_pickled_adapter_model_bin_is_refused(tmp_path, adapter, keep_safetensors):
    from peft import get_peft_model_state_dict

    from models.adapters import AdapterIntegrityError

    store = AdapterStore(tmp_path)
    path = store.path("alice", _save(store, "alice", adapter))
    torch.save(get_peft_model_state_dict(adapter), path / "adapter_model.bin")  # what an old or hostile writer leaves
    if not keep_safetensors:
        (path / "adapter_model.safetensors").unlink()
    model, _ = tiny_llama(seed=0)
    with pytest.raises(AdapterIntegrityError, match=r"pickle-format weights \['adapter_model.bin'\]"):
        load_adapter(model, path)
    assert not hasattr(model, "peft_config")


def test_an_old_manifest_without_a_digest_still_loads_with_a_warning(tmp_path, adapter, caplog):
    store = AdapterStore(tmp_path)
    version = _save(store, "alice", adapter)
    manifest_path = store.path("alice", version) / MANIFEST
    data = json.loads(manifest_path.read_text())
    del data["weights_sha256"]  # as written before digests were recorded
    manifest_path.write_text(json.dumps(data))
    assert store.list("alice")[0].weights_sha256 == {}
    model, _ = tiny_llama(seed=0)
    with caplog.at_level("WARNING", logger="models.adapters"):
        load_adapter(model, store.path("alice", version)).unload()
    assert any("loading it unverified" in r.getMessage() for r in caplog.records)
    assert store.integrity("alice", version) == "unverified"


def test_every_file_of_the_store_is_private_whatever_the_umask(tmp_path, adapter):
    import os
    import stat

    old = os.umask(0)
    try:
        store = AdapterStore(tmp_path / "adapters")
        store.promote("alice", _save(store, "alice", adapter))
        store.reject("alice", _save(store, "alice", adapter), "worse")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert {p: m for p, m in modes.items() if m != (0o700 if (tmp_path / p).is_dir() else 0o600)} == {}
    assert "adapters/alice/latest" in modes and "adapters/alice/v2/adapter_model.safetensors" in modes
