"""What a notebook shows (issue 14, item 6): a compiled module's code, an
Explanation's table as its plain text, `symgrad.graph` as inline SVG (top to
bottom for long chains) and `symgrad.plot` as an inline PNG."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import symgrad
from symgrad.teach import notebook
from tests.conftest import ROOT

TOY = ROOT / "examples/udl_toy.yaml"
POINT = {
    "x": 2.3, "beta0": 1.0, "beta1": 2.0, "beta2": -3.0, "beta3": 0.4, "beta4": -0.3,
    "omega0": 0.1, "omega1": -0.4, "omega2": 2.0, "omega3": 3.0, "omega4": -0.5,
}  # fmt: skip
HAVE_PYGMENTS = importlib.util.find_spec("pygments") is not None


NO_POINT = ROOT / "examples/seed_hessian.yaml"  # names no `at:` point


def test_a_compiled_module_shows_its_code():
    mod = symgrad.compile(NO_POINT)
    shown = mod._repr_html_()
    assert "<table>" not in shown  # no tables at an unannounced random point
    if HAVE_PYGMENTS:
        assert "style=" in shown and "hessian" in shown
    else:
        assert shown.startswith("<pre>") and "def hessian" in shown


def test_without_pygments_the_code_is_plain_pre(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pygments(name, *args, **kwargs):
        if name.startswith("pygments"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pygments)
    shown = symgrad.compile(TOY)._repr_html_()
    assert shown.startswith("<pre>") and "dy_dbeta0 = dy_df0" in shown


def test_a_spec_point_adds_the_tables_there():
    mod = symgrad.compile(TOY)  # udl_toy.yaml's `at:` is seed 004's point
    assert notebook.spec_point(mod) == POINT
    assert notebook.spec_point(symgrad.compile(NO_POINT)) is None
    shown = notebook.module_html(mod)
    assert "<table>" in shown and "-0.645702" in shown  # ∂y/∂f0 at the notebook's point
    assert shown.index("dy_dbeta0") < shown.index("<table>")  # the code first


def test_an_explanation_reads_as_its_table():
    e = symgrad.explain(TOY, at=POINT, swell=False)
    assert repr(e) == e.text() == str(e)
    assert repr(e).startswith("udl_toy: the chain rule at x=2.3")


def test_graph_is_inline_svg_top_to_bottom():
    g = symgrad.graph(TOY, at=POINT)
    svg = ET.fromstring(g._repr_svg_())
    width, height = float(svg.get("width")), float(svg.get("height"))
    assert height > width  # a chain ten steps deep reads downwards
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "f0 = 1.23" in texts and "∂y/∂f0 = -0.645702" in texts
    assert "rankdir=TB" in g.dot  # the Graphviz form too
    short = symgrad.graph(ROOT / "examples/softplus.yaml", at={"x": 0.5})
    assert "rankdir=LR" in short.dot


def test_plot_is_an_inline_png_within_its_range():
    pytest.importorskip("matplotlib")
    p = symgrad.plot(ROOT / "examples/softplus.yaml", "x", span=(-2.0, 2.0), seed=3)
    assert p._repr_png_().startswith(b"\x89PNG")
    ax = p.figure.axes[0]
    assert ax.get_xlim() == (-2.0, 2.0)
    lines = ax.get_lines()  # f, f', the differences and y = 0: no line at a sampled x
    assert len(lines) == 4
    assert not any(np.ptp(np.asarray(x.get_xdata(), dtype=float)) == 0 for x in lines)
    marked = symgrad.plot(ROOT / "examples/softplus.yaml", "x", at={"x": 0.5})
    xs = [line.get_xdata() for line in marked.figure.axes[0].get_lines()]
    assert any(np.all(np.asarray(x) == 0.5) for x in xs)  # the point asked for


def test_plot_draws_no_derivative_where_the_function_is_undefined():
    pytest.importorskip("matplotlib")
    spec = {
        "name": "logx",
        "inputs": {"x": {}},
        "steps": {"y": "log(x)"},
        "output": "y",
    }
    p = symgrad.plot(spec, "x", span=(-1.0, 2.0))
    f, df = p.figure.axes[0].get_lines()[:2]
    undefined = ~np.isfinite(np.asarray(f.get_ydata(), dtype=float))
    assert undefined.any()
    assert np.all(np.isnan(np.asarray(df.get_ydata(), dtype=float)[undefined]))
