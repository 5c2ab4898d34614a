"""The arithmetic choice: dtype by CPU flags and a cached micro-benchmark, threads by a measurement now."""

from __future__ import annotations

import json

import pytest

from models import configure, hardware
from models.hardware import choose_dtype, choose_threads, decide_dtype
from operators.config import Settings


@pytest.mark.parametrize("requested, flags, speeds, expected", [
    ("fp32", {"avx512_bf16"}, None, "float32"),
    ("bf16", set(), None, "bfloat16"),  # forced: correct, only slower
    ("auto", {"avx2", "fma"}, None, "float32"),  # no native bf16: not even measured
    ("auto", {"avx512_bf16"}, (100.0, 250.0), "bfloat16"),
    ("auto", {"amx_bf16"}, (100.0, 119.0), "float32"),  # below BF16_MIN_SPEEDUP
    ("auto", {"amx_bf16"}, (100.0, 120.0), "bfloat16"),
])
def test_dtype_follows_the_flags_and_the_measurement(requested, flags, speeds, expected):
    calls = []

    def measure():
        calls.append(1)
        return speeds

    choice = decide_dtype(requested, flags, measure if speeds else None)
    assert choice.dtype == expected
    assert len(calls) == (1 if speeds else 0)


def test_bad_dtype_request_names_the_setting():
    with pytest.raises(ValueError, match="model.dtype='fp16'"):
        decide_dtype("fp16", set(), None)  # type: ignore[arg-type]


def test_auto_is_measured_once_per_cpu_model_then_read_from_the_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(hardware, "cpu_model", lambda: "Test CPU A")
    monkeypatch.setattr(hardware, "measure_dtypes", lambda: calls.append(1) or (80.0, 200.0))
    first = choose_dtype("auto", tmp_path)
    again = choose_dtype("auto", tmp_path)
    assert (first.dtype, first.cached, again.dtype, again.cached) == ("bfloat16", False, "bfloat16", True)
    assert len(calls) == 1
    assert again.bf16_gflops == 200.0 and "2.50x" in again.reason

    monkeypatch.setattr(hardware, "cpu_model", lambda: "Test CPU B")  # another CPU model: its own entry
    monkeypatch.setattr(hardware, "measure_dtypes", lambda: calls.append(1) or (80.0, 60.0))
    assert choose_dtype("auto", tmp_path).dtype == "float32"
    assert len(calls) == 2
    cpus = json.loads((tmp_path / hardware.CACHE_FILE).read_text())["cpus"]
    assert sorted(key.split(" | ")[0] for key in cpus) == ["Test CPU A", "Test CPU B"]


def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(hardware, "measure_dtypes", lambda: (80.0, 200.0))
    (tmp_path / hardware.CACHE_FILE).write_text("{not json")
    assert choose_dtype("auto", tmp_path).cached is False
    assert choose_dtype("auto", tmp_path).cached is True


def test_explicit_dtypes_never_measure_or_write(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "measure_dtypes", lambda: pytest.fail("measured"))
    assert choose_dtype("fp32", tmp_path).dtype == "float32"
    assert choose_dtype("bf16", tmp_path).dtype == "bfloat16"
    assert not (tmp_path / hardware.CACHE_FILE).exists()


def test_the_micro_benchmark_measures_both_dtypes():
    fp32, bf16 = hardware.measure_dtypes(repeats=1)
    assert fp32 > 0 and bf16 > 0


def test_threads_all_cores_only_when_they_clearly_beat_one():
    free = choose_threads(None, cores=4, measure=lambda n: {1: 40.0, 4: 130.0}[n])
    busy = choose_threads(None, cores=4, measure=lambda n: {1: 40.0, 4: 45.0}[n])
    assert (free.threads, busy.threads) == (4, 1)
    assert free.gflops == {1: 40.0, 4: 130.0} and "contended" in busy.reason
    assert choose_threads(2, cores=8).threads == 2  # --torch-threads wins
    assert choose_threads(None, cores=1).threads == 1


def test_the_thread_measurement_runs_and_restores_torch_threads():
    import torch

    before = torch.get_num_threads()
    assert hardware.measure_threads(1) > 0
    assert torch.get_num_threads() == before


def test_settings_dtype_reaches_every_stage_but_not_the_weights(tmp_path):
    s = Settings(model={"dtype": "bf16", "cache_dir": tmp_path})
    assert configure.lm_config(s).dtype == "float32"  # weights: digests and adapters do not depend on it
    assert {configure.embed_config(s).dtype, configure.train_config(s).dtype, configure.generate_config(s).dtype,
            configure.personalize_config(s).train.dtype} == {"bfloat16"}
    assert configure.train_config(Settings(model={"dtype": "fp32"})).dtype == "float32"


def test_the_selection_table_keeps_fp32_and_one_thread_whatever_auto_decides():
    """benchmarks/selection builds its model configs itself from TableConfig, never from Settings: the
    models/ dataclasses' own defaults are fp32, so `auto` cannot reach it."""
    from benchmarks.selection.plan import TableConfig
    from models.embed import EmbedConfig
    from models.generate import GenerateConfig
    from models.lm import LMConfig
    from models.train import TrainConfig

    assert (TableConfig().dtype, TableConfig().threads) == ("float32", 1)
    assert {LMConfig().dtype, EmbedConfig().dtype, TrainConfig().dtype, GenerateConfig().dtype} == {"float32"}


@pytest.mark.parametrize("config", ["EmbedConfig", "TrainConfig", "GenerateConfig"])
def test_model_configs_refuse_other_dtypes(config):
    import models.embed, models.generate, models.train  # noqa: E401

    cls = {"EmbedConfig": models.embed.EmbedConfig, "TrainConfig": models.train.TrainConfig,
           "GenerateConfig": models.generate.GenerateConfig}[config]
    with pytest.raises(ValueError, match=rf"{config}.dtype='float16'"):
        cls(dtype="float16")
