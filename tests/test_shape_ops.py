"""Shape operations (issue 12 item 3): reshape (with -1), None / expand_dims, squeeze,
concatenate, stack, list literals, flip, roll, slicing with steps. y = sum(W * R(x))
for a random W, so ∂y/∂x is R's adjoint applied to W, written here by hand in NumPy;
every gradient also against finite differences on every entry."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import check_gradients
from tests.conftest import assert_step_error

X = (2, 3, 4)


def _unslice(w, key, shape):
    g = np.zeros(shape)
    g[key] = w
    return g


CASES = {
    # expression of x: (its NumPy value, ∂ sum(W * value)/∂x given W)
    "reshape(x, (6, -1))": (lambda x: x.reshape(6, -1), lambda w: w.reshape(X)),
    "reshape(x, -1)": (lambda x: x.reshape(-1), lambda w: w.reshape(X)),
    "x[:, None, 1]": (
        lambda x: x[:, None, 1],
        lambda w: _unslice(w, np.s_[:, None, 1], X),
    ),
    "expand_dims(x, (0, -1))": (lambda x: x[None, ..., None], lambda w: w[0, ..., 0]),
    "squeeze(x[:, 1:2, None, ::2])": (
        lambda x: x[:, 1, ::2],
        lambda w: _unslice(w, np.s_[:, 1, ::2], X),
    ),
    "x[::-2, 1:, ::3]": (
        lambda x: x[::-2, 1:, ::3],
        lambda w: _unslice(w, np.s_[::-2, 1:, ::3], X),
    ),
    "concatenate([x, x[:, :1] * 2], axis=1)": (
        lambda x: np.concatenate([x, 2 * x[:, :1]], axis=1),
        lambda w: w[:, :3] + _unslice(2 * w[:, 3:], np.s_[:, :1], X),
    ),
    "stack([x, x**2], axis=-1)": (
        lambda x: np.stack([x, x**2], axis=-1),
        None,  # needs x: below
    ),
    "flip(x, axis=(0, 2))": (
        lambda x: np.flip(x, (0, 2)),
        lambda w: np.flip(w, (0, 2)),
    ),
    "roll(x, (1, -1), axis=(1, 2))": (
        lambda x: np.roll(x, (1, -1), axis=(1, 2)),
        lambda w: np.roll(w, (-1, 1), axis=(1, 2)),
    ),
    "roll(x, 5)": (lambda x: np.roll(x, 5), lambda w: np.roll(w, -5)),
    # each element's copies summed: the copies sit next to each other
    "repeat(x, 2, axis=1)": (
        lambda x: np.repeat(x, 2, axis=1),
        lambda w: w[:, 0::2] + w[:, 1::2],
    ),
    # the tiles summed: tile (2, 1, 2) of [2, 3, 4] is [4, 3, 8]
    "tile(x, (2, 1, 2))": (
        lambda x: np.tile(x, (2, 1, 2)),
        lambda w: w[:2, :, :4] + w[2:, :, :4] + w[:2, :, 4:] + w[2:, :, 4:],
    ),
    "tile(x, (3, 1, 1, 1))": (
        lambda x: np.tile(x, (3, 1, 1, 1)),
        lambda w: w.sum(axis=0),
    ),
}


@pytest.mark.parametrize("expression", sorted(CASES))
def test_shape_operation_adjoint(expression):
    value, adjoint = CASES[expression]
    rng = np.random.default_rng(3)
    x = rng.normal(size=X)
    r = value(x)
    w = rng.normal(size=r.shape)
    if adjoint is None:  # stack([x, x**2], -1): W[..., 0] + 2 x W[..., 1]
        expected = w[..., 0] + 2 * x * w[..., 1]
    else:
        expected = adjoint(w)
    module = symgrad.compile(
        {
            "name": "shapes",
            "inputs": {"x": {"shape": list(X)}, "W": {"shape": list(r.shape)}},
            "wrt": ["x"],
            "steps": {"r": expression, "y": "sum(W * r)"},
        }
    )
    y, grads = module.value_and_grad(x=x, W=w)
    assert y == pytest.approx(np.sum(w * r), rel=1e-12)
    np.testing.assert_allclose(grads.x, expected, rtol=1e-12, atol=1e-14)
    assert check_gradients(module, {"x": x, "W": w}).ok


def test_list_literals_of_scalars_and_of_arrays():
    module = symgrad.compile(
        {
            "name": "lists",
            "inputs": {"s": {}, "t": {}, "v": {"shape": [3]}},
            "steps": {
                "p": "[s, s * t, exp(t)]",
                "M": "[[s, t], [t, s]]",
                "Q": "[v, v * s]",
                "y": "sum(p * v) + sum(M @ M) + sum(Q**2)",
            },
        }
    )
    s, t, v = 0.3, -0.7, np.array([1.0, 2.0, -1.5])
    y, g = module.value_and_grad(s=s, t=t, v=v)
    M = np.array([[s, t], [t, s]])  # noqa: N806
    expected = (
        v[0] * s + v[1] * s * t + v[2] * np.exp(t) + np.sum(M @ M) + np.sum(v**2) * (1 + s**2)
    )  # fmt: skip
    assert y == pytest.approx(expected, rel=1e-12)
    # sum(M @ M) = 2 s² + 2 t² + 4 s t (each entry of M @ M written out)
    assert g.s == pytest.approx(v[0] + v[1] * t + 4 * s + 4 * t + 2 * s * np.sum(v**2))
    assert g.t == pytest.approx(v[1] * s + v[2] * np.exp(t) + 4 * t + 4 * s)
    np.testing.assert_allclose(g.v, [s, s * t, np.exp(t)] + 2 * v * (1 + s**2))


@pytest.mark.parametrize(
    "expression, words",
    [
        ("reshape(x, (5, -1))", ["[2, 3, 4]", "(5, -1)"]),
        ("reshape(x, (-1, -1))", ["one may be -1"]),
        ("squeeze(x, 0)", ["not of size 1"]),
        ("concatenate([x, x[0]], axis=0)", ["one rank", "[2, 3, 4]", "[3, 4]"]),
        ("concatenate([x, x[:, :2]], axis=0)", ["[2, 3, 4]", "[2, 2, 4]"]),
        ("stack([x, x[:1]])", ["one shape", "[1, 3, 4]"]),
        ("roll(x, (1, 2), axis=0)", ["do not pair"]),
        ("expand_dims(x, 5)", ["axis 5 is out of range"]),
        ("x[None, 0, 0, 0, 0]", ["4 indices", "[2, 3, 4]"]),
    ],
)
def test_shape_errors_name_the_step(expression, words):
    assert_step_error({"x": {"shape": list(X)}}, expression, words)


def test_reshape_with_a_named_dimension():
    module = symgrad.compile(
        {
            "name": "named",
            "inputs": {"X": {"shape": ["n", 2, 3]}},
            "steps": {"F": "reshape(X, (-1, 6))", "y": "sum(F[:, ::5] ** 2)"},
        }
    )
    X = np.arange(24.0).reshape(4, 2, 3)  # noqa: N806
    y, g = module.value_and_grad(X=X)
    F = X.reshape(4, 6)  # noqa: N806
    assert y == np.sum(F[:, ::5] ** 2)
    expected = np.zeros((4, 6))
    expected[:, ::5] = 2 * F[:, ::5]
    np.testing.assert_array_equal(g.X, expected.reshape(4, 2, 3))


def conv1d_pool_hand(x, w, b):
    """examples/conv1d_pool.yaml by hand: 1-D cross-correlation, ReLU, max pooling."""
    n = len(x)
    windows = np.stack([x[:, k : k + 14] for k in range(3)], axis=-1)
    conv = windows @ w + b
    act = np.maximum(conv, 0)
    r = act.reshape(n, 7, 2)
    pooled = r.max(axis=-1)
    hit = r == pooled[..., None]
    dact = (hit / hit.sum(axis=-1, keepdims=True) / pooled.size).reshape(n, 14)
    dconv = dact * (conv > 0)
    dx = np.zeros_like(x)
    for k in range(3):  # each tap of the kernel saw a shifted copy of x
        dx[:, k : k + 14] += dconv * w[k]
    grads = {"x": dx, "w": np.einsum("ntk,nt->k", windows, dconv), "b": dconv.sum()}
    return pooled.mean(), grads


def test_conv1d_pool_example_equals_hand_written_backprop():
    from tests.conftest import ROOT

    module = symgrad.compile(ROOT / "examples/conv1d_pool.yaml")
    rng = np.random.default_rng(0)
    point = {"x": rng.normal(size=(5, 16)), "w": rng.normal(size=3), "b": 0.1}
    loss, grads = module.value_and_grad(**point)
    want, hand = conv1d_pool_hand(**point)
    assert loss == pytest.approx(want, rel=1e-12)
    for name, expected in hand.items():
        np.testing.assert_allclose(
            getattr(grads, name), expected, rtol=1e-10, atol=1e-14
        )
    # a tie in a pooling window: both elements get half (PyTorch's max of a tensor)
    tied = {"x": np.ones((1, 16)), "w": np.array([1.0, 0.0, 0.0]), "b": 0.0}
    _, grads = module.value_and_grad(**tied)
    np.testing.assert_allclose(grads.w, [1.0, 1.0, 1.0])  # every window is 1s
    np.testing.assert_allclose(grads.x[0, :14], np.full(14, 1 / 7 / 2))
