"""The `python` target: plain Python floats and the math module, for the fastest scalar calls."""

from __future__ import annotations

from dataclasses import dataclass, replace

from symgrad.codegen.backend import Backend
from symgrad.codegen.printer import Line, Printer
from symgrad.compiler.reverse import Guard

NOT_TAKEN = "math.nan"
"""The value of a temporary on the branch of a where that does not need it."""


@dataclass(frozen=True)
class PythonBackend(Backend):
    def arrange(
        self, lines: list[Line], guards: dict[str, Guard], printer: Printer
    ) -> list[Line]:
        """Compute a value only on the branches of a where that need it.

        `t0 = math.exp(x) if not t2 else math.nan`: at x = 1e4 the branch not
        taken would raise OverflowError. Each such line moves down to just
        before the first line that reads it, so its condition exists by then.
        """
        arranged: list[Line] = []
        held: dict[str, list[Line]] = {}  # a moved line, with the comment above it

        def emit(*group: Line) -> None:
            """The lines of `group`, after the held lines they read."""
            for name in sorted(
                set().union(*(g.reads for g in group)), key=lambda n: order.get(n, -1)
            ):
                if name in held:
                    emit(*held.pop(name))
            arranged.extend(group)

        order = {line.defines: i for i, line in enumerate(lines) if line.defines}
        comment: list[Line] = []
        for line in lines:
            guard = (
                guards.get(line.defines, frozenset()) if line.defines else frozenset()
            )
            if line.defines is None:
                comment.append(line)
                continue
            if guard:
                printer.imports.add("math")
                held[line.defines] = [*comment, _guarded(line, guard)]
            else:
                emit(*comment, line)
            comment = []
        emit(*comment)
        for name in sorted(held, key=order.get):
            if name in held:
                emit(*held.pop(name))
        return arranged


def _guarded(line: Line, guard: Guard) -> Line:
    condition = " and ".join(
        name if side else f"not {name}" for name, side in sorted(guard)
    )
    target, _, expression = line.text.partition(" = ")
    if line.prec <= 1:  # itself a conditional expression
        expression = f"({expression})"
    return replace(
        line,
        text=f"{target} = {expression} if {condition} else {NOT_TAKEN}",
        reads=line.reads | {name for name, _ in guard},
        prec=1,
    )


PYTHON = PythonBackend("python", value_type="float", tensors=False, branches=True)
