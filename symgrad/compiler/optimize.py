"""`Program -> Program` clean-up passes run after `reverse`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import sympy as sp

from symgrad.compiler.lower import Emitter
from symgrad.compiler.rules import operand_symbol
from symgrad.ir import Assign, Operand, Program, is_temporary, readers_of
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
    `t6` itself. A broadcast of a value that so becomes a scalar spreads a
    scalar too, and goes the same way: the adjoint of `mean(sum(Z**2, axis=0))`
    spreads `dy / t8.size` over t8, then that over Z's axis 0, and both
    `_broadcast`s go. The size is then of a value of the same shape that the
    backward pass reads anyway (`t3.size`, not a `t4` kept on the tape for it).
    """
    shapes = program.shapes()
    roots = {g for _, g in program.gradients if isinstance(g, str)}
    replaced: dict[str, Operand] = {}
    now = shapes
    for a in program.backward:
        if (
            a.op == "broadcast"
            and a.name not in replaced
            and shapes.get(a.args[0], ()) == ()
            and a.name not in roots
        ):
            kept = _kept_shapes(
                program.backward, {**replaced, a.name: a.args[0]}, shapes, roots
            )
            if kept is not None:
                replaced, now = kept
    if not replaced:
        return program
    backward, reading = _substituted(program.backward, replaced, now)
    program = dce(replace(program, backward=tuple(backward)))
    program = _scalars_first(program, reading, now)
    return _without_unit_factors(_sizes_of_read_values(program, now))


def _without_unit_factors(program: Program) -> Program:
    """A product with the number 1 is its other factor, and one of two numbers
    is a number: the seed 1 a sum spreads leaves `dL_dt0 = 1 * t1` (a pass
    over the array) and `2 * 1 * r`. A temporary goes (its readers read the
    factor; its comment passes on); a named adjoint stays as a copy
    (`dL_dt0 = t1`, no pass), for the comments that name it."""
    roots = {g for _, g in program.gradients}
    same: dict[str, Operand] = {}  # a temporary that goes -> its factor
    copies: dict[str, Operand] = {}  # a named product -> its factor
    for a in program.backward:
        args = [same.get(x, x) for x in a.args]
        numbers = [x for x in args if not isinstance(x, str)]
        if a.op != "mul" or not numbers or (len(numbers) == 1 and numbers[0] != 1):
            continue
        factor = (
            args[0] * args[1]
            if len(numbers) == 2
            else next(x for x in args if isinstance(x, str))
        )
        if is_temporary(a.name) and a.name not in roots:
            same[a.name] = factor
        else:
            copies[a.name] = factor
    if not same and not copies:
        return program
    body = [
        replace(a, op="copy", args=(copies[a.name],), params=())
        if a.name in copies
        else a
        for a in program.backward
    ]
    backward, _ = _substituted(body, same, program.shapes())
    return dce(replace(program, backward=tuple(backward)))


def _scalars_first(program: Program, reading: set[str], shapes: dict) -> Program:
    """`(2 * Z) * s` as `(2 * s) * Z` in the products in `reading` (those that
    read a spread scalar s): the scalars multiply first, the array once.

    The product of a number and an array, `t = 2 * Z`, read only there (and no
    adjoint's name), becomes the product of the scalars, moved to just before
    its reader."""
    readers = Counter(arg for a in program.backward for arg in a.args)
    readers.update(g for _, g in program.gradients)
    adjoints = {g for _, g in program.adjoints}
    assigns = {a.name: a for a in program.backward}

    def scalar(x: Operand) -> bool:
        return shapes.get(x, ()) == ()

    moved: dict[str, tuple[Assign, Assign]] = {}  # reader -> (the scalars', its own)
    for a in program.backward:
        if a.op != "mul" or a.name not in reading:
            continue
        for inner, s in (a.args, a.args[::-1]):
            t = assigns.get(inner)
            if t is None or t.op != "mul" or t.note or not scalar(s):
                continue
            if readers[inner] != 1 or inner in adjoints:
                continue
            c, x = sorted(t.args, key=lambda y: not scalar(y))  # a scalar first
            if scalar(c) and not scalar(x):
                moved[a.name] = (
                    replace(t, args=(c, s), shape=()),
                    replace(a, args=(inner, x)),
                )
                break
    if not moved:
        return program
    gone = {t.name for t, _ in moved.values()}
    backward = []
    for a in program.backward:
        if a.name not in gone:
            backward.extend(moved.get(a.name, (a,)))
    return replace(program, backward=tuple(backward))


def _kept_shapes(
    backward, replaced: dict, shapes: dict, roots: set[str]
) -> tuple[dict, dict] | None:
    """The replacements, with every broadcast of a value that becomes a scalar
    added (the scalar), and the shapes once each replaced name reads as its
    replacement; None if a shape that matters changes (a tensor operation's
    operand, a gradient)."""
    replaced, now = dict(replaced), dict(shapes)
    for a in backward:
        if a.name in replaced:
            continue
        args = [replaced.get(x, x) for x in a.args]
        changed = any(isinstance(x, str) and now[x] != shapes[x] for x in args)
        if not (changed or args != list(a.args)):
            continue
        if a.op == "broadcast" and a.name not in roots and now.get(args[0], ()) == ():
            replaced[a.name] = args[0]
            continue
        if not OPS[a.op].elementwise:
            return None
        try:
            now[a.name] = broadcast(*(now[x] for x in args if isinstance(x, str)))
        except ShapeError:
            return None
        if now[a.name] != shapes[a.name] and a.name in roots:
            return None
    return replaced, now


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


def negate_sums(program: Program) -> Program:
    """A negated array read only by a sum: the sum of the array, negated.

    The adjoint of `mu` in `X - mu` is `np.sum(-g, axis=0)`: it negates the
    whole of g, of X's shape, to sum it to mu's. `-np.sum(g, axis=0)` negates
    the sum (exactly: negation commutes with rounding). The two lines swap
    their operations and keep their names: `t = -g; d = sum(t)` becomes
    `t = sum(g); d = -t`.
    """
    readers = Counter(arg for a in program.backward for arg in a.args)
    readers.update(g for _, g in program.gradients)
    adjoints = {g for _, g in program.adjoints}
    negated = {
        a.name: a.args[0]
        for a in program.backward
        if a.op == "neg" and readers[a.name] == 1 and a.name not in adjoints
    }
    summed = {
        a.args[0]: a for a in program.backward if a.op == "sum" and a.args[0] in negated
    }
    if not summed:
        return program
    backward = []
    for a in program.backward:
        if a.name in summed:  # t = -g, read by d = sum(t): t = sum(g)
            total = summed[a.name]
            a = replace(
                a,
                op="sum",
                args=(negated[a.name],),
                params=total.params,
                shape=total.shape,
            )
        elif a.op == "sum" and a.args[0] in summed:  # d = sum(t): d = -t
            a = replace(a, op="neg", params=())
        backward.append(a)
    return replace(program, backward=tuple(backward))


def drop_trils(program: Program) -> Program:
    """tril where the triangle it zeroes is zero already, or never read.

    `solve_triangular(L, b)` is `solve(tril(L), b)`, and the adjoint of that
    tril is `tril(ḡ)`. Where L is lower triangular already (a Cholesky
    factor, a tril), the forward tril is L. And a tril of which only the lower
    triangle is read is its operand: cholesky's VJP reads only that of its
    cotangent L̄ (the lower triangle of Lᵀ L̄, and its diagonal); the values are
    the same unless that upper triangle holds an inf or a nan (0 · inf). For
    value_and_grad: backward(tape, dy) keeps both, so that its adjoint of L
    is the one the steps define (zero above the diagonal; `explain` shows it).
    """
    defined = {a.name: a for a in program.forward + program.backward}
    shapes = program.shapes()
    named = {*program.steps, *(g for _, g in program.gradients)}  # these stay

    def zero_above(x: Operand) -> float:
        """The diagonal above which x is zero (infinity where not known)."""
        a = defined.get(x)
        if a is not None and a.op == "cholesky":
            return 0
        if a is not None and a.op == "tril":
            return a.params[0]
        return float("inf")

    same = {
        a.name: a.args[0]
        for a in program.forward + program.backward
        if a.op == "tril"
        and a.name not in named
        and zero_above(a.args[0]) <= a.params[0]
    }
    lower = _read_below_diagonal(program, defined, shapes, zero_above)
    same.update(
        (a.name, a.args[0])
        for a in program.backward
        if a.op == "tril" and a.params[0] >= 0 and a.name in lower
    )
    if not same:
        return program
    for name, x in same.items():  # tril(tril(L)): both read as L
        while x in same:
            x = same[x]
        same[name] = x
    forward, _ = _substituted(program.forward, same, shapes)
    backward, _ = _substituted(program.backward, same, shapes)
    return dce(replace(program, forward=tuple(forward), backward=tuple(backward)))


def _read_below_diagonal(
    program: Program,
    defined: dict,
    shapes: dict,
    zero_above: Callable[[Operand], float],
) -> set[str]:
    """The backward values only whose lower triangle (the diagonal and below) is
    read: by tril, by a product with the identity (its diagonal), by eye and
    size (its shape), through elementwise arithmetic of the same matrices, and
    through Uᵀ @ (U lower triangular: the lower triangle of Uᵀ X reads X's)."""
    readers = readers_of(program.backward)
    roots = {g for _, g in program.gradients}
    lower: set[str] = set()

    def reads_lower(r: Assign, x: str) -> bool:
        if r.op in ("eye", "size"):  # x's shape only
            return True
        if r.op == "tril":
            return r.params[0] <= 0
        if shapes[x][-2:] != shapes[r.name][-2:]:
            return False  # x broadcast along a matrix axis
        if r.op == "mul" and any(defined.get(y, r).op == "eye" for y in r.args):
            return True
        if r.name not in lower:
            return False
        if OPS[r.op].elementwise:
            return True
        u = defined.get(r.args[0], r)
        transposed = (u.op == "transpose" and len(u.shape) == 2) or (
            u.op == "swapaxes" and {*u.params} == {-1, -2}
        )
        return (
            r.op == "matmul"
            and r.args[1] == x != r.args[0]
            and transposed
            and zero_above(u.args[0]) <= 0
        )

    for a in reversed(program.backward):
        if (
            a.name not in roots
            and len(a.shape) >= 2
            and readers[a.name]
            and all(reads_lower(r, a.name) for r in readers[a.name])
        ):
            lower.add(a.name)
    return lower


def _substituted(
    body, same: dict[str, Operand], shapes: dict
) -> tuple[list[Assign], set[str]]:
    """`body` without the names in `same`, which their readers read as their
    replacements (a line gone passes its comment to the next); and the names
    of the readers, each of the shape `shapes` gives it."""
    kept, note, reading = [], "", set()
    for a in body:
        if a.name in same:  # gone: its comment goes to the next line
            note = note or a.note
            continue
        if any(x in same for x in a.args):
            args = tuple(same.get(x, x) for x in a.args)
            a = replace(a, args=args, shape=shapes[a.name])
            reading.add(a.name)
        if note and not a.note:
            a, note = replace(a, note=note), ""
        kept.append(a)
    return kept, reading


def narrow_solves(program: Program) -> Program:
    """solve(A, B) read only through maps of B's columns: the maps first.

    The adjoint of `solve_triangular(L, B)` is `S = solve(Lᵀ, Ḡ)`, of B's shape
    [64, n] for n samples. Where S is read only as `S @ C` with C [n, k] and
    as the sum of its columns, `solve(Lᵀ, Ḡ @ C)` and `solve(Lᵀ, Ḡ summed over
    its columns)` are the same values (A⁻¹ is linear: (A⁻¹Ḡ)C = A⁻¹(ḠC)) from
    solves of k columns and of one instead of n. Only where B's columns are a
    named dimension (a batch) and the maps' results have none, so the
    right-hand sides shrink; matrices (not stacks) only. Run on
    value_and_grad's program: backward keeps the adjoint as the chain rule
    gives it.
    """
    readers = readers_of(program.backward)
    kept = {g for _, g in program.gradients}
    shapes = program.shapes()

    def column_map(r: Assign, s: str) -> bool:
        """r reads s only as a map of its columns, to a result with no batch."""
        if r.op == "transpose":  # Sᵀ, whose rows are summed
            return (
                r.name not in kept
                and bool(readers[r.name])
                and all(
                    t.op == "sum" and t.params == (0, False) for t in readers[r.name]
                )
            )
        if any(isinstance(d, str) for d in r.shape):
            return False
        if r.op == "matmul":
            return r.args[0] == s != r.args[1] and len(shapes[r.args[1]]) == 2
        return r.op == "sum" and r.params in ((1, False), (-1, False))

    narrowed = {
        a.name
        for a in program.backward
        if a.op == "solve"
        and a.name not in kept
        and len(shapes[a.args[0]]) == len(shapes[a.args[1]]) == 2
        and isinstance(shapes[a.args[1]][-1], str)
        and readers[a.name]
        and all(column_map(r, a.name) for r in readers[a.name])
    }
    if not narrowed:
        return program
    solves = {a.name: a for a in program.backward if a.name in narrowed}
    through = {  # transpose(S) -> S
        r.name: s for s in narrowed for r in readers[s] if r.op == "transpose"
    }
    emitter = Emitter(set(shapes), program.forward, shapes)  # every name is taken
    for a in program.backward:
        s = a.args[0] if a.args else None
        if a.name in narrowed or a.name in through:
            continue  # read by the maps below only
        if s in narrowed or s in through:
            solve = solves[through.get(s, s)]
            matrix, rhs = solve.args
            if s in through:  # the sum of Sᵀ's rows: of B's columns
                mapped = emitter.emit("sum", (rhs,), (1, False))
            else:
                mapped = emitter.emit(a.op, (rhs, *a.args[1:]), a.params)
            emitter.keep(replace(a, op="solve", args=(matrix, mapped), params=()))
        else:
            emitter.keep(a)
    return dce(replace(program, backward=tuple(emitter.body)))
