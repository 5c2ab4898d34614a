"""The command line's settings flags, generated from the settings tree.

Every leaf field of :class:`operators.config.Settings` is a flag, its dotted path in
kebab case (``--buffer.dup-threshold``), whose destination is that path, whose help is the field's
description and whose choices come from its ``Literal`` type; its default stays
``None``, so an unset flag leaves the value to ``EDGETUNE_*``, ``--config`` and the
tree's default. The common fields also answer to a short name (``ALIASES``). A flag
that is not a setting is listed in ``NOT_SETTINGS`` with the reason.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_settings(p, ("buffer",))
>>> args = p.parse_args(["--capacity", "8", "--buffer.weights", "1", "0", "1"])
>>> overrides(args)
{'buffer.capacity': 8, 'buffer.weights': [1.0, 0.0, 1.0]}
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from operators.config import Settings

# Sections whose flags every settings-taking command has; "source", "kafka" and "generate"
# are added by the commands that use them.
COMMON = ("", "model", "embed", "scoring", "buffer", "output", "metrics", "annotation", "synth", "train", "privacy")

ALIASES: dict[str, tuple[str, ...]] = {
    "seed": ("--seed",), "max_chars": ("--max-chars",), "workers": ("--workers",),
    "model.lm": ("--model",), "model.dtype": ("--dtype",),
    "embed.kind": ("--embedder",), "embed.max_tokens": ("--max-tokens",), "embed.batch_size": ("--batch-size",),
    "embed.torch_threads": ("--torch-threads",),
    "scoring.lexicons": ("--lexicons",),
    "buffer.policy": ("--policy",), "buffer.capacity": ("--capacity",), "buffer.dup_threshold": ("--dup-threshold",),
    "output.dir": ("--out",), "metrics.port": ("--metrics-port",),
    "annotation.replay_answers": ("--answers",),
    "synth.k": ("--synth-k",),
    "privacy.pii": ("--pii",),
    "train.window_events": ("--window",), "train.window_seconds": ("--window-seconds",),
    "source.dataset": ("--dataset",), "source.format": ("--format",), "source.users": ("--users",),
    "source.split": ("--split",), "source.limit": ("--limit",), "source.rate": ("--rate",),
    "source.heldout": ("--heldout",),
    "kafka.brokers": ("--kafka",), "kafka.events_topic": ("--events-topic",),
    "kafka.dead_letter_topic": ("--dead-letter-topic",), "kafka.starting": ("--starting",),
    "kafka.idle_stop_s": ("--idle-stop",),
    "generate.max_new_tokens": ("--max-new-tokens",), "generate.no_repeat_ngram_size": ("--no-repeat-ngram-size",),
    "serve.host": ("--host",), "serve.port": ("--port",), "serve.with_stream": ("--with-stream",),
}
# Booleans whose short form is the negation that users reach for.
NEGATIONS = {"train.enabled": "--no-train"}
# Positional arguments that are settings.
POSITIONAL = {"source.path": "path"}

NOT_SETTINGS: dict[str, str] = {
    "command": "the subcommand",
    "config": "the YAML file the settings are read from",
    "verbose": "logging level of this invocation",
    "all": "shorthand for --limit none",
    "recovery_dir": "Bytewax's recovery store: a property of the execution, not of what the stream computes",
    "epoch_seconds": "Bytewax's checkpoint interval, used with --recovery-dir",
    "no_progress": "terminal display",
    "create_topics": "a one-off administrative action before the run",
    "partitions": "used only by --create-topics",
    "action": "the adapters subcommand's verb",
    "user": "which user a command acts on",
    "prompt": "the text to answer",
    "version": "which adapter version answers",
    "heldout": "eval's input file",
    "limit": "eval: prompts per user, a property of the evaluation",
    "versions": "which adapter versions eval scores",
    "report": "where eval writes its JSON",
    "out": "summary's folder to read",
    "print_user_token": "serve: prints a user's bearer token and exits, an administrative action",
    "page": "summary paging", "page_size": "summary paging", "examples": "summary display",
}


class _ExplicitNone:
    """A flag given the value ``none``: sets an optional field to None (an unset flag is plain None)."""

    def __repr__(self) -> str:
        return "None"


NONE = _ExplicitNone()


def leaves(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of the tree by dotted path, with its FieldInfo."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out.update(leaves(info.annotation, path + "."))
        else:
            out[path] = info
    return out


def add_settings(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """Add the flags of the given sections ("" is the top level) in one argument group per section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, info in leaves().items():
        section = path.rpartition(".")[0]
        if section not in sections:
            continue
        if section not in groups:
            title = f"settings: {section}" if section else "settings"
            groups[section] = parser.add_argument_group(title, "(override EDGETUNE_* variables and --config)"
                                                        if not section else None)
        _add(groups[section], path, info)


def _add(group: argparse._ArgumentGroup, path: str, info: Any) -> None:
    kind, optional = _unwrap(info.annotation)
    helptext = (info.description or "") + f" (default: {_show(info.default)})"
    helptext = helptext.replace("%", "%%")
    if path in POSITIONAL:
        group.add_argument(path, nargs="?", type=Path, metavar=POSITIONAL[path], help=helptext)
        return
    long = flag(path)
    flags = [long, *(a for a in ALIASES.get(path, ()) if a != long)]
    metavar = path.rpartition(".")[2].upper()
    kwargs: dict[str, Any] = {"dest": path, "default": None, "help": helptext}
    if kind is bool:
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        if path in NEGATIONS:
            group.add_argument(NEGATIONS[path], action="store_false", dest=path, default=None,
                               help=f"Same as --no-{path}.")
        return
    if get_origin(kind) is Literal:
        kwargs["choices"] = [*get_args(kind), *([NONE] if optional else [])]
        kwargs["type"] = _none_or(str) if optional else str
    elif get_origin(kind) is tuple:
        items = get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:
            kwargs.update(nargs="+", type=items[0], metavar=metavar)
        else:
            kwargs.update(nargs=len(items), type=items[0], metavar=(metavar,) * len(items))
    else:
        kwargs.update(type=_none_or(kind) if optional else kind, metavar=metavar)
    group.add_argument(*flags, **kwargs)


def flag(path: str) -> str:
    """A field's long flag: its dotted path in kebab case.

    >>> flag("buffer.dup_threshold")
    '--buffer.dup-threshold'
    """
    return "--" + path.replace("_", "-")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``(the type, whether None is allowed)`` of ``X | None`` or ``Optional[X]``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return annotation, False


def _none_or(kind: Any):
    def convert(text: str) -> Any:
        return NONE if text.lower() in ("none", "null") else kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def _show(value: Any) -> str:
    return "none" if value is None else " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags that were given, by dotted path; ``none`` becomes :data:`NONE`."""
    known = leaves()
    return {k: v for k, v in vars(args).items() if k in known and v is not None}
