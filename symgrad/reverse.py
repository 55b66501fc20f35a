"""`Program -> Program`: append the backward pass (reverse-mode differentiation).

One loop over the forward assignments in reverse. Each adjoint collects its
terms `∂y/∂u · ∂u/∂v` from every use of `v` (fan-out accumulates), and is
lowered into single operations by the forward pass's own `Emitter`, so the
backward pass reuses forward values and shares common subexpressions. Only
names that depend on a `wrt` input get an adjoint: gradients nobody asked
for are never computed.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.ir import Operand, Program
from symgrad.lower import Emitter
from symgrad.rules import BOOLEAN, local_derivatives

SEED = "dy"
"""The upstream gradient's parameter name in `backward(tape, dy=1.0)`."""


def reverse(program: Program, seed: Operand = SEED) -> Program:
    """`program` with a backward pass seeded by `seed` (the name `dy`, or the constant 1)."""
    depends = _depending_on(program)
    emitter = Emitter(set(program.inputs) | {SEED}, program.forward)
    out = program.output
    # v -> [(u, ∂u/∂v, ∂out/∂u · ∂u/∂v)] for every use of v by an assignment u
    terms: dict[str, list[tuple[str, sp.Expr, sp.Expr]]] = {}

    def adjoint(v: str) -> Operand:
        """Lower ∂out/∂v from its collected terms; the operand that now holds it."""
        if v == out:
            return seed
        collected = terms.pop(v)
        chain = " + ".join(f"∂{out}/∂{u}·∂{u}/∂{v}" for u, _, _ in collected)
        locals_ = ", ".join(f"∂{u}/∂{v} = {local}" for u, local, _ in collected)
        return emitter.lower(
            sp.Add(*[term for _, _, term in collected]),
            name=_adjoint_name(out, v, emitter.taken),
            note=f"∂{out}/∂{v} = {chain}   ({locals_})",
        )

    for a in reversed(program.forward):
        if a.name != out and a.name not in terms:
            continue
        g = adjoint(a.name)
        if g == 0:
            continue
        for arg, local in zip(
            a.args, local_derivatives(a.op, a.args, a.name), strict=True
        ):
            if local is None or local == 0 or arg not in depends:
                continue
            term = _symbol(g) * local
            if term.has(sp.Piecewise):
                term = sp.piecewise_fold(term)
            terms.setdefault(arg, []).append((a.name, local, term))

    gradients = tuple((w, adjoint(w) if w in terms else 0) for w in program.wrt)
    return replace(
        program, backward=tuple(emitter.body), gradients=gradients, seed=seed
    )


def _depending_on(program: Program) -> set[str]:
    """Names whose value depends on a `wrt` input through something differentiable."""
    depends = set(program.wrt)
    for a in program.forward:
        if a.op not in BOOLEAN and any(arg in depends for arg in a.args):
            depends.add(a.name)
    return depends


def _adjoint_name(out: str, v: str, taken: set[str]) -> str:
    """`dy_df3` for ∂y/∂f3 (the course's notation), made unique if a user name has it."""
    name = f"d{out}_d{v}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _symbol(operand: Operand) -> sp.Expr:
    return (
        sp.Symbol(operand, real=True)
        if isinstance(operand, str)
        else sp.sympify(operand)
    )
