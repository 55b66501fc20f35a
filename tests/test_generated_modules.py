"""What a generated module does wherever it is written and however it is called."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from symgrad import cli
from tests.conftest import ROOT

AMBIGUOUS_NAMES = """
name: ambiguous
inputs:
  x: {}
  O: {}
steps:
  I: x * O
  l: sin(I)
output: l
"""


def _ruff() -> str:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(ROOT / ".venv/bin"))
    if ruff is None:
        pytest.skip("ruff is not installed (pip install '.[test]')")
    return ruff


RULES = ([], ["--select", "E,F,W,I,B,UP"], ["--select", "E501,E741"])


def _ruff_clean(directory, cwd) -> None:
    """`ruff check` finds nothing in `directory` with ruff's defaults, the project's
    rules or E501/E741 alone, and no configuration file (as in a user's folder)."""
    ruff = _ruff()
    for rules in RULES:
        result = subprocess.run(
            [ruff, "check", "--isolated", "--no-cache", *rules, str(directory)],
            capture_output=True,
            text=True,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_user_names_l_I_O_are_ruff_clean_outside_the_project(tmp_path, target):
    """E741 (ambiguous variable name) must not fire on the user's names."""
    spec = tmp_path / "ambiguous.yaml"
    spec.write_text(AMBIGUOUS_NAMES)
    out = tmp_path / "out"
    assert cli.main(["compile", str(spec), "-o", str(out), "--target", target]) == 0
    noqa = (out / "ambiguous.py").read_text().splitlines()[1]
    assert noqa.startswith("# ruff: noqa: ") and "E741" in noqa
    _ruff_clean(out, tmp_path)


def test_golden_modules_are_ruff_clean_without_the_projects_configuration(tmp_path):
    _ruff_clean(ROOT / "generated", tmp_path)
    for path in sorted((ROOT / "generated").glob("*.py")):
        assert "E741" not in path.read_text(), path.name  # only where names need it
