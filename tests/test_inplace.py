"""value_and_grad writes into an array no longer needed (`np.subtract(a, b, out=a)`).

Each case checks where it happens and where it must not (an argument, a value
read later, a broadcast, a view still alive, integers), and that the values and
gradients equal backward's (one array per operation, nothing written into),
forward + backward being the independent path; finite differences check
backward itself in the registry and example tests. value_and_grad's dy (an
array output's upstream gradient) is checked the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import check_gradients
from symgrad.pipeline import source
from tests.conftest import ROOT
from tests.test_rank_n import _module


def _unit_lines(module) -> list[str]:
    """value_and_grad's lines (its source, from the module's text)."""
    text = source(module.__symgrad__)
    body = text.split("def value_and_grad(", 1)[1].split("\ndef ", 1)[0]
    return [line.strip() for line in body.splitlines()]


def _written(module) -> list[str]:
    return [line for line in _unit_lines(module) if ", out=" in line]


def _agrees(module, point, dy=None):
    """value_and_grad equals forward + backward, value and every gradient."""
    before = {k: np.copy(v) for k, v in point.items()}
    value, tape = module.forward(**point)
    expected = module.backward(tape) if dy is None else module.backward(tape, dy)
    got_value, got = (
        module.value_and_grad(**point)
        if dy is None
        else module.value_and_grad(**point, dy=dy)
    )
    np.testing.assert_allclose(got_value, value, rtol=1e-13, atol=1e-13)
    for name in got._fields:
        np.testing.assert_allclose(
            getattr(got, name), getattr(expected, name), rtol=1e-12, atol=1e-12
        )
    for k, v in before.items():  # the arguments are never written into
        np.testing.assert_array_equal(point[k], v, err_msg=k)


def _point(inputs: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(0.5, 1.5, size=s) for n, s in inputs.items()}


MLP = ROOT / "examples" / "mlp.yaml"
ATTENTION = ROOT / "examples" / "attention.yaml"


def test_mlp_writes_the_loss_adjoint_into_the_residual_it_no_longer_needs():
    """dL_dt3 = 2/size * t3 goes into t3; out - Y does not go into out, which
    does not depend on Y (Y could be wider, or a Dask array)."""
    module = symgrad.compile(MLP)
    lines = _unit_lines(module)
    assert "dL_dt3 = np.multiply(2 * np.divide(1, t3.size), t3, out=t3)" in lines
    assert "t3 = out - Y" in lines
    rng = np.random.default_rng(1)
    point = {
        "X": rng.normal(size=(16, 4)), "Y": rng.normal(size=(16, 3)),
        "W1": rng.normal(size=(4, 5)), "b1": rng.normal(size=5),
        "W2": rng.normal(size=(5, 3)), "b2": rng.normal(size=3),
    }  # fmt: skip
    _agrees(module, point)
    assert check_gradients(module, point).ok


def test_attention_value_and_grad_takes_the_upstream_gradient():
    module = symgrad.compile(ATTENTION)
    assert any("out=" in line for line in _written(module))
    rng = np.random.default_rng(2)
    point = {k: rng.normal(size=(2, 3, 4, 64)) for k in "QKV"}
    dy = rng.normal(size=(2, 3, 4, 64))
    _agrees(module, point, dy)
    _agrees(module, point)  # None: ones
    ones = module.value_and_grad(**point, dy=np.ones((2, 3, 4, 64)))[1]
    default = module.grad(**point)
    for name in default._fields:
        np.testing.assert_allclose(getattr(ones, name), getattr(default, name))
    # an integer dy, a float32 dy and one that broadcasts are made float arrays
    for upstream in (np.ones((2, 3, 4, 64), dtype=int), dy.astype(np.float32), 2.0):
        _agrees(module, point, upstream)
    dQ = module.grad(**point, dy=dy).Q  # noqa: N806
    np.testing.assert_allclose(dQ, module.value_and_grad(**point, dy=dy)[1].Q)


def test_the_upstream_gradient_is_named_as_backwards():
    """Outputs u, v: backward(tape, du, dv), so value_and_grad's keyword is du."""
    spec = {
        "name": "two",
        "inputs": {"X": {"shape": [3, 2]}, "w": {"shape": [2]}},
        "steps": {"u": "exp(X @ w)", "v": "sum(u**2)"},
        "outputs": ["u", "v"],
    }
    module = symgrad.compile(spec)
    point = {"X": np.arange(6.0).reshape(3, 2) / 6, "w": np.array([1.0, -1.0])}
    du = np.array([1.0, 2.0, 3.0])
    expected = module.backward(module.forward(**point)[1], du=du, dv=0.0)
    for got in (module.value_and_grad(**point, du=du)[1], module.grad(**point, du=du)):
        for name in expected._fields:
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize(
    "steps, inputs, output",
    [
        # an argument is never written into
        ({"y": "sum(x * 2)"}, {"x": (3, 4)}, "y"),
        # a value read again later keeps its memory
        ({"a": "exp(x)", "b": "a + 1", "y": "sum(a * b + a)"}, {"x": (3, 4)}, "y"),
        # a result of another shape (broadcast) gets its own array
        ({"a": "exp(v)", "b": "a - m", "y": "sum(b * b)"}, {"v": (4,), "m": (3, 4)}, "y"),
        # a transpose (a view) of the value is read later
        ({"a": "exp(m)", "b": "a.T", "c": "a + 1", "y": "sum(c * c.T @ b)"},
         {"m": (3, 3)}, "y"),  # fmt: skip
    ],
)
def test_where_nothing_may_be_written_into_values_stay_right(steps, inputs, output):
    module = _module(steps, inputs, output)
    point = _point(inputs)
    for line in _written(module):  # whatever is written into is a temporary of its own
        target = line.rsplit("out=", 1)[1].rstrip(")")
        assert target not in inputs, line
    _agrees(module, point)
    assert check_gradients(module, point).ok


def test_the_second_case_writes_into_neither_read_value():
    module = _module({"a": "exp(x)", "b": "a + 1", "y": "sum(a * b + a)"}, {"x": (3, 4)})
    for line in _written(module):
        assert not line.endswith("out=a)"), line  # a is read after b


def test_integer_and_float32_arguments_give_the_same_gradients():
    """A float result never lands in an integer array: a value written into is
    floating whatever the arguments' dtypes."""
    steps = {"a": "x * 2", "b": "a - 1", "c": "b / 3", "y": "sum(exp(c) * c)"}
    module = _module(steps, {"x": (3, 4)})
    integers = {"x": np.arange(12).reshape(3, 4) - 6}
    floats = {"x": integers["x"].astype(float)}
    value, grads = module.value_and_grad(**integers)
    expected_value, expected = module.value_and_grad(**floats)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(grads.x, expected.x, rtol=1e-13)
    _agrees(module, integers)
    single = module.value_and_grad(x=floats["x"].astype(np.float32))[1].x
    np.testing.assert_allclose(single, expected.x, rtol=1e-5)


def test_mlp_with_integer_targets_runs_as_with_floats():
    module = symgrad.compile(MLP)
    rng = np.random.default_rng(3)
    point = {
        "X": rng.normal(size=(8, 4)), "Y": rng.integers(0, 3, size=(8, 3)),
        "W1": rng.normal(size=(4, 5)), "b1": rng.normal(size=5),
        "W2": rng.normal(size=(5, 3)), "b2": rng.normal(size=3),
    }  # fmt: skip
    _agrees(module, point)


def test_numpy_and_dask_arguments_mixed():
    """exp(A) * B with A a NumPy array and B a Dask array: the product is Dask's,
    which NumPy's exp(A) cannot hold; nothing is written into it."""
    da = pytest.importorskip("dask.array")
    module = _module({"a": "exp(A)", "b": "a * B", "y": "sum(b * b)"},
                     {"A": (3, 4), "B": (3, 4)})  # fmt: skip
    point = _point({"A": (3, 4), "B": (3, 4)})
    value, grads = module.value_and_grad(A=point["A"], B=da.from_array(point["B"]))
    expected_value, expected = module.value_and_grad(**point)
    np.testing.assert_allclose(np.asarray(value), expected_value, rtol=1e-12)
    for name in expected._fields:
        np.testing.assert_allclose(
            np.asarray(getattr(grads, name)), getattr(expected, name), rtol=1e-12
        )


def test_dask_arrays_are_written_into_lazily():
    da = pytest.importorskip("dask.array")
    module = symgrad.compile(ATTENTION)
    rng = np.random.default_rng(4)
    point = {k: rng.normal(size=(2, 2, 4, 64)) for k in "QKV"}
    dy = rng.normal(size=(2, 2, 4, 64))
    lazy = {k: da.from_array(v, chunks=(1, 2, 4, 64)) for k, v in point.items()}
    value, grads = module.value_and_grad(**lazy, dy=da.from_array(dy, chunks=1))
    expected_value, expected = module.value_and_grad(**point, dy=dy)
    np.testing.assert_allclose(np.asarray(value), expected_value, rtol=1e-12)
    for name in expected._fields:
        np.testing.assert_allclose(
            np.asarray(getattr(grads, name)), getattr(expected, name), rtol=1e-12
        )
