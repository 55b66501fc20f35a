"""What a generated module does wherever it is written and however it is called."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest
import sympy as sp

import symgrad
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


# ------------------------------------------------ NumPy semantics with Python floats

w, x = sp.symbols("w x")


@pytest.mark.parametrize(
    "expr",
    [w * sp.log(x), 1 / x, x**-1, x**-2, w / x, w * x**-3, sp.Mod(w, x), w / (w * x)],
    ids=str,
)
@pytest.mark.parametrize("zero", [0.0, 0], ids=["float", "int"])
def test_python_numbers_get_numpy_semantics_not_zero_division(expr, zero):
    """Outside the domain the numpy target returns inf/nan with a RuntimeWarning,
    whether it is called with Python numbers or NumPy scalars (seed 000's w*log(x)
    at x = 0.0 raised ZeroDivisionError: `w / x` in the backward pass)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", symgrad.SymgradWarning)
        module = symgrad.compile(expr, wrt=[w, x])

    def results(**point):
        y, tape = module.forward(**point)
        return (
            y,
            module.backward(tape),
            module.backward(tape, dy=point["w"]),
            module.value_and_grad(**point),
            module.grad(**point),
        )

    with pytest.warns(RuntimeWarning):
        plain = results(w=1, x=zero)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        numpy = results(w=np.int64(1), x=np.asarray(zero)[()])  # NumPy scalars
    np.testing.assert_equal(plain, numpy)


def test_a_mean_over_an_empty_batch_does_not_divide_by_a_python_zero():
    module = symgrad.compile(ROOT / "examples" / "mlp.yaml")
    X, Y = np.zeros((0, 2)), np.zeros((0, 3))
    W1, b1, W2, b2 = np.ones((2, 4)), np.ones(4), np.ones((4, 3)), np.ones(3)
    with pytest.warns(RuntimeWarning):
        L, tape = module.forward(X, Y, W1, b1, W2, b2)
        grads = module.backward(tape, dy=1.0)
    assert np.isnan(L)
    np.testing.assert_equal(grads.W1, np.zeros((2, 4)))


def test_a_division_prints_np_divide_only_where_both_sides_may_be_python_numbers():
    text = (ROOT / "generated" / "udl_toy.py").read_text()
    assert "dy_df3 = dy_dh4 / f3" in text  # f3 is a NumPy scalar: / is safe and fast
    assert "np.divide" not in text
    assert (
        "J = np.divide(1, w)"
        in (ROOT / "generated" / "derivative_inverse.py").read_text()
    )
