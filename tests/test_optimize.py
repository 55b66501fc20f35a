"""The clean-up passes: `cancel` simplifies value_and_grad's adjoints, and stays exact.

Every simplified module is checked against `sympy.diff` evaluated exactly
(tests/conftest.py), on both targets, at several points.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import symgrad
from symgrad.pipeline import build, load_spec
from tests.conftest import ROOT, exact_gradient

SIMPLIFIED = "(simplified by sympy.cancel)"

# name -> (steps, the adjoint's simplified note); inputs w, x, b, y; output L.
CANCELLING = {
    # logistic regression's famous shortcut (seed 000): dL/dz = a - y
    "cross_entropy": (
        {"z": "w*x + b", "a": "sigmoid(z)", "L": "-y*log(a) - (1 - y)*log(1 - a)"},
        "∂L/∂z = a - y",
    ),
    # Poisson regression's negative log-likelihood: dL/d(w*x + b) = r - y
    "poisson": (
        {"r": "exp(w*x + b)", "L": "r - y*log(r)"},
        "∂L/∂t1 = r - y",
    ),
    # d log(t**2)/dt = 2*t/t**2 = 2/t
    "log_of_square": ({"t": "w*x + b", "L": "log(t**2) + y"}, "∂L/∂t = 2/t"),
}
POINTS = [
    {"w": 0.7, "x": 1.3, "b": -0.2, "y": 1.0},
    {"w": -1.1, "x": 0.4, "b": 0.5, "y": 0.0},
    {"w": 2.5, "x": -0.9, "b": 0.1, "y": 3.0},
]


def _spec(name: str) -> dict:
    steps, _ = CANCELLING[name]
    return {
        "name": name,
        "inputs": {n: {} for n in ("w", "x", "b", "y")},
        "wrt": ["w", "b"],
        "steps": steps,
        "output": "L",
    }


@pytest.mark.parametrize("name", sorted(CANCELLING))
def test_the_adjoint_is_simplified_in_value_and_grad_only(name):
    compiled = build(load_spec(_spec(name)))
    compiled.unit.verify()
    unit_notes = [a.note for a in compiled.unit.backward if a.note]
    assert f"{CANCELLING[name][1]}   {SIMPLIFIED}" in unit_notes
    assert len(compiled.unit.backward) < len(compiled.backward.backward)
    # backward(tape, dy) keeps every step of the chain rule
    assert not any(SIMPLIFIED in a.note for a in compiled.backward.backward)


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("name", sorted(CANCELLING))
def test_simplified_gradients_equal_sympy_diff(name, target):
    spec = load_spec(_spec(name))
    module = symgrad.compile(_spec(name), target=target)
    for point in POINTS:
        value, grads = module.value_and_grad(**point)
        exact_value, exact = exact_gradient(spec, point)
        assert value == pytest.approx(exact_value, rel=1e-12, abs=1e-12)
        for wrt, expected in exact.items():
            assert getattr(grads, wrt) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        # the step-by-step backward pass agrees with the simplified one
        _, tape = module.forward(**point)
        assert module.backward(tape) == pytest.approx(tuple(grads), rel=1e-12)


def test_the_batched_logistic_regression_computes_a_minus_y():
    """The hand-written NumPy of seed 000 writes dL/dZ = a - y; so does value_and_grad."""
    module = symgrad.compile(ROOT / "examples" / "logistic_regression_batch.yaml")
    assert "    dL_dz = a - y\n" in inspect.getsource(module.value_and_grad)


def test_a_simplification_that_would_change_the_shape_is_refused():
    """(1/x)*x cancels to 1, a scalar, where the adjoint is a vector: summing it
    over the batch then gives 1 instead of n. The shape check keeps x/x."""
    spec = {
        "name": "guard",
        "inputs": {"x": {"shape": ["n"]}, "c": {}},
        "wrt": ["c", "x"],
        "steps": {"u": "c*x", "v": "u/x", "L": "sum(v)"},
        "output": "L",
    }
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    value, grads = symgrad.compile(spec).value_and_grad(x, 0.7)
    assert value == pytest.approx(3.5)
    assert grads.c == pytest.approx(5.0)  # L = n*c
    np.testing.assert_allclose(grads.x, 0.0, atol=1e-15)
