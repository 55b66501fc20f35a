"""`(op, operands) -> derivatives`: the registry's rules, specialised to one assignment.

The local derivative of an elementwise operation with respect to each
operand is `sympy.diff` of the operation's meaning (`ops.Op.meaning`),
rewritten to reuse the operation's own output where it appears (d exp(u)/du
is `out`, d tanh(u)/du is `1 - out**2`), unless the registry gives the
partials by hand (kinks, conditions, pow). Tensor operations give their
vector-Jacobian and Jacobian-vector products directly.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from symgrad.ir import Operand
from symgrad.ops import OPS


def operand_symbol(operand: Operand) -> sp.Expr:
    """The SymPy form of an operand: a real symbol for a name, else the number."""
    return (
        sp.Symbol(operand, real=True)
        if isinstance(operand, str)
        else sp.sympify(operand)
    )


def vjp(
    op: str, g: sp.Expr, args: tuple, out: str, shapes: tuple, params: tuple
) -> tuple:
    """The terms ∂L/∂arg for each operand of the tensor operation `out = op(*args)`."""
    terms = OPS[op].vjp(
        g,
        *map(operand_symbol, args),
        out=sp.Symbol(out, real=True),
        shapes=shapes,
        params=params,
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


_OPERAND = tuple(sp.Symbol(f"_a{i}", real=True) for i in range(8))
_OUT = sp.Symbol("_out", real=True)


@cache
def _generic(
    op: str, pattern: tuple[int | float | None, ...]
) -> tuple[sp.Expr | None, ...]:
    """The rule for `op` over placeholder operands; constants in `pattern` are substituted first."""
    definition = OPS[op]
    if not definition.differentiable:
        return (None,) * len(pattern)
    operands = [
        _OPERAND[i] if p is None else sp.Rational(p) for i, p in enumerate(pattern)
    ]
    if definition.partials is not None:
        formulas = definition.partials(*operands, out=_OUT)
    else:
        value = definition.meaning(*operands)
        formulas = tuple(
            None if p is not None else sp.diff(value, a).subs(value, _OUT)
            for a, p in zip(operands, pattern, strict=True)
        )
    return tuple(
        None if p is not None else f for p, f in zip(pattern, formulas, strict=True)
    )
