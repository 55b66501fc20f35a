"""What a code-generation target declares: the `Backend` interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from symgrad.codegen.printer import Line, Printer
from symgrad.compiler.reverse import Guard
from symgrad.ir import Assign, Operand, Program
from symgrad.ops import Code


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
    `codes` are its printed forms (None: the registry's `Op.code[name]`) and
    `refused` the operations it cannot print, each with the reason; `taken` the
    names its modules use (its engine's import), which a spec cannot take.
    """

    name: str
    value_type: str
    tensors: bool
    frees_arrays: bool = False
    one_point: bool = False
    branches: bool = False
    arrays: bool = False
    codes: Mapping[str, Code] | None = field(default=None, compare=False, hash=False)
    refused: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    taken: frozenset[str] = frozenset()
    # value_and_grad of a tensor spec writes into an array not needed again (out=)
    in_place: bool = False
    higher: bool = True  # prints jvp, hvp and hessian
    several_outputs: bool = True  # a spec with `outputs: [x, y]`
    # value_and_grad and grad of a tensor spec run their elementwise steps in
    # fused loops (`codegen.loops`), printed in these forms (None: no loops)
    loop_codes: Mapping[str, Code] | None = field(
        default=None, compare=False, hash=False
    )
    template: str = "module.py.j2"  # in the folder of its name
    # what a tensor spec's module takes (its docstring says)
    accepts: str = (
        "Arguments may be NumPy arrays or any array type NumPy dispatches to, such "
        "as Dask or CuPy; lists and tuples are made arrays."
    )

    def fuses(self, a: Assign) -> bool:
        """Whether a fused loop computes the elementwise step `a` (with `loop_codes`)."""
        return False

    def for_program(self, program: Program) -> Backend:
        """The backend that prints `program` (a target may print tensor specs
        through another)."""
        return self

    def printer(self) -> Printer:
        """A printer of this target's forms."""
        return Printer(self.name, self.codes, self.refused)

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
        """`y = y + _batch(x)`: on an array target, a scalar spec called with a batch
        of x returns a batch even where the output (or the value `name`) does not
        depend on x (as broadcasting would)."""
        if not self.tensors or program.tensor or not ignored:
            return None
        out = name or program.output
        return f"{out} = {out} + _batch({', '.join(ignored)})"
