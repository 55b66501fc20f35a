"""The spec language's functions: SymPy's elementwise functions plus the learners' three.

`FUNCTIONS` maps every name a spec may call to the SymPy callable that builds it
and the number of arguments it takes. `sigmoid`, `softplus` and `relu` are
SymPy functions of their own (not rewritten into exp/log/Piecewise) so that
the generated code keeps them as one readable line; each defines its
derivative (`fdiff`) and a rewrite into elementary functions, which the tests
use as an independent reference.
"""

from __future__ import annotations

import sympy as sp


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


class softplus(_Learner):  # noqa: N801
    """softplus(x) = log(1 + exp(x)); its derivative is sigmoid(x)."""

    @staticmethod
    def _definition(x):
        return sp.log(1 + sp.exp(x))

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class relu(_Learner):  # noqa: N801
    """relu(x) = max(x, 0); its derivative is 1 for x > 0 and 0 otherwise (PyTorch's relu'(0) = 0)."""

    @staticmethod
    def _definition(x):
        return sp.Piecewise((x, x > 0), (0, True))

    def fdiff(self, argindex=1):
        return sp.Heaviside(self.args[0], 0)


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


def unsupported_function(expr: sp.Basic) -> str | None:
    """The name of the first function in `expr` that symgrad cannot compile, if any."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Function) and type(node) not in OPS:
            return type(node).__name__
    return None
