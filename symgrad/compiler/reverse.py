"""`Program -> Program`: append the backward pass (reverse-mode differentiation).

One loop over the forward assignments in reverse. Each adjoint collects its
terms `∂y/∂u · ∂u/∂v` from every use of `v` (fan-out accumulates), and is
lowered into single operations by the forward pass's own `Emitter`, so the
backward pass reuses forward values and shares common subexpressions. Only
names that depend on a `wrt` input get an adjoint: gradients nobody asked
for are never computed.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import replace

import sympy as sp

from symgrad.compiler.lower import Emitter
from symgrad.compiler.rules import (
    local_derivatives,
    operand_symbol,
    vjp,
    written_local,
)
from symgrad.ir import Assign, Operand, Program, is_temporary
from symgrad.ops import OPS, TensorOp, sum_to, tensor

SEED = "dy"
"""The upstream gradient's parameter name in `backward(tape, dy=1.0)`."""

Seeds = tuple[tuple[str, Operand], ...]
"""(output, the operand holding its upstream gradient) for several outputs."""


def reverse(
    program: Program,
    seed: Operand = SEED,
    memo: dict | None = None,
    extra_seeds: Seeds = (),
) -> Program:
    """`program` with a backward pass seeded by `seed` (the name `dy`, or the constant 1).

    `extra_seeds` seeds further outputs too (`seed_names`: backward(tape, dx,
    dy) for outputs x and y): the adjoints are then those of L = dx·x + dy·y,
    named `dL_dv` (`objective`). `memo` keeps local derivatives, and their
    products with each adjoint, between calls on the same program.
    """
    memo = {} if memo is None else memo
    program = replace(program, seed=seed, extra_seeds=extra_seeds)
    seeds = dict(program.seeds)
    depends = _depending_on(program)
    guards = branch_guards(program.forward, set(seeds))
    out = objective(program)
    shapes = program.shapes()
    names = {s: shapes[o] for o, s in program.seeds if isinstance(s, str)}
    emitter = Emitter(
        set(program.inputs) | {SEED} | set(names),
        program.forward,
        shapes={**shapes, SEED: shapes[program.output], **names},
    )
    # v -> [(u, ∂u/∂v as text, ∂out/∂u · ∂u/∂v)] for every use of v by an assignment u
    terms: dict[str, list[tuple[str, str, sp.Expr]]] = {}
    adjoints: dict[str, Operand] = {}
    # the same for both seeds: each local derivative is written once
    notation = memo.setdefault((Notation,), Notation(program))
    unnoted: list[int] = []  # where the lines of temporaries' adjoints start

    def adjoint(v: str) -> Operand:
        """Lower ∂out/∂v from its seed and collected terms; the operand that now holds it."""
        adjoints[v] = _lowered(v) if v in terms else seeds[v]
        return adjoints[v]

    def _lowered(v: str) -> Operand:
        collected = terms.pop(v)
        start = len(emitter.body)
        # an output another output reads: its own seed, then the terms of its uses
        seeded = [operand_symbol(seeds[v])] if v in seeds else []
        note = notation.note(out, v, [u for u, _, _ in collected], seeds.get(v))
        # Each use adds its term (fan-out accumulates), left to right as collected.
        # A differentiated input gets its adjoint under its own name (dy_dbeta0),
        # even where that is a value already computed (dy_df0: ∂f0/∂beta0 = 1).
        name = _adjoint_name(out, v, emitter.taken)
        result = emitter.lower(
            seeded + [term for _, _, term in collected], name=name, note=note
        )
        if v in program.wrt and isinstance(result, str) and result != name:
            result = emitter.lower(
                operand_symbol(result), name=name, note=note, alias=False
            )
        if note:  # the lines of the temporaries' adjoints before it are its own
            first = unnoted.pop() if unnoted else start
            if first < len(emitter.body):
                if first < start < len(emitter.body):
                    emitter.body[start] = replace(emitter.body[start], note="")
                emitter.body[first] = replace(emitter.body[first], note=note)
        elif not unnoted and len(emitter.body) > start:
            unnoted.append(start)
        return result

    for a in reversed(program.forward):
        if a.name not in seeds and a.name not in terms:
            continue
        g = adjoint(a.name)
        if g == 0:
            continue
        for arg, local, term in _terms(a, operand_symbol(g), shapes, memo):
            if arg in depends and term is not None and term != 0:
                mask = guards.get(a.name, frozenset()) - guards.get(arg, frozenset())
                terms.setdefault(arg, []).append((a.name, local, _masked(term, mask)))

    gradients = tuple((w, adjoint(w) if w in terms else 0) for w in program.wrt)
    return replace(
        program,
        backward=tuple(emitter.body),
        gradients=gradients,
        adjoints=tuple(adjoints.items()),
    )


def seed_names(program: Program, outputs: tuple[str, ...]) -> tuple[str, ...]:
    """The upstream gradients' parameters of `backward`, one per output: `dy` for
    one output whatever its name; `dx, dy` (d<output>) for outputs x and y, made
    unique (a trailing _) where a name of the program, a Python keyword or a
    builtin has it."""
    if len(outputs) == 1:
        return (SEED,)
    taken = set(program.inputs) | set(program.shapes())
    names = []
    for o in outputs:
        name = f"d{o}"
        while name in taken or keyword.iskeyword(name) or hasattr(builtins, name):
            name += "_"
        taken.add(name)
        names.append(name)
    return tuple(names)


def objective(program: Program) -> str:
    """What the backward pass differentiates, in its adjoints' names and comments:
    the output, or for several outputs L (J, or L_ where the spec has those
    names), their sum weighted by the seeds."""
    if not program.extra_seeds:
        return program.output
    taken = set(program.inputs) | set(program.shapes())
    name = next((n for n in ("L", "J") if n not in taken), "L_")
    while name in taken:
        name += "_"
    return name


def weighted(program: Program) -> str:
    """`dx·x + dy·y`: the sum of the outputs the backward pass differentiates."""
    return " + ".join(f"{seed}·{o}" for o, seed in program.seeds)


def _terms(
    a: Assign, g: sp.Expr, shapes: dict, memo: dict
) -> list[tuple[Operand, str, sp.Expr | None]]:
    """(operand, its local derivative as text, ∂out/∂operand) for each operand of `a`."""
    if OPS[a.op].vjp is not None:
        arg_shapes = tuple(
            shapes.get(arg, ()) if isinstance(arg, str) else () for arg in a.args
        )
        vjps = vjp(a.op, g, a.args, a.name, arg_shapes, a.params)
        return [
            (arg, f"∂{a.name}/∂{arg}: {t}", t)
            for arg, t in zip(a.args, vjps, strict=True)
        ]
    if a.name not in memo:  # the same for every seed: computed and printed once
        locals_ = [
            (arg, local, f"∂{a.name}/∂{arg} = {local}")
            for arg, local in zip(
                a.args, local_derivatives(a.op, a.args, a.name), strict=True
            )
            if local is not None and local != 0
        ]
        memo[a.name] = locals_, {}
    locals_, products = memo[a.name]
    # Both seeds give most names the same adjoint: SymPy builds each product once.
    if g not in products:
        products[g] = _products(a, g, locals_, shapes)
    return products[g]


def _products(
    a: Assign, g: sp.Expr, locals_: list, shapes: dict
) -> list[tuple[Operand, str, sp.Expr]]:
    """(operand, its local derivative as text, g · local summed to its shape) per operand."""
    result = []
    for arg, local, text in locals_:
        term = g * local
        if local.has(sp.Piecewise):
            term = sp.piecewise_fold(term)
        # An operand broadcast to the result's shape gets the sum of its adjoint back.
        term = sum_to(term, a.shape, shapes.get(arg, ()))
        result.append((arg, text, term))
    return result


Guard = frozenset[tuple[str, bool]]
"""The branches a value is computed for: (condition, side) pairs of `where`s."""


def branch_guards(assigns: tuple[Assign, ...], roots: set[str]) -> dict[str, Guard]:
    """For each value, the where-branches that every path to a root goes through.

    `t = exp(x)` used only as the false branch of `y = where(c, x, t - 1)` has
    the guard {(c, False)}: its value matters only where c is false. Keyed by the
    condition's name, so two wheres on one condition share their guards; every
    use of a value is under at least its guard.
    """
    uses: dict[str, list[tuple[Assign, int]]] = {}
    for a in assigns:
        for i, arg in enumerate(a.args):
            if isinstance(arg, str):
                uses.setdefault(arg, []).append((a, i))
    guards: dict[str, Guard] = {}
    for a in reversed(assigns):
        if a.name in roots:
            guards[a.name] = frozenset()
            continue
        through = [
            guards[u.name] | _side(u, i)
            for u, i in uses.get(a.name, [])
            if u.name in guards
        ]
        if through:
            guards[a.name] = frozenset.intersection(*through)
    return guards


def program_guards(program: Program) -> dict[str, Guard]:
    """The where-branches each value of the forward and backward pass is needed in."""
    body = program.forward + program.backward
    used = {arg for a in body for arg in a.args}
    roots = {o for o, _ in program.seeds}
    roots |= {g for _, g in program.gradients + program.tangents if isinstance(g, str)}
    roots |= {step for step in program.steps if step not in used}
    return branch_guards(body, roots)


def _side(user: Assign, position: int) -> Guard:
    """The branch of `user` that its operand at `position` is (none but for a where)."""
    if OPS[user.op].kind == "select" and position > 0 and isinstance(user.args[0], str):
        return frozenset({(user.args[0], position == 1)})
    return frozenset()


def _masked(term: sp.Expr, mask: Guard) -> sp.Expr:
    """`term` only where its branches are taken, 0 elsewhere ("double where").

    A branch not taken may hold inf (exp(1e4)); its adjoint there is 0, and
    0 · inf would make the gradient of the values it reads nan.
    """
    for condition, side in sorted(mask):
        c = sp.Symbol(condition)
        term = (
            sp.Piecewise((term, c), (0, True))
            if side
            else sp.Piecewise((0, c), (term, True))
        )
    return term


def _depending_on(program: Program) -> set[str]:
    """Names whose value depends on a `wrt` input through something differentiable."""
    depends = set(program.wrt)
    for a in program.forward:
        if OPS[a.op].differentiable and any(arg in depends for arg in a.args):
            depends.add(a.name)
    return depends


class Notation:
    """The comments of the backward pass, in the spec's notation.

    A comment names the spec's steps and inputs only, as the notebook and
    `explain` do: `∂y/∂h3 = ∂y/∂f3·∂f3/∂h3   (∂f3/∂h3 = omega3)`, where the
    compiler computed f3 = beta3 + t3 and t3 = h3*omega3. The local derivative
    is `sympy.diff` of the step written out in those names, or a tensor step's
    as `explain` shows it (`rules.written_local`: `∂hidden/∂W1 = Xᵀ·(1 -
    hidden**2)⊙`), shown when short. A temporary's adjoint has no comment of its
    own: its lines are part of the next named adjoint's.
    """

    MAX_SIZE = 24  # operations in a step beyond which its local derivative is not shown
    MAX_LOCAL = 60  # characters of a local derivative shown in a comment

    def __init__(self, program: Program):
        self.assigns = {a.name: a for a in program.forward}
        self.shapes = program.shapes()
        self.written: dict[str, sp.Expr | None] = {}
        self.locals: dict[tuple[str, str], str | None] = {}
        # temporary -> the named steps that use it (through other temporaries)
        self.reached: dict[str, tuple[str, ...]] = {}

    def note(
        self, out: str, v: str, users: list[str], seed: Operand | None = None
    ) -> str:
        """The comment above the lines of ∂out/∂v ("" for a temporary's); `seed`:
        the upstream gradient of an output v (another output reads), its first term."""
        named = tuple(
            dict.fromkeys(n for u in users for n in self.reached.get(u, (u,)))
        )
        if is_temporary(v):
            self.reached[v] = named
            return ""
        chain = [f"∂{out}/∂{n}·∂{n}/∂{v}" for n in named]
        if seed is not None:
            chain.insert(0, str(seed))
        known = [(n, self._local(n, v)) for n in named]
        locals_ = ", ".join(f"∂{n}/∂{v} = {d}" for n, d in known if d is not None)
        return f"∂{out}/∂{v} = {' + '.join(chain)}" + (
            f"   ({locals_})" if locals_ else ""
        )

    def _local(self, step: str, v: str) -> str | None:
        """∂step/∂v over the spec's names, if elementwise and short."""
        if (step, v) not in self.locals:
            self.locals[step, v] = self._derivative(step, v)
        return self.locals[step, v]

    def _derivative(self, step: str, v: str) -> str | None:
        if step not in self.written:
            self.written[step] = self._written(step)
        expr = self.written[step]
        if expr is None:
            return None
        if expr.has(TensorOp):  # as explain shows it: Xᵀ·, ∂L/∂a = ... per example
            written = written_local(
                expr, operand_symbol(v), operand_symbol(step), self.shapes
            )
            text = written[0] if written else ""
            return text if 0 < len(text) <= self.MAX_LOCAL else None
        local = sp.diff(expr, operand_symbol(v))
        if not (expr.is_Symbol or expr.is_number):
            local = local.xreplace({expr: operand_symbol(step)})  # d exp(f1)/d f1 = h2
        text = sp.sstr(local)
        return text if len(text) <= self.MAX_LOCAL else None

    def _written(self, step: str) -> sp.Expr | None:
        """The step's definition with its temporaries written out; None if it
        takes more than MAX_SIZE operations (looked at no further)."""
        size = 0

        def build(name: str, top: bool = False) -> sp.Expr:
            nonlocal size
            a = self.assigns.get(name)
            if a is None or not (top or is_temporary(name)):
                return operand_symbol(name)
            size += 1
            op = OPS[a.op]
            if size > self.MAX_SIZE or not (op.elementwise or op.kind == "tensor"):
                raise _NotShown
            args = [
                build(x) if isinstance(x, str) else operand_symbol(x) for x in a.args
            ]
            if op.kind == "tensor":
                return tensor(a.op, *args, params=a.params)
            if a.params:
                raise _NotShown
            return op.meaning(*args)

        try:
            return build(step, top=True)
        except _NotShown:
            return None


class _NotShown(Exception):
    """A step whose local derivative a comment does not show."""


def _adjoint_name(out: str, v: str, taken: set[str]) -> str:
    """`dy_df3` for ∂y/∂f3 (the course's notation), made unique if a user name has it."""
    name = f"d{out}_d{v}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name
