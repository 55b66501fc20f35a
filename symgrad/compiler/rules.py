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
from symgrad.ops import OPS, TensorOp, tensor
from symgrad.shapes import ShapeError, broadcast


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


class _Weighted(sp.Function):
    """A reduction opened up for `written_local`: `_Weighted(E, w)` differentiates
    as `w·∂E/∂v` (logsumexp(E)'s weight is softmax(E))."""

    is_real = True

    def fdiff(self, argindex=1):
        return self.args[1] if argindex == 1 else sp.Integer(0)


def written_local(
    expr: sp.Expr, v: sp.Symbol, out: sp.Symbol, shapes: dict
) -> tuple[str, sp.Expr | None] | None:
    """∂out/∂v of a tensor step `out = expr` as a person writes it, or None.

    (text, formula): a reduction of elementwise terms has an elementwise local
    derivative (∂L/∂a = (1 - y)/(1 - a) - y/a for L = sum(...)), the formula;
    a matrix product's is the matrix (∂z/∂w = X for a vector w) or, where the
    Jacobian is no matrix, the product the adjoint takes: `Xᵀ·` (∂L/∂W =
    Xᵀ·∂L/∂z), `·W2ᵀ`, `Xᵀ·(1 - h**2)⊙` (formula None). `shapes`: a name's shape.
    """
    weights: dict[sp.Dummy, sp.Expr] = {}
    marks: dict[sp.Dummy, sp.Expr] = {}  # each reduction that reads v, opened
    opened = _opened(expr, v, shapes, weights, marks)
    named = {expr: out} if not expr.is_Symbol else {}
    reductions = [m for m in marks if opened.has(m)]
    if reductions:  # ∂out/∂v = Σ coefficient · ∂(reduction's terms)/∂v, per entry
        coefficients = [sp.diff(opened, m) for m in reductions]
        if opened.has(v) or not all(
            _scalar(c, shapes) and not c.has(*reductions) for c in coefficients
        ):
            return None  # v also outside a reduction, or a reduction times an array
        if any(_tensors(marks[m], v) for m in reductions):
            return None
        local = sum(
            (
                c * sp.diff(marks[m], v)
                for c, m in zip(coefficients, reductions, strict=True)
            ),
            sp.Integer(0),
        )
        local = local.xreplace(weights).replace(_Size, lambda x: tensor("size", x))
        local = sp.factor_terms(local)
        return sp.sstr(local, order="none"), local
    inner = _tensors(opened, v)
    named = {opened: out, expr: out} if not expr.is_Symbol else {}
    if not inner:
        local = sp.factor_terms(sp.diff(opened, v).xreplace(named))
        return sp.sstr(local, order="none"), local
    product = inner[0]
    if product.op != "matmul" or v not in product.operands:
        return None
    a, b = product.operands
    hole = sp.Dummy("product")
    rest = opened.xreplace({product: hole})
    if rest.has(v) or a.has(v) == b.has(v):
        return None
    scale = sp.diff(rest, hole).xreplace({hole: product}).xreplace(named)
    if scale.has(sp.Derivative, sp.Subs):
        return None
    factor = "" if scale == 1 else f"({sp.sstr(scale)})⊙"
    if v == b:
        if scale == 1 and len(shapes.get(v.name, ())) == 1:
            return sp.sstr(a), a  # the Jacobian of a matrix times a vector
        return f"{_transposed(a)}·{factor}", None
    return f"{factor}·{_transposed(b)}", None


def _tensors(expr: sp.Expr, v: sp.Symbol) -> list[TensorOp]:
    """The tensor operations of `expr` that `v` goes through (not weights, sizes)."""
    if isinstance(expr, TensorOp) and expr.has(v):
        return [expr]
    return [t for x in expr.args for t in _tensors(x, v)]


class _Size(sp.Function):
    """The number of entries of a value, a constant to `written_local`."""

    def fdiff(self, argindex=1):
        return sp.Integer(0)


def _opened(
    expr: sp.Expr, v: sp.Symbol, shapes: dict, weights: dict, marks: dict
) -> sp.Expr:
    """`expr` with each sum, mean and logsumexp that reads v a new symbol in
    `marks`, standing for its terms written elementwise with the reduction's
    derivative (the adjoint spread over the axes: a mean's divided by its
    operand's size, a logsumexp's weighted by softmax, that weight a symbol in
    `weights`)."""
    if not expr.args or isinstance(expr, sp.Symbol):
        return expr
    if not isinstance(expr, TensorOp):
        return expr.func(*(_opened(x, v, shapes, weights, marks) for x in expr.args))
    operands = [_opened(x, v, shapes, weights, marks) for x in expr.operands]
    axis = expr.params[0] if expr.params else None
    terms = operands[0].xreplace(marks) if operands else None
    if expr.op == "sum":
        opened = terms
    elif expr.op == "mean" and axis is None:
        opened = terms / _Size(_sized(expr.operands[0], v, shapes))
    elif expr.op == "logsumexp":
        weight = sp.Dummy("softmax")
        weights[weight] = tensor(
            "softmax", terms, params=(-1 if axis is None else axis,)
        )
        opened = _Weighted(terms, weight)
    else:
        return expr.func(*operands, expr.args[-1])
    if not opened.has(v):
        return expr
    mark = sp.Dummy(expr.op)
    marks[mark] = opened
    return mark


def _sized(e: sp.Expr, v: sp.Symbol, shapes: dict) -> sp.Expr:
    """A name with the shape of `e` (so its size), v first; else `e` itself."""
    if e.has(TensorOp):
        return e
    symbols = sorted(e.free_symbols, key=lambda s: (s != v, s.name))
    try:
        full = broadcast(*(shapes[s.name] for s in symbols))
    except (KeyError, ShapeError):
        return e
    return next((s for s in symbols if shapes[s.name] == full), e)


def _scalar(e: sp.Expr, shapes: dict) -> bool:
    """Whether every name in `e` is a scalar."""
    return all(shapes.get(s.name) == () for s in e.free_symbols)


def _transposed(a: sp.Expr) -> str:
    return f"{a}ᵀ" if a.is_Symbol else f"({sp.sstr(a)})ᵀ"
