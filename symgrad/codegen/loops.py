"""Fused loops: the elementwise work of a tensor spec's value_and_grad in `@njit` loops.

The numba target prints a tensor spec as the numpy target does, except that
value_and_grad and grad run their elementwise steps, and the sums and means
of them, as loops compiled by numba: between two matrix products (left to
BLAS) each element is read once, its values stay in registers, and a sum is
added up in the loop instead of after it. `plan` groups the steps into loops;
`source` prints one loop.

A loop runs over one shape S (its steps' shape). Its members are:

- `loop`: an elementwise step of shape S whose array operands are S or its
  trailing axes (`b1` of [h] against [n, h]), or a `broadcast` of such an array;
- `sum`: a sum or mean of a loop member over any axes, added up in the loop;
- `pre`: a scalar the loop computes before it starts (`size` of S, and scalar
  arithmetic on such values: mean's 2/size).

Only what a later line reads leaves the loop (as an array, or a scalar).
Grouping is greedy in program order, and a step joins a loop only where no
path leads from the loop through a step outside it back into the step, so
the loops and the remaining lines can be ordered. A loop member that only a
later loop reads moves into that later loop (`1 - hidden**2` is computed by
the backward loop from `hidden`, instead of stored by the forward one).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from symgrad.codegen.printer import INDENT, LINE_LENGTH, Line, Printer, fusible
from symgrad.ir import Assign, readers_of
from symgrad.ops import OPS
from symgrad.shapes import axes, show

INDICES = ("_i", "_j", "_k", "_l", "_m", "_p")
"""The loop variables, outermost first (a loop has at most this many axes)."""

_REDUCTIONS = frozenset({"sum", "mean"})


@dataclass(eq=False)
class Loop:
    """One fused loop: its steps in program order, each with its role."""

    shape: tuple
    members: list[Assign] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # name -> loop, sum or pre
    deps: set[Loop] = field(default_factory=set)  # loops that must run before it
    stored: set[str] = field(default_factory=set)  # its members read after it

    def add(self, a: Assign, role: str) -> None:
        self.members.append(a)
        self.roles[a.name] = role


def plan(
    assigns: tuple[Assign, ...],
    shapes: dict[str, tuple],
    returned: set[str],
    fuses: Callable[[Assign], bool],
) -> list[Assign | Loop]:
    """`assigns` in an order that runs, with the steps that fuse replaced by loops.

    `returned`: names read after the lines (the function's results);
    `fuses`: whether a loop may compute an elementwise step.
    """
    where: dict[str, Loop] = {}  # a loop member -> its loop
    upstream: dict[str, frozenset[Loop]] = {}  # another line -> loops it depends on
    loops: list[Loop] = []
    for a in assigns:
        role, shape = _role(a, shapes, where, fuses)
        outside = set().union(*(upstream.get(u, ()) for u in _names(a.args)))
        chosen = None
        for g in _candidates(a, role, shape, where, loops):
            needs = outside | _read_loops(a, where, g)
            if g not in needs and not any(g in _before(k) for k in needs):
                chosen = g
                break
        if chosen is None and role == "loop":
            chosen = Loop(shape)
            loops.append(chosen)
        if chosen is None:
            upstream[a.name] = frozenset(outside | _read_loops(a, where, None))
            continue
        chosen.add(a, role)
        chosen.deps |= outside | _read_loops(a, where, chosen)
        where[a.name] = chosen
    _sink(assigns, where, returned)
    readers = readers_of(assigns)
    kept = []
    for g in loops:
        steps = [a for a in g.members if g.roles[a.name] == "loop"]
        sums = [a for a in g.members if g.roles[a.name] == "sum"]
        # one elementwise step saves nothing; each axis needs an array to size it
        if not steps or len(steps) + len(sums) < 2 or _extents(g, shapes) is None:
            for a in g.members:
                del where[a.name]
        else:
            kept.append(g)
    for g in kept:
        g.stored = _stored(g, readers, where, returned)
    return _ordered(assigns, where)


def _names(args) -> list[str]:
    return [x for x in args if isinstance(x, str)]


def _role(
    a: Assign, shapes: dict, where: dict[str, Loop], fuses: Callable[[Assign], bool]
) -> tuple[str | None, tuple]:
    """What `a` can be in a loop (loop, sum, pre or None), and that loop's shape."""
    op = OPS[a.op]
    if a.op == "broadcast":  # an array spread along the loop's other axes
        g, rank = a.args[0], len(a.shape)
        if isinstance(g, str) and shapes[g] and 0 < rank <= len(INDICES):
            expanded, _ = _expanded(shapes[g], a.params[0], a.shape)
            if _index(expanded, a.shape) is not None:
                return "loop", a.shape
        return None, ()
    if op.elementwise or op.kind in ("condition", "select"):
        if not fuses(a):
            return None, ()
        if not a.shape:
            return "pre", ()
        if len(a.shape) <= len(INDICES) and all(
            _index(shapes[u], a.shape) is not None for u in _names(a.args)
        ):
            return "loop", a.shape
        return None, ()
    operand = a.args[0] if a.args else None
    if not isinstance(operand, str) or operand not in where:
        return None, ()
    if where[operand].roles[operand] != "loop":
        return None, ()
    if a.op in _REDUCTIONS and shapes[operand] == where[operand].shape:
        return "sum", shapes[operand]
    if a.op == "size" and shapes[operand] == where[operand].shape:
        return "pre", ()
    return None, ()


def _candidates(
    a: Assign, role: str | None, shape: tuple, where: dict[str, Loop], loops: list[Loop]
) -> list[Loop]:
    """The loops `a` could join: those of its operands, in their order; then, for
    an elementwise step, any other loop of its shape, the latest first (one pass
    over the shape where there would be two)."""
    if role is None:
        return []
    found: list[Loop] = []
    for u in _names(a.args):
        g = where.get(u)
        if g is None or g in found:
            continue
        if role == "pre" and a.op != "size" and g.roles[u] != "pre":
            continue
        if role == "loop" and (g.shape != shape or g.roles[u] == "sum"):
            continue
        found.append(g)
    if role == "pre" and a.op != "size":  # reads only the loop's scalars, or outside
        return [g for g in found if all(where.get(u, g) is g for u in _names(a.args))]
    if role == "loop":
        found += [g for g in reversed(loops) if g.shape == shape and g not in found]
    return found


def _read_loops(a: Assign, where: dict[str, Loop], joining: Loop | None) -> set[Loop]:
    """The loops whose results `a` reads, if it joins `joining` (None: no loop)."""
    read = set()
    for u in _names(a.args):
        g = where.get(u)
        if g is not None and not (g is joining and g.roles[u] != "sum"):
            read.add(g)
    return read


def _before(g: Loop) -> set[Loop]:
    """Every loop that must run before `g`."""
    seen: set[Loop] = set()
    stack = list(g.deps)
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(k.deps)
    return seen


def _sink(assigns: tuple[Assign, ...], where: dict[str, Loop], returned: set[str]):
    """Move each loop member that only one later loop reads into that loop.

    It is computed there from what the earlier loop stores anyway, so the
    earlier loop stores one array fewer (or the same number, which lets the
    member before it move next).
    """
    readers = readers_of(assigns)
    position = {a.name: i for i, a in enumerate(assigns)}
    moved = True
    while moved:
        moved = False
        for a in reversed(assigns):
            g = where.get(a.name)
            if g is None or g.roles[a.name] != "loop" or a.name in returned:
                continue
            later = {where.get(r.name) for r in readers[a.name]}
            if len(later) != 1:
                continue
            (h,) = later
            if h is None or h is g or h.shape != g.shape:
                continue
            stored = _stored(g, readers, where, returned)
            new = {u for u in _names(a.args) if where.get(u) is g} - stored
            if len(new) > 1:
                continue
            g.members.remove(a)
            del g.roles[a.name]
            h.add(a, "loop")
            h.members.sort(key=lambda m: position[m.name])
            where[a.name] = h
            moved = True


def _stored(
    g: Loop,
    readers: dict[str, list[Assign]],
    where: dict[str, Loop],
    returned: set[str],
) -> set[str]:
    """The members of `g` read after it: what the loop returns."""
    return {
        a.name
        for a in g.members
        if a.name in returned
        or g.roles[a.name] == "sum"
        or any(where.get(r.name) is not g for r in readers[a.name])
    }


def _ordered(
    assigns: tuple[Assign, ...], where: dict[str, Loop]
) -> list[Assign | Loop]:
    """The lines and loops in program order, each after what it reads (a loop
    where its first member was, or later)."""
    item = {a.name: where.get(a.name, a) for a in assigns}
    items = list(dict.fromkeys(item[a.name] for a in assigns))
    rank = {id(x): i for i, x in enumerate(items)}
    waits = [0] * len(items)  # how many items each still waits for
    unblocks: list[list[int]] = [[] for _ in items]
    for i, x in enumerate(items):
        needs = {
            rank[id(item[u])]
            for m in (x.members if isinstance(x, Loop) else [x])
            for u in _names(m.args)
            if u in item and item[u] is not x
        }
        waits[i] = len(needs)
        for k in needs:
            unblocks[k].append(i)
    ready = [i for i, n in enumerate(waits) if n == 0]
    heapq.heapify(ready)
    ordered: list[Assign | Loop] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(items[i])
        for k in unblocks[i]:
            waits[k] -= 1
            if not waits[k]:
                heapq.heappush(ready, k)
    return ordered


# --------------------------------------------------------------------------- printing


def _expanded(shape: tuple, axis, loop: tuple) -> tuple[tuple, list[int]]:
    """A broadcast operand's shape with size-1 axes where it is spread over the
    loop's shape, and those axes."""
    if axis is None:
        return shape, []
    spread = sorted(axes(loop, axis))
    out = list(shape)
    for x in spread:
        out.insert(x, 1)
    return tuple(out), spread


def _index(shape: tuple, loop: tuple) -> list[str] | None:
    """How an operand of `shape` is read at the loop's point (`b1[_j]`): each of its
    axes (its trailing axes against the loop's) a loop variable, or 0 where its size
    is 1; None if it does not line up with the loop's shape."""
    if len(shape) > len(loop):
        return None
    lead = len(loop) - len(shape)
    index = []
    for axis, size in enumerate(shape, lead):
        if size == loop[axis]:
            index.append(INDICES[axis])
        elif size == 1:
            index.append("0")
        else:
            return None
    return index


def _read(a: Assign, u: str, shapes: dict, loop: tuple) -> list[str]:
    """The index at which member `a` reads the array `u`."""
    if a.op != "broadcast":
        return _index(shapes[u], loop)
    expanded, spread = _expanded(shapes[u], a.params[0], loop)
    index = _index(expanded, loop)
    lead = len(loop) - len(expanded)
    return [x for i, x in enumerate(index, lead) if i not in spread]


def _arrays(loop: Loop, shapes: dict) -> dict[str, list[str]]:
    """The arrays the loop's steps read from outside, each with its index (at its
    first read)."""
    own = set(loop.roles)
    read: dict[str, list[str]] = {}
    for a in loop.members:
        if loop.roles[a.name] != "loop":
            continue
        for u in _names(a.args[:1] if a.op == "broadcast" else a.args):
            if u not in own and shapes[u]:
                read.setdefault(u, _read(a, u, shapes, loop.shape))
    return read


def _extents(loop: Loop, shapes: dict) -> list[tuple[str, int]] | None:
    """For each axis of the loop, an array it reads and that array's axis of the
    same size (None where no array it reads has the axis: a scalar broadcast)."""
    read = _arrays(loop, shapes)
    found = []
    for var in INDICES[: len(loop.shape)]:
        u = next((u for u in read if var in read[u]), None)
        if u is None:
            return None
        found.append((u, read[u].index(var)))
    return found


def _sum_index(a: Assign, loop: tuple) -> list[str]:
    """Where a sum adds each element: the loop variables of the axes it keeps (0
    for a summed axis it keeps as size 1)."""
    summed, keepdims = axes(loop, a.params[0]), a.params[1]
    return [
        "0" if x in summed else INDICES[x]
        for x in range(len(loop))
        if keepdims or x not in summed
    ]


@dataclass(frozen=True)
class Printed:
    """A loop as printed: what its function takes and returns, and its body."""

    params: tuple[str, ...]  # the names it reads from outside
    arguments: tuple[str, ...]  # what the call passes for them
    results: tuple[str, ...]  # the names the call defines
    body: tuple[str, ...]  # the function's lines after `def`, indented once

    def function(self, name: str) -> str:
        """Its source as the function `name`, compiled by the template's `_compiled`."""
        header = ["@_compiled", f"def {name}({', '.join(self.params)}):"]
        return "\n".join(header + list(self.body))

    def call(self, name: str) -> Line:
        """The line of value_and_grad (or grad) that runs it."""
        first, *also = self.results
        return Line(
            f"{_items(self.results)} = {name}[PARALLEL]({', '.join(self.arguments)})",
            frozenset(self.params),
            first,
            also=tuple(also),
        )


def source(
    loop: Loop, printer: Printer, shapes: dict[str, tuple], inputs: set[str]
) -> Printed:
    """The loop printed: its steps' lines by `printer`, inside one `for` per axis.

    `inputs`: the program's inputs (the call passes a scalar input as a float).
    """
    shape, members, roles, stored = loop.shape, loop.members, loop.roles, loop.stored
    rank = len(shape)
    extents = [f"_n{axis}" for axis in range(rank)]
    own = {a.name for a in members}
    steps = [a for a in members if roles[a.name] == "loop"]
    sums = [a for a in members if roles[a.name] == "sum"]
    # where each sum adds an element ([] for one number)
    adds = {a.name: _sum_index(a, shape) for a in sums}
    kept = [a for a in members if a.name in stored]
    params: list[str] = []  # what it reads from outside, in order of first use
    for a in members:
        for u in _names(a.args[:1] if a.op == "broadcast" else a.args):
            if u not in own and u not in params:
                params.append(u)
    access = _arrays(loop, shapes)
    body: list[str] = []
    full = next((u for u in access if shapes[u] == shape), None)
    if full is not None:  # the extents: from an array of the loop's shape
        targets = ", ".join(extents) if rank > 1 else f"({extents[0]},)"
        body.append(f"{targets} = {full}.shape")
    else:  # or from the first array along each axis
        for extent, (u, axis) in zip(extents, _extents(loop, shapes), strict=True):
            body.append(f"{extent} = {u}.shape[{axis}]")
    checks = [
        f"{u}.shape != {_display([_extent(x) for x in index])}"
        for u, index in access.items()
        if u != full
    ]
    if checks:  # a wrong shape would read past an array's end
        body += _if(checks)
        body.append(
            f'{INDENT}raise ValueError("the arrays\' shapes do not fit together")'
        )
    for a in kept:
        if roles[a.name] == "loop":
            bools = ", dtype=np.bool_" if OPS[a.op].kind == "condition" else ""
            body.append(f"_{a.name} = np.empty({_display(extents)}{bools})")
    for a in sums:
        if adds[a.name]:
            size = [_extent(x) for x in adds[a.name]]
            body.append(f"_{a.name} = np.zeros({_display(size)})")
        else:
            body.append(f"{a.name} = 0.0")
    for a in members:
        if roles[a.name] == "pre":  # a size: the product of the loop's extents
            size = replace(a, op="copy", args=(" * ".join(extents),), params=())
            body += [
                line.text for line in printer.body((size if a.op == "size" else a,))
            ]
    # numba.prange: no two iterations of _i add to one element
    parallel = all(index[:1] in ([], ["_i"]) for index in adds.values())
    for axis, var in enumerate(INDICES[:rank]):
        each = "numba.prange" if axis == 0 and parallel else "range"
        body.append(f"{INDENT * axis}for {var} in {each}({extents[axis]}):")
    inner = INDENT * rank
    printed = []
    for a in steps:
        args = tuple(
            _subscript(u, _read(a, u, shapes, shape))
            if isinstance(u, str) and u not in own and shapes[u]
            else u
            for u in a.args[: 1 if a.op == "broadcast" else None]
        )
        printed.append(
            replace(
                a,
                op="copy" if a.op == "broadcast" else a.op,
                args=args,
                params=() if a.op == "broadcast" else a.params,
            )
        )
    summed = {a.args[0] for a in sums}
    lines = printer.body(tuple(printed), fusible(tuple(steps), stored | summed))
    body += [f"{inner}{line.text}" for line in lines]
    here = ", ".join(INDICES[:rank])
    body += [
        f"{inner}_{a.name}[{here}] = {a.name}" for a in kept if roles[a.name] == "loop"
    ]
    for a in sums:
        target = _subscript(f"_{a.name}", adds[a.name]) if adds[a.name] else a.name
        body.append(f"{inner}{target} += {a.args[0]}")
    for a in sums:
        if a.op == "mean":
            count = [extents[x] for x in sorted(axes(shape, a.params[0]))]
            target = f"_{a.name}" if adds[a.name] else a.name
            body.append(f"{target} /= {' * '.join(count)}")
    results = [  # an array the loop filled, or a number
        f"_{a.name}" if roles[a.name] == "loop" or adds.get(a.name) else a.name
        for a in kept
    ]
    body.append(f"return {_items(results)}")
    doc = f'"""One loop over {show(shape)}: {", ".join(a.name for a in kept)}."""'
    arguments = [f"float({u})" if u in inputs and not shapes[u] else u for u in params]
    return Printed(
        tuple(params),
        tuple(arguments),
        tuple(a.name for a in kept),
        tuple(f"{INDENT}{line}" for line in [doc, *body]),
    )


def _subscript(name: str, index: list[str]) -> str:
    return f"{name}[{', '.join(index)}]" if index else name


def _extent(x: str) -> str:
    return "1" if x == "0" else f"_n{INDICES.index(x)}"


def _display(items: list[str]) -> str:
    """A tuple display: `(_n0,)`, `(_n0, _n1)`."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _items(items: list[str]) -> str:
    """Several values (`a, b`), or a tuple of one (`(a,)`), as ruff format writes them."""
    return _display(items) if len(items) == 1 else ", ".join(items)


def _if(conditions: list[str]) -> list[str]:
    """`if a or b:` laid out as ruff format would."""
    line = f"{INDENT}if {' or '.join(conditions)}:"
    if len(line) <= LINE_LENGTH:
        return [line.removeprefix(INDENT)]
    first, *rest = conditions
    return ["if (", f"{INDENT}{first}", *(f"{INDENT}or {c}" for c in rest), "):"]
