"""Published values from the seed notebooks in ../shared/seeds/, reproduced by symgrad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.check import locals_on_return
from symgrad.frontend import spec as spec_module
from tests.conftest import ROOT, exact_gradient

# Source: udlbook, CM20315_Gradients_I.ipynb (seed 004), the point of its cells.
TOY_POINT = dict(x=2.3, beta0=1.0, beta1=2.0, beta2=-3.0, beta3=0.4, beta4=-0.3,
                 omega0=0.1, omega1=-0.4, omega2=2.0, omega3=3.0, omega4=-0.5)  # fmt: skip
# "true value" printed by the notebook for the forward pass ...
TOY_FORWARD = dict(f0=1.230, h1=0.942, f1=1.623, h2=5.068, f2=7.137, h3=0.657,
                   f3=2.372, h4=0.864)  # fmt: skip
# ... for the backward pass (dydh3 ... dydf0) ...
TOY_ADJOINTS = dict(dy_dh3=-0.632, dy_df2=0.476, dy_dh2=0.953, dy_df1=4.830,
                    dy_dh1=-1.932, dy_df0=-0.646)  # fmt: skip
# ... and for the parameters (dydomega4 ... dydbeta0).
TOY_GRADIENTS = dict(beta4=1.0, omega4=0.864, beta3=-0.211, omega3=-0.139, beta2=0.476,
                     omega2=2.415, beta1=4.830, omega1=4.552, beta0=-0.646)  # fmt: skip


@pytest.fixture(scope="module", params=["numpy", "python"])
def toy(request):
    return symgrad.compile(ROOT / "examples/udl_toy.yaml", target=request.param)


def test_toy_forward_pass_matches_notebook(toy):
    y, tape = toy.forward(**TOY_POINT)
    for name, printed in TOY_FORWARD.items():
        assert round(float(getattr(tape, name)), 3) == printed, name
    # the notebook's own fn(...) in closed form
    p = TOY_POINT
    y_func = p["beta4"] + p["omega4"] * np.log(p["beta3"] + p["omega3"] * np.cos(
        p["beta2"] + p["omega2"] * np.exp(p["beta1"] + p["omega1"] * np.sin(
            p["beta0"] + p["omega0"] * p["x"]))))  # fmt: skip
    assert float(y) == pytest.approx(y_func, rel=1e-15)


def test_toy_backward_adjoints_match_notebook(toy):
    # backward(tape) keeps every adjoint (value_and_grad deletes what it no longer needs)
    _, tape = toy.forward(**TOY_POINT)
    adjoints = locals_on_return(toy.backward, tape)
    for name, printed in TOY_ADJOINTS.items():
        assert round(float(adjoints[name]), 3) == printed, name


def test_toy_gradients_match_notebook(toy):
    grads = toy.grad(**TOY_POINT)
    for name, printed in TOY_GRADIENTS.items():
        assert round(float(getattr(grads, name)), 3) == printed, name
    # the notebook's hand-derived closed form of dy/domega0
    p = TOY_POINT
    s = p["beta0"] + p["omega0"] * p["x"]
    inner = p["omega1"] * math.sin(s) + p["beta1"]
    dydomega0 = (-p["omega1"] * p["omega2"] * p["omega3"] * p["omega4"] * p["x"]
                 * math.cos(s) * math.exp(inner) * math.sin(p["omega2"] * math.exp(inner) + p["beta2"])
                 / (p["omega3"] * math.cos(p["omega2"] * math.exp(inner) + p["beta2"]) + p["beta3"]))  # fmt: skip
    assert float(grads.omega0) == pytest.approx(dydomega0, rel=1e-12)


def test_toy_matches_sympy_diff_exactly(toy):
    spec = spec_module.load(ROOT / "examples/udl_toy.yaml")
    value, exact = exact_gradient(spec, TOY_POINT)
    y, grads = toy.value_and_grad(**TOY_POINT)
    assert float(y) == pytest.approx(value, rel=1e-12)
    for name, reference in exact.items():
        assert float(getattr(grads, name)) == pytest.approx(
            reference, rel=1e-12, abs=1e-15
        )


# Source: Coursera Machine Learning Specialization C2_W2 "Derivatives" (seeds 001, 002):
# sympy's diff(J, w) evaluated at the notebook's points.
@pytest.mark.parametrize(
    "example, w, derivative",
    [
        ("derivative_square", 2, 4),
        ("derivative_square", 3, 6),
        ("derivative_square", -3, -6),
        ("derivative_double", -3, 2),
        ("derivative_cube", 2, 12),
        ("derivative_inverse", 2, -0.25),
        ("derivative_inverse_square", 4, -1 / 32),
    ],
)
@pytest.mark.parametrize("target", ["numpy", "python"])
def test_coursera_derivatives(example, w, derivative, target):
    module = symgrad.compile(ROOT / f"examples/{example}.yaml", target=target)
    assert float(module.grad(w=float(w)).w) == derivative


def test_softplus_derivative_is_sigmoid():
    """Seed 003: the derivative of softplus log(1 + exp(x)) is the sigmoid."""
    module = symgrad.compile(ROOT / "examples/softplus.yaml")
    x = np.linspace(-5, 5, 20)
    y, grads = module.value_and_grad(x=x)
    np.testing.assert_allclose(y, np.log(1 + np.exp(x)), rtol=1e-15)
    # batched call: per-sample gradients come from dy = ones
    _, tape = module.forward(x=x)
    per_sample = module.backward(tape, dy=np.ones_like(x)).x
    np.testing.assert_allclose(per_sample, 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert module.grad(x=0.0).x == 0.5  # fprime(0) printed by the notebook
    # d sum(y) / d x[i] = sigmoid(x[i]): value_and_grad agrees with backward
    np.testing.assert_allclose(grads.x, per_sample, rtol=1e-15)


def test_logistic_regression_where_sympy_fails():
    """Seed 000: differentiating L with respect to a substituted sigmoid fails in SymPy..."""
    w1, w2, w3, x1, x2, x3, b, y = sp.symbols("w1 w2 w3 x1 x2 x3 b y")
    Z = w1 * x1 + w2 * x2 + w3 * x3 + b  # noqa: N806 (the notebook's names)
    a = 1 / (1 + sp.exp(-Z))
    L = -y * sp.log(a) - (1 - y) * sp.log(1 - a)  # noqa: N806
    with pytest.raises(ValueError, match="Can't calculate derivative wrt"):
        sp.diff(L, a)
    # ... while symgrad's chain rule runs through the named steps Z and a.
    module = symgrad.compile(ROOT / "examples/logistic_regression.yaml")
    point = dict(w1=0.3, w2=-0.2, w3=0.5, b=0.1, x1=1.0, x2=2.0, x3=-1.0, y=1.0)
    grads = module.grad(**point)
    z = 0.3 * 1.0 - 0.2 * 2.0 + 0.5 * -1.0 + 0.1
    dl_dz = 1 / (1 + math.exp(-z)) - 1.0  # the notebook's dL_dZ = a - y
    for name, x in (("w1", 1.0), ("w2", 2.0), ("w3", -1.0), ("b", 1.0)):
        assert getattr(grads, name) == pytest.approx(dl_dz * x, rel=1e-12)


def test_logistic_regression_batch_matches_notebook():
    """Seed 000's NumPy cell: X (3 x 2), y, w, b give w -> [0.1537824, 0.05303517], b -> 0.6494514041852678.

    The scalar spec called with a batch of x1, x2, y gives the summed gradient.
    """
    module = symgrad.compile({
        "name": "logistic2",
        "inputs": {n: {} for n in ("w1", "w2", "b", "x1", "x2", "y")},
        "wrt": ["w1", "w2", "b"],
        "steps": {"Z": "w1*x1 + w2*x2 + b", "a": "sigmoid(Z)",
                  "L": "-y*log(a) - (1 - y)*log(1 - a)"},
    })  # fmt: skip
    X = np.array([[0.1, 0.2], [0.4, 0.5], [0.5, 0.3]])  # noqa: N806
    grads = module.grad(
        w1=0.1, w2=0.2, b=0.1, x1=X[:, 0], x2=X[:, 1], y=np.array([0, 1, 0])
    )
    np.testing.assert_allclose([grads.w1, grads.w2], [0.1537824, 0.05303517], rtol=1e-6)
    assert grads.b == pytest.approx(0.6494514041852678, rel=1e-14)
