"""Higher order (issue 13): `symgrad check` checks every derivative a module
carries (jvp against `forward` along a direction, hvp and hessian against
the gradient); `symgrad explain --order 2` shows the Hessian; Newton's method
with conjugate gradient on generated HVPs."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import sympy

import symgrad
from symgrad import check, cli
from symgrad.check import DIGITS, check_gradients, sample_point
from symgrad.teach.explain import ExplainError, explain

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HIGHER = ["jvp", "hvp", "hessian"]


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_every_derivative_of_a_scalar_spec_is_checked(target):
    module = symgrad.compile(
        EXAMPLES / "udl_toy.yaml", target=target, derivatives=HIGHER
    )
    rng = np.random.default_rng(3)
    report = check_gradients(module, sample_point(module, rng), rng)
    assert report.verdict == "ok", report
    assert report.derivatives == ["gradient", *HIGHER]
    wrt = module.Gradients._fields
    kinds = [r.derivative for r in report.rows]
    assert kinds.count("jvp") == 2
    assert kinds.count("hvp") == 2 * len(wrt)
    assert kinds.count("hessian") == len(wrt) ** 2
    text = str(report)
    assert "jvp(d1)" in text and "hvp(d2).beta0" in text
    assert f"hessian.{wrt[0]}.{wrt[1]}" in text


def test_tensor_hvp_and_jvp_are_checked():
    module = symgrad.compile(
        EXAMPLES / "logistic_regression_batch.yaml", derivatives=["jvp", "hvp"]
    )
    rng = np.random.default_rng(0)
    report = check_gradients(module, sample_point(module, rng), rng)
    assert report.verdict == "ok", report
    assert "hvp(d1).w[2]" in str(report)


def _scaled(function, factor):
    def wrong(*args):
        result = function(*args)
        return type(result)(*(factor * g for g in result))

    return wrong


@pytest.mark.parametrize("factor", [1 + 1e-6, -1.0])
def test_a_wrong_hvp_is_a_mismatch(factor):
    module = symgrad.compile(EXAMPLES / "seed_hessian.yaml")
    module.hvp = _scaled(module.hvp, factor)  # hessian calls it too
    report = check_gradients(module, {"x1": 2.0, "x2": 3.0})
    assert report.verdict == "mismatch"
    verdicts = {(r.derivative, r.verdict) for r in report.rows}
    assert ("gradient", "ok") in verdicts
    assert ("hvp", "mismatch") in verdicts and ("hessian", "mismatch") in verdicts
    assert report.worst.derivative in ("hvp", "hessian")


def test_a_wrong_jvp_is_a_mismatch():
    module = symgrad.compile(EXAMPLES / "udl_toy.yaml", derivatives=["jvp"])
    jvp = module.jvp
    module.jvp = lambda *args: (jvp(*args)[0], jvp(*args)[1] * (1 + 1e-6))
    rng = np.random.default_rng(1)
    report = check_gradients(module, sample_point(module, rng), rng)
    assert {r.verdict for r in report.rows if r.derivative == "jvp"} == {"mismatch"}
    assert {r.verdict for r in report.rows if r.derivative == "gradient"} == {"ok"}


def test_cli_check_names_the_derivatives_and_fails_on_a_wrong_hvp(monkeypatch, capsys):
    spec = str(EXAMPLES / "seed_hessian.yaml")
    assert cli.main(["check", spec, "--points", "1"]) == 0
    out = capsys.readouterr().out
    assert "gradients, hvp, hessian match central finite differences" in out
    assert "hessian.x1.x1" in out

    def wrong_source(*args, **kwargs):
        text = symgrad.pipeline.source(*args, **kwargs)
        assert "dot_df_dx2 = 4 * v_x2" in text
        return text.replace("dot_df_dx2 = 4 * v_x2", "dot_df_dx2 = 4.00001 * v_x2")

    monkeypatch.setattr(cli, "source", wrong_source)
    assert cli.main(["check", spec, "--points", "1"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "hvp(d1).x2" in out


def test_explain_order_2_shows_seed_003s_second_derivatives(capsys):
    """Seed 003 ("Derivatives, Partial Derivatives, and Gradients"): for
    f = x1**3 + 2*x2**2 SymPy gives ∂²f/∂x1² = 6·x1 (12 at x1 = 2), ∂²f/∂x2² = 4."""
    spec = str(EXAMPLES / "seed_hessian.yaml")
    at = ["--at", "x1=2", "--at", "x2=3"]
    assert cli.main(["explain", spec, *at, "--order", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[lines.index(next(
        line for line in lines if line.startswith("Second derivatives")
    )) + 3:][:3]]  # fmt: skip
    assert rows == [["∂²f/∂x1²", "6*x1", "12"], ["∂²f/∂x1∂x2", "0", "0"],
                    ["∂²f/∂x2²", "4", "4"]]  # fmt: skip
    assert cli.main(["explain", spec, *at]) == 0
    assert "Second derivatives" not in capsys.readouterr().out


def test_explain_order_2_values_and_formats():
    e = explain(EXAMPLES / "udl_toy.yaml", {"x": 0.5}, order=2)
    wrt = e.wrt
    assert len(e.second) == len(wrt) * (len(wrt) + 1) // 2
    module = symgrad.compile(EXAMPLES / "udl_toy.yaml", derivatives=["hvp"])
    point = list(e.point.values())
    for r in e.second:
        v = [1.0 if w == r.w else 0.0 for w in wrt]
        assert r.value == pytest.approx(getattr(module.hvp(*point, *v), r.u), rel=1e-12)
    long = [r for r in e.second if r.formula is None]
    assert long and "(too long to show)" in e.text()
    seed = explain(EXAMPLES / "seed_hessian.yaml", {"x1": 2.0, "x2": 3.0}, order=2)
    assert "| ∂²f/∂x1² | `6*x1` | 12 |" in seed.markdown()


def test_explain_order_2_latex_has_the_hessian_entries_and_matrix():
    point = {"x1": 2.0, "x2": 3.0}
    seed = explain(EXAMPLES / "seed_hessian.yaml", point, order=2)
    latex = seed.latex()
    assert r"\frac{\partial^{2} f}{\partial x_{1}^{2}} &= 6 x_{1} &&= 12 \\" in latex
    assert r"\frac{\partial^{2} f}{\partial x_{1} \partial x_{2}} &= 0 &&= 0" in latex
    matrix = latex[latex.index(r"\begin{pmatrix}") : latex.index(r"\end{pmatrix}")]
    rows = [row.split("&") for row in matrix.splitlines()[1:]]
    values = [[float(x.strip(" \\")) for x in row] for row in rows]
    h = symgrad.compile(EXAMPLES / "seed_hessian.yaml").hessian(**point)
    assert values == [[h.x1.x1, h.x1.x2], [h.x2.x1, h.x2.x2]] == [[12, 0], [0, 4]]
    assert latex.count(r"\begin{align*}") == 2 == latex.count(r"\end{align*}")
    assert r"\begin{aligned}" in seed.markdown() and "H &=" in seed.markdown()
    assert "<td>∂²f/∂x1²</td><td><code>6*x1</code></td><td>12</td>" in seed.html()
    assert "pmatrix" not in explain(EXAMPLES / "seed_hessian.yaml", point).latex()


def test_explain_order_2_needs_scalar_inputs():
    with pytest.raises(ExplainError, match="scalar inputs; X has a shape"):
        explain(EXAMPLES / "logistic_regression_batch.yaml", order=2)


def _generated(name: str):
    """The checked-in module generated/<name>.py."""
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "generated" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _conjugate_gradient(product, g: np.ndarray, steps: int) -> np.ndarray:
    """Solve H p = -g by at most `steps` conjugate-gradient steps, H only as
    `product(v)` = H·v."""
    p = np.zeros_like(g)
    r = -g
    d = r.copy()
    for _ in range(steps):
        rr = r @ r
        if rr == 0.0:
            break
        hd = product(d)
        alpha = rr / (d @ hd)
        p += alpha * d
        r -= alpha * hd
        d = r + (r @ r) / rr * d
    return p


def test_newton_cg_on_seed_000_converges():
    """Newton's method, each step by conjugate gradient on the generated hvp, on
    the data of seed 000's NumPy cell ("Optional Lab - Derivatives",
    ../shared/seeds/000_*.txt: X 3 x 2, y = [0, 1, 0], from w = [0.1, 0.2],
    b = 0.1), with an L2 penalty (the three points are separable)."""
    m = _generated("newton_logistic")
    X = np.array([[0.1, 0.2], [0.4, 0.5], [0.5, 0.3]])  # noqa: N806 (the notebook's)
    y = np.array([0.0, 1.0, 0.0])
    lam = 0.1
    theta = np.array([0.1, 0.2, 0.1])  # w, then b

    def gradient(theta):
        g = m.grad(X, y, theta[:2], theta[2], lam)
        return np.append(g.w, g.b)

    norms = []
    for _ in range(12):
        g = gradient(theta)
        norms.append(np.linalg.norm(g))
        if norms[-1] < 1e-8:
            break

        def product(v, theta=theta):
            hv = m.hvp(X, y, theta[:2], theta[2], lam, v[:2], v[2])
            return np.append(hv.w, hv.b)

        theta = theta + _conjugate_gradient(product, g, steps=5)
    assert norms[-1] < 1e-8, norms
    assert len(norms) <= 10
    # quadratic convergence near the minimum: each norm about the square of the last
    assert norms[-1] < 10 * norms[-2] ** 2
    # the same minimum as SciPy's BFGS on the loss alone
    from scipy.optimize import minimize

    def loss(t):
        return m.forward(X, y, t[:2], t[2], lam)[0]

    found = minimize(loss, [0.1, 0.2, 0.1], jac=gradient, method="BFGS", tol=1e-12)
    np.testing.assert_allclose(theta, found.x, rtol=1e-6, atol=1e-7)


def test_jacobian_blocks_are_checked_and_a_wrong_one_is_a_mismatch():
    module = symgrad.compile(EXAMPLES / "polar_jacobian.yaml")
    report = check_gradients(module, {"r": 2.0, "theta": 0.5})
    assert report.verdict == "ok", report
    labels = [r.label for r in report.rows if r.derivative == "jacobian"]
    assert labels == [
        "jacobian.x.r",
        "jacobian.x.theta",
        "jacobian.y.r",
        "jacobian.y.theta",
    ]
    assert "jvp(d1).y" in str(report)
    jacobian = module.jacobian

    def wrong(*args):
        j = jacobian(*args)
        return j._replace(y=j.y._replace(theta=j.y.theta * (1 + 1e-6)))

    module.jacobian = wrong
    report = check_gradients(module, {"r": 2.0, "theta": 0.5})
    mismatches = [r.label for r in report.rows if r.verdict == "mismatch"]
    assert mismatches == ["jacobian.y.theta"]


def test_tensor_jacobian_is_checked():
    from test_forward_mode import LAYER

    module = symgrad.compile(LAYER, derivatives=["jacobian"])
    rng = np.random.default_rng(4)
    report = check_gradients(module, sample_point(module, rng), rng)
    assert report.verdict == "ok", report
    assert [r.label for r in report.rows if r.derivative == "jacobian"] == [
        f"jacobian.{o}.{u}" for o in ("s", "a") for u in ("x", "W", "b")
    ]


SATURATED = {
    "name": "saturated",
    "inputs": {"a": {}, "c": {}},
    "steps": {"y": "sigmoid((rsqrt(c) + a)**2)"},
}
"""At a = 0, c = 1/32 the sigmoid's argument is 32: its gradient is computed from
1 - sigmoid(32) ≈ 1.3e-14, which float64 rounds to about 1e-16 absolute, far
more than the Hessian (~1e-8 at most) moves it over a finite-difference step."""


def _exact_hessian(point):
    a, c = sympy.symbols("a c")
    y = 1 / (1 + sympy.exp(-((1 / sympy.sqrt(c) + a) ** 2)))
    at = {a: sympy.Rational(point["a"]), c: sympy.Rational(point["c"])}
    return {
        f"{u}.{v}": float(sympy.diff(y, u, v).subs(at).evalf(50))
        for u in (a, c)
        for v in (a, c)
    }


def _without_spec(module):
    """The module's functions alone: no spec, so no retry at more digits."""
    names = [n for n in dir(module) if not n.startswith("__")]
    return types.SimpleNamespace(**{n: getattr(module, n) for n in names})


@pytest.mark.parametrize("retry", [True, False])
def test_second_derivatives_near_cancellation_are_not_a_false_alarm(retry):
    # every hvp and hessian row was a "mismatch" with a bound of ~1e-22: the
    # gradient's rounding was taken to be eps times its own (tiny) value
    module = symgrad.compile(SATURATED, derivatives=[*HIGHER, "jacobian"])
    point = {"a": 0.0, "c": 1 / 32}
    report = check_gradients(module if retry else _without_spec(module), point)
    assert {r.verdict for r in report.rows} == {"ok"}, report
    assert {r.derivative for r in report.rows} > {"hvp", "hessian", "jvp"}
    exact = _exact_hessian(point)
    for r in report.rows:
        if r.derivative == "hessian":
            # symgrad's own values are right up to float64 cancellation
            assert r.analytical == pytest.approx(exact[r.name], rel=1e-3)


def test_the_retry_decides_what_float64_cannot(monkeypatch):
    monkeypatch.setattr(check, "STEPS", 3)  # too few steps for any float64 estimate
    module = symgrad.compile(SATURATED, derivatives=[*HIGHER, "jacobian"])
    point = {"a": 0.0, "c": 1 / 32}
    report = check_gradients(module, point)
    assert {r.verdict for r in report.rows} == {"ok"}, report
    assert {r.digits for r in report.rows} == {DIGITS}, report
    exact = _exact_hessian(point)
    for r in report.rows:
        if r.derivative == "hessian":
            assert r.numerical == pytest.approx(exact[r.name], rel=1e-12)


@pytest.mark.parametrize("retry", [True, False])
@pytest.mark.parametrize("factor", [1.1, -1.0])
def test_a_wrong_second_derivative_near_cancellation_is_a_mismatch(factor, retry):
    module = symgrad.compile(SATURATED, derivatives=HIGHER)
    module.hvp = _scaled(module.hvp, factor)  # hessian calls it too
    point = {"a": 0.0, "c": 1 / 32}
    report = check_gradients(module if retry else _without_spec(module), point)
    assert report.verdict == "mismatch"
    mismatches = {r.label for r in report.rows if r.verdict == "mismatch"}
    assert "hessian.c.c" in mismatches, report
    assert {"hvp(d1).c", "hvp(d2).c"} <= mismatches, report
    assert {r.verdict for r in report.rows if r.derivative == "gradient"} == {"ok"}
