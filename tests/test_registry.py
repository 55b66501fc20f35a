"""Every operation of the registry, checked automatically (a new op cannot skip this).

For each elementwise operation: the generated code's value against the
registry's mpmath value and against its SymPy meaning evaluated in mpmath,
and the gradient against mpmath's high-precision numerical derivative of the
meaning (independent of symgrad's rules: symgrad's own functions are
replaced by their definitions in elementary functions first), on every target
that prints it, at one point (Python floats) and for a batch (arrays). Tensor
operations: their VJP and JVP against central finite differences of the
operation itself. The README's function list is the registry's.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import mpmath
import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.codegen import TARGETS
from symgrad.codegen import numpy as numpy_target
from symgrad.frontend.spec import Input, Spec, Step
from symgrad.ops import ALIASES, OPS, SPELLINGS
from symgrad.shapes import ShapeError
from tests.conftest import ROOT, independent

INTERNAL = {
    "copy": "the identity: lowering never emits it for an expression",
    "heaviside": "only local derivatives use it; its derivative is zero by definition",
}
"""Elementwise operations a spec cannot write directly, and why they are not compiled here."""

ELEMENTWISE = sorted(op for op in OPS if OPS[op].elementwise and op not in INTERNAL)
MARGIN = 1e-2  # sampled points keep this far from kinks
POINTS = 4

mp = mpmath.mp  # lambdify's mpmath functions live in the global context


def _points(op: str, rng: np.random.Generator) -> list[tuple[float, ...]]:
    """Points inside the op's domain, away from its kinks, rounded to be exact decimals."""
    definition = OPS[op]
    points = []
    while len(points) < POINTS:
        point = tuple(
            round(float(rng.uniform(*definition.sample_domain(i))), 4)
            for i in range(definition.arity)
        )
        if definition.kink is not None and np.any(
            definition.kink(*map(np.float64, point)) <= MARGIN
        ):
            continue
        points.append(point)
    return points


def _constant_operands(op: str) -> set[int]:
    """Operands sampled from a single value (polygamma's order n) are constants."""
    domain = OPS[op].domain
    return {i for i, (low, high) in enumerate(domain) if low == high}


def _spec(
    op: str, point: tuple[float, ...], inlined: bool = False
) -> tuple[Spec, list[str]]:
    """A one-step spec `y = op(a0, a1, ...)` over the SymPy meaning of the op.

    `inlined`: y = 2 - 3*op(a0 + 1, a1 + 1, ...), whose value_and_grad prints
    the operands and the op inside other expressions (precedence, repeats).
    """
    constants = _constant_operands(op)
    names = [f"a{i}" for i in range(OPS[op].arity) if i not in constants]
    shift = 1 if inlined else 0
    operands = [
        sp.Integer(int(point[i]))
        if i in constants
        else sp.Symbol(f"a{i}", real=True) + shift
        for i in range(OPS[op].arity)
    ]
    expr = OPS[op].meaning(*operands)
    if inlined:
        expr = 2 - 3 * expr
    spec = Spec(
        name=f"op_{op}",
        inputs=tuple(Input(n) for n in names),
        wrt=tuple(names),
        steps=(Step("y", expr, sp.sstr(expr)),),
        output="y",
    )
    return spec, names


def _reference(
    op: str, names: list[str], point: tuple[float, ...], inlined: bool = False
):
    """(value, [∂y/∂name]) in mpmath from the independent SymPy meaning."""
    spec, _ = _spec(op, point, inlined)
    expr = independent(spec.steps[0].expr)
    symbols = [sp.Symbol(n, real=True) for n in names]
    f = sp.lambdify(symbols, expr, modules=[{"floor_step": mpmath.floor}, "mpmath"])
    constants = _constant_operands(op)
    args = [repr(v) for i, v in enumerate(point) if i not in constants]
    with mpmath.workdps(30):
        return _value_and_derivatives(f, args)


def _value_and_derivatives(f, texts):
    args = [mp.mpf(t) for t in texts]
    value = f(*args)
    grads = []
    for k in range(len(args)):

        def along(t, k=k):
            moved = list(args)
            moved[k] = t
            return f(*moved)

        grads.append(mp.diff(along, args[k]))
    return value, grads


def _close(got, expected, rel=1e-12) -> bool:
    return abs(float(got) - float(expected)) <= rel * max(1.0, abs(float(expected)))


def _compile(op: str, point, target: str, inlined: bool = False):
    from symgrad.pipeline import build, import_source, source

    spec, names = _spec(op, point, inlined)
    compiled = build(spec)
    ops = {a.op for a in compiled.backward.forward}
    # (inside other arithmetic, SymPy may fold add and neg into it)
    assert op in ops or inlined, f"the meaning of {op} lowered to {ops}, not to {op}"
    return import_source(source(compiled, target), spec.name, compiled), names


def _compare_at(module, op, names, variable, point, inlined=False):
    """value_and_grad at `point` against the mpmath reference; the value."""
    args = {n: point[i] for n, i in zip(names, variable, strict=True)}
    value, grads = module.value_and_grad(**args)
    expected, expected_grads = _reference(op, names, point, inlined)
    assert _close(value, expected), (op, point, value, expected)
    for name, expected_grad in zip(names, expected_grads, strict=True):
        got = getattr(grads, name)
        assert _close(got, expected_grad, 1e-9), (op, point, name, got, expected_grad)
    return value


ENGINES = {"jax": "jax", "torch": "torch", "numba": "numba"}


def _printable_on(target: str, op: str) -> None:
    """Skip unless `target` prints `op` and its engine (and scipy, where used) is installed."""
    codes = TARGETS[target].printer().codes
    if op not in codes:
        pytest.skip(f"the {target} target does not print {op} (documented)")
    if target in ENGINES:
        pytest.importorskip(ENGINES[target], reason=f"{target} is not installed")
    if "scipy.special" in codes[op].imports:
        pytest.importorskip("scipy")


@pytest.mark.parametrize("op", ELEMENTWISE)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_elementwise_op_against_mpmath(op, target):
    _printable_on(target, op)
    rng = np.random.default_rng(sorted(OPS).index(op))
    points = _points(op, rng)
    module, names = _compile(op, points[0], target)
    constants = _constant_operands(op)
    variable = [i for i in range(OPS[op].arity) if i not in constants]
    for point in points:
        value = _compare_at(module, op, names, variable, point)
        direct = OPS[op].mp_value(mp, *map(mp.mpf, point))
        if direct is not None:
            assert _close(value, direct), (op, point, value, direct, "registry mpmath")
    if target != "numpy":
        return
    # a batch: every point at once, the first operand an array
    first = names[0]
    column = np.array([p[variable[0]] for p in points])
    others = {n: points[0][i] for n, i in zip(names[1:], variable[1:], strict=True)}
    values, grads = module.value_and_grad(**{first: column}, **others)
    for k, x in enumerate(column):
        point = list(points[0])
        point[variable[0]] = float(x)
        expected, expected_grads = _reference(op, names, tuple(point))
        assert _close(values[k], expected), (op, point)
        assert _close(getattr(grads, first)[k], expected_grads[0], 1e-9), (op, point)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_covered(op):
    """Each op is in exactly one of the checks here, or has a stated reason."""
    definition = OPS[op]
    kinds = {"arithmetic", "function", "condition", "select", "tensor", "adjoint"}
    assert definition.kind in kinds
    if definition.elementwise:
        assert op in ELEMENTWISE or op in INTERNAL
    else:
        assert op in TENSOR_CASES or definition.kind in ("condition", "select"), op


@pytest.mark.parametrize("op", ELEMENTWISE)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_elementwise_op_printed_inside_other_expressions(op, target):
    """value_and_grad prints single-use temporaries where they are used: the op's
    operands (a0 + 1) inside its printed form, and the op inside a product."""
    _printable_on(target, op)
    rng = np.random.default_rng(sorted(OPS).index(op))
    constants = _constant_operands(op)
    points = [
        tuple(v if i in constants else v - 1 for i, v in enumerate(p))
        for p in _points(op, rng)
    ]
    module, names = _compile(op, points[0], target, inlined=True)
    variable = [i for i in range(OPS[op].arity) if i not in constants]
    for point in points:
        _compare_at(module, op, names, variable, point, inlined=True)


_PRECEDENCE = {
    ast.IfExp: 1, ast.Lambda: 0, ast.BoolOp: 4, ast.Compare: 10, ast.BinOp: None,
    ast.UnaryOp: None, ast.Call: 100, ast.Name: 100, ast.Attribute: 100,
    ast.Subscript: 100, ast.Constant: 100,
}  # fmt: skip
_BINARY = {ast.Add: 13, ast.Sub: 13, ast.Mult: 14, ast.Div: 14, ast.MatMult: 14,
           ast.Mod: 14, ast.FloorDiv: 14, ast.Pow: 16}  # fmt: skip


def _precedence(node: ast.expr) -> int:
    """Python's precedence of an expression's top node, as ops.Code counts it."""
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)]
    if isinstance(node, ast.UnaryOp):
        return 6 if isinstance(node.op, ast.Not) else 15
    if isinstance(node, ast.BoolOp):
        return 5 if isinstance(node.op, ast.And) else 4
    return _PRECEDENCE[type(node)]


PRINT_PARAMS = {
    "sum": (None, False), "mean": (None, False), "index": ((0,),), "softmax": (-1,),
    "logsumexp": (None, True), "broadcast": (None,), "scatter": ((0,),),
    "amax": (0, True), "amin": (None, False), "prod": ((0, 1), False),
    "var": (0, False, 1), "std": (None, True, 0), "norm": (1, False),
    "cumsum": (0,), "flip": (None,), "prod_others": (0,), "reshape": ((2, -1),),
    "expand_dims": (0,), "squeeze": (None,), "concatenate": (0,), "stack": (1,),
    "roll": (1, 0), "take": ((0, "#1"),), "scatter_add": (("#1", 0),),
    "arange": (None, 3), "repeat": (2, 0), "tile": ((2, 1),), "unrepeat": (2, 0),
    "untile": ((2, 1),), "cumprod": (0,), "cumprod_adjoint": (0,),
    "cumprod_tangent": (0,),
    "swapaxes": (-1, -2), "einsum": ("ij,jk->ik",), "tensordot": (1,),
    "tril": (1,), "triu": (0,),
}  # fmt: skip
"""Static parameters each op is printed with in the printing tests."""
PRINT_ARITY = {"take": 2, "scatter_add": 3}  # an index array


@pytest.mark.parametrize("op", sorted(OPS))
def test_printed_forms_declare_their_precedence_and_repeats(op):
    """Each target's printed form says how it binds (so an inlined line gets the
    parentheses it needs) and whether it names an operand twice (never inlined into)."""
    from symgrad.codegen.printer import Printer

    params = PRINT_PARAMS.get(op, ())
    for target, code in OPS[op].code.items():
        arity = PRINT_ARITY.get(op, OPS[op].arity)
        names = tuple(f"operand{i}" for i in range(arity))
        if op == "heaviside":  # its value at 0 is always a number
            names = ("operand0", "0.5")
        text = Printer(target).expression(op, names, params)
        tree = ast.parse(text, mode="eval").body
        assert code.prec <= _precedence(tree), (op, target, text, code.prec)
        repeated = any(text.count(n) > 1 for n in names)
        assert code.repeats or not repeated, (op, target, text)


# --------------------------------------------------------------------------- tensors

TENSOR_CASES = {
    # op: (operand shapes, params); rank 3 and size-1 dimensions among them
    "matmul": [
        ((3, 4), (4, 2)), ((3, 4), (4,)), ((4,), (4, 2)), ((4,), (4,)),
        ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 1)),
        ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3)),
        ((1, 3, 4), (2, 4, 2)),
    ],
    "transpose": [((3, 4),), ((2, 3, 4),)],
    "swapaxes": [((2, 3, 4),), ((2, 1, 4),)],
    "einsum": [
        ((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((3, 4),), ((3,), (4,), (5,)),
        ((2, 3, 4), (2, 4, 1)), ((3,), ()), ((3, 4), (3, 4)),
    ],
    "tensordot": [((2, 3, 4), (3, 4, 5)), ((2, 3, 4), (4, 2)), ((3, 1), (2, 3)),
                  ((2, 3, 4), (3, 2))],
    "outer": [((3,), (4,)), ((1,), (4,))],
    "trace": [((3, 3),), ((1, 1),)],
    "diag": [((3,),), ((3, 3),), ((1,),)],
    "tril": [((3, 4),), ((2, 3, 3),)],
    "triu": [((4, 3),), ((2, 1, 3),)],
    "sum": [((3, 4),), ((3, 4),), ((3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "mean": [((3, 4),), ((3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "amax": [((3, 4),), ((2, 3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "amin": [((3, 4),), ((2, 3, 4),), ((2, 3, 4),)],
    "prod": [((3, 4),), ((2, 3, 4),), ((2, 3, 4),), ((2, 1, 4),), ((5,),)],
    "var": [((3, 4),), ((2, 3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "std": [((3, 4),), ((2, 3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "norm": [((5,),), ((3, 4),), ((2, 3, 4),), ((2, 1, 4),)],
    "cumsum": [((5,),), ((2, 3, 4),), ((2, 1, 4),)],
    "flip": [((5,),), ((2, 3, 4),), ((2, 1, 4),)],
    "prod_others": [((5,),), ((2, 3, 4),)],
    "reshape": [((2, 3, 4),), ((2, 1, 4),), ((6,),)],
    "expand_dims": [((2, 3),), ((3,),)],
    "squeeze": [((2, 1, 4),), ((1, 3, 1),)],
    "concatenate": [((2, 3), (2, 1)), ((1, 3, 2), (2, 3, 2), (1, 3, 2))],
    "stack": [((2, 3), (2, 3)), ((3,), (3,), (3,))],
    "roll": [((2, 3, 4),), ((5,),), ((2, 1, 4),)],
    "reshape_like": [((6, 4), (2, 3, 4))],
    "solve": [((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (3, 1)), ((3, 3), (2, 3, 2)),
              ((2, 1, 3, 3), (4, 3, 2))],
    "inv": [((3, 3),), ((2, 3, 3),)],
    "det": [((3, 3),), ((2, 3, 3),), ((1, 1),)],
    "logabsdet": [((3, 3),), ((2, 3, 3),)],
    "cholesky": [((3, 3),), ((2, 4, 4),), ((1, 1),)],
    "trace_last": [((2, 3, 3),)],
    "take": [((4, 5), (3,), (3,)), ((3, 4, 5), (2, 1), (3,)), ((4, 2, 5), (3,), (3,))],
    "scatter_add": [((2, 3), (4, 5), (2, 3), (3,))],
    "arange": [((3, 4),), ((2,),)],
    "repeat": [((2, 3, 4),), ((3,),), ((2, 1),)],
    "cumprod": [((5,),), ((2, 3, 4),), ((2, 1, 4),)],
    "cumprod_adjoint": [((2, 3, 4), (2, 3, 4))],
    "cumprod_tangent": [((5,), (5,))],
    "tile": [((2, 3),), ((3,),), ((2, 1, 3),)],
    "unrepeat": [((2, 6, 4), (2, 3, 4))],
    "untile": [((4, 9), (2, 3))],
    "index": [((3, 4),), ((3, 4),), ((3, 1, 2),)],
    "softmax": [((3, 4),), ((2, 3, 4),)],
    "logsumexp": [((3, 4),), ((3, 4),), ((2, 3, 4),)],
    "broadcast": [((3,), (3, 4))],
    "scatter": [((4,), (3, 4))],
    "eye": [((3, 3),), ((2, 3, 3),)],
    "size": [((3, 4),)],
}  # fmt: skip
TENSOR_PARAMS = {
    "matmul": [()] * 11,
    "swapaxes": [(-1, -2), (0, 2)],
    "einsum": [
        ("ij,jk->ik",),
        ("bij,jk->bik",),
        ("ij->j",),
        ("i,j,k->ijk",),
        ("bij,bjk->bik",),
        ("i,->i",),
        ("ij,ij->",),
    ],
    "tensordot": [(2,), (1,), (((0,), (1,)),), (((1, 0), (0, 1)),)],
    "tril": [(0,), (-1,)],
    "triu": [(1,), (0,)],
    "sum": [(None, False), (0, False), (1, True), ((0, 2), False), ((-1, 1), True)],
    "mean": [(None, False), (1, False), ((0, 2), True), (1, False)],
    "amax": [(None, False), (1, False), ((0, -1), True), (-1, True)],
    "amin": [(0, False), (None, True), (2, False)],
    "prod": [(None, False), (1, True), ((0, 2), False), (-2, False), (0, False)],
    "var": [(None, False, 0), (1, False, 1), ((0, 2), True, 1), (2, True, 0)],
    "std": [(None, False, 1), (1, True, 0), ((0, 2), False, 1), (-1, False, 0)],
    "norm": [(None, False), (None, False), ((1, 2), True), (0, False)],
    "cumsum": [(None,), (1,), (-1,)],
    "flip": [(None,), ((0, 2),), (1,)],
    "prod_others": [(None,), ((0, 2),)],
    "reshape": [((4, -1),), ((-1,),), ((3, 1, 2),)],
    "expand_dims": [((0, 2),), (-1,)],
    "squeeze": [(None,), ((0, 2),)],
    "concatenate": [(1,), (0,)],
    "stack": [(-1,), (0,)],
    "roll": [((1, -2), (0, 2)), (2, None), (1, -1)],
    "take": [(("#1", "#2"),), (((None, None, None), "#1", "#2"),), (("#1", 1, "#2"),)],
    "scatter_add": [(("#1", "#2"),)],
    "arange": [(1, None), (None, 2)],
    "repeat": [(2, 1), (3, None), (2, -1)],
    "cumprod": [(None,), (1,), (-1,)],
    "cumprod_adjoint": [(1,)],
    "cumprod_tangent": [(0,)],
    "tile": [((2, 1),), ((2, 1, 2),), (3,)],
    "unrepeat": [(2, 1)],
    "untile": [((2, 3),)],
    "index": [((1,),), ((None, (None, None, 2), None),), (((2, None, -1), None, 0),)],
    "softmax": [(-1,), (1,)],
    "logsumexp": [(None, False), (1, False), ((0, 2), True)],
    "broadcast": [(1,)],
    "scatter": [((1,),)],
}


def _spd(a):
    return a @ np.swapaxes(a, -1, -2) + 3 * np.eye(a.shape[-1])


MATRIX_ARGUMENT = {
    "solve": lambda a: a + 3 * np.eye(a.shape[-1]),
    "inv": lambda a: a + 3 * np.eye(a.shape[-1]),
    "det": lambda a: a + 3 * np.eye(a.shape[-1]),
    "logabsdet": lambda a: a - 3 * np.eye(a.shape[-1]),  # a negative determinant too
    "cholesky": _spd,
}
INTEGER_OPERANDS = {"take": {1, 2}, "scatter_add": {2, 3}, "arange": {0}}
"""Operands that hold integers: indices (drawn in [0, 3)), and arange's size holder."""
NO_JVP = {
    "prod_others": "prod's adjoint: second derivatives of prod are refused",
    "cumprod_adjoint": "cumprod's adjoint: second derivatives of cumprod are refused",
    "cumprod_tangent": "cumprod's tangent: second derivatives of cumprod are refused",
}


def _printed(op: str, params: tuple, shapes) -> Callable:
    """The numpy target's function of `op`, with the parameters lowering gives it
    at these operand shapes (solve's form that every NumPy reads alike)."""
    special = OPS[op].specialize
    if special is not None:
        renamed, specialized = special(list(shapes), params)
        params = specialized if renamed == op else params
    return numpy_target.function(op, params, len(shapes))


def _evaluate(expr: sp.Basic, values: dict[str, np.ndarray]):
    """A SymPy expression over tensor-op nodes, evaluated with the numpy target's ops."""
    from symgrad.ops import TensorOp

    if isinstance(expr, sp.Symbol):
        return values[expr.name]
    if expr.is_number:
        return float(expr)
    if isinstance(expr, sp.Piecewise):  # the last pair's condition is True
        result = _evaluate(expr.args[-1].expr, values)
        for value, condition in reversed(expr.args[:-1]):
            chosen = _evaluate(condition, values)
            result = np.where(chosen, _evaluate(value, values), result)
        return result
    args = [_evaluate(a, values) for a in getattr(expr, "operands", expr.args)]
    if isinstance(expr, sp.Eq):
        return np.equal(*args)
    if isinstance(expr, TensorOp):
        return _printed(expr.op, expr.params, [np.shape(a) for a in args])(*args)
    if isinstance(expr, sp.Add):
        return sum(args[1:], args[0])
    if isinstance(expr, sp.Mul):
        result = args[0]
        for a in args[1:]:
            result = result * a
        return result
    if isinstance(expr, sp.Pow):
        return args[0] ** args[1]
    if isinstance(expr, sp.exp):
        return np.exp(args[0])
    raise AssertionError(f"cannot evaluate {type(expr).__name__}")


@pytest.mark.parametrize("op", sorted(TENSOR_CASES))
def test_tensor_vjp_and_jvp_against_finite_differences(op):
    from symgrad.ops import OPS as registry

    definition = registry[op]
    rng = np.random.default_rng(7)
    cases = TENSOR_CASES[op]
    params_list = TENSOR_PARAMS.get(op, [()] * len(cases))
    for shapes, params in zip(cases, params_list, strict=False):
        args = [rng.uniform(-1, 1, size=s) for s in shapes]
        if op in MATRIX_ARGUMENT:  # well conditioned; for cholesky, positive definite
            args[0] = MATRIX_ARGUMENT[op](args[0])
        # integer operands (indices, a size's holder) are constants: never perturbed
        constant = INTEGER_OPERANDS.get(op, set())
        for k in constant:
            args[k] = rng.integers(0, 3, size=shapes[k])
        f = _printed(op, params, shapes)
        out = f(*args)
        symbols = [sp.Symbol(f"x{i}", real=True) for i in range(len(args))]
        values = {f"x{i}": a for i, a in enumerate(args)}
        values["out"] = out
        out_symbol = sp.Symbol("out", real=True)
        # JVP: d/dt f(x + t v) at t = 0, one operand at a time
        for k in (k for k in range(len(args)) if k not in constant):
            v = rng.uniform(-1, 1, size=np.shape(args[k]))
            h = 1e-6
            moved = [a + (h * v if i == k else 0) for i, a in enumerate(args)]
            back = [a - (h * v if i == k else 0) for i, a in enumerate(args)]
            numerical = (f(*moved) - f(*back)) / (2 * h)
            tangents = [
                sp.Symbol("t", real=True) if i == k else sp.Integer(0)
                for i in range(len(args))
            ]
            if op in NO_JVP:
                with pytest.raises(ShapeError, match="not supported"):
                    definition.jvp(tangents, *symbols, out=out_symbol, params=params)
                continue
            jvp = definition.jvp(tangents, *symbols, out=out_symbol, params=params)
            analytical = _evaluate(jvp, {**values, "t": v}) if jvp != 0 else 0.0
            np.testing.assert_allclose(
                np.broadcast_to(analytical, np.shape(numerical)),
                numerical,
                rtol=1e-6,
                atol=1e-8,
                err_msg=f"{op} JVP, operand {k}",
            )
        if definition.kind == "adjoint":
            continue  # backward-only: never differentiated in reverse again
        # VJP: <g, J v> = <J^T g, v>
        g = rng.uniform(-1, 1, size=np.shape(out))
        vjps = definition.vjp(
            sp.Symbol("g", real=True),
            *symbols,
            out=out_symbol,
            shapes=tuple(np.shape(a) for a in args),
            params=params,
        )
        for k, term in enumerate(vjps):
            if k in constant:
                assert term is None, (op, k)
                continue
            v = rng.uniform(-1, 1, size=np.shape(args[k]))
            h = 1e-6
            moved = [a + (h * v if i == k else 0) for i, a in enumerate(args)]
            back = [a - (h * v if i == k else 0) for i, a in enumerate(args)]
            directional = np.sum(g * (f(*moved) - f(*back)) / (2 * h))
            analytical = np.sum(
                np.broadcast_to(_evaluate(term, {**values, "g": g}), np.shape(v)) * v
            )
            assert analytical == pytest.approx(directional, rel=1e-6, abs=1e-8), (
                op,
                k,
            )


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize(
    "expression, at",
    [
        ("log1p(x)", 1e-12),
        ("expm1(x)", 1e-12),
        ("logaddexp(x, x)", 1000.0),
        ("logaddexp(x, -x)", 800.0),
        ("softplus(x)", -800.0),
        ("log2(x)", 8.0),
    ],
)
def test_accurate_where_the_written_out_form_is_not(expression, at, target):
    if target in ENGINES:
        pytest.importorskip(ENGINES[target], reason=f"{target} is not installed")
    module = symgrad.compile(
        {"name": "accuracy", "inputs": {"x": {}}, "steps": {"y": expression}},
        target=target,
    )
    x = sp.Symbol("x", real=True)
    spec = module.__symgrad__.spec
    expr = independent(spec.steps[0].expr)
    exact = sp.N(expr.subs(x, sp.Rational(repr(at))), 40)
    assert float(module.forward(x=at)[0]) == pytest.approx(float(exact), rel=1e-14)


# --------------------------------------------------------------------------- docs


def test_readme_lists_exactly_the_registry_functions():
    """The README's function list is the spec language's: a new op must be documented."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- functions -->(.*?)<!-- /functions -->", text, re.S)
    assert block, "README.md lacks the <!-- functions --> list"
    listed = set(re.findall(r"`([A-Za-z_0-9]+)[`(]", block.group(1)))
    expected = {s for s, op in SPELLINGS.items() if op.kind != "tensor"} | set(ALIASES)
    assert listed == expected, (
        f"missing: {sorted(expected - listed)}, extra: {sorted(listed - expected)}"
    )
