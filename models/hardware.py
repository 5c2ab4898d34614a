"""Which arithmetic this machine runs fastest: bf16 or fp32, and how many torch threads.

The same code runs on CPUs where bf16 is several times faster than fp32 (Intel Xeon with
AMX: a 576x1536 Linear on 512 rows at 1,360 against 197 GFLOP/s) and on CPUs where it is
several times slower (AMD EPYC with AVX2 only: bf16 emulated, 5x slower). So the choice is
measured, not assumed:

- **dtype** (``choose_dtype``): without ``avx512_bf16`` or ``amx_bf16`` in the CPU flags
  bf16 has no native instructions and fp32 is kept without measuring. With them, a short
  micro-benchmark (the model's own Linear shape, fp32 against bf16, interleaved, median of
  a few repeats at 1 thread, ~0.5 s) decides: bf16 when it is at least ``BF16_MIN_SPEEDUP``
  times faster. The verdict is cached per CPU model, flags and torch version in a small JSON
  file (``hardware.json`` under the model cache dir), so later runs decide in no time.
- **threads** (``choose_threads``): measured at every start, never cached, because it
  depends on what else the machine is doing right now. The same matmul at 1 thread and at
  all usable cores; all cores only if they give at least ``THREADS_MIN_SPEEDUP`` times the
  1-thread throughput, else 1. On an idle 2-core machine that is 2; while other processes
  keep the cores busy it is 1 (OpenMP threads that wait for a descheduled sibling made a
  forward pass up to 9x slower at 2 threads than at 1).

bf16 is used as *compute* dtype only: the weights stay fp32 (so the base model's digest,
its adapters and fp32 runs are unaffected) and the stages run under ``torch.autocast``
(``compute_context``); LoRA parameters and their optimizer state stay fp32 (master weights).

>>> decide_dtype("fp32", flags=set(), measure=None).dtype
'float32'
>>> decide_dtype("auto", flags={"avx2"}, measure=None).reason
'no avx512_bf16/amx_bf16 in the CPU flags: bf16 would be emulated'
>>> decide_dtype("auto", flags={"avx512_bf16"}, measure=lambda: (100.0, 230.0)).dtype
'bfloat16'
>>> decide_dtype("auto", flags={"avx512_bf16"}, measure=lambda: (100.0, 105.0)).dtype
'float32'
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Requested = Literal["auto", "fp32", "bf16"]
ComputeDtype = Literal["float32", "bfloat16"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_SPEEDUP = 1.2  # below this the rounding to bf16 is not worth it
THREADS_MIN_SPEEDUP = 1.3  # all cores must beat 1 thread clearly: contention costs far more than it gains
CACHE_FILE = "hardware.json"
_CACHE_VERSION = 1
# The model's own projection shape (SmolLM2-135M's MLP up-projection, a batch of prompts).
_ROWS, _IN, _OUT = 512, 576, 1536


@dataclass(frozen=True)
class DtypeChoice:
    """The compute dtype and why.

    Attributes:
        dtype: ``"float32"`` or ``"bfloat16"``.
        reason: one line for the log and ``edgetune config``.
        fp32_gflops, bf16_gflops: the micro-benchmark (1 thread), when one ran.
        cpu: the CPU model the choice belongs to.
        cached: the choice was read from the cache file.
    """

    dtype: ComputeDtype
    reason: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    cpu: str = ""
    cached: bool = False


@dataclass(frozen=True)
class ThreadChoice:
    """The torch intra-op thread count and why (``gflops`` maps threads to measured GFLOP/s)."""

    threads: int
    reason: str
    gflops: dict[int, float] | None = None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else ``"unknown"``."""
    info = _cpuinfo_field("model name")
    return info or platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU feature flags (``/proc/cpuinfo``), empty where they cannot be read."""
    return set((_cpuinfo_field("flags") or "").split())


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decide_dtype(requested: Requested, flags: set[str], measure: Callable[[], tuple[float, float]] | None,
                 cpu: str = "") -> DtypeChoice:
    """The compute dtype for ``requested`` on a CPU with ``flags``; ``measure()`` returns
    ``(fp32_gflops, bf16_gflops)`` and is called only when ``auto`` needs it."""
    if requested == "fp32":
        return DtypeChoice("float32", "asked for fp32 (--dtype fp32)", cpu=cpu)
    if requested == "bf16":
        native = any(f in flags for f in BF16_FLAGS)
        note = "" if native else " (no native bf16 on this CPU: correct but slower)"
        return DtypeChoice("bfloat16", f"asked for bf16 (--dtype bf16){note}", cpu=cpu)
    if requested != "auto":
        raise ValueError(f"model.dtype={requested!r} is not supported; use 'auto', 'fp32' or 'bf16'")
    if not any(f in flags for f in BF16_FLAGS):
        return DtypeChoice("float32", "no avx512_bf16/amx_bf16 in the CPU flags: bf16 would be emulated", cpu=cpu)
    if measure is None:
        raise ValueError("decide_dtype('auto') on a CPU with bf16 flags needs a measure function")
    fp32, bf16 = measure()
    speedup = bf16 / fp32 if fp32 > 0 else 0.0
    dtype: ComputeDtype = "bfloat16" if speedup >= BF16_MIN_SPEEDUP else "float32"
    verdict = "faster" if dtype == "bfloat16" else f"not {BF16_MIN_SPEEDUP}x faster"
    return DtypeChoice(dtype, f"bf16 matmul {speedup:.2f}x fp32 ({bf16:.0f} vs {fp32:.0f} GFLOP/s, 1 thread): {verdict}",
                       fp32_gflops=round(fp32, 1), bf16_gflops=round(bf16, 1), cpu=cpu)


def choose_dtype(requested: Requested, cache_dir: Path | None) -> DtypeChoice:
    """``decide_dtype`` for this machine; ``auto`` verdicts are cached per CPU model under ``cache_dir``.

    A cache file that cannot be read or written is ignored (the measurement is repeated).
    """
    cpu, flags = cpu_model(), cpu_flags()
    if requested != "auto":
        return decide_dtype(requested, flags, None, cpu)
    key = _cache_key(cpu, flags)
    path = Path(cache_dir).expanduser() / CACHE_FILE if cache_dir is not None else None
    cached = _read_cache(path).get(key) if path is not None else None
    if cached is not None:
        try:
            return DtypeChoice(**{**cached, "cached": True})
        except TypeError:
            pass  # an older layout: measure again
    choice = decide_dtype("auto", flags, lambda: measure_dtypes(), cpu)
    if path is not None:
        _write_cache(path, key, {k: v for k, v in asdict(choice).items() if k != "cached"})
    return choice


def measure_dtypes(repeats: int = 5) -> tuple[float, float]:
    """``(fp32, bf16)`` GFLOP/s of the model's Linear shape at 1 thread, interleaved, median of ``repeats``."""
    import torch

    with _threads(1):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(_ROWS, _IN, generator=g)
        w = torch.randn(_OUT, _IN, generator=g)
        pairs = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
        times: dict = {dtype: [] for dtype in pairs}
        for _ in range(repeats):
            for dtype, (a, b) in pairs.items():
                times[dtype].append(_time_matmul(a, b, calls=4))
    flops = 2 * _ROWS * _IN * _OUT
    return tuple(flops / statistics.median(times[d]) / 1e9 for d in (torch.float32, torch.bfloat16))  # type: ignore[return-value]


def choose_threads(requested: int | None, dtype: ComputeDtype = "float32", cores: int | None = None,
                   measure: Callable[[int], float] | None = None) -> ThreadChoice:
    """``requested`` threads, or (``None``) 1 or all usable cores, whichever the matmul measures faster now.

    >>> choose_threads(3).threads
    3
    >>> choose_threads(None, cores=1).reason
    'one usable core'
    >>> choose_threads(None, cores=2, measure=lambda n: {1: 50.0, 2: 95.0}[n]).threads
    2
    >>> choose_threads(None, cores=2, measure=lambda n: {1: 50.0, 2: 55.0}[n]).threads  # contended
    1
    """
    if requested is not None:
        return ThreadChoice(requested, f"asked for {requested} (--torch-threads)")
    cores = usable_cores() if cores is None else cores
    if cores == 1:
        return ThreadChoice(1, "one usable core")
    measure = measure or functools.partial(measure_threads, dtype=dtype)
    # Interleaved, so that a burst of load hits both counts alike.
    runs: dict[int, list[float]] = {1: [], cores: []}
    for _ in range(3):
        for n in runs:
            runs[n].append(measure(n))
    gflops = {n: round(statistics.median(v), 1) for n, v in runs.items()}
    speedup = gflops[cores] / gflops[1] if gflops[1] > 0 else 0.0
    threads = cores if speedup >= THREADS_MIN_SPEEDUP else 1
    why = "free cores" if threads == cores else f"contended: under {THREADS_MIN_SPEEDUP}x"
    return ThreadChoice(threads, f"{cores} threads {speedup:.2f}x 1 thread ({gflops[cores]:.0f} vs {gflops[1]:.0f} "
                                 f"GFLOP/s): {why}", gflops)


def measure_threads(threads: int, dtype: ComputeDtype = "float32") -> float:
    """GFLOP/s of the model's Linear shape in ``dtype`` at ``threads`` threads (~0.1 s)."""
    import torch

    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    with _threads(threads):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(_ROWS, _IN, generator=g).to(torch_dtype)
        b = torch.randn(_OUT, _IN, generator=g).to(torch_dtype)
        seconds = _time_matmul(a, b, calls=4)
    return 2 * _ROWS * _IN * _OUT / seconds / 1e9


def check_compute_dtype(owner: str, dtype: object) -> None:
    """Raise a ``ValueError`` naming ``owner``'s field unless ``dtype`` is a compute dtype.

    >>> check_compute_dtype("EmbedConfig", "float16")
    Traceback (most recent call last):
    ...
    ValueError: EmbedConfig.dtype='float16' is not supported; use 'float32' or 'bfloat16' (model.dtype decides it)
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"{owner}.dtype={dtype!r} is not supported; use 'float32' or 'bfloat16' (model.dtype decides it)")


def torch_dtype(dtype: ComputeDtype):
    import torch

    check_compute_dtype("compute", dtype)
    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def compute_context(dtype: ComputeDtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 on CPU for ``"bfloat16"``, nothing for ``"float32"``.

    Under it, matmuls and linear layers run in bf16 with fp32 weights cast on the fly;
    reductions such as softmax and the loss stay fp32 (autocast's CPU op lists).
    """
    import torch

    if torch_dtype(dtype) is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


# --- internals -------------------------------------------------------------------


def _time_matmul(a, b, calls: int) -> float:
    """Seconds per ``a @ b.T`` (after one warm-up call)."""
    a @ b.T
    start = time.perf_counter()
    for _ in range(calls):
        a @ b.T
    return (time.perf_counter() - start) / calls


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cache_key(cpu: str, flags: set[str]) -> str:
    import torch

    bf16 = ",".join(f for f in BF16_FLAGS if f in flags) or "none"
    return f"{cpu} | {bf16} | torch {torch.__version__}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or not isinstance(data.get("cpus"), dict):
        return {}
    return data["cpus"]


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Merge ``entry`` under ``key`` and replace the file atomically; failures are logged, not raised."""
    try:
        cpus = _read_cache(path) | {key: entry}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": _CACHE_VERSION, "cpus": cpus}, f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as err:
        log.warning("could not write the arithmetic cache %s: %s", path, err)
