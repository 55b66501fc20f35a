"""The one intermediate representation: a flat list of single-operation assignments.

`Assign` is one line of generated code (`h1 = sin(f0)`); `Program` is the whole
forward pass, and after `reverse` also the backward pass. Both are frozen;
passes build new values. Besides the op registry (for `verify`'s arities) this module imports nothing
of symgrad.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from symgrad.ops import OPS

Operand = str | int | float
"""A name defined earlier in the program, or a numeric constant."""


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
    or the constant 1), and from `extra_seeds` where several outputs are
    seeded; `gradients` maps each `wrt` name to the operand that holds its
    gradient, `adjoints` every value's adjoint (teaching tools read them by
    these names).
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
    extra_seeds: tuple[tuple[str, Operand], ...] = ()
    """(o, the parameter holding ∂L/∂o) for each further output o of a backward
    pass that differentiates L = Σ ∂L/∂o·o over several outputs (`seeds`)."""
    adjoints: tuple[tuple[str, Operand], ...] = ()
    """(v, the operand holding ∂output/∂v) for every value the backward pass reaches."""
    tangents: tuple[tuple[str, Operand], ...] = ()
    """(v, the operand holding v̇, its directional derivative) after forward mode."""

    @cached_property  # read for every gradient: a chain has thousands of inputs
    def input_names(self) -> frozenset[str]:
        """The inputs, as a set."""
        return frozenset(self.inputs)

    @property
    def seeds(self) -> tuple[tuple[str, Operand], ...]:
        """(output, its seed) for every output the backward pass starts from."""
        return ((self.output, self.seed), *self.extra_seeds)

    @property
    def backward_operations(self) -> int:
        """The operations of the backward pass (a copy giving an input's adjoint its
        name, `dy_dbeta0 = dy_df0`, is no operation)."""
        return sum(a.op != "copy" for a in self.backward)

    @cached_property
    def _copies(self) -> dict[str, Operand]:
        return {a.name: a.args[0] for a in self.backward if a.op == "copy"}

    def copied(self, operand: Operand) -> Operand:
        """The operand a chain of copies (`dy_dw = x`) starts from."""
        while isinstance(operand, str) and operand in self._copies:
            operand = self._copies[operand]
        return operand

    @cached_property  # read for every gradient: a chain has thousands of inputs
    def tensor(self) -> bool:
        """Whether any input is declared with a shape (else: scalars, batched at call time)."""
        return any(self.input_shapes)

    def shapes(self) -> dict[str, tuple[int | str, ...]]:
        """The declared or inferred shape of every name; a seed (dy, or dx, dy,
        ... for several outputs) has its output's."""
        shapes = dict(zip(self.inputs, self.input_shapes, strict=True))
        shapes.update((a.name, a.shape) for a in self.forward)
        if self.gradients:
            shapes.update(
                (seed, shapes[output])
                for output, seed in self.seeds
                if isinstance(seed, str)
            )
        shapes.update((a.name, a.shape) for a in self.backward)
        return shapes

    def __str__(self) -> str:
        lines = [f"{self.name}({', '.join(self.inputs)}) -> {self.output}"]
        lines += [f"  {a}" for a in self.forward]
        if self.gradients:
            seeds = f"seed {self.seed}"
            if self.extra_seeds:
                seeds = "seeds " + ", ".join(f"{o}: {s}" for o, s in self.seeds)
            lines.append(f"  -- backward ({seeds})")
            lines += [f"  {a}" for a in self.backward]
            lines += [f"  grad {w} = {g}" for w, g in self.gradients]
        lines += [f"  tangent {v} = {t}" for v, t in self.tangents]
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
            for _, seed in self.seeds:
                if isinstance(seed, str):
                    _define(seed, defined)
            _check_body(self.backward, defined)
            for wrt, grad in self.gradients:
                if wrt not in self.inputs:
                    raise ValueError(f"gradient for {wrt!r}, which is not an input")
                _check_uses([grad], defined, f"gradient of {wrt}")
        for value, tangent in self.tangents:
            _check_uses([tangent], defined, f"tangent of {value}")


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
        if a.op not in OPS:
            raise ValueError(f"{a}: unknown operation {a.op!r}")
        op = OPS[a.op]
        if len(a.args) != op.arity and not (op.variadic and len(a.args) > op.arity):
            raise ValueError(f"{a}: {a.op} takes {op.arity} operands")
        _check_uses(a.args, defined, str(a))
        _define(a.name, defined)


def uses(body: Iterable[Assign]) -> set[str]:
    """Every name read by some assignment of `body`."""
    return {arg for a in body for arg in a.args if isinstance(arg, str)}


def readers_of(body: Iterable[Assign]) -> defaultdict[str, list[Assign]]:
    """The assignments of `body` that read each name, in order (each once)."""
    found: defaultdict[str, list[Assign]] = defaultdict(list)
    for a in body:
        for x in dict.fromkeys(a.args):
            if isinstance(x, str):
                found[x].append(a)
    return found
