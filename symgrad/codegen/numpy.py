"""The `numpy` target: NumPy arrays (and anything NumPy dispatches to: Dask, CuPy)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np

from symgrad.codegen.backend import Backend, Gradient
from symgrad.codegen.printer import Printer
from symgrad.ir import Assign, Operand, Program
from symgrad.ops import OPS

_CALL = re.compile(r"[\w.]+\(")


@dataclass(frozen=True)
class NumpyBackend(Backend):
    def prepared(self, program: Program) -> Program:
        """Each division of two values that may be Python numbers printed `np.divide`.

        A scalar input may be a Python float, and Python's operators keep it one
        (`w * x`); Python's / then raises ZeroDivisionError where NumPy returns
        inf or nan with a RuntimeWarning. Every other division keeps the `/` that
        is fastest at one point: a NumPy scalar or array on either side is enough.
        """
        if all(a.op != "div" for a in program.forward + program.backward):
            return program  # nothing to look at (a long expression often has no /)
        shapes = program.shapes()
        numbers = {name for name in program.inputs if not shapes[name]}
        numbers.update(  # backward's dy (dx, dy, ... for several outputs)
            seed for o, seed in program.seeds if isinstance(seed, str) and not shapes[o]
        )
        body = []
        for a in program.forward + program.backward:
            if a.op == "div" and all(_operands_in(a, numbers)):
                a = replace(a, params=(True,))  # np.divide: a NumPy scalar
            elif not a.shape and self._gives_number(a, numbers):
                numbers.add(a.name)
            body.append(a)
        split = len(program.forward)
        return replace(
            program, forward=tuple(body[:split]), backward=tuple(body[split:])
        )

    def _gives_number(self, a: Assign, numbers: set[str]) -> bool:
        """Whether `a` may be a Python number: a size (`x.size`) is a Python int, and
        Python's operators (`w * x`, `-x`, `x**2`) on Python numbers give one; any
        other call gives a NumPy scalar or array."""
        if a.op == "size":
            return True
        calls = _calls("numpy", a.op, len(a.args), a.params)
        return not calls and all(_operands_in(a, numbers))

    def gradient(
        self, program: Program, name: str, grad: Operand, one_point: bool = False
    ) -> Gradient:
        """Each gradient summed back to its input's shape (a batch broadcasts).

        `one_point`: the output is 0-d, so every input it depends on is 0-d too
        and only the gradients of inputs it does not depend on need a shape.
        """
        plain = super().gradient(program, name, grad)
        # an input returned as a gradient (∂(x*y)/∂x = y) is copied: the caller owns it
        copy = ", copy=True" if program.copied(grad) in program.input_names else ""
        if not program.tensor and not (one_point and grad != 0):
            return Gradient(
                f"_sum_to({plain.text}, np.shape({name}), np.shape({program.output}){copy})",
                plain.reads | {name, program.output},
                frozenset({"_sum_to", "_owned"}),
            )
        if program.tensor and grad == 0:
            return Gradient(f"np.zeros(np.shape({name}))", frozenset({name}))
        if program.tensor and copy:
            return Gradient(f"np.copy({plain.text})", plain.reads)
        return plain

    def returned(self, program: Program) -> str:
        """Tensor gradients are made the caller's own: writable float arrays (a sum's
        adjoint is a read-only broadcast view, and integer inputs give integers)."""
        return "map(_owned, gradients)" if program.tensor else "gradients"

    def tangent(self, program: Program, name: str, tangent: Operand) -> str:
        """A tangent 0 has its output's shape (a batch's, for a scalar spec)."""
        if isinstance(tangent, str):
            return tangent
        return f"np.zeros(np.shape({name}))"


@cache
def _calls(target: str, op: str, arity: int, params: tuple) -> tuple[str, ...]:
    """The functions `op` calls as `target` prints it (`np.exp(`), in order."""
    operands = tuple(f"x{i}" for i in range(arity))
    return tuple(_CALL.findall(Printer(target).expression(op, operands, params)))


def _operands_in(a: Assign, names: set[str]):
    """For each operand of `a`, whether it is a constant or one of `names`."""
    return (not isinstance(x, str) or x in names for x in a.args)


NUMPY = NumpyBackend(
    "numpy",
    value_type="Any",
    tensors=True,
    frees_arrays=True,
    one_point=True,
    arrays=True,
    in_place=True,
)


def function(
    op: str, params: tuple = (), arity: int | None = None
) -> Callable[..., Any]:
    """The operation `op` (with its static `params`, of `arity` operands when
    it takes any number) as a NumPy function, compiled from its printed form.

    Teaching tools evaluate formulas with it, so a value and the code that
    computes it can never disagree.
    """
    printer = Printer(NUMPY.name)
    names = [f"x{i}" for i in range(arity or OPS[op].arity)]
    text = printer.expression(op, tuple(names), params)
    namespace: dict[str, Any] = {"np": np}
    for module in sorted(printer.imports):
        namespace[module.partition(".")[0]] = importlib.import_module(module)
    for source in printer.helper_sources():
        exec(source, namespace)  # noqa: S102 (symgrad's own helpers)
    return eval(f"lambda {', '.join(names)}: {text}", namespace)  # noqa: S307
