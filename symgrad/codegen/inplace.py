"""`(assigns, ...) -> {name: operand}`: which lines may write into an operand's memory.

A tensor spec's value_and_grad makes one array per operation, as NumPy code
written line by line does; where an operand is not needed again, a NumPy
ufunc can write its result there instead (`np.subtract(a, b, out=a)`), as a
hand-written backward pass does with `a -= b`. That saves the allocation and
the page faults of a fresh array, which for large arrays cost as much as the
arithmetic.

Only where it is safe whatever the arguments' dtypes and array types:

* the operand is an array this function made with a ufunc (never an argument,
  a view, or a value something else still holds) and is read nowhere later;
* every other reader of it made a new array too (a view would see the write);
* it has the result's shape (known: a tensor spec's shapes are declared),
  rank 1 or more (a 0-d result is a NumPy scalar, which has no memory to reuse);
* it is floating point whatever the inputs' dtypes (a ufunc result for integer
  arguments is float, or an operand is), so a float result never lands in
  integers; and it depends on every argument (and upstream gradient dy) the
  other operands depend on: it is at least as wide as they are, so NumPy would
  have given the result its dtype anyway, and of their array type (a Dask
  argument makes it a Dask array: a NumPy array cannot take a Dask result).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from symgrad.codegen.printer import Printer
from symgrad.ir import Assign, Operand, Program, readers_of
from symgrad.ops import OPS


def in_place(
    program: Program,
    assigns: tuple[Assign, ...],
    printer: Printer,
    fused: frozenset[str],
    keep: set[str],
) -> dict[str, str]:
    """For each assignment of `assigns` (one function's lines, in order) that can
    write into an operand, that operand. `fused` names are printed inside the
    line that reads them, and `keep` are read after the lines (the returned values)."""
    shapes = program.shapes()
    kinds = _kinds(program)
    floating = _floating(program, printer)
    line_of = _line_positions(assigns, fused)
    last: dict[str, int] = {}
    for a in assigns:
        for x in a.args:
            if isinstance(x, str):
                last[x] = max(last.get(x, -1), line_of[a.name])
    readers = readers_of(assigns)
    made: set[str] = set()  # arrays a line of this function made with a ufunc
    into: dict[str, str] = {}
    for a in assigns:
        ufunc = _ufunc(printer, a.op)
        if ufunc is None:
            continue
        made.add(a.name)
        if a.name in fused or not _elementwise(ufunc) or _elided(a, fused, shapes):
            continue
        for x in a.args:
            if (
                isinstance(x, str)
                and x in made
                and x not in fused
                and x not in keep
                and last[x] == line_of[a.name]
                and a.args.count(x) == 1
                and shapes[x] == shapes[a.name]
                and shapes[x] != ()
                and floating[x]
                and all(kinds[x] >= kinds[y] for y in a.args if isinstance(y, str))
                and all(_fresh(printer, r.op) for r in readers[x])
            ):
                into[a.name] = x
                break
    return into


def _elided(a: Assign, fused: frozenset[str], shapes: dict) -> bool:
    """Whether NumPy reuses a temporary of `a`'s already: an operand printed inline
    (no name holds it) of the result's shape, on the left or of a commutative op."""
    return any(
        x in fused and shapes[x] == shapes[a.name] and (i == 0 or OPS[a.op].commutative)
        for i, x in enumerate(a.args)
    )


def _line_positions(
    assigns: tuple[Assign, ...], fused: frozenset[str]
) -> dict[str, int]:
    """The line each assignment is printed in: its own, or (fused) its reader's."""
    reader = {x: a.name for a in assigns for x in a.args if x in fused}
    position = {a.name: i for i, a in enumerate(assigns)}
    line = {}
    for a in reversed(assigns):
        line[a.name] = line[reader[a.name]] if a.name in reader else position[a.name]
    return line


def _kinds(program: Program) -> dict[Operand, frozenset[str]]:
    """The arguments and upstream gradients each value depends on."""
    kinds = {name: frozenset({name}) for name in program.inputs}
    kinds.update(
        (seed, frozenset({"seed"}))
        for _, seed in program.seeds
        if isinstance(seed, str)
    )
    for a in program.forward + program.backward:
        kinds[a.name] = frozenset().union(
            *(kinds[x] for x in a.args if isinstance(x, str))
        )
    return kinds


def _floating(program: Program, printer: Printer) -> dict[str, bool]:
    """Whether each value is floating point whatever the arguments' dtypes (the
    upstream gradients are: value_and_grad makes them float)."""
    floating = {name: False for name in program.inputs}
    floating.update((seed, True) for _, seed in program.seeds if isinstance(seed, str))
    for a in program.forward + program.backward:
        op, ufunc = OPS[a.op], _ufunc(printer, a.op)
        if ufunc is not None and _float_for_integers(ufunc):
            floating[a.name] = True
        elif op.differentiable and not op.structural:  # not a test, size or index
            floating[a.name] = any(
                floating[x] if isinstance(x, str) else isinstance(x, float)
                for x in a.args
            )
        else:
            floating[a.name] = False
    return floating


def _ufunc(printer: Printer, op: str) -> str | None:
    """The NumPy ufunc `op` prints as, if any."""
    code = printer.codes.get(op)
    return None if code is None else code.ufunc


def _fresh(printer: Printer, op: str) -> bool:
    """Whether `op`'s value is never a view of an operand: a ufunc's new array,
    or a count."""
    return _ufunc(printer, op) is not None or OPS[op].structural


@cache
def _elementwise(ufunc: str) -> bool:
    """Whether the ufunc works element by element (np.matmul does not)."""
    return _numpy(ufunc).signature is None


@cache
def _float_for_integers(ufunc: str) -> bool:
    """Whether the ufunc gives floats for integer arguments (np.exp, np.divide)."""
    function = _numpy(ufunc)
    return function(*[np.ones(1, dtype=int)] * function.nin).dtype.kind == "f"


def _numpy(ufunc: str) -> np.ufunc:
    return getattr(np, ufunc.removeprefix("np."))
