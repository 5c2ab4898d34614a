"""A default lives in the settings tree: the operators' and models' constructors default to it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from operators.config import BufferConfig, Settings
from operators.policies import POLICIES


@pytest.mark.parametrize("name", BufferConfig.model_fields["policy"].annotation.__args__)
def test_each_selectable_policy_defaults_to_the_shipped_buffer_settings(name):
    shipped = BufferConfig(policy=name)
    params = inspect.signature(POLICIES[name]).parameters
    for key, value in shipped.policy_params().items():
        assert params[key].default == value, (name, key)
    # every constructor parameter but the seed comes from the section
    assert set(params) - {"seed"} == set(shipped.policy_params())


def test_models_configs_default_to_the_settings_tree():
    from models.configure import embed_config, generate_config, lm_config, personalize_config
    from models.embed import EmbedConfig
    from models.generate import GenerateConfig
    from models.lm import LMConfig
    from models.personalize import PersonalizeConfig

    # model.dtype ships as "auto", which each machine resolves (bf16 where its CPU computes it faster):
    # a constructor cannot know the machine, so its compute dtype defaults to fp32, what "auto" gives
    # without bf16 arithmetic. Every other field must equal the tree's default.
    from models.configure import compute_dtype

    s = Settings()
    resolved = compute_dtype(s)
    assert resolved in ("float32", "bfloat16")

    def machine(cfg):
        if isinstance(cfg, PersonalizeConfig):
            return dataclasses.replace(cfg, train=machine(cfg.train))
        # decoding stays fp32 under auto (models/configure.py::generation_dtype); the weights always load in fp32
        return cfg if isinstance(cfg, (LMConfig, GenerateConfig)) else dataclasses.replace(cfg, dtype=resolved)

    for built, cls in ((embed_config(s), EmbedConfig), (generate_config(s), GenerateConfig), (lm_config(s), LMConfig),
                       (personalize_config(s), PersonalizeConfig)):
        assert built == machine(cls()), cls.__name__
    # the weights load in fp32 whatever the compute dtype; fp32 settings give the constructors' defaults exactly
    assert lm_config(s).dtype == "float32"
    fp32 = Settings(model={"dtype": "fp32"})
    for built, cls in ((embed_config(fp32), EmbedConfig), (generate_config(fp32), GenerateConfig),
                       (personalize_config(fp32), PersonalizeConfig)):
        assert built == cls(), cls.__name__


def test_the_train_sections_bounds_are_the_trainers():
    from models.train import TrainConfig

    with pytest.raises(ValueError, match="max_seq_len"):
        Settings(train={"max_seq_len": 47})
    with pytest.raises(ValueError, match="max_seq_len"):
        TrainConfig(max_seq_len=47)
    assert dataclasses.replace(TrainConfig(), max_seq_len=48).max_seq_len == 48
