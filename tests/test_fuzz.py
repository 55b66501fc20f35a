"""Correctness fuzzer: random expression DAGs against `sympy.diff`, evaluated exactly.

Hypothesis builds a random DAG over the inputs a, b, c: every node is one
operation (every elementwise function of the spec language, arithmetic, powers,
kinks, selections, constants near domain edges) whose operands are earlier
nodes, drawn either from the most recent ones (deep chains) or from any
(shared subexpressions). The DAG is compiled with both targets (and with the
engine targets that are installed: torch, and in the long profile jax and
numba), either as a
spec with one named step per node or as one SymPy expression, and its value
and gradient are compared at a rational point with `sympy.diff` of the
expression (learners' functions rewritten into exp/log first), evaluated to
30 digits. Points where an operation leaves its domain, sits within 1e-6 of a
kink, or where the numbers grow past 1e8 are rejected (`assume`): there,
float64 results and the exact reference cannot be compared.

Profiles: "ci" (the default, a few hundred cases in seconds) and "long"
(SYMGRAD_FUZZ=long python -m pytest tests/test_fuzz.py).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st

import symgrad
from symgrad import ops
from symgrad.check import OutOfDomain, check_gradients
from symgrad.frontend.language import FUNCTIONS, TENSOR_FUNCTIONS
from symgrad.frontend.spec import SpecError, from_dict
from symgrad.ops import relu, sigmoid, softplus
from tests import conftest

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
PROFILE_NAME = os.environ.get("SYMGRAD_FUZZ", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)
MAX_NODES = 12 if PROFILE_NAME == "long" else 7
# The engine targets that are installed: torch in every profile (no JIT: cheap);
# jax and numba, which compile each case, in the long one.
ENGINES = tuple(
    engine
    for engine in (("torch", "jax", "numba") if PROFILE_NAME == "long" else ("torch",))
    if importlib.util.find_spec(engine) is not None
)

NAMES = ("a", "b", "c")
SYMBOLS = tuple(sp.Symbol(n, real=True) for n in NAMES)
MARGIN = 1e-6  # distance kept from every kink and domain edge
LARGEST = 1e8  # values and gradients beyond this are not compared
RTOL = 1e-7  # |symgrad - exact| <= RTOL * max(1, |exact|)
CONSTANTS = (0.5, 2.0, -1.0, 3.0, 0.001, 0.999, 1.001, -0.25, 1e-06, 1000.0, 0.1)
"""Constants for the `C` operations: several sit near a domain edge (log, acos, ...)."""

mp = mpmath.MPContext()  # the test's own context: 40 digits for domain checks
mp.dps = 40


def _away(*distances) -> bool:
    return all(abs(d) > MARGIN for d in distances)


@dataclass(frozen=True)
class Op:
    """One node kind: spec text, SymPy expression, an mpmath value, and where it is defined."""

    name: str
    arity: int
    text: str  # str.format over the operands' names (and C, the constant)
    build: Callable[..., sp.Expr]  # over SymPy operands (and the constant)
    value: Callable[..., object]  # over mpmath operands (and the constant)
    ok: Callable[..., bool] = field(default=lambda *v: True)  # domain and kinks
    constant: bool = False


def _q(c: float) -> sp.Rational:
    return sp.Rational(repr(c))  # what the spec parser makes of the printed constant


OPS = [
    # arithmetic
    Op("add", 2, "{0} + {1}", lambda u, v: u + v, lambda u, v: u + v),
    Op("sub", 2, "{0} - {1}", lambda u, v: u - v, lambda u, v: u - v),
    Op("mul", 2, "{0}*{1}", lambda u, v: u * v, lambda u, v: u * v),
    Op(
        "div",
        2,
        "{0}/{1}",
        lambda u, v: u / v,
        lambda u, v: u / v,
        lambda u, v: _away(v),
    ),
    Op("neg", 1, "-{0}", lambda u: -u, lambda u: -u),
    Op(
        "pow",
        2,
        "{0}**{1}",
        lambda u, v: u**v,
        lambda u, v: u**v,
        lambda u, v: u > MARGIN,
    ),
    Op("square", 1, "{0}**2", lambda u: u**2, lambda u: u**2),
    Op("cube", 1, "{0}**3", lambda u: u**3, lambda u: u**3),
    Op("recip", 1, "1/{0}", lambda u: 1 / u, lambda u: 1 / u, lambda u: _away(u)),
    Op("inv_sq", 1, "{0}**-2", lambda u: u**-2, lambda u: u**-2, lambda u: _away(u)),
    Op("half", 1, "{0}**0.5", lambda u: u**sp.S.Half, mp.sqrt, lambda u: u > MARGIN),
    Op(
        "pow15",
        1,
        "{0}**1.5",
        lambda u: u ** sp.Rational(3, 2),
        lambda u: u ** mp.mpf(1.5),
        lambda u: u > MARGIN,
    ),
    # with a constant
    Op(
        "shift",
        1,
        "{0} + {C}",
        lambda u, c: u + _q(c),
        lambda u, c: u + c,
        constant=True,
    ),
    Op(
        "scale", 1, "{C}*{0}", lambda u, c: _q(c) * u, lambda u, c: c * u, constant=True
    ),
    Op(
        "csub",
        1,
        "{C} - {0}",
        lambda u, c: _q(c) - u,
        lambda u, c: c - u,
        constant=True,
    ),
    Op(
        "cdiv",
        1,
        "{C}/{0}",
        lambda u, c: _q(c) / u,
        lambda u, c: c / u,
        lambda u, c: _away(u),
        constant=True,
    ),
    Op(
        "cpow",
        1,
        "{A}**{0}",  # A = |C|: a positive base
        lambda u, c: abs(_q(c)) ** u,
        lambda u, c: abs(c) ** u,
        constant=True,
    ),
    Op(
        "max_c",
        1,
        "max({0}, {C})",
        lambda u, c: sp.Max(u, _q(c)),
        lambda u, c: max(u, c),
        lambda u, c: _away(u - c),
        constant=True,
    ),
    # elementwise functions
    Op("exp", 1, "exp({0})", sp.exp, mp.exp),
    Op("log", 1, "log({0})", sp.log, mp.log, lambda u: u > MARGIN),
    Op(
        "log1p_sq",
        1,
        "log(1 + {0}**2)",
        lambda u: sp.log(1 + u**2),
        lambda u: mp.log(1 + u**2),
    ),
    Op("sqrt", 1, "sqrt({0})", sp.sqrt, mp.sqrt, lambda u: u > MARGIN),
    Op(
        "sqrt_sq",
        1,
        "sqrt({0}**2 + 0.5)",
        lambda u: sp.sqrt(u**2 + sp.S.Half),
        lambda u: mp.sqrt(u**2 + 0.5),
    ),
    Op("sin", 1, "sin({0})", sp.sin, mp.sin),
    Op("cos", 1, "cos({0})", sp.cos, mp.cos),
    Op("tan", 1, "tan({0})", sp.tan, mp.tan, lambda u: _away(mp.cos(u))),
    Op("sinh", 1, "sinh({0})", sp.sinh, mp.sinh),
    Op("cosh", 1, "cosh({0})", sp.cosh, mp.cosh),
    Op("tanh", 1, "tanh({0})", sp.tanh, mp.tanh),
    Op("asin", 1, "asin({0})", sp.asin, mp.asin, lambda u: abs(u) < 1 - MARGIN),
    Op("acos", 1, "acos({0})", sp.acos, mp.acos, lambda u: abs(u) < 1 - MARGIN),
    Op("atan", 1, "atan({0})", sp.atan, mp.atan),
    Op(
        "atan2",
        2,
        "atan2({0}, {1})",
        sp.atan2,
        mp.atan2,
        lambda y, x: _away(y) or (x > MARGIN),  # not on the branch cut, nor at 0
    ),
    # NumPy's spellings
    Op("arcsin", 1, "arcsin({0})", sp.asin, mp.asin, lambda u: abs(u) < 1 - MARGIN),
    Op("arccos", 1, "arccos({0})", sp.acos, mp.acos, lambda u: abs(u) < 1 - MARGIN),
    Op("arctan", 1, "arctan({0})", sp.atan, mp.atan),
    Op(
        "arctan2",
        2,
        "arctan2({0}, {1})",
        sp.atan2,
        mp.atan2,
        lambda y, x: _away(y) or (x > MARGIN),
    ),
    Op("erf", 1, "erf({0})", sp.erf, mp.erf),
    Op("abs", 1, "abs({0})", sp.Abs, abs, lambda u: _away(u)),
    Op("Abs", 1, "Abs({0})", sp.Abs, abs, lambda u: _away(u)),
    Op("sign", 1, "sign({0})", sp.sign, mp.sign, lambda u: _away(u)),
    Op("sigmoid", 1, "sigmoid({0})", sigmoid, lambda u: 1 / (1 + mp.exp(-u))),
    Op("softplus", 1, "softplus({0})", softplus, lambda u: mp.log(1 + mp.exp(u))),
    Op("relu", 1, "relu({0})", relu, lambda u: max(u, 0), lambda u: _away(u)),
    # the registry's further functions (the mpmath values are written out here,
    # independently of the registry's)
    Op("asinh", 1, "asinh({0})", sp.asinh, mp.asinh),
    Op("arcsinh", 1, "arcsinh({0})", sp.asinh, mp.asinh),
    Op("acosh", 1, "acosh({0})", sp.acosh, mp.acosh, lambda u: u > 1 + MARGIN),
    Op("arccosh", 1, "arccosh({0})", sp.acosh, mp.acosh, lambda u: u > 1 + MARGIN),
    Op("atanh", 1, "atanh({0})", sp.atanh, mp.atanh, lambda u: abs(u) < 1 - MARGIN),
    Op("arctanh", 1, "arctanh({0})", sp.atanh, mp.atanh, lambda u: abs(u) < 1 - MARGIN),
    Op("log1p", 1, "log1p({0})", ops.log1p, mp.log1p, lambda u: u > -1 + MARGIN),
    Op("expm1", 1, "expm1({0})", ops.expm1, mp.expm1),
    Op("log2", 1, "log2({0})", ops.log2, lambda u: mp.log(u, 2), lambda u: u > MARGIN),
    Op("log10", 1, "log10({0})", ops.log10, mp.log10, lambda u: u > MARGIN),
    Op("exp2", 1, "exp2({0})", ops.exp2, lambda u: mp.power(2, u)),
    Op("cbrt", 1, "cbrt({0})", ops.cbrt, mp.cbrt, lambda u: _away(u)),
    Op("square", 1, "square({0})", lambda u: u**2, lambda u: u**2),
    Op("reciprocal", 1, "reciprocal({0})", lambda u: 1 / u, lambda u: 1 / u, _away),
    Op(
        "rsqrt",
        1,
        "rsqrt({0})",
        lambda u: 1 / sp.sqrt(u),
        lambda u: 1 / mp.sqrt(u),
        lambda u: u > MARGIN,
    ),
    Op("hypot", 2, "hypot({0}, {1})", ops.hypot, mp.hypot, lambda u, v: _away(u, v)),
    Op(
        "logaddexp",
        2,
        "logaddexp({0}, {1})",
        ops.logaddexp,
        lambda u, v: mp.log(mp.exp(u) + mp.exp(v)),
    ),
    Op(
        "logaddexp2",
        2,
        "logaddexp2({0}, {1})",
        ops.logaddexp2,
        lambda u, v: mp.log(mp.power(2, u) + mp.power(2, v), 2),
    ),
    Op("sinc", 1, "sinc({0})", ops.sinc, mp.sincpi, lambda u: _away(u)),
    Op(
        "logcosh",
        1,
        "logcosh({0})",
        ops.SPELLINGS["logcosh"].build,
        lambda u: mp.log(mp.cosh(u)),
    ),
    Op("erfc", 1, "erfc({0})", sp.erfc, mp.erfc),
    Op(
        "logit",
        1,
        "logit({0})",
        ops.logit,
        lambda u: mp.log(u / (1 - u)),
        lambda u: MARGIN < u < 1 - MARGIN,
    ),
    Op(
        "elu",
        1,
        "elu({0})",
        lambda u: ops.elu(u, 1),
        lambda u: u if u > 0 else mp.expm1(u),
        lambda u: _away(u),
    ),
    Op(
        "selu",
        1,
        "selu({0})",
        ops.selu,
        lambda u: (
            mp.mpf("1.0507009873554804934193349852946")
            * (
                u
                if u > 0
                else mp.mpf("1.6732632423543772848170429916717") * mp.expm1(u)
            )
        ),
        lambda u: _away(u),
    ),
    Op(
        "leaky_relu",
        1,
        "leaky_relu({0})",
        lambda u: ops.leaky_relu(u, sp.Rational(1, 100)),
        lambda u: u if u > 0 else u / 100,
        lambda u: _away(u),
    ),
    Op(
        "gelu", 1, "gelu({0})", ops.gelu, lambda u: u / 2 * (1 + mp.erf(u / mp.sqrt(2)))
    ),
    Op("silu", 1, "silu({0})", ops.silu, lambda u: u / (1 + mp.exp(-u))),
    Op("swish", 1, "swish({0})", ops.silu, lambda u: u / (1 + mp.exp(-u))),
    Op("softsign", 1, "softsign({0})", ops.softsign, lambda u: u / (1 + abs(u))),
    Op(
        "relu6",
        1,
        "relu6({0})",
        ops.relu6,
        lambda u: min(max(u, 0), 6),
        lambda u: _away(u, u - 6),
    ),
    Op(
        "clip",
        1,
        "clip({0}, -0.5, 0.5)",
        lambda u: ops.clip(u, -sp.S.Half, sp.S.Half),
        lambda u: min(max(u, -0.5), 0.5),
        lambda u: _away(u - 0.5, u + 0.5),
    ),
    Op(
        "clamp",
        2,
        "clamp({0}, -1, {1})",
        lambda u, v: ops.clip(u, -1, v),
        lambda u, v: min(max(u, -1), v),
        lambda u, v: _away(u + 1, u - v) and v > -1,
    ),
    Op(
        "floor",
        1,
        "floor({0})",
        sp.floor,
        mp.floor,
        lambda u: _away(u - mp.nint(u)),
    ),
    Op("ceil", 1, "ceil({0})", sp.ceiling, mp.ceil, lambda u: _away(u - mp.nint(u))),
    Op(
        "ceiling",
        1,
        "ceiling({0})",
        sp.ceiling,
        mp.ceil,
        lambda u: _away(u - mp.nint(u)),
    ),
    Op(
        "round",
        1,
        "round({0})",
        ops.round_half_even,
        mp.nint,
        lambda u: _away(abs(u - mp.floor(u)) - 0.5),
    ),
    Op(
        "mod",
        2,
        "mod({0}, {1})",
        sp.Mod,
        lambda u, v: u - v * mp.floor(u / v),
        lambda u, v: _away(v) and _away((u / v) - mp.nint(u / v)),
    ),
    Op("gammaln", 1, "gammaln({0})", sp.loggamma, mp.loggamma, lambda u: u > MARGIN),
    Op("lgamma", 1, "lgamma({0})", sp.loggamma, mp.loggamma, lambda u: u > MARGIN),
    Op("loggamma", 1, "loggamma({0})", sp.loggamma, mp.loggamma, lambda u: u > MARGIN),
    Op(
        "digamma",
        1,
        "digamma({0})",
        lambda u: sp.polygamma(0, u),
        lambda u: mp.psi(0, u),
        lambda u: u > MARGIN,
    ),
    Op(
        "polygamma",
        1,
        "polygamma(1, {0})",
        lambda u: sp.polygamma(1, u),
        lambda u: mp.psi(1, u),
        lambda u: u > MARGIN,
    ),
    Op("max", 2, "max({0}, {1})", sp.Max, max, lambda u, v: _away(u - v)),
    Op("min", 2, "min({0}, {1})", sp.Min, min, lambda u, v: _away(u - v)),
    Op(
        "Max3",
        3,
        "Max({0}, {1}, {2})",
        sp.Max,
        max,
        lambda u, v, w: _away(u - v, v - w, u - w),
    ),
    Op(
        "Min3",
        3,
        "Min({0}, {1}, {2})",
        sp.Min,
        min,
        lambda u, v, w: _away(u - v, v - w, u - w),
    ),
    # selections and conditions
    Op(
        "where",
        3,
        "where({0} > {1}, {2}, {1})",
        lambda u, v, w: sp.Piecewise((w, u > v), (v, True)),
        lambda u, v, w: w if u > v else v,
        lambda u, v, w: _away(u - v),
    ),
    Op(
        "where_and",
        3,
        "where({0} > 0 and {1} < {2}, {0}, {2})",
        lambda u, v, w: sp.Piecewise((u, (u > 0) & (v < w)), (w, True)),
        lambda u, v, w: u if (u > 0 and v < w) else w,
        lambda u, v, w: _away(u, v - w),
    ),
    Op(
        "where_or_not",
        2,
        "where(not ({0} <= 0.5) or {1} >= 1, {1}, {0})",
        lambda u, v: sp.Piecewise((v, sp.Not(u <= sp.S.Half) | (v >= 1)), (u, True)),
        lambda u, v: v if (not (u <= 0.5) or v >= 1) else u,
        lambda u, v: _away(u - 0.5, v - 1),
    ),
    Op(
        "Piecewise",
        3,
        "Piecewise(({0}, {1} < -0.5), ({2}, {1} < 0.5), ({0}*{2}, True))",
        lambda u, v, w: sp.Piecewise(
            (u, v < -sp.S.Half), (w, v < sp.S.Half), (u * w, True)
        ),
        lambda u, v, w: u if v < -0.5 else (w if v < 0.5 else u * w),
        lambda u, v, w: _away(v + 0.5, v - 0.5),
    ),
]
OPS_BY_NAME = {op.name: op for op in OPS}


def test_every_function_of_the_spec_language_is_fuzzed():
    elementwise = set(FUNCTIONS) - set(TENSOR_FUNCTIONS)
    fuzzed = {op.text.split("(")[0] for op in OPS}
    assert elementwise <= fuzzed, elementwise - fuzzed


@dataclass
class Dag:
    """Nodes over the inputs; node i is step `s{i}`."""

    ops: list[tuple[Op, tuple[int, ...], float | None]]

    def texts(self) -> dict[str, str]:
        steps = {}
        for i, (op, operands, c) in enumerate(self.ops):
            names = [self.name(k) for k in operands]
            steps[f"s{i}"] = op.text.format(*names, C=repr(c), A=repr(abs(c or 0)))
        return steps

    @staticmethod
    def name(k: int) -> str:
        return NAMES[k] if k < len(NAMES) else f"s{k - len(NAMES)}"

    def expressions(self) -> list[sp.Expr]:
        nodes = list(SYMBOLS)
        for op, operands, c in self.ops:
            args = [nodes[k] for k in operands] + ([c] if op.constant else [])
            nodes.append(op.build(*args))
        return nodes[len(NAMES) :]

    def values(self, point: dict[str, Fraction]) -> list | None:
        """Every node's value (mpmath, 40 digits), or None where a node is not defined."""
        nodes = [mp.mpf(point[n].numerator) / point[n].denominator for n in NAMES]
        for op, operands, c in self.ops:
            args = [nodes[k] for k in operands] + ([mp.mpf(c)] if op.constant else [])
            if not op.ok(*args):
                return None
            try:
                value = op.value(*args)
            except (ZeroDivisionError, ValueError, OverflowError):
                return None
            if isinstance(value, mp.mpc) or not mp.isfinite(value):
                return None
            if abs(value) > LARGEST:
                return None
            nodes.append(value)
        return nodes


@st.composite
def dags(draw, max_nodes: int = MAX_NODES) -> Dag:
    count = draw(st.integers(1, max_nodes))
    ops = []
    for i in range(count):
        op = draw(st.sampled_from(OPS))
        available = len(NAMES) + i
        operands = []
        for _ in range(op.arity):
            if i and draw(st.booleans()):  # a chain: one of the last two nodes
                k = available - 1 - draw(st.integers(0, min(1, i - 1)))
            else:  # sharing: any earlier node or input
                k = draw(st.integers(0, available - 1))
            operands.append(k)
        c = draw(st.sampled_from(CONSTANTS)) if op.constant else None
        ops.append((op, tuple(operands), c))
    return Dag(ops)


coordinates = st.integers(-96, 96).map(lambda n: Fraction(n, 32))
points = st.fixed_dictionaries({n: coordinates for n in NAMES})


def independent(expr: sp.Expr) -> sp.Expr:
    """`expr` in SymPy's own functions (symgrad's by their definitions, mod through
    floor), with sign, floor and ceiling as steps of derivative 0: SymPy cannot
    differentiate sign(u) for every u, nor take floor's derivative as 0."""
    return (
        conftest.independent(expr)
        .replace(sp.sign, _Step)
        .replace(sp.floor, conftest.floor_step)
        .replace(sp.ceiling, lambda u: -conftest.floor_step(-u))
    )


class _Step(sp.Function):
    """sign, with the derivative 0 that it has away from 0."""

    @classmethod
    def eval(cls, arg):
        return sp.sign(arg) if arg.is_number else None

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _eval_evalf(self, prec):
        return sp.sign(self.args[0].evalf(prec))


def _exact(expr: sp.Expr, point: dict[str, Fraction]) -> tuple[float, dict[str, float]]:
    """Value and gradient of `expr` at `point` from sympy.diff, to 30 digits."""
    reference = independent(expr)
    subs = _rational(point)

    def evaluate(e: sp.Expr) -> float:
        value = _evaluated(e, subs)
        assume(value is not None)
        return value

    value = evaluate(reference)
    grads = {}
    for s in SYMBOLS:
        derivative = sp.diff(reference, s)
        # An unevaluated Derivative would mean the reference itself is incomplete.
        assert not derivative.has(sp.Derivative), derivative
        grads[s.name] = evaluate(derivative)
    return value, grads


def _rational(point: dict[str, Fraction]) -> dict[sp.Symbol, sp.Rational]:
    return {
        s: sp.Rational(point[s.name].numerator, point[s.name].denominator)
        for s in SYMBOLS
    }


def _evaluated(e: sp.Expr, subs: dict[sp.Symbol, sp.Rational]) -> float | None:
    """`e` at the exact point `subs`, to 30 digits; None where SymPy cannot
    evaluate it, or its value is not real and finite."""
    # Exact rationals first (evalf's own subs= substitutes floats, and SymPy then
    # stumbles over rounding, e.g. a Max of two numbers with 1e-13j parts).
    try:
        value = complex(e.xreplace(subs).evalf(30))
    except (TypeError, ValueError):
        # Rare: SymPy builds every branch of a Piecewise with numbers, and one
        # it does not take may compare a nan (or leave a condition undecided).
        event("the exact reference could not be evaluated")
        return None
    if not (math.isfinite(value.real) and abs(value.imag) <= 1e-20):
        return None
    return value.real


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= RTOL * max(1.0, abs(want))


def _compare(module, point: dict[str, Fraction], value: float, grads: dict[str, float]):
    args = {n: float(point[n]) for n in NAMES if n in _parameters(module)}
    got_value, got_grads = module.value_and_grad(**args)
    assert _close(float(got_value), value), (got_value, value)
    for name in got_grads._fields:
        assert _close(float(getattr(got_grads, name)), grads[name]), (
            name,
            getattr(got_grads, name),
            grads[name],
        )
    # backward is the vector-Jacobian product: dy scales every gradient
    y, tape = module.forward(**args)
    assert _close(float(y), value)
    scaled = module.backward(tape, 2.5)
    for name in got_grads._fields:
        assert _close(float(getattr(scaled, name)), 2.5 * grads[name]), name


def _parameters(module) -> list[str]:
    return list(inspect.signature(module.forward).parameters)


@settings(PROFILE)
@given(dag=dags(), point=points, as_steps=st.booleans())
def test_random_dags_match_sympy_diff(dag, point, as_steps):
    values = dag.values(point)
    assume(values is not None)
    try:
        expr = dag.expressions()[-1]
    except RecursionError:
        # Rare: SymPy solves a condition holding a Piecewise for its variable, and
        # recurses without end (specs refuse such conditions; steps avoid them).
        event("SymPy could not build the expression")
        assume(False)
    note(f"steps: {dag.texts()}\npoint: {point}")
    free = sorted(s.name for s in expr.free_symbols)
    assume(free)  # a constant output has no gradient to compare
    try:
        note(f"expression: {expr}")
        value, grads = _exact(expr, point)
    except (RecursionError, TypeError, ValueError, KeyError):
        # Rare, in SymPy alone (the reference never calls symgrad): printing or
        # rewriting a deep Piecewise condition recurses too deep, or SymPy builds
        # a branch not taken with numbers (1/relu(a) at a < 0 is zoo) and then
        # compares it.
        event("SymPy could not build the reference")
        assume(False)
    assume(all(abs(g) <= LARGEST for g in grads.values()))
    if not as_steps and expr.has(sp.Piecewise):
        # SymPy moves operations into the branches of a Piecewise, and symgrad
        # evaluates every branch: one the point does not take may leave its
        # domain. Compiled from SymPy in test_piecewise_from_sympy.
        event("Piecewise: compiled from the steps")
        as_steps = True
    steps = {"name": "fuzz", "inputs": {n: {} for n in NAMES}, "steps": dag.texts()}
    python = _python_ok(dag)
    targets = ("numpy", "python", *ENGINES) if python else ("numpy", "jax", "torch")
    for target in (t for t in targets if t in ("numpy", "python") or t in ENGINES):
        if as_steps:
            module = symgrad.compile(steps, target=target)
        else:
            module = symgrad.compile(expr, wrt=free, target=target)
        with _float_errors():
            _compare(module, point, value, grads)


def _python_ok(dag: Dag) -> bool:
    """Whether the python target compiles `dag`: it has no special functions
    (gammaln, polygamma), which a step may call even where SymPy folds the value
    (gammaln(s3/s3) is 0)."""
    return not any(
        e.has(sp.loggamma, sp.polygamma) for e in dag.expressions()
    ) and not any(
        name in text
        for text in dag.texts().values()
        for name in ("gammaln", "loggamma", "lgamma", "digamma", "polygamma")
    )


# --------------------------------------------------------------------------- higher order
HIGHER_EXAMPLES = 1000 if PROFILE_NAME == "long" else 25


@dataclass(frozen=True)
class Higher:
    """The exact reference of the higher-order test: each output's gradient, and
    the first output's Hessian times d, from sympy.diff evaluated at 30 digits."""

    gradients: list[dict[str, float]]  # one per output, by input
    hvp: dict[str, float]  # by input


def _higher(
    dag: Dag, outputs: list[int], point: dict[str, Fraction], d: list[Fraction]
) -> Higher | None:
    """The gradients of `dag`'s nodes `outputs` and H·d of the first at `point`,
    exactly (as `_exact` does for the gradient); None where SymPy cannot build
    or evaluate them, or one is not real and finite."""
    subs = _rational(point)
    try:
        expressions = dag.expressions()
        gradients = []
        for k in outputs:
            reference = independent(expressions[k])
            gradients.append({s.name: sp.diff(reference, s) for s in SYMBOLS})
        # H·d = ∇(∇f·d): one expression differentiated once more per input
        along = sum(
            sp.Rational(v.numerator, v.denominator) * gradients[0][n]
            for n, v in zip(NAMES, d, strict=True)
        )
        hvp = {s.name: sp.diff(along, s) for s in SYMBOLS}
        # SymPy may leave a derivative it cannot take unevaluated: no reference
        if any(e.has(sp.Derivative) for g in [*gradients, hvp] for e in g.values()):
            return None
        exact = [{n: _evaluated(e, subs) for n, e in g.items()} for g in gradients]
        hvp = {n: _evaluated(e, subs) for n, e in hvp.items()}
    except (RecursionError, TypeError, ValueError, KeyError):
        return None  # SymPy alone fails, as in test_random_dags_match_sympy_diff
    if any(v is None for g in [*exact, hvp] for v in g.values()):
        return None
    return Higher(exact, hvp)


def _against_the_checker(module, x: list[float]) -> None:
    """Where no exact reference can be built: the jvp, hvp, jacobian and each
    output's VJP against finite differences with symgrad.check's error bounds
    (Richardson extrapolation over many steps). A mismatch fails; a row the
    differences cannot verify (a domain edge or a kink within every step) is
    left unverified, not failed."""
    try:
        report = check_gradients(module, dict(zip(NAMES, x, strict=True)))
    except OutOfDomain as err:
        event("checker: out of the domain near the point")
        note(f"checker: {err}")
        return
    # float64 rounding of a tiny derivative (1 - sigmoid(x) near 1) may be far
    # outside the checker's bound relative to it: a mismatch within RTOL of
    # max(1, |numerical|), what the exact reference allows, is not a failure.
    wrong = [
        r
        for r in report.rows
        if r.verdict == "mismatch" and not _close(r.analytical, r.numerical)
    ]
    assert not wrong, str(report)
    if report.verdict == "unverified":
        event("checker: unverified")


@settings(PROFILE, max_examples=HIGHER_EXAMPLES)
@given(
    dag=dags(),
    point=points,
    direction=st.lists(coordinates.filter(bool), min_size=3, max_size=3),
    second=st.integers(0, MAX_NODES - 1),
    target=st.sampled_from(["numpy", "python"]),
)
# Near a domain edge, differences at steps of 1e-3 were too coarse: the jvp of 1/b
# at b = 1/32 is -1024 * 5/2 = -2560 (they gave -2559.97), H·d of logit(c) at c =
# 1/32 is (2c - 1)/(c(1 - c))**2 * 3 = -3068.80 (they gave -3068.74).
@example(
    dag=Dag([(OPS_BY_NAME["recip"], (1,), None)]),
    point={"a": Fraction(1), "b": Fraction(1, 32), "c": Fraction(1)},
    direction=[Fraction(1), Fraction(5, 2), Fraction(1)],
    second=0,
    target="numpy",
)
@example(
    dag=Dag([(OPS_BY_NAME["logit"], (2,), None)]),
    point={"a": Fraction(1, 2), "b": Fraction(1), "c": Fraction(1, 32)},
    direction=[Fraction(1), Fraction(-1), Fraction(3)],
    second=0,
    target="python",
)
def test_random_dags_jvp_hvp_jacobian_against_sympy_diff(
    dag, point, direction, second, target
):
    """jvp against the gradient·d and against sympy.diff's gradient·d; hvp
    against sympy.diff twice along d; the jacobian of two outputs (the last step
    and an earlier one), and backward's VJP of each output (its seed 1, the
    other's 0), against each output's gradient from sympy.diff, and the VJP of
    a weighted sum against the sum of the VJPs. Where SymPy cannot build the
    exact reference, against finite differences through symgrad.check."""
    values = dag.values(point)
    assume(values is not None)
    assume(
        all(abs(v) <= 1e4 for v in values)
    )  # moderate values (the fallback's differences)
    if target == "python":
        assume(_python_ok(dag))
    steps = dag.texts()
    names = list(steps)
    outputs = [names[-1]] + ([names[second]] if second < len(names) - 1 else [])
    spec = {
        "name": "fuzz",
        "inputs": {n: {} for n in NAMES},
        "steps": steps,
        "outputs": outputs,
    }
    note(f"steps: {steps}\noutputs: {outputs}\npoint: {point}\nd: {direction}")
    try:
        module = symgrad.compile(
            spec, target=target, derivatives=["jvp", "hvp", "jacobian"]
        )
    except SpecError as err:  # hvp of a step that SymPy cannot differentiate twice
        event(f"not compiled: {err}")
        assume(False)
    x = [float(point[n]) for n in NAMES]
    d = [float(v) for v in direction]
    value, grads = module.value_and_grad(*x)
    assume(all(math.isfinite(float(g)) and abs(g) <= 1e4 for g in grads))
    with _float_errors():
        (values_, tangents) = module.jvp(*x, *d)
        product = module.hvp(*x, *d)
        jacobian = module.jacobian(*x)
        _, tape = module.forward(*x)
        vjps = [  # backward: the VJP of each output (one-hot seeds)
            module.backward(
                tape, *(1.0 if j == k else 0.0 for j in range(len(outputs)))
            )
            for k in range(len(outputs))
        ]
        weights = [1.0 + 0.5 * d[0], -0.75][: len(outputs)]
        combined = module.backward(tape, *weights)
    if len(outputs) == 1:
        values_, tangents = (values_,), (tangents,)
        jacobian = (jacobian,)
    # jvp: the gradient along d (the gradient is checked against sympy.diff above)
    dot = sum(float(g) * v for g, v in zip(grads, d, strict=True))
    assert math.isclose(float(tangents[0]), dot, rel_tol=1e-9, abs_tol=1e-9)
    for name in NAMES:  # the weighted sum's VJP: the weighted sum of the VJPs
        terms = [
            w * float(getattr(v, name)) for w, v in zip(weights, vjps, strict=True)
        ]
        got = float(getattr(combined, name))
        want = math.fsum(terms)
        assert abs(got - want) <= RTOL * max(1.0, *map(abs, terms)), ("sum", name)
    exact = _higher(dag, [int(o[1:]) for o in outputs], point, list(direction))
    if exact is None:
        event("no exact reference: against the checker's differences")
        _against_the_checker(module, x)
        return
    for name in NAMES:  # hvp: sympy.diff twice, along d
        assert _close(float(getattr(product, name)), exact.hvp[name]), (
            "hvp", name, float(getattr(product, name)), exact.hvp[name]
        )  # fmt: skip
    for o, tangent, blocks, vjp, gradient in zip(
        outputs, tangents, jacobian, vjps, exact.gradients, strict=True
    ):
        # jvp: sympy.diff's gradient along d
        want = math.fsum(gradient[n] * v for n, v in zip(NAMES, d, strict=True))
        assert _close(float(tangent), want), ("jvp", o, float(tangent), want)
        for name in NAMES:  # jacobian and backward: each output along each input
            got = float(getattr(blocks, name)), float(getattr(vjp, name))
            assert _close(got[0], gradient[name]), ("jacobian", o, name, got[0])
            assert _close(got[1], gradient[name]), ("vjp", o, name, got[1])


class _float_errors:
    """Floating-point warnings are failures here: the point is inside the domain."""

    def __enter__(self):
        import numpy as np

        # Underflow to 0 (exp(-1000)) is fine; overflow, 0/0 and x/0 are not.
        self._state = np.seterr(over="raise", invalid="raise", divide="raise")

    def __exit__(self, *exc):
        import numpy as np

        np.seterr(**self._state)
        return False


# --------------------------------------------------------------------------- regressions
# What the fuzzer found. Bugs in files this test does not own are strict xfails: each
# one turns into a failure (remove the mark) once its fix lands.


def test_a_function_sympy_introduces_is_a_spec_error_with_its_step():
    """Abs(1000**(x**a)): x**a may be complex, so SymPy rewrites the Abs into
    1000**re(...), which used to fail in lowering without file or step. (The
    fuzzer found it with sigmoid(a) for x; sigmoid now says it is positive.)"""
    spec = {
        "name": "r",
        "inputs": {"a": {}, "x": {}},
        "steps": {"y": "Abs(1000**(x**a))"},
    }
    with pytest.raises(
        SpecError, match=r"step 'y': SymPy rewrote .* into re\(\.\.\.\)"
    ):
        from_dict(spec)


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_piecewise_from_sympy(target):
    a, b = SYMBOLS[:2]
    expr = sp.Piecewise((a**2 * b, (a > 0) & (b < 1)), (-a, True))
    module = symgrad.compile(expr, wrt=[a, b], target=target)
    for point in ({a: 1.5, b: 0.5}, {a: 1.5, b: 2.0}, {a: -2.0, b: 0.5}):
        values = {str(k): v for k, v in point.items()}
        value, grads = module.value_and_grad(**values)
        assert float(value) == pytest.approx(float(expr.subs(point)))
        for s in (a, b):
            exact = float(sp.diff(expr, s).subs(point))
            assert float(getattr(grads, str(s))) == pytest.approx(exact), (point, s)


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_a_piecewise_whose_condition_picks_a_condition(target):
    """SymPy writes conditions on a Piecewise as ITE(c, x, y) (the fuzzer met it)."""
    a, b = SYMBOLS[:2]
    expr = sp.Piecewise((a**2, sp.ITE(a > 0, b < 1, b > 2)), (-a, True))
    module = symgrad.compile(expr, wrt=[a], target=target)
    for values, expected in [
        ((1.5, 0.5), 3.0),
        ((1.5, 2.0), -1.0),
        ((-1.0, 3.0), -2.0),
    ]:
        assert module.grad(*values).a == pytest.approx(expected)


def test_a_condition_symgrad_cannot_lower_is_a_spec_error():
    a, b = SYMBOLS[:2]
    with pytest.raises(SpecError, match="unsupported function 'Xor'"):
        symgrad.compile(sp.Piecewise((a**2, sp.Xor(a > 0, b < 1)), (-a, True)), wrt=[a])


def test_abs_of_a_power_of_a_learner_from_sympy():
    a = SYMBOLS[0]
    module = symgrad.compile(sp.Abs(1000 ** (sigmoid(a) ** a)), wrt=[a])
    assert module.value_and_grad(a=0.0)[0] == pytest.approx(1000.0)


def test_log_sigmoid_in_the_tail_python_target():
    spec = {"name": "r", "inputs": {"a": {}}, "steps": {"y": "log(sigmoid(a))"}}
    module = symgrad.compile(spec, target="python")
    value, grads = module.value_and_grad(a=-40.0)
    assert value == pytest.approx(-40.0, rel=1e-12)
    assert grads.a == pytest.approx(1.0, rel=1e-12)


def test_sigmoid_far_left_without_overflow_numpy_target():
    spec = {
        "name": "r",
        "inputs": {"a": {}},
        "steps": {"y": "sigmoid(a) + softplus(a)"},
    }
    module = symgrad.compile(spec, target="numpy")
    with _float_errors():
        value, grads = module.value_and_grad(a=-1000.0)
    assert value == 0.0 and grads.a == 0.0


def test_the_reference_sees_every_operation():
    """Each operation's mpmath value agrees with its SymPy expression (the test's own
    check), at the first of two points inside its domain."""
    for op in OPS:
        for a, b, c in ((Fraction(3, 8), Fraction(5, 16), Fraction(7, 10)),
                        (Fraction(11, 8), Fraction(13, 16), Fraction(9, 10))):  # fmt: skip
            point = {"a": a, "b": b, "c": c}
            subs = {s: sp.Rational(point[s.name]) for s in SYMBOLS}
            nodes = [mp.mpf(point[n].numerator) / point[n].denominator for n in NAMES]
            operands = (0, 1, 2)[: op.arity]
            constant = 0.5 if op.constant else None
            args = [nodes[k] for k in operands]
            args += [mp.mpf(constant)] if op.constant else []
            if not op.ok(*args):
                continue
            sym = [SYMBOLS[k] for k in operands] + ([constant] if op.constant else [])
            want = op.value(*args)
            got = independent(op.build(*sym)).xreplace(subs).evalf(30)
            assert math.isclose(
                float(got), float(want), rel_tol=1e-12, abs_tol=1e-12
            ), op.name
            break
        else:
            raise AssertionError(f"{op.name}: neither point is inside its domain")
