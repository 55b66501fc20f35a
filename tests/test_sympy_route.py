"""The SymPy route keeps the learner's names: a dict of named steps, `wrt`
honoured by compile and explain, and unknown adjoint names explained.

Every gradient is compared with `sympy.diff` of the expression, evaluated.
"""

from __future__ import annotations

import inspect

import pytest
import sympy as sp

import symgrad
from symgrad.teach.explain import ExplainError
from tests.conftest import ROOT

w1, w2, b, x1, x2, y = sp.symbols("w1 w2 b x1 x2 y")
Z = w1 * x1 + w2 * x2 + b
a = 1 / (1 + sp.exp(-Z))
L = -y * sp.log(a) - (1 - y) * sp.log(1 - a)
POINT = {"w1": 0.3, "w2": -0.7, "b": 0.1, "x1": 1.5, "x2": 0.4, "y": 1.0}


def _exact(expr, wrt):
    values = {sp.Symbol(k): sp.Rational(repr(v)) for k, v in POINT.items()}
    return {w.name: float(sp.diff(expr, w).subs(values).evalf(30)) for w in wrt}, float(
        expr.subs(values).evalf(30)
    )


def test_a_dict_of_named_steps_keeps_its_names_and_output():
    """The notebook's cell: Z, a and L stay steps (not t0...t16), L the output."""
    module = symgrad.compile({"Z": Z, "a": a, "L": L}, wrt=[w1, w2, b])
    spec = module.__symgrad__.spec
    assert [s.name for s in spec.steps] == ["Z", "a", "L"]
    assert spec.output == "L"
    assert [s.text for s in spec.steps][1:] == [
        "1/(1 + exp(-Z))",
        "-y*log(a) - (1 - y)*log(1 - a)",
    ]
    value, grads = module.value_and_grad(**POINT)
    _, tape = module.forward(**POINT)
    assert tape.a == pytest.approx(1 / (1 + sp.exp(-Z.subs(POINT)).evalf()))
    exact, exact_value = _exact(L, [w1, w2, b])
    assert value == pytest.approx(exact_value, rel=1e-13)
    assert grads._asdict() == pytest.approx(exact, rel=1e-13)
    # the named steps reach the rewrites: dL_dZ = a - y, as seed 000 writes it
    assert "    dL_dZ = a - y\n" in inspect.getsource(module.value_and_grad)


def test_an_explicit_output_and_symbols_named_like_steps():
    Zs = sp.Symbol("Z")
    module = symgrad.compile(
        {"Z": Z, "a": 1 / (1 + sp.exp(-Zs)), "L": Zs**2},
        wrt=[w1],
        output="a",
    )
    spec = module.__symgrad__.spec
    assert spec.output == "a"
    assert spec.steps[1].text == "1/(1 + exp(-Z))"
    exact, exact_value = _exact(a, [w1])
    value, grads = module.value_and_grad(
        **{k: v for k, v in POINT.items() if k != "y"}  # L does not read y
    )
    assert value == pytest.approx(exact_value, rel=1e-13)
    assert grads.w1 == pytest.approx(exact["w1"], rel=1e-13)


def test_a_single_expression_still_compiles_to_one_output():
    module = symgrad.compile(L, wrt=[w1, w2, b])
    spec = module.__symgrad__.spec
    assert spec.output == "out"  # y is an input
    exact, _ = _exact(L, [w1, w2, b])
    _, grads = module.value_and_grad(**POINT)
    assert grads._asdict() == pytest.approx(exact, rel=1e-12)


def test_bad_dicts_of_steps_are_spec_errors():
    with pytest.raises(symgrad.SpecError, match="output 'q' is not a step"):
        symgrad.compile({"Z": Z, "L": L}, output="q")
    with pytest.raises(symgrad.SpecError, match="names both an input and a step"):
        symgrad.compile({"Z": Z, "L": L}, inputs=[w1, w2, b, x1, x2, y, "Z"])


def test_compile_and_explain_honour_wrt():
    toy = ROOT / "examples" / "udl_toy.yaml"
    module = symgrad.compile(toy, wrt=["beta0", "omega0"])
    assert module.Gradients._fields == ("beta0", "omega0")
    e = symgrad.explain(L, at=POINT, wrt=[w1])
    assert list(e.gradients) == ["w1"]
    exact, _ = _exact(L, [w1])
    assert e.gradients["w1"] == pytest.approx(exact["w1"], rel=1e-12)
    assert list(symgrad.explain(toy, wrt=["beta4"]).gradients) == ["beta4"]
    with pytest.raises(symgrad.SpecError, match="not an input"):
        symgrad.explain(toy, wrt=["gamma"])
    with pytest.raises(ExplainError, match="compiled with wrt"):
        symgrad.explain(module, wrt=["beta1"])


def test_an_unknown_adjoint_lists_the_known_names():
    e = symgrad.explain(ROOT / "examples" / "udl_toy.yaml")
    with pytest.raises(KeyError) as err:
        e.adjoint("t3")
    assert isinstance(err.value, ExplainError)
    assert "t3" in str(err.value) and "h4, f3" in str(err.value)
    with pytest.raises(ExplainError, match="no value named 'q'"):
        e.value("q")
