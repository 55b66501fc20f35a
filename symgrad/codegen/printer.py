"""`Assign -> line of code`: the table-driven printer every target shares.

One line is one operation, so printing needs no precedence logic of its own
beyond the registry's (`ops.Code.prec`/`needs`), which says when an operand
printed inline needs parentheses. The printer records what the lines use
(modules to import, helper functions to define), as SymPy's printers do, and
which names each line reads, so that nothing re-parses the printed text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from symgrad.ir import Assign, Operand, is_temporary
from symgrad.ops import OPS, Code

LINE_LENGTH = 88
INDENT = "    "
FUSED_LENGTH = 48  # longer expressions keep a line of their own


class Unprintable(ValueError):
    """The target has no printed form for an operation."""


def registry_codes(target: str) -> dict[str, Code]:
    """The printed forms the registry gives `target` (`Op.code[target]`), by op name."""
    return {name: op.code[target] for name, op in OPS.items() if target in op.code}


def derived_codes(
    base: str,
    spelling: Callable[[str], str],
    overrides: Mapping[str, Code],
    refused: Mapping[str, str],
) -> dict[str, Code]:
    """A target's printed forms made from the registry's forms for `base`.

    Each of `base`'s forms is respelled (its format, and the source of its
    helper) by `spelling` (`np.exp(x)` -> `jnp.exp(x)`); `overrides` give a
    form of the target's own, and `refused` names each operation the target
    cannot print, with the reason. Every operation of the registry must be in
    exactly one of them: a new op cannot leave a target silently behind.
    """
    codes = {
        name: _respelled(code, spelling)
        for name, code in registry_codes(base).items()
        if name not in refused
    }
    codes.update(overrides)
    missing = set(OPS) - set(codes) - set(refused)
    both = set(codes) & set(refused)
    if missing or both:
        raise AssertionError(
            f"ops neither printed nor refused: {sorted(missing)}; both: {sorted(both)}"
        )
    return codes


def _respelled(code: Code, spelling: Callable[[str], str]) -> Code:
    fmt = code.fmt
    if callable(fmt):
        fmt = _composed(spelling, fmt)
    else:
        fmt = spelling(fmt)
    helper = None if code.helper is None else (code.helper[0], spelling(code.helper[1]))
    return replace(code, fmt=fmt, helper=helper, ufunc=None)  # out=: NumPy's alone


def _composed(spelling: Callable[[str], str], fmt: Callable[..., str]):
    return lambda *args: spelling(fmt(*args))


@dataclass(frozen=True)
class Line:
    """One printed line: a comment, or `defines = ...` reading the names in `reads`
    (`prec`: the precedence of the expression on the right)."""

    text: str
    reads: frozenset[str] = frozenset()
    defines: str | None = None
    prec: int = 100
    also: tuple[str, ...] = ()  # the further names a call returning several defines


@dataclass
class Printer:
    """Prints single-operation assignments in one target's syntax."""

    target: str
    codes: Mapping[str, Code] | None = None  # None: the registry's (Op.code[target])
    refused: Mapping[str, str] = field(
        default_factory=dict
    )  # op -> why it is not printed
    imports: set[str] = field(default_factory=set)
    helpers: dict[str, str] = field(default_factory=dict)  # name -> source
    loops: dict[str, str] = field(default_factory=dict)  # fused loops: name -> source

    def __post_init__(self) -> None:
        if self.codes is None:
            self.codes = registry_codes(self.target)

    def code(self, op: str) -> Code:
        """The printed form of `op`; records the imports and helper it needs."""
        code = self.codes.get(op)
        if code is None:
            why = f" ({self.refused[op]})" if op in self.refused else ""
            raise Unprintable(f"the {self.target} target cannot print {op}{why}")
        self.imports.update(code.imports)
        if code.helper is not None:
            self.helpers.setdefault(*code.helper)
        return code

    def expression(self, op: str, args: tuple[Operand, ...], params: tuple = ()) -> str:
        """How `op(*args)` (with static `params`) reads in the target's syntax."""
        code = self.code(op)
        return code.print([_operand(a, i, code) for i, a in enumerate(args)], params)

    def helper_sources(self) -> list[str]:
        """The helpers used, in the registry's order (deterministic output)."""
        order: dict[str, int] = {}
        for code in self.codes.values():
            if code.helper is not None:
                order.setdefault(code.helper[0], len(order))
        return [self.helpers[name] for name in sorted(self.helpers, key=order.get)]

    def body(
        self,
        assigns: tuple[Assign | Line, ...],
        fuse: frozenset[str] = frozenset(),
        into: Mapping[str, str] | None = None,
    ) -> list[Line]:
        """One line per assignment, each group of lines under a comment with its math.

        A name in `fuse` is not given a line: its expression is printed where it
        is used (once), parenthesized as precedence needs, unless that line would
        get too long. `X.T @ g` reads as one writes it by hand. An assignment in
        `into` calls its ufunc with `out=` that operand (see `codegen.inplace`):
        `np.subtract(a, b, out=a)`. A `Line` among them is kept as it is (the
        call of a fused loop).
        """
        into = into or {}
        # fused name -> (expression, its precedence, the names it reads)
        pending: dict[str, tuple[str, int, frozenset[str]]] = {}
        lines: list[Line] = []
        note = ""

        def comment() -> None:  # the note goes above the first line printed after it
            nonlocal note
            if note:  # a rewrite's report is a second line
                lines.extend(Line(f"# {text}") for text in note.split("\n"))
                note = ""

        def flush(arg: Operand) -> None:
            text, prec, reads = pending.pop(arg)
            comment()
            lines.append(Line(f"{arg} = {text}", reads, arg, prec))

        def line(a: Assign) -> tuple[str, int, frozenset[str]]:
            code = self.code(a.op)
            if code.repeats:  # an inlined operand would be computed twice
                for arg in a.args:
                    if arg in pending:
                        flush(arg)
            out = into.get(a.name)
            # a call's operands need no parentheses
            needs = (0,) * len(a.args) if out else code.operand_needs(len(a.args))
            printed, reads = [], set()
            for i, arg in enumerate(a.args):
                if isinstance(arg, str) and arg in pending:
                    text, p, inner = pending[arg]
                    printed.append(f"({text})" if p < needs[i] else text)
                    reads |= inner
                else:
                    printed.append(arg if out else _operand(arg, i, code))
                    reads |= {arg} if isinstance(arg, str) else set()
            text = _into(code, printed, out) if out else code.print(printed, a.params)
            if (
                len(f"{INDENT * 2}{a.name} = {text}") > LINE_LENGTH
            ):  # operands get lines
                for arg in a.args:
                    if isinstance(arg, str) and arg in pending:
                        flush(arg)
                text = (
                    _into(code, a.args, out)
                    if out
                    else self.expression(a.op, a.args, a.params)
                )
                reads = {arg for arg in a.args if isinstance(arg, str)}
            for arg in a.args:
                if isinstance(arg, str):
                    pending.pop(arg, None)
            # a call is an atom, whatever its operation (np.divide for a / b)
            prec = 100 if _is_call(text) else code.prec
            return text, prec, frozenset(reads)

        for a in assigns:
            if isinstance(a, Line):
                lines.append(a)
                continue
            note = a.note or note
            text, prec, reads = line(a)
            if a.name in fuse and len(text) <= FUSED_LENGTH:
                pending[a.name] = (text, prec, reads)
                continue
            comment()
            lines.append(Line(f"{a.name} = {text}", reads, a.name, prec))
        return lines


def _into(code: Code, operands, out: str) -> str:
    """`np.subtract(a, b, out=a)`: the ufunc, its result written into `out`."""
    return f"{code.ufunc}({', '.join(map(str, operands))}, out={out})"


def _is_call(text: str) -> bool:
    """Whether `text` is one call, `f(...)`, its first parenthesis closed at its end."""
    name, paren, _ = text.partition("(")
    if not paren or not name.replace(".", "").replace("_", "").isalnum():
        return False
    depth = 0
    for i, ch in enumerate(text[len(name) :], start=len(name)):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(text) - 1
    return False


def _operand(arg: Operand, position: int, code: Code) -> str:
    if isinstance(arg, str):
        return arg
    text = repr(float(arg)) if isinstance(arg, float) else str(arg)
    # A negative constant is parenthesized inside an arithmetic or comparison
    # operator, except as the left factor of a product: `-2 * x`, `x - (-2)`.
    if arg < 0 and 10 <= code.prec < 100 and not (position == 0 and code.prec == 14):
        return f"({text})"
    return text


def fusible(
    assigns: tuple[Assign, ...], keep: set[str], only: set[str] | None = None
) -> frozenset[str]:
    """Temporaries used exactly once by `assigns` and nowhere in `keep`."""
    uses = Counter(arg for a in assigns for arg in a.args if isinstance(arg, str))
    return frozenset(
        a.name
        for a in assigns
        if uses[a.name] == 1
        and a.name not in keep
        and is_temporary(a.name)
        and (only is None or a.op in only)
    )


def deleting(
    *parts: list[Line], keep: set[str] = frozenset()
) -> tuple[list[Line], ...]:
    """`parts` (consecutive lines of one function) with `del` after each name's last read.

    NumPy frees an array when its last reference goes: without the `del`, every
    intermediate of a batch stays alive until the function returns, and peak
    memory grows with the length of the program instead of its width.
    """
    lines = [line for part in parts for line in part]
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        for name in line.reads:
            last[name] = i
    defined = {line.defines for line in lines if line.defines is not None}
    defined.update(name for line in lines for name in line.also)
    after: dict[int, list[str]] = {}
    for name in sorted(defined - set(keep)):
        if name in last:
            after.setdefault(last[name], []).append(name)
    result, start = [], 0
    for part in parts:
        out = []
        for i, line in enumerate(part, start):
            out.append(line)
            if i in after:
                out.append(Line(f"del {', '.join(after[i])}"))
        result.append(out)
        start += len(part)
    return tuple(result)


def call(prefix: str, args, indent: str, suffix: str = "") -> list[str]:
    """`prefix(args)` laid out as ruff format would: one line, one indented line, or one per line."""
    args = list(args)
    one_line = f"{indent}{prefix}({', '.join(args)}){suffix}"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    inner = f"{indent}{INDENT}{', '.join(args)}"
    if len(inner) <= LINE_LENGTH:
        return [f"{indent}{prefix}(", inner, f"{indent}){suffix}"]
    return _one_per_line(f"{indent}{prefix}(", args, f"{indent}){suffix}", indent)


def tuple_display(prefix: str, items, indent: str) -> list[str]:
    """`prefix(items)` as ruff format lays out a tuple: one line, or one item per line.

    A tuple rather than a list: `tuple.__new__(Gradients, t)` reuses it.
    """
    items = list(items)
    inside = f"{items[0]}," if len(items) == 1 else ", ".join(items)
    one_line = f"{indent}{prefix}({inside})"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    return _one_per_line(f"{indent}{prefix}(", items, f"{indent})", indent)


def _one_per_line(
    opening: str, items: list[str], closing: str, indent: str
) -> list[str]:
    return [opening, *[f"{indent}{INDENT}{item}," for item in items], closing]
