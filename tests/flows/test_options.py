"""The command line against the settings tree: every field has a flag, every flag is a field or
has a stated reason, and the flags leave the defaults to the tree."""

from __future__ import annotations

import argparse

import pytest

from flows.cli import build_parser, settings_from_args
from flows.options import ALIASES, NEGATIONS, NOT_SETTINGS, POSITIONAL, flag, leaves


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_settings_field_has_a_flag_in_config():
    config = subparsers()["config"]
    dests = {a.dest for a in config._actions}
    missing = [path for path in leaves() if path not in dests]
    assert not missing, f"settings fields with no flag: {missing}"
    long_flags = {s for a in config._actions for s in a.option_strings}
    assert {flag(p) for p in leaves() if p not in POSITIONAL} <= long_flags


@pytest.mark.parametrize("command", sorted(subparsers()))
def test_every_flag_is_a_settings_field_or_says_why_not(command):
    fields = leaves()
    for action in subparsers()[command]._actions:
        if action.dest == "help":
            continue
        if action.dest in fields:
            assert action.default is None, f"{command} {action.option_strings}: the tree owns the default"
        else:
            assert NOT_SETTINGS.get(action.dest), f"{command} {action.option_strings or action.dest}: not a settings " \
                                                  "field and no reason in flows.options.NOT_SETTINGS"


def test_aliases_and_negations_name_real_fields():
    fields = leaves()
    assert set(ALIASES) <= set(fields) and set(NEGATIONS) <= set(fields) and set(POSITIONAL) <= set(fields)


def test_flag_help_is_the_field_description():
    config = subparsers()["config"]
    action = next(a for a in config._actions if a.dest == "buffer.capacity")
    assert action.help.startswith(leaves()["buffer.capacity"].description) and "(default: 64)" in action.help


def parse(*argv: str):
    return settings_from_args(build_parser().parse_args(["config", *argv]))


def test_flags_set_the_tree():
    s = parse("--capacity", "8", "--buffer.weights", "1", "0", "1", "--train.target-modules", "q_proj",
              "--no-train", "--embed.center", "--no-embed.center", "--kafka", "h:1", "--max-new-tokens", "5")
    assert s.buffer.capacity == 8 and s.buffer.weights == (1.0, 0.0, 1.0)
    assert s.train.target_modules == ("q_proj",) and s.train.enabled is False and s.embed.center is False
    assert s.kafka.brokers == "h:1" and s.generate.max_new_tokens == 5


def test_none_sets_an_optional_field_to_none_and_unset_flags_keep_the_defaults():
    assert parse("--limit", "none").source.limit is None
    assert parse("--all").source.limit is None
    assert parse("--window-seconds", "60").train.window_seconds == 60.0
    assert parse().source.limit == leaves()["source.limit"].default == 300


def test_a_bad_value_is_refused_by_the_tree_with_the_fields_name():
    with pytest.raises(ValueError, match="buffer.capacity"):
        parse("--capacity", "0")
    with pytest.raises(SystemExit):  # argparse: not a number
        parse("--capacity", "many")
