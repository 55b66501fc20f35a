"""Forward mode (jvp) and forward over reverse (hvp, hessian) against SymPy and
finite differences."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.frontend.spec import SpecError, from_dict, load
from symgrad.ops import OPS
from symgrad.pipeline import build, import_source, source
from tests.conftest import independent
from tests.test_registry import ELEMENTWISE, _constant_operands, _points, _spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCALAR_EXAMPLES = sorted(
    p.name for p in EXAMPLES.glob("*.yaml") if not any(i.shape for i in load(p).inputs)
)
TARGETS = ["numpy", "python"]


def _point(spec, rng: random.Random) -> dict[str, sp.Rational]:
    """An exact point: positive inputs where the spec says so, else in [-1, 1]."""
    return {
        i.name: sp.Rational(rng.randint(1 if i.positive else -32, 32), 32)
        for i in spec.inputs
    }


def _exact_hessian(spec, point) -> list[list[float]]:
    expr = spec.expanded()
    symbols = [
        spec.inputs[[i.name for i in spec.inputs].index(w)].symbol for w in spec.wrt
    ]
    values = {i.symbol: point[i.name] for i in spec.inputs}
    return [
        [float(h.xreplace(values)) for h in row]
        for row in sp.hessian(expr, symbols).tolist()
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_seed_hessian(target):
    """Seed 003 ("Derivatives, Partial Derivatives, and Gradients"): for
    f = x1**3 + 2*x2**2, ∂²f/∂x1² = 6·x1, ∂²f/∂x2² = 4, the mixed ones 0."""
    module = symgrad.compile(EXAMPLES / "seed_hessian.yaml", target=target)
    for x1, x2 in [(2.0, 3.0), (-0.5, 1.25), (0.0, -7.0)]:
        h = module.hessian(x1, x2)
        assert (h.x1.x1, h.x1.x2, h.x2.x1, h.x2.x2) == (6 * x1, 0.0, 0.0, 4.0)
        hv = module.hvp(x1, x2, 0.5, -2.0)
        assert (hv.x1, hv.x2) == (6 * x1 * 0.5, 4.0 * -2.0)


def test_seed_hessian_on_a_batch():
    module = symgrad.compile(EXAMPLES / "seed_hessian.yaml")
    x1, x2 = np.array([1.0, 2.0, -3.0]), np.array([0.5, 4.0, 1.0])
    h = module.hessian(x1, x2)
    np.testing.assert_array_equal(h.x1.x1, 6 * x1)
    np.testing.assert_array_equal(h.x2.x2, [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(h.x1.x2, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("target", TARGETS)
def test_udl_toy_hessian_against_sympy_hessian(target):
    spec = load(EXAMPLES / "udl_toy.yaml")
    module = symgrad.compile(spec.path, target=target, derivatives=["hessian"])
    rng = random.Random(1)
    for _ in range(3):
        point = _point(spec, rng)
        point["beta3"] = sp.Rational(3)  # log's argument stays positive
        want = _exact_hessian(spec, point)
        got = module.hessian(*(float(point[i.name]) for i in spec.inputs))
        for i, u in enumerate(spec.wrt):
            for j, w in enumerate(spec.wrt):
                assert getattr(getattr(got, u), w) == pytest.approx(
                    want[i][j], rel=1e-9, abs=1e-12
                )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("example", SCALAR_EXAMPLES)
def test_jvp_of_scalar_examples_against_sympy_diff(example, target):
    spec = load(EXAMPLES / example)
    module = symgrad.compile(spec.path, target=target, derivatives=["jvp", "hvp"])
    rng = random.Random(example)
    expr = spec.expanded()
    by_name = {i.name: i.symbol for i in spec.inputs}
    for _ in range(3):
        point = _point(spec, rng)
        values = {by_name[n]: v for n, v in point.items()}
        if not expr.xreplace(values).is_finite:
            continue
        direction = [sp.Rational(rng.randint(-8, 8), 8) for _ in spec.wrt]
        want = sum(
            sp.diff(expr, by_name[w]).xreplace(values) * d
            for w, d in zip(spec.wrt, direction, strict=True)
        )
        args = [float(point[i.name]) for i in spec.inputs]
        value, got = module.jvp(*args, *map(float, direction))
        if len(spec.outputs) > 1:  # expr is the first output (the others: jacobian)
            value, got = value[0], got[0]
        assert value == pytest.approx(float(expr.xreplace(values)), rel=1e-12)
        assert got == pytest.approx(float(want), rel=1e-9, abs=1e-12)
        # central finite differences along the direction
        h = 1e-6
        step = dict(zip(spec.wrt, map(float, direction), strict=True))

        def at(s, args=args, step=step):
            moved = [
                a + s * step.get(i.name, 0.0)
                for a, i in zip(args, spec.inputs, strict=True)
            ]
            return module.forward(*moved)[0]

        assert got == pytest.approx((at(h) - at(-h)) / (2 * h), rel=1e-5, abs=1e-6)
        # hvp against sympy's Hessian times the direction
        hessian = _exact_hessian(spec, point)
        hv = module.hvp(*args, *map(float, direction))
        for i, w in enumerate(spec.wrt):
            exact = sum(hessian[i][j] * float(d) for j, d in enumerate(direction))
            assert getattr(hv, w) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def _random_expression(rng: random.Random, symbols, depth: int) -> sp.Expr:
    if depth == 0:
        return rng.choice(symbols) + sp.Rational(rng.randint(-4, 4), 4)
    a = _random_expression(rng, symbols, depth - 1)
    b = _random_expression(rng, symbols, depth - 1)
    return rng.choice(
        [
            a + b,
            a * b,
            a - 2 * b,
            sp.sin(a) * b,
            sp.exp(a / 4),
            sp.tanh(a) + b**2,
            sp.log(1 + a**2),
            a / (2 + b**2),
            sp.cos(a * b),
        ]
    )


@pytest.mark.parametrize("seed", range(12))
def test_random_expressions_against_sympy(seed):
    rng = random.Random(seed)
    x, y, z = sp.symbols("x y z", real=True)
    expr = _random_expression(rng, [x, y, z], 3)
    if not expr.free_symbols:
        return
    wrt = sorted(expr.free_symbols, key=str)
    module = symgrad.compile(expr, wrt=wrt, derivatives=["jvp", "hvp", "hessian"])
    point = {s: sp.Rational(rng.randint(-16, 16), 16) for s in wrt}
    direction = [sp.Rational(rng.randint(-8, 8), 8) for _ in wrt]
    args = [float(point[s]) for s in wrt]
    _, tangent = module.jvp(*args, *map(float, direction))
    want = sum(
        sp.diff(expr, s).xreplace(point) * d
        for s, d in zip(wrt, direction, strict=True)
    )
    assert tangent == pytest.approx(float(want), rel=1e-9, abs=1e-12)
    exact = sp.hessian(expr, wrt).xreplace(point)
    got = module.hessian(*args)
    for i, u in enumerate(wrt):
        for j, w in enumerate(wrt):
            assert getattr(getattr(got, str(u)), str(w)) == pytest.approx(
                float(exact[i, j]), rel=1e-9, abs=1e-12
            )


@pytest.mark.parametrize("example", ["logistic_regression_batch.yaml", "mlp.yaml"])
def test_tensor_hvp_and_jvp_against_finite_differences(example):
    spec = load(EXAMPLES / example)
    module = symgrad.compile(spec.path, derivatives=["jvp", "hvp"])
    point = symgrad.check.sample_point(module, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    direction = {w: rng.normal(size=np.shape(point[w])) for w in spec.wrt}
    args = [point[i.name] for i in spec.inputs]
    tangents = [direction[w] for w in spec.wrt]
    h = 1e-6

    def moved(s):
        return [
            point[i.name] + s * direction[i.name]
            if i.name in direction
            else point[i.name]
            for i in spec.inputs
        ]

    value, tangent = module.jvp(*args, *tangents)
    assert value == pytest.approx(module.forward(*args)[0], rel=1e-12)
    numeric = (module.forward(*moved(h))[0] - module.forward(*moved(-h))[0]) / (2 * h)
    assert tangent == pytest.approx(numeric, rel=1e-5, abs=1e-6)
    products = module.hvp(*args, *tangents)
    plus, minus = module.grad(*moved(h)), module.grad(*moved(-h))
    for w in spec.wrt:
        numeric = (np.asarray(getattr(plus, w)) - np.asarray(getattr(minus, w))) / (
            2 * h
        )
        assert np.shape(getattr(products, w)) == np.shape(point[w])
        np.testing.assert_allclose(getattr(products, w), numeric, rtol=1e-5, atol=1e-6)


def test_default_modules_carry_only_the_gradient():
    module = symgrad.compile(EXAMPLES / "udl_toy.yaml")
    assert not any(hasattr(module, f) for f in ("jvp", "hvp", "hessian"))


def test_tangent_names_do_not_take_a_users_name():
    spec = {
        "name": "clash",
        "inputs": {"x": {}, "dot_x": {}, "v_x": {}},
        "wrt": ["x"],
        "steps": {"y": "sin(x) * dot_x + v_x"},
        "output": "y",
        "derivatives": ["jvp", "hvp"],
    }
    module = symgrad.compile(spec, target="python")
    value, tangent = module.jvp(0.5, 2.0, 3.0, 1.0)
    assert tangent == pytest.approx(np.cos(0.5) * 2.0)
    assert module.hvp(0.5, 2.0, 3.0, 1.0).x == pytest.approx(-np.sin(0.5) * 2.0)


def _spec_error(tmp_path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load(path)
    return str(err.value)


SCALAR = "name: s\ninputs:\n  x: {}\nsteps:\n  y: x**3\noutput: y\n"


def test_unknown_derivative_names_file_and_line(tmp_path):
    message = _spec_error(tmp_path, SCALAR + "derivatives: [jvp, hesian]\n")
    assert "spec.yaml:7: error:" in message
    assert "did you mean 'hessian'" in message


def test_derivatives_must_be_a_list_of_names(tmp_path):
    message = _spec_error(tmp_path, SCALAR + "derivatives: {jvp: 1}\n")
    assert "spec.yaml:7" in message and "'derivatives' must be a list" in message


def _tensor_spec(step: str, derivative: str) -> dict:
    return {
        "name": "t",
        "inputs": {"w": {"shape": [3]}},
        "steps": {"y": step},
        "output": "y",
        "derivatives": [derivative],
    }


def test_hessian_of_a_tensor_spec_is_refused():
    with pytest.raises(SpecError, match="'hessian' needs scalar inputs"):
        from_dict(_tensor_spec("sum(w**2)", "hessian"))


def test_hvp_of_an_array_output_is_refused():
    with pytest.raises(SpecError, match="need a scalar output"):
        symgrad.compile(_tensor_spec("w**2", "hvp"))


def test_api_derivatives_are_checked():
    with pytest.raises(SpecError, match="unknown derivative 'jacobain'"):
        symgrad.compile(EXAMPLES / "udl_toy.yaml", derivatives=["jacobain"])


def test_cli_derivatives_flag(tmp_path):
    from symgrad.cli import main

    assert (
        main(
            [
                "compile",
                str(EXAMPLES / "softplus.yaml"),
                "-o",
                str(tmp_path),
                "--derivatives",
                "jvp,hvp",
            ]
        )
        == 0
    )
    text = (tmp_path / "softplus.py").read_text()
    assert (
        "\ndef jvp(" in text and "\ndef hvp(" in text and "\ndef hessian(" not in text
    )


@pytest.mark.parametrize("target", TARGETS)
def test_the_branch_not_taken_never_poisons_a_tangent(target):
    """The tangent of where(c, a, b) is where(c, ȧ, ḃ): exp(1e4) on the branch not
    taken overflows (python: is not computed) but the tangents stay finite."""
    spec = {
        "name": "w",
        "inputs": {"x": {}, "a": {}},
        "steps": {"y": "where(x > 100, a*x, exp(a*x))"},
        "output": "y",
        "derivatives": ["jvp", "hessian"],
    }
    module = symgrad.compile(spec, target=target)
    with np.errstate(over="ignore", invalid="ignore"):
        assert module.jvp(1e4, 1.0, 1.0, 0.5) == (1e4, 1.0 + 0.5 * 1e4)
        h = module.hessian(1e4, 1.0)
    assert (h.x.x, h.x.a, h.a.a) == (0.0, 1.0, 0.0)
    h = module.hessian(0.5, 2.0)
    e = np.exp(1.0)
    assert (h.x.x, h.x.a, h.a.a) == pytest.approx((4 * e, (1 + 1.0) * e, 0.25 * e))


@pytest.mark.parametrize("example", ["udl_toy.yaml", "mlp.yaml", "seed_hessian.yaml"])
def test_forward_mode_programs_verify(example):
    from symgrad.frontend.spec import with_derivatives
    from symgrad.pipeline import build

    compiled = build(with_derivatives(load(EXAMPLES / example), ["jvp", "hvp"]))
    compiled.jvp.verify()
    compiled.hvp.verify()
    assert compiled.jvp.tangents[0][1] == f"dot_{compiled.jvp.output}"
    assert [w for w, _ in compiled.hvp.gradients] == list(compiled.spec.wrt)


# --------------------------------------------------------------------------- jacobian


def _expanded_outputs(spec) -> list[sp.Expr]:
    """Each output of `spec` as one expression of the inputs."""
    values: dict = {}
    for step in spec.steps:
        values[sp.Symbol(step.name, real=True)] = step.expr.xreplace(values)
    return [values[sp.Symbol(o, real=True)] for o in spec.outputs]


@pytest.mark.parametrize("target", TARGETS)
def test_polar_jacobian_against_sympy_jacobian(target):
    spec = load(EXAMPLES / "polar_jacobian.yaml")
    module = symgrad.compile(spec.path, target=target)
    r, theta = (i.symbol for i in spec.inputs)
    exact = sp.Matrix(_expanded_outputs(spec)).jacobian([r, theta])
    assert sp.simplify(exact.det()) == r  # the r of r dr dθ
    rng = random.Random(5)
    for _ in range(4):
        point = _point(spec, rng)
        values = {r: point["r"], theta: point["theta"]}
        got = module.jacobian(float(point["r"]), float(point["theta"]))
        assert got._fields == ("x", "y") and got.x._fields == ("r", "theta")
        for i, o in enumerate(spec.outputs):
            for j, u in enumerate(spec.wrt):
                want = float(exact[i, j].xreplace(values))
                assert getattr(getattr(got, o), u) == pytest.approx(
                    want, rel=1e-12, abs=1e-15
                )
        (x, y), (dx, dy) = module.jvp(float(point["r"]), float(point["theta"]), 0.5, 2)
        assert (x, y) == pytest.approx(
            [float(e.xreplace(values)) for e in _expanded_outputs(spec)], rel=1e-12
        )
        want = exact.xreplace(values) * sp.Matrix([sp.Rational(1, 2), 2])
        assert (dx, dy) == pytest.approx([float(w) for w in want], rel=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_random_several_outputs_against_sympy_diff(seed):
    rng = random.Random(100 + seed)
    x, y, z = sp.symbols("x y z", real=True)
    exprs = [_random_expression(rng, [x, y, z], 2) for _ in range(3)]
    spec = {
        "name": "several",
        "inputs": {"x": {}, "y": {}, "z": {}},
        "steps": {"a": str(exprs[0]), "b": str(exprs[1]), "c": f"a*b + {exprs[2]}"},
        "outputs": ["c", "a", "b"],
    }
    module = symgrad.compile(spec, derivatives=["jacobian"])
    outputs = _expanded_outputs(from_dict(spec))
    point = {s: sp.Rational(rng.randint(-16, 16), 16) for s in (x, y, z)}
    got = module.jacobian(*(float(point[s]) for s in (x, y, z)))
    for o, expr in zip(("c", "a", "b"), outputs, strict=True):
        for s in (x, y, z):
            want = float(sp.diff(expr, s).xreplace(point))
            entry = getattr(getattr(got, o), str(s))
            assert entry == pytest.approx(want, rel=1e-9, abs=1e-12), (o, s)


LAYER = {
    "name": "layer",
    "inputs": {"x": {"shape": [3]}, "W": {"shape": [2, 3]}, "b": {"shape": [2]}},
    "steps": {"z": "W @ x + b", "a": "tanh(z)", "s": "sum(a**2)"},
    "outputs": ["s", "a"],
}


def test_tensor_jacobian_blocks_against_finite_differences():
    module = symgrad.compile(LAYER, derivatives=["jacobian"])
    rng = np.random.default_rng(2)
    point = {
        "x": rng.normal(size=3),
        "W": rng.normal(size=(2, 3)),
        "b": rng.normal(size=2),
    }
    got = module.jacobian(**point)

    def outputs(args):
        s, tape = module.forward(**args)
        return {"s": s, "a": tape.a}

    h = 1e-6
    for u, value in point.items():
        for index in np.ndindex(value.shape):
            step = np.zeros(value.shape)
            step[index] = h
            plus = outputs({**point, u: value + step})
            minus = outputs({**point, u: value - step})
            for o in ("s", "a"):
                block = getattr(getattr(got, o), u)
                assert block.shape == np.shape(plus[o]) + value.shape
                numeric = (plus[o] - minus[o]) / (2 * h)
                np.testing.assert_allclose(
                    block[(...,) + index], numeric, rtol=1e-6, atol=1e-8
                )


def test_jacobian_of_one_output_is_per_input():
    module = symgrad.compile(
        {"name": "one", "inputs": {"x": {}, "y": {}}, "steps": {"f": "x**2*y"}},
        derivatives=["jacobian"],
    )
    assert not hasattr(module, "Outputs")
    assert tuple(module.jacobian(3.0, 2.0)) == (12.0, 9.0)


@pytest.mark.parametrize("outputs", [["v", "u"], ["u", "v"]])
@pytest.mark.parametrize("target", TARGETS)
def test_a_jacobian_entry_is_0_where_an_output_ignores_an_input(target, outputs):
    spec = {
        "name": "ignores",
        "inputs": {"x": {}, "y": {}},
        "steps": {"u": "x*y", "v": "sin(x)"},
        "outputs": outputs,
    }
    module = symgrad.compile(spec, target=target, derivatives=["jacobian"])
    j = module.jacobian(0.5, 3.0)
    # NumPy's sin may differ from math's in the last bit (NumPy 1.24 does)
    assert (j.v.x, j.v.y, j.u.x, j.u.y) == pytest.approx(
        (math.cos(0.5), 0.0, 3.0, 0.5), rel=1e-15, abs=0
    )
    if target == "numpy":  # a batch of y: every entry is a batch, v's too
        j = module.jacobian(0.5, np.array([1.0, 2.0, 3.0]))
        for o in j:
            for entry in o:
                assert np.shape(entry) == (3,)
        np.testing.assert_allclose(j.v.x, np.full(3, math.cos(0.5)), rtol=1e-15)


def test_outputs_must_be_distinct_steps(tmp_path):
    base = "name: m\ninputs: {x: {}}\nsteps: {a: x**2, b: sin(x)}\n"
    assert "twice" in _spec_error(tmp_path, base + "outputs: [a, a]\n")
    assert "not a step" in _spec_error(tmp_path, base + "outputs: [a, c]\n")
    assert "list of step names" in _spec_error(tmp_path, base + "outputs: []\n")


def test_jvp_takes_arguments_as_the_other_entry_points_do():
    # lists are arrays, and an output that ignores a batched input is a batch,
    # its tangent too (the _arrays and _batch lines of forward)
    spec = {"name": "b", "inputs": {"x": {}, "y": {}}, "steps": {"out": "sin(y)"}}
    module = symgrad.compile(spec, derivatives=["jvp", "hvp"])
    value, tangent = module.jvp([1.0, 2.0, 3.0], 0.5, 1.0, 2.0)
    np.testing.assert_allclose(value, np.full(3, math.sin(0.5)), rtol=1e-15)
    np.testing.assert_allclose(tangent, np.full(3, 2 * math.cos(0.5)), rtol=1e-15)
    assert module.forward([1.0, 2.0, 3.0], 0.5)[0].shape == value.shape
    product = module.hvp([1.0, 2.0], [0.5, 0.25], 1.0, 1.0)
    np.testing.assert_allclose(product.y, [-math.sin(0.5), -math.sin(0.25)])
    tensor = symgrad.compile(
        {"name": "t", "inputs": {"w": {"shape": [2]}}, "steps": {"s": "sum(w**2)"}},
        derivatives=["jvp"],
    )
    assert tensor.jvp([1.0, 2.0], np.array([1.0, 0.0])) == (5.0, 2.0)
    with pytest.raises(ValueError, match="w has shape"):
        tensor.jvp([1.0, 2.0, 3.0], np.zeros(3))


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_every_elementwise_op_jvp_and_hvp_against_mpmath(op):
    """jvp along d and hvp (H·d) of y = op(a0, a1, ...) against mpmath's numerical
    first and second derivatives of the op's independent meaning (30 digits)."""
    target = "python" if "python" in OPS[op].code else "numpy"
    if "scipy.special" in OPS[op].code[target].imports:
        pytest.importorskip("scipy")
    rng = np.random.default_rng(sorted(OPS).index(op))
    points = _points(op, rng)[:2]
    spec, names = _spec(op, points[0])
    compiled = build(replace(spec, derivatives=("jvp", "hvp")))
    module = import_source(source(compiled, target), spec.name, compiled)
    constants = _constant_operands(op)
    variable = [i for i in range(OPS[op].arity) if i not in constants]
    f = sp.lambdify(
        [sp.Symbol(n, real=True) for n in names],
        independent(spec.steps[0].expr),
        modules=[{"floor_step": mpmath.floor}, "mpmath"],
    )
    for point in points:
        x = [point[i] for i in variable]
        d = [0.5 + k for k in range(len(x))]  # a direction with unequal parts
        with mpmath.workdps(30):
            args = [mpmath.mpf(repr(v)) for v in x]

            def partial(orders, args=args):
                return mpmath.diff(f, args, orders)

            first = [
                partial(tuple(int(j == k) for j in range(len(x))))
                for k in range(len(x))
            ]
            second = [
                [
                    partial(tuple(int(j == k) + int(j == m) for j in range(len(x))))
                    for m in range(len(x))
                ]
                for k in range(len(x))
            ]
        _, tangent = module.jvp(*x, *d)
        want = sum(float(g) * v for g, v in zip(first, d, strict=True))
        assert tangent == pytest.approx(want, rel=1e-8, abs=1e-9), (op, point)
        product = module.hvp(*x, *d)
        for k, name in enumerate(names):
            want = sum(float(h) * v for h, v in zip(second[k], d, strict=True))
            got = getattr(product, name)
            assert got == pytest.approx(want, rel=1e-7, abs=1e-8), (op, point, name)
