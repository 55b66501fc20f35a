"""`(Spec, Program, Program, Backend) -> str`: lay the printed lines out through a template.

Templates hold the layout, the registry holds how each operation prints,
and neither holds math. Jinja receives only pre-rendered lines, the
signature, the docstring and what the printer recorded (imports, helpers).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import jinja2

from symgrad._data import shipped
from symgrad._version import __version__
from symgrad.codegen import loops
from symgrad.codegen.backend import Backend, Gradient
from symgrad.codegen.inplace import in_place
from symgrad.codegen.printer import (
    INDENT,
    LINE_LENGTH,
    Line,
    Printer,
    Unprintable,
    call,
    deleting,
    fusible,
    tuple_display,
)
from symgrad.compiler.optimize import dce
from symgrad.compiler.reverse import objective, program_guards, weighted
from symgrad.frontend.spec import Spec, SpecError
from symgrad.ir import Program, is_temporary, uses
from symgrad.shapes import show


def render(
    spec: Spec,
    backward: Program,
    unit: Program,
    backend: Backend,
    checked: str = "",
    jvp: Program | None = None,
    hvp: Program | None = None,
) -> str:
    """The source of the generated module.

    `backward` is seeded with the parameter `dy` (for `backward(tape, dy)`);
    `unit` is the same program seeded with 1 (for `value_and_grad`);
    `checked` says how the gradients were verified, for the docstring;
    `jvp` and `hvp` (forward mode) add those functions, and `hessian` with hvp
    where the spec asks for it.
    """
    backend = backend.for_program(backward)
    if backward.tensor and not backend.tensors:
        raise SpecError(
            f"the {backend.name} target compiles scalar specs only; use --target "
            "numpy (or jax, torch) for vectors and matrices",
            path=spec.path,
        )
    if not backend.several_outputs and len(spec.outputs) > 1:
        raise SpecError(
            f"the {backend.name} target compiles specs with one output; use --target "
            "numpy (or python) for several",
            path=spec.path,
        )
    if not backend.higher and (jvp is not None or hvp is not None):
        raise SpecError(
            f"the {backend.name} target has no jvp, hvp or hessian; use --target "
            "numpy (or python, jax, torch) for them",
            path=spec.path,
        )
    taken = sorted(backend.taken.intersection(backward.shapes()))
    if taken:
        raise SpecError(
            f"the {backend.name} target's module uses the name {taken[0]!r}; "
            "rename that input or step",
            path=spec.path,
        )
    # A non-scalar output of a tensor spec: value_and_grad's dy has its shape.
    seed_dy = backward.tensor and bool(backward.shapes()[backward.output])
    # there value_and_grad and grad take backward's upstream gradient of it (dy;
    # du for outputs u, v), ones by default
    upstream = backward.seeds[0][1] if seed_dy else None
    printer = backend.printer()
    backward, unit = backend.prepared(backward), backend.prepared(unit)
    try:
        context = _lines(printer, backward, unit, backend)
        higher = _higher(printer, spec, jvp, hvp, backend, context["gradient_helpers"])
        context |= higher | {"unused": context["unused"] or higher["unused"]}
    except Unprintable as err:
        raise SpecError(f"{err}; use --target numpy", path=spec.path) from None
    tape = context["tape_fields"]
    stdlib = sorted(m for m in printer.imports if m in sys.stdlib_module_names)
    context |= {
        "version": __version__,
        "value_type": backend.value_type,
        "spec": spec,
        "source_file": Path(spec.path).name
        if spec.path and not spec.path.startswith("<")
        else None,
        "description": [
            _docstring_safe(line) for line in spec.description.strip().splitlines()
        ],
        "source": _docstring_safe(" ".join(spec.source.split())),
        "steps": [
            _docstring_safe(f"{s.name} = {' '.join(s.text.split())}")
            for s in spec.steps
        ],
        "output": backward.output,
        "wrt": list(backward.wrt),
        "summary": textwrap.fill(_summary(backward), width=79),
        "params": backward.inputs,
        "upstream": upstream,
        "unit_params": list(backward.inputs) + [f"{upstream}=None"] * seed_dy,
        "arguments": _rebound(list(backward.inputs), "_arrays")
        if backend.arrays
        else [],
        # a batch's gradients are summed back to the shapes of the arguments
        "unit_arguments": _kept(list(backward.inputs), context["arguments_name"])
        if context["one_point"] and backend.arrays
        else _rebound(list(backward.inputs), "_arrays")
        if backend.arrays
        else [],
        "seen": [f'getattr({n}, "shape", type({n}))' for n in backward.inputs],
        "declared_shapes": [
            (name, _tuple(shape))
            for name, shape in zip(backward.inputs, backward.input_shapes, strict=True)
        ],
        "make_tape": call("tape = Tape", tape, INDENT),
        "checked": textwrap.fill(checked, width=79),
        "tensor": backward.tensor,
        "shapes": textwrap.fill(
            "Inputs have the spec's shapes ("
            + ", ".join(
                f"{name} {show(shape)}"
                for name, shape in zip(
                    backward.inputs, backward.input_shapes, strict=True
                )
            )
            + "); named dimensions take their size from the arguments, and forward "
            "and value_and_grad raise a ValueError naming an argument whose shape is "
            f"not the spec's (CHECK_ARGUMENTS). {backend.accepts}",
            width=79,
            break_long_words=False,
        ),
        "stdlib_imports": stdlib,
        "imports": sorted(printer.imports - set(stdlib)),
        "helpers": printer.helper_sources(),
        "loops": list(printer.loops.values()),
        **_seeds(backward),
        "seed_dy": seed_dy,
        "call": call,
        "tuple_display": tuple_display,
        "INDENT": INDENT,
    }
    text = (
        environment().get_template(f"{backend.name}/{backend.template}").render(context)
    )
    return _exempted(text, tape + list(backward.wrt))


AMBIGUOUS = frozenset({"l", "I", "O"})  # pycodestyle's E741: like 1 and 0 in some fonts


def _exempted(text: str, names: list[str]) -> str:
    """`text` with a file-level `# ruff: noqa` for what its user's names and prose need.

    The user's names stay theirs (`l`, `I`, `O` are fine in mathematics: E741),
    and comments and docstrings may carry a formula longer than a line (E501),
    so the module is clean wherever it is written: under ruff's defaults, which
    leave E501 and E741 off and report an exemption for them as unused (RUF100),
    and under a configuration that turns them on.
    """
    codes = []
    if any(len(line) > LINE_LENGTH for line in text.splitlines()):
        codes.append("E501")
    if AMBIGUOUS.intersection(names):
        codes.append("E741")
    if not codes:
        return text
    codes.append("RUF100")
    header, rest = text.split("\n", 1)
    return f"{header}\n# ruff: noqa: {', '.join(codes)}\n{rest}"


def _lines(
    printer: Printer, backward: Program, unit: Program, backend: Backend
) -> dict:
    """The printed bodies of forward, backward and value_and_grad, and their gradients."""
    # forward and backward: one line per operation, the full tape (teaching form);
    # value_and_grad and grad: `_fused`, only the lines their results read.
    guards = program_guards(backward)
    forward = printer.body(backward.forward)
    graded = {g for _, g in backward.gradients if isinstance(g, str)}
    transposes = fusible(backward.backward, graded, only={"transpose"})
    backward_lines = printer.body(backward.backward, transposes)
    forward = backend.arrange(forward, guards, printer)
    backward_lines = backend.arrange(backward_lines, guards, printer)
    one_point = backend.one_point and not backward.tensor
    batch = backend.batch(backward, _ignored(backward))
    if batch is not None:
        forward.append(Line(batch, frozenset(backward.inputs) | {backward.output}))

    def gradients(program: Program):
        if one_point:  # as at one point; a batch's are summed by `_summed`
            return [Backend.gradient(backend, program, *g) for g in program.gradients]
        return [backend.gradient(program, *g) for g in program.gradients]

    fused_forward, unit_lines, unit_gradients = _fused(
        printer, dce(unit, roots={unit.output}), backend, gradients, batch
    )
    # grad: a body of its own where the gradients need less than the output
    # (logistic regression's gradients skip the loss); a batch of a scalar spec
    # is told by its output's shape, so that grad calls value_and_grad
    reads = set().union(*(g.reads for g in gradients(unit)))
    only_gradients = dce(unit, roots=reads)
    own_grad = (
        not one_point
        and not (backward.tensor and bool(backward.shapes()[backward.output]))
        and len(only_gradients.forward) < len(dce(unit, roots={unit.output}).forward)
    )
    grad_lines = (
        _fused(printer, only_gradients, backend, gradients, None) if own_grad else None
    )
    backward_gradients = gradients(backward)
    read = {arg for a in backward.backward for arg in a.args if isinstance(arg, str)}
    read = read.union(*(g.reads for g in backward_gradients))
    order = list(backward.inputs) + [a.name for a in backward.forward]
    return {
        "forward": _text(forward),
        # the tape: the inputs, the spec's steps and the temporaries backward reads
        "tape_fields": [
            name for name in order if not is_temporary(name) or name in read
        ],
        "unpack": [f"{name} = tape.{name}" for name in order if name in read],
        "tape_read": [name for name in order if name in read],
        "backward": _text(backward_lines),
        "gradients": [g.text for g in backward_gradients],
        "unit_backward": _text(unit_lines),
        "fused_forward": _text(fused_forward),
        "unit_gradients": [g.text for g in unit_gradients],
        # grad's own body (forward lines, backward lines, gradients), or None
        "grad_body": grad_lines
        and (
            _text(grad_lines[0]) + _text(grad_lines[1]),
            [g.text for g in grad_lines[2]],
        ),
        # a scalar spec: a call at one point skips the reductions of a batch
        "one_point": one_point,
        "summed": _summed(backward, "tape"),
        "unit_summed": _summed(unit, _arguments_name(backward)),
        "arguments_name": _arguments_name(backward),
        "unused": batch is not None,
        "gradient_helpers": frozenset().union(
            *(g.helpers for g in backward_gradients + unit_gradients)
        ),
        "returned": backend.returned(backward),
    }


def _fused(
    printer: Printer,
    unit: Program,
    backend: Backend,
    gradients: Callable[[Program], list[Gradient]],
    batch: str | None,
) -> tuple[list[Line], list[Line], list[Gradient]]:
    """The forward and backward lines of value_and_grad (or grad: `unit` without
    the output's own steps) and its gradients: temporaries used once printed
    where they are used, each array freed after its last use."""
    guards = program_guards(unit)
    # a target that computes only the branch taken tests each condition by name
    conditions = (
        {c for g in guards.values() for c, _ in g} if backend.branches else set()
    )
    graded = {g for _, g in unit.gradients if isinstance(g, str)}
    read_by_backward = {arg for a in unit.backward for arg in a.args} | graded
    fused = fusible(unit.forward, read_by_backward | {unit.output} | conditions)
    fused |= fusible(unit.backward, graded | conditions)
    unit_gradients = gradients(unit)
    returned = {unit.output}.union(*(g.reads for g in unit_gradients))
    into = (
        in_place(unit, unit.forward + unit.backward, printer, fused, returned)
        if backend.in_place and unit.tensor
        else {}
    )
    if backend.loop_codes is not None and unit.tensor:
        forward, backward = _looped(printer, unit, backend, returned)
    else:
        forward = printer.body(unit.forward, fused, into)
        backward = printer.body(unit.backward, fused, into)
    arranged = backend.arrange(forward + backward, guards, printer)
    forward, backward = arranged[: len(forward)], arranged[len(forward) :]
    if batch is not None:
        forward.append(Line(batch, frozenset(unit.inputs) | {unit.output}))
    if backend.frees_arrays:  # free each array after its last use, as by hand
        # the seed dy = np.ones(...) of an array output is freed like the others
        seed = [Line("", defines=unit.seed)] if isinstance(unit.seed, str) else []
        _, forward, backward = deleting(seed, forward, backward, keep=returned)
    return forward, backward, unit_gradients


def _looped(
    printer: Printer, unit: Program, backend: Backend, returned: set[str]
) -> tuple[list[Line], list[Line]]:
    """value_and_grad's (or grad's) forward and backward lines with the elementwise
    steps in fused loops (`codegen.loops`), whose functions go to `printer.loops`.

    Forward and backward are planned as one, unless the backward pass starts
    from an upstream gradient dy given between them (an array output)."""
    shapes = unit.shapes()
    body = printer.body  # the lines outside the loops: the module's target's
    inner = Printer(backend.name, backend.loop_codes)
    parts = [unit.forward, unit.backward]
    if not isinstance(unit.seed, str):
        parts = [unit.forward + unit.backward, ()]
    printed = []
    for k, part in enumerate(parts):
        after = returned.union(*(uses(p) for p in parts[k + 1 :]))
        items = []
        for item in loops.plan(part, shapes, after, backend.fuses):
            if isinstance(item, loops.Loop):
                loop = loops.source(item, inner, shapes, set(unit.inputs))
                name = next(  # grad's loop may be value_and_grad's
                    (
                        n
                        for n, text in printer.loops.items()
                        if text == loop.function(n)
                    ),
                    f"_loop{len(printer.loops)}",
                )
                printer.loops[name] = loop.function(name)
                item = loop.call(name)
            items.append(item)
        assigns = tuple(a for a in items if not isinstance(a, Line))
        keep = after.union(*(a.reads for a in items if isinstance(a, Line)))
        printed.append(body(tuple(items), fusible(assigns, keep)))
    printer.imports |= inner.imports
    return printed[0], printed[1]


def _summary(program: Program) -> str:
    """The module docstring's paragraph on the backward pass."""
    out, wrt = program.output, ", ".join(program.wrt)
    if not program.extra_seeds:
        return (
            f"Backward pass: reverse-mode differentiation of {out} with respect to "
            f"{wrt}. The adjoint d{out}_dv holds ∂{out}/∂v; t0, t1, ... are "
            "temporaries that hold one operation each."
        )
    total = objective(program)
    return (
        f"Backward pass: reverse-mode differentiation of {total} = {weighted(program)} "
        f"with respect to {wrt}, one upstream gradient per output (value_and_grad "
        f"and grad: {out} alone). backward's adjoint d{total}_dv holds ∂{total}/∂v, "
        f"value_and_grad's d{out}_dv holds ∂{out}/∂v; t0, t1, ... are temporaries "
        "that hold one operation each."
    )


def _seeds(program: Program) -> dict:
    """What the template says of backward's upstream gradients (one per output)."""
    shapes = program.shapes()
    several = bool(program.extra_seeds)
    seeds = [str(seed) for _, seed in program.seeds]
    total = objective(program)
    return {
        # the first output's default 1, the others' 0: the gradients of the first
        "seed_params": [
            f"{seed}={0.0 if i else 1.0}" for i, (_, seed) in enumerate(program.seeds)
        ],
        "seeds": seeds,
        # value_and_grad: backward's defaults, folded in
        "unit_seeds": ", ".join(
            f"{seed} = {0 if i else 1}" for i, seed in enumerate(seeds)
        ),
        # several outputs: L = dx·x + dy·y, its adjoints dL_dv
        "objective": total if several else None,
        "weighted": weighted(program),
        "seeds_doc": textwrap.fill(
            f"{', '.join(seeds)} are the upstream gradients "
            f"{', '.join(f'∂{total}/∂{o}' for o, _ in program.seeds)}, one per output "
            "(a vector-Jacobian product); the defaults give the gradients of "
            f"{program.output}, backward(tape, {seeds[0]}=0.0, {seeds[1]}=1.0) "
            f"those of {program.extra_seeds[0][0]}.",
            width=79,
            initial_indent=INDENT,
            subsequent_indent=INDENT,
            break_on_hyphens=False,
        )
        if several
        else "",
        # A non-scalar output of a tensor spec: its seed is broadcast to its shape.
        "broadcast_seeds": [
            (seed, o) for o, seed in program.seeds if program.tensor and shapes[o]
        ],
        "one_point_test": " and ".join(
            [f"_one_point(tape.{program.output}, {program.seed})"]
            + [f"_one_point({seed})" for _, seed in program.extra_seeds]
        ),
    }


def _summed(program: Program, inputs: str) -> list[str]:
    """`return _summed(gradients, y, inputs)`: a batch's gradients summed back to
    the inputs' shapes, which come from the `tape` or the call's arguments
    (`copied`: the gradients that are an input, which the caller must own)."""
    copied = [
        str(i)
        for i, (_, g) in enumerate(program.gradients)
        if program.copied(g) in program.input_names
    ]
    tape = inputs == "tape"
    args = ["gradients", f"tape.{program.output}" if tape else program.output, inputs]
    if copied:
        args.append(f"copied={{{', '.join(copied)}}}")
    prefix = "return _summed" if tape else f"return {program.output}, _summed"
    return call(prefix, args, INDENT)


def _arguments_name(program: Program) -> str:
    """`args`, unless the spec has a name `args` (then `args_`, ...)."""
    taken = set(program.inputs) | {a.name for a in program.forward}
    name = "args"
    while name in taken:
        name += "_"
    return name


def _kept(names: list[str], kept: str) -> list[str]:
    """`args = _arrays(a, b)` then `a, b = args`, laid out as ruff format would."""
    targets = ", ".join(names) if len(names) > 1 else f"({names[0]},)"
    unpack = [f"{INDENT}{targets} = {kept}"]
    if len(unpack[0]) > LINE_LENGTH:
        each = [f"{INDENT * 2}{name}," for name in names]
        unpack = [f"{INDENT}(", *each, f"{INDENT}) = {kept}"]
    return [*call(f"{kept} = _arrays", names, INDENT), *unpack]


def _rebound(names: list[str], function: str) -> list[str]:
    """`a, b = function(a, b)` in a function body, laid out as ruff format would."""
    targets = ", ".join(names) if len(names) > 1 else f"({names[0]},)"
    lines = call(f"{targets} = {function}", names, INDENT)
    if len(lines[0]) <= LINE_LENGTH:
        return lines
    if len(f"{INDENT}{targets} = (") <= LINE_LENGTH:  # the call in parentheses
        return [
            f"{INDENT}{targets} = (",
            *call(function, names, INDENT * 2),
            f"{INDENT})",
        ]
    each = [f"{INDENT * 2}{name}," for name in names]  # targets and arguments
    return [f"{INDENT}(", *each, f"{INDENT}) = {function}(", *each, f"{INDENT})"]


def _tuple(shape: tuple) -> str:
    """A shape as a Python tuple display: `("n", 3)`, `("n",)`, `()`."""
    items = [f'"{d}"' if isinstance(d, str) else str(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _higher(
    printer: Printer,
    spec: Spec,
    jvp: Program | None,
    hvp: Program | None,
    backend: Backend,
    helpers: frozenset[str],
) -> dict:
    """The bodies of jvp, hvp, hessian and jacobian, each line one operation (None:
    not asked for), and the gradient `helpers` with those hvp calls."""

    def lines(program: Program, returned: set[str]) -> list[str]:
        # as value_and_grad: temporaries used once printed where they are used,
        # each array deleted after its last use (a batch's memory is reused)
        assigns = program.forward + program.backward
        guards = program_guards(program)
        # a target that computes only the branch taken tests each condition by name
        conditions = (
            {c for g in guards.values() for c, _ in g} if backend.branches else set()
        )
        body = printer.body(assigns, fusible(assigns, returned | conditions))
        body = backend.arrange(body, guards, printer)
        if backend.frees_arrays:
            (body,) = deleting(body, keep=returned)
        return _text(body)

    context: dict = {"jvp": None, "hvp": None, "hessian": None, "jacobian": None}
    context["unused"] = False  # whether jvp gives an output the batch's shape
    context["gradient_helpers"] = helpers
    context["outputs"] = list(spec.outputs)
    if jvp is not None:
        tangents = dict(jvp.tangents)
        returned = [backend.tangent(jvp, o, tangents[o]) for o in spec.outputs]
        kept = {*spec.outputs, *tangents.values()} - {0}
        # only what the outputs and their tangents read (not a dead step)
        body = lines(dce(jvp, roots=set(spec.outputs)), kept)
        inputs = tuple(i.name for i in spec.inputs)
        for o, tangent in zip(spec.outputs, returned, strict=True):
            ignored = _ignored(jvp, inputs, o)
            batch = backend.batch(jvp, ignored, o)
            if batch is not None:  # each output and its tangent: the batch's shape
                body.append(batch)
                if isinstance(tangents[o], str):
                    body.append(backend.batch(jvp, ignored, tangent))
                context["unused"] = True
        context["jvp"] = {
            "params": jvp.inputs,
            "lines": body,
            "tangents": returned,
        }
    if hvp is not None:
        products = [backend.gradient(hvp, name, g) for name, g in hvp.gradients]
        needed = dce(hvp, roots=set().union(*(g.reads for g in products)))
        context["hvp"] = {
            "params": hvp.inputs,
            "lines": lines(needed, set().union(*(g.reads for g in products))),
            "products": [g.text for g in products],
        }
        context["gradient_helpers"] = helpers.union(*(g.helpers for g in products))
    if "hessian" in spec.derivatives:
        context["hessian"] = _columns("hvp", hvp, "")
    if "jacobian" in spec.derivatives:  # a tensor spec's template: one jvp per entry
        context["jacobian"] = ["tensor"] if jvp.tensor else _columns("jvp", jvp, "[1]")
    return context


def _columns(function: str, program: Program, index: str) -> list[str]:
    """One call of `function` (hvp or jvp) per differentiated input w, its tangent
    1 and the others' 0: the column of w of the Hessian or the Jacobian."""
    inputs = list(program.inputs[: -len(program.wrt)])
    return [
        line
        for w in program.wrt
        for line in call(
            function,
            inputs + ["1.0" if v == w else "0.0" for v in program.wrt],
            INDENT * 2,
            f"{index},",
        )
    ]


def _ignored(
    program: Program, inputs: tuple[str, ...] | None = None, output: str | None = None
) -> list[str]:
    """The `inputs` (default: the program's) the output (or `output`) does not
    depend on, in order."""
    needed = {output or program.output}
    for a in reversed(program.forward):
        if a.name in needed:
            needed.update(arg for arg in a.args if isinstance(arg, str))
    return [name for name in inputs or program.inputs if name not in needed]


def _text(lines: list[Line]) -> list[str]:
    return [line.text for line in lines]


def _docstring_safe(text: str) -> str:
    """Text that cannot end the docstring it is placed in or start an escape sequence."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment over symgrad's templates (strict: a missing value is an error)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def templates_dir() -> Path:
    """The templates folder: inside the installed package, or beside it in a source checkout."""
    return shipped("templates")
