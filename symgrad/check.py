"""`module, point -> Report`: compare a compiled gradient with central finite differences.

The reference is independent of symgrad's differentiation: it calls only the
generated `forward`. Points are sampled where the function is defined (every
intermediate finite) and away from kinks (|x| for abs, relu, sign, a tie in
max/min, the condition of a Piecewise), where finite differences cannot see
the subgradient symgrad returns.

Outside its domain (log of a negative number, a division by zero, an
overflow) a generated module behaves like the library it is written in: the
numpy target returns nan or inf (with NumPy's RuntimeWarning), the python
target raises what the math module raises (ValueError, ZeroDivisionError,
OverflowError). The check treats all of these, and any complex or non-finite
value or gradient, as a point outside the domain (`OutOfDomain`), never as a
gradient mismatch.
"""

from __future__ import annotations

import inspect
import math
import types
from dataclasses import dataclass, field

import numpy as np

from symgrad.ops import OPS

EPS = 1e-6
"""Relative step of the central difference (float64)."""
TOLERANCE = 1e-5
"""Largest accepted |analytical - numerical| / max(1, |analytical|, |numerical|)."""
KINK_MARGIN = 1e-3
"""Sampled points keep every kink argument at least this far from its kink."""

_DOMAIN_ERRORS = (ValueError, ZeroDivisionError, OverflowError, FloatingPointError)


class OutOfDomain(ValueError):
    """The function is not defined (or not finite) at the point."""


@dataclass(frozen=True)
class Row:
    name: str
    index: tuple[int, ...]
    analytical: float
    numerical: float

    @property
    def error(self) -> float:
        scale = max(1.0, abs(self.analytical), abs(self.numerical))
        return abs(self.analytical - self.numerical) / scale

    @property
    def label(self) -> str:
        return self.name + (str(list(self.index)) if self.index else "")


@dataclass(frozen=True)
class Report:
    """The comparison at one point; `ok` when every entry is within `TOLERANCE`."""

    point: dict[str, object]
    value: float
    rows: list[Row] = field(default_factory=list)
    kinks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.error <= TOLERANCE for row in self.rows)

    @property
    def worst(self) -> Row | None:
        return max(self.rows, key=lambda r: r.error, default=None)

    def __str__(self) -> str:
        point = ", ".join(f"{k}={_fmt(v)}" for k, v in self.point.items())
        lines = [f"at {point}: value {self.value:.10g}"]
        width = max([len(r.label) for r in self.rows] + [8])
        lines.append(
            f"  {'gradient':<{width}}  {'analytical':>22}  {'numerical':>22}  {'rel. error':>10}"
        )
        worst = self.worst
        for r in self.rows:
            flag = "  <-- worst" if r is worst and not self.ok else ""
            lines.append(
                f"  {r.label:<{width}}  {r.analytical:>22.15g}  {r.numerical:>22.15g}"
                f"  {r.error:>10.2e}{flag}"
            )
        lines += [f"  note: {k}" for k in self.kinks]
        return "\n".join(lines)


def parameters(module: types.ModuleType) -> list[str]:
    """The generated module's inputs, in order."""
    return list(inspect.signature(module.forward).parameters)


def check_gradients(module: types.ModuleType, point: dict[str, object]) -> Report:
    """Compare `module.value_and_grad` at `point` with central differences of `module.forward`.

    Raises OutOfDomain when the function or its gradient is not finite there.
    """
    names = parameters(module)
    missing = [n for n in names if n not in point]
    unknown = [n for n in point if n not in names]
    if missing or unknown:
        raise KeyError(
            f"point must give exactly {names}; missing {missing}, unknown {unknown}"
        )
    args = {n: _value(point[n]) for n in names}
    value, gradients = _evaluate(module, args)
    rows = []
    for name in gradients._fields:
        analytical = np.asarray(getattr(gradients, name), dtype=float)
        x = np.asarray(args[name], dtype=float)
        for index in np.ndindex(x.shape):
            numerical = _central_difference(module, args, name, index)
            rows.append(
                Row(
                    name,
                    index,
                    float(np.broadcast_to(analytical, x.shape)[index]),
                    numerical,
                )
            )
    return Report(dict(point), value, rows, _kinks(module, args))


def sample_point(
    module: types.ModuleType,
    rng: np.random.Generator,
    fixed: dict[str, object] | None = None,
    tries: int = 500,
) -> dict[str, object]:
    """A random point inside the domain and away from kinks; `fixed` values are kept."""
    fixed = dict(fixed or {})
    compiled = getattr(module, "__symgrad__", None)
    positive = (
        {i.name for i in compiled.spec.inputs if i.positive} if compiled else set()
    )
    shapes = _concrete_shapes(compiled, fixed) if compiled else {}
    for _ in range(tries):
        point = {
            n: fixed[n] if n in fixed else _draw(rng, n in positive, shapes.get(n, ()))
            for n in parameters(module)
        }
        args = {n: _value(v) for n, v in point.items()}
        try:
            _evaluate(module, args)
            for name in parameters(module):
                if name not in fixed:
                    for sign in (1, -1):
                        _forward_value(
                            module, {**args, name: args[name] * (1 + sign * 1e-4)}
                        )
        except OutOfDomain:
            continue
        if not _kinks(module, args, KINK_MARGIN):
            return point
    if fixed and len(fixed) == len(parameters(module)):
        _evaluate(module, {n: _value(v) for n, v in fixed.items()})  # says why
    given = ", ".join(f"{n}={_fmt(v)}" for n, v in fixed.items())
    raise OutOfDomain(
        f"found no point inside the function's domain in {tries} tries"
        + (f" with {given}" if given else "; give one with --at")
    )


def _draw(rng: np.random.Generator, positive: bool, shape: tuple[int, ...]):
    low, high = (0.1, 3.0) if positive else (-2.0, 2.0)
    if not shape:
        return round(float(rng.uniform(low, high)), 4)
    return np.round(rng.uniform(low, high, size=shape), 4)


def _concrete_shapes(compiled, fixed: dict[str, object]) -> dict[str, tuple[int, ...]]:
    """Sizes for the declared shapes: named dimensions from fixed values, else small
    sizes that differ from each other (so a transposed gradient cannot pass)."""
    sizes: dict[str, int] = {}
    for i in compiled.spec.inputs:
        if i.name in fixed:
            for dim, size in zip(i.shape, np.shape(fixed[i.name]), strict=False):
                if isinstance(dim, str):
                    sizes.setdefault(dim, size)
    shapes = {}
    for i in compiled.spec.inputs:
        shapes[i.name] = tuple(
            d if isinstance(d, int) else sizes.setdefault(d, 2 + len(sizes))
            for d in i.shape
        )
    return shapes


def _value(v: object) -> object:
    return v if np.ndim(v) == 0 else np.asarray(v, dtype=float)


def _evaluate(module: types.ModuleType, args: dict[str, object]):
    try:
        with np.errstate(all="raise"):
            value, gradients = module.value_and_grad(**args)
            _, tape = module.forward(**args)
    except _DOMAIN_ERRORS as err:
        raise OutOfDomain(f"{_reason(err)} there ({err})") from None
    for name, v in zip(type(tape)._fields, tape, strict=True):
        if not _real_and_finite(v):
            raise OutOfDomain(f"{name} is {_fmt(v)} there")
    for name, g in zip(gradients._fields, gradients, strict=True):
        if not _real_and_finite(g):
            raise OutOfDomain(f"the gradient for {name} is {_fmt(g)} there")
    return float(np.sum(value)), gradients


def _real_and_finite(v: object) -> bool:
    """True for real, finite numbers and arrays (a Python float ** 1.5 may be complex)."""
    array = np.asarray(v)
    if array.dtype == object or np.iscomplexobj(array):
        return False
    return bool(np.all(np.isfinite(array.astype(float))))


def _reason(err: Exception) -> str:
    text = str(err)
    if isinstance(err, OverflowError) or "overflow" in text:
        return "the function overflows float64"
    if isinstance(err, ZeroDivisionError) or "divide by zero" in text:
        return "the function divides by zero"
    return "the function is not defined"


def _forward_value(module: types.ModuleType, args: dict[str, object]) -> float:
    try:
        with np.errstate(all="raise"):
            output = module.forward(**args)[0]
    except _DOMAIN_ERRORS as err:
        raise OutOfDomain(f"{_reason(err)} near there ({err})") from None
    if not _real_and_finite(output):
        raise OutOfDomain(f"the function is {_fmt(output)} near there")
    value = float(np.sum(output))
    if not math.isfinite(value):
        raise OutOfDomain("the function is not finite near there")
    return value


def _central_difference(
    module, args: dict[str, object], name: str, index: tuple[int, ...]
) -> float:
    """∂ sum(output) / ∂ args[name][index] by central differences."""
    x = args[name]
    center = float(np.asarray(x)[index])
    h = EPS * max(1.0, abs(center))

    def shifted(delta: float) -> float:
        if np.ndim(x) == 0:
            moved = center + delta
        else:
            moved = np.array(x, dtype=float)
            moved[index] = center + delta
        return _forward_value(module, {**args, name: moved})

    return (shifted(h) - shifted(-h)) / (2 * h)


def _kinks(
    module: types.ModuleType, args: dict[str, object], margin: float = 0.0
) -> list[str]:
    """Where the point sits within `margin` of a kink (only for modules symgrad compiled)."""
    compiled = getattr(module, "__symgrad__", None)
    if compiled is None:
        return []
    _, tape = module.forward(**args)
    values = tape._asdict()

    def get(arg):
        return values[arg] if isinstance(arg, str) else arg

    found = []
    for a in compiled.backward.forward:
        kink = OPS[a.op].kink
        if kink is None:
            continue
        distance = kink(*(np.asarray(get(arg), dtype=float) for arg in a.args))
        if np.any(distance <= margin):
            found.append(
                f"{a.name} = {a.op}({', '.join(map(str, a.args))}) is at its kink, where "
                f"symgrad gives PyTorch's subgradient and finite differences cannot check it"
            )
    return found


def _fmt(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(np.asarray(v).tolist())
