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

from symgrad.functions import relu, sigmoid, softplus
from symgrad.ir import ARITY, Operand

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

_missing = set(ARITY) - set(SYMPY)
assert not _missing, f"operations without a meaning in rules.SYMPY: {sorted(_missing)}"


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
    return tuple(None if f is None else f.xreplace(names) for f in formulas)


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
