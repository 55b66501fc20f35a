"""The Python API: symgrad.compile from SymPy, dicts and files; backward as a VJP; batches."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.frontend.spec import SpecError, from_dict, from_sympy
from symgrad.pipeline import build, import_source, source
from tests.conftest import exact_gradient


def test_compile_from_sympy_orders_parameters_wrt_first_then_by_name():
    w, b, x, a = sp.symbols("w b x a")
    module = symgrad.compile(sp.log(1 + sp.exp(w * x + b)) + a, wrt=[w, b])
    assert list(inspect.signature(module.forward).parameters) == ["w", "b", "a", "x"]
    assert module.Gradients._fields == ("w", "b")
    grads = module.grad(w=0.5, b=0.1, a=3.0, x=2.0)
    sigma = 1 / (1 + np.exp(-(0.5 * 2.0 + 0.1)))
    assert grads.w == pytest.approx(sigma * 2.0, rel=1e-14)
    assert grads.b == pytest.approx(sigma, rel=1e-14)


def test_inputs_argument_overrides_the_order():
    x, y = sp.symbols("x y")
    module = symgrad.compile(x * sp.sin(y), wrt=[x], inputs=[y, x])
    assert list(inspect.signature(module.grad).parameters) == ["y", "x"]


def test_names_that_collide_with_sympy_stay_plain_symbols():
    names = ["gamma", "beta", "E", "I", "N", "S", "Q", "O", "pi", "zeta"]
    spec = {"name": "collide", "inputs": {n: {} for n in names},
            "steps": {"y": " + ".join(f"{n}**2" for n in names)}}  # fmt: skip
    module = symgrad.compile(spec)
    point = {n: float(i + 1) for i, n in enumerate(names)}
    grads = module.grad(**point)
    assert [getattr(grads, n) for n in names] == [2.0 * v for v in point.values()]


def test_pi_is_a_constant_unless_it_is_an_input():
    module = symgrad.compile(
        {"name": "circle", "inputs": {"r": {}}, "steps": {"A": "pi*r**2"}}
    )
    assert module.grad(r=2.0).r == pytest.approx(4 * np.pi, rel=1e-15)


def test_backward_is_a_vector_jacobian_product():
    module = symgrad.compile({"name": "vjp", "inputs": {"x": {}, "w": {}},
                              "steps": {"y": "sin(w*x)"}})  # fmt: skip
    x = np.linspace(-1, 1, 5)
    y, tape = module.forward(x=x, w=0.7)
    dy = np.arange(5.0)
    grads = module.backward(tape, dy)
    np.testing.assert_allclose(grads.x, dy * 0.7 * np.cos(0.7 * x), rtol=1e-14)
    assert grads.w == pytest.approx(np.sum(dy * x * np.cos(0.7 * x)), rel=1e-14)
    # re-running backward on the same tape gives the same result (no accumulation)
    assert module.backward(tape, dy).w == grads.w


def test_batched_scalar_spec_sums_gradients_over_the_batch():
    module = symgrad.compile({"name": "batch", "inputs": {"x": {}, "a": {}, "b": {}},
                              "steps": {"y": "a*x**2 + b"}})  # fmt: skip
    x = np.array([1.0, 2.0, 3.0])
    y, grads = module.value_and_grad(x=x, a=2.0, b=0.5)
    np.testing.assert_allclose(y, 2 * x**2 + 0.5)
    np.testing.assert_allclose(grads.x, 4 * x)
    assert grads.a == pytest.approx(np.sum(x**2))
    assert grads.b == pytest.approx(3.0)  # d sum(y) / db: one per batch element
    assert np.shape(grads.b) == ()


def test_reused_intermediate_accumulates_on_fan_out():
    spec = {"name": "fanout", "inputs": {"x": {}},
            "steps": {"u": "sin(x)", "y": "u*u + exp(u) + u"}}  # fmt: skip
    module = symgrad.compile(spec)
    x = 0.4
    expected = (2 * np.sin(x) + np.exp(np.sin(x)) + 1) * np.cos(x)
    assert module.grad(x=x).x == pytest.approx(expected, rel=1e-14)


def test_gradients_nobody_asked_for_are_not_computed():
    spec = {"name": "partial", "inputs": {"x": {}, "w": {}}, "wrt": ["w"],
            "steps": {"y": "exp(w*x) + sin(x)"}}  # fmt: skip
    compiled = build(from_dict(spec))
    ops = [a.op for a in compiled.unit.backward]
    assert "cos" not in ops  # d sin(x)/dx is only needed for the gradient of x


def test_subtraction_and_division_read_as_such():
    compiled = build(from_dict(
        {"name": "readable", "inputs": {"a": {}, "b": {}}, "steps": {"y": "a - b/2 - 1/a"}}))  # fmt: skip
    ops = [a.op for a in compiled.unit.forward]
    assert "neg" not in ops and "pow" not in ops
    assert ops.count("div") == 2 and ops.count("sub") == 2


def test_common_subexpressions_appear_once():
    compiled = build(from_dict(
        {"name": "cse", "inputs": {"x": {}, "y": {}},
         "steps": {"a": "sin(x*y) + x*y", "b": "cos(x*y)*sin(x*y)"}}))  # fmt: skip
    ops = [(a.op, a.args) for a in compiled.unit.forward]
    assert ops.count(("mul", ("x", "y"))) == 1
    assert len([1 for op, _ in ops if op == "sin"]) == 1
    compiled.unit.verify()
    compiled.backward.verify()


def test_unsupported_sympy_function_is_rejected():
    x = sp.Symbol("x")
    with pytest.raises(SpecError, match="unsupported function 'gamma'"):
        from_sympy(sp.gamma(x))


def test_long_chain_compiles_without_recursion():
    """A 5,000-step chain: no recursion anywhere in lowering, reverse or printing."""
    steps = {"h0": "sin(x)", **{f"h{i}": f"sin(h{i - 1})" for i in range(1, 5000)}}
    compiled = build(from_dict({"name": "chain", "inputs": {"x": {}}, "steps": steps}))
    expected_value, expected_grad = 0.5, 1.0
    for _ in range(5000):
        expected_grad *= np.cos(expected_value)
        expected_value = np.sin(expected_value)
    for target in ("numpy", "python"):
        module = import_source(source(compiled, target), "chain", compiled)
        value, grads = module.value_and_grad(x=0.5)
        assert value == pytest.approx(expected_value, rel=1e-12)
        assert grads.x == pytest.approx(expected_grad, rel=1e-9)


def test_a_module_compiled_in_memory_reads_as_its_file_does():
    """symgrad's own `from __future__ import annotations` does not leak into it."""
    spec = {"name": "sq", "inputs": {"x": {}}, "steps": {"y": "x**2"}}
    module = symgrad.compile(spec)
    assert module.Tape.__annotations__ == {"x": typing.Any, "y": typing.Any}
    assert module.Gradients.__annotations__ == {"x": typing.Any}


def test_check_gradients_reports_a_wrong_gradient():
    module = symgrad.compile(
        {"name": "sq", "inputs": {"x": {}}, "steps": {"y": "x**3"}}
    )
    report = symgrad.check_gradients(module, {"x": 1.5})
    assert report.ok and report.rows[0].numerical == pytest.approx(6.75, rel=1e-8)

    original = module.value_and_grad

    def broken(x):
        y, g = original(x)
        return y, g._replace(x=g.x + 1e-3)

    module.value_and_grad = broken
    report = symgrad.check_gradients(module, {"x": 1.5})
    assert not report.ok and "<-- worst" in str(report)


def test_exact_reference_on_a_spec_with_every_learner_function():
    spec = from_dict({"name": "learners", "inputs": {"x": {}, "w": {}},
                                   "steps": {"y": "sigmoid(w*x) + softplus(x - w) * relu(x)"}})  # fmt: skip
    module = symgrad.compile({"name": "learners", "inputs": {"x": {}, "w": {}},
                              "steps": {"y": "sigmoid(w*x) + softplus(x - w) * relu(x)"}})  # fmt: skip
    point = {"x": 0.7, "w": -1.3}
    value, exact = exact_gradient(spec, point)
    y, grads = module.value_and_grad(**point)
    assert y == pytest.approx(value, rel=1e-14)
    assert grads.x == pytest.approx(exact["x"], rel=1e-13)
    assert grads.w == pytest.approx(exact["w"], rel=1e-13)


def test_spec_calls_keep_the_form_written_and_fold_what_is_known():
    """Trigonometric calls are built as written (SymPy's rewrites of them cost
    assumption queries, most of a long chain's parsing); calls whose value the
    assumptions decide still fold, and numbers still evaluate."""
    written = {
        "name": "forms",
        "inputs": {"x": {}},
        "steps": {"u": "sin(-x)", "v": "Abs(exp(x))", "w": "cos(0)", "y": "u*v + w"},
    }
    spec = from_dict(written)
    x = sp.Symbol("x", real=True)
    steps = {s.name: s.expr for s in spec.steps}
    assert steps["u"] == sp.sin(-x, evaluate=False) and steps["u"] != -sp.sin(x)
    assert steps["v"] == sp.exp(x)
    assert steps["w"] == 1
    module = symgrad.compile(written)
    point = {"x": 0.7}
    exact_value, exact = exact_gradient(spec, point)
    value, grads = module.value_and_grad(**point)
    assert value == pytest.approx(exact_value, rel=1e-13)
    assert grads.x == pytest.approx(exact["x"], rel=1e-13)


def _layers(count: int, layer) -> sp.Expr:
    x = sp.Symbol("x")
    expr = x
    for _ in range(count):
        expr = layer(x, expr)
    return expr


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_a_sympy_expression_3073_levels_deep_compiles(target):
    """1,024 layers: a SymPy object handed to the API is trusted, held to no
    limit on depth; it is cut into steps, which SymPy can walk."""
    expr = _layers(1024, lambda x, e: x * sp.sin(e) + x)
    module = symgrad.compile(expr, target=target)
    assert len(module.__symgrad__.spec.steps) > 1
    expected = 1.3
    for _ in range(1024):
        expected = 1.3 * np.sin(expected) + 1.3
    assert module.forward(1.3)[0] == pytest.approx(expected, rel=1e-12)
    # Near a stable fixed point: the gradient neither vanishes nor explodes.
    assert symgrad.check_gradients(module, {"x": 1.3}).ok


def test_a_sympy_dag_whose_tree_is_exponential_compiles():
    """Each layer uses the one before twice: 64 layers print as 2**64 nodes.
    Each shared subexpression becomes a step, so nothing walks the tree."""
    module = symgrad.compile(_layers(64, lambda x, e: sp.sin(e) + x * e))
    names = [s.name for s in module.__symgrad__.spec.steps]
    assert names[:2] == ["v1", "v2"] and names[-1] == "y"
    expected = 0.3
    for _ in range(64):
        expected = np.sin(expected) + 0.3 * expected
    assert module.forward(0.3)[0] == pytest.approx(expected, rel=1e-12)
    assert symgrad.check_gradients(module, {"x": 0.3}).ok


def test_a_small_sympy_expression_stays_one_step():
    x, w = sp.symbols("x w")
    spec = from_sympy(sp.sin(w * x) * sp.sin(w * x) + sp.exp(sp.sin(w * x)))
    assert [(s.name, s.text) for s in spec.steps] == [
        ("y", "exp(sin(w*x)) + sin(w*x)**2")
    ]
