"""Edge cases an outside suite (autograd's, JAX's and PyTorch's own gradient tests) found.

Each test names what used to go wrong; every expected value is worked out by
hand in the comment beside it.
"""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import OutOfDomain

TARGETS = ["numpy", "python"]
VECTORS = {"x": {"shape": [3]}, "y": {"shape": [3]}}


def _compile(steps: dict, inputs: dict | None = None, target: str = "numpy"):
    spec = {"name": "edge", "inputs": inputs or {"x": {}, "y": {}}, "steps": steps}
    return symgrad.compile(spec, target=target)


# --------------------------------------------------------------------------- 0**y


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "expression, expected",
    [
        # 0**y = 0 for y > 0: nothing flows to y; d(0.0**y + x)/dx = 1
        ("0.0**y + x", {"x": 1.0, "y": 0.0}),
        ("0**y + x", {"x": 1.0, "y": 0.0}),
        ("x*0**y", {"x": 0.0, "y": 0.0}),
    ],
)
def test_a_zero_base_to_a_variable_power(expression, expected, target):
    # used to fail with "LoweringError: constant zoo is not real", no file or line
    grads = _compile({"out": expression}, target=target).grad(x=1.5, y=2.0)
    assert {k: float(v) for k, v in grads._asdict().items()} == expected


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "expression", ["x**0.0 + y", "2.0 + 0*y", "sin(y) + 0*x", "3.0"]
)
def test_an_output_that_ignores_a_batched_input_is_still_a_batch(expression):
    # used to crash value_and_grad/grad/backward with a reshape error, and forward
    # returned one value instead of the batch
    module = _compile({"out": expression})
    x = np.array([1.0, 2.0, 3.0])
    value, grads = module.value_and_grad(x=x, y=0.5)
    assert np.shape(value) == (3,)
    forward, tape = module.forward(x=x, y=0.5)
    np.testing.assert_array_equal(forward, value)
    backward = module.backward(tape)
    for g in (grads, backward):
        assert np.shape(g.x) == (3,) and np.shape(g.y) == ()
        np.testing.assert_array_equal(g.x, 0.0)  # no expression here reads x
    # d/dy summed over the batch: 3 * the derivative at one point
    at_one_point = module.grad(x=1.0, y=0.5).y
    assert float(grads.y) == pytest.approx(3 * float(at_one_point))


# --------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("target", TARGETS)
def test_the_sum_and_mean_of_a_scalar_are_the_scalar(target):
    # TypeError in _broadcast on the numpy target, KeyError 'sum' from the python target
    module = _compile({"out": "sum(x)*y + mean(y)"}, target=target)
    value, grads = module.value_and_grad(x=2.0, y=3.0)
    # out = x*y + y: 6 + 3; d/dx = y = 3; d/dy = x + 1 = 3
    assert (float(value), float(grads.x), float(grads.y)) == (9.0, 3.0, 3.0)


@pytest.mark.parametrize(
    "expression, value, dx, dy",
    [
        # x @ y = 1*4 + 2*5 + 3*6 = 32; d/dx = y, d/dy = x
        ("sum(x @ y)", 32.0, [4, 5, 6], [1, 2, 3]),
        ("mean(x @ y)", 32.0, [4, 5, 6], [1, 2, 3]),
        ("logsumexp(x @ y)", 32.0, [4, 5, 6], [1, 2, 3]),
        # x[0] * y[1] = 1 * 5
        ("sum(x[0]) * y[1]", 5.0, [5, 0, 0], [0, 1, 0]),
    ],
)
def test_reductions_of_a_product_of_vectors(expression, value, dx, dy):
    module = _compile({"out": expression}, VECTORS)
    got, grads = module.value_and_grad(x=np.array([1.0, 2, 3]), y=np.array([4.0, 5, 6]))
    assert float(got) == value
    np.testing.assert_array_equal(grads.x, dx)
    np.testing.assert_array_equal(grads.y, dy)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "steps, inputs",
    [
        ({"out": "sum(x) + 2*y[0]"}, VECTORS),  # d/dx is a broadcast of 1: a view
        ({"out": "sum(x*y)"}, VECTORS),  # d/dx = y, an integer input
        ({"out": "x*y"}, None),  # a scalar spec called with arrays
    ],
)
def test_gradients_are_writable_float_arrays_the_caller_owns(steps, inputs):
    module = _compile(steps, inputs)
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([4, 5, 6])  # integers
    for grads in (module.grad(x=x, y=y), module.backward(module.forward(x=x, y=y)[1])):
        for name, g in grads._asdict().items():
            assert isinstance(g, np.ndarray) and g.dtype == float, (name, g)
            assert g.shape == (3,)
            g += 1.0  # writable; and no input changes with it
    np.testing.assert_array_equal(y, [4, 5, 6])
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- ties


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "expression, point, expected",
    [
        # PyTorch's test_min_max_median_backprops_to_all_values: a tie of k shares
        # the gradient equally, 1/k each, whatever the order
        ("max(x, y, z)", (1.5, 1.5, 1.5), (1 / 3, 1 / 3, 1 / 3)),
        ("max(z, x, y)", (1.5, 1.5, 1.5), (1 / 3, 1 / 3, 1 / 3)),
        ("min(x, y, z)", (1.0, 1.5, 1.0), (0.5, 0.0, 0.5)),
        ("max(x, y, z)", (2.0, 1.5, 1.0), (1.0, 0.0, 0.0)),
        ("max(x, y)", (1.5, 1.5, 0.0), (0.5, 0.5, 0.0)),
        # a constant tied with the result takes the gradient (PyTorch's relu6'(6) = 0)
        ("min(relu(x), 6)", (6.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ("max(x, y, 1.5)", (1.5, 1.5, 0.0), (0.0, 0.0, 0.0)),
        ("max(x, y, 1.5)", (1.7, 1.5, 0.0), (1.0, 0.0, 0.0)),
    ],
)
def test_ties_in_max_and_min(expression, point, expected, target):
    module = _compile({"out": expression}, {"x": {}, "y": {}, "z": {}}, target=target)
    grads = module.grad(*point)
    assert tuple(float(g) for g in grads) == pytest.approx(expected, abs=1e-15)


# --------------------------------------------------------------------------- branches


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "steps, point, value, gradient",
    [
        # elu at 1e4: the branch not taken, exp(1e4) - 1, overflows
        ({"y": "where(x > 0, x, exp(x) - 1)"}, 1e4, 1e4, 1.0),
        ({"y": "where(x > 0, x, exp(x) - 1)"}, -1.0, np.expm1(-1.0), np.exp(-1.0)),
        ({"h": "exp(x)", "y": "Piecewise((x, x > 0), (h - 1, True))"}, 1e4, 1e4, 1.0),
        # nested: exp(-x) overflows at x = -1e3 in a branch not taken
        (
            {"y": "where(x > 0, exp(-x), where(x > -1, x**2, log(-x)))"},
            -1e3,
            np.log(1e3),
            -1e-3,
        ),
        (
            {"y": "Piecewise((exp(-x), x > 0), (x**3, True))"},
            -800.0,
            -(800.0**3),
            3 * 800.0**2,
        ),
    ],
)
def test_the_branch_not_taken_never_poisons_the_result(
    steps, point, value, gradient, target
):
    # the numpy target returned a nan gradient (0 * inf from the branch not taken);
    # the python target raised OverflowError even in forward
    module = _compile(steps, {"x": {}}, target=target)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        got, grads = module.value_and_grad(x=point)
        y, tape = module.forward(x=point)
        backward = module.backward(tape)
    assert float(got) == pytest.approx(value, rel=1e-12)
    assert float(y) == pytest.approx(value, rel=1e-12)
    assert float(grads.x) == pytest.approx(gradient, rel=1e-12)
    assert float(backward.x) == pytest.approx(gradient, rel=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_check_takes_an_overflowing_branch_not_taken_as_inside_the_domain(target):
    # check used to call x = 1e4 outside the domain: exp(1e4) overflows, on the
    # branch the point does not take
    module = _compile({"y": "where(x > 0, x, exp(x) - 1)"}, {"x": {}}, target=target)
    report = symgrad.check_gradients(module, {"x": 1e4})
    assert report.ok, str(report)
    with pytest.raises(OutOfDomain):  # a value that is not finite still is outside
        symgrad.check_gradients(_compile({"y": "log(x)"}, {"x": {}}), {"x": -1.0})
