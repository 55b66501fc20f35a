"""`Program -> Program` clean-up passes run after `reverse`."""

from __future__ import annotations

from dataclasses import replace

from symgrad.ir import Program


def dce(program: Program) -> Program:
    """Remove assignments whose result nothing uses (user steps are always kept)."""
    live = {program.output, *program.steps}
    live |= {g for _, g in program.gradients if isinstance(g, str)}
    kept = []
    for a in reversed(program.forward + program.backward):
        if a.name in live:
            kept.append(a)
            live |= {arg for arg in a.args if isinstance(arg, str)}
    kept.reverse()
    forward_names = {a.name for a in program.forward}
    return replace(
        program,
        forward=tuple(a for a in kept if a.name in forward_names),
        backward=tuple(a for a in kept if a.name not in forward_names),
    )
