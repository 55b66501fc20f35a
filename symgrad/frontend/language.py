"""The spec language's functions and the SymPy walks the front end needs.

Every function name a spec may call comes from the op registry
(`ops.Op.spellings`); this module only arranges those facts the way the
parser asks for them.
"""

from __future__ import annotations

import sympy as sp
from sympy.logic.boolalg import BooleanFunction

from symgrad.ops import ALIASES, BY_SYMPY, SPELLINGS, TENSOR_ALIASES, TensorOp

# name -> (SymPy callable, allowed argument counts)
FUNCTIONS: dict[str, tuple[object, tuple[int, ...]]] = {
    name: (op.build, op.counts) for name, op in SPELLINGS.items()
}
FUNCTIONS.update(ALIASES)
FUNCTIONS.update(TENSOR_ALIASES)
FUNCTIONS["Piecewise"] = (sp.Piecewise, tuple(range(1, 17)))

# Functions whose SymPy eval, for an argument that is not a number, only rewrites
# the call (sin(-x) -> -sin(x), cos(x + pi) -> -cos(x), sin(asin(x)) -> x) and
# pays for it with assumption queries (_pi_coeff): most of a chain spec's parsing
# time. The spec parser builds them unevaluated then. The others stay evaluated:
# their eval uses what is known (Abs(p) is p for a positive p, max(x, x) is x).
NORMALIZED_ONLY = frozenset(name for name, op in SPELLINGS.items() if op.lazy)

# Tensor functions: operands, then constant arguments (ops.Static); and those
# written out in others (called as elementwise functions are).
TENSOR_FUNCTIONS = frozenset(
    name for name, op in SPELLINGS.items() if op.kind == "tensor"
) | frozenset(TENSOR_ALIASES)

# Named constants a spec may use when no input or step has that name.
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi}


def nodes(expr: sp.Basic) -> set[sp.Basic]:
    """Every distinct subexpression, each visited once.

    SymPy's own walks (preorder_traversal, atoms, has) follow the tree through
    nested generators, which is quadratic in depth for a deep composition.
    """
    seen, stack = set(), [expr]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return seen


def bottom_up(expr: sp.Basic) -> list[sp.Basic]:
    """Every distinct subexpression once, children before parents (no recursion)."""
    order: list[sp.Basic] = []
    done: set[sp.Basic] = set()
    stack = [expr]
    while stack:
        node = stack[-1]
        if node in done:
            stack.pop()
            continue
        pending = [a for a in node.args if a not in done]
        if pending:
            stack.extend(pending)
        else:
            stack.pop()
            done.add(node)
            order.append(node)
    return order


def unsupported_function(expr: sp.Basic) -> str | None:
    """The name of a function in `expr` that symgrad cannot compile, if any."""
    bad = sorted(
        type(node).__name__
        for node in nodes(expr)
        if isinstance(node, sp.Function | BooleanFunction)
        and not isinstance(node, (TensorOp, sp.Piecewise, sp.ITE, *BY_SYMPY))
    )
    return bad[0] if bad else None
