"""A non-editable install into a fresh virtual environment works from any directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(*args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_wheel_installs_into_a_fresh_venv_and_compiles(tmp_path):
    pytest.importorskip(
        "hatchling", reason="the test extra installs hatchling to build offline"
    )
    source = tmp_path / "src"  # build from a copy: the checkout stays clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "__pycache__", ".*_cache", ".hypothesis"))  # fmt: skip
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("symgrad-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                     cwd=tmp_path).strip())  # fmt: skip
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel), cwd=tmp_path)  # fmt: skip
    # Then the dependencies come from this environment (symgrad itself from the wheel).
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    # the examples ship in the wheel: `symgrad examples` copies them here
    _run(str(env_dir / "bin" / "symgrad"), "examples", "ex", cwd=work)
    assert (work / "ex" / "udl_toy.yaml").read_bytes() == (
        ROOT / "examples/udl_toy.yaml"
    ).read_bytes()
    _run(
        str(env_dir / "bin" / "symgrad"),
        "compile",
        "ex/udl_toy.yaml",
        "-o",
        "out",
        cwd=work,
    )
    out = _run(str(python), "-c",
               "import symgrad, out.udl_toy as m; print(symgrad.__file__);"
               "print(m.grad(2.3, 1, 2, -3, 0.4, -0.3, 0.1, -0.4, 2, 3, -0.5).beta0)",
               cwd=work)  # fmt: skip
    installed_at, beta0 = out.split()
    assert installed_at.startswith(str(site)), "symgrad was not imported from the wheel"
    assert round(float(beta0), 3) == -0.646


def _release(version: str) -> tuple[int, ...]:
    """1.24 and 1.24.0 alike."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_the_lowest_versions_ci_tests_are_the_lower_bounds_of_pyproject():
    """.ci/lowest.txt pins each dependency (and test extra) to its lower bound."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for requirement in (
        project["dependencies"] + project["optional-dependencies"]["test"]
    ):
        name, low = re.fullmatch(
            r"([\w-]+)(?:\[[\w,]+\])?>=([\d.]+)", requirement
        ).groups()
        bounds[name.lower()] = _release(low)
    lines = (ROOT / ".ci" / "lowest.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert {name: _release(v) for name, v in pins.items()} == bounds
