"""`symgrad explain`, `graph` and `plot`: the chain rule shown with the seeds' numbers.

The toy model's values are those printed by the UDL notebook CM20315
"Gradients I" (https://github.com/udlbook/udlbook/blob/main/CM20315_Gradients_I.ipynb,
seed 004); every local derivative shown is compared with `sympy.diff` of the
step it belongs to; logistic regression shows ∂L/∂Z = a - y (seed 000).
"""

from __future__ import annotations

import builtins
import re

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import cli
from symgrad.check import locals_on_return
from symgrad.frontend.spec import make_symbol
from symgrad.ops import OPS
from symgrad.pipeline import build, load_spec
from symgrad.teach.explain import (
    ExplainError,
    Explanation,
    explain,
    swell_count,
    write_graph,
)
from tests.conftest import EXAMPLES, ROOT

TOY = ROOT / "examples/udl_toy.yaml"
LOGISTIC = ROOT / "examples/logistic_regression.yaml"

NOTEBOOK_POINT = {
    "x": 2.3, "beta0": 1.0, "beta1": 2.0, "beta2": -3.0, "beta3": 0.4, "beta4": -0.3,
    "omega0": 0.1, "omega1": -0.4, "omega2": 2.0, "omega3": 3.0, "omega4": -0.5,
}  # fmt: skip
# The "true value" lines the notebook prints (%3.3f).
NOTEBOOK_FORWARD = {
    "f0": 1.230, "h1": 0.942, "f1": 1.623, "h2": 5.068,
    "f2": 7.137, "h3": 0.657, "f3": 2.372, "h4": 0.864,
}  # fmt: skip
NOTEBOOK_ADJOINTS = {
    "h3": -0.632, "f2": 0.476, "h2": 0.953, "f1": 4.830, "h1": -1.932, "f0": -0.646,
}  # fmt: skip
NOTEBOOK_GRADIENTS = {
    "omega4": 0.864, "beta3": -0.211, "omega3": -0.139, "beta2": 0.476,
    "omega2": 2.415, "beta1": 4.830, "omega1": 4.552, "beta0": -0.646,
}  # fmt: skip
AT_ARGS = [arg for k, v in NOTEBOOK_POINT.items() for arg in ("--at", f"{k}={v}")]


@pytest.fixture(scope="module")
def toy() -> Explanation:
    return explain(TOY, at=NOTEBOOK_POINT)


@pytest.fixture(scope="module")
def logistic() -> Explanation:
    return explain(LOGISTIC)


def _row_number(text: str, first_cell: str) -> float:
    """The last number on the table row that starts with `first_cell`."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == first_cell:
            return float(cells[-1])
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def test_forward_table_has_the_notebook_values(toy):
    text = toy.text()
    for name, expected in NOTEBOOK_FORWARD.items():
        assert round(toy.value(name), 3) == pytest.approx(expected, abs=1e-9), name
        assert round(_row_number(text, name), 3) == pytest.approx(expected), name
    assert "beta0 + omega0*x" in text and "log(f3)" in text


def test_backward_table_has_the_notebook_adjoints(toy):
    text = toy.text()
    for name, expected in NOTEBOOK_ADJOINTS.items():
        assert round(toy.adjoint(name), 3) == pytest.approx(expected), name
        assert round(_row_number(text, f"∂y/∂{name}"), 3) == pytest.approx(expected)
    for name, expected in NOTEBOOK_GRADIENTS.items():
        assert round(toy.gradients[name], 3) == pytest.approx(expected), name
        assert round(toy.adjoint(name), 3) == pytest.approx(expected), name
    # dydh4 = omega4 and dydf3 = dydh4 * (1/f3), as the notebook writes them
    assert "∂y/∂h4 = omega4" in text and "∂h4/∂f3 = 1/f3" in text
    assert re.search(r"∂y/∂f3 +∂y/∂h4·∂h4/∂f3 +∂h4/∂f3 = 1/f3", text)


def _is_scalar(path) -> bool:
    return not any(getattr(i, "shape", ()) for i in load_spec(path).inputs)


def test_adjoints_agree_with_the_generated_module():
    scalar = [p for p in EXAMPLES if _is_scalar(p)]
    assert len(scalar) >= 8
    for path in scalar:
        e = explain(path, swell=False)
        for name, value in e.gradients.items():
            assert e.adjoint(name) == pytest.approx(value, rel=1e-12, abs=1e-12)


WRITTEN_OUT = {
    "logistic_regression_batch",
    "mlp",
    "newton_logistic",
    "softmax_cross_entropy",
}


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if not _is_scalar(p)], ids=lambda p: p.stem
)
def test_tensor_specs_are_explained_without_failing(path):
    """Every row of a tensor spec has its value (computed from the steps as
    written), equal to the generated module's where it computes that adjoint."""
    e = explain(path)
    assert [r.name for r in e.forward] == [s.name for s in load_spec(path).steps]
    for name, value in e.gradients.items():
        np.testing.assert_allclose(e.adjoint(name), value, rtol=1e-10, atol=1e-12)
    module = symgrad.compile(path)
    _, tape = module.forward(**{k: np.asarray(v) for k, v in e.point.items()})
    emitted = locals_on_return(module.backward, tape)
    for row in e.backward:
        assert row.value is not None, row.name
        assert all(t.value is not None for t in row.terms), row.name
        if f"d{e.output}_d{row.name}" in emitted:  # the module's own name for it
            np.testing.assert_allclose(
                row.value, emitted[f"d{e.output}_d{row.name}"], rtol=1e-10, atol=1e-12
            )
    assert "scalar specs only" in e.text()
    if path.stem in WRITTEN_OUT:  # each local derivative as a person writes it
        assert "(tensor rule)" not in e.text()
    lines = e.text().splitlines()
    assert not any(line.startswith(" [") for line in lines)  # arrays stay on one row
    assert e.latex() and e.html() and e.dot()


def test_tensor_steps_are_differentiated_as_written():
    """The logistic regression's loss no longer reads `a` once compiled (it is
    rewritten on the logits), yet the table shows ∂L/∂a per example as seed 000
    writes it, and ∂z/∂w = X; the MLP's mean and products in the course's
    notation. Values against NumPy written by hand."""
    e = explain(ROOT / "examples" / "logistic_regression_batch.yaml", swell=False)
    X, y, w = (np.asarray(e.point[k], dtype=float) for k in ("X", "y", "w"))
    a = 1 / (1 + np.exp(-(X @ w + e.point["b"])))
    (term,) = _row(e, "a").terms
    assert sp.sstr(term.local) == "(1 - y)/(1 - a) - y/a"
    np.testing.assert_allclose(term.local_value, (1 - y) / (1 - a) - y / a)
    np.testing.assert_allclose(e.adjoint("a"), (1 - y) / (1 - a) - y / a)
    (term,) = _row(e, "w").terms
    assert term.local == make_symbol("X")
    np.testing.assert_allclose(term.local_value, X)
    np.testing.assert_allclose(e.adjoint("w"), X.T @ (a - y))
    assert "∂L/∂a = (1 - y)/(1 - a) - y/a" in e.text()

    e = explain(ROOT / "examples" / "mlp.yaml", swell=False)
    v = {r.name: np.asarray(r.value) for r in e.forward} | {
        k: np.asarray(x) for k, x in e.input_values.items()
    }
    dout = 2 * (v["out"] - v["Y"]) / v["out"].size
    np.testing.assert_allclose(e.adjoint("out"), dout)
    np.testing.assert_allclose(e.adjoint("hidden"), dout @ v["W2"].T)
    dt = dout @ v["W2"].T * (1 - v["hidden"] ** 2)
    np.testing.assert_allclose(e.adjoint("W1"), v["X"].T @ dt)
    text = e.text()
    for shown in (
        "∂L/∂out = 2*(out - Y)/size(out)",
        "∂out/∂hidden = ·W2ᵀ",
        "∂out/∂W2 = hiddenᵀ·",
        "∂hidden/∂W1 = Xᵀ·(1 - hidden**2)⊙",
    ):
        assert shown in text


def _row(e: Explanation, name: str):
    return next(r for r in e.backward if r.name == name)


def _local_formulas_match_sympy_diff(e: Explanation, definitions: dict) -> int:
    """Each ∂u/∂v shown equals sympy.diff of u's definition (symbolically, numerically)."""
    values = {r.name: r.value for r in e.forward} | dict(e.input_values)
    checked = 0
    for row in e.backward:
        for term in row.terms:
            definition, symbols = definitions[term.user]
            reference = sp.diff(definition, symbols[row.name])
            shown = term.local.xreplace({symbols[term.user]: definition})
            assert sp.simplify(shown - reference) == 0, (term.user, row.name)
            at = {s: values[s.name] for s in reference.free_symbols}
            assert float(reference.xreplace(at)) == pytest.approx(term.local_value)
            checked += 1
    return checked


def test_local_derivatives_are_sympy_diff_of_each_step(toy, logistic):
    for e, path, terms in ((toy, TOY, 18), (logistic, LOGISTIC, 6)):
        spec = load_spec(path)
        symbols = {i.name: i.symbol for i in spec.inputs}
        symbols |= {s.name: make_symbol(s.name) for s in spec.steps}
        definitions = {s.name: (s.expr, symbols) for s in spec.steps}
        assert _local_formulas_match_sympy_diff(e, definitions) == terms


def test_local_derivatives_at_the_level_of_single_operations():
    e = explain(TOY, at=NOTEBOOK_POINT, level="ops", swell=False)
    assert e.level == "ops" and "t0" in [r.name for r in e.forward]
    compiled = build(load_spec(TOY))
    definitions = {}
    for a in compiled.backward.forward:
        symbols = {
            x: sp.Symbol(x, real=True) for x in (a.name, *a.args) if isinstance(x, str)
        }
        operands = [symbols.get(x, x) if isinstance(x, str) else x for x in a.args]
        definitions[a.name] = (OPS[a.op].meaning(*operands), symbols)
    assert _local_formulas_match_sympy_diff(e, definitions) >= 20
    for name, expected in NOTEBOOK_ADJOINTS.items():
        assert round(e.adjoint(name), 3) == pytest.approx(expected)


def test_logistic_regression_shows_a_minus_y(logistic):
    a, y = sp.Symbol("a", real=True), sp.Symbol("y", real=True)
    shorts = dict(logistic.short_forms)
    assert sp.simplify(shorts["Z"] - (a - y)) == 0
    assert "∂L/∂Z = a - y" in logistic.text()
    assert r"\frac{\partial L}{\partial Z} &= a - y" in logistic.latex()
    # the value is a - y at the point, as the seed's NumPy cell computes dL_dZ
    assert logistic.adjoint("Z") == pytest.approx(
        logistic.value("a") - logistic.point["y"]
    )


def test_no_short_form_where_simplifying_gains_nothing(toy):
    assert toy.short_forms == []


def test_latex_is_an_align_block_in_the_notebook_notation(toy):
    latex = toy.latex()
    assert latex.startswith(r"\begin{align*}") and latex.rstrip().endswith(
        r"\end{align*}"
    )
    assert r"f_{0} &= \beta_{0} + \omega_{0} x &&= 1.23" in latex
    assert (
        r"\frac{\partial y}{\partial f_{3}} &= \frac{\partial y}{\partial h_{4}} "
        r"\frac{\partial h_{4}}{\partial f_{3}} = \frac{\partial y}{\partial h_{4}} "
        r"\cdot \frac{1}{f_{3}}" in latex
    )
    assert r"\frac{\partial y}{\partial h_{4}} &= \omega_{4}" in latex
    # rows are separated by \\ and the block does not end with an empty row
    assert not re.search(r"\\\\\s*\\end", latex)
    assert toy._repr_latex_() == latex


def test_markdown_and_html(toy):
    md = toy.markdown()
    assert "| `f3` | `beta3 + omega3*h3` | 2.37226 |" in md
    assert "$$\n\\begin{aligned}" in md and "\\end{aligned}\n$$" in md
    html = toy._repr_html_()
    assert html.count("<table>") == 3 and "∂y/∂f3" in html
    assert "<td>0.942489</td>" in html
    assert str(toy) == toy.text()


def test_html_is_escaped():
    spec = {
        "name": "lt",
        "inputs": {"x": {}},
        "steps": {"y": "where(x < 1, x, 2*x)"},
        "output": "y",
    }
    e = explain(spec, at={"x": 0.5}, swell=False)
    html = e.html()
    assert "x &lt; 1" in html and "x < 1" not in html


def test_swell_line(toy):
    swell = toy.swell
    assert swell.symgrad_backward == 14 and swell.gradients == 10
    assert swell.sympy_ops > 10 * swell.symgrad_backward
    assert f"{swell.sympy_ops} operations" in toy.text().splitlines()[-1]


def test_swell_of_a_16_layer_composition():
    steps = {"t1": "sin(a*x + c)"}
    steps |= {f"t{k}": f"sin(a*t{k - 1} + c)" for k in range(2, 17)}
    spec = {
        "name": "compose16",
        "inputs": {"x": {}, "a": {}, "c": {}},
        "wrt": ["a", "c", "x"],
        "steps": steps,
        "output": "t16",
    }
    swell = swell_count(build(load_spec(spec)))
    # sympy.diff grows with the square of the depth; the backward pass linearly
    assert swell.sympy_ops > 1000 and swell.symgrad_backward < 100
    assert swell.sympy_ops > 15 * swell.symgrad_backward


def test_expression_swell_is_not_attempted_on_a_huge_tree():
    # t_k = t_(k-1) * cos(t_(k-1)): each level doubles the expanded tree
    steps = {"t1": "x"} | {f"t{k}": f"t{k - 1}*cos(t{k - 1})" for k in range(2, 20)}
    spec = {"name": "square", "inputs": {"x": {}}, "steps": steps, "output": "t19"}
    swell = swell_count(build(load_spec(spec)))
    assert swell.sympy_ops is None and "not attempted" in swell.line("t19")


def test_point_is_sampled_and_reproducible(logistic):
    again = explain(LOGISTIC)
    assert again.point == logistic.point and set(again.point) == set(again.inputs)
    partial = explain(LOGISTIC, at={"y": 1.0}, swell=False)
    assert partial.point["y"] == 1.0


def test_sympy_expression_is_explained_operation_by_operation():
    w, b, x = sp.symbols("w b x")
    e = explain(sp.log(1 + sp.exp(w * x + b)), at={"w": 0.5, "b": 0.1, "x": 2.0})
    assert e.level == "ops"
    sig = 1 / (1 + np.exp(-(0.5 * 2.0 + 0.1)))
    assert e.gradients["w"] == pytest.approx(2.0 * sig)
    assert e.adjoint("w") == pytest.approx(2.0 * sig)


def test_explain_a_compiled_module_and_its_display():
    mod = symgrad.compile(str(TOY))
    e = symgrad.explain(mod, at=NOTEBOOK_POINT)
    assert round(e.adjoint("f0"), 3) == -0.646
    shown = mod._repr_html_()  # the code, then the tables at the spec's at: point
    assert "dy_dbeta0" in shown and "<table>" in shown and "-0.645702" in shown


def test_bad_input():
    with pytest.raises(ExplainError, match="no input 'q'"):
        explain(TOY, at={"q": 1.0})
    with pytest.raises(ExplainError, match="unknown format"):
        explain(TOY, at=NOTEBOOK_POINT, swell=False).render("pdf")


def test_cli_explain(capsys):
    assert cli.main(["explain", str(TOY), *AT_ARGS]) == 0
    out = capsys.readouterr().out
    assert "∂h4/∂f3 = 1/f3" in out and "Expression swell" in out
    assert round(_row_number(out, "∂y/∂f1"), 3) == 4.830
    assert cli.main(["explain", str(LOGISTIC), "--format", "latex"]) == 0
    assert r"\begin{align*}" in capsys.readouterr().out
    assert cli.main(["explain", str(TOY), "--at", "q=1"]) == 2
    assert "no input 'q'" in capsys.readouterr().err


def test_cli_graph(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert cli.main(["graph", str(TOY), *AT_ARGS, "-o", str(tmp_path / "g.dot")]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "udl_toy" {') and dot.rstrip().endswith("}")
    assert '"f3" -> "h4"' in dot and '"x" -> "f0"' in dot
    # forward value on the edge, and the adjoint flowing back along it
    edge = next(line for line in dot.splitlines() if '"f3" -> "h4"' in line)
    assert "→ 2.37226" in edge and "← -0.210769" in edge
    assert "no SVG" in capsys.readouterr().out
    assert cli.main(["graph", str(LOGISTIC)]) == 0
    assert '"Z" -> "a"' in capsys.readouterr().out


def test_graph_svg_when_graphviz_is_installed(tmp_path, toy):
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    written = write_graph(toy, tmp_path / "g.svg")
    assert [p.suffix for p in written] == [".dot", ".svg"]
    assert "<svg" in written[1].read_text()


def test_cli_plot_without_matplotlib(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert cli.main(["plot", str(TOY), "--wrt", "x"]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "softplus.png"
    argv = ["plot", str(ROOT / "examples/softplus.yaml"), "--wrt", "x", "-o", str(out)]
    assert cli.main(argv) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert cli.main(["plot", str(ROOT / "examples/softplus.yaml"), "--wrt", "z"]) == 2
    assert "no input 'z'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if not _is_scalar(p)], ids=lambda p: p.stem
)
def test_a_tensor_steps_written_local_derivative_gives_its_value(path):
    """Where a step with a scalar value (a loss) shows an elementwise local
    derivative, the adjoint times it is the value computed by compiling the
    step: the formula shown is the one used."""
    e = explain(path, swell=False)
    values = {r.name: r.value for r in e.forward} | dict(e.input_values)
    adjoint = {r.name: r.value for r in e.backward}
    for row in e.backward:
        for t in row.terms:
            if t.local is None or np.ndim(values[t.user]) or t.local_value is None:
                continue
            g = adjoint[t.user]
            expected = np.broadcast_to(
                g * np.asarray(t.local_value), np.shape(values[row.name])
            )
            np.testing.assert_allclose(t.value, expected, rtol=1e-9, atol=1e-12)
