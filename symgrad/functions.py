"""The spec language's functions: SymPy's elementwise functions plus the learners' three.

`FUNCTIONS` maps every name a spec may call to the SymPy callable that builds it
and the number of arguments it takes. `sigmoid`, `softplus` and `relu` are
SymPy functions of their own (not rewritten into exp/log/Piecewise) so that
the generated code keeps them as one readable line; each defines its
derivative (`fdiff`) and a rewrite into elementary functions, which the tests
use as an independent reference.
"""

from __future__ import annotations

import ast

import sympy as sp
from sympy.core.symbol import Str
from sympy.logic.boolalg import BooleanFunction


class _Learner(sp.Function):
    """An elementwise function defined by its rewrite into elementary functions."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return cls._definition(arg)
        return None

    def _eval_evalf(self, prec):
        return self._definition(self.args[0])._eval_evalf(prec)

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return self._definition(arg)

    def _eval_is_real(self):
        return self.args[0].is_real


class sigmoid(_Learner):  # noqa: N801 (SymPy function classes are lower case)
    """sigmoid(x) = 1 / (1 + exp(-x)); its derivative is sigmoid(x) (1 - sigmoid(x))."""

    @staticmethod
    def _definition(x):
        return 1 / (1 + sp.exp(-x))

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_is_positive(self):
        return self.args[0].is_extended_real


class softplus(_Learner):  # noqa: N801
    """softplus(x) = log(1 + exp(x)); its derivative is sigmoid(x)."""

    @staticmethod
    def _definition(x):
        return sp.log(1 + sp.exp(x))

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_is_positive(self):
        return self.args[0].is_extended_real


class relu(_Learner):  # noqa: N801
    """relu(x) = max(x, 0); its derivative is 1 for x > 0 and 0 otherwise (PyTorch's relu'(0) = 0)."""

    @staticmethod
    def _definition(x):
        return sp.Piecewise((x, x > 0), (0, True))

    def fdiff(self, argindex=1):
        return sp.Heaviside(self.args[0], 0)

    def _eval_is_nonnegative(self):
        return self.args[0].is_extended_real


def _where(cond, a, b):
    return sp.Piecewise((a, cond), (b, True))


# name -> (SymPy callable, allowed argument counts)
FUNCTIONS: dict[str, tuple[object, tuple[int, ...]]] = {
    "exp": (sp.exp, (1,)),
    "log": (sp.log, (1,)),
    "sqrt": (sp.sqrt, (1,)),
    "sin": (sp.sin, (1,)),
    "cos": (sp.cos, (1,)),
    "tan": (sp.tan, (1,)),
    "sinh": (sp.sinh, (1,)),
    "cosh": (sp.cosh, (1,)),
    "tanh": (sp.tanh, (1,)),
    "asin": (sp.asin, (1,)),
    "acos": (sp.acos, (1,)),
    "atan": (sp.atan, (1,)),
    "atan2": (sp.atan2, (2,)),
    "erf": (sp.erf, (1,)),
    "abs": (sp.Abs, (1,)),
    "Abs": (sp.Abs, (1,)),
    "sign": (sp.sign, (1,)),
    "max": (sp.Max, (2, 3, 4, 5, 6, 7, 8)),
    "Max": (sp.Max, (2, 3, 4, 5, 6, 7, 8)),
    "min": (sp.Min, (2, 3, 4, 5, 6, 7, 8)),
    "Min": (sp.Min, (2, 3, 4, 5, 6, 7, 8)),
    "where": (_where, (3,)),
    "Piecewise": (sp.Piecewise, tuple(range(1, 17))),
    "sigmoid": (sigmoid, (1,)),
    "softplus": (softplus, (1,)),
    "relu": (relu, (1,)),
}

# Functions whose SymPy eval, for an argument that is not a number, only rewrites
# the call (sin(-x) -> -sin(x), cos(x + pi) -> -cos(x), sin(asin(x)) -> x) and
# pays for it with assumption queries (_pi_coeff): most of a chain spec's parsing
# time. The spec parser builds them unevaluated then. The others stay evaluated:
# their eval uses what is known (Abs(p) is p for a positive p, max(x, x) is x).
NORMALIZED_ONLY = frozenset(
    {"sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "erf"}
)

# Tensor functions: their optional second argument (or axis=) is a constant axis.
TENSOR_FUNCTIONS = {
    "sum": (1, 2),
    "mean": (1, 2),
    "softmax": (1, 2),  # default axis -1: over the last axis (the classes)
    "logsumexp": (1, 2),
    "dot": (2,),
    "transpose": (1,),
}

# Named constants a spec may use when no input or step has that name.
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi}


# SymPy function class -> IR operation, for every function symgrad can lower.
OPS: dict[type, str] = {
    sp.exp: "exp", sp.log: "log", sp.sin: "sin", sp.cos: "cos", sp.tan: "tan",
    sp.sinh: "sinh", sp.cosh: "cosh", sp.tanh: "tanh", sp.asin: "asin", sp.acos: "acos",
    sp.atan: "atan", sp.atan2: "atan2", sp.erf: "erf", sp.Abs: "abs", sp.sign: "sign",
    sp.Max: "max", sp.Min: "min", sp.Heaviside: "heaviside",
    sigmoid: "sigmoid", softplus: "softplus", relu: "relu",
}  # fmt: skip


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
        and not isinstance(
            node, (TensorOp, sp.Piecewise, sp.And, sp.Or, sp.Not, sp.ITE, *OPS)
        )
    )
    return bad[0] if bad else None


class TensorOp(sp.Function):
    """A tensor operation: its operands, then a Str holding its static parameters.

    SymPy treats it as an opaque function of its operands (elementwise algebra
    around it stays valid under NumPy broadcasting); symgrad's rules table
    differentiates it and its printers print it.
    """

    op = ""
    is_commutative = True
    is_real = True

    @property
    def operands(self) -> tuple[sp.Expr, ...]:
        return self.args[:-1]

    @property
    def params(self) -> tuple:
        return ast.literal_eval(self.args[-1].name)

    def _latex(self, printer) -> str:
        args = [printer.parenthesize(a, 60) for a in self.operands]
        return _LATEX.get(self.op, _latex_default)(self.op, *args, *self.params)

    def _sympystr(self, printer) -> str:
        args = [
            printer.parenthesize(a, 60) for a in self.operands
        ]  # atoms bare, sums in ()
        return _TEXT[self.op](*args, *self.params)


def tensor(op: str, *operands: sp.Expr, params: tuple = ()) -> TensorOp:
    """The SymPy node of a tensor operation (see ir.ARITY for the operations)."""
    return TENSOR_OPS[op](*operands, Str(repr(tuple(params))))


def key_text(key: tuple) -> str:
    """`[:, 0]` for the key ((None, None, None), 0)."""
    parts = []
    for k in key:
        if isinstance(k, int):
            parts.append(str(k))
        else:
            start, stop, step = ("" if v is None else str(v) for v in k)
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    return "[" + ", ".join(parts) + "]"


def _axis(axis) -> str:
    return "" if axis is None else f", axis={axis}"


_TEXT = {
    "matmul": lambda a, b: f"{a} @ {b}",
    "transpose": lambda a: f"{a}.T",
    "sum": lambda a, axis, keepdims=False: f"sum({a}{_axis(axis)})",
    "mean": lambda a, axis: f"mean({a}{_axis(axis)})",
    "index": lambda a, key: f"{a}{key_text(key)}",
    "softmax": lambda a, axis: f"softmax({a}{_axis(axis)})",
    "logsumexp": lambda a, axis: f"logsumexp({a}{_axis(axis)})",
    "scatter": lambda g, like, key: f"scatter({g} into {like}{key_text(key)})",
    "broadcast": lambda g, like, axis: f"broadcast({g}{_axis(axis)} to {like})",
    "outer": lambda a, b: f"outer({a}, {b})",
    "size": lambda a: f"size({a})",
}


def _latex_default(op: str, *args) -> str:
    return rf"\operatorname{{{op}}}\left({args[0]}\right)"


_LATEX = {
    "matmul": lambda op, a, b: f"{a} {b}",
    "transpose": lambda op, a: f"{a}^{{T}}",
    "sum": lambda op, a, axis, keepdims=False: (
        rf"\textstyle\sum{_latex_axis(axis)} {a}"
    ),
    "mean": lambda op, a, axis: rf"\operatorname{{mean}}{_latex_axis(axis)} {a}",
    "index": lambda op, a, key: f"{a}{key_text(key)}",
}


def _latex_axis(axis) -> str:
    return "" if axis is None else rf"_{{\text{{axis}} {axis}}}"


TENSOR_OPS: dict[str, type] = {op: type(op, (TensorOp,), {"op": op}) for op in _TEXT}


def tensor_call(name: str, operands: list[sp.Expr], axis: int | None) -> TensorOp:
    """The SymPy node for a call of one of TENSOR_FUNCTIONS."""
    if name == "dot":
        return tensor("matmul", *operands)
    if name == "transpose":
        return tensor("transpose", *operands)
    if name == "sum":
        return tensor("sum", *operands, params=(axis, False))
    if name == "softmax":
        return tensor("softmax", *operands, params=(-1 if axis is None else axis,))
    return tensor(name, *operands, params=(axis,))


FUNCTIONS.update(
    {name: (tensor_call, counts) for name, counts in TENSOR_FUNCTIONS.items()}
)
