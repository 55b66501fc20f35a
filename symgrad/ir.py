"""The one intermediate representation: a flat list of single-operation assignments.

`Assign` is one line of generated code (`h1 = sin(f0)`); `Program` is the whole
forward pass, and after `reverse` also the backward pass. Both are frozen;
passes build new values. This module imports nothing of symgrad.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

Operand = str | int | float
"""A name defined earlier in the program, or a numeric constant."""

# Every operation the IR knows, with its number of operands.
ARITY: dict[str, int] = {
    # arithmetic
    "copy": 1, "neg": 1, "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2,
    # elementwise functions
    "exp": 1, "log": 1, "sqrt": 1, "sin": 1, "cos": 1, "tan": 1,
    "sinh": 1, "cosh": 1, "tanh": 1, "asin": 1, "acos": 1, "atan": 1,
    "atan2": 2, "erf": 1, "abs": 1, "sign": 1, "max": 2, "min": 2,
    "sigmoid": 1, "softplus": 1, "relu": 1,
    # heaviside(x, h0): 0 for x < 0, h0 at 0, 1 for x > 0
    "heaviside": 2,
    # comparisons, logic and selection (Piecewise)
    "gt": 2, "ge": 2, "lt": 2, "le": 2, "eq": 2, "ne": 2,
    "and": 2, "or": 2, "not": 1, "where": 3,
    # tensor operations; `params` holds their static arguments
    "matmul": 2, "transpose": 1,
    "sum": 1,  # params (axis, keepdims); axis None, an int or a tuple of ints
    "mean": 1,  # params (axis,)
    "index": 1,  # params (key,): ints and (start, stop, step) slices
    "softmax": 1, "logsumexp": 1,  # params (axis,)
    # only in backward passes
    "scatter": 2,  # scatter(g, like) params (key,): zeros like `like`, g at key
    "broadcast": 2,  # broadcast(g, like) params (axis,): g expanded at axis, to like's shape
    "outer": 2, "size": 1,
}  # fmt: skip

TENSOR = frozenset({"matmul", "transpose", "sum", "mean", "index", "softmax", "logsumexp",
                    "scatter", "broadcast", "outer", "size"})  # fmt: skip

COMMUTATIVE = frozenset({"add", "mul", "max", "min", "eq", "ne", "and", "or"})


@dataclass(frozen=True)
class Assign:
    """`name = op(*args; params)` of the given shape; `note` is the math it starts."""

    name: str
    op: str
    args: tuple[Operand, ...]
    note: str = ""
    params: tuple = ()
    shape: tuple[int | str, ...] = ()

    def __str__(self) -> str:
        params = f"; {', '.join(map(repr, self.params))}" if self.params else ""
        shape = f"  # {list(self.shape)}" if self.shape else ""
        return (
            f"{self.name} = {self.op}({', '.join(map(str, self.args))}{params}){shape}"
        )


@dataclass(frozen=True)
class Program:
    """A straight-line program: the forward pass and, once reversed, the backward pass.

    `forward` computes `output` from `inputs`; `backward` computes the adjoint
    of every name in `wrt` from the forward values and the seed `dy` (a name
    or the constant 1); `gradients` maps each `wrt` name to the operand that
    holds its gradient.
    """

    name: str
    inputs: tuple[str, ...]
    input_shapes: tuple[tuple[int | str, ...], ...]
    steps: tuple[str, ...]
    output: str
    wrt: tuple[str, ...]
    forward: tuple[Assign, ...]
    backward: tuple[Assign, ...] = ()
    gradients: tuple[tuple[str, Operand], ...] = ()
    seed: Operand = "dy"

    @property
    def tensor(self) -> bool:
        """Whether any input is declared with a shape (else: scalars, batched at call time)."""
        return any(self.input_shapes)

    def shapes(self) -> dict[str, tuple[int | str, ...]]:
        """The declared or inferred shape of every name."""
        shapes = dict(zip(self.inputs, self.input_shapes, strict=True))
        shapes.update((a.name, a.shape) for a in self.forward + self.backward)
        return shapes

    def __str__(self) -> str:
        lines = [f"{self.name}({', '.join(self.inputs)}) -> {self.output}"]
        lines += [f"  {a}" for a in self.forward]
        if self.gradients:
            lines.append(f"  -- backward (seed {self.seed})")
            lines += [f"  {a}" for a in self.backward]
            lines += [f"  grad {w} = {g}" for w, g in self.gradients]
        return "\n".join(lines)

    def verify(self) -> None:
        """Raise ValueError unless every name is defined once, before use, with the right arity."""
        defined = set(self.inputs)
        _check_body(self.forward, defined)
        if self.output not in defined:
            raise ValueError(f"output {self.output!r} is never defined")
        for step in self.steps:
            if step not in defined:
                raise ValueError(f"step {step!r} is never defined")
        if self.gradients:
            if isinstance(self.seed, str):
                _define(self.seed, defined)
            _check_body(self.backward, defined)
            for wrt, grad in self.gradients:
                if wrt not in self.inputs:
                    raise ValueError(f"gradient for {wrt!r}, which is not an input")
                _check_uses([grad], defined, f"gradient of {wrt}")


_TEMPORARY = re.compile(r"t\d+\Z")


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary of the Emitter (t0, t1, ...), never a user's name."""
    return _TEMPORARY.match(name) is not None


def _define(name: str, defined: set[str]) -> None:
    if name in defined:
        raise ValueError(f"{name!r} is defined twice")
    defined.add(name)


def _check_uses(args: Iterable[Operand], defined: set[str], where: str) -> None:
    for arg in args:
        if isinstance(arg, str) and arg not in defined:
            raise ValueError(f"{where} uses {arg!r} before it is defined")


def _check_body(body: Iterable[Assign], defined: set[str]) -> None:
    for a in body:
        if a.op not in ARITY:
            raise ValueError(f"{a}: unknown operation {a.op!r}")
        if len(a.args) != ARITY[a.op]:
            raise ValueError(f"{a}: {a.op} takes {ARITY[a.op]} operands")
        _check_uses(a.args, defined, str(a))
        _define(a.name, defined)


def uses(body: Iterable[Assign]) -> set[str]:
    """Every name read by some assignment of `body`."""
    return {arg for a in body for arg in a.args if isinstance(arg, str)}
