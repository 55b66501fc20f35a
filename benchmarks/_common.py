"""Shared helpers of the benchmark scripts: thread pinning, timing, tables, optional tools.

Import this module before NumPy: it pins every math library to one thread
(OMP_NUM_THREADS=1 and friends) so that ratios compare like with like on any
machine, and puts the repository root on sys.path so that the scripts run
from a checkout without installing symgrad.
"""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# BENCH_THREADS=all: every library keeps its own thread count (a run reported
# separately from the pinned one).
ALL_THREADS = os.environ.get("BENCH_THREADS") == "all"
if not ALL_THREADS:
    for _variable in THREAD_VARIABLES:
        os.environ[_variable] = "1"
    # XLA (JAX) runs its CPU kernels on one thread too.
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
os.environ.setdefault("JAX_PLATFORMS", "cpu")
NUMPY_IMPORTED_BEFORE_PINNING = "numpy" in sys.modules

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
EXAMPLES = REPO / "examples"

import sympy as sp  # noqa: E402

import symgrad  # noqa: E402

# --------------------------------------------------------------------------- CLI


def parse_args(
    description: str, argv: Sequence[str] | None, **flags: str
) -> argparse.Namespace:
    """--quick, and each of `flags` (name -> help) as a further on/off option."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: small sizes, few repeats (numbers are not meaningful)",
    )
    for name, help_ in flags.items():
        parser.add_argument(f"--{name}", action="store_true", help=help_)
    return parser.parse_args(argv)


def print_header(title: str, quick: bool) -> None:
    """What ran where: the machine, the versions, the thread pinning."""
    print(f"# {title}")
    print()
    pinned = ", ".join(f"{v}={os.environ.get(v)}" for v in THREAD_VARIABLES[:3])
    note = (
        " (NumPy was imported before benchmarks/_common.py: pinning may not apply)"
        if NUMPY_IMPORTED_BEFORE_PINNING
        else ""
    )
    if ALL_THREADS:
        print(f"- threads: all (BENCH_THREADS=all), {os.cpu_count()} CPUs")
    else:
        print(f"- threads: pinned to 1 ({pinned}; JAX/PyTorch told the same){note}")
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        print(f"- CPUs this process may run on: {sorted(affinity(0))}")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs")
    print(
        f"- python {platform.python_version()}, numpy {np.__version__}, "
        f"sympy {sp.__version__}, symgrad {symgrad.__version__}"
    )
    print("- float64 throughout; times are medians of timeit.repeat")
    if quick:
        print("- QUICK smoke run: tiny sizes and repeats, the numbers mean nothing")
    print()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------ timing


def median_times(fns: dict[str, Callable[[], Any]], quick: bool) -> dict[str, float]:
    """Seconds per call of each function: the median of timeit.repeat.

    The repeats are interleaved (one of each function per round) so that a
    drift in the machine's speed moves every ratio's numerator and
    denominator alike. Each repeat runs a function for >= 0.1 s (0.002 s
    with `quick`); slow references make for fewer rounds.
    """
    target = 0.002 if quick else 0.1
    timers, numbers, round_seconds = {}, {}, 0.0
    for name, fn in fns.items():
        timers[name] = timeit.Timer(fn)
        first = timers[name].timeit(1)  # also a warm-up call
        numbers[name] = max(1, math.ceil(target / max(first, 1e-9)))
        round_seconds += max(target, first)
    if quick:
        rounds = 3
    else:
        rounds = 7 if round_seconds < 2 else 5 if round_seconds < 5 else 3
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(numbers[name]) / numbers[name])
    return {name: statistics.median(times) for name, times in samples.items()}


def median_time(fn: Callable[[], Any], quick: bool) -> float:
    """Seconds per call of `fn` (see `median_times`)."""
    return median_times({"fn": fn}, quick)["fn"]


def once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of a single call: for compile times."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated (tracemalloc, which NumPy reports to) while `fn` runs."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak - base


class TimeLimitExceeded(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeLimitExceeded in the block after `seconds` (SIGALRM; no limit elsewhere)."""
    usable = hasattr(signal, "setitimer") and (
        threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise TimeLimitExceeded(f"gave up after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------ correctness


def to_numpy(value: Any) -> Any:
    """Nested tuples/lists of numbers, NumPy, JAX or PyTorch arrays as NumPy arrays."""
    if isinstance(value, tuple | list):
        return [to_numpy(v) for v in value]
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def assert_agrees(
    label: str, got: Any, want: Any, rtol: float = 1e-7, atol: float = 1e-9
) -> None:
    """Raise AssertionError unless `got` equals `want` (value and gradients) elementwise."""
    got, want = to_numpy(got), to_numpy(want)
    _compare(label, got, want, rtol, atol)


def _compare(label: str, got: Any, want: Any, rtol: float, atol: float) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (
            f"{label}: {len(got) if isinstance(got, list) else 'no'} parts, "
            f"expected {len(want)}"
        )
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(f"{label}[{i}]", g, w, rtol, atol)
        return
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    np.testing.assert_allclose(
        got, want, rtol=rtol, atol=atol * scale, err_msg=f"{label} disagrees"
    )


# ------------------------------------------------------------------------ tables


@dataclass
class Row:
    """One implementation's measurement; `value` None means skipped (see `note`)."""

    name: str
    value: float | None
    note: str = ""


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(count: float) -> str:
    return f"{count / 2**20:.3g} MiB"


def format_ratio(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}×"


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def ratio_table(
    title: str,
    rows: Iterable[Row],
    references: Sequence[str],
    *,
    unit: str = "time",
) -> dict[str, Row]:
    """Print rows with their value and ratio against each named reference row."""
    rows = list(rows)
    by_name = {r.name: r for r in rows}
    fmt = format_seconds if unit == "time" else format_bytes
    headers = ["implementation", unit] + [f"÷ {ref}" for ref in references] + ["note"]
    cells = []
    for r in rows:
        line = [r.name, "skipped" if r.value is None else fmt(r.value)]
        for ref in references:
            reference = by_name.get(ref)
            line.append(format_ratio(ratio(r.value, reference and reference.value)))
        line.append(r.note)
        cells.append(line)
    print_table(title, headers, cells)
    return by_name


def print_table(title: str, headers: Sequence[str], cells: Sequence[Sequence]) -> None:
    """A Markdown table (pasteable into benchmarks/README.md)."""
    cells = [[str(c) for c in line] for line in cells]
    widths = [
        max(len(str(h)), *(len(line[i]) for line in cells)) if cells else len(str(h))
        for i, h in enumerate(headers)
    ]
    print(f"## {title}")
    print()
    print(
        "| "
        + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        + " |"
    )
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in cells:
        print(
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
            + " |"
        )
    print()


@dataclass
class Targets:
    """The issue's targets, each reported as met / not met with its number (never fails)."""

    lines: list[str] = field(default_factory=list)
    issue: int = 5

    def check(self, what: str, value: float | None, limit: float, unit: str = "×"):
        if value is None:
            self.lines.append(f"- {what} (target ≤ {limit:g}{unit}): not measured")
            return
        verdict = "met" if value <= limit else "NOT MET"
        shown = f"{value:.3g} s" if unit == " s" else f"{value:.2f}×"
        self.lines.append(f"- {what}: {shown} (target ≤ {limit:g}{unit}) — {verdict}")

    def print(self) -> None:
        if self.lines:
            print(f"## Targets of issue {self.issue}")
            print()
            print("\n".join(self.lines))
            print()


# ------------------------------------------------------------ symgrad and tools


def compile_or_skip(spec: Any, **options: Any) -> tuple[Any, str]:
    """(module, "") from symgrad.compile, or (None, why) if symgrad cannot compile it yet."""
    try:
        return symgrad.compile(spec, **options), ""
    except Exception as err:  # noqa: BLE001 - any failure means "not supported yet"
        message = str(err).splitlines()[0] if str(err) else ""
        return (
            None,
            f"symgrad cannot compile this yet ({type(err).__name__}: {message})",
        )


_TOOLS: dict[str, tuple[Any, str]] = {}


def tool(name: str) -> tuple[Any, str]:
    """(module, "") for an optional reference (jax, torch, autograd), or (None, why)."""
    if name not in _TOOLS:
        try:
            _TOOLS[name] = (_LOADERS[name](), "")
        except Exception as err:  # noqa: BLE001 - ImportError, or a broken install
            _TOOLS[name] = (None, f"{name} not installed ({type(err).__name__})")
    return _TOOLS[name]


def _load_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _load_torch():
    import torch

    if not ALL_THREADS:
        torch.set_num_threads(1)
        with contextlib.suppress(
            RuntimeError
        ):  # only settable before any parallel work
            torch.set_num_interop_threads(1)
    return torch


def _load_autograd():
    import autograd

    return autograd


def _load_numba():
    import numba

    return numba


_LOADERS = {
    "jax": _load_jax,
    "torch": _load_torch,
    "autograd": _load_autograd,
    "numba": _load_numba,
}
