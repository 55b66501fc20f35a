"""Shared test helpers: the independent references symgrad is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy as sp

import symgrad
from symgrad.frontend.spec import SpecError
from symgrad.ops import Defined

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def exact_gradient(
    spec, point: dict[str, float], digits: int = 30
) -> tuple[float, dict]:
    """The value and gradient of a scalar spec from `sympy.diff`, evaluated exactly.

    symgrad's own functions are rewritten into exp/log first, so the reference
    does not share symgrad's derivative rules.
    """
    expr = independent(spec.expanded())
    subs = {i.symbol: sp.Rational(repr(float(point[i.name]))) for i in spec.inputs}
    value = _real(expr.xreplace(subs).evalf(digits))
    grads = {}
    for name in spec.wrt:
        symbol = next(i.symbol for i in spec.inputs if i.name == name)
        grads[name] = _real(sp.diff(expr, symbol).xreplace(subs).evalf(digits))
    return value, grads


def independent(expr: sp.Expr) -> sp.Expr:
    """`expr` with symgrad's own functions (sigmoid, softplus, relu, ...) replaced
    by their definitions in elementary functions."""
    written = expr.replace(
        lambda e: isinstance(e, Defined), lambda e: type(e)._definition(*e.args)
    )
    # mod(a, b) = a - b floor(a / b), whose derivative SymPy can take
    return written.replace(sp.Mod, lambda a, b: a - b * floor_step(a / b))


class floor_step(sp.Function):  # noqa: N801 (SymPy function classes are lower case)
    """floor, whose derivative SymPy takes as 0 (a step, almost everywhere), and
    which SymPy does not fold back into Mod as it does a - b*floor(a/b)."""

    @classmethod
    def eval(cls, x):
        return sp.floor(x) if x.is_Number else None

    def fdiff(self, argindex=1):
        return sp.Integer(0)

    def _eval_evalf(self, prec):
        return sp.floor(self.args[0].evalf(prec))


def _real(number: sp.Expr) -> float:
    real, imag = number.as_real_imag()
    assert abs(imag) <= 1e-25 * max(1, abs(real)), number
    return float(real)


def assert_step_error(inputs: dict, expression: str, words: list[str]) -> None:
    """Compiling a spec whose step `r` is `expression` (then `y = sum(r)`) is an
    error that names the step and says each of `words`."""
    spec = {"name": "bad", "inputs": inputs, "steps": {"r": expression, "y": "sum(r)"}}
    with pytest.raises(SpecError) as err:
        symgrad.compile(spec)
    message = str(err.value)
    assert "step 'r'" in message
    for word in words:
        assert word in message, (word, message)
