"""`spec | module, point -> Explanation`: the chain rule of a spec, step by step.

`explain` evaluates a compiled spec at one point and lays out what a backprop
course writes on the board: the forward pass (each step, its expression and
its value), the backward pass (each adjoint ∂y/∂v, the chain-rule product it
comes from, the local derivative ∂u/∂v as a formula in the forward names and
its value), the gradients the generated module returns, the short closed
forms SymPy finds for some adjoints (∂L/∂Z = a - y for sigmoid and binary
cross-entropy), and the expression-swell line: how many operations the fully
expanded `sympy.diff` derivatives take against symgrad's backward pass.
With `order=2` (scalar inputs) it adds the Hessian: each ∂²y/∂u∂w, its
`sympy.diff` formula when short, and its value from the generated `hessian`.

The rows are built at the level of the spec's named steps (the notebook's
f0, h1, ...), with local derivatives from `sympy.diff` of each step, or, for
a one-step spec, at the level of the single operations the compiler emits,
with local derivatives from `symgrad.compiler.rules`. Values come from the generated
module's own tape; adjoints are accumulated from the local values (tensor
steps, which have no scalar local formula, take theirs from the generated
`backward`), and the final gradients are the module's. The result renders as text, Markdown,
LaTeX (an `align*` block in the notebook's notation), HTML (Jupyter) and
Graphviz DOT; `plot` draws a function, its derivative and finite differences.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
import types
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import sympy as sp
from sympy.printing.latex import LatexPrinter

from symgrad.check import (
    OutOfDomain,
    as_value,
    locals_on_return,
    parameters,
    sample_point,
)
from symgrad.codegen import numpy as numpy_target
from symgrad.codegen.render import environment
from symgrad.compiler.rewrite import recognised
from symgrad.compiler.rules import local_derivatives, operand_symbol, written_local
from symgrad.frontend.spec import (
    Input,
    Spec,
    Step,
    make_symbol,
    with_derivatives,
    with_wrt,
)
from symgrad.ops import BY_SYMPY, OPS, TensorOp
from symgrad.pipeline import (
    Compiled,
    build,
    import_source,
    load_spec,
    source,
    warn,
)
from symgrad.shapes import reduction_to

FORMATS = ("text", "markdown", "latex", "html")
LEVELS = ("auto", "steps", "ops")
UNAVAILABLE = "(tensor rule)"
"""Shown for a local derivative that has no scalar formula (matmul, sum, ...)."""

SHORT_FORM_OPS = 20
"""A simplified adjoint is shown when it has at most this many operations (and fewer
than the chain-rule product it simplifies)."""
SHORT_FORM_INPUT_LIMIT = 200
"""Adjoint expressions larger than this (tree nodes) are not simplified."""
SWELL_EXPANDED_LIMIT = 5_000
"""`sympy.diff` is not tried on an expanded output with more tree nodes than this."""
SWELL_DERIVATIVE_LIMIT = 2_000_000
"""`count_ops` is not run on a derivative with more tree nodes than this."""


class ExplainError(ValueError):
    """Bad input to explain, graph or plot (the command line exits with status 2)."""


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ForwardRow:
    """One forward step: `name = expression`, its value at the point."""

    name: str
    expression: str
    latex: str
    value: Any
    kind: str = "step"  # "step", or "temporary" for compiler-made names at op level
    operands: tuple[str, ...] = ()  # the names it uses


@dataclass(frozen=True)
class Term:
    """One chain-rule term of ∂out/∂v: ∂out/∂user · ∂user/∂v."""

    user: str
    local: sp.Expr | None  # ∂user/∂v over the forward names; None if unavailable
    local_value: Any
    value: Any  # ∂out/∂user · ∂user/∂v at the point
    text: str = ""  # a tensor step's local derivative as written (`Xᵀ·` if no formula)


@dataclass(frozen=True)
class BackwardRow:
    """The adjoint ∂out/∂name, the terms it sums, its value and maybe a short form."""

    name: str
    terms: tuple[Term, ...]
    value: Any
    short: sp.Expr | None = None
    is_input: bool = False


@dataclass(frozen=True)
class SecondRow:
    """One second derivative ∂²out/∂u∂w: `sympy.diff` of the expanded output (None
    when that is too long to show) and its value from the generated `hessian`."""

    u: str
    w: str
    formula: sp.Expr | None
    value: Any


@dataclass(frozen=True)
class Swell:
    """Operations in the fully expanded `sympy.diff` derivatives against symgrad's."""

    gradients: int
    symgrad_backward: int
    symgrad_forward: int
    sympy_ops: int | None  # None when not attempted (`reason` says why)
    reason: str = ""

    def line(self, output: str) -> str:
        ours = (
            f"symgrad's backward pass takes {self.symgrad_backward} operations "
            f"(reusing the values of its {self.symgrad_forward} forward operations)"
        )
        if self.sympy_ops is None:
            return f"Expression swell: {self.reason}; {ours}."
        what = (
            "a derivative" if self.gradients == 1 else f"{self.gradients} derivatives"
        )
        return (
            f"Expression swell: sympy.diff of {output} written out in the inputs gives "
            f"{what} of {self.sympy_ops} operations in all (count_ops, no common "
            f"subexpressions); {ours}."
        )


@dataclass(frozen=True, repr=False)
class Explanation:
    """The forward and backward passes of a spec at one point, in several formats."""

    name: str
    output: str
    level: str
    point: dict[str, Any]
    inputs: tuple[str, ...]
    wrt: tuple[str, ...]
    forward: tuple[ForwardRow, ...]
    backward: tuple[BackwardRow, ...]
    gradients: dict[str, Any]
    swell: Swell | None
    input_values: dict[str, Any] = field(default_factory=dict)
    second: tuple[SecondRow, ...] = ()
    """With `order=2`: the Hessian's entries on and above its diagonal."""

    # ---- look-ups

    def value(self, name: str) -> Any:
        """The forward value of a step (or an input)."""
        for row in self.forward:
            if row.name == name:
                return row.value
        if name in self.input_values:
            return self.input_values[name]
        raise _unknown("value", name, [r.name for r in self.forward])

    def adjoint(self, name: str) -> Any:
        """∂output/∂name at the point, as the backward table accumulates it."""
        for row in self.backward:
            if row.name == name:
                return row.value
        raise _unknown("adjoint", name, [r.name for r in self.backward])

    @property
    def short_forms(self) -> list[tuple[str, sp.Expr]]:
        return [(r.name, r.short) for r in self.backward if r.short is not None]

    # ---- output formats

    def render(self, fmt: str = "text") -> str:
        if fmt not in FORMATS:
            raise ExplainError(
                f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}"
            )
        return getattr(self, fmt)()

    def text(self) -> str:
        return _text(self)

    def markdown(self) -> str:
        return _template("markdown/explain.md.j2").render(_context(self))

    def latex(self) -> str:
        return _template("latex/explain.tex.j2").render(_context(self))

    def html(self) -> str:
        return _template("markdown/explain.html.j2").render(_context(self, html=True))

    def dot(self) -> str:
        return graph_dot(self)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:  # the table, in a console and as Jupyter's plain text
        return self.text()

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        return self.html()

    def _repr_latex_(self) -> str:
        return self.latex()

    def _repr_markdown_(self) -> str:
        return self.markdown()


class UnknownName(ExplainError, KeyError):
    """A value or adjoint the explanation has no row for (a KeyError too)."""

    def __str__(self) -> str:  # KeyError's would show the message quoted
        return str(self.args[0])


def _unknown(what: str, name: str, known: list[str]) -> UnknownName:
    return UnknownName(
        f"no {what} named {name!r}: the explanation's rows are {', '.join(known)}"
    )


# --------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class _Node:
    """A name the chain rule passes through, with what it is made of."""

    name: str
    expr: sp.Expr  # its definition over the symbols of earlier names
    text: str
    operands: tuple[str, ...]  # names it uses, in order
    locals: dict[str, sp.Expr | None]  # operand -> ∂name/∂operand
    kind: str = "step"
    texts: dict[str, str] = field(default_factory=dict)  # as `Term.text`
    step: Step | None = None  # a spec's step that has tensor operations


def explain(
    target: Any,
    at: dict[str, Any] | None = None,
    *,
    level: str = "auto",
    seed: int = 0,
    swell: bool = True,
    order: int = 1,
    wrt: Any = None,
) -> Explanation:
    """Explain the chain rule of `target` at the point `at`.

    `target` is a spec (a path, a dict, a `Spec`, a SymPy expression) or a
    module made by `symgrad.compile`. `at` adds to (and overrides) the spec's
    own `at:` point; inputs missing from both are sampled
    inside the function's domain (reproducibly, from `seed`). `level` is
    "steps" (the spec's named steps), "ops" (every single operation) or
    "auto" (steps, unless the spec is one step of several operations).
    `order=2` adds the Hessian table (scalar inputs only). `wrt` (names or
    symbols) chooses the inputs differentiated, as `symgrad.compile`'s does.
    """
    if order not in (1, 2):
        raise ExplainError(f"unknown order {order!r}; choose 1 or 2")
    if level not in LEVELS:
        raise ExplainError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}")
    compiled, module = _compiled_module(target, wrt)
    spec = compiled.spec
    point = _point(module, spec, {**spec.point, **(at or {})}, seed)  # at: by default
    args = {n: as_value(v) for n, v in point.items()}
    try:
        with np.errstate(divide="raise", over="raise", invalid="raise"):
            values = locals_on_return(module.forward, **args)
            _, grads = module.value_and_grad(**args)
    except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError) as err:
        raise ExplainError(
            f"the function is not defined at that point ({err})"
        ) from None
    tape = values["tape"]
    values.update(tape._asdict())
    emitted = _backward_locals(module, tape)

    if level == "auto":
        one_step_of_several_ops = (
            len(spec.steps) == 1 and len(compiled.backward.forward) > 1
        )
        level = "ops" if one_step_of_several_ops else "steps"
    nodes = _op_nodes(compiled) if level == "ops" else _step_nodes(spec, values)
    forward = tuple(
        ForwardRow(
            n.name,
            n.text,
            _latex(n.expr),
            values.get(n.name),
            n.kind,
            n.operands,
        )
        for n in nodes
    )
    backward = _backward(nodes, spec, values)
    names = dict(compiled.backward.adjoints)
    backward = _fill_from_module(backward, names, emitted, grads._asdict())
    return Explanation(
        name=spec.name,
        output=spec.output,
        level=level,
        point=point,
        inputs=tuple(i.name for i in spec.inputs),
        wrt=tuple(spec.wrt),
        forward=forward,
        backward=backward,
        gradients=dict(grads._asdict()),
        swell=swell_count(compiled) if swell else None,
        input_values={i.name: values.get(i.name) for i in spec.inputs},
        second=_second_derivatives(compiled, args) if order == 2 else (),
    )


def _second_derivatives(compiled: Compiled, args: dict[str, Any]) -> tuple:
    """∂²out/∂u∂w for u before or equal to w in `wrt`: the formula from `sympy.diff`
    of the expanded output when it is short, the value from the generated `hessian`."""
    spec = compiled.spec
    shaped = [i.name for i in spec.inputs if i.shape]
    if shaped:
        raise ExplainError(
            f"order 2 explains specs with scalar inputs; {shaped[0]} has a shape "
            f"(compile it with derivatives: [hvp] for H·v)"
        )
    if "hessian" not in spec.derivatives:
        compiled = build(with_derivatives(spec, [*spec.derivatives, "hessian"]))
    module = import_source(source(compiled), spec.name, compiled)
    with np.errstate(all="ignore"):
        hessian = module.hessian(**args)
    expanded = spec.expanded()
    small = _tree_size(expanded) <= SWELL_EXPANDED_LIMIT
    symbols = {i.name: i.symbol for i in spec.inputs}
    rows = []
    for k, u in enumerate(spec.wrt):
        for w in spec.wrt[k:]:
            formula = sp.diff(expanded, symbols[u], symbols[w]) if small else None
            if formula is not None and sp.count_ops(formula) > SHORT_FORM_OPS:
                formula = None
            rows.append(SecondRow(u, w, formula, getattr(getattr(hessian, w), u)))
    return tuple(rows)


def _backward_locals(module: types.ModuleType, tape: Any) -> dict[str, Any]:
    """The local variables of the generated `backward` (dy = 1) when it returns.

    These are the adjoints exactly as the emitted code computes them (`dL_dz`),
    read where the table's own products are not available (tensor steps).
    """
    try:
        with np.errstate(all="ignore"):
            return locals_on_return(module.backward, tape)
    except Exception:
        return {}


def _fill_from_module(
    rows: tuple[BackwardRow, ...],
    names: dict[str, Any],
    emitted: dict[str, Any],
    gradients: dict[str, Any],
) -> tuple[BackwardRow, ...]:
    """Adjoint values the chain-rule products could not give, from the generated code."""
    filled = []
    for row in rows:
        if row.value is None:
            value = gradients.get(row.name) if row.is_input else None
            if value is None:
                value = emitted.get(names.get(row.name))
            row = replace(row, value=value)
        filled.append(row)
    return tuple(filled)


def _compiled_module(target: Any, wrt: Any = None) -> tuple[Compiled, types.ModuleType]:
    if isinstance(target, Explanation):
        raise ExplainError("already an explanation")
    if isinstance(target, types.ModuleType | Compiled):
        compiled = getattr(target, "__symgrad__", target)
        if not isinstance(compiled, Compiled):
            raise ExplainError(
                f"module {target.__name__!r} was not made by symgrad.compile "
                "(it has no __symgrad__)"
            )
        if wrt is not None and with_wrt(compiled.spec, wrt).wrt != compiled.spec.wrt:
            raise ExplainError(
                f"{compiled.spec.name} was compiled with wrt={list(compiled.spec.wrt)}; "
                "compile it again with the wrt you want, or explain the spec"
            )
        if isinstance(target, types.ModuleType):
            return compiled, target
    else:
        if isinstance(target, Spec):
            spec = target if wrt is None else with_wrt(target, wrt)
        else:
            spec = load_spec(target, wrt)
        compiled = build(spec)
        warn(compiled, stacklevel=3)  # _compiled_module, explain, the user
    return compiled, import_source(source(compiled), compiled.spec.name, compiled)


def _point(
    module: types.ModuleType, spec: Spec, at: dict[str, Any] | None, seed: int
) -> dict[str, Any]:
    fixed = dict(at or {})
    names = parameters(module)
    unknown = [n for n in fixed if n not in names]
    if unknown:
        raise ExplainError(
            f"{spec.name} has no input {unknown[0]!r} (inputs: {', '.join(names)})"
        )
    if all(n in fixed for n in names):
        return {n: fixed[n] for n in names}
    try:
        return sample_point(module, np.random.default_rng(seed), fixed)
    except OutOfDomain as err:
        raise ExplainError(str(err)) from None


def _step_nodes(spec: Spec, values: dict[str, Any]) -> list[_Node]:
    """One node per named step; ∂step/∂v by `sympy.diff`, reusing the step's name
    (a tensor step's as a person writes it: `rules.written_local`)."""
    names = [i.name for i in spec.inputs] + [s.name for s in spec.steps]
    shapes = {name: np.shape(values[name]) for name in names if name in values}
    position = {i.name: k for k, i in enumerate(spec.inputs)}
    position.update({s.name: len(position) + k for k, s in enumerate(spec.steps)})
    known = {i.name for i in spec.inputs}
    nodes = []
    for step in spec.steps:
        by_name = {
            s.name: s for s in step.expr.free_symbols if isinstance(s, sp.Symbol)
        }
        operands = tuple(sorted((n for n in by_name if n in known), key=position.get))
        out = make_symbol(step.name)
        expr = recognised(step.expr)  # 1/(1 + exp(-Z)) differentiated as a sigmoid
        locals_: dict[str, sp.Expr | None] = {}
        texts: dict[str, str] = {}
        tensor_step = expr.has(TensorOp)
        for name in operands:
            if tensor_step:
                written = written_local(expr, by_name[name], out, shapes)
                locals_[name] = written and written[1]
                if written:
                    texts[name] = written[0]
                continue
            try:
                local = sp.diff(expr, by_name[name])
                if not (expr.is_Symbol or expr.is_number):
                    # d exp(f1)/d f1 reads h2; only whole subtrees are replaced,
                    # so d(1/w)/dw stays -1/w**2 rather than -J**2.
                    local = local.xreplace({expr: out})
                if local.has(sp.Derivative, sp.Subs):
                    local = None  # SymPy could only name it: a tensor operation
                locals_[name] = local
            except Exception:  # e.g. a tensor operation SymPy cannot differentiate
                locals_[name] = None
        text = " ".join(step.text.split())
        alone = step if tensor_step else None
        nodes.append(
            _Node(step.name, step.expr, text, operands, locals_, "step", texts, alone)
        )
        known.add(step.name)
    return nodes


def _op_nodes(compiled: Compiled) -> list[_Node]:
    """One node per operation of the forward program; local derivatives from `rules`."""
    steps = {s.name for s in compiled.spec.steps}
    nodes = []
    for a in compiled.backward.forward:
        operands = tuple(dict.fromkeys(x for x in a.args if isinstance(x, str)))
        symbols = [operand_symbol(x) for x in a.args]
        meaning = OPS[a.op].meaning
        # a tensor operation has no scalar meaning: shown as a call
        expr = (meaning or sp.Function(a.op))(*symbols)
        try:
            formulas = local_derivatives(a.op, a.args, a.name)
        except Exception:  # no formula for this operation: shown as UNAVAILABLE
            formulas = (None,) * len(a.args)
        locals_: dict[str, sp.Expr | None] = {}
        for arg, f in zip(a.args, formulas, strict=True):
            if not isinstance(arg, str) or not OPS[a.op].differentiable:
                continue
            if arg in locals_ and f is not None and locals_[arg] is not None:
                locals_[arg] = locals_[arg] + f  # the same name twice, e.g. x*x
            elif arg not in locals_:
                locals_[arg] = f
        nodes.append(
            _Node(
                a.name,
                expr,
                sp.sstr(expr),
                operands,
                locals_,
                "step" if a.name in steps else "temporary",
            )
        )
    return nodes


def _backward(
    nodes: list[_Node], spec: Spec, values: dict[str, Any]
) -> tuple[BackwardRow, ...]:
    """Accumulate the adjoints from the output back, numerically and symbolically."""
    out = spec.output
    depends = set(spec.wrt)
    for n in nodes:
        if any(v in depends and v in n.locals for v in n.operands):
            depends.add(n.name)
    if out not in depends:
        return ()
    terms: dict[str, list[Term]] = {}
    adjoint: dict[str, Any] = {out: 1.0}
    # The adjoints as formulas over the forward names (for the short forms);
    # None when too big.
    formula: dict[str, sp.Expr | None] = {out: sp.Integer(1)}
    size: dict[str, int] = {out: 1}
    rows = [BackwardRow(out, (), 1.0)]
    by_name = {n.name: n for n in nodes}
    for node in reversed(nodes):
        if node.name != out:
            if node.name not in terms:
                continue
            rows.append(_row(node.name, terms, adjoint, formula, size, values))
        g = adjoint[node.name]
        differentiated = [v for v in node.operands if v in depends and v in node.locals]
        products = _step_products(spec, node.step, differentiated, values, g)
        for v in differentiated:
            local = node.locals[v]
            local_value = _evaluate(local, values) if local is not None else None
            if node.step is not None:
                value = products.get(v)
            else:
                value = _times(g, local_value, values.get(v))
            text = node.texts.get(v, "")
            terms.setdefault(v, []).append(
                Term(node.name, local, local_value, value, text)
            )
            _accumulate(formula, size, v, node.name, local)
    for w in spec.wrt:
        if w in terms and w not in by_name:
            rows.append(_row(w, terms, adjoint, formula, size, values, is_input=True))
    return tuple(rows)


def _step_products(
    spec: Spec, step: Step | None, wrt: list[str], values: dict[str, Any], g: Any
) -> dict[str, Any]:
    """∂out/∂step · ∂step/∂v for each v in `wrt`, for a tensor step as written:
    the step alone compiled (its operands its inputs, at their values' shapes),
    its `backward` called with dy = g. Empty where that cannot be done."""
    if step is None or g is None or not wrt:
        return {}
    positive = {i.name for i in spec.inputs if i.positive}
    operands = sorted(
        {s.name for s in step.expr.free_symbols if isinstance(s, sp.Symbol)}
    )
    alone = Spec(
        name="step",
        inputs=tuple(Input(n, np.shape(values[n]), n in positive) for n in operands),
        wrt=tuple(wrt),
        steps=(step,),
        output=step.name,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = build(alone)
        module = import_source(source(compiled), alone.name, compiled)
        with np.errstate(all="ignore"):
            _, tape = module.forward(**{n: values[n] for n in operands})
            gradients = module.backward(tape, g)
    except Exception:  # noqa: BLE001 (a step that cannot stand alone keeps n/a)
        return {}
    return {v: _evaluate(sp.Symbol(v), gradients._asdict()) for v in wrt}


def _row(name, terms, adjoint, formula, size, values, *, is_input=False) -> BackwardRow:
    collected = tuple(terms.pop(name))
    total = _sum(t.value for t in collected)
    adjoint[name] = total
    return BackwardRow(
        name,
        collected,
        total,
        _short_form(formula.get(name), size.get(name, 0), collected),
        is_input,
    )


def _accumulate(formula, size, v: str, user: str, local: sp.Expr | None) -> None:
    upstream = formula.get(user)
    if upstream is None or local is None or formula.get(v, 0) is None:
        formula[v] = None
        return
    n = size.get(v, 0) + size[user] + _tree_size(local) + 1
    if n > SHORT_FORM_INPUT_LIMIT:
        formula[v] = None
        return
    formula[v] = formula.get(v, sp.Integer(0)) + upstream * local
    size[v] = n


def _short_form(expr: sp.Expr | None, size: int, terms: tuple[Term, ...]):
    """A simplified total ∂out/∂v, when short and shorter than the chain-rule product."""
    if expr is None or size > SHORT_FORM_INPUT_LIMIT:
        return None
    if len(terms) == 1 and expr == terms[0].local:
        return None  # a local derivative of the output itself, not a chain product
    try:
        cancelled = sp.cancel(expr)
        candidates = [cancelled, sp.factor_terms(cancelled), sp.factor(cancelled)]
    except (sp.PolynomialError, TypeError, ValueError, NotImplementedError):
        return None
    best = min(candidates, key=lambda e: (sp.count_ops(e), len(sp.sstr(e))))
    ops = sp.count_ops(best)
    if ops <= SHORT_FORM_OPS and ops < sp.count_ops(expr):
        return best
    return None


def _sum(values) -> Any:
    total: Any = 0.0
    for v in values:
        if v is None:
            return None
        total = total + v
    return total


def _times(g: Any, local: Any, target: Any) -> Any:
    """∂out/∂user · ∂user/∂v, summed back to v's shape when v was broadcast."""
    if g is None or local is None:
        return None
    try:
        product = g * local
    except (TypeError, ValueError):
        return None
    shape = np.shape(target) if target is not None else ()
    if np.shape(product) != shape:
        try:
            product = _sum_to(np.asarray(product, dtype=float), shape)
        except ValueError:
            return None
    return product


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> Any:
    """g, broadcast against the output, summed back to a value's shape."""
    axes = reduction_to(g.shape, shape)
    result = g if axes is None else np.sum(g, axis=axes[0]).reshape(shape)
    return float(result) if shape == () else result


@lru_cache(maxsize=1)
def _numeric() -> dict[str, Any]:
    """symgrad's functions (sigmoid, erf, ...) for lambdify, by name, computed as the
    generated code computes them (those whose module is not installed left out)."""
    functions = {}
    for cls, op in BY_SYMPY.items():
        if op.elementwise:
            try:
                functions[cls.__name__] = numpy_target.function(op.name)
            except ImportError:
                continue
    return functions


def _evaluate(expr: sp.Expr, values: dict[str, Any]) -> Any:
    """The value of a formula over forward names (its tensor operations computed
    by the code the generated module prints for them)."""
    if expr.has(TensorOp):
        values = dict(values)
        try:
            expr = _tensors_valued(expr, values)
        except (TypeError, ValueError):
            return None
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    missing = [s.name for s in symbols if s.name not in values]
    if missing:
        return None
    try:
        fn = _lambdify(tuple(symbols), expr)
        with np.errstate(all="ignore"):
            value = fn(*(values[s.name] for s in symbols))
    except (TypeError, ValueError, NameError, ZeroDivisionError, AttributeError):
        return None
    if np.ndim(value) == 0:
        return float(value)
    return np.asarray(value, dtype=float)


def _tensors_valued(expr: sp.Basic, values: dict[str, Any]) -> sp.Basic:
    """`expr` with each tensor operation a new name, its value added to `values`."""
    if isinstance(expr, TensorOp):
        operands = [_evaluate(x, values) for x in expr.operands]
        if any(x is None for x in operands):
            raise ValueError(f"no value for {expr}")
        name = f"_tensor{len(values)}"
        values[name] = numpy_target.function(expr.op, expr.params)(*operands)
        return sp.Symbol(name)
    if not expr.args or isinstance(expr, sp.Symbol):
        return expr
    return expr.func(*(_tensors_valued(x, values) for x in expr.args))


@lru_cache(maxsize=4096)
def _lambdify(symbols: tuple[sp.Symbol, ...], expr: sp.Expr):
    return sp.lambdify(symbols, expr, modules=[_numeric(), "numpy"])


# --------------------------------------------------------------------------- swell


def swell_count(compiled: Compiled) -> Swell:
    """count_ops of the fully expanded `sympy.diff` derivatives against symgrad's backward pass."""
    spec = compiled.spec
    ours = compiled.unit.backward_operations
    forward = len(compiled.unit.forward)

    def uncounted(reason: str) -> Swell:
        return Swell(len(spec.wrt), ours, forward, None, reason)

    if any(getattr(i, "shape", ()) for i in spec.inputs):
        return uncounted("the expanded sympy.diff count is made for scalar specs only")
    try:
        expanded = spec.expanded()
    except Exception as err:
        return uncounted(f"not expanded ({err})")
    nodes = _tree_size(expanded)
    if nodes > SWELL_EXPANDED_LIMIT:
        return uncounted(
            f"{spec.output} written out in the inputs is already a tree of {nodes} "
            "nodes, so sympy.diff of it was not attempted"
        )
    symbols = {s.name: s for s in expanded.free_symbols if isinstance(s, sp.Symbol)}
    total = 0
    for w in spec.wrt:
        if w not in symbols:
            continue
        try:
            derivative = sp.diff(expanded, symbols[w])
        except (TypeError, ValueError, NotImplementedError) as err:
            return uncounted(f"sympy.diff failed ({err})")
        size = _tree_size(derivative)
        if size > SWELL_DERIVATIVE_LIMIT:
            return uncounted(
                f"the sympy.diff derivative for {w} alone is a tree of {size} nodes"
            )
        total += int(sp.count_ops(derivative))
    return Swell(len(spec.wrt), ours, forward, total)


def _tree_size(expr: sp.Basic) -> int:
    """Nodes of `expr` written out as a tree (shared subexpressions counted each time)."""
    memo: dict[sp.Basic, int] = {}
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if ready or not e.args:
            memo[e] = 1 + sum(memo[a] for a in e.args)
        else:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if a not in memo)
    return memo[expr]


# --------------------------------------------------------------------------- formats


def fmt(value: Any) -> str:
    """A value as a learner reads it: 6 significant digits, arrays abbreviated."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if np.ndim(value) == 0:
        v = float(value)
        if v == 0:
            return "0"
        return f"{v:.6g}"
    text = np.array2string(
        np.asarray(value, dtype=float),
        precision=4,
        threshold=6,
        edgeitems=2,
        separator=", ",
        max_line_width=10**6,
    )
    return re.sub(r"\n\s*", " ", text)  # one line, to stay in its table cell


def _adj(out: str, v: str) -> str:
    return f"∂{out}/∂{v}"


def _chain(out: str, row: BackwardRow) -> str:
    if not row.terms:
        return "(seed)"
    return " + ".join(
        f"{_adj(out, t.user)}·{_adj(t.user, row.name)}" for t in row.terms
    )


def _locals(row: BackwardRow) -> str:
    return "; ".join(f"{_adj(t.user, row.name)} = {_local_text(t)}" for t in row.terms)


def _local_text(t: Term) -> str:
    if t.text:
        return t.text
    return UNAVAILABLE if t.local is None else sp.sstr(t.local)


def _local_values(row: BackwardRow) -> str:
    return "; ".join(fmt(t.local_value) for t in row.terms)


def _point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in point.items())


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _text(e: Explanation) -> str:
    out = e.output
    lines = [f"{e.name}: the chain rule at {_point_text(e.point)}", ""]
    what = "each step" if e.level == "steps" else "each single operation"
    lines.append(f"Forward pass: {what} and its value")
    lines += _table(
        ["step", "expression", "value"],
        [[r.name, r.expression, fmt(r.value)] for r in e.forward],
    )
    lines += [
        "",
        f"Backward pass: {_adj(out, 'v')} = sum of {_adj(out, 'u')}·{_adj('u', 'v')} "
        "over the steps u that use v",
    ]
    lines += _table(
        ["adjoint", "chain rule", "local derivative", "local value", "value"],
        [
            [
                _adj(out, r.name),
                _chain(out, r),
                _locals(r),
                _local_values(r),
                fmt(r.value),
            ]
            for r in e.backward
        ],
    )
    lines += ["", "Gradients (from the generated module)"]
    lines += _table(
        ["gradient", "value"],
        [[_adj(out, w), fmt(v)] for w, v in e.gradients.items()],
    )
    if e.short_forms:
        lines += ["", "Short forms (the chain-rule product, simplified by SymPy)"]
        lines += [f"  {_adj(out, n)} = {sp.sstr(f)}" for n, f in e.short_forms]
    if e.second:
        lines += ["", f"Second derivatives ({_SECOND})"]
        lines += _table(
            ["entry", "formula", "value"],
            [[_second(out, r), _second_formula(r), fmt(r.value)] for r in e.second],
        )
    if e.swell is not None:
        lines += ["", e.swell.line(out)]
    return "\n".join(lines) + "\n"


_SECOND = "sympy.diff of the output written out in the inputs; values from the generated hessian"


def _second(out: str, r: SecondRow) -> str:
    """∂²f/∂x1² on the diagonal, ∂²f/∂x1∂x2 off it."""
    if r.u == r.w:
        return f"∂²{out}/∂{r.u}²"
    return f"∂²{out}/∂{r.u}∂{r.w}"


def _second_latex(out: str, r: SecondRow) -> str:
    r"""\frac{\partial^{2} f}{\partial x_{1}^{2}} on the diagonal, ∂u ∂w off it."""
    u, w = _name_latex(r.u), _name_latex(r.w)
    below = rf"\partial {u}^{{2}}" if r.u == r.w else rf"\partial {u} \partial {w}"
    return rf"\frac{{\partial^{{2}} {_name_latex(out)}}}{{{below}}}"


def _hessian_matrix(second: tuple[SecondRow, ...]) -> list[list[str]]:
    """The Hessian's values as rows (symmetric: the rows give it on and above the
    diagonal)."""
    names = list(dict.fromkeys(r.u for r in second))
    value = {}
    for r in second:
        value[r.u, r.w] = value[r.w, r.u] = fmt(r.value)
    return [[value[u, w] for w in names] for u in names]


def _second_formula(r: SecondRow) -> str:
    return "(too long to show)" if r.formula is None else sp.sstr(r.formula)


class _LatexPrinter(LatexPrinter):
    """SymPy's LaTeX, with exp written as a function like sin and log (not e^x,
    which a step named e would make ambiguous)."""

    def _print_exp(self, expr, exp=None):
        arg = self._print(expr.args[0])
        tex = rf"\exp{{\left({arg} \right)}}"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


def _latex(expr: sp.Expr | None) -> str:
    if expr is None:
        return r"\text{(tensor rule)}"
    try:
        return _LatexPrinter().doprint(expr)
    except Exception:  # noqa: BLE001 (a printer gap must not break the table)
        return sp.sstr(expr)


def _text_latex(text: str) -> str:
    r"""A tensor step's local derivative (`Xᵀ·`) as LaTeX text: `\text{X}^{T} \cdot`."""
    marks = {"ᵀ": "}^{T}\\text{", "·": "} \\cdot \\text{", "⊙": "} \\odot \\text{"}
    latex = re.sub("[ᵀ·⊙]", lambda m: marks[m.group()], text)
    return rf"\text{{{latex}}}".replace(r"\text{}", "")


def _name_latex(name: str) -> str:
    return _LatexPrinter().doprint(sp.Symbol(name))


def _partial(top: str, bottom: str) -> str:
    return rf"\frac{{\partial {_name_latex(top)}}}{{\partial {_name_latex(bottom)}}}"


def _context(e: Explanation, html: bool = False) -> dict[str, Any]:
    """What the templates lay out: every cell already printed."""
    out = e.output
    backward = []
    align = [
        {
            "lhs": _name_latex(r.name),
            "rhs": r.latex,
            "value": fmt(r.value),
            "gap": k == len(e.forward) - 1,
        }
        for k, r in enumerate(e.forward)
    ]
    for r in e.backward:
        products = [
            _partial(out, t.user)
            if t.user == out
            else f"{_partial(out, t.user)} {_partial(t.user, r.name)}"
            for t in r.terms
        ]
        substituted = [_substituted(out, t) for t in r.terms]
        chain, rhs = " + ".join(products), " + ".join(substituted)
        if r.terms:
            direct = all(t.user == out for t in r.terms)
            align.append(
                {
                    "lhs": _partial(out, r.name),
                    "rhs": rhs if direct or chain == rhs else f"{chain} = {rhs}",
                    "value": fmt(r.value),
                    "gap": False,
                }
            )
        backward.append(
            {
                "name": r.name,
                "adjoint": _adj(out, r.name),
                "chain": _chain(out, r),
                "locals": _locals(r),
                "local_values": _local_values(r),
                "value": fmt(r.value),
            }
        )
    for n, f in e.short_forms:
        align.append(
            {
                "lhs": _partial(out, n),
                "rhs": _latex(f),
                "value": None,
                "gap": False,
            }
        )
    return {
        "name": e.name,
        "output": out,
        "level": e.level,
        "point": _point_text(e.point),
        "forward": [
            {
                "name": r.name,
                "latex_name": _name_latex(r.name),
                "expression": r.expression,
                "latex": r.latex,
                "value": fmt(r.value),
                "kind": r.kind,
            }
            for r in e.forward
        ],
        "backward": backward,
        "align": align,
        "gradients": [
            {
                "adjoint": _adj(out, w),
                "latex_adjoint": _partial(out, w),
                "value": fmt(v),
            }
            for w, v in e.gradients.items()
        ],
        "short_forms": [
            {
                "adjoint": _adj(out, n),
                "latex_adjoint": _partial(out, n),
                "formula": sp.sstr(f),
                "latex": _latex(f),
            }
            for n, f in e.short_forms
        ],
        "swell": e.swell.line(out) if e.swell else "",
        "second_note": _SECOND,
        "second": [
            {
                "entry": _second(out, r),
                "formula": _second_formula(r),
                "value": fmt(r.value),
                "latex_entry": _second_latex(out, r),
                "latex_formula": r"\text{(too long to show)}"
                if r.formula is None
                else _latex(r.formula),
            }
            for r in e.second
        ],
        "hessian": _hessian_matrix(e.second),
    }


def _substituted(out: str, t: Term) -> str:
    """∂out/∂user · ∂user/∂v with the local derivative written out."""
    if t.local is None and t.text:  # an operator: the adjoint where it goes in
        text = t.text
        if text.endswith(("·", "⊙")):
            before, after = text, ""
        else:
            before, _, after = text.rpartition("·")
            before, after = before, "·" + after
        return " ".join(
            part
            for part in (_text_latex(before), _partial(out, t.user), _text_latex(after))
            if part
        )
    if t.user == out:
        return _latex(t.local)
    if t.local == 1:
        return _partial(out, t.user)
    text = _latex(t.local)
    if t.local is not None and (
        isinstance(t.local, sp.Add) or t.local.could_extract_minus_sign()
    ):
        text = rf"\left({text}\right)"
    return f"{_partial(out, t.user)} \\cdot {text}"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The code generator's environment, escaping HTML and with a Markdown cell filter."""
    overlay = environment().overlay(
        autoescape=jinja2.select_autoescape(["html.j2"], default=False)
    )
    overlay.filters["cell"] = _markdown_cell
    return overlay


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


def _markdown_cell(text: str) -> str:
    """Text that stays inside one cell of a Markdown table."""
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- graph


def graph_dot(e: Explanation) -> str:
    """The computation graph as Graphviz DOT: values on nodes, values and adjoints on edges."""
    out = e.output
    adjoints = {r.name: r.value for r in e.backward}
    users: dict[str, list[tuple[str, Term | None]]] = {}
    for r in e.backward:
        for t in r.terms:
            users.setdefault(r.name, []).append((t.user, t))
    steps = {r.name: r for r in e.forward}
    used = {r.name: r.operands for r in e.forward}
    # a long chain reads top to bottom (the UDL toy: ten steps deep, three wide)
    depth: dict[str, int] = {}
    for r in e.forward:
        depth[r.name] = 1 + max((depth.get(v, 0) for v in r.operands), default=0)
    direction = "TB" if max(depth.values(), default=0) > 3 else "LR"
    lines = [
        f"digraph {_dot_id(e.name)} {{",
        f"  rankdir={direction};",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f'  label="{_dot_text(f"{e.name} at {_point_text(e.point)}")}";',
        "  labelloc=t;",
    ]
    needed = {v for operands in used.values() for v in operands}
    for name in e.inputs:
        if name not in needed:
            continue
        label = f"{name} = {fmt(e.point.get(name, e.input_values.get(name)))}"
        style = ""
        if name in adjoints:
            label += f"\n{_adj(out, name)} = {fmt(adjoints[name])}"
            style = ', style=filled, fillcolor="#e8f0fe"'
        lines.append(
            f'  {_dot_id(name)} [shape=ellipse, label="{_dot_text(label)}"{style}];'
        )
    for name, row in steps.items():
        label = f"{name} = {row.expression}\n= {fmt(row.value)}"
        if name in adjoints:
            label += f"\n{_adj(out, name)} = {fmt(adjoints[name])}"
        shape = "box, peripheries=2" if name == out else "box"
        style = ", style=dashed" if row.kind == "temporary" else ""
        lines.append(
            f'  {_dot_id(name)} [shape={shape}{style}, label="{_dot_text(label)}"];'
        )
    for user, operands in used.items():
        for v in operands:
            value = steps[v].value if v in steps else e.point.get(v)
            label = f"→ {fmt(value)}"
            term = next((t for u, t in users.get(v, []) if u == user), None)
            if term is not None:
                local = _local_text(term)
                label += (
                    f"\n← {fmt(term.value)}  ({_adj(out, user)}·{_adj(user, v)}, "
                    f"{_adj(user, v)} = {local})"
                )
            lines.append(
                f'  {_dot_id(v)} -> {_dot_id(user)} [label="{_dot_text(label)}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_id(name: str) -> str:
    return f'"{_dot_text(name)}"'


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_graph(e: Explanation, path: str | Path) -> list[Path]:
    """Write DOT to `path` (and SVG beside it when Graphviz's `dot` is on PATH); the files written.

    A path ending in .svg writes the .dot beside it and the SVG from it.
    """
    path = Path(path)
    dot_path = path.with_suffix(".dot") if path.suffix == ".svg" else path
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(e.dot(), encoding="utf-8")
    written = [dot_path]
    dot = shutil.which("dot")
    if dot is not None:
        svg = path if path.suffix == ".svg" else dot_path.with_suffix(".svg")
        subprocess.run([dot, "-Tsvg", str(dot_path), "-o", str(svg)], check=True)
        written.append(svg)
    return written


# --------------------------------------------------------------------------- plot


class PlotUnavailable(ExplainError):
    """matplotlib is not installed."""


def plot(
    target: Any,
    wrt: str,
    at: dict[str, Any] | None = None,
    path: str | Path | None = None,
    **options: Any,
) -> Path:
    """`plot_figure` written as a PNG to `path` (default `<name>_<wrt>.png`); its path."""
    figure = plot_figure(target, wrt, at, **options)
    name = _compiled_module(target)[0].spec.name
    target_path = Path(path) if path is not None else Path(f"{name}_{wrt}.png")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target_path, dpi=100)
    return target_path


def plot_figure(
    target: Any,
    wrt: str,
    at: dict[str, Any] | None = None,
    *,
    span: tuple[float, float] | None = None,
    points: int = 200,
    seed: int = 0,
) -> Any:
    """The output, its derivative with respect to `wrt`, and central differences,
    as a matplotlib Figure (needs matplotlib).

    Other inputs are fixed at `at` (missing ones sampled); the range defaults
    to the point's value of `wrt` ± 3, and a given value of `wrt` inside the
    range is marked by a vertical line. The derivative is not drawn where the
    function is not finite.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(
            "symgrad plot needs matplotlib: pip install matplotlib "
            '(in a checkout of symgrad: pip install ".[plot]")'
        ) from None
    compiled, _ = _compiled_module(target)
    spec = compiled.spec
    inputs = {i.name: i for i in spec.inputs}
    if wrt not in inputs:
        raise ExplainError(
            f"{spec.name} has no input {wrt!r} (inputs: {', '.join(inputs)})"
        )
    if inputs[wrt].shape:
        raise ExplainError(
            f"plot needs a scalar input; {wrt!r} has shape {inputs[wrt].shape}"
        )
    spec = replace(spec, wrt=(wrt,))
    compiled = build(spec)
    module = import_source(source(compiled), spec.name, compiled)
    point = _point(module, spec, {**spec.point, **(at or {})}, seed)
    center = float(point[wrt])
    lo, hi = span if span is not None else (center - 3.0, center + 3.0)
    if span is None and inputs[wrt].positive:
        lo = max(lo, 1e-3)
    if not lo < hi:
        raise ExplainError(f"empty range {lo} .. {hi}")
    xs = np.linspace(lo, hi, points)
    coarse = np.linspace(lo, hi, 21)
    others = {n: as_value(v) for n, v in point.items() if n != wrt}

    def f(x: np.ndarray) -> np.ndarray:
        y, _ = module.forward(**others, **{wrt: x})
        return np.broadcast_to(np.asarray(y, dtype=float), np.shape(x))

    with np.errstate(all="ignore"):
        ys = f(xs)
        _, tape = module.forward(**others, **{wrt: xs})
        dys = np.broadcast_to(
            np.asarray(getattr(module.backward(tape), wrt), dtype=float), xs.shape
        )
        dys = np.where(np.isfinite(ys), dys, np.nan)  # no slope where f is undefined
        h = 1e-4 * np.maximum(1.0, np.abs(coarse))
        fd = (f(coarse + h) - f(coarse - h)) / (2 * h)

    out = spec.output
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(xs, ys, label=f"{out}")
    ax.plot(xs, dys, label=f"∂{out}/∂{wrt} (symgrad backward)")
    ax.plot(coarse, fd, "g.", markersize=8, label="central difference")
    if at is not None and wrt in at and lo <= center <= hi:  # the point asked for
        ax.axvline(center, color="0.8", linewidth=0.8, zorder=0)
    ax.axhline(0, color="0.8", linewidth=0.8, zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_xlabel(wrt)
    fixed = {n: v for n, v in point.items() if n != wrt}
    title = f"{spec.name}: {out} and ∂{out}/∂{wrt}"
    if fixed:
        title += "\n" + textwrap.fill(f"at {_point_text(fixed)}", 80)
    ax.set_title(title, fontsize=9)
    shown = np.concatenate([ys, dys])
    shown = shown[np.isfinite(shown)]
    if shown.size:
        # Near a singularity the curves shoot off; keep the bulk of them in view.
        low, high = np.percentile(shown, [2, 98])
        pad = 0.1 * max(high - low, 1e-9)
        ax.set_ylim(min(low, 0) - pad, max(high, 0) + pad)
    ax.legend()
    figure.tight_layout()
    return figure
