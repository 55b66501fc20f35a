"""backward with several outputs (issue 13): `backward(tape, dx=1.0, dy=0.0)` for
`outputs: [x, y]` gives the gradients of L = dx·x + dy·y, so the VJP of every
output, and of any weighted sum of them, exists. Each output's VJP is compared
with `sympy.diff` of that output evaluated exactly and with central finite
differences of `forward`; a combination with the sum of the VJPs; `symgrad
check` has a row per output and finds a wrong rule on one output's path."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest

import symgrad
from symgrad import cli
from symgrad.check import check_gradients, sample_point
from symgrad.frontend.spec import with_derivatives
from symgrad.pipeline import build, import_source, load_spec, source
from tests.conftest import ROOT, exact_gradient
from tests.test_generated_modules import _ruff_clean

POLAR = ROOT / "examples" / "polar_jacobian.yaml"

# an output another output reads (u in L), and the other way round
CHAINED = {
    "name": "chained",
    "inputs": {"a": {}, "b": {}},
    "steps": {"u": "a*b + sin(a)", "L": "u**2 + exp(b)"},
    "outputs": ["u", "L"],
}
# three outputs; g does not depend on p, and one is a quotient of the others
THREE = {
    "name": "three",
    "inputs": {"p": {}, "q": {"positive": True}},
    "steps": {"f": "p**2*q", "g": "log(q)", "h": "f/(1 + g**2)"},
    "outputs": ["g", "f", "h"],
}
# d<output> taken by an input (dx), a keyword (del), a builtin (dir); L a step
NAMES = {
    "name": "names",
    "inputs": {"dx": {}, "w": {}},
    "steps": {"x": "dx*w", "el": "sin(w)", "ir": "x + el", "L": "x*el"},
    "outputs": ["x", "el", "ir", "L"],
}
SPECS = {
    "polar": (POLAR, {"r": 1.7, "theta": 0.4}),
    "chained": (CHAINED, {"a": 0.6, "b": -1.3}),
    "chained_reversed": ({**CHAINED, "outputs": ["L", "u"]}, {"a": 0.6, "b": -1.3}),
    "three": (THREE, {"p": -0.8, "q": 2.2}),
}


def _seeds(module) -> list[str]:
    """backward's upstream-gradient parameters, in the order of the outputs."""
    return list(inspect.signature(module.backward).parameters)[1:]


def _one_hot(module, k: int, weight=1.0) -> dict:
    return {s: weight if i == k else 0.0 for i, s in enumerate(_seeds(module))}


def _difference(module, point: dict, output: str, name: str, h: float = 1e-5):
    """∂output/∂name by central differences of forward (Richardson over h, h/2)."""

    def value(step):
        moved = {**point, name: point[name] + step}
        return float(getattr(module.forward(**moved)[1], output))

    def central(step):
        return (value(step) - value(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("key", SPECS)
def test_each_outputs_vjp_is_sympy_diff_exactly_and_finite_differences(key, target):
    source, point = SPECS[key]
    spec = load_spec(source)
    module = symgrad.compile(source, target=target)
    assert module.Outputs._fields == spec.outputs
    assert _seeds(module) == [f"d{o}" for o in spec.outputs]
    defaults = inspect.signature(module.backward).parameters
    assert [defaults[s].default for s in _seeds(module)] == [1.0] + [0.0] * (
        len(spec.outputs) - 1
    )
    _, tape = module.forward(**point)
    for k, output in enumerate(spec.outputs):
        vjp = module.backward(tape, **_one_hot(module, k))
        _, exact = exact_gradient(dataclasses.replace(spec, output=output), point)
        for name in spec.wrt:
            got = float(getattr(vjp, name))
            assert math.isclose(got, exact[name], rel_tol=1e-12, abs_tol=1e-14), (
                output,
                name,
                got,
                exact[name],
            )
            numerical = _difference(module, point, output, name)
            assert math.isclose(got, numerical, rel_tol=1e-7, abs_tol=1e-8), (
                output,
                name,
            )
    # the defaults are the first output's gradients, as value_and_grad gives them
    first = module.backward(tape)
    np.testing.assert_allclose(first, module.grad(**point), rtol=1e-13)


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("key", SPECS)
def test_a_combination_of_seeds_is_the_weighted_sum_of_the_vjps(key, target):
    source, point = SPECS[key]
    spec = load_spec(source)
    module = symgrad.compile(source, target=target)
    _, tape = module.forward(**point)
    weights = [1.5, -0.25, 2.0][: len(spec.outputs)]
    combined = module.backward(tape, *weights)
    exact = {name: 0.0 for name in spec.wrt}
    for w, output in zip(weights, spec.outputs, strict=True):
        _, grads = exact_gradient(dataclasses.replace(spec, output=output), point)
        for name in spec.wrt:
            exact[name] += w * grads[name]
    separate = [
        module.backward(tape, **_one_hot(module, k)) for k in range(len(weights))
    ]
    for name in spec.wrt:
        got = float(getattr(combined, name))
        assert math.isclose(got, exact[name], rel_tol=1e-12, abs_tol=1e-14), name
        summed = sum(
            w * float(getattr(v, name)) for w, v in zip(weights, separate, strict=True)
        )
        assert math.isclose(got, summed, rel_tol=1e-13, abs_tol=1e-14), name


def test_a_batch_vjp_sums_over_the_batch_even_for_an_output_that_ignores_it():
    # y ignores the batch of b: each sample has its own copy of y (as jvp and
    # jacobian say), so the summed gradient of y counts it once per sample
    spec = {
        "name": "batch",
        "inputs": {"a": {}, "b": {}},
        "steps": {"x": "a*b", "y": "3*a**2"},
        "outputs": ["x", "y"],
    }
    module = symgrad.compile(spec)
    a, b = 0.7, np.array([1.0, -2.0, 4.0])
    _, tape = module.forward(a, b)
    g = module.backward(tape, dx=0.0, dy=1.0)
    assert g.a == pytest.approx(3 * 6 * a) and g.a.shape == ()
    np.testing.assert_array_equal(g.b, np.zeros(3))
    dy = np.array([1.0, 0.5, -1.0])
    g = module.backward(tape, dx=2.0, dy=dy)
    assert g.a == pytest.approx(2.0 * b.sum() + 6 * a * dy.sum())
    np.testing.assert_allclose(g.b, 2.0 * a * np.ones(3))
    # the same as the sum of the per-sample backward passes
    per_sample = [
        module.backward(module.forward(a, bi)[1], dx=2.0, dy=di)
        for bi, di in zip(b, dy, strict=True)
    ]
    assert g.a == pytest.approx(sum(p.a for p in per_sample))


def test_a_tensor_spec_takes_an_array_seed_per_output():
    from test_forward_mode import LAYER

    module = symgrad.compile(LAYER)
    assert _seeds(module) == ["ds", "da"]
    rng = np.random.default_rng(5)
    x, W, b = rng.normal(size=3), rng.normal(size=(2, 3)), rng.normal(size=2)
    _, tape = module.forward(x, W, b)
    c = rng.normal(size=2)
    g = module.backward(tape, ds=0.0, da=c)
    # by hand: a = tanh(W x + b), so ∂(c·a)/∂z = c (1 - a²)
    dz = c * (1 - np.tanh(W @ x + b) ** 2)
    np.testing.assert_allclose(g.x, W.T @ dz, rtol=1e-13)
    np.testing.assert_allclose(g.W, np.outer(dz, x), rtol=1e-13)
    np.testing.assert_allclose(g.b, dz, rtol=1e-13)
    both = module.backward(tape, ds=0.5, da=c)
    s_only = module.backward(tape)
    for name in ("x", "W", "b"):
        np.testing.assert_allclose(
            getattr(both, name),
            0.5 * getattr(s_only, name) + getattr(g, name),
            rtol=1e-12,
        )
    report = check_gradients(module, {"x": x, "W": W, "b": b}, rng)
    assert report.verdict == "ok", report
    labels = [r.label for r in report.rows if r.derivative == "backward"]
    assert labels == ["backward(ds=1)", "backward(da=w)"]


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_check_has_a_backward_row_per_output(target):
    module = symgrad.compile(THREE, target=target)
    rng = np.random.default_rng(2)
    report = check_gradients(module, sample_point(module, rng), rng)
    assert report.verdict == "ok", report
    assert report.derivatives == ["gradient", "backward"]
    assert [r.label for r in report.rows if r.derivative == "backward"] == [
        "backward(dg=1)",
        "backward(df=1)",
        "backward(dh=1)",
    ]


def test_a_single_output_module_keeps_backward_tape_dy():
    module = symgrad.compile(ROOT / "examples" / "udl_toy.yaml")
    assert list(inspect.signature(module.backward).parameters) == ["tape", "dy"]
    assert not hasattr(module, "Outputs")
    report = check_gradients(module, sample_point(module, np.random.default_rng(0)))
    assert "backward" not in report.derivatives


def _wrong_rule(text: str) -> str:
    """polar's backward with sin' = sin on y's path (cos is right): only the VJP
    of y goes wrong, not value_and_grad (x alone) nor jvp."""
    right = "t4 = dL_dt1 * t0"
    assert right in text
    return text.replace(right, "t4 = dL_dt1 * t1")


def test_check_finds_a_wrong_rule_on_one_outputs_path():
    compiled = symgrad.compile(POLAR).__symgrad__
    module = import_source(_wrong_rule(source(compiled)), "polar", compiled)
    report = check_gradients(module, {"r": 1.7, "theta": 0.4})
    mismatches = [r.label for r in report.rows if r.verdict == "mismatch"]
    assert mismatches == ["backward(dy=1)"]


def test_cli_check_fails_on_a_wrong_backward_rule(monkeypatch, capsys):
    spec = str(POLAR)
    assert cli.main(["check", spec, "--points", "1"]) == 0
    out = capsys.readouterr().out
    assert "gradients, backward, jvp, jacobian match" in out
    assert "backward(dx=1)" in out and "backward(dy=1)" in out

    def wrong_source(*args, **kwargs):
        return _wrong_rule(source(*args, **kwargs))

    monkeypatch.setattr(cli, "source", wrong_source)
    assert cli.main(["check", spec, "--points", "1"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "backward(dy=1)" in out


def test_seed_names_never_take_a_users_name_a_keyword_or_a_builtin():
    for target in ("numpy", "python"):
        module = symgrad.compile(NAMES, target=target)
        assert _seeds(module) == ["dx_", "del_", "dir_", "dL"]
        _, tape = module.forward(0.5, 1.25)
        g = module.backward(tape, 0.0, 0.0, 0.0, 1.0)  # ∂(x·el)/∂w
        w, dx = 1.25, 0.5
        want = dx * math.sin(w) + dx * w * math.cos(w)
        assert g.w == pytest.approx(want, rel=1e-13)
        source = inspect.getsource(module)
        # L is the user's step: the weighted sum is J, its adjoints dJ_dv
        assert "dJ_dw" in source and "dL_dw" not in source
        assert "The gradients of J = dx_·x + del_·el + dir_·ir + dL·L" in source


# a step nothing reads: value_and_grad and jvp do not compute it (ruff's F841)
DEAD = {
    "name": "dead",
    "inputs": {"a": {}, "b": {}},
    "steps": {"u": "a*b", "v": "sin(a)", "y": "u*2"},
    "output": "y",
}


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_modules_with_several_outputs_are_ruff_clean(tmp_path, target):
    """value_and_grad computes only what the first output reads: an output after
    it that no step reads is not an unused variable there."""
    out = tmp_path / "out"
    out.mkdir()
    for spec in (THREE, CHAINED, NAMES, DEAD):
        for derivatives in ([], ["jvp", "hvp", "jacobian"]):
            compiled = build(with_derivatives(load_spec(spec), derivatives))
            name = f"{spec['name']}_{len(derivatives)}.py"
            (out / name).write_text(source(compiled, target))
    _ruff_clean(out, tmp_path)
