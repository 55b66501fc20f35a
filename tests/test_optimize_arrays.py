"""The clean-up passes on array programs (issue 12's gaussian_nll): a scalar spread
by a chain of broadcasts is the scalar, multiplied into the array once; a
negation read only by a sum comes after it; value_and_grad drops the trils of
solve_triangular where the triangle they zero is zero already or never read,
and solves a batch of right-hand sides after mapping them (`S @ C`, a sum of
columns) where only those maps of the solution are read.

Each rewrite's printed form is asserted, and the gradients (jvp and hvp too,
where the spec asks) are checked against central differences, also where a
rewrite must not apply."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import yaml

import symgrad
from symgrad.check import check_gradients, sample_point
from symgrad.compiler.optimize import drop_trils, negate_sums, spread_scalars
from symgrad.ir import Assign, Program
from tests.conftest import ROOT
from tests.test_linalg import gaussian_nll_hand, gaussian_point


def _compile(steps: dict, inputs: dict, wrt: list[str], **options):
    spec = {"name": "arrays", "inputs": {k: {"shape": list(v)} for k, v in inputs.items()},
            "wrt": wrt, "steps": steps}  # fmt: skip
    return symgrad.compile(spec, **options)


def _checked(module, point: dict | None = None) -> None:
    rng = np.random.default_rng(5)
    point = sample_point(module, rng) if point is None else point
    report = check_gradients(module, point, rng)
    assert report.ok, str(report)


def _code(module, function: str = "value_and_grad") -> str:
    return inspect.getsource(getattr(module, function))


@pytest.mark.parametrize(
    "loss, adjoint",
    [
        # the mean's seed over the size, spread over the sums, then over Z
        ("mean(sum(Z**2, axis=0))", r"dL_dZ = 2 \* np\.divide\(1, \w+\.size\) \* Z"),
        ("mean(sum(Z**2, axis=1))", r"dL_dZ = 2 \* np\.divide\(1, \w+\.size\) \* Z"),
        # negated between the two broadcasts: the scalar negated
        ("mean(-sum(Z**2, axis=1))", r"dL_dZ = 2 \* \w+ \* Z"),
    ],
)
def test_a_chain_of_broadcasts_of_a_scalar_is_the_scalar(loss, adjoint):
    """No `_broadcast` is left, and the array is multiplied once (the scalars first)."""
    module = _compile({"Z": "X @ W", "L": loss}, {"X": (5, 3), "W": (3, 4)}, wrt=["W"])
    code = _code(module)
    assert "_broadcast" not in code
    assert re.search(adjoint, code), code
    assert "_broadcast" not in _code(module, "backward")
    _checked(module)


@pytest.mark.parametrize(
    "steps, wrt",
    [
        # the spread value is read by a matrix product: it stays an array
        ({"Z": "X @ W", "L": "mean(sum(Z, axis=0))"}, "W"),
        # the spread value is the gradient itself
        ({"L": "mean(sum(W, axis=0))"}, "W"),
        # Z**2 is also a forward value: its 2*Z is not the backward's to move
        ({"Z": "X @ W", "L": "mean(sum(Z**2, axis=0)) + sum(2*Z)"}, "W"),
    ],
)
def test_a_chain_of_broadcasts_stays_where_a_shape_depends_on_it(steps, wrt):
    module = _compile(steps, {"X": (5, 3), "W": (3, 4)}, wrt=[wrt])
    point = sample_point(module, np.random.default_rng(2))
    _, grads = module.value_and_grad(**point)
    assert np.shape(grads.W) == (3, 4)
    _, tape = module.forward(**point)
    np.testing.assert_allclose(module.backward(tape).W, grads.W, rtol=1e-12)
    _checked(module, point)


def test_a_negation_read_by_a_sum_comes_after_it():
    """The adjoint of mu, broadcast over X's rows, negates the sum, not the rows."""
    module = _compile(
        {"D": "X - mu", "L": "sum(sin(D))"}, {"X": (5, 3), "mu": (3,)}, wrt=["mu"]
    )
    for function in ("value_and_grad", "backward"):
        code = _code(module, function)
        assert "np.sum(-" not in code
        assert re.search(r"= -np\.sum\(|= -t\d+\n", code), code
    _checked(module)


def _negated_then_summed(*more: Assign) -> Program:
    """x [3, 2]; backward: t0 = -x, t1 = sum(t0, axis=0), and `more`."""
    body = (Assign("t0", "neg", ("x",), shape=(3, 2)),
            Assign("t1", "sum", ("t0",), params=(0, False), shape=(2,)), *more)  # fmt: skip
    return Program(
        name="p", inputs=("x",), input_shapes=((3, 2),), steps=(), output="y",
        wrt=("x",), forward=(Assign("y", "sum", ("x",), params=(None, False)),),
        backward=body, gradients=(("x", body[-1].name),),
    )  # fmt: skip


def test_a_negation_read_elsewhere_too_stays_before_the_sum():
    alone = _negated_then_summed(Assign("d", "add", ("x", "t1"), shape=(3, 2)))
    assert [a.op for a in negate_sums(alone).backward] == ["sum", "neg", "add"]
    shared = _negated_then_summed(Assign("d", "add", ("t0", "t1"), shape=(3, 2)))
    assert negate_sums(shared) == shared


def _small_gaussian(derivatives=()):
    """examples/gaussian_nll.yaml in dimension 3."""
    text = (ROOT / "examples/gaussian_nll.yaml").read_text().replace("64", "3")
    spec = yaml.safe_load(text.replace("32*log", "1.5*log"))
    return symgrad.compile(spec, derivatives=list(derivatives))


def test_value_and_grad_solves_with_the_cholesky_factor_itself():
    """Z = solve_triangular(L, ...) of L = cholesky(Sigma): value_and_grad solves
    with L (lower triangular already), and its adjoint of L keeps the upper
    triangle that cholesky's VJP never reads. backward(tape, dy) keeps both trils:
    its ∂nll/∂L is zero above the diagonal, as the steps define it."""
    module = _small_gaussian(["jvp", "hvp"])
    code = _code(module)
    transposed = re.search(r"(\w+) = L\.T\n", code)[1]  # read twice: a name
    assert "np.linalg.solve(L, " in code
    assert f"np.linalg.solve({transposed}, " in code
    assert code.count("np.tril(") == 2  # cholesky's VJP: Φ and the lower triangle
    assert "np.tril(L)" in _code(module, "forward")
    assert _code(module, "backward").count("np.tril(") == 3  # and the adjoint's
    point = gaussian_point(n=5, d=3, seed=1)
    nll, grads = module.value_and_grad(**point)
    want, expected = gaussian_nll_hand(**point)
    assert nll == pytest.approx(want, rel=1e-12)
    _, tape = module.forward(**point)
    for name, value in module.backward(tape)._asdict().items():
        np.testing.assert_allclose(getattr(grads, name), value, rtol=1e-10)
        np.testing.assert_allclose(getattr(grads, name), expected[name], rtol=1e-10)
    _checked(module, point)  # the gradient, jvp and hvp


def test_a_stack_of_cholesky_factors_is_solved_with_itself_too():
    """Batched, cholesky's VJP transposes with swapaxes: the same two trils go."""
    module = _compile(
        {"L": "cholesky(M @ M.mT + 4 * eye3)", "y": "sum(C * solve_triangular(L, B))"},
        {"M": (2, 3, 3), "B": (2, 3, 2), "C": (2, 3, 2), "eye3": (3, 3)},
        wrt=["M", "B"],
        derivatives=["hvp"],
    )
    assert _code(module).count("np.tril(") == 2
    assert "np.linalg.solve(L, B)" in _code(module)
    rng = np.random.default_rng(3)
    point = {"M": rng.normal(size=(2, 3, 3)), "B": rng.normal(size=(2, 3, 2)),
             "C": rng.normal(size=(2, 3, 2)), "eye3": np.eye(3)}  # fmt: skip
    _checked(module, point)


def test_a_tril_of_a_tril_of_a_cholesky_factor_is_the_factor():
    module = _compile(
        {
            "L": "cholesky(M @ M.T + 4 * eye3)",
            "y": "sum(C * solve_triangular(tril(L), B))",
        },
        {"M": (3, 3), "B": (3, 2), "C": (3, 2), "eye3": (3, 3)},
        wrt=["M", "B"],
    )
    assert "np.linalg.solve(L, B)" in _code(module)
    assert _code(module).count("np.tril(") == 2  # cholesky's VJP's
    rng = np.random.default_rng(1)
    point = {
        k: rng.normal(size=v)
        for k, v in {"M": (3, 3), "B": (3, 2), "C": (3, 2)}.items()
    }
    _checked(module, {**point, "eye3": np.eye(3)})


def test_the_cholesky_gradient_reads_only_the_lower_triangle_of_its_cotangent():
    """What dropping the adjoint's tril rests on: sum(W * cholesky(A)) has the same
    gradient for W as for tril(W) (Murray's Φ(LᵀW̄) reads W̄ below the diagonal)."""
    module = _compile(
        {"A": "M @ M.mT + 4 * eye4", "y": "sum(W * cholesky(A))"},
        {"M": (2, 4, 4), "W": (2, 4, 4), "eye4": (4, 4)},
        wrt=["M"],
    )
    rng = np.random.default_rng(8)
    point = {"M": rng.normal(size=(2, 4, 4)), "W": rng.normal(size=(2, 4, 4)),
             "eye4": np.eye(4)}  # fmt: skip
    _, full = module.value_and_grad(**point)
    _, lower = module.value_and_grad(**{**point, "W": np.tril(point["W"])})
    np.testing.assert_allclose(full.M, lower.M, rtol=1e-12, atol=1e-14)
    upper = {**point, "W": np.triu(point["W"], 1)}
    np.testing.assert_allclose(module.value_and_grad(**upper)[1].M, 0, atol=1e-14)


def _triangular_point(rng, **shapes) -> dict:
    point = {k: rng.normal(size=v) for k, v in shapes.items()}
    point["L"] = point["L"] / 3 + 2 * np.eye(3)  # well conditioned
    return point


def test_a_tril_stays_where_its_triangle_is_read():
    """L an input: solve_triangular reads its lower triangle only, so the gradient
    of L is zero above the diagonal (the adjoint's tril stays), and the forward
    tril stays."""
    module = _compile(
        {"Z": "solve_triangular(L, B)", "y": "sum(Z * C)"},
        {"L": (3, 3), "B": (3, 2), "C": (3, 2)},
        wrt=["L", "B"],
        derivatives=["hvp"],
    )
    assert "np.tril(L)" in _code(module)
    point = _triangular_point(np.random.default_rng(4), L=(3, 3), B=(3, 2), C=(3, 2))
    _, grads = module.value_and_grad(**point)
    assert np.all(np.triu(grads.L, 1) == 0) and np.any(np.tril(grads.L) != 0)
    _checked(module, point)


@pytest.mark.parametrize(
    "steps, trils",
    [
        # a tril of a tril: the solve reads L; the steps' tril(M) and the gradient
        # of M's stay (the adjoint of the solve's tril goes: M's reads its triangle)
        ({"L": "tril(M)", "y": "sum(C * solve_triangular(L, B))"}, 2),
        # tril(L, -1) zeroes L's diagonal too, and the solve's tril of the sum with
        # eye3 is no tril of a triangle: they stay, with their adjoints' (not the
        # solve's adjoint tril, read through tril(L, -1)'s)
        ({"L": "tril(M)", "y": "sum(C * solve_triangular(tril(L, -1) + eye3, B))"}, 5),
        # tril(M, 1) keeps a diagonal above: the solve's tril and its adjoint's
        # stay, with the steps' and the gradient of M's
        ({"L": "tril(M, 1)", "y": "sum(C * solve_triangular(L, B))"}, 4),
    ],
)
def test_a_tril_of_a_lower_triangular_value(steps, trils):
    module = _compile(
        steps, {"M": (3, 3), "B": (3, 2), "C": (3, 2), "eye3": (3, 3)}, wrt=["M", "B"]
    )
    code = _code(module)
    assert code.count("np.tril(") == trils, code
    point = _triangular_point(np.random.default_rng(6), L=(3, 3), B=(3, 2), C=(3, 2))
    point = {"M": point.pop("L"), **point, "eye3": np.eye(3)}
    _, grads = module.value_and_grad(**point)
    assert np.all(np.triu(grads.M, 1) == 0)
    _, tape = module.forward(**point)
    np.testing.assert_allclose(module.backward(tape).M, grads.M, rtol=1e-12)
    _checked(module, point)


def test_a_tril_read_through_a_product_with_a_full_matrix_stays():
    """The adjoint of B in A @ B is Aᵀ @ C̄: only with A lower triangular does its
    lower triangle read C̄'s alone. Here C̄ = tril(W) keeps its tril (B a Cholesky
    factor, whose VJP reads only the lower triangle of B̄)."""
    module = _compile(
        {"S": "M @ M.T + 4 * eye4", "B": "cholesky(S)", "y": "sum(W * tril(A @ B))"},
        {"M": (4, 4), "A": (4, 4), "W": (4, 4), "eye4": (4, 4)},
        wrt=["M"],
    )
    assert _code(module).count("np.tril(") == 4  # tril(A @ B), its adjoint, cholesky's
    rng = np.random.default_rng(9)
    point = {k: rng.normal(size=(4, 4)) for k in "MAW"} | {"eye4": np.eye(4)}
    _checked(module, point)


def _spread_program(*last: Assign) -> Program:
    """Z [3, 2], y = mean(sum(Z**2, axis=0)); backward as reverse writes it, then `last`."""
    body = (
        Assign("t2", "size", ("t1",)),
        Assign("t3", "div", (1, "t2")),
        Assign("d1", "broadcast", ("t3", "t1"), params=(None,), shape=(2,)),
        Assign("d0", "broadcast", ("d1", "t0"), params=(0,), shape=(3, 2)),
        Assign("t4", "mul", (2, "Z"), shape=(3, 2)),
        Assign("t5", "mul", ("t4", "d0"), shape=(3, 2)),
        *last,
    )
    forward = (
        Assign("t0", "pow", ("Z", 2), shape=(3, 2)),
        Assign("t1", "sum", ("t0",), params=(0, False), shape=(2,)),
        Assign("y", "mean", ("t1",), params=(None, False)),
    )
    return Program(
        name="p", inputs=("Z",), input_shapes=((3, 2),), steps=("y",), output="y",
        wrt=("Z",), forward=forward, backward=body, gradients=(("Z", body[-1].name),),
        seed=1,
    )  # fmt: skip


def test_the_scalars_multiply_first_where_the_product_is_read_once():
    alone = spread_scalars(_spread_program())
    assert [(a.name, a.args) for a in alone.backward[-2:]] == [
        ("t4", (2, "t3")),
        ("t5", ("t4", "Z")),
    ]
    shared = _spread_program(Assign("dZ", "add", ("t5", "t4"), shape=(3, 2)))
    products = [a.args for a in spread_scalars(shared).backward if a.op == "mul"]
    assert products == [(2, "Z"), ("t4", "t3")]


def test_a_gradient_keeps_its_tril():
    """A gradient that is a tril keeps it, though another tril reads it."""
    body = (Assign("t0", "tril", ("M",), params=(0,), shape=(3, 3)),
            Assign("t1", "tril", ("t0",), params=(-1,), shape=(3, 3)),
            Assign("t2", "add", ("t1", "M"), shape=(3, 3)))  # fmt: skip
    program = Program(
        name="p", inputs=("M",), input_shapes=((3, 3),), steps=(), output="y",
        wrt=("M", "M"), forward=(Assign("y", "sum", ("M",), params=(None, False)),),
        backward=body, gradients=(("M", "t0"), ("M", "t2")), seed=1,
    )  # fmt: skip
    assert drop_trils(program) == program


def test_value_and_grad_maps_a_batch_of_right_hand_sides_before_it_solves():
    """The adjoint solve(Lᵀ, Ḡ) of gaussian_nll is [d, n]; read only as `@ Zᵀ` and
    summed over its columns, value_and_grad solves Ḡ @ Zᵀ ([d, d]) and Ḡ's
    column sums ([d]) instead, and backward keeps the chain rule's solve. The
    gradients equal backward's and the textbook's, and central differences."""
    module = symgrad.compile(ROOT / "examples/gaussian_nll.yaml")
    code = _code(module)
    assert re.search(r"np\.linalg\.solve\((\w+), dnll_dZ @ Z\.T\)", code), code
    assert re.search(r"np\.linalg\.solve\((\w+), np\.sum\(dnll_dZ, axis=1\)\)", code)
    assert "dnll_dt6 = np.linalg.solve(t4.T, dnll_dZ)" in _code(module, "backward")
    program = module.__symgrad__.unit
    shapes = program.shapes()
    for a in program.backward:  # no solve of n columns is left
        assert a.op != "solve" or "n" not in shapes[a.name], a
    point = gaussian_point(n=40, d=64, seed=2)
    _, grads = module.value_and_grad(**point)
    _, tape = module.forward(**point)
    _, expected = gaussian_nll_hand(**point)
    for name, value in module.backward(tape)._asdict().items():
        np.testing.assert_allclose(getattr(grads, name), value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(getattr(grads, name), expected[name], rtol=1e-9)
    small = _small_gaussian(["hvp"])  # hvp is forward mode over value_and_grad's
    assert "np.sum(dnll_dZ, axis=1)" in _code(small)
    _checked(small, gaussian_point(n=5, d=3, seed=3))


@pytest.mark.parametrize(
    "steps, inputs, wrt",
    [
        # B has no batch of columns: nothing would shrink
        ({"Y": "solve(A, B)", "L": "sum((Y @ C)**2)"},
         {"A": (3, 3), "B": (3, 4), "C": (4, 2)}, ["A"]),
        # B̄ = A⁻ᵀȲ is a gradient: returned whole
        ({"Y": "solve(A, B)", "L": "sum((Y @ C)**2)"},
         {"A": (3, 3), "B": (3, "n"), "C": ("n", 2)}, ["A", "B"]),
        # B̄ is read elementwise (B = 2X): needed whole
        ({"B": "2 * X", "Y": "solve(A, B)", "L": "sum((Y @ C)**2)"},
         {"A": (3, 3), "X": (3, "n"), "C": ("n", 2)}, ["A", "X"]),
    ],
)  # fmt: skip
def test_a_solve_stays_whole_where_its_columns_are_read(steps, inputs, wrt):
    """The adjoint B̄ = solve(Aᵀ, Ȳ) keeps B's shape; A's gradient, read from it
    as -B̄ Yᵀ, is right (central differences)."""
    module = _compile(steps, inputs, wrt=wrt)
    program = module.__symgrad__.unit
    shapes = program.shapes()
    solves = [a for a in program.backward if a.op == "solve"]
    assert any(shapes[a.name] == shapes["B"] for a in solves)
    rng = np.random.default_rng(7)
    point = {
        k: rng.normal(size=[5 if d == "n" else d for d in v]) for k, v in inputs.items()
    }
    point["A"] = point["A"] + 3 * np.eye(3)
    _checked(module, point)


def test_a_solve_read_only_by_a_product_and_a_sum_is_narrowed_anywhere():
    """Not only gaussian_nll's: Y = A⁻¹B with B [3, n], read as Y @ C and as the
    sums of Y's rows, becomes solves of C's columns and of one vector."""
    inputs = {"A": (3, 3), "B": (3, "n"), "C": ("n", 2)}
    steps = {"Y": "solve(A, B)", "L": "sum((Y @ C)**2) + sum(sum(Y, axis=1)**2)"}
    module = _compile(steps, inputs, wrt=["A", "C"])
    program = module.__symgrad__.unit
    shapes = program.shapes()
    solves = [a for a in program.backward if a.op == "solve"]
    assert solves and all("n" not in shapes[a.name] for a in solves)
    rng = np.random.default_rng(8)
    point = {"A": rng.normal(size=(3, 3)) + 3 * np.eye(3),
             "B": rng.normal(size=(3, 6)), "C": rng.normal(size=(6, 2))}  # fmt: skip
    _, tape = module.forward(**point)
    _, grads = module.value_and_grad(**point)
    for name, value in module.backward(tape)._asdict().items():
        np.testing.assert_allclose(getattr(grads, name), value, rtol=1e-10)
    _checked(module, point)


def test_an_array_outputs_solve_is_narrowed_with_its_upstream_gradient():
    """Z = L⁻¹(X - mu)ᵀ, an array [4, n], differentiated for L only: its adjoint
    solve(Lᵀ, dy) is read only as `@ Zᵀ`, so value_and_grad(..., dy) solves
    dy @ Zᵀ; equal to backward(tape, dy)."""
    steps = {"Z": "solve_triangular(L, (X - mu).T)"}
    inputs = {"L": (4, 4), "X": ("n", 4), "mu": (4,)}
    module = _compile(steps, inputs, wrt=["L"])
    assert re.search(r"np\.linalg\.solve\(\w+\.T, dy @ Z\.T\)", _code(module))
    rng = np.random.default_rng(9)
    point = {"L": rng.normal(size=(4, 4)) + 4 * np.eye(4),
             "X": rng.normal(size=(7, 4)), "mu": rng.normal(size=4)}  # fmt: skip
    dy = rng.normal(size=(4, 7))
    expected = module.backward(module.forward(**point)[1], dy)
    np.testing.assert_allclose(
        module.value_and_grad(**point, dy=dy)[1].L, expected.L, rtol=1e-10
    )


@pytest.mark.parametrize(
    "steps, line",
    [
        ({"r": "X @ w - y", "L": "sum(r**2)"}, "dL_dr = 2 * r"),  # was 2 * 1 * r
        ({"L": "sum(exp(X @ w))"}, "dL_dt0 = t1"),  # was 1 * t1: a pass
    ],
)
def test_the_seed_one_a_sum_spreads_is_no_factor(steps, line):
    """The adjoint of sum(...) spreads the seed 1: a product with it is its other
    factor (a named adjoint a copy, no pass over the array)."""
    inputs = {"X": ("n", 3), "w": (3,), "y": ("n",)}
    module = _compile(steps, inputs, wrt=["X", "w"])
    code = _code(module)
    assert f"    {line}\n" in code, code
    assert "* 1 " not in code and "1 * " not in code
    rng = np.random.default_rng(10)
    point = {"X": rng.normal(size=(6, 3)) / 2, "w": rng.normal(size=3),
             "y": rng.normal(size=6)}  # fmt: skip
    _, tape = module.forward(**point)
    _, grads = module.value_and_grad(**point)
    for name, value in module.backward(tape)._asdict().items():
        np.testing.assert_allclose(getattr(grads, name), value, rtol=1e-12)
    _checked(module, point)
