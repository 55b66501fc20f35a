"""What Jupyter shows: a compiled module's code, the graph as SVG, the plot as PNG.

`symgrad.compile(...)` in a cell shows the generated code (highlighted when
Pygments is installed) and, when the spec names a point (`at:`), the
`explain` tables there. `symgrad.graph(...)` is the computation graph as
inline SVG, laid out top to bottom by symgrad itself (no Graphviz needed);
`symgrad.plot(...)` is the function, its derivative and finite differences
as an inline PNG. Nothing here is imported by the compiler.
"""

from __future__ import annotations

import html
import io
import linecache
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symgrad.teach.explain import Explanation, explain, fmt, graph_dot, plot_figure


def attach_display(module: types.ModuleType) -> types.ModuleType:
    """Give a module made by `symgrad.compile` Jupyter's rich display: its code,
    and the explain tables at the spec's own point when it has one (`at:`)."""
    module._repr_html_ = lambda: module_html(module)
    return module


def module_html(module: types.ModuleType) -> str:
    """The module's code as HTML, then the tables at the spec's point (if any)."""
    text = "".join(linecache.getlines(module.__file__))
    parts = [_code_html(text)]
    point = spec_point(module)
    if point:
        parts.append(explain(module, at=point, swell=False).html())
    return "\n".join(parts)


def spec_point(module: types.ModuleType) -> dict[str, Any] | None:
    """The point the spec names (its `at:` block), or None."""
    compiled = getattr(module, "__symgrad__", None)
    spec = getattr(compiled, "spec", None)
    return spec.point if spec is not None and spec.at else None


def _code_html(text: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return highlight(text, PythonLexer(), HtmlFormatter(noclasses=True))


# --------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class Graph:
    """The computation graph of an explanation: `.dot` (Graphviz), `.svg` (inline)."""

    explanation: Explanation

    @property
    def dot(self) -> str:
        return graph_dot(self.explanation)

    @property
    def svg(self) -> str:
        return graph_svg(self.explanation)

    def _repr_svg_(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return self.dot


def graph(target: Any, at: dict[str, Any] | None = None, **options: Any) -> Graph:
    """The computation graph of `target` at `at` (see `symgrad.explain` for both),
    shown inline as SVG in a notebook: each node its value and adjoint."""
    return Graph(explain(target, at, swell=False, **options))


CHAR = 7.2  # width of a character of the 12 px monospace font, in px
LINE = 16
GAP_X, GAP_Y = 24, 56


def graph_svg(e: Explanation) -> str:
    """The graph laid out top to bottom: each step one row below its last operand,
    each input one row above its first user; edges carry the gradient term."""
    out = e.output
    adjoints = {r.name: r.value for r in e.backward}
    operands = {r.name: r.operands for r in e.forward}
    layer: dict[str, int] = {}
    for r in e.forward:
        layer[r.name] = 1 + max((layer.get(v, 0) for v in r.operands), default=0)
    inputs = [n for n in e.inputs if any(n in ops for ops in operands.values())]
    for name in inputs:
        layer[name] = min(layer[u] for u, ops in operands.items() if name in ops) - 1
    values = {r.name: r.value for r in e.forward}
    labels = {}
    for name in inputs + [r.name for r in e.forward]:
        value = values.get(name, e.input_values.get(name, e.point.get(name)))
        lines = [f"{name} = {_short(value)}"]
        if name in adjoints:
            lines.append(f"∂{out}/∂{name} = {_short(adjoints[name])}")
        labels[name] = lines
    size = {
        n: (max(map(len, lines)) * CHAR + 16, len(lines) * LINE + 10)
        for n, lines in labels.items()
    }
    rows: dict[int, list[str]] = {}
    for name in labels:  # inputs first, then steps, in the spec's order
        rows.setdefault(layer[name], []).append(name)
    width = max(
        sum(size[n][0] for n in row) + GAP_X * (len(row) + 1) for row in rows.values()
    )
    row_height = max(h for _, h in size.values()) + GAP_Y
    top = min(rows)
    where: dict[str, tuple[float, float]] = {}  # node -> its centre
    for k, row in rows.items():
        x = (width - sum(size[n][0] for n in row) - GAP_X * (len(row) - 1)) / 2
        for name in row:
            w, _ = size[name]
            where[name] = (x + w / 2, 30 + (k - top) * row_height + row_height / 2)
            x += w + GAP_X
    height = 30 + len(range(top, max(rows) + 1)) * row_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" font-family="monospace" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        f'<text x="{width / 2:.0f}" y="18" text-anchor="middle">'
        f"{html.escape(e.name)}: values and adjoints ∂{html.escape(out)}/∂v</text>",
    ]
    terms = {(t.user, r.name): t for r in e.backward for t in r.terms}
    for user, ops in operands.items():
        for v in ops:
            if v not in where:
                continue
            (x1, y1), (x2, y2) = where[v], where[user]
            y1 += size[v][1] / 2
            y2 -= size[user][1] / 2
            parts.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                'stroke="#555" marker-end="url(#arrow)"/>'
            )
            term = terms.get((user, v))
            if term is not None and term.value is not None:
                parts.append(
                    f'<text x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2:.1f}" '
                    f'fill="#a33" font-size="10">← {_short(term.value)}</text>'
                )
    for name, (x, y) in where.items():
        w, h = size[name]
        is_input = name in inputs
        fill = "#e8f0fe" if is_input and name in adjoints else "#fff"
        rx = h / 2 if is_input else 3
        stroke = ' stroke-width="2.5"' if name == out else ""
        parts.append(
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" '
            f'height="{h}" rx="{rx:.1f}" fill="{fill}" stroke="#333"{stroke}/>'
        )
        for i, line in enumerate(labels[name]):
            ty = y - h / 2 + 5 + LINE * (i + 0.8)
            parts.append(
                f'<text x="{x:.1f}" y="{ty:.1f}" text-anchor="middle">'
                f"{html.escape(line)}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _short(value: Any) -> str:
    text = fmt(value)
    return text if len(text) <= 24 else text[:21] + "..."


# --------------------------------------------------------------------------- plot


@dataclass(frozen=True)
class Plot:
    """A plot of the output and its derivative: `.figure` (matplotlib), inline PNG."""

    figure: Any

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=100)
        return path


def plot(
    target: Any, wrt: str, at: dict[str, Any] | None = None, **options: Any
) -> Plot:
    """The output, its derivative along `wrt` and central differences (needs
    matplotlib), shown inline in a notebook; `.save(path)` writes a PNG."""
    return Plot(plot_figure(target, wrt, at, **options))
