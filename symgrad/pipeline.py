"""The compiler in one place: `Spec -> Programs -> source -> module`.

forward = lower(spec)
backward = dce(reverse(forward, seed="dy"))   # for backward(tape, dy)
unit = cancel(dce(reverse(forward, seed=1)))  # for value_and_grad: dy = 1 folded in,
                                              # adjoints simplified (a*(1-a)*... -> a - y)
"""

from __future__ import annotations

import functools
import gc
import linecache
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sympy as sp

from symgrad import spec as spec_module
from symgrad.ir import Program
from symgrad.lower import lower
from symgrad.optimize import cancel, dce
from symgrad.render import TARGETS, render
from symgrad.reverse import SEED, reverse
from symgrad.spec import Spec, SpecError


@dataclass(frozen=True)
class Compiled:
    """A spec and the two programs the generated module is printed from."""

    spec: Spec
    backward: Program
    unit: Program


def _gc_paused(function):
    """Run `function` with the cyclic garbage collector paused.

    Compiling allocates hundreds of thousands of SymPy objects and almost no
    garbage cycles; the collector's passes over them were ~18% of compiling a
    10,000-operation expression. Reference counting still frees everything.
    """

    @functools.wraps(function)
    def paused(*args, **kwargs):
        enabled = gc.isenabled()  # nested calls leave re-enabling to the outermost
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@_gc_paused
def build(spec: Spec) -> Compiled:
    forward = lower(spec)
    # dy = 1 folds into value_and_grad, unless the output of a tensor spec is an
    # array: then dy must have its shape (np.ones) for the matrix products.
    array_output = forward.tensor and forward.shapes()[forward.output] != ()
    unit_seed = SEED if array_output else 1
    memo: dict = {}  # local derivatives, shared by the two backward passes
    return Compiled(
        spec,
        dce(reverse(forward, SEED, memo)),
        cancel(dce(reverse(forward, unit_seed, memo))),
    )


@_gc_paused
def source(compiled: Compiled, target: str = "numpy", checked: str = "") -> str:
    """The generated module's text."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return render(compiled.spec, compiled.backward, compiled.unit, target, checked)


def load_spec(
    source_: Any, wrt: Any = None, inputs: Any = None, name: str | None = None
) -> Spec:
    """A Spec from a path, a dict, or a SymPy expression."""
    if isinstance(source_, str | Path) and not isinstance(source_, sp.Basic):
        return spec_module.load(source_)
    if isinstance(source_, dict):
        return spec_module.from_dict(source_)
    return spec_module.from_sympy(source_, wrt, inputs, name=name or "expr")


@_gc_paused
def import_source(
    text: str, name: str, compiled: Compiled | None = None
) -> types.ModuleType:
    """Execute generated code as a module object (not registered in sys.modules)."""
    filename = f"<symgrad:{name}>"
    module = types.ModuleType(name)
    module.__file__ = filename
    # Tracebacks and inspect.getsource show the generated lines.
    linecache.cache[filename] = (
        len(text),
        None,
        text.splitlines(keepends=True),
        filename,
    )
    exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 (our own generated code)
    module.__symgrad__ = compiled
    return module


@_gc_paused
def compile_module(
    source_: Any,
    wrt: Any = None,
    inputs: Any = None,
    *,
    target: str = "numpy",
    name: str | None = None,
) -> types.ModuleType:
    """Compile a spec (path, dict or SymPy expression) and import the result in memory.

    The module has `forward`, `backward`, `value_and_grad` and `grad`, and
    `__symgrad__` (the spec and programs it was printed from).
    """
    from symgrad.explain import attach_display  # explain imports this module

    with _recursion_for(source_):
        compiled = build(load_spec(source_, wrt, inputs, name))
        module = import_source(source(compiled, target), compiled.spec.name, compiled)
    return attach_display(module)


MAX_RECURSION = 50_000  # past this the C stack, not Python, would give out


@contextmanager
def _recursion_for(expr: Any):
    """Let SymPy walk a deeply nested part of an expression; if it cannot, a SpecError.

    A deep SymPy expression is cut into steps (spec.from_sympy), but what
    cannot be a step, a condition, is walked whole by SymPy's printing and
    lowering, which recurse once per level: the limit is raised for the
    duration, by the node count (an upper bound on the depth), up to
    MAX_RECURSION. Specs with named steps never need this.
    """
    limit = sys.getrecursionlimit()
    nodes = _node_count(expr) if isinstance(expr, sp.Basic) else 0
    sys.setrecursionlimit(min(max(limit, 1000 + 8 * nodes), MAX_RECURSION))
    try:
        yield
    except RecursionError:
        raise SpecError(
            "the expression is nested too deeply for SymPy to walk (it recurses "
            "once per level): write it as a spec with named steps"
        ) from None
    finally:
        sys.setrecursionlimit(limit)


def _node_count(expr: sp.Basic) -> int:
    seen, stack = set(), [expr]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return len(seen)
