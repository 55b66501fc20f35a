"""The clean-up passes: `cancel` simplifies value_and_grad's adjoints, and stays exact.

Every simplified module is checked against `sympy.diff` evaluated exactly
(tests/conftest.py), on both targets, at several points.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import symgrad
from symgrad.check import check_gradients, sample_point
from symgrad.compiler import optimize
from symgrad.pipeline import build, import_source, load_spec, source
from tests.conftest import ROOT, exact_gradient

SIMPLIFIED = "(simplified by sympy.cancel)"

# name -> (steps, the adjoint's simplified note); inputs w, x, b, y; output L.
CANCELLING = {
    # (logistic regression's famous shortcut, dL/dz = a - y, needs no cancel: the
    # cross-entropy on the logit is rewritten first, tests/test_rewrite.py)
    # Poisson regression's negative log-likelihood: dL/d(w*x + b) = r - y
    "poisson": (
        {"r": "exp(w*x + b)", "L": "r - y*log(r)"},
        "dL_dt1 = r - y",
    ),
    # d log(t**2)/dt = 2*t/t**2 = 2/t
    "log_of_square": ({"t": "w*x + b", "L": "log(t**2) + y"}, "∂L/∂t = 2/t"),
    # through a square root and back: d(r**2)/dw = 2*r * w/r = 2*w
    "root_squared": (
        {"r": "sqrt(w**2 + x**2 + b**2)", "L": "r**2 + y"},
        "∂L/∂w = 2*w",
    ),
    # log of a ratio: 1/u - 1/v over a common denominator
    "log_ratio": (
        {"u": "exp(w*x)", "v": "u + b**2 + 1", "L": "log(u/v) + y"},
        "∂L/∂w = x*(-u + v)/v",
    ),
    # a two-class softmax's cross-entropy
    "two_class_softmax": (
        {"e1": "exp(w*x)", "e2": "exp(b)", "p": "e1/(e1 + e2)", "L": "-y*log(p)"},
        "∂L/∂e2 = y/(e1 + e2)",
    ),
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


def test_the_budgets_bound_the_adjoints_tried_and_spare_the_examples(monkeypatch):
    """Each `sympy.cancel` candidate is counted (and left as it is)."""
    tried = []
    monkeypatch.setattr(optimize, "_cancel", lambda whole, *rest: tried.append(whole))
    spec = load_spec(ROOT / "examples" / "udl_toy.yaml")

    def count(**budgets) -> int:
        for name, value in budgets.items():
            monkeypatch.setattr(optimize, name, value)
        tried.clear()
        build(spec)
        return len(tried)

    within = count()
    assert within > 3
    unbounded = {"MAX_CANCEL_CANDIDATES": 10**6, "MAX_CANCEL_TOTAL_OPS": 10**6}
    assert count(**unbounded) == within  # a course example is not cut short
    assert count(MAX_CANCEL_CANDIDATES=3) == 3
    assert count(MAX_CANCEL_TOTAL_OPS=0) == 0


@pytest.mark.parametrize("name", ["poisson", "log_of_square"])
def test_the_adjoint_nearest_the_output_is_tried_first(name, monkeypatch):
    """A program over budget still gets the cancellation next to its loss."""
    monkeypatch.setattr(optimize, "MAX_CANCEL_CANDIDATES", 1)
    compiled = build(load_spec(_spec(name)))
    unit_notes = [a.note for a in compiled.unit.backward if a.note]
    assert f"{CANCELLING[name][1]}   {SIMPLIFIED}" in unit_notes


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


# Random losses built from the patterns where the chain rule's factors cancel:
# logs of positive steps, their products and ratios, squares of square roots,
# cross-entropies of probabilities. Steps p* lie in (0, 1), q* are positive.
STEPS = {
    "q0": "exp(w*x)",
    "q1": "sqrt(w**2 + b**2 + 1)",
    "q2": "exp(b) + w**2",
    "p0": "sigmoid(w*x + b)",
    "p1": "q0/(q0 + q2)",
}
TERMS = [
    "log({q})",
    "{q}*log({q})",
    "log({q}/{r})",
    "y*log({q}) - {q}",
    "sqrt({q})**2",
    "{q}*{r}/{q}",
    "-y*log({p}) - (1 - y)*log(1 - {p})",
    "log({p}*(1 - {p}))",
]


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    terms=st.lists(
        st.tuples(
            st.sampled_from(TERMS),
            st.sampled_from(["q0", "q1", "q2"]),
            st.sampled_from(["q0", "q1", "q2"]),
            st.sampled_from(["p0", "p1"]),
        ),
        min_size=1,
        max_size=3,
    ),
    point=st.fixed_dictionaries(
        {k: st.floats(-2, 2).map(lambda v: round(v, 3)) for k in ("w", "x", "b", "y")}
    ),
)
def test_random_cancelling_losses_equal_sympy_diff(terms, point):
    loss = " + ".join(t.format(q=q, r=r, p=p) for t, q, r, p in terms)
    written = {
        "name": "loss",
        "inputs": {n: {} for n in ("w", "x", "b", "y")},
        "wrt": ["w", "b"],
        "steps": {**STEPS, "L": loss},
        "output": "L",
    }
    spec = load_spec(written)
    compiled = build(spec)
    simplified = any(SIMPLIFIED in a.note for a in compiled.unit.backward)
    event(f"cancelled: {simplified}")
    exact_value, exact = exact_gradient(spec, point)
    for target in ("numpy", "python"):
        module = import_source(source(compiled, target), "loss", compiled)
        value, grads = module.value_and_grad(**point)
        assert float(value) == pytest.approx(exact_value, rel=1e-9, abs=1e-9)
        for wrt, expected in exact.items():
            got = float(getattr(grads, wrt))
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (loss, wrt)


def test_a_means_adjoint_reads_as_a_person_writes_it():
    """MLP: the seed over the size multiplies the array directly (no spread
    array, no `_broadcast`), the size is of a value backward reads anyway
    (`t3.size`, so the tape does not keep t3**2), and the gradients still
    match central differences. (value_and_grad writes the product into t3,
    which nothing reads again: tests/test_inplace.py.)"""
    path = ROOT / "examples" / "mlp.yaml"
    code = source(build(load_spec(path)))
    assert "_broadcast" not in code and "np.size" not in code
    assert "t5 = t3.size" in code and "t4: Any" not in code
    assert "dL_dt3 = np.multiply(2 * np.divide(1, t3.size), t3, out=t3)" in code
    module = symgrad.compile(path)
    point = sample_point(module, np.random.default_rng(0))
    assert check_gradients(module, point).ok


@pytest.mark.parametrize(
    "step, wrt",
    [
        ("sum(X @ w)", "w"),  # the spread seed is read by a matrix product
        ("sum(w)", "w"),  # the spread seed is the gradient itself
        ("mean(w) * sum(X @ w)", "w"),
    ],
)
def test_a_spread_scalar_stays_where_a_shape_depends_on_it(step, wrt):
    """Gradients keep their inputs' shapes and values (against central differences)."""
    spec = {
        "name": "spread",
        "inputs": {"X": {"shape": [3, 2]}, "w": {"shape": [2]}},
        "wrt": [wrt],
        "steps": {"L": step},
        "output": "L",
    }
    module = symgrad.compile(spec)
    point = sample_point(module, np.random.default_rng(1))
    _, grads = module.value_and_grad(**point)
    assert np.shape(grads.w) == (2,)
    _, tape = module.forward(**point)
    assert np.shape(module.backward(tape).w) == (2,)
    assert check_gradients(module, point).ok


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's mean of nothing
def test_an_empty_batchs_mean_is_nan_not_an_error():
    """The size is a Python int: dividing by a size of 0 stays NumPy's (nan)."""
    module = symgrad.compile(ROOT / "examples" / "mlp.yaml")
    args = {
        "X": np.zeros((0, 3)),
        "Y": np.zeros((0, 4)),
        "W1": np.ones((3, 5)),
        "b1": np.ones(5),
        "W2": np.ones((5, 4)),
        "b2": np.ones(4),
    }
    with np.errstate(all="ignore"):
        value, grads = module.value_and_grad(**args)
        _, tape = module.forward(**args)
        module.backward(tape)
    assert np.isnan(value) and grads.W1.shape == (3, 5)
