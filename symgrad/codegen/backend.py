"""What a code-generation target declares: the `Backend` interface."""

from __future__ import annotations

from dataclasses import dataclass

from symgrad.codegen.printer import Line, Printer
from symgrad.compiler.reverse import Guard
from symgrad.ir import Operand, Program


@dataclass(frozen=True)
class Gradient:
    """The value `value_and_grad` returns for one input, and the names it reads."""

    text: str
    reads: frozenset[str]
    helpers: frozenset[str] = frozenset()  # the target's gradient helpers it calls


@dataclass(frozen=True)
class Backend:
    """A target: its name (`--target`), its template folder, and what differs.

    `value_type` annotates the Tape and Gradients fields; `tensors` says
    whether it prints vectors and matrices; `frees_arrays` whether
    `value_and_grad` deletes each array after its last use; `one_point`
    whether a scalar spec gets a fast path for a call at a single point;
    `arrays` whether `forward` and `value_and_grad` start by passing their
    arguments through the template's `_arrays` (lists made arrays, shapes checked).
    """

    name: str
    value_type: str
    tensors: bool
    frees_arrays: bool = False
    one_point: bool = False
    branches: bool = False
    arrays: bool = False

    def prepared(self, program: Program) -> Program:
        """`program` as the target prints it (its operations' parameters set)."""
        return program

    def gradient(
        self, program: Program, name: str, grad: Operand, one_point: bool = False
    ) -> Gradient:
        """The returned value of the gradient `grad` of input `name`."""
        text = grad if isinstance(grad, str) else repr(float(grad))
        return Gradient(text, frozenset({grad} if isinstance(grad, str) else ()))

    def arrange(
        self, lines: list[Line], guards: dict[str, Guard], printer: Printer
    ) -> list[Line]:
        """The lines of one function, given the where-branches each value is needed in.

        Array targets compute both branches of a where (the compiler masks what
        the branch not taken would add to the gradient); the lines stay as they are.
        """
        return lines

    def returned(self, program: Program) -> str:
        """What `backward` and `value_and_grad` build their Gradients from."""
        return "gradients"

    def tangent(self, program: Program, name: str, tangent: Operand) -> str:
        """The returned value of the tangent of output `name` (a name, or 0)."""
        return tangent if isinstance(tangent, str) else repr(float(tangent))

    def batch(
        self, program: Program, ignored: list[str], name: str | None = None
    ) -> str | None:
        """A line giving the output (or the value `name`) the batch's shape where the
        output ignores inputs, if needed."""
        return None
