"""Tensor fuzzer: random array programs, value_and_grad against backward and differences.

value_and_grad is backward's computation rewritten for speed: temporaries
inlined, arrays freed and written into (`np.subtract(a, b, out=a)`), scalars
multiplied first, negations moved past sums, trils of triangular values
dropped, solves of a batch of columns narrowed. Hypothesis builds random
programs over matrices [n, 4], vectors [4] and a square [4, 4] (elementwise
functions, broadcasting, matmul, reductions, solve, a Cholesky factor) whose
values are reused (so a value is read again after a line that could write
into it). Each program's value_and_grad must equal forward + backward (one
operation a line, nothing written into) to 1e-10, for float, float32 and
integer-valued arguments alike (a result is never written into integers), and
its gradients must pass central finite differences (`check_gradients`).

Profiles as tests/test_fuzz.py: "ci" (40 programs) and "long"
(SYMGRAD_FUZZ=long, 1000).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import symgrad
from symgrad.check import check_gradients

EXAMPLES = 1000 if os.environ.get("SYMGRAD_FUZZ") == "long" else 40
SETTINGS = {  # the same programs on every run, nothing kept between runs
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
INPUTS = {"X": ["n", 4], "Y": ["n", 4], "v": [4], "W": [4, 4], "s": []}
# (result kind, template over operand kinds): M a matrix [n, 4], V a vector [4],
# S a scalar, Q the square [4, 4]; templates are spec expressions of {0}, {1}
OPERATIONS = (
    ("M", "exp({0} / 4)", "M"),
    ("M", "tanh({0})", "M"),
    ("M", "sin({0}) * {1}", "MM"),
    ("M", "{0} - {1}", "MM"),
    ("M", "1 - {0}**2", "M"),
    ("M", "{0} * {1} + {0}", "MV"),
    ("M", "{0} / (1 + {1}**2)", "MM"),
    ("M", "sigmoid({0}) - {1}", "MM"),
    ("M", "{0} @ {1}", "MQ"),
    ("M", "-{0} * {1}", "MS"),
    ("V", "sum({0}, axis=0)", "M"),
    ("V", "mean(-{0}, axis=0)", "M"),
    ("V", "{0} @ {1}", "VQ"),
    ("V", "softplus({0}) * {1}", "VS"),
    ("Q", "{0} + {1}.T", "QQ"),
    ("Q", "{0}.T @ {1} / 8", "MM"),
    ("Q", "solve({0} @ {0}.T + diag(exp(v)), {1})", "QQ"),
    ("Q", "tril(cholesky({0} @ {0}.T + diag(exp(v))))", "Q"),
    ("M", "solve_triangular(cholesky({0} @ {0}.T + diag(exp(v))), {1}.T).T", "QM"),
    ("S", "mean({0}**2)", "M"),
    ("S", "sum({0} * {1})", "VV"),
)
KINDS = {"X": "M", "Y": "M", "v": "V", "W": "Q", "s": "S"}


@st.composite
def programs(draw) -> dict:
    """A spec: 2 to 7 random steps, then an output that reads every kind."""
    names = dict(KINDS)
    steps: dict[str, str] = {}
    for i in range(draw(st.integers(2, 7))):
        result, template, kinds = draw(st.sampled_from(OPERATIONS))
        operands = []
        for kind in kinds:
            pool = sorted(n for n, k in names.items() if k == kind)
            # the most recent value of the kind half the time: deep chains
            recent = [n for n in reversed(list(names)) if names[n] == kind][:1]
            operands.append(draw(st.sampled_from(recent + pool)))
        # SymPy folds X - X to the number 0, which has no shape: symgrad refuses
        # the step (tests/test_rank_n.py)
        assume(template != "{0} - {1}" or operands[0] != operands[1])
        name = f"p{i}"
        steps[name] = template.format(*operands)
        names[name] = result
    terms = [
        f"mean({n}**2)" if k == "M" else f"sum({n}**2) / 4" if k in "VQ" else f"{n}**2"
        for n, k in names.items()
        if n in steps
    ]
    steps["L"] = " + ".join(terms) + " + s"
    return {
        "name": "fuzzed",
        "inputs": {n: {"shape": shape} for n, shape in INPUTS.items()},
        "steps": steps,
        "output": "L",
    }


def _point(rng, dtype=float) -> dict:
    shapes = {"X": (5, 4), "Y": (5, 4), "v": (4,), "W": (4, 4), "s": ()}
    if dtype is int:
        return {
            n: rng.integers(-2, 3, size=s) if s else int(rng.integers(-2, 3))
            for n, s in shapes.items()
        }
    point = {n: rng.uniform(-1, 1, size=s) for n, s in shapes.items()}
    return {n: v.astype(dtype) if np.ndim(v) else float(v) for n, v in point.items()}


def _equal(got, want, rtol: float) -> None:
    value, grads = got
    want_value, want_grads = want
    np.testing.assert_allclose(value, want_value, rtol=rtol, atol=rtol)
    for name in want_grads._fields:
        np.testing.assert_allclose(
            getattr(grads, name), getattr(want_grads, name), rtol=rtol, atol=rtol,
            err_msg=name,
        )  # fmt: skip


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(spec=programs(), seed=st.integers(0, 2**16))
def test_value_and_grad_equals_backward_and_finite_differences(spec, seed):
    note(str(spec["steps"]))
    module = symgrad.compile(spec)
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        for dtype, rtol in ((float, 1e-10), (np.float32, 1e-4), (int, 1e-10)):
            point = _point(rng, dtype)
            value, tape = module.forward(**point)
            expected = (value, module.backward(tape))
            if not np.isfinite(value):
                continue
            _equal(module.value_and_grad(**point), expected, rtol)
            for name in expected[1]._fields:  # grad's own body, where it has one
                np.testing.assert_allclose(
                    getattr(module.grad(**point), name),
                    getattr(expected[1], name),
                    rtol=rtol,
                    atol=rtol,
                )
        point = _point(rng)
    report = check_gradients(module, point, rng)
    assert report.verdict != "mismatch", str(report)


@settings(max_examples=EXAMPLES // 2, **SETTINGS)
@given(spec=programs(), seed=st.integers(0, 2**16))
def test_numba_loops_equal_the_numpy_target(spec, seed):
    """The numba target (value_and_grad's elementwise steps in fused loops) gives
    the numpy target's backward, for float, float32 and integer arguments."""
    pytest.importorskip("numba", reason="numba is not installed (symgrad[numba])")
    note(str(spec["steps"]))
    module, reference = symgrad.compile(spec, target="numba"), symgrad.compile(spec)
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        for dtype, rtol in ((float, 1e-10), (np.float32, 1e-4), (int, 1e-10)):
            point = _point(rng, dtype)
            value, tape = reference.forward(**point)
            if not np.isfinite(value):
                continue
            expected = (value, reference.backward(tape))
            _equal(module.value_and_grad(**point), expected, rtol)
            _equal((value, module.grad(**point)), expected, rtol)
