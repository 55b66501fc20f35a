"""Reductions with axis (an int or a tuple) and keepdims (issue 12 item 2): sum, mean,
max, min, prod, var, std, norm, logsumexp, cumsum. Each gradient is checked against
central finite differences on every entry (rank 3, size-1 dimensions) and against
its textbook formula in NumPy; the kinks against PyTorch's conventions."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import KINK_MARGIN, _kinks, check_gradients, sample_point
from symgrad.frontend.spec import SpecError
from symgrad.ops import OPS
from tests.conftest import assert_step_error

SHAPE = (2, 1, 3)


def _module(expression: str, shape=SHAPE):
    return symgrad.compile(
        {
            "name": "reduction",
            "inputs": {"x": {"shape": list(shape)}, "w": {"shape": list(shape)}},
            "wrt": ["x"],
            "steps": {"r": expression, "y": "sum(r * r)"},
            "output": "y",
        }
    )


def _spread(g, axis, keepdims, shape):
    """The reduced g put back over `shape` (the adjoint of a reduction)."""
    if not keepdims and axis is not None:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, shape)


def _reference(name: str, x, axis, keepdims, ddof=0):
    """(r, ∂r/∂x contracted with an upstream g) by the textbook formulas."""
    kw = {"axis": axis, "keepdims": keepdims}
    n = x.size // np.size(np.sum(x, **kw))
    c = x - np.mean(x, axis=axis, keepdims=True)
    if name == "sum":
        return np.sum(x, **kw), lambda g: _spread(g, axis, keepdims, x.shape)
    if name == "mean":
        return np.mean(x, **kw), lambda g: _spread(g, axis, keepdims, x.shape) / n
    if name in ("max", "min"):
        r = getattr(np, name)(x, **kw)
        hit = x == _spread(r, axis, keepdims, x.shape)
        share = hit / np.sum(hit, axis=axis, keepdims=True)
        return r, lambda g: _spread(g, axis, keepdims, x.shape) * share
    if name == "prod":
        r = np.prod(x, **kw)
        return r, lambda g: _spread(g * r, axis, keepdims, x.shape) / x
    if name == "var":
        return np.var(
            x, ddof=ddof, **kw
        ), lambda g: _spread(g, axis, keepdims, x.shape) * 2 * c / (n - ddof)
    if name == "std":
        r = np.std(x, ddof=ddof, **kw)
        return r, lambda g: _spread(g / r, axis, keepdims, x.shape) * c / (n - ddof)
    if name == "norm":
        r = np.sqrt(np.sum(x * x, **kw))
        return r, lambda g: _spread(g / r, axis, keepdims, x.shape) * x
    if name == "logsumexp":
        r = np.log(np.sum(np.exp(x), **kw))
        return (
            r,
            lambda g: (
                _spread(g, axis, keepdims, x.shape)
                * np.exp(x - _spread(r, axis, keepdims, x.shape))
            ),
        )
    raise AssertionError(name)


CASES = [
    (name, axis, keepdims)
    for name in ("sum", "mean", "max", "min", "prod", "var", "std", "norm", "logsumexp")
    for axis, keepdims in ((None, False), (0, False), (-1, True), ((0, 2), False),
                           ((2, 0), True), (1, False))
    # std over a size-1 axis is 0, where its derivative is 0/0 (nan, as PyTorch's)
    if (name, axis) != ("std", 1)
]  # fmt: skip


@pytest.mark.parametrize("name, axis, keepdims", CASES)
def test_reduction_against_its_formula_and_finite_differences(name, axis, keepdims):
    ddof = 1 if name in ("var", "std") and axis in ((0, 2), (2, 0), None) else 0
    extra = f", ddof={ddof}" if ddof else ""
    module = _module(f"{name}(x, axis={axis}, keepdims={keepdims}{extra})")
    rng = np.random.default_rng(len(name))
    x = rng.uniform(0.5, 1.5, size=SHAPE) * rng.choice([-1, 1], size=SHAPE)
    point = {"x": x, "w": x}
    r, vjp = _reference(name, x, axis, keepdims, ddof)
    y, grads = module.value_and_grad(**point)
    assert y == pytest.approx(np.sum(r * r), rel=1e-12)
    np.testing.assert_allclose(grads.x, vjp(2 * r), rtol=1e-11, atol=1e-12)
    report = check_gradients(module, point)
    assert report.ok, str(report)


def _gradient(expression: str, x):
    module = symgrad.compile(
        {
            "name": "kink",
            "inputs": {"x": {"shape": list(np.shape(x))}},
            "steps": {"y": expression},
        }  # fmt: skip
    )
    with np.errstate(all="raise"):  # no division by zero, no 0/0, no warning
        return module.value_and_grad(x=x)


def test_max_and_min_ties_share_the_gradient_equally():
    """PyTorch's max/min of a tensor: k tied elements each get 1/k."""
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    _, g = _gradient("sum(max(x, axis=1))", x)
    np.testing.assert_array_equal(g.x, [[0, 0.5, 0.5], [0.5, 0.5, 0]])
    _, g = _gradient("min(x)", np.array([4.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(g.x, [0, 1 / 3, 1 / 3, 1 / 3], rtol=1e-15)
    _, g = _gradient("max(x)", np.array([4.0, 1.0]))  # no tie: all to the max
    np.testing.assert_array_equal(g.x, [1, 0])


def test_prod_with_zeros_has_the_exact_gradient_without_dividing():
    y, g = _gradient("prod(x)", np.array([2.0, 0.0, 3.0]))
    assert y == 0
    np.testing.assert_array_equal(g.x, [0, 6, 0])  # the product of the others
    _, g = _gradient("prod(x)", np.array([0.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g.x, [0, 0, 0])
    _, g = _gradient("sum(prod(x, axis=0))", np.array([[2.0, 0.0], [0.0, 5.0]]))
    np.testing.assert_array_equal(g.x, [[0, 5], [2, 0]])


def test_norm_gradient_is_zero_at_zero():
    """PyTorch's test_norm_subgradient: the gradient of ‖x‖ at x = 0 is 0."""
    y, g = _gradient("norm(x)", np.zeros(3))
    assert y == 0
    np.testing.assert_array_equal(g.x, [0, 0, 0])
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y, g = _gradient("sum(norm(x, axis=1))", x)
    assert y == 5
    np.testing.assert_allclose(g.x, [[0, 0], [0.6, 0.8]], rtol=1e-15)
    _, g = _gradient("norm(x)", np.array([[1.0, 2.0], [2.0, 4.0]]))  # Frobenius
    np.testing.assert_allclose(g.x, np.array([[1, 2], [2, 4]]) / 5, rtol=1e-15)


@pytest.mark.parametrize("axis, shape", [(None, (5,)), (0, (3, 1, 4)), (-1, (3, 1, 4))])
def test_cumsum_and_flip(axis, shape):
    module = symgrad.compile(
        {
            "name": "running",
            "inputs": {"x": {"shape": list(shape)}, "w": {"shape": list(shape)}},
            "wrt": ["x"],
            "steps": {
                "y": f"sum(w * cumsum(x, axis={axis}) + flip(x, axis={axis})**2)"
            },
        }
    )
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=shape), rng.normal(size=shape)
    y, g = module.value_and_grad(x=x, w=w)
    a = 0 if axis is None else axis
    assert y == pytest.approx(
        np.sum(w * np.cumsum(x, axis=a) + np.flip(x, axis=axis) ** 2), rel=1e-12
    )
    # the adjoint of a running sum: the running sum of w from the far end
    expected = np.flip(np.cumsum(np.flip(w, a), axis=a), a) + 2 * x
    np.testing.assert_allclose(g.x, expected, rtol=1e-12, atol=1e-14)
    assert check_gradients(module, {"x": x, "w": w}).ok


@pytest.mark.parametrize(
    "expression, words",
    [
        ("sum(x, axis=3)", ["axis 3 is out of range", "[2, 1, 3]"]),
        ("max(x, axis=(0, 5))", ["axis 5 is out of range"]),
        ("var(x, axis=(1, -2))", ["repeats"]),
        ("cumsum(x)", ["need an axis", "[2, 1, 3]"]),
        ("cumprod(x, axis=(0, 1))", ["one axis"]),
        ("norm(x, keepdims=1)", ["True or False"]),
        ("std(x, ddof=x)", ["constant integer"]),
        ("prod(x, axis=0, keepdims=True, extra=1)", ["'extra'"]),
    ],
)
def test_bad_axes_are_errors_at_load_time_naming_the_step(expression, words):
    assert_step_error({"x": {"shape": list(SHAPE)}}, expression, words)


def test_second_derivatives_of_prod_are_refused_clearly():
    spec = {
        "name": "p",
        "inputs": {"x": {"shape": [3]}},
        "steps": {"y": "prod(x)"},
        "derivatives": ["hvp"],
    }
    with pytest.raises(SpecError, match="second derivatives .* of prod and cumprod"):
        symgrad.compile(spec)


def test_cumprod_gradient_is_exact_at_zeros():
    # out = [2, 0, 0, 0]: ∂Σout/∂x_i = Σ_{j>=i} Π_{k<=j, k!=i} x_k
    y, g = _gradient("sum(cumprod(x))", np.array([2.0, 0.0, 3.0, 4.0]))
    assert y == 2
    np.testing.assert_array_equal(g.x, [1, 2 + 2 * 3 + 2 * 3 * 4, 0, 0])


@pytest.mark.parametrize("axis, shape", [(None, (5,)), (1, (2, 3, 4)), (-1, (2, 1, 4))])
def test_cumprod_against_finite_differences(axis, shape):
    module = symgrad.compile(
        {
            "name": "running_product",
            "inputs": {"x": {"shape": list(shape)}, "w": {"shape": list(shape)}},
            "wrt": ["x"],
            "steps": {"y": f"sum(w * cumprod(x, axis={axis}))"},
            "derivatives": ["jvp"],
        }
    )
    rng = np.random.default_rng(4)
    x, w = rng.uniform(0.5, 1.5, size=shape), rng.normal(size=shape)
    a = 0 if axis is None else axis
    y, g = module.value_and_grad(x=x, w=w)
    assert y == pytest.approx(np.sum(w * np.cumprod(x, axis=a)), rel=1e-12)
    # by the quotient rule away from zeros: Σ_{j>=i} w_j out_j / x_i
    out = np.cumprod(x, axis=a)
    expected = np.flip(np.cumsum(np.flip(w * out, a), axis=a), a) / x
    np.testing.assert_allclose(g.x, expected, rtol=1e-12)
    assert check_gradients(module, {"x": x, "w": w}).ok


def test_a_near_tie_of_a_max_is_a_kink_the_checks_sample_away_from():
    """max(x, axis) and min have a kink where the extremum of a slice nearly ties
    the next value (finite differences then straddle it); an exact tie is none
    (central differences see the shared gradient there), so relu's zeros pass."""
    kink = OPS["amax"].kink
    x = np.array([[1.0, 1.0005, 0.2], [3.0, 1.0, 2.0], [0.0, 0.0, -1.0]])
    np.testing.assert_allclose(kink(x, -1), [0.0005, 1.0, np.inf])
    np.testing.assert_allclose(kink(x, 0), [2.0, 0.0005, 1.8])
    assert kink(x) == pytest.approx(1.0)  # the whole array: 3 against 2
    np.testing.assert_allclose(OPS["amin"].kink(x, (1,)), [0.8, 1.0, 1.0])
    module = symgrad.compile(
        {"name": "pool", "inputs": {"x": {"shape": [4, 2]}},
         "steps": {"y": "sum(max(x, axis=-1)**2)"}}  # fmt: skip
    )
    near = {"x": np.array([[0.5, 0.5002], [1.0, -1.0], [0.3, 0.9], [2.0, 1.0]])}
    assert _kinks(module, near, KINK_MARGIN)
    rng = np.random.default_rng(0)
    for _ in range(20):
        point = sample_point(module, rng)
        x = np.sort(point["x"], axis=-1)
        assert np.all(x[:, 1] - x[:, 0] > KINK_MARGIN)
