"""`Program -> Program`: forward-mode differentiation (Jacobian-vector products).

Each value v gets a tangent `dot_v`, its directional derivative v̇ along the
tangents given to the inputs: for `h1 = sin(f0)`, `dot_h1 = cos(f0)·dot_f0`.
One loop over the assignments in order: an elementwise operation's tangent is
Σ ∂out/∂arg · dot_arg over its local partials (`rules.local_derivatives`, the
ones the reverse pass uses), a tensor operation's is the registry's `jvp`;
conditions carry none, and a tangent that is 0 is never computed. The
tangents are lowered by an `Emitter` that holds the program's own values, so
they reuse them and share subexpressions; each tangent line directly follows
the lines of the step it differentiates.

Applied to `value_and_grad`'s program (forward and backward pass, dy = 1),
the tangents of the gradients are a Hessian-vector product: forward over
reverse.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.compiler.lower import Emitter
from symgrad.compiler.rules import local_derivatives, operand_symbol
from symgrad.ir import Assign, Operand, Program, is_temporary
from symgrad.ops import OPS, tensor

TANGENT = "dot_"
"""`dot_f0` holds ḟ0, the directional derivative of f0."""


def forward_mode(
    program: Program, seeds: dict[str, str], outputs: tuple[str, ...] = ()
) -> Program:
    """`program` with the tangent of every value, after the lines of its step.

    `seeds` maps each input to differentiate to the name of the new parameter
    holding its tangent (inputs not named have tangent 0); those parameters
    follow the inputs, with their shapes. A program with gradients gives the
    tangents of its gradients as the result's `gradients` (for value_and_grad's
    program, a Hessian-vector product); one without gives the tangents of its
    output and of the steps `outputs` names as the result's `tangents`.
    """
    shapes = program.shapes()
    names = set(program.inputs) | set(shapes)
    if isinstance(program.seed, str):
        names.add(program.seed)
    shapes.update((seeds[w], shapes[w]) for w in seeds)
    emitter = Emitter(names | set(seeds.values()), shapes=shapes)
    tangents: dict[str, Operand] = dict(seeds)
    # a temporary of the program that a tangent already computed (cos(f0) for
    # sin's tangent, then for the backward pass): the tangent's value, once
    alias: dict[str, str] = {}

    def body(assigns: tuple[Assign, ...]) -> tuple[Assign, ...]:
        start = len(emitter.body)
        for group in _groups(assigns):  # a step's lines, then their tangents
            note = ""  # the step's comment, if its first line is an alias
            values = []  # the group's lines, reading aliases' values
            for a in group:
                a = replace(a, args=tuple(alias.get(x, x) for x in a.args))
                held = emitter.holding(a)
                if held is not None and is_temporary(a.name):
                    alias[a.name] = held
                    note = note or a.note
                    a = replace(a, name=held)
                else:
                    emitter.keep(replace(a, note=a.note or note))
                    note = ""
                values.append(a)
            for a in values:
                if a.name not in tangents:  # an alias's may be computed
                    tangent = _tangent(a, tangents, emitter)
                    if tangent != 0:
                        tangents[a.name] = tangent
        return tuple(emitter.body[start:])

    forward = body(program.forward)
    backward = body(program.backward)
    return replace(
        program,
        inputs=program.inputs + tuple(seeds.values()),
        input_shapes=program.input_shapes + tuple(shapes[w] for w in seeds),
        forward=forward,
        backward=backward,
        gradients=tuple(
            (w, tangents.get(alias.get(g, g), 0) if isinstance(g, str) else 0)
            for w, g in program.gradients
        ),
        adjoints=(),
        tangents=()
        if program.gradients
        else tuple(
            (v, tangents.get(v, 0)) for v in dict.fromkeys((program.output, *outputs))
        ),
    )


def tangent_name(v: str, taken: set[str], prefix: str = TANGENT) -> str:
    """`dot_f0` for the tangent of f0, made unique if a user's name has it."""
    name = f"{prefix}{v}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _groups(assigns: tuple[Assign, ...]) -> list[list[Assign]]:
    """The assignments split where a note starts the lines of a step or an adjoint."""
    groups: list[list[Assign]] = []
    for a in assigns:
        if a.note or not groups:
            groups.append([])
        groups[-1].append(a)
    return groups


def _tangent(a: Assign, tangents: dict[str, Operand], emitter: Emitter) -> Operand:
    """Lower the tangent of `a` from its operands' tangents; the operand holding it."""
    if not OPS[a.op].differentiable:
        return 0
    dots = [tangents.get(arg, 0) if isinstance(arg, str) else 0 for arg in a.args]
    if all(d == 0 for d in dots):
        return 0
    if OPS[a.op].kind == "select":  # where(c, a, b) is linear in its branches
        condition = a.args[0]
        # a where of the tangents, never a product with 0 (0·inf is nan)
        terms = [
            sp.Piecewise(
                (operand_symbol(dots[1]), sp.Symbol(condition)),
                (operand_symbol(dots[2]), True),
            )
        ]
        note = f"where({condition}, {dots[1]}, {dots[2]})"
    elif OPS[a.op].vjp is not None:  # a tensor operation: the registry's JVP
        terms = [_jvp(a, dots, emitter)]
        note = str(terms[0])
    else:
        locals_ = local_derivatives(a.op, a.args, a.name)
        pairs = [
            (local, dot)
            for local, dot in zip(locals_, dots, strict=True)
            if local is not None and local != 0 and dot != 0
        ]
        if not pairs:
            return 0
        terms = [local * operand_symbol(dot) for local, dot in pairs]
        note = _sum_text([_term_text(local, dot) for local, dot in pairs])
    if all(t == 0 for t in terms):
        return 0
    name = tangent_name(a.name, emitter.taken)
    result = emitter.lower(terms, name=name, note=f"{name} = {note}")
    if result != name:
        emitter.taken.discard(name)  # an existing value: no line of its own
    return result


def _term_text(local: sp.Expr, dot: Operand) -> str:
    """`cos(f0)·dot_f0` (the local derivative, then the tangent it multiplies)."""
    if local == 1 or local == -1:
        return f"{'-' if local == -1 else ''}{dot}"
    text = str(local)
    return f"({text})·{dot}" if isinstance(local, sp.Add) else f"{text}·{dot}"


def _sum_text(terms: list[str]) -> str:
    text = terms[0]
    for term in terms[1:]:
        text += f" - {term[1:]}" if term.startswith("-") else f" + {term}"
    return text


def _jvp(a: Assign, dots: list[Operand], emitter: Emitter) -> sp.Expr:
    """The registry's JVP of the tensor operation `a`, each tangent of its operand's shape."""
    spread = []
    for arg, dot in zip(a.args, dots, strict=True):
        t = operand_symbol(dot)
        # a broadcast operand's tangent is spread to the operand's shape first
        if dot != 0 and emitter.shape(dot) != emitter.shape(arg):
            t = tensor("broadcast", t, operand_symbol(arg), params=(None,))
        spread.append(t)
    return OPS[a.op].jvp(
        spread,
        *map(operand_symbol, a.args),
        out=sp.Symbol(a.name, real=True),
        params=a.params,
    )
