"""The compiler in one place: `Spec -> Programs -> source -> module`.

forward = lower(spec)
backward = negate_sums(spread_scalars(dce(reverse(forward, seed="dy"))))
    # for backward(tape, dy); several outputs: backward(tape, dx, dy), a seed each
unit = narrow_solves(negate_sums(spread_scalars(drop_trils(cancel(dce(
    reverse(forward, seed=1)))))))
    # for value_and_grad: dy = 1 folded in, adjoints simplified (a*(1-a)*... -> a - y),
    # no tril where the triangle is zero or unread, a solve's batch of columns
    # mapped (X @ Zᵀ, a sum) before it is solved
jvp = dce(forward_mode(forward))              # if the spec asks: jvp(inputs, dot_inputs),
                                              # and jacobian (one jvp per input direction)
hvp = dce(forward_mode(unit))                 # hvp(inputs, v_inputs): forward over reverse
"""

from __future__ import annotations

import functools
import gc
import linecache
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sympy as sp

from symgrad.codegen import TARGETS, render
from symgrad.compiler.forward import TANGENT, forward_mode, tangent_name
from symgrad.compiler.lower import lower
from symgrad.compiler.optimize import (
    cancel,
    dce,
    drop_trils,
    narrow_solves,
    negate_sums,
    spread_scalars,
)
from symgrad.compiler.reverse import SEED, reverse, seed_names
from symgrad.frontend import spec as spec_module
from symgrad.frontend.language import nodes
from symgrad.frontend.spec import Spec, SpecError, with_derivatives, with_wrt
from symgrad.ir import Program
from symgrad.shapes import ShapeError


class SymgradWarning(UserWarning):
    """A spec that compiles but probably does not say what was meant."""


@dataclass(frozen=True)
class Compiled:
    """A spec and the two programs the generated module is printed from."""

    spec: Spec
    backward: Program
    unit: Program
    jvp: Program | None = None  # forward mode, when the spec asks for jvp or jacobian
    hvp: Program | None = None  # forward over reverse, for hvp or hessian


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
    unit = reverse(forward, unit_seed, memo)
    unit = narrow_solves(negate_sums(spread_scalars(drop_trils(cancel(dce(unit))))))
    jvp = hvp = None
    if {"jvp", "jacobian"} & set(spec.derivatives):  # jacobian: one jvp per direction
        jvp = dce(forward_mode(forward, _seeds(forward, TANGENT), spec.outputs))
    if {"hvp", "hessian"} & set(spec.derivatives):
        if array_output:
            raise SpecError(
                f"hvp and hessian need a scalar output; {forward.output} is an array "
                "(sum it in a step)",
                path=spec.path,
            )
        try:
            hvp = dce(forward_mode(unit, _seeds(unit, "v_")))
        except ShapeError as err:  # an adjoint without a tangent rule (prod's)
            raise SpecError(str(err), path=spec.path) from None
    # one upstream gradient per output: dy, or dx, dy, ... (the first's first)
    seed, *extra = seed_names(forward, spec.outputs)
    extra_seeds = tuple(zip(spec.outputs[1:], extra, strict=True))
    backward = negate_sums(
        spread_scalars(dce(reverse(forward, seed, memo, extra_seeds)))
    )
    return Compiled(spec, backward, unit, jvp, hvp)


def _seeds(program: Program, prefix: str) -> dict[str, str]:
    """A new parameter for the tangent of each `wrt` input: `dot_x` (or `v_x`)."""
    taken = set(program.inputs) | set(program.shapes()) | {SEED}
    return {w: tangent_name(w, taken, prefix) for w in program.wrt}


def dependence_warnings(compiled: Compiled) -> list[str]:
    """What to warn about a spec: its output does not depend on a `wrt` input.

    Its gradient is then 0, which is right but rarely meant: usually a value
    was declared as an input where it should be a step computed from that
    input (seed 000: `Z` an input, where `Z = w1*x1 + b`). The hint names the
    input the output depends on, not differentiated, that is furthest from it.
    """
    program = compiled.backward
    depth = {program.output: 0}  # the longest path from each name to the output
    for a in reversed(program.forward):
        if a.name in depth:
            for arg in a.args:
                if isinstance(arg, str):
                    depth[arg] = max(depth.get(arg, 0), depth[a.name] + 1)
    ignored = [name for name in program.wrt if name not in depth]
    if not ignored:
        return []
    message = f"{program.output} does not depend on {_listing(ignored, 'or')}: " + (
        "its gradient is 0" if len(ignored) == 1 else "their gradients are 0"
    )
    held = [n for n in program.inputs if n in depth and n not in program.wrt]
    if held:
        # furthest as the user wrote the steps: a rewrite (the cross-entropy on
        # the logit) may take the output straight to an input a step used
        written = _written_depth(compiled.spec)
        furthest = max(held, key=lambda n: written.get(n, 0))  # the first of equals
        message += (
            f". Is {furthest} meant to be a step computed from "
            f"{_listing(ignored, 'and')}?"
        )
    return [message]


def _written_depth(spec: Spec) -> dict[str, int]:
    """The longest path from each name to the output, through the spec's steps."""
    depth = {spec.output: 0}
    for step in reversed(spec.steps):
        if step.name in depth:
            for symbol in step.expr.free_symbols:
                name = getattr(symbol, "name", None)
                if name is not None:
                    depth[name] = max(depth.get(name, 0), depth[step.name] + 1)
    return depth


def _listing(names: list[str], conjunction: str) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def warn(compiled: Compiled, stacklevel: int) -> None:
    """Issue `dependence_warnings` as SymgradWarnings (for the library API).

    `stacklevel` counts from the caller of `warn`, as `warnings.warn` does from
    its own caller: the user's line that compiled the spec.
    """
    for message in dependence_warnings(compiled):
        warnings.warn(
            f"{compiled.spec.name}: {message}", SymgradWarning, stacklevel + 1
        )


@_gc_paused
def source(compiled: Compiled, target: str = "numpy", checked: str = "") -> str:
    """The generated module's text."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return render(
        compiled.spec,
        compiled.backward,
        compiled.unit,
        TARGETS[target],
        checked,
        compiled.jvp,
        compiled.hvp,
    )


def load_spec(
    source_: Any,
    wrt: Any = None,
    inputs: Any = None,
    name: str | None = None,
    output: str | None = None,
) -> Spec:
    """A Spec from a path, a spec dict, a SymPy expression or a dict of named
    SymPy steps (`{"Z": Z, "a": a, "L": L}`); `wrt`, if given, chooses what a
    spec file or dict differentiates with respect to, instead of its own `wrt`."""
    if (
        isinstance(source_, dict)
        and source_
        and all(isinstance(v, sp.Basic) for v in source_.values())
    ):
        return spec_module.from_sympy(
            source_, wrt, inputs, name=name or "expr", output=output
        )
    if isinstance(source_, str | Path | dict) and not isinstance(source_, sp.Basic):
        if inputs is not None or output is not None:
            raise SpecError(
                "inputs= and output= are for SymPy expressions; a spec names its own"
            )
        spec = (
            spec_module.from_dict(source_)
            if isinstance(source_, dict)
            else spec_module.load(source_)
        )
        return spec if wrt is None else with_wrt(spec, wrt)
    return spec_module.from_sympy(
        source_, wrt, inputs, name=name or "expr", output=output
    )


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
    # dont_inherit: this file's `from __future__ import annotations` is not the
    # module's (it made every Tape field's annotation a ForwardRef to compile).
    code = compile(text, filename, "exec", dont_inherit=True)
    try:
        exec(code, module.__dict__)  # noqa: S102 (our own generated code)
    except ModuleNotFoundError as err:  # an engine target's engine, scipy.special
        raise MissingModule(
            f"the module {name} imports {err.name}, which is not installed here: "
            f"install it (pip install {err.name.partition('.')[0]}) or choose "
            f"another target"
        ) from None
    module.__symgrad__ = compiled
    return module


class MissingModule(ImportError):
    """A generated module imports a package that is not installed (its engine)."""


@_gc_paused
def compile_module(
    source_: Any,
    wrt: Any = None,
    inputs: Any = None,
    *,
    target: str = "numpy",
    name: str | None = None,
    derivatives: Any = None,
    output: str | None = None,
) -> types.ModuleType:
    """Compile a spec (path, dict, SymPy expression or dict of named SymPy steps)
    and import the result in memory.

    The module has `forward`, `backward`, `value_and_grad` and `grad`, and
    `__symgrad__` (the spec and programs it was printed from); `derivatives`
    (a list of jvp, hvp, hessian) adds those functions, as the spec's own
    `derivatives` key does.
    """
    with _recursion_for(source_):
        spec = load_spec(source_, wrt, inputs, name, output)
        if derivatives is not None:
            spec = with_derivatives(spec, derivatives)
        compiled = build(spec)
        module = import_source(source(compiled, target), compiled.spec.name, compiled)
    # the frames: compile_module, its _gc_paused wrapper, api.compile, the user's
    warn(compiled, stacklevel=4)
    return module


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
    count = len(nodes(expr)) if isinstance(expr, sp.Basic) else 0
    sys.setrecursionlimit(min(max(limit, 1000 + 8 * count), MAX_RECURSION))
    try:
        yield
    except RecursionError:
        raise SpecError(
            "the expression is nested too deeply for SymPy to walk (it recurses "
            "once per level): write it as a spec with named steps"
        ) from None
    finally:
        sys.setrecursionlimit(limit)
