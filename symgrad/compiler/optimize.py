"""`Program -> Program` clean-up passes run after `reverse`."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import sympy as sp

from symgrad.compiler.lower import Emitter
from symgrad.compiler.rules import operand_symbol
from symgrad.ir import Assign, Operand, Program, is_temporary
from symgrad.ops import OPS
from symgrad.shapes import ShapeError, broadcast

# `sympy.cancel` costs about a millisecond per operation of the expression it is
# given: these budgets bound `cancel`'s work on a large program (to well under a
# second), so that compile time stays linear in the program's size. They are
# about ten times what the course examples use (udl_toy: 8 candidates, 50
# operations in all).
MAX_CANCEL_OPS = 40
"""Adjoints larger than this are left as the chain rule built them: `cancel`'s cost
grows quickly with size, and the cancellations backprop courses teach are small."""
MAX_CANCEL_CANDIDATES = 100
"""At most this many adjoints are tried per program, nearest the output first."""
MAX_CANCEL_TOTAL_OPS = 400
"""The adjoints tried hold at most this many operations together."""


def _opaque(op: str) -> bool:
    """Not elementwise arithmetic (a tensor operation, a condition, a choice): kept as a name."""
    return not OPS[op].elementwise


def dce(program: Program, roots: set[str] | None = None) -> Program:
    """Remove assignments whose result nothing uses (user steps are always kept).

    `roots`, if given, replaces the output and the steps as what must be kept
    besides the gradients and tangents (a function that returns only those).
    """
    live = {program.output, *program.steps} if roots is None else set(roots)
    live |= {g for _, g in program.gradients + program.tangents if isinstance(g, str)}
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


def cancel(program: Program) -> Program:
    """Cancel what the chain rule multiplies in after dividing it out.

    Backprop through a logistic unit and its cross-entropy computes
    ∂L/∂z = a*(1 - a)*(-y/a + (1 - y)/(1 - a)) one local derivative at a time:
    six array operations where the hand-written code has `a - y`. Here an
    adjoint that divides is also built as one SymPy expression over forward
    values (the small backward values it reads substituted, the forward
    temporaries it reads expanded one level), and replaced by `sympy.cancel`
    of that when it takes fewer operations than the adjoint's own and keeps
    the adjoint's shape. Run on `value_and_grad`'s program only:
    `backward(tape, dy)` keeps every step of the chain rule for learners.
    The MAX_CANCEL_* budgets cap the SymPy work per program.
    """
    shapes = program.shapes()
    for output, seed in program.seeds:  # dy has the output's shape (dx, dy: each's)
        if isinstance(seed, str):
            shapes[seed] = shapes[output]
    readers = Counter(arg for a in program.backward for arg in a.args)
    readers.update(g for _, g in program.gradients)
    inlined = _inlined(program.backward, readers)
    # Bookkeeping on the IR first: SymPy is only called for the few candidates.
    size: dict[str, int] = {}  # operations in a small value's whole expression
    divides: set[str] = set()  # small values whose whole expression divides
    constant: set[str] = set()  # values of numbers only (the seed 1 spread by a sum)
    seeded: set[str] = set()  # small values whose whole expression reads a constant
    candidates = []
    for a in program.backward:
        if not _elementwise(a, shapes):
            continue
        parts = [arg for arg in a.args if arg in size]
        if 1 + sum(size[p] for p in parts) > MAX_CANCEL_OPS:
            continue
        size[a.name] = 1 + sum(size[p] for p in parts)
        values = a.args[:1] if a.op == "broadcast" else a.args  # not the shape's
        if all(isinstance(arg, int | float) or arg in constant for arg in values):
            constant.add(a.name)
            continue
        if any(p in constant or p in seeded for p in parts):
            seeded.add(a.name)
        # a sum of terms that read constants may collapse: -1*y + 1*a is a - y
        collapses = a.op in ("add", "sub") and a.name in seeded
        if collapses or a.op == "div" or any(p in divides for p in parts):
            divides.add(a.name)
            if a.name not in inlined:
                candidates.append(a.name)
    candidates = _within_budget(candidates, size)
    if not candidates:
        return program
    assigns = {a.name: a for a in program.backward}
    whole = _Builder(assigns, substitute=set(size))
    own = _Builder(assigns, substitute=inlined & set(size))
    forward = {a.name: a for a in program.forward}
    simpler: dict[str, sp.Expr] = {}
    for name in candidates:
        cancelled = _cancel(
            whole(name), own(name), assigns[name].shape, shapes, forward
        )
        if cancelled is not None:
            simpler[name] = cancelled
    if not simpler:
        return program
    taken = {*program.inputs, program.seed, *assigns}
    emitter = Emitter({t for t in taken if isinstance(t, str)}, program.forward, shapes)
    # dL_dz -> z, for the named values (a temporary may share its adjoint)
    holds = {g: v for v, g in reversed(program.adjoints) if not is_temporary(v)}
    for a in program.backward:
        if a.name in simpler:
            # ∂L/∂z for a named value's adjoint; the variable's own name otherwise
            v = holds.get(a.name)
            what = a.name if v is None else f"∂{program.output}/∂{v}"
            emitter.lower(
                simpler[a.name],
                name=a.name,
                note=f"{what} = {simpler[a.name]}   (simplified by sympy.cancel)",
                alias=False,
            )
        else:
            emitter.keep(a)
    return dce(replace(program, backward=tuple(emitter.body)))


def _within_budget(candidates: list[str], size: dict[str, int]) -> list[str]:
    """The first candidates (in program order) that fit the count and total-size budgets."""
    chosen, total = [], 0
    for name in candidates:
        if len(chosen) == MAX_CANCEL_CANDIDATES:
            break
        if total + size[name] <= MAX_CANCEL_TOTAL_OPS:
            chosen.append(name)
            total += size[name]
    return chosen


def _inlined(backward: tuple[Assign, ...], readers: Counter) -> set[str]:
    """Backward values read once, by elementwise arithmetic: part of their reader's expression."""
    reader = {arg: a for a in backward for arg in a.args if readers[arg] == 1}
    return {
        a.name for a in backward if a.name in reader and not _opaque(reader[a.name].op)
    }


def _elementwise(a: Assign, shapes: dict) -> bool:
    """Elementwise arithmetic, or a scalar spread over an array (which arithmetic
    broadcasts anyway; `_cancel` checks that the result keeps its shape)."""
    if a.op == "broadcast":
        return shapes.get(a.args[0], ()) == ()
    return not _opaque(a.op)


class _Builder:
    """Backward values as SymPy expressions, the names in `substitute` replaced
    by their own expressions (memoized: each is built once)."""

    def __init__(self, assigns: dict[str, Assign], substitute: set[str]):
        self.assigns, self.substitute = assigns, substitute
        self.memo: dict[str, sp.Expr] = {}

    def __call__(self, name: str) -> sp.Expr:
        if name not in self.memo:
            a = self.assigns[name]
            if a.op == "broadcast":
                self.memo[name] = self.operand(a.args[0])
            else:
                self.memo[name] = OPS[a.op].meaning(*map(self.operand, a.args))
        return self.memo[name]

    def operand(self, arg: Operand) -> sp.Expr:
        if arg in self.substitute:
            return self(arg)
        return operand_symbol(arg)


def _cancel(
    whole: sp.Expr, own: sp.Expr, shape: tuple, shapes: dict, forward: dict
) -> sp.Expr | None:
    """A form of `whole` with the same shape that costs fewer operations than `own`.

    `whole` is an adjoint over forward values; `own` the same adjoint over the
    values its own lines read (what it costs as the chain rule built it).
    """
    if whole.has(sp.Float, sp.Piecewise):
        return None
    expanded = whole.xreplace(
        {s: _expanded(s.name, forward) for s in whole.free_symbols}
    )
    cancelled = sp.factor_terms(sp.cancel(expanded))
    if sp.count_ops(cancelled) >= sp.count_ops(own):
        return None
    try:
        if broadcast(*(shapes[s.name] for s in cancelled.free_symbols)) != shape:
            return None
    except ShapeError:
        return None
    return cancelled


def _expanded(name: str, forward: dict[str, Assign]) -> sp.Expr:
    """A forward temporary as the operation that defines it (`t5` as `1 - a`).

    One level only: named steps and inputs are what the expression is written
    in, and a deeper expansion could pull in a whole one-step expression.
    """
    a = forward.get(name)
    if a is None or not is_temporary(name) or _opaque(a.op):
        return operand_symbol(name)
    return OPS[a.op].meaning(*map(operand_symbol, a.args))


def spread_scalars(program: Program) -> Program:
    """A scalar spread over an array only for elementwise arithmetic is the scalar.

    The adjoint of a mean is its seed divided by the size, spread over the
    array: `t6 = dy / t4.size; dL_dt4 = _broadcast(t6, t4); t7 = 2 * dL_dt4`.
    Where every value computed from the spread array keeps its shape without
    it (NumPy broadcasts the scalar where it meets an array) and no tensor
    operation or gradient reads one whose shape would change, the uses read
    `t6` itself. The size is then of a value of the same shape that the
    backward pass reads anyway (`t3.size`, not a `t4` kept on the tape for it).
    """
    shapes = program.shapes()
    for output, seed in program.seeds:  # dy has the output's shape (dx, dy: each's)
        if isinstance(seed, str):
            shapes[seed] = shapes[output]
    roots = {g for _, g in program.gradients if isinstance(g, str)}
    replaced: dict[str, Operand] = {}
    now = shapes
    for a in program.backward:
        if (
            a.op == "broadcast"
            and shapes.get(a.args[0], ()) == ()
            and a.name not in roots
        ):
            trial = {**replaced, a.name: a.args[0]}
            kept = _kept_shapes(program.backward, trial, shapes, roots)
            if kept is not None:
                replaced, now = trial, kept
    if not replaced:
        return program
    backward, note = [], ""
    for a in program.backward:
        if a.name in replaced:  # gone: its comment goes to the next line
            note = note or a.note
            continue
        if any(x in replaced for x in a.args):
            args = tuple(replaced.get(x, x) for x in a.args)
            a = replace(a, args=args, shape=now[a.name])
        if note and not a.note:
            a, note = replace(a, note=note), ""
        backward.append(a)
    program = dce(replace(program, backward=tuple(backward)))
    return _sizes_of_read_values(program, now)


def _kept_shapes(
    backward, replaced: dict, shapes: dict, roots: set[str]
) -> dict | None:
    """The shapes once each replaced name reads as its replacement; None if a
    shape that matters changes (a tensor operation's operand, a gradient)."""
    now = dict(shapes)
    for a in backward:
        if a.name in replaced:
            continue
        args = [replaced.get(x, x) for x in a.args]
        changed = any(isinstance(x, str) and now[x] != shapes[x] for x in args)
        if not (changed or args != list(a.args)):
            continue
        if not OPS[a.op].elementwise:
            return None
        try:
            now[a.name] = broadcast(*(now[x] for x in args if isinstance(x, str)))
        except ShapeError:
            return None
        if now[a.name] != shapes[a.name] and a.name in roots:
            return None
    return now


def _sizes_of_read_values(program: Program, shapes: dict) -> Program:
    """`size(t4)` as `size(t3)` when t3 has t4's shape and the backward pass reads
    it anyway (so the tape need not keep t4 for its size)."""
    forward = set(program.inputs) | {a.name for a in program.forward}
    read = [
        x for a in program.backward if a.op != "size" for x in a.args if x in forward
    ]
    backward = []
    for a in program.backward:
        if a.op == "size" and a.args[0] not in read:
            same = next((x for x in read if shapes.get(x) == shapes[a.args[0]]), None)
            if same is not None:
                a = replace(a, args=(same,))
        backward.append(a)
    return replace(program, backward=tuple(backward))
