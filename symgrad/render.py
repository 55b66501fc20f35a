"""`(Program, Program) -> str`: print a forward and backward program as a Python module.

A target is a folder of Jinja templates plus a printer table here: the table
says how each single operation reads in that target's syntax (one line is
one operation, so no precedence logic), the templates hold the layout, and
neither holds math.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import jinja2

from symgrad import __version__
from symgrad.functions import key_text
from symgrad.ir import ARITY, TENSOR, Assign, Operand, Program, is_temporary
from symgrad.shapes import show
from symgrad.spec import Spec, SpecError

LINE_LENGTH = 88
INDENT = "    "

Format = str | Callable[..., str]

_COMMON: dict[str, Format] = {
    "copy": "{0}",
    "neg": "-{0}",
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    # ruff format hugs ** only between simple operands
    "pow": lambda a, b: (
        f"{a}**{b}" if _SIMPLE.match(a) and _SIMPLE.match(b) else f"{a} ** {b}"
    ),
    "gt": "{0} > {1}",
    "ge": "{0} >= {1}",
    "lt": "{0} < {1}",
    "le": "{0} <= {1}",
    "eq": "{0} == {1}",
    "ne": "{0} != {1}",
}

NUMPY: dict[str, Format] = {
    **_COMMON,
    **{
        f: f"np.{f}({{0}})"
        for f in (
            "exp",
            "log",
            "sqrt",
            "sin",
            "cos",
            "tan",
            "sinh",
            "cosh",
            "tanh",
            "abs",
            "sign",
        )
    },
    "asin": "np.arcsin({0})",
    "acos": "np.arccos({0})",
    "atan": "np.arctan({0})",
    "atan2": "np.arctan2({0}, {1})",
    "erf": "_erf({0})",
    "max": "np.maximum({0}, {1})",
    "min": "np.minimum({0}, {1})",
    "heaviside": "np.heaviside({0}, {1})",
    "power": "np.power({0}, {1})",
    # helpers in the template: no overflow for any x, unlike 1 / (1 + np.exp(-x)),
    # and 2-4x faster than np.logaddexp
    "sigmoid": "_sigmoid({0})",
    "softplus": "_softplus({0})",
    "relu": "np.maximum({0}, 0)",
    "and": "np.logical_and({0}, {1})",
    "or": "np.logical_or({0}, {1})",
    "not": "np.logical_not({0})",
    "where": "np.where({0}, {1}, {2})",
    "matmul": "{0} @ {1}",
    "transpose": "{0}.T",
    "sum": lambda a, axis, keepdims=False: f"np.sum({a}{_axis(axis)}{_keep(keepdims)})",
    "mean": lambda a, axis: f"np.mean({a}{_axis(axis)})",
    "index": lambda a, key: f"{a}{key_text(key)}",
    "softmax": lambda a, axis: f"_softmax({a}{_axis(axis)})",
    "logsumexp": lambda a, axis: f"_logsumexp({a}{_axis(axis)})",
    "scatter": lambda g, like, key: f"_scatter({g}, {like}, np.s_{key_text(key)})",
    "broadcast": lambda g, like, axis: f"_broadcast({g}, {like}{_axis(axis)})",
    "outer": "np.outer({0}, {1})",
    "size": "np.size({0})",
}


# Operations printed as a call to a function the numpy template defines.
HELPERS = frozenset(
    {"erf", "sigmoid", "softplus", "softmax", "logsumexp", "scatter", "broadcast"}
)


def _axis(axis) -> str:
    return "" if axis is None else f", axis={axis}"


def _keep(keepdims: bool) -> str:
    return ", keepdims=True" if keepdims else ""


PYTHON: dict[str, Format] = {
    **_COMMON,
    **{
        f: f"math.{f}({{0}})"
        for f in (
            "exp",
            "log",
            "sqrt",
            "sin",
            "cos",
            "tan",
            "sinh",
            "cosh",
            "tanh",
            "asin",
            "acos",
            "atan",
            "erf",
        )
    },
    "atan2": "math.atan2({0}, {1})",
    "power": "math.pow({0}, {1})",
    "abs": "abs({0})",
    "sign": "math.copysign(1.0, {0}) if {0} else 0.0",
    "max": "max({0}, {1})",
    "min": "min({0}, {1})",
    "heaviside": lambda x, h0: (
        f"1.0 if {x} > 0 else 0.0"
        if float(h0) == 0
        else f"1.0 if {x} > 0 else {h0} if {x} == 0 else 0.0"
    ),
    # exp of a negative argument only: no OverflowError, and exact in both tails
    "sigmoid": (
        "1 / (1 + math.exp(-{0})) if {0} >= 0 else math.exp({0}) / (1 + math.exp({0}))"
    ),
    "softplus": "max({0}, 0.0) + math.log1p(math.exp(-abs({0})))",
    "relu": "max({0}, 0.0)",
    "and": "{0} and {1}",
    "or": "{0} or {1}",
    "not": "not {0}",
    "where": "{1} if {0} else {2}",
}

_SIMPLE = re.compile(r"-?[\w.]+\Z")
_NAME = re.compile(r"(?<![.\w])[A-Za-z_]\w*")
FUSED_LENGTH = 48  # longer expressions keep a line of their own

# op -> (precedence of its printed expression, least precedence each operand needs
# to go without parentheses), as in Python's grammar; calls are atoms (100).
PRECEDENCE: dict[str, tuple[int, tuple[int, ...]]] = {
    "add": (13, (13, 14)),
    "sub": (13, (13, 14)),
    "mul": (14, (14, 15)),
    "div": (14, (14, 15)),
    "matmul": (14, (14, 15)),
    "neg": (15, (17,)),  # ruff format writes -(a**2)
    "pow": (16, (17, 15)),
    **{op: (10, (11, 11)) for op in ("gt", "ge", "lt", "le", "eq", "ne")},
    "index": (100, (100,)),
    "transpose": (100, (100,)),
    "copy": (100, (100,)),
}
NUMPY_PRECEDENCE: dict[str, tuple[int, tuple[int, ...]]] = {}
PYTHON_PRECEDENCE = {
    "where": (1, (2, 2, 2)),
    "heaviside": (1, (11, 0)),
    "sign": (1, (2,)),
    "sigmoid": (1, (17,)),
    "softplus": (13, (0,)),
    "and": (5, (6, 6)),
    "or": (4, (5, 5)),
    "not": (6, (7,)),
}

_INFIX = {
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "matmul",
}


@dataclass(frozen=True)
class Target:
    name: str
    printer: dict[str, Format]
    value_type: str  # the annotation of Tape and Gradients fields
    precedences: dict[str, tuple[int, tuple[int, ...]]]

    @cached_property  # read for every printed line
    def repeats(self) -> frozenset[str]:
        """Operations whose printed form names an operand twice (never inline into them)."""
        return frozenset(
            op
            for op, f in self.printer.items()
            if isinstance(f, str) and f.count("{0}") > 1
        ) | ({"heaviside"} if self.name == "python" else frozenset())

    def precedence(self, op: str, arity: int) -> tuple[int, tuple[int, ...]]:
        return self.precedences.get(op) or PRECEDENCE.get(op) or (100, (0,) * arity)


TARGETS = {
    "numpy": Target("numpy", NUMPY, "Any", NUMPY_PRECEDENCE),
    "python": Target("python", PYTHON, "float", PYTHON_PRECEDENCE),
}

for _target in TARGETS.values():
    _gaps = (
        set(ARITY)
        - set(_target.printer)
        - (TENSOR if _target.name == "python" else set())
    )
    assert not _gaps, f"target {_target.name} cannot print {sorted(_gaps)}"


def render(
    spec: Spec,
    backward: Program,
    unit: Program,
    target: str = "numpy",
    checked: str = "",
) -> str:
    """The source of the generated module.

    `backward` is seeded with the parameter `dy` (for `backward(tape, dy)`);
    `unit` is the same program seeded with 1 (for `value_and_grad`);
    `checked` says how the gradients were verified, for the docstring.
    """
    if target == "python" and backward.tensor:
        raise SpecError(
            "the python target compiles scalar specs only; use --target numpy for "
            "vectors and matrices",
            path=spec.path,
        )
    t = TARGETS[target]
    tape = list(backward.inputs) + [a.name for a in backward.forward]
    # forward and backward: one line per operation, the full tape (teaching form);
    # value_and_grad: temporaries used once are printed where they are used.
    forward = body(backward.forward, t)
    graded = {g for _, g in backward.gradients if isinstance(g, str)}
    transposes = fusible(backward.backward, graded, only={"transpose"})
    backward_lines = body(backward.backward, t, transposes)
    unit_graded = {g for _, g in unit.gradients if isinstance(g, str)}
    read_by_backward = {arg for a in unit.backward for arg in a.args} | unit_graded
    fused_forward = body(
        unit.forward, t, fusible(unit.forward, read_by_backward | {unit.output})
    )
    unit_lines = body(unit.backward, t, fusible(unit.backward, unit_graded))
    uses_math = any("math." in line for line in forward + backward_lines + unit_lines)
    unit_gradients = _gradients(unit, target)
    unit_one_point_gradients = _gradients(unit, target, one_point=True)
    if target == "numpy":  # arrays: free each one after its last use, as by hand
        returned = _names([*unit_gradients, *unit_one_point_gradients, unit.output])
        fused_forward, unit_lines = _deleting(fused_forward, unit_lines, keep=returned)
    ops = {a.op for a in backward.forward + backward.backward + unit.backward}
    gradients = _gradients(backward, target)
    read = {arg for a in backward.backward for arg in a.args if isinstance(arg, str)}
    read |= _names(gradients)
    context = {
        "version": __version__,
        "target": target,
        "value_type": TARGETS[target].value_type,
        "spec": spec,
        "source_file": Path(spec.path).name
        if spec.path and not spec.path.startswith("<")
        else None,
        "description": [
            _docstring_safe(line) for line in spec.description.strip().splitlines()
        ],
        "source": _docstring_safe(" ".join(spec.source.split())),
        "steps": [
            _docstring_safe(f"{s.name} = {' '.join(s.text.split())}")
            for s in spec.steps
        ],
        "output": backward.output,
        "wrt": list(backward.wrt),
        "summary": textwrap.fill(
            f"Backward pass: reverse-mode differentiation of {backward.output} with respect to "
            f"{', '.join(backward.wrt)}. The adjoint d{backward.output}_dv holds "
            f"∂{backward.output}/∂v; t0, t1, ... are temporaries that hold one operation each.",
            width=79,
        ),
        "tape_fields": tape,
        "params": backward.inputs,
        "forward": forward,
        "make_tape": call("tape = Tape", tape, INDENT),
        "unpack": [f"{name} = tape.{name}" for name in tape if name in read],
        "backward": backward_lines,
        "gradients": gradients,
        "unit_backward": unit_lines,
        "fused_forward": fused_forward,
        "unit_gradients": unit_gradients,
        # numpy, scalar spec: a call at one point skips the reductions of a batch
        "one_point": target == "numpy" and not backward.tensor,
        "one_point_gradients": _gradients(backward, target, one_point=True),
        "unit_one_point_gradients": unit_one_point_gradients,
        "checked": textwrap.fill(checked, width=79),
        "uses_math": uses_math,
        "tensor": backward.tensor,
        "shapes": textwrap.fill(
            "Inputs have the spec's shapes ("
            + ", ".join(
                f"{name} {show(shape)}"
                for name, shape in zip(
                    backward.inputs, backward.input_shapes, strict=True
                )
            )
            + "); named dimensions take their size from the arguments. Arguments may "
            "be NumPy arrays or any array type NumPy dispatches to, such as Dask or CuPy.",
            width=79,
            break_long_words=False,
        ),
        "helpers": sorted(ops & HELPERS),
        # A non-scalar output of a tensor spec: dy is broadcast to its shape.
        "seed_dy": backward.tensor and bool(backward.shapes()[backward.output]),
        "call": call,
        "tuple_display": tuple_display,
        "INDENT": INDENT,
    }
    return _environment().get_template(f"{target}/module.py.j2").render(context)


def body(
    assigns: tuple[Assign, ...], target: Target, fuse: frozenset[str] = frozenset()
) -> list[str]:
    """One line per assignment, each group of lines under a comment with its math.

    A name in `fuse` is not given a line: its expression is printed where it is
    used (once), parenthesized as precedence needs, unless that line would get
    too long. `X.T @ g` reads as one writes it by hand.
    """
    pending: dict[str, tuple[str, int]] = {}  # fused name -> (expression, precedence)
    lines, note = [], ""

    def line(name: str, op: str, args: tuple, params: tuple) -> tuple[str, int]:
        op = _printed_as(op, args)
        precedence, needs = target.precedence(op, len(args))
        if op in target.repeats:  # an inlined operand would be computed twice
            for arg in args:
                if isinstance(arg, str) and arg in pending:
                    lines.append(f"{arg} = {pending.pop(arg)[0]}")
        printed = list(args)
        for i, arg in enumerate(args):
            if isinstance(arg, str) and arg in pending:
                text, p = pending[arg]
                printed[i] = f"({text})" if p < needs[i] else text
        text = expression(op, tuple(printed), target.printer, params)
        if len(f"{INDENT * 2}{name} = {text}") > LINE_LENGTH:  # give operands lines
            for arg in args:
                if isinstance(arg, str) and arg in pending:
                    lines.append(f"{arg} = {pending.pop(arg)[0]}")
            text = expression(op, args, target.printer, params)
        for arg in args:
            pending.pop(arg, None) if isinstance(arg, str) else None
        return text, precedence

    for a in assigns:
        note = a.note or note
        text, precedence = line(a.name, a.op, a.args, a.params)
        if a.name in fuse and len(text) <= FUSED_LENGTH:
            pending[a.name] = (text, precedence)
            continue
        if note:
            lines.append(f"# {note}")
            note = ""
        lines.append(f"{a.name} = {text}")
    return lines


def _deleting(*parts: list[str], keep: set[str] = frozenset()) -> tuple[list[str], ...]:
    """`parts` (consecutive lines of one function) with `del` after each name's last read.

    NumPy frees an array when its last reference goes: without the `del`, every
    intermediate of a batch stays alive until the function returns, and peak
    memory grows with the length of the program instead of its width.
    """
    lines = [line for part in parts for line in part]
    last: dict[str, int] = {}
    defined: set[str] = set()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            continue
        target, _, value = line.partition(" = ")
        for name in _names([value]):
            last[name] = i
        defined.add(target)
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
                out.append(f"del {', '.join(after[i])}")
        result.append(out)
        start += len(part)
    return tuple(result)


def _names(texts: list[str]) -> set[str]:
    """The variable names read in `texts` (not attributes such as np.exp's exp)."""
    return {name for text in texts for name in _NAME.findall(text)}


def _printed_as(op: str, args: tuple[Operand, ...]) -> str:
    """The printer entry for `op(*args)`: a power whose exponent is not a whole
    number prints as np.power / math.pow, since Python's ** makes a negative
    float to a fractional power a complex number (np.power gives nan, math.pow
    raises ValueError, as for every other value outside a function's domain)."""
    if op == "pow" and not (isinstance(args[1], int | float) and args[1] % 1 == 0):
        return "power"
    return op


def fusible(assigns: tuple[Assign, ...], keep: set[str], only: set[str] | None = None):
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


def expression(
    op: str, args: tuple[Operand, ...], printer: dict[str, Format], params: tuple = ()
) -> str:
    """How `op(*args)` (with static `params`) reads in the target's syntax."""
    printed = [_operand(arg, i, op) for i, arg in enumerate(args)]
    fmt = printer[op]
    return fmt(*printed, *params) if callable(fmt) else fmt.format(*printed)


def _operand(arg: Operand, position: int, op: str) -> str:
    if isinstance(arg, str):
        return arg
    text = repr(float(arg)) if isinstance(arg, float) else str(arg)
    # A negative constant needs parentheses inside an infix operation, except leading a product.
    if arg < 0 and op in _INFIX and not (position == 0 and op in ("mul", "div")):
        return f"({text})"
    return text


def _gradients(program: Program, target: str, one_point: bool = False) -> list[str]:
    """The value of each gradient, summed back to its input's shape on the numpy target.

    `one_point`: the output is 0-d, so every input it depends on is 0-d too and
    only the gradients of inputs it does not depend on need a shape.
    """
    result = []
    tensor = program.tensor  # a scan of the inputs: once, not once per gradient
    for name, grad in program.gradients:
        value = grad if isinstance(grad, str) else repr(float(grad))
        if target == "numpy" and not tensor and not (one_point and grad != 0):
            value = f"_sum_to({value}, np.shape({name}), np.shape({program.output}))"
        elif tensor and grad == 0:
            value = f"np.zeros(np.shape({name}))"
        result.append(value)
    return result


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


def _docstring_safe(text: str) -> str:
    """Text that cannot end the docstring it is placed in or start an escape sequence."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def templates_dir() -> Path:
    """The templates folder: inside the installed package, or beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"symgrad's templates are missing (looked beside {here})")
