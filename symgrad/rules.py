"""`(op, operands) -> local derivatives`: every derivative rule symgrad uses, in one table.

`SYMPY` says what each operation means as a SymPy expression. The local
derivative of an operation with respect to each operand is `sympy.diff` of
that expression, rewritten to reuse the operation's own output where it
appears (d exp(u)/du is `out`, d tanh(u)/du is `1 - out**2`). `HAND` holds
the few rules SymPy does not give in the form backprop wants: kinks take
PyTorch's subgradients (sign' = 0, relu'(0) = 0, and a tie in max/min splits
the gradient 0.5/0.5 through Heaviside(0) = 1/2), conditions carry no
gradient, and pow avoids dividing by its base.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import sympy as sp

from symgrad.functions import relu, sigmoid, softplus, tensor
from symgrad.ir import ARITY, TENSOR, Operand

Rule = Callable[..., tuple[sp.Expr | None, ...]]

SYMPY: dict[str, Callable[..., sp.Basic]] = {
    "copy": lambda a: a,
    "neg": lambda a: -a,
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos,
    "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh, "asin": sp.asin,
    "acos": sp.acos, "atan": sp.atan, "atan2": sp.atan2, "erf": sp.erf, "abs": sp.Abs,
    "sign": sp.sign, "max": sp.Max, "min": sp.Min, "heaviside": sp.Heaviside,
    "sigmoid": sigmoid, "softplus": softplus, "relu": relu,
    "gt": sp.StrictGreaterThan, "ge": sp.GreaterThan, "lt": sp.StrictLessThan,
    "le": sp.LessThan, "eq": sp.Eq, "ne": sp.Ne, "and": sp.And, "or": sp.Or, "not": sp.Not,
    "where": lambda c, a, b: sp.Piecewise((a, c), (b, True)),
}  # fmt: skip


def _no_gradient(*args: sp.Expr, out: sp.Symbol) -> tuple[None, ...]:
    return (None,) * len(args)


def _zero(*args: sp.Expr, out: sp.Symbol) -> tuple[sp.Expr, ...]:
    return (sp.Integer(0),) * len(args)


HAND: dict[str, Rule] = {
    # b * a**(b - 1) is finite at a = 0, where out * b / a is not.
    "pow": lambda a, b, out: (b * a ** (b - 1), out * sp.log(a)),
    "sign": _zero,
    "heaviside": _zero,
    "where": lambda c, a, b, out: (
        None,
        sp.Piecewise((1, c), (0, True)),
        sp.Piecewise((0, c), (1, True)),
    ),
    **{
        op: _no_gradient
        for op in ("gt", "ge", "lt", "le", "eq", "ne", "and", "or", "not")
    },
}

BOOLEAN = frozenset({"gt", "ge", "lt", "le", "eq", "ne", "and", "or", "not"})
"""Operations whose value is a condition: nothing flows back through them."""


def _matmul(g, a, b, *, out, shapes, params):
    """C = A @ B: dA = dC @ B.T, dB = A.T @ dC, with the vector cases."""
    ranks = (len(shapes[0]), len(shapes[1]))
    if ranks == (2, 2):
        return _mm(g, _t(b)), _mm(_t(a), g)
    if ranks == (2, 1):
        return tensor("outer", g, b), _mm(_t(a), g)
    if ranks == (1, 2):
        return _mm(b, g), tensor("outer", a, g)
    return g * b, g * a


def _sum(g, a, *, out, shapes, params):
    axis, keepdims = params
    return (tensor("broadcast", g, a, params=(None if keepdims else axis,)),)


def _mean(g, a, *, out, shapes, params):
    (axis,) = params
    share = (
        g / tensor("size", a)
        if axis is None
        else g * tensor("size", out) / tensor("size", a)
    )
    return (tensor("broadcast", share, a, params=(axis,)),)


def _softmax(g, a, *, out, shapes, params):
    (axis,) = params
    return (out * (g - tensor("sum", g * out, params=(axis, True))),)


def _logsumexp(g, a, *, out, shapes, params):
    (axis,) = params
    expand = {"params": (axis,)}
    return (
        tensor("broadcast", g, a, **expand)
        * sp.exp(a - tensor("broadcast", out, a, **expand)),
    )


def _mm(a, b):
    return tensor("matmul", a, b)


def _t(a):
    return tensor("transpose", a)


# Tensor operations: vector-Jacobian products, (g, *operands, out, shapes, params) -> terms.
VJP: dict[str, Callable[..., tuple[sp.Expr | None, ...]]] = {
    "matmul": _matmul,
    "transpose": lambda g, a, **_: (_t(g),),
    "sum": _sum,
    "mean": _mean,
    "index": lambda g, a, *, params, **_: (tensor("scatter", g, a, params=params),),
    "softmax": _softmax,
    "logsumexp": _logsumexp,
    # only in backward passes, which are not differentiated again
    **{
        op: lambda g, *args, **_: (None,) * len(args)
        for op in ("scatter", "broadcast", "outer", "size")
    },
}

_missing = set(ARITY) - set(SYMPY) - set(VJP)
assert not _missing, f"operations without a derivative rule: {sorted(_missing)}"
assert set(VJP) == TENSOR, "every tensor operation needs a VJP rule"


def vjp(
    op: str, g: sp.Expr, args: tuple, out: str, shapes: tuple, params: tuple
) -> tuple:
    """The terms ∂L/∂arg for each operand of the tensor operation `out = op(*args)`."""
    operands = [
        sp.Symbol(a, real=True) if isinstance(a, str) else sp.sympify(a) for a in args
    ]
    terms = VJP[op](
        g, *operands, out=sp.Symbol(out, real=True), shapes=shapes, params=params
    )
    return tuple(
        None if not isinstance(a, str) else t for a, t in zip(args, terms, strict=True)
    )


def local_derivatives(
    op: str, args: tuple[Operand, ...], out: str
) -> tuple[sp.Expr | None, ...]:
    """∂out/∂arg for each operand of `out = op(*args)`, over the names' symbols.

    None where no gradient flows (a constant operand, a condition).
    """
    pattern = tuple(None if isinstance(a, str) else a for a in args)
    formulas = _generic(op, pattern)
    names = {
        _OPERAND[i]: sp.Symbol(a, real=True)
        for i, a in enumerate(args)
        if isinstance(a, str)
    }
    names[_OUT] = sp.Symbol(out, real=True)
    return tuple(None if f is None else _rename(f, names)[0] for f in formulas)


def _rename(expr: sp.Basic, names: dict) -> tuple[sp.Basic, int]:
    """(`expr.xreplace(names)`, how many placeholders it held: 0, 1, or 2 for more).

    SymPy re-evaluates every node xreplace rebuilds (cos(x) alone costs its
    `_pi_coeff` assumption queries). A node over a single placeholder is
    already canonical and stays so when that placeholder becomes another real
    symbol, so it is rebuilt unevaluated; only a node that combines several
    (x*y may become x**2) is evaluated again.
    """
    if expr in names:
        return names[expr], 1
    renamed = [_rename(arg, names) for arg in expr.args]
    held = sum(count for _, count in renamed)
    if held == 0:
        return expr, 0
    args = [arg for arg, _ in renamed]
    if held == 1 and isinstance(expr, sp.Function | sp.Add | sp.Mul | sp.Pow):
        return expr.func(*args, evaluate=False), 1
    return expr.func(*args), min(held, 2)


_OPERAND = tuple(sp.Symbol(f"_a{i}", real=True) for i in range(3))
_OUT = sp.Symbol("_out", real=True)


@cache
def _generic(
    op: str, pattern: tuple[int | float | None, ...]
) -> tuple[sp.Expr | None, ...]:
    """The rule for `op` over placeholder operands; constants in `pattern` are substituted first."""
    operands = [
        _OPERAND[i] if p is None else sp.Rational(p) for i, p in enumerate(pattern)
    ]
    if op in HAND:
        formulas = HAND[op](*operands, out=_OUT)
    else:
        value = SYMPY[op](*operands)
        formulas = tuple(
            None if p is not None else sp.diff(value, a).subs(value, _OUT)
            for a, p in zip(operands, pattern, strict=True)
        )
    return tuple(
        None if p is not None else f for p, f in zip(pattern, formulas, strict=True)
    )
