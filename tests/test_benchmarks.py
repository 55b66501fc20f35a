"""Smoke test of benchmarks/: every script runs with --quick and prints its tables.

Nothing here looks at a timing: the point is that the scripts keep working
(and that their references keep agreeing with symgrad, which each script
asserts before it times anything). The scripts run in this process, so
SymPy, JAX and PyTorch are imported once; one also runs as a subprocess,
the way a user runs it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))


def _load(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        f"benchmarks_{name}", BENCHMARKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_question_has_a_script():
    assert set(SCRIPTS) == {
        "argument_checks",
        "batched_throughput",
        "compile_time",
        "engine_targets",
        "grad_forward_ratio",
        "higher_order",
        "peak_memory",
        "scalar_latency",
        "tensors",
    }


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run(name, capsys):
    assert _load(name).main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "threads: pinned to 1" in out
    assert "| implementation" in out or "| k " in out
    assert "Traceback" not in out


def test_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peak_memory.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "## Targets of issue 5" in result.stdout
