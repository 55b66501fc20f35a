"""Every derivative rule against sympy.diff, and the kinks' subgradients."""

from __future__ import annotations

import pytest
import sympy as sp

import symgrad
from symgrad.compiler import rules
from symgrad.compiler.rules import local_derivatives
from symgrad.ops import OPS, relu, sigmoid, softplus
from tests.conftest import independent

NUMERIC = sorted(op for op in OPS if OPS[op].elementwise)


def _point(op: str) -> list[sp.Rational]:
    """A point inside the op's domain (a third of the way along each operand's
    interval) and away from its kinks; a one-value interval is a constant operand."""
    point = []
    for i in range(OPS[op].arity):
        low, high = OPS[op].sample_domain(i)
        point.append(
            sp.Rational(repr(low))
            + (sp.Rational(repr(high)) - sp.Rational(repr(low))) * sp.Rational(7, 20)
        )
    return point


@pytest.mark.parametrize("op", NUMERIC)
def test_rule_matches_sympy_diff(op):
    values = _point(op)
    constant = {i for i, (lo, hi) in enumerate(OPS[op].domain) if lo == hi}
    args = tuple(values[i] if i in constant else f"a{i}" for i in range(len(values)))
    operands = [
        v if i in constant else sp.Symbol(f"a{i}", real=True)
        for i, v in enumerate(values)
    ]
    symbols = [o for o in operands if isinstance(o, sp.Symbol)]
    expr = independent(
        OPS[op].meaning(*operands)
    )  # not through symgrad's own functions
    at = {sp.Symbol(f"a{i}", real=True): v for i, v in enumerate(values)}
    out_value = OPS[op].meaning(*values)
    rules = [r for r in local_derivatives(op, args, "out") if r is not None]
    for symbol, rule in zip(symbols, rules, strict=True):
        expected = sp.diff(expr, symbol).replace(
            lambda e: isinstance(e, sp.Derivative | sp.Subs), lambda e: sp.Integer(0)
        )  # steps (floor, ceiling): zero almost everywhere
        expected = expected.subs(at).replace(sp.DiracDelta, lambda *a: 0)  # a.e.
        got = rule.subs({**at, sp.Symbol("out", real=True): out_value})
        assert float(got) == pytest.approx(float(expected), rel=1e-14, abs=1e-15), (
            op,
            symbol,
        )


def test_rules_reuse_the_operation_output():
    out = sp.Symbol("h", real=True)
    assert local_derivatives("exp", ("f",), "h") == (out,)
    assert local_derivatives("tanh", ("f",), "h") == (1 - out**2,)
    assert local_derivatives("sigmoid", ("f",), "h") == (out * (1 - out),)
    assert local_derivatives("sqrt", ("f",), "h") == (1 / (2 * out),)


def test_constants_get_no_gradient():
    f = sp.Symbol("f", real=True)
    assert local_derivatives("pow", ("f", 3), "h") == (3 * f**2, None)
    assert local_derivatives("mul", (2, "f"), "h") == (None, 2)


@pytest.mark.parametrize("function", [sigmoid, softplus, relu])
def test_learner_functions_differentiate_like_their_definition(function):
    x = sp.Symbol("x", real=True)
    for value in (sp.Rational(-13, 10), sp.Rational(1, 3), sp.Integer(2)):
        mine = sp.diff(function(x), x).subs(x, value)
        reference = sp.diff(function(x).rewrite(sp.exp), x).subs(x, value)
        assert float(mine) == pytest.approx(float(reference), rel=1e-15)


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize(
    "expression, at, expected",
    [
        ("relu(x)", 0.0, 0.0),  # relu'(0) = 0
        ("relu(x)", 2.0, 1.0),
        ("abs(x)", 0.0, 0.0),  # |x|'(0) = 0
        ("sign(x)", 0.5, 0.0),  # sign' = 0
        # a tie with a constant: the constant takes the gradient (relu'(0) = 0,
        # PyTorch's relu6'(6) = 0)
        ("max(x, 1)", 1.0, 0.0),
        ("min(x, 1)", 1.0, 0.0),
        ("min(relu(x), 6)", 6.0, 0.0),
        ("max(x, 1)", 2.0, 1.0),
        ("where(x > 0, x**2, -x)", -2.0, -1.0),
        ("Piecewise((x**2, x > 0), (3*x, True))", 2.0, 4.0),
    ],
)
def test_kinks_take_pytorch_subgradients(expression, at, expected, target):
    module = symgrad.compile(
        {"name": "kink", "inputs": {"x": {}}, "steps": {"y": expression}}, target=target
    )
    assert float(module.grad(x=at).x) == expected


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_max_tie_gives_both_sides_half(target):
    module = symgrad.compile(
        {"name": "tie", "inputs": {"a": {}, "b": {}}, "steps": {"y": "max(a, b)"}},
        target=target,
    )
    grads = module.grad(a=1.5, b=1.5)
    assert (grads.a, grads.b) == (0.5, 0.5)


@pytest.mark.parametrize("op", sorted(op for op in OPS if OPS[op].vjp is None))
def test_renaming_placeholders_equals_xreplace(op):
    """local_derivatives renames the rule's placeholders without re-evaluating
    nodes that hold one of them (a compile-time saving); the result must be
    exactly what xreplace, which re-evaluates everything, gives. Every pattern
    of names and constants, repeated names included."""
    arity = OPS[op].arity
    choices = ["u", "v", 2, 0.5] if arity > 1 else ["u", -1, 3]
    patterns = [()]
    for i in range(arity):
        names_only = op == "where" and i == 0  # a condition, never a number
        patterns = [
            p + (c,)
            for p in patterns
            for c in choices
            if not (names_only and not isinstance(c, str))
        ]
    for args in patterns:
        pattern = tuple(None if isinstance(a, str) else a for a in args)
        formulas = rules._generic(op, pattern)
        names = {
            rules._OPERAND[i]: sp.Symbol(a, real=True)
            for i, a in enumerate(args)
            if isinstance(a, str)
        }
        names[rules._OUT] = sp.Symbol("out", real=True)
        expected = tuple(None if f is None else f.xreplace(names) for f in formulas)
        got = local_derivatives(op, args, "out")
        assert [sp.srepr(g) for g in got] == [sp.srepr(e) for e in expected], args
