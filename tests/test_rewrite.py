"""The learner's spellings are recognised and computed stably (compiler/rewrite.py).

Each rewrite has a test that it fired (the op it introduces, and the comment
that reports it) and a test at extreme inputs, where the value and the
gradient are compared with mpmath at 400 digits of the expression as written.
"""

from __future__ import annotations

import inspect

import mpmath
import numpy as np
import pytest

import symgrad
from symgrad.pipeline import build, load_spec
from tests.conftest import ROOT

LOGITS = [-800.0, -40.0, 40.0, 800.0]


def _spec(steps: dict, inputs: dict | None = None, wrt=None) -> dict:
    spec = {"name": "learner", "inputs": inputs or {"z": {}}, "steps": steps}
    if wrt:
        spec["wrt"] = wrt
    return spec


def _ops(spec: dict) -> list[str]:
    return [a.op for a in build(load_spec(spec)).backward.forward]


def _notes(spec: dict) -> str:
    return "\n".join(a.note for a in build(load_spec(spec)).backward.forward)


def _close(got, exact) -> bool:
    """Within 1e-13 of the exact value, relative to its size or to 1 (a loss's scale)."""
    return abs(float(got) - float(exact)) <= 1e-13 * max(1.0, abs(float(exact)))


def _mp_value_and_derivative(f, x):
    """f(x) and f'(x) in mpmath at 400 digits (e**-800 survives 1 - sigmoid)."""
    with mpmath.workdps(400):
        x = mpmath.mpf(x)
        return f(x), mpmath.diff(f, x)


def _mp_sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


# ----------------------------------------------------------------- scalar rewrites

SCALAR = {
    # name: (steps, the op that must appear, the mpmath function as written)
    "sigmoid": ({"L": "1/(1 + exp(-z))"}, "sigmoid", _mp_sigmoid),
    "sigmoid_as_ratio": (
        {"L": "exp(z)/(1 + exp(z))"},
        "sigmoid",
        lambda z: mpmath.exp(z) / (1 + mpmath.exp(z)),
    ),
    "softplus": (
        {"L": "log(1 + exp(z))"},
        "softplus",
        lambda z: mpmath.log(1 + mpmath.exp(z)),
    ),
    "log_sigmoid": (
        {"L": "log(1/(1 + exp(-z)))"},
        "softplus",
        lambda z: mpmath.log(_mp_sigmoid(z)),
    ),
    "log_one_minus_sigmoid_through_a_step": (
        {"a": "1/(1 + exp(-z))", "L": "log(1 - a)"},
        "softplus",
        lambda z: mpmath.log(1 - _mp_sigmoid(z)),
    ),
}


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_a_scalar_rewrite_fires_and_is_reported(name):
    steps, op, _ = SCALAR[name]
    assert op in _ops(_spec(steps))
    assert "symgrad computes this as " in _notes(_spec(steps))
    # the generated module says so in its comments
    module = symgrad.compile(_spec(steps))
    assert "# L = " in inspect.getsource(module.forward)
    assert "symgrad computes this as " in inspect.getsource(module.forward)


@pytest.mark.parametrize("z", LOGITS)
@pytest.mark.parametrize("name", sorted(SCALAR))
def test_a_scalar_rewrite_is_finite_and_exact_at_extreme_logits(name, z):
    steps, _, f = SCALAR[name]
    module = symgrad.compile(_spec(steps))
    value, grads = module.value_and_grad(z)
    exact_value, exact_grad = _mp_value_and_derivative(f, z)
    assert np.isfinite(value) and np.isfinite(grads.z)
    assert _close(value, exact_value)
    assert _close(grads.z, exact_grad)
    _, tape = module.forward(z)
    assert _close(module.backward(tape).z, exact_grad)


# ----------------------------------------------------------------- the notebook's loss

SEED_000 = {
    "name": "seed_000",
    "inputs": {"w1": {}, "x1": {}, "b": {}, "y": {}},
    "wrt": ["w1", "b"],
    "steps": {
        "Z": "w1*x1 + b",
        "a": "1/(1 + exp(-Z))",
        "L": "-y*log(a) - (1 - y)*log(1 - a)",
    },
    "output": "L",
}


def test_seed_000s_spelling_is_cross_entropy_on_logits_with_dL_dZ_a_minus_y():
    """Seed 000 writes a = 1/(1 + exp(-Z)) and, by hand, dL_dZ = a - y."""
    module = symgrad.compile(SEED_000)
    assert "    dL_dZ = a - y\n" in inspect.getsource(module.value_and_grad)
    notes = _notes(SEED_000)
    assert "a = 1/(1 + exp(-Z))\nsymgrad computes this as sigmoid(Z) (sigmoid)" in notes
    assert "cross-entropy on logits" in notes
    # no cancellation needed: the rewritten loss differentiates to a - y
    assert not any("cancel" in a.note for a in build(load_spec(SEED_000)).unit.backward)


@pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("z", LOGITS)
def test_cross_entropy_on_logits_at_extreme_logits(z, y):
    module = symgrad.compile(SEED_000)
    value, grads = module.value_and_grad(w1=0.0, x1=1.0, b=z, y=y)

    def loss(t):
        a = _mp_sigmoid(t)
        return -y * mpmath.log(a) - (1 - y) * mpmath.log(1 - a)

    exact_value, exact_grad = _mp_value_and_derivative(loss, z)
    assert np.isfinite(value) and np.isfinite(grads.b)
    assert _close(value, exact_value)
    assert _close(grads.b, exact_grad)


def test_the_notebooks_batch_matches_its_hand_written_gradient():
    """Seed 000's NumPy cell: gradient w = [0.1537824, 0.05303517], b = 0.6494514041852678."""
    spec = {
        "name": "seed_000_batch",
        "inputs": {"X": {"shape": ["n", "d"]}, "y": {"shape": ["n"]},
                   "w": {"shape": ["d"]}, "b": {}},
        "wrt": ["w", "b"],
        "steps": {"Z": "X @ w + b", "a": "1/(1 + exp(-Z))",
                  "L": "sum(-y*log(a) - (1 - y)*log(1 - a))"},
    }  # fmt: skip
    module = symgrad.compile(spec)
    X = np.array([[0.1, 0.2], [0.4, 0.5], [0.5, 0.3]])
    _, grads = module.value_and_grad(X, np.array([0.0, 1.0, 0.0]), [0.1, 0.2], 0.1)
    assert grads.w == pytest.approx([0.1537824, 0.05303517], abs=1e-8)
    assert grads.b == pytest.approx(0.6494514041852678, rel=1e-14)
    assert "    dL_dZ = a - y\n" in inspect.getsource(module.value_and_grad)


# ----------------------------------------------------------------- vectors

VECTOR = {"x": {"shape": [4]}, "c": {"shape": [4]}}
X_EXTREME = [800.0, 40.0, -40.0, -800.0]
C = [0.2, 0.5, 0.2, 0.1]


def _mp_logsumexp(x):
    return mpmath.log(sum(mpmath.exp(v) for v in x))


def _mp_gradient(f, x):
    """f(x) and its gradient, each partial by mpmath at 400 digits."""
    with mpmath.workdps(400):
        x = [mpmath.mpf(v) for v in x]
        grad = []
        for i in range(len(x)):

            def along(t, i=i):
                return f([t if j == i else v for j, v in enumerate(x)])

            grad.append(mpmath.diff(along, x[i]))
        return f(x), grad


VECTOR_CASES = {
    "logsumexp": ({"L": "log(sum(exp(x)))"}, "logsumexp", _mp_logsumexp),
    "softmax": (
        {"p": "exp(x)/sum(exp(x))", "L": "sum(c*p)"},
        "softmax",
        lambda x: sum(
            ci * mpmath.exp(v) / sum(mpmath.exp(u) for u in x)
            for ci, v in zip(C, x, strict=True)
        ),
    ),
    "log_softmax": (
        {"p": "softmax(x)", "L": "-sum(c*log(p))"},
        "logsumexp",
        lambda x: -sum(ci * (v - _mp_logsumexp(x)) for ci, v in zip(C, x, strict=True)),
    ),
}


@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_a_vector_rewrite_fires_and_is_finite_at_extreme_logits(name):
    steps, op, f = VECTOR_CASES[name]
    spec = _spec(steps, VECTOR, wrt=["x"])
    assert op in _ops(spec)
    assert "symgrad computes this as " in _notes(spec)
    module = symgrad.compile(spec)
    value, grads = module.value_and_grad(np.array(X_EXTREME), np.array(C))
    exact_value, exact_grad = _mp_gradient(f, X_EXTREME)
    assert np.all(np.isfinite(grads.x)) and np.isfinite(value)
    assert _close(value, exact_value)
    for got, exact in zip(grads.x, exact_grad, strict=True):
        assert _close(got, exact)


# ----------------------------------------------------------------- what is left alone


def test_a_step_that_is_not_a_sigmoid_is_not_looked_through():
    """examples/softplus.yaml writes e = exp(x), log(1 + e) to show where the sigmoid
    comes from: the rewrite leaves it as written."""
    spec = load_spec(ROOT / "examples" / "softplus.yaml")
    program = build(spec).backward
    assert "softplus" not in [a.op for a in program.forward]
    assert "symgrad computes this as" not in "".join(a.note for a in program.forward)


def test_softmax_over_the_rows_of_a_matrix_is_left_as_written():
    """exp(X)/sum(exp(X)) of a matrix divides by one total: not a softmax by rows."""
    spec = _spec({"L": "sum(exp(X)/sum(exp(X)))"}, {"X": {"shape": [2, 3]}})
    assert "softmax" not in _ops(spec)


def test_the_logistic_examples_are_rewritten_and_say_so():
    for example in ("logistic_regression", "logistic_regression_batch"):
        text = (ROOT / "generated" / f"{example}.py").read_text()
        assert "cross-entropy on logits" in text
