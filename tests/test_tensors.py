"""Vectors, matrices and batches: gradients against hand-written NumPy backprop and
finite differences (full Jacobian on small sizes, random directions on larger ones)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import cli
from symgrad.check import check_gradients
from tests.conftest import ROOT


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# Hand-written backprop, as a practitioner writes it: the independent references.
def hand_logistic(X, y, w, b):  # noqa: N803
    a = sigmoid(X @ w + b)
    loss = np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a))
    dz = a - y  # the closed form of seed 000's NumPy cell
    return loss, {"w": X.T @ dz, "b": np.sum(dz)}


def hand_softmax_cross_entropy(X, Y, W, b):  # noqa: N803
    z = X @ W + b
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    loss = np.mean(lse - np.sum(Y * z, axis=1))
    dz = (np.exp(z - lse[:, None]) - Y) / len(X)  # softmax - Y, averaged
    return loss, {"W": X.T @ dz, "b": dz.sum(axis=0)}


def hand_mlp(X, Y, W1, b1, W2, b2):  # noqa: N803
    h = np.tanh(X @ W1 + b1)
    out = h @ W2 + b2
    loss = np.mean((out - Y) ** 2)
    dout = 2 * (out - Y) / out.size
    dh = dout @ W2.T
    ds = dh * (1 - h**2)
    return loss, {
        "W1": X.T @ ds,
        "b1": ds.sum(axis=0),
        "W2": h.T @ dout,
        "b2": dout.sum(axis=0),
    }


def data(example: str, n: int, d: int, hidden: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if example == "logistic_regression_batch":
        return {"X": rng.normal(size=(n, d)), "y": rng.integers(0, 2, n).astype(float),
                "w": rng.normal(size=d), "b": 0.3}  # fmt: skip
    if example == "softmax_cross_entropy":
        return {"X": rng.normal(size=(n, d)), "Y": np.eye(k)[rng.integers(0, k, n)],
                "W": rng.normal(size=(d, k)), "b": rng.normal(size=k)}  # fmt: skip
    return {"X": rng.normal(size=(n, d)), "Y": rng.normal(size=(n, k)),
            "W1": rng.normal(size=(d, hidden)) / np.sqrt(d), "b1": rng.normal(size=hidden),
            "W2": rng.normal(size=(hidden, k)) / np.sqrt(hidden), "b2": rng.normal(size=k)}  # fmt: skip


HAND = {
    "logistic_regression_batch": hand_logistic,
    "softmax_cross_entropy": hand_softmax_cross_entropy,
    "mlp": hand_mlp,
}


@pytest.fixture(scope="module", params=sorted(HAND))
def example(request):
    return request.param, symgrad.compile(ROOT / f"examples/{request.param}.yaml")


def test_matches_hand_written_numpy(example):
    name, module = example
    point = data(name, n=50, d=4, hidden=6, k=3)
    value, grads = module.value_and_grad(**point)
    hand_value, hand_grads = HAND[name](**point)
    assert value == pytest.approx(hand_value, rel=1e-12)
    for field in module.Gradients._fields:
        got = getattr(grads, field)
        assert np.shape(got) == np.shape(point[field])
        np.testing.assert_allclose(got, hand_grads[field], rtol=1e-10, atol=1e-14)
    # backward from a tape with the default dy gives the same
    _, tape = module.forward(**point)
    for field, got in zip(module.Gradients._fields, module.backward(tape), strict=True):
        np.testing.assert_allclose(got, hand_grads[field], rtol=1e-10, atol=1e-14)


def test_full_jacobian_against_finite_differences(example):
    name, module = example
    point = data(name, n=3, d=2, hidden=4, k=3, seed=1)
    report = check_gradients(module, point)
    assert report.ok, str(report)
    # one row per entry of every differentiated input: the full Jacobian
    assert len(report.rows) == sum(np.size(point[f]) for f in module.Gradients._fields)


def test_random_directions_on_larger_sizes(example):
    name, module = example
    point = data(name, n=200, d=8, hidden=16, k=5, seed=2)
    grads = module.grad(**point)
    rng = np.random.default_rng(3)
    for field in module.Gradients._fields:
        direction = rng.normal(size=np.shape(point[field]))
        h = 1e-6

        def f(step, field=field, direction=direction):
            return module.forward(**{**point, field: point[field] + step * direction})[
                0
            ]

        numerical = (f(h) - f(-h)) / (2 * h)
        analytical = np.sum(getattr(grads, field) * direction)
        assert analytical == pytest.approx(numerical, rel=1e-6, abs=1e-8), field


def test_logistic_regression_reproduces_seed_000():
    """Seed 000 (Optional Lab - Derivatives), its NumPy cell's printed gradients."""
    module = symgrad.compile(ROOT / "examples/logistic_regression_batch.yaml")
    X = np.array([[0.1, 0.2], [0.4, 0.5], [0.5, 0.3]])  # noqa: N806
    grads = module.grad(X=X, y=np.array([0, 1, 0]), w=np.array([0.1, 0.2]), b=0.1)
    np.testing.assert_allclose(grads.w, [0.1537824, 0.05303517], rtol=1e-6)
    assert grads.b == pytest.approx(0.6494514041852678, rel=1e-14)


def test_mlp_backward_reads_like_hand_written_numpy():
    text = (ROOT / "generated/mlp.py").read_text()
    start = (
        text.index('"""', text.index("def backward(") + 40) + 3
    )  # after the docstring
    backward = text[start : text.index("gradients = (", start)]
    code = [line.strip() for line in backward.splitlines() if line.strip()]
    code = [line for line in code if not line.startswith("#")]
    assert "dL_dW1 = X.T @ dL_dt1" in code
    assert "dL_dW2 = hidden.T @ dL_dt3" in code
    assert "dL_dhidden = dL_dt3 @ W2.T" in code
    assert "dL_db2 = np.sum(dL_dt3, axis=0)" in code
    assert not any("[" in line for line in code)  # no per-element code
    assert len(code) < 25


def spec(steps: dict, **inputs) -> dict:
    return {
        "name": "t",
        "inputs": {k: {"shape": v} for k, v in inputs.items()},
        "steps": steps,
    }


@pytest.mark.parametrize(
    "steps, shapes",
    [
        ({"y": "sum(X[:, 0] * w[1:]) + X[0, 1]**2 + w[-1]"}, {"X": [3, 2], "w": [4]}),
        ({"p": "softmax(X, axis=1)", "y": "sum(p * C)"}, {"X": [3, 4], "C": [3, 4]}),
        ({"p": "softmax(X)", "y": "sum(p[:, 0]) + logsumexp(X)"}, {"X": [2, 3]}),
        ({"y": "sum(mean(X, axis=0) * w) + mean(X.T @ X)"}, {"X": [3, 2], "w": [2]}),
        (
            {"y": "dot(w, v) * sum(transpose(X) @ w) + w @ X @ v"},
            {"X": [3, 3], "w": [3], "v": [3]},
        ),
        ({"y": "sum(logsumexp(X, axis=0) * exp(w))"}, {"X": [2, 3], "w": [3]}),
        (
            {"z": "X @ w + b", "y": "sum(relu(z) + max(z, 0.5))"},
            {"X": [4, 3], "w": [3], "b": []},
        ),
        ({"y": "sum(X * w + tanh(w) * X / (1 + X**2))"}, {"X": [3, 2], "w": [1, 2]}),
    ],
)
def test_tensor_operations_against_finite_differences(steps, shapes):
    module = symgrad.compile(spec(steps, **shapes))
    rng = np.random.default_rng(0)
    point = {k: rng.uniform(-1, 1, size=v) if v else 0.3 for k, v in shapes.items()}
    report = check_gradients(module, point)
    assert report.ok, str(report)


def test_layer_with_array_output_chains_by_vjp():
    module = symgrad.compile(spec({"out": "tanh(X @ W)"}, X=["n", 3], W=[3, 2]))
    rng = np.random.default_rng(1)
    X, W, dy = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))  # noqa: N806
    out, tape = module.forward(X=X, W=W)
    grads = module.backward(tape, dy)
    ds = dy * (1 - out**2)
    np.testing.assert_allclose(grads.X, ds @ W.T, rtol=1e-12)
    np.testing.assert_allclose(grads.W, X.T @ ds, rtol=1e-12)
    # the default dy = 1 gives the gradient of sum(out)
    np.testing.assert_allclose(module.grad(X=X, W=W).W, X.T @ (1 - out**2), rtol=1e-12)


def test_shape_mismatch_is_a_load_time_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ninputs:\n  X: {shape: [n, 3]}\n  w: {shape: [2]}\n"
        "steps:\n  z: X @ w\n  y: sum(z)\n"
    )
    assert cli.main(["compile", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"{path}:6: error: step 'z': [n, 3] @ [2]: inner dimensions 3 and 2 differ"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "steps, message",
    [
        ({"y": "sum(X + v)"}, "shapes [3, 2] and [4] do not broadcast"),
        ({"y": "sum(X, axis=2)"}, "axis 2 is out of range"),
        ({"y": "X[5, 0]"}, "index 5 is out of range for dimension 3"),
        ({"y": "sum(X, axis=k)"}, "axis must be a constant integer"),
    ],
)
def test_shape_errors_name_the_problem(steps, message):
    with pytest.raises(symgrad.SpecError, match=re.escape(message)):
        symgrad.compile(spec(steps, X=[3, 2], v=[4]))


def test_python_target_refuses_tensors():
    with pytest.raises(
        symgrad.SpecError, match="python target compiles scalar specs only"
    ):
        symgrad.compile(ROOT / "examples/mlp.yaml", target="python")


def test_sympy_matrix_expressions():
    W = sp.MatrixSymbol("W", 3, 2)  # noqa: N806
    X = sp.MatrixSymbol("X", sp.Symbol("n"), 3)  # noqa: N806
    b = sp.Symbol("b")
    expr = (
        sp.HadamardProduct(X * W, X * W)
        + b * (X * W).applyfunc(sp.tanh)
        + (W.T * X.T).T
    )
    module = symgrad.compile(expr, wrt=[W, b])
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 2))
    y, grads = module.value_and_grad(W=w, b=0.5, X=x)
    t = x @ w
    np.testing.assert_allclose(y, t**2 + 0.5 * np.tanh(t) + t, rtol=1e-14)
    dt = 2 * t + 0.5 * (1 - np.tanh(t) ** 2) + 1
    np.testing.assert_allclose(grads.W, x.T @ dt, rtol=1e-12)
    assert grads.b == pytest.approx(np.sum(np.tanh(t)), rel=1e-12)


def test_dask_arrays_flow_through_lazily():
    """Data larger than memory: chunked Dask arrays pass through the generated code."""
    da = pytest.importorskip("dask.array")
    module = symgrad.compile(ROOT / "examples/logistic_regression_batch.yaml")
    point = data("logistic_regression_batch", n=1000, d=5, hidden=0, k=0)
    chunked = {**point, "X": da.from_array(point["X"], chunks=(250, 5)),
               "y": da.from_array(point["y"], chunks=250)}  # fmt: skip
    value, grads = module.value_and_grad(**chunked)
    assert isinstance(grads.w, da.Array) and isinstance(value, da.Array)  # still lazy
    w, b = da.compute(grads.w, grads.b, scheduler="synchronous")
    expected_value, expected = hand_logistic(**point)
    np.testing.assert_allclose(w, expected["w"], rtol=1e-12)
    assert b == pytest.approx(expected["b"], rel=1e-12)
    assert float(value.compute(scheduler="synchronous")) == pytest.approx(
        expected_value
    )
