"""Gather (issue 12 item 4): indexing with integer arrays (inputs declared with
`integers: k`) and arange(n); the adjoint adds back at the indices, accumulating a
repeated one. Checked against hand-written NumPy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import check_gradients, sample_point
from symgrad.frontend.spec import SpecError
from tests.conftest import ROOT


def softmax_cross_entropy_labels_hand(X, labels, W, b):  # noqa: N803
    z = X @ W + b
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    n = len(X)
    loss = -np.mean(logp[np.arange(n), labels])
    dz = np.exp(logp)
    dz[np.arange(n), labels] -= 1  # softmax - one-hot
    dz /= n
    return loss, {"X": dz @ W.T, "W": X.T @ dz, "b": dz.sum(axis=0)}


def test_softmax_cross_entropy_with_integer_labels():
    module = symgrad.compile(ROOT / "examples/softmax_cross_entropy_labels.yaml")
    assert module.Gradients._fields == ("X", "W", "b")  # labels: integers, no gradient
    rng = np.random.default_rng(0)
    n, d, k = 50, 4, 3
    point = {"X": rng.normal(size=(n, d)), "labels": rng.integers(0, k, n),
             "W": rng.normal(size=(d, k)), "b": rng.normal(size=k)}  # fmt: skip
    loss, grads = module.value_and_grad(**point)
    want, hand = softmax_cross_entropy_labels_hand(**point)
    assert loss == pytest.approx(want, rel=1e-12)
    for name, expected in hand.items():
        np.testing.assert_allclose(
            getattr(grads, name), expected, rtol=1e-10, atol=1e-14
        )
    # the same as the one-hot example's loss and gradient
    onehot = symgrad.compile(ROOT / "examples/softmax_cross_entropy.yaml")
    Y = np.eye(k)[point["labels"]]  # noqa: N806
    loss1, grads1 = onehot.value_and_grad(X=point["X"], Y=Y, W=point["W"], b=point["b"])
    assert loss == pytest.approx(loss1, rel=1e-12)
    np.testing.assert_allclose(grads.W, grads1.W, rtol=1e-10)
    small = sample_point(module, np.random.default_rng(1))
    assert small["labels"].dtype.kind == "i"
    assert check_gradients(module, small).ok


def test_repeated_indices_accumulate():
    module = symgrad.compile(
        {
            "name": "gather",
            "inputs": {"x": {"shape": [5]}, "i": {"shape": [4], "integers": 5},
                       "M": {"shape": [3, 5]}, "j": {"shape": [2], "integers": 3},
                       "h": {"shape": [2], "integers": 5}},
            "steps": {"y": "sum(x[i] ** 2) + sum(M[j, h] * M[j, 0])"},
        }
    )  # fmt: skip
    x, i = np.arange(1.0, 6.0), np.array([0, 2, 2, 4])
    M, j, h = np.arange(15.0).reshape(3, 5), np.array([1, 1]), i[1:3]  # noqa: N806
    y, g = module.value_and_grad(x=x, i=i, M=M, j=j, h=h)
    assert y == np.sum(x[i] ** 2) + np.sum(M[j, h] * M[j, 0])
    expected_x = np.zeros(5)
    np.add.at(expected_x, i, 2 * x[i])  # x[2] twice: both terms
    np.testing.assert_array_equal(g.x, expected_x)
    assert g.x[2] == 2 * 2 * x[2]
    expected_M = np.zeros((3, 5))  # noqa: N806
    np.add.at(expected_M, (j, h), M[j, 0])  # (1, 2) twice
    np.add.at(expected_M, (j, 0), M[j, h])
    np.testing.assert_array_equal(g.M, expected_M)


def test_gather_with_arange_and_a_slice_on_rank_three():
    module = symgrad.compile(
        {
            "name": "gather3",
            "inputs": {
                "T": {"shape": ["n", 2, 4]},
                "c": {"shape": ["n"], "integers": 4},
            },
            "steps": {"y": "sum(exp(T[arange(n), :, c]))"},
        }
    )
    rng = np.random.default_rng(2)
    T, c = rng.normal(size=(3, 2, 4)), np.array([3, 0, 3])  # noqa: N806
    y, g = module.value_and_grad(T=T, c=c)
    picked = T[np.arange(3), :, c]  # advanced indices apart: their axis goes first
    assert picked.shape == (3, 2)
    assert y == pytest.approx(np.sum(np.exp(picked)), rel=1e-14)
    expected = np.zeros_like(T)
    expected[np.arange(3), :, c] = np.exp(picked)
    np.testing.assert_allclose(g.T, expected, rtol=1e-14)
    assert check_gradients(module, {"T": T, "c": c}).ok


@pytest.mark.parametrize(
    "inputs, steps, extra, words",
    [
        ({"x": {"shape": [3]}, "i": {"shape": [2], "integers": "m"}},
         {"y": "sum(x[i])"}, {}, ["'m'", "no input's dimension"]),
        ({"x": {"shape": [3]}, "i": {"shape": [2], "integers": 0}},
         {"y": "sum(x[i])"}, {}, ["'integers'"]),
        ({"x": {"shape": [3]}, "i": {"shape": [2], "integers": 3}},
         {"y": "sum(x[i])"}, {"wrt": ["i"]}, ["holds integers"]),
        ({"x": {"shape": [3, 4]}, "i": {"shape": [2], "integers": 3},
          "j": {"shape": [3], "integers": 4}},
         {"y": "sum(x[i, j])"}, {}, ["[2]", "[3]", "do not broadcast"]),
        ({"x": {"shape": [3]}}, {"y": "sum(x[arange(0)])"}, {}, ["empty"]),
    ],
)  # fmt: skip
def test_bad_gathers(inputs, steps, extra, words):
    with pytest.raises(SpecError) as err:
        symgrad.compile({"name": "bad", "inputs": inputs, "steps": steps, **extra})
    for word in words:
        assert word in str(err.value), (word, str(err.value))
