"""What every cell records about how it was made (the command, the machine), and reading cells back."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from .plan import Cell, TableConfig


_ARGV: list[str] = []  # the arguments main() was called with, for the report's "command" lines
_POLICY_TABLE = "benchmarks.policy_table"
_MODULE = _POLICY_TABLE  # the module whose main() that was


def set_command_args(argv: Sequence[str], module: str = _POLICY_TABLE) -> None:
    """The arguments ``main()`` of ``module`` was called with, which :func:`command_line` names.

    >>> set_command_args(["run", "--only", "sdss"], module="benchmarks.selection"); command_line()
    'python -m benchmarks.selection run --only sdss'
    >>> set_command_args([])
    """
    global _ARGV, _MODULE
    _ARGV, _MODULE = list(argv), module


def command_line() -> str:
    return shlex.join(["python", "-m", _MODULE, *_ARGV])


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_info = "torch not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}, {torch_info}"


def read_cell(cell: Cell, out: Path) -> dict | None:
    path = cell.path(out)
    return json.loads(path.read_text()) if path.is_file() else None


def check_compatible(done: Iterable[dict], cfg: TableConfig, out: Path) -> None:
    for result in done:
        if result.get("config_digest") != cfg.digest():
            diff = {k: (v, result["config"].get(k)) for k, v in dataclasses.asdict(cfg).items() if result["config"].get(k) != v}
            raise SystemExit(
                f"{out} holds cell {result['dataset']}/{result['row']}/seed{result['seed']} made with another "
                f"configuration (now vs then: {diff}); use the same knobs, or --out <another folder>"
            )
