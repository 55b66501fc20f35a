"""What a generated module does wherever it is written and however it is called."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import sympy as sp
import yaml

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


@pytest.mark.parametrize("count", [1, 4, 5, 6])
def test_the_argument_line_is_laid_out_as_ruff_format_would(tmp_path, count):
    """`a, b = _arrays(a, b)` on one line, the call's arguments on the next, the
    call in parentheses, or every name on a line of its own."""
    ruff = _ruff()
    names = [f"input_number_{i}" for i in range(count)]
    spec = {
        "name": f"many_{count}",
        "inputs": {name: {"shape": [2]} for name in names},
        "steps": {"y": "sum(" + " + ".join(names) + ")"},
        "output": "y",
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert cli.main(["compile", str(tmp_path / "spec.yaml"), "-o", str(tmp_path)]) == 0
    result = subprocess.run(
        [ruff, "format", "--check", "--isolated", "--no-cache", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


# ------------------------------------------------------------- argument handling


@pytest.fixture
def logreg():
    """A fresh module (its CHECK_ARGUMENTS and memory of shapes are its own)."""
    return symgrad.compile(ROOT / "examples" / "logistic_regression_batch.yaml")


X3 = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]
Y3 = [0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "w, y, message",
    [
        # seed 000's slip: a column where the spec says a vector (it returned a
        # wrong loss and a (2, 3) gradient)
        (
            np.array([[0.1], [0.2]]),
            Y3,
            "w has shape (2, 1); the spec declares w [d], where d = 2 (from X)",
        ),
        ([0.1, 0.2, 0.3], Y3, "w has shape (3,); the spec declares w [d], where d = 2"),
        (
            [0.1, 0.2],
            [0.0, 1.0],
            "y has shape (2,); the spec declares y [n], where n = 3",
        ),
        ([0.1, 0.2], 1.0, "y has shape (); the spec declares y [n]"),
    ],
)
def test_a_wrong_shape_is_a_value_error_naming_the_input(logreg, w, y, message):
    for call in (logreg.forward, logreg.value_and_grad, logreg.grad):
        with pytest.raises(ValueError, match=re.escape(message)):
            call(X3, y, w, 0.5)


def test_a_scalar_input_is_a_number_or_a_0d_array(logreg):
    value = logreg.value_and_grad(X3, Y3, [0.1, 0.2], 0.5)[0]
    for b in (np.float64(0.5), np.array(0.5)):
        assert logreg.value_and_grad(X3, Y3, [0.1, 0.2], b)[0] == value
    with pytest.raises(
        ValueError, match=re.escape("b has shape (1,); the spec declares b a scalar")
    ):
        logreg.value_and_grad(X3, Y3, [0.1, 0.2], [0.5])


def test_inner_dimensions_are_named_before_numpy_sees_them():
    module = symgrad.compile(ROOT / "examples" / "mlp.yaml")
    X, Y = np.ones((4, 3)), np.ones((4, 2))
    W1, b1, W2, b2 = np.ones((2, 5)), np.ones(5), np.ones((5, 2)), np.ones(2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "W1 has shape (2, 5); the spec declares W1 [d_in, d_hidden], where d_in = 3 (from X)"
        ),
    ):
        module.value_and_grad(X, Y, W1, b1, W2, b2)


def test_a_name_repeated_in_one_shape_takes_one_size():
    module = symgrad.compile(
        {
            "name": "quad",
            "inputs": {"A": {"shape": ["n", "n"]}, "x": {"shape": ["n"]}},
            "steps": {"q": "x @ A @ x"},
            "output": "q",
        }
    )
    assert module.value_and_grad(np.eye(3), [1.0, 2.0, 3.0])[0] == 14.0
    with pytest.raises(
        ValueError, match=re.escape("A has shape (3, 4); the spec declares A [n, n]")
    ):
        module.value_and_grad(np.ones((3, 4)), [1.0, 2.0, 3.0])


def test_lists_and_tuples_are_arrays_and_arrays_pass_unchanged(logreg):
    arrays = np.array(X3), np.array(Y3), np.array([0.1, 0.2])
    y, grads = logreg.value_and_grad(*arrays, 0.5)
    for args in ((X3, Y3, [0.1, 0.2]), (tuple(map(tuple, X3)), tuple(Y3), (0.1, 0.2))):
        y_, grads_ = logreg.value_and_grad(*args, 0.5)
        assert y_ == y
        np.testing.assert_array_equal(grads_.w, grads.w)
    _, tape = logreg.forward(*arrays, 0.5)
    assert all(getattr(tape, n) is a for n, a in zip("Xyw", arrays, strict=True))
    assert isinstance(logreg.forward(X3, Y3, [0.1, 0.2], 0.5)[1].X, np.ndarray)


def test_a_scalar_spec_takes_a_list_as_a_batch():
    """Today's `2*[1, 2]` repeated the list: a list is now the batch it means."""
    spec = {"inputs": {"x": {}, "c": {}}, "steps": {"y": "2*x + c"}, "output": "y"}
    module = symgrad.compile({"name": "double", **spec})
    for batch in ([1.0, 2.0], (1.0, 2.0)):
        y, grads = module.value_and_grad(batch, 1)
        np.testing.assert_array_equal(y, [3.0, 5.0])
        np.testing.assert_array_equal(grads.x, [2.0, 2.0])
        assert grads.c == 2.0


def test_check_arguments_false_takes_the_arguments_as_given(logreg):
    column = np.array([[0.1], [0.2]])
    logreg.CHECK_ARGUMENTS = False
    L, grads = logreg.value_and_grad(np.array(X3), np.array(Y3), column, 0.5)
    assert np.shape(grads.w) == (2, 3)  # the broadcast the check would have refused
    logreg.CHECK_ARGUMENTS = True
    with pytest.raises(ValueError, match="w has shape"):
        logreg.value_and_grad(np.array(X3), np.array(Y3), column, 0.5)


def test_the_check_remembers_only_shapes_that_passed(logreg):
    good = (np.array(X3), np.array(Y3), np.array([0.1, 0.2]), 0.5)
    logreg.value_and_grad(*good)
    with pytest.raises(ValueError, match="y has shape"):
        logreg.value_and_grad(good[0], good[1][:2], *good[2:])
    logreg.value_and_grad(*good)
    logreg.value_and_grad(np.ones((5, 2)), np.ones(5), np.ones(2), 0.5)  # new sizes
    with pytest.raises(ValueError, match=re.escape("b has shape (2,)")):
        logreg.value_and_grad(*good[:3], [0.5, 0.5])  # same types but for the list
