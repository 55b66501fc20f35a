"""Arrays of any rank (issue 12): batched @, einsum, tensordot, outer, trace, diag,
tril/triu, dot with a scalar. Each compiled gradient is checked against central
finite differences (symgrad.check_gradients, every entry) and against a
hand-written NumPy backprop, on shapes of rank 3 and 4 with size-1 dimensions."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad.check import check_gradients
from symgrad.frontend.spec import SpecError, from_dict
from symgrad.pipeline import build, source
from tests.conftest import ROOT


def _module(steps: dict, inputs: dict, output: str | None = None):
    spec = {
        "name": "rank_n",
        "inputs": {n: {"shape": list(s)} if s else {} for n, s in inputs.items()},
        "steps": steps,
    }
    if output:
        spec["output"] = output
    return symgrad.compile(spec)


def _point(inputs: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        n: rng.uniform(-1, 1, size=s) if s else float(rng.uniform(0.5, 1.5))
        for n, s in inputs.items()
    }


def _check(module, point, hand):
    """Finite differences on every entry, then the hand-written backprop to 1e-12."""
    report = check_gradients(module, point)
    assert report.ok, str(report)
    value, grads = module.value_and_grad(**point)
    hand_value, hand_grads = hand(**point)
    assert value == pytest.approx(hand_value, rel=1e-12)
    for name, expected in hand_grads.items():
        got = getattr(grads, name)
        assert np.shape(got) == np.shape(point[name]), name
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)


def mT(x):  # noqa: N802 (NumPy's name)
    return np.swapaxes(x, -1, -2)


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [
        ((2, 3, 4), (2, 4, 5)),  # a stack times a stack
        ((2, 3, 4), (4, 5)),  # a stack times one matrix: B's gradient sums the batch
        ((3, 4), (2, 4, 5)),
        ((2, 1, 3, 4), (3, 4, 2)),  # batch dimensions broadcast: 1 against 3
        ((1, 3, 4), (2, 4, 1)),
    ],
)
def test_batched_matmul(shape_a, shape_b):
    inputs = {"A": shape_a, "B": shape_b}
    module = _module({"y": "sum(sin(A @ B))"}, inputs)

    def hand(A, B):  # noqa: N803
        C = A @ B  # noqa: N806
        dC = np.cos(C)  # noqa: N806
        dA, dB = dC @ mT(B), mT(A) @ dC  # noqa: N806
        # each summed over the batch dimensions its operand was broadcast along
        dA = _unbroadcast(dA, A.shape)  # noqa: N806
        dB = _unbroadcast(dB, B.shape)  # noqa: N806
        return np.sum(np.sin(C)), {"A": dA, "B": dB}

    _check(module, _point(inputs), hand)


def _unbroadcast(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, d in enumerate(shape) if d == 1), keepdims=True)


@pytest.mark.parametrize(
    "shape_a, shape_v", [((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((2, 1, 4), (4,))]
)
def test_batched_matmul_with_a_vector(shape_a, shape_v):
    inputs = {"A": shape_a, "v": shape_v}
    module = _module({"y": "sum(exp(A @ v))"}, inputs)

    def hand(A, v):  # noqa: N803
        out = A @ v
        g = np.exp(out)
        if A.ndim == 1:  # a vector times a stack: g is (2, 3)
            return np.sum(g), {
                "A": np.einsum("bkj,bj->k", v, g),
                "v": A[None, :, None] * g[:, None, :],
            }
        return np.sum(g), {
            "A": _unbroadcast(g[..., None] * v, A.shape),
            "v": np.einsum("bik,bi->k", A, g),
        }

    _check(module, _point(inputs, 1), hand)


def test_einsum_and_its_adjoints_are_einsums():
    inputs = {"A": (2, 3, 4), "B": (4, 5), "w": (5,)}
    steps = {"C": "einsum('bij,jk,k->bi', A, B, w)", "y": "sum(C**2)"}
    module = _module(steps, inputs)

    def hand(A, B, w):  # noqa: N803
        C = np.einsum("bij,jk,k->bi", A, B, w)  # noqa: N806
        dC = 2 * C  # noqa: N806
        return np.sum(C**2), {
            "A": np.einsum("bi,jk,k->bij", dC, B, w),
            "B": np.einsum("bij,bi,k->jk", A, dC, w),
            "w": np.einsum("bij,jk,bi->k", A, B, dC),
        }

    _check(module, _point(inputs), hand)
    text = source(build(from_dict({
        "name": "e", "inputs": {k: {"shape": list(v)} for k, v in inputs.items()},
        "steps": steps,
    })), "numpy")  # fmt: skip
    backward = text[text.index("def backward") :]
    assert 'np.einsum("jk,k,bi->bij", B, w, dy_dC)' in backward


def test_einsum_implicit_form_sum_and_axis_only_one_operand_has():
    # 'ij' alone is NumPy's implicit form: the output is 'ij'; 'bij->j' sums b and i,
    # whose adjoint spreads dy over them (broadcast, not an einsum)
    inputs = {"A": (2, 3, 4), "M": (3, 4)}
    module = _module(
        {"s": "einsum('bij->j', A)", "t": "einsum('ij', M)", "y": "sum(s * t[0])"},
        inputs,
    )

    def hand(A, M):  # noqa: N803
        s = A.sum(axis=(0, 1))
        return np.sum(s * M[0]), {
            "A": np.broadcast_to(M[0], A.shape),
            "M": np.concatenate([s[None], np.zeros((2, 4))]),
        }

    _check(module, _point(inputs), hand)


@pytest.mark.parametrize(
    "axes, shape_a, shape_b",
    [
        (2, (2, 3, 4), (3, 4, 5)),
        (1, (2, 3, 4), (4, 1)),
        ("((0, 2), (1, 0))", (2, 3, 4), (4, 2)),
    ],
)
def test_tensordot(axes, shape_a, shape_b):
    inputs = {"a": shape_a, "b": shape_b}
    module = _module({"y": f"sum(tanh(tensordot(a, b, axes={axes})))"}, inputs)
    np_axes = eval(str(axes))  # noqa: S307 (the test's own literal)

    def hand(a, b):
        out = np.tensordot(a, b, axes=np_axes)
        g = 1 - np.tanh(out) ** 2
        # through the definition: sum_out g * tensordot(a, b) is linear in each
        grad_a = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            e = np.zeros_like(a)
            e[index] = 1
            grad_a[index] = np.sum(g * np.tensordot(e, b, axes=np_axes))
        grad_b = np.zeros_like(b)
        for index in np.ndindex(b.shape):
            e = np.zeros_like(b)
            e[index] = 1
            grad_b[index] = np.sum(g * np.tensordot(a, e, axes=np_axes))
        return np.sum(np.tanh(out)), {"a": grad_a, "b": grad_b}

    _check(module, _point(inputs), hand)


def test_outer_trace_diag_tril_triu_and_dot_with_a_scalar():
    inputs = {"u": (3,), "v": (4,), "M": (3, 3), "T": (2, 3, 3), "s": ()}
    steps = {
        "P": "outer(u, v)",
        "y": "sum(P**2) + trace(M @ M) + sum(diag(u) * M) + sum(diag(M) * u)"
        " + sum(tril(T) * triu(T, 1)) + sum(dot(u, s)) + dot(s, 2) + dot(u, u)",
    }
    module = _module(steps, inputs)

    def hand(u, v, M, T, s):  # noqa: N803
        P = np.outer(u, v)  # noqa: N806
        value = (
            np.sum(P**2) + np.trace(M @ M) + np.sum(np.diag(u) * M)
            + np.sum(np.diag(M) * u) + np.sum(np.tril(T) * np.triu(T, 1))
            + np.sum(u * s) + 2 * s + u @ u
        )  # fmt: skip
        dP = 2 * P  # noqa: N806
        # d trace(M M) = 2 M.T; d <diag(u), M> = diag(u) (and its u: diag(M))
        return value, {
            "u": dP @ v + np.diag(M) + np.diag(M) + s + 2 * u,
            "v": u @ dP,
            "M": 2 * M.T + np.diag(u) + np.diag(u),
            "T": np.tril(np.triu(T, 1)) + np.triu(np.tril(T), 1),
            "s": np.sum(u) + 2,
        }

    _check(module, _point(inputs), hand)


def test_matrix_transpose_of_a_stack():
    inputs = {"A": (2, 3, 4)}
    module = _module({"y": "sum(sin(A.mT @ A) + swapaxes(A, 0, 2)[0, 0, 0])"}, inputs)

    def hand(A):  # noqa: N803
        G = np.cos(mT(A) @ A)  # noqa: N806
        grad = A @ mT(G) + A @ G
        grad = grad.copy()
        grad[0, 0, 0] += G.size  # the indexed entry, broadcast over the sum
        return np.sum(np.sin(mT(A) @ A) + A[0, 0, 0]), {"A": grad}

    _check(module, _point(inputs), hand)


def test_rank_four_inputs_with_named_dimensions_broadcast():
    inputs = {"X": ("b", "h", 3, 1), "w": (1, "h", 1, 4)}
    module = _module({"y": "sum(X * w)"}, inputs)
    point = _point({"X": (2, 5, 3, 1), "w": (1, 5, 1, 4)})

    def hand(X, w):  # noqa: N803
        return np.sum(X * w), {
            "X": np.sum(np.broadcast_to(w, (2, 5, 3, 4)), axis=3, keepdims=True),
            "w": np.sum(X * np.ones((1, 1, 1, 4)), axis=(0, 2), keepdims=True),
        }

    _check(module, point, hand)


@pytest.mark.parametrize(
    "inputs, expression, words",
    [
        ({"A": (2, 3, 4), "B": (3, 4, 5)}, "A @ B", ["[2, 3, 4] @ [3, 4, 5]", "batch"]),
        ({"A": (3, 4), "B": (5, 2)}, "A @ B", ["[3, 4] @ [5, 2]", "inner"]),
        ({"A": (3, 4), "B": (3, 5)}, "einsum('ij,jk->ik', A, B)", ["'j'", "4", "3"]),
        ({"A": (2, 3, 4), "B": (4, 5)}, "dot(A, B)", ["[2, 3, 4]", "einsum"]),
        ({"A": (3, 4), "B": (2, 4)}, "tensordot(A, B, axes=1)", ["[3, 4]", "[2, 4]"]),
        ({"A": (3, 4)}, "trace(A)", ["square", "[3, 4]"]),
        ({"A": (2, 3, 4)}, "diag(A)", ["[2, 3, 4]"]),
        ({"A": (3,)}, "tril(A)", ["matrix", "[3]"]),
        ({"A": (3, 4)}, "outer(A, A)", ["vectors", "[3, 4]"]),
        ({"A": (3, 4)}, "swapaxes(A, 0, 2)", ["axis 2", "[3, 4]"]),
    ],
)
def test_shape_errors_name_the_step_and_both_shapes(inputs, expression, words):
    spec = {
        "name": "bad",
        "inputs": {n: {"shape": list(s)} for n, s in inputs.items()},
        "steps": {"y": f"sum({expression})"},
    }
    with pytest.raises(SpecError) as err:
        build(from_dict(spec))
    message = str(err.value)
    assert "step 'y'" in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "expression, words",
    [
        ("einsum('ij,jk->ik', A)", ["2 operand", "1"]),
        ("einsum('ii->i', A)", ["repeated", "trace or diag"]),
        ("einsum('...i->i', A)", ["'...'"]),
        ("einsum('ij->ik', A)", ["output axis"]),
        ("einsum(A, A)", ["string"]),
        ("swapaxes(A, 0)", ["'axis2'"]),
        ("tril(A, k=x)", ["constant integer"]),
        ("tensordot(A, A, axes=1, foo=2)", ["'foo'"]),
    ],
)
def test_bad_calls_are_errors_at_load_time(expression, words):
    spec = {
        "name": "bad",
        "inputs": {"A": {"shape": [3, 3]}, "x": {}},
        "steps": {"y": f"sum({expression})"},
    }
    with pytest.raises(SpecError) as err:
        from_dict(spec)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_attention_example_equals_hand_written_backprop():
    """examples/attention.yaml: forward and the VJP against benchmarks/tensors.py's
    hand-written NumPy (rank 4, a batch of heads), and finite differences."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tensors import attention_hand

    module = symgrad.compile(ROOT / "examples/attention.yaml")
    rng = np.random.default_rng(5)
    inputs = {k: rng.normal(size=(2, 3, 5, 64)) for k in "QKV"}
    dy = rng.normal(size=(2, 3, 5, 64))
    out, tape = module.forward(**inputs)
    grads = module.backward(tape, dy)
    hand_out, hand_grads = attention_hand(**inputs, dy=dy)
    np.testing.assert_allclose(out, hand_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, hand_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    small = {k: v[:1, :2, :3] for k, v in inputs.items()}
    report = check_gradients(module, small)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    "steps",
    [{"y": "sum(X / X)"}, {"p": "X - X", "y": "sum(p @ W)"}, {"y": "sum(0 * X)"}],
)
def test_an_array_sympy_cancels_is_a_clear_error(steps):
    """SymPy makes X - X the number 0 and X/X the number 1, without X's shape:
    sum(X/X) would be 1, not X.size. Refused, naming the step and the array."""
    spec = {
        "name": "cancel",
        "inputs": {"X": {"shape": [3, 2]}, "W": {"shape": [2, 2]}},
        "steps": steps,
    }
    with pytest.raises(SpecError) as err:
        symgrad.compile(spec)
    assert err.value.step == next(iter(steps)) and "X ([3, 2])" in str(err.value)


def test_a_cancelled_scalar_or_an_array_that_stays_compiles():
    """Only a dropped array is refused: a - a of scalars is 0 (as NumPy's), and
    X - X + X keeps X."""
    module = _module({"y": "sum(X - X + X) + (a - a)"}, {"X": (3, 2), "a": ()})
    point = _point({"X": (3, 2), "a": ()})
    value, grads = module.value_and_grad(**point)
    assert value == pytest.approx(np.sum(point["X"]))
    np.testing.assert_allclose(grads.X, np.ones((3, 2)))
