"""`module, point -> Report`: compare a compiled gradient with finite differences.

The reference is independent of symgrad's differentiation: it calls only the
generated `forward` (and, when float64 cannot settle an entry, the spec's own
SymPy steps evaluated by mpmath). Points are sampled where the function is
defined (every intermediate finite) and away from kinks (|x| for abs, relu,
sign, a tie in max/min, the condition of a Piecewise), where finite
differences cannot see the subgradient symgrad returns.

Each derivative is estimated the way numdifftools does it (`_differentiate`):
central differences at geometrically decreasing steps (each half the one
before, from max(1, |x|) / 16 down to about 3e-11 of it), Richardson
extrapolation that removes their h**2 and h**4 error terms, an error bound
from how far the extrapolated value moves between neighbouring steps and
from its last correction (times `SAFETY`, plus the function's rounding over
the step), and the step with the smallest bound. Only steps where the
differences shrink as h**2 does are used: a function that oscillates faster
than the step, or float64 rounding noise, gives no estimate rather than a
confident wrong one. Each row then gets a verdict:

* "mismatch": |analytical - numerical| exceeds the bound plus a slack for
  the analytical gradient's own rounding (`FLOOR` of it, plus `NEGLIGIBLE`
  of |f| / max(1, |x|));
* "ok": they agree, and the bound is within `TOLERANCE` of
  max(1, |analytical|, |numerical|);
* "unverified": they agree only because the bound is wide, and the row
  says why (finite differences disagree with each other at every step,
  say).

float64 stops as soon as it verifies a derivative to `SETTLED`. What it
cannot verify that tightly, a scalar spec estimates again at `DIGITS`
significant digits: the spec's steps, in order, evaluated by mpmath. That
estimate decides, except that a mismatch only it can see stays
"unverified": float64 rounding in the gradient itself (1 - tanh(x)**2 near
1, say) may be all there is to it. Tensor specs contain symgrad's own
tensor operations, which mpmath cannot evaluate: they keep the float64
verdict.

An input with more than `FULL_JACOBIAN` entries is checked on
`SAMPLED_ENTRIES` random entries plus `DIRECTIONS` random unit directions v
(the derivative along v against sum(gradient * v)): a few dozen forward
evaluations per row, whatever the input's size. A direction sees every
error e of the gradient with |e·v| above the bound; for a random v that is
about |e| / sqrt(size), so a wrong scale, a wrong block, a transposed
matrix, a dropped term and one flipped sign among thousands of comparable
entries are all caught. What sampling cannot see is an error confined to
entries far smaller than the rest of the gradient (|e| below the bound
times sqrt(size)) unless one of them is sampled.

A module with several outputs gets a row per output for `backward`, the
VJP of that output (its upstream gradient 1, or random weights w over an
array output, and the others' 0) along a random unit direction d over the
differentiated inputs, against Σ w·o along d. A module that carries jvp,
hvp, hessian or jacobian gets rows for them too, each estimated the same way
from what the gradient rows verify (`_higher_rows`): the JVP along
`HIGHER_DIRECTIONS` random unit directions d against `forward` along d (each
output's), H·d (entry by entry, sampled as the gradient is) against `grad`
along d, Hessian column w against `grad` along input w, and each Jacobian
block ∂o/∂u, weighted by a random w over o and along a random unit d over u,
against Σ w·o along d. A gradient being differenced rounds like the terms
it is computed from (about |f| / max(1, |x|), not its own value: s * (1 - s)
of a saturated sigmoid), so that is the rounding their bound allows for, and
their `NEGLIGIBLE` slack is of it. What float64 does not verify, a scalar
spec retries at `DIGITS` digits as a gradient row does: Σ w·o from the
spec's steps, a gradient entry as mpmath's derivative of them.

Outside its domain (log of a negative number, a division by zero, an
overflow) a generated module behaves like the library it is written in: the
numpy target returns nan or inf (with NumPy's RuntimeWarning), the python
target raises what the math module raises (ValueError, ZeroDivisionError,
OverflowError). The check treats all of these, and any complex or non-finite
value or gradient, as a point outside the domain (`OutOfDomain`), never as a
gradient mismatch.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from symgrad.compiler.reverse import program_guards
from symgrad.frontend.spec import Spec, make_symbol
from symgrad.ops import OPS

TOLERANCE = 1e-5
"""An estimate verifies an entry when its bound is at most TOLERANCE * max(1, |analytical|, |numerical|)."""
SETTLED = 1e-9
"""float64 settles a derivative when it agrees within a bound of SETTLED * max(|analytical|,
|numerical|) (or `NEGLIGIBLE`); otherwise a scalar spec retries at `DIGITS` digits."""
FLOOR = 1e-8
"""Relative slack added to every bound, for the rounding of the analytical gradient."""
NEGLIGIBLE = 1e-10
"""Absolute slack added to every bound, NEGLIGIBLE * |f| / max(1, |x|): a derivative
that small moves f by less than float64 rounding of a deep computation's
intermediates can (a saturated tanh turns f into a staircase)."""
FIRST_STEP = 4
"""The largest step is max(1, |x|) / 2**FIRST_STEP; each next step is half the last."""
STEPS = 32
"""Steps tried at most in float64 (the last is about 3e-11 * max(1, |x|))."""
DIGITS = 50
"""Significant digits of the high-precision retry (mpmath)."""
DIGITS_STEPS = 64
"""Steps tried at most at `DIGITS` digits."""
SAFETY = 4.0
"""The bound is SAFETY times the spread of the extrapolations around the chosen step."""
ROUNDING = 10.0
"""The function's rounding error, in units of eps * |value|, added to the bound (over the step)."""
FULL_JACOBIAN = 16
"""Inputs with at most this many entries are checked entry by entry; larger ones
on `SAMPLED_ENTRIES` random entries and `DIRECTIONS` random unit directions."""
SAMPLED_ENTRIES = 8
DIRECTIONS = 4
HIGHER_DIRECTIONS = 2
"""Random unit directions d along which a module's jvp and hvp are checked."""
KINK_MARGIN = 1e-3
"""Sampled points keep every kink argument at least this far from its kink."""

_DOMAIN_ERRORS = (ValueError, ZeroDivisionError, OverflowError, FloatingPointError)
_RICHARDSON_TERMS = 2  # the h**2 and h**4 terms of the central difference's error


class OutOfDomain(ValueError):
    """The function is not defined (or not finite) at the point."""


@dataclass(frozen=True)
class Estimate:
    """A derivative from finite differences, a bound on its error, and the
    digits it was computed with (None: float64)."""

    value: float
    bound: float = math.inf
    digits: int | None = None


@dataclass(frozen=True)
class Row:
    """One comparison: an entry of a gradient (`index`), or for a large input its
    derivative along random unit direction number `direction` (`sum(gradient * v)`)."""

    name: str
    index: tuple[int, ...]
    analytical: float
    numerical: float
    bound: float
    """Estimated |numerical - exact derivative|."""
    verdict: str
    """"ok", "mismatch" or "unverified"."""
    reason: str = ""
    """Why an unverified row could not be verified."""
    direction: int | None = None
    digits: int | None = None
    """Digits of the arithmetic the numerical value came from (None: float64)."""
    derivative: str = "gradient"
    """Which derivative of the module the row checks: "gradient", "backward"
    (`name` is "dx=1", the upstream gradient of the output it is the VJP of, or
    "dx=w" for random weights), "jvp", "hvp", "hessian" (then `name` is "w.u",
    the entry hessian(...).w.u) or "jacobian" (`name` is "o.u", the block
    jacobian(...).o.u, or "u" for one output)."""
    along: int | None = None
    """The number of the random direction d of a jvp or hvp row."""

    @property
    def error(self) -> float:
        scale = max(1.0, abs(self.analytical), abs(self.numerical))
        return abs(self.analytical - self.numerical) / scale

    @property
    def label(self) -> str:
        if self.direction is not None:
            entry = f"{self.name}·v{self.direction}"
        else:
            entry = self.name + (str(list(self.index)) if self.index else "")
        if self.derivative == "gradient":
            return entry
        if self.derivative == "backward":
            return f"backward({self.name})"
        if self.derivative == "jvp":  # `name`: the output, where there are several
            return f"jvp(d{self.along})" + (f".{self.name}" if self.name else "")
        if self.derivative == "hvp":
            return f"hvp(d{self.along}).{entry}"
        return f"{self.derivative}.{entry}"


@dataclass(frozen=True)
class Report:
    """The comparison at one point; `ok` when every row is verified ok."""

    point: dict[str, object]
    value: float
    rows: list[Row] = field(default_factory=list)
    kinks: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The rows' worst verdict: "mismatch", else "unverified", else "ok"."""
        verdicts = {r.verdict for r in self.rows}
        return next((v for v in ("mismatch", "unverified") if v in verdicts), "ok")

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def reason(self) -> str:
        """Why the first unverified row could not be verified ("" when none)."""
        row = next((r for r in self.rows if r.verdict == "unverified"), None)
        return f"{row.label}: {row.reason}" if row else ""

    @property
    def derivatives(self) -> list[str]:
        """The derivatives the rows check, in order: "gradient", then any of
        "backward", "jvp", "hvp", "hessian", "jacobian"."""
        return list(dict.fromkeys(r.derivative for r in self.rows))

    @property
    def worst(self) -> Row | None:
        """The mismatch with the largest relative error, else the largest error."""
        return max(
            self.rows, key=lambda r: (r.verdict == "mismatch", r.error), default=None
        )

    def __str__(self) -> str:
        point = ", ".join(f"{k}={_fmt(v)}" for k, v in self.point.items())
        lines = [f"at {point}: value {self.value:.10g}"]
        kind = "gradient" if self.derivatives == ["gradient"] else "derivative"
        width = max([len(r.label) for r in self.rows] + [len(kind)])
        lines.append(
            f"  {kind:<{width}}  {'analytical':>22}  {'numerical':>22}"
            f"  {'rel. error':>10}"
        )
        worst = self.worst
        for r in self.rows:
            how = f", {r.digits} digits" if r.digits else ""
            flag = "  <-- worst" if r is worst and self.verdict == "mismatch" else ""
            lines.append(
                f"  {r.label:<{width}}  {r.analytical:>22.15g}  {r.numerical:>22.15g}"
                f"  {r.error:>10.2e}  {r.verdict} (± {r.bound:.1e}{how}){flag}"
            )
        lines += [f"  note: {k}" for k in self.kinks]
        lines += [f"  could not verify {self.reason}"] if self.reason else []
        return "\n".join(lines)


class _NumpyResults:
    """A generated module whose functions return NumPy values: an engine target's
    arrays (torch tensors, JAX arrays) become NumPy arrays for the checks' arithmetic;
    Python and NumPy numbers pass unchanged."""

    def __init__(self, module) -> None:
        self._module = getattr(module, "_module", module)

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            return value

        @functools.wraps(value)
        def converted(*args, **kwargs):
            return _numpy(value(*args, **kwargs))

        return converted


def _numpy(value):
    if isinstance(value, tuple):  # a NamedTuple (Tape, Gradients) keeps its type
        parts = [_numpy(v) for v in value]
        return (
            tuple.__new__(type(value), parts)
            if hasattr(value, "_fields")
            else tuple(parts)
        )
    if isinstance(value, float | int | np.ndarray | np.generic) or not hasattr(
        value, "__array__"
    ):
        return value
    if hasattr(value, "detach"):  # a torch tensor, perhaps on a GPU
        value = value.detach().cpu()
    return np.asarray(value)


def parameters(module: types.ModuleType) -> list[str]:
    """The generated module's inputs, in order."""
    return list(inspect.signature(module.forward).parameters)


def check_gradients(
    module: types.ModuleType,
    point: dict[str, object],
    rng: np.random.Generator | None = None,
) -> Report:
    """Compare `module.value_and_grad` at `point` with finite differences of `module.forward`.

    `rng` picks the entries and directions checked in inputs with more than
    `FULL_JACOBIAN` entries (default: a fixed seed). Raises OutOfDomain when
    the function or its gradient is not finite there.
    """
    module = _NumpyResults(module)
    names = parameters(module)
    missing = [n for n in names if n not in point]
    unknown = [n for n in point if n not in names]
    if missing or unknown:
        raise KeyError(
            f"point must give exactly {names}; missing {missing}, unknown {unknown}"
        )
    args = {n: as_value(point[n]) for n in names}
    value, gradients = _evaluate(module, args)
    rng = np.random.default_rng(0) if rng is None else rng
    rows = []
    for name in gradients._fields:
        gradient = np.asarray(getattr(gradients, name), dtype=float)
        for index, direction, v in _probes(np.shape(args[name]), rng):
            probe = _Probe(module, args, value, name, gradient, index, v)
            estimate, verdict, reason = probe.compare()
            rows.append(
                Row(name, index, probe.analytical, estimate.value, estimate.bound,
                    verdict, reason, direction, estimate.digits)
            )  # fmt: skip
    rows += _higher_rows(module, args, value, gradients, rng)
    return Report(dict(point), value, rows, _kinks(module, args))


def _probes(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple]:
    """(index, None, None) for each entry compared, then ((), number, unit vector)
    for each random direction."""
    size = math.prod(shape)
    if size <= FULL_JACOBIAN:
        return [(index, None, None) for index in np.ndindex(shape)]
    picked = np.sort(rng.choice(size, SAMPLED_ENTRIES, replace=False))
    probes = [
        (tuple(int(i) for i in np.unravel_index(k, shape)), None, None) for k in picked
    ]
    for number in range(1, DIRECTIONS + 1):
        v = rng.standard_normal(shape)
        probes.append(((), number, v / np.linalg.norm(v)))
    return probes


class _Derivative:
    """d/dt g(t) at t = 0, `analytical`, against central finite differences of g
    (`moved`), with steps relative to `scale`."""

    analytical: float
    scale: float
    negligible: float

    def moved(self, t: float) -> tuple[float, float]:
        """g(t), and the step actually taken."""
        raise NotImplementedError

    def compare(self) -> tuple[Estimate, str, str]:
        """(estimate, verdict, reason) for the derivative: float64 first; unless it
        settles the derivative to `SETTLED`, `retried` has the last word."""
        eps = np.finfo(float).eps
        estimate = _differentiate(
            self.moved, self.scale, eps, STEPS, self.settles, self.terms
        )
        if self.settles(estimate):
            return estimate, "ok", ""
        return self.retried(estimate, self.judge(estimate, TOLERANCE))

    terms = 0.0
    """The size of the terms g is computed from (|f| / |x| for a gradient): g's
    rounding is about eps times the larger of it and |g|."""

    def precise(self) -> Callable | str:
        """`moved` at `DIGITS` digits, or the reason there is none."""
        raise NotImplementedError

    def retried(self, estimate: Estimate, in_float64: str) -> tuple[Estimate, str, str]:
        """A scalar spec estimates the derivative again at `DIGITS` digits. That
        estimate decides where it verifies the derivative, or finds a mismatch
        float64 finds too; a gap only it sees leaves the derivative unverified
        (float64 rounding in the gradient itself, 1 - tanh(x)**2 near 1 say, may
        be all there is to it).
        """
        precise = self.precise()
        if isinstance(precise, str):
            return estimate, in_float64, self.why(in_float64, estimate, f" ({precise})")
        with mpmath.workdps(DIGITS):
            found = _differentiate(
                precise, mpmath.mpf(self.scale), mpmath.eps, DIGITS_STEPS,
                self.settles, mpmath.mpf(self.terms),
            )  # fmt: skip
        exact = Estimate(float(found.value), float(found.bound), DIGITS)
        verdict = self.judge(exact, TOLERANCE)
        if verdict == "ok" or verdict == in_float64 == "mismatch":
            return exact, verdict, ""
        if verdict == "mismatch":
            gap = abs(self.analytical - exact.value)
            scale = max(1.0, abs(self.analytical), abs(exact.value))
            return exact, "unverified", (
                f"it differs by {gap / scale:.0e} from the derivative at {DIGITS} "
                f"digits, more than float64 finite differences can resolve: float64 "
                f"may not compute this derivative any closer here"
            )  # fmt: skip
        if in_float64 == "ok":
            return estimate, "ok", ""
        return exact, verdict, self.why(verdict, exact, f", even at {DIGITS} digits")

    def why(self, verdict: str, estimate: Estimate, more: str) -> str:
        """Why an unverified derivative could not be verified ("" for other verdicts)."""
        if verdict != "unverified":
            return ""
        if math.isinf(estimate.bound):
            return (
                "no steps give finite differences that shrink like h**2 (the function "
                "varies faster than the steps, or leaves its domain)" + more
            )
        spread = estimate.bound / max(1.0, abs(self.analytical), abs(estimate.value))
        return (
            f"finite differences disagree with each other by {spread:.0e} at every step"
            + more
        )

    def judge(self, estimate: Estimate, tolerance: float, least: float = 1.0) -> str:
        """The verdict on `estimate`: "mismatch" when the analytical derivative is
        further from it than its bound plus the slack for the analytical one's
        rounding (`FLOOR` of it, and `NEGLIGIBLE`); else "ok" when the bound is
        within `tolerance` of max(least, |analytical|, |numerical|) (or within
        `NEGLIGIBLE`), "unverified" when not."""
        a, n = self.analytical, estimate.value
        if abs(a - n) > estimate.bound + FLOOR * max(abs(a), abs(n)) + self.negligible:
            return "mismatch"
        if estimate.bound <= tolerance * max(least, abs(a), abs(n)) + self.negligible:
            return "ok"
        return "unverified"

    def settles(self, estimate: Estimate) -> bool:
        """Whether `estimate` verifies the derivative to `SETTLED` of itself."""
        return self.judge(estimate, SETTLED, least=0.0) == "ok"


class _Probe(_Derivative):
    """One derivative of sum(output): along entry `index` of input `name`, or
    along the unit vector `v` (then sum(gradient * v)); the analytical one
    against finite differences."""

    def __init__(self, module, args, value: float, name: str, gradient, index, v):
        self.module, self.args, self.name = module, args, name
        self.index, self.v = index, v
        x = np.asarray(args[name], dtype=float)
        gradient = np.broadcast_to(gradient, x.shape)
        if v is None:
            self.analytical = float(gradient[index])
            moves = abs(x[index])
        else:
            self.analytical = float(np.sum(gradient * v))
            moves = np.max(np.abs(x))
        self.scale = max(1.0, float(moves))
        """Steps are relative to max(1, |x|) over the entries that move."""
        self.negligible = NEGLIGIBLE * abs(value) / self.scale

    def moved(self, t: float) -> tuple[float, float]:
        """sum(output) with the input moved by t, and the step actually taken."""
        x = self.args[self.name]
        if self.v is not None:  # x + t * v rounds every entry: noise the bound sees
            return self.value_at(x + t * self.v), t
        center = float(np.asarray(x)[self.index])
        entry = center + t
        if np.ndim(x):
            shifted = np.array(x, dtype=float)
            shifted[self.index] = entry
        else:
            shifted = entry
        return self.value_at(shifted), entry - center  # center + t is rounded

    def value_at(self, shifted) -> float:
        return _forward_value(self.module, {**self.args, self.name: shifted})

    def precise(self) -> Callable | str:
        """`moved` at `DIGITS` digits, by the spec's own steps (`_precise`)."""
        function = _precise(self.module, self.args)
        if isinstance(function, str):
            return function
        values = {n: mpmath.mpf(float(v)) for n, v in self.args.items()}
        return lambda t: (function({**values, self.name: values[self.name] + t}), t)


def _precise(module, args: dict, output: str | None = None) -> Callable | str:
    """The spec's `output` (default: its first) as an mpmath function of a dict of
    input values, by its own steps at the current precision (OutOfDomain where
    not finite); or why there is none (no spec, or tensor inputs)."""
    compiled = getattr(module, "__symgrad__", None)
    if compiled is None:
        return f"no {DIGITS}-digit retry: the module has no spec"
    if any(np.ndim(v) for v in args.values()):
        return (
            f"the {DIGITS}-digit retry takes scalar inputs only: mpmath cannot "
            f"evaluate symgrad's tensor operations"
        )
    function = _high_precision(compiled.spec, output)

    def evaluate(values: dict):
        try:
            value = function(**values)
        except _DOMAIN_ERRORS as err:
            raise OutOfDomain(f"{_reason(err)} near there ({err})") from None
        if not isinstance(value, mpmath.mpf) or not mpmath.isfinite(value):
            raise OutOfDomain(f"the function is {value} near there")
        return value

    return evaluate


class _Along(_Derivative):
    """d/dt g(t) at t = 0 for a `g` that moves several inputs at once (the point
    plus t times a direction): a jvp against `forward`, an hvp or a Hessian
    column against the gradient. `precise` is g at `DIGITS` digits (or why there
    is none). Where g is a gradient entry ∂f/∂x, its float64 rounding follows
    the size of the terms it is computed from, not its value (s * (1 - s) of a
    saturated sigmoid): `terms` is |f| / min(scale, |x|) (∂ x**p / ∂x = p *
    x**p / x), and its `NEGLIGIBLE` slack is that of the gradient rows, of |f| /
    scale, over the scale."""

    def __init__(self, analytical: float, g: Callable[[float], float], scale: float,
                 precise: Callable | str, f: float = 0.0, x: float = 0.0):  # fmt: skip
        self.analytical, self.g, self.scale = analytical, g, scale
        self.precise_g = precise
        self.terms = f / min(scale, x) if x else f / scale
        self.negligible = NEGLIGIBLE * max(abs(g(0.0)), f / scale) / scale

    def moved(self, t: float) -> tuple[float, float]:
        return self.g(t), t  # x + t * d rounds every entry: noise the bound sees

    def precise(self) -> Callable | str:
        g = self.precise_g
        return g if isinstance(g, str) else lambda t: (g(t), t)

    def retried(self, estimate: Estimate, in_float64: str) -> tuple[Estimate, str, str]:
        """Only what float64 does not verify is retried (a row each for every
        direction and every Hessian entry: the retry is costly)."""
        if in_float64 == "ok":
            return estimate, "ok", ""
        return super().retried(estimate, in_float64)


def _higher_rows(
    module, args: dict, f: float, gradients, rng: np.random.Generator
) -> list[Row]:
    """Rows for backward's VJP of each output (several outputs), and for the jvp,
    hvp, hessian and jacobian `module` carries, each against finite differences
    of what the gradient rows verify: each output's VJP (weighted by a random w
    over an array output) along a random unit direction d against Σ w·o along d;
    the jvp along a random
    unit direction d against `forward` along d, H·d entry by entry (sampled as
    the gradient is) against the gradient along d, Hessian column w against the
    gradient along input w, Jacobian block ∂o/∂u (weighted by a random w over o)
    along a random unit d over u against Σ w·o along d. A scalar spec retries
    them at `DIGITS` digits: Σ w·o from its own steps, a gradient entry as
    mpmath's derivative of them."""
    wrt = gradients._fields
    inputs = list(args.values())
    outputs = getattr(module, "Outputs", None)
    outputs = outputs._fields if outputs else (None,)  # None: the one output
    rows = []

    def row(derivative, along, name, index, direction, analytical, g, d):
        moves = max(float(np.max(np.abs(args[w]))) for w, v in d.items() if np.any(v))
        scale = max(1.0, moves)
        probe = _Along(analytical, g, scale, g.precise, *getattr(g, "terms", ()))
        estimate, verdict, reason = probe.compare()
        rows.append(
            Row(name, index, analytical, estimate.value, estimate.bound, verdict,
                reason, direction, estimate.digits, derivative, along)
        )  # fmt: skip

    def moved(d: dict, t: float) -> dict:
        return {n: x + t * d[n] if n in d else x for n, x in args.items()}

    def value(d: dict, output=None, weights=1.0) -> Callable[[float], float]:
        def g(t):
            return _forward_value(module, moved(d, t), output, weights)

        function = _precise(module, args, output)
        if isinstance(function, str) or np.ndim(weights):
            g.precise = function if isinstance(function, str) else "weighted outputs"
        else:
            w = mpmath.mpf(float(weights))
            g.precise = lambda t: w * function(precisely(d, t))
        return g

    def gradient(d: dict, w: str, index, u) -> Callable[[float], float]:
        def g(t):
            return _entry(_gradients(module, moved(d, t))[w], index, u)

        x = np.abs(np.asarray(args[w], dtype=float))
        g.terms = abs(f), float(x[index] if u is None else np.max(x))  # see _Along
        function = _precise(module, args)
        if isinstance(function, str):
            g.precise = function
        else:  # mpmath.diff raises the precision to make its differences exact
            g.precise = lambda t: (
                mpmath.diff(lambda s: function({**precisely(d, t), w: s}),
                            precisely(d, t)[w])
            )  # fmt: skip
        return g

    def precisely(d: dict, t) -> dict:
        """The point moved by t along d, in mpmath numbers (scalar inputs)."""
        return {
            n: mpmath.mpf(float(x)) + t * mpmath.mpf(float(d.get(n, 0.0)))
            for n, x in args.items()
        }

    if len(outputs) > 1:  # backward(tape, dx, dy, ...): one upstream gradient each
        seeds = list(inspect.signature(module.backward).parameters)[1:]
        _, tape = module.forward(*inputs)
        for o, seed in zip(outputs, seeds, strict=True):
            d = _direction(args, wrt, rng)
            shape = np.shape(getattr(tape, o))
            weights = rng.standard_normal(shape) if shape else 1.0
            vjp = module.backward(
                tape, **{s: weights if s == seed else 0.0 for s in seeds}
            )
            analytical = sum(float(np.sum(getattr(vjp, w) * d[w])) for w in wrt)
            row("backward", None, f"{seed}={'w' if shape else 1}", (), None,
                analytical, value(d, o, weights), d)  # fmt: skip
    for along in range(1, HIGHER_DIRECTIONS + 1) if hasattr(module, "jvp") else ():
        d = _direction(args, wrt, rng)
        _, tangents = module.jvp(*inputs, *d.values())
        for o in outputs:
            tangent = tangents if o is None else getattr(tangents, o)
            row("jvp", along, o or "", (), None, float(np.sum(tangent)),
                value(d, o), d)  # fmt: skip
    for along in range(1, HIGHER_DIRECTIONS + 1) if hasattr(module, "hvp") else ():
        d = _direction(args, wrt, rng)
        product = module.hvp(*inputs, *d.values())
        for w in wrt:
            for index, direction, u in _probes(np.shape(args[w]), rng):
                analytical = _entry(getattr(product, w), index, u)
                row("hvp", along, w, index, direction, analytical,
                    gradient(d, w, index, u), d)  # fmt: skip
    if hasattr(module, "hessian"):
        hessian = module.hessian(*inputs)
        for w in wrt:
            e = {w: 1.0}
            for u in wrt:
                analytical = float(getattr(getattr(hessian, w), u))
                row("hessian", None, f"{w}.{u}", (), None, analytical,
                    gradient(e, u, (), None), e)  # fmt: skip
    if hasattr(module, "jacobian"):
        jacobian = module.jacobian(*inputs)
        for o in outputs:
            blocks = jacobian if o is None else getattr(jacobian, o)
            for u in wrt:
                block = np.asarray(getattr(blocks, u), dtype=float)
                d = _direction(args, (u,), rng)
                # the block has the shape of o, then of u: weights over o's axes
                out = block.shape[: block.ndim - np.ndim(args[u])]
                weights = rng.standard_normal(out)
                analytical = float(
                    np.sum(block * np.reshape(weights, out + (1,) * np.ndim(args[u]))
                           * d[u])
                )  # fmt: skip
                row("jacobian", None, f"{o}.{u}" if o else u, (), None, analytical,
                    value(d, o, weights), d)  # fmt: skip
    return rows


def _direction(args: dict, wrt: tuple[str, ...], rng: np.random.Generator) -> dict:
    """A random unit direction over every differentiated input (its entries together)."""
    d = {w: rng.standard_normal(np.shape(args[w])) for w in wrt}
    norm = math.sqrt(sum(float(np.sum(v**2)) for v in d.values()))
    return {w: v / norm if np.ndim(v) else float(v) / norm for w, v in d.items()}


def _entry(gradient, index, u) -> float:
    """Entry `index` of a gradient, or sum(gradient * u) along a unit vector u."""
    if u is not None:
        return float(np.sum(gradient * u))
    return float(np.asarray(gradient, dtype=float)[index])


def _gradients(module: types.ModuleType, args: dict) -> dict:
    """The gradients at a point near the one checked, by name; OutOfDomain unless finite."""
    try:
        with np.errstate(all="ignore"):
            gradients = module.grad(**args)
    except _DOMAIN_ERRORS as err:
        raise OutOfDomain(f"{_reason(err)} near there ({err})") from None
    for name, g in zip(gradients._fields, gradients, strict=True):
        if not _real_and_finite(g):
            raise OutOfDomain(f"the gradient for {name} is {_fmt(g)} near there")
    return gradients._asdict()


def _differentiate(
    moved, scale, eps, steps: int, settles: Callable, terms=0.0
) -> Estimate:
    """d/dt moved(t)[0] at t = 0, numdifftools' way (generic over float and mpmath.mpf).

    Central differences D(h) at steps h = scale / 2**FIRST_STEP, half that,
    and so on; each is extrapolated (Richardson) with the two before it to
    remove the h**2 and h**4 terms of its error. Extrapolation is only sound
    where those terms dominate: there D(2h) - D(h) is about 4 times D(h) -
    D(h/2) (16 where the h**2 term vanishes; 2 to 32 is accepted), unless both
    are within rounding; other steps (a function that oscillates faster than
    the step, rounding noise, a float64 plateau) give no estimate. The
    bound of the extrapolation at h is SAFETY times the largest of its last
    correction and its distance to the extrapolations at 2h and h/2, plus the
    function's rounding over h (ROUNDING * eps times the larger of its value
    and `terms`, the size of the terms it is computed from). The estimate with
    the smallest bound wins;
    the search stops early once `settles(estimate)`. When no extrapolation is
    sound and the smallest steps, from some step h0 down, move the function by
    no more than its rounding (it is flat near the point, whatever larger
    steps reach past a kink), the estimate is 0 within that rounding over h0.
    Steps that leave the domain before the first one inside it are skipped;
    one leaving it after ends the search.
    """
    differences: list = []  # D(h) for each step
    previous: list = []  # the last row of the Richardson table
    table: list[tuple] = []  # (extrapolated value, last correction, rounding, sound)
    best = None
    failure = None
    # the trailing run of steps that move the function by no more than its
    # rounding: the largest rounding in it, and its first (largest) step
    flat, flat_step = 0.0, None
    for k in range(steps):
        h = scale / 2 ** (k + FIRST_STEP)
        try:
            (up, h_up), (down, h_down) = moved(h), moved(-h)
        except OutOfDomain as err:
            if previous:
                break
            failure = err
            continue
        row = [(up - down) / (h_up - h_down)]
        differences.append(row[0])
        rounding = ROUNDING * eps * max(abs(up), abs(down), terms)
        if abs(up - down) > rounding:
            flat, flat_step = 0.0, None
        elif flat_step is None:
            flat, flat_step = rounding, h
        else:
            flat = max(flat, rounding)
        for level in range(1, min(len(previous), _RICHARDSON_TERMS) + 1):
            row.append(row[-1] + (row[-1] - previous[level - 1]) / (4**level - 1))
        previous = row
        if len(row) <= _RICHARDSON_TERMS:
            continue
        rounding /= h
        wide, narrow = (differences[-3] - differences[-2], differences[-2] - row[0])
        moving = all(differences[-3:])  # a float64 plateau (D = 0) tells nothing
        sound = moving and (
            max(abs(wide), abs(narrow)) <= rounding
            or (narrow != 0 and 2 <= wide / narrow <= 32)
        )
        table.append((row[-1], abs(row[-1] - row[-2]), rounding, sound))
        if len(table) >= 3 and all(entry[3] for entry in table[-3:]):
            (before, *_), (value, correction, noise, _), (after, *_) = table[-3:]
            spread = max(correction, abs(value - before), abs(value - after))
            candidate = Estimate(value, SAFETY * spread + noise)
            if best is None or candidate.bound < best.bound:
                best = candidate
                if settles(best):
                    return best
    if best is not None:
        return best
    if flat_step is not None:  # flat within rounding from flat_step down (larger
        # steps may reach past a kink): 0 within that rounding over flat_step
        return Estimate(0.0, flat / flat_step)
    if previous:
        return Estimate(previous[-1])
    raise failure


@functools.lru_cache(maxsize=8)
def _high_precision(spec: Spec, output: str | None = None) -> Callable[..., object]:
    """The spec's `output` (default: its first) as an mpmath function of its
    inputs (by name), at mpmath's current precision.

    One assignment per step, in order (a deep chain is never expanded into one
    tree); every name is a Dummy, so no user's name meets one of mpmath's.
    Functions SymPy does not define (sigmoid, softplus, relu) are evaluated by
    their own SymPy evalf.
    """
    names = {i.symbol: _dummy(i.symbol) for i in spec.inputs}
    assignments = []
    for step in spec.steps:
        symbol = make_symbol(step.name)
        assignments.append((_dummy(symbol), step.expr.xreplace(names)))
        names[symbol] = assignments[-1][0]
        if step.name == (output or spec.output):
            break
    namespace = {
        f.func.__name__: functools.partial(_by_evalf, f.func)
        for _, expr in assignments
        for f in expr.atoms(sp.Function)
        if not f.func.__module__.startswith("sympy.")
    }
    # one function per step, evaluated in order (lambdify's own cse hook differs
    # between SymPy releases)
    steps = []
    for target, expr in assignments:
        arguments = sorted(expr.free_symbols, key=sp.default_sort_key)
        function = sp.lambdify(arguments, expr, modules=[namespace, "mpmath"])
        steps.append((target, arguments, function))

    def by_name(**values):
        known = {names[i.symbol]: values[i.name] for i in spec.inputs}
        for target, arguments, function in steps:
            known[target] = function(*(known[a] for a in arguments))
        return known[steps[-1][0]]

    return by_name


def _dummy(symbol: sp.Symbol) -> sp.Dummy:
    return sp.Dummy(symbol.name, **symbol.assumptions0)


def _by_evalf(function, *args):
    if any(isinstance(a, mpmath.mpc) for a in args):  # sqrt(-1) is mpmath's 1j
        raise ValueError(f"{function.__name__} of a complex number")
    digits = mpmath.mp.dps  # mpmath.diff raises it for its differences
    return mpmath.mpf(function(*(sp.Float(a, digits) for a in args)).evalf(digits))


def sample_point(
    module: types.ModuleType,
    rng: np.random.Generator,
    fixed: dict[str, object] | None = None,
    tries: int = 500,
) -> dict[str, object]:
    """A random point inside the domain and away from kinks; `fixed` values are kept."""
    module = _NumpyResults(module)
    fixed = dict(fixed or {})
    compiled = getattr(module, "__symgrad__", None)
    positive = (
        {i.name for i in compiled.spec.inputs if i.positive} if compiled else set()
    )
    shapes, counts = _concrete_shapes(compiled, fixed) if compiled else ({}, {})
    for _ in range(tries):
        point = {
            n: fixed[n]
            if n in fixed
            else rng.integers(0, counts[n], size=shapes.get(n, ()))
            if n in counts  # indices, as labels: integers below their count
            else _draw(rng, n in positive, shapes.get(n, ()))
            for n in parameters(module)
        }
        args = {n: as_value(v) for n, v in point.items()}
        try:
            _evaluate(module, args)
            for name in parameters(module):
                if name not in fixed and name not in counts:
                    for sign in (1, -1):
                        _forward_value(
                            module, {**args, name: args[name] * (1 + sign * 1e-4)}
                        )
        except OutOfDomain:
            continue
        if not _kinks(module, args, KINK_MARGIN):
            return point
    if fixed and len(fixed) == len(parameters(module)):
        _evaluate(module, {n: as_value(v) for n, v in fixed.items()})  # says why
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


def _concrete_shapes(
    compiled, fixed: dict[str, object]
) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Sizes for the declared shapes: named dimensions from fixed values, else small
    sizes that differ from each other (so a transposed gradient cannot pass); and
    how many values each integer input may take."""
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
    counts = {
        i.name: sizes.setdefault(i.integers, 2 + len(sizes))
        if isinstance(i.integers, str)
        else i.integers
        for i in compiled.spec.inputs
        if i.integers is not None
    }
    return shapes, counts


def as_value(v: object) -> object:
    """A point's value as the generated code takes it: a number, or a float array
    (an integer array stays one: indices)."""
    if np.ndim(v) == 0:
        return v
    array = np.asarray(v)
    return array if array.dtype.kind in "iu" else array.astype(float)


def _evaluate(module: types.ModuleType, args: dict[str, object]):
    """The value and gradients; OutOfDomain unless they, and every intermediate on a
    branch the point takes, are finite (a where's other branch may overflow)."""
    try:
        with np.errstate(all="ignore"):
            value, gradients = module.value_and_grad(**args)
            _, tape = module.forward(**args)
    except _DOMAIN_ERRORS as err:
        raise OutOfDomain(f"{_reason(err)} there ({err})") from None
    compiled = getattr(module, "__symgrad__", None)
    guards = program_guards(compiled.backward) if compiled is not None else {}
    for name, v in zip(type(tape)._fields, tape, strict=True):
        if not guards.get(name) and not _real_and_finite(v):
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


def _forward_value(
    module: types.ModuleType,
    args: dict[str, object],
    name: str | None = None,
    weights=1.0,
) -> float:
    """Σ weights·output (the output, or the one `name`d: from the tape)."""
    try:
        with np.errstate(all="ignore"):  # a non-finite output is out of the domain
            output, tape = module.forward(**args)
            output = output if name is None else getattr(tape, name)
    except _DOMAIN_ERRORS as err:
        raise OutOfDomain(f"{_reason(err)} near there ({err})") from None
    if not _real_and_finite(output):
        raise OutOfDomain(f"the function is {_fmt(output)} near there")
    value = float(np.sum(output * weights))
    if not math.isfinite(value):
        raise OutOfDomain("the function is not finite near there")
    return value


def locals_on_return(function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The local variables of a generated function when it returns (every value
    of its lines, temporaries included, where the tape keeps only what
    `backward` reads)."""
    captured: dict[str, Any] = {}
    code = getattr(function, "__code__", None)

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        function(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return captured


def _kinks(
    module: types.ModuleType, args: dict[str, object], margin: float = 0.0
) -> list[str]:
    """Where the point sits within `margin` of a kink (only for modules symgrad compiled)."""
    compiled = getattr(module, "__symgrad__", None)
    if compiled is None:
        return []
    generated = getattr(module, "_module", module)  # its own forward: its locals
    with np.errstate(all="ignore"):  # a where's branch not taken may overflow
        values = locals_on_return(generated.forward, **args)
        # a compiled forward (jax.jit) runs no Python lines: its tape, as NumPy
        values = {**module.forward(**args)[1]._asdict(), **values}

    def get(arg):
        return _numpy(values[arg]) if isinstance(arg, str) else arg

    found = []
    for a in compiled.backward.forward:
        kink = OPS[a.op].kink
        if kink is None or not all(x in values for x in a.args if isinstance(x, str)):
            continue
        operands = (np.asarray(get(arg), dtype=float) for arg in a.args)
        distance = kink(*operands, *a.params)
        if np.any(distance <= margin):
            found.append(
                f"{a.name} = {a.op}({', '.join(map(str, a.args))}) is at its kink, where "
                f"symgrad gives PyTorch's subgradient and finite differences cannot check it"
            )
    return found


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    array = np.asarray(v)
    if array.size > FULL_JACOBIAN:
        return f"<array of shape {array.shape}>"
    return str(array.tolist())


# --------------------------------------------------------------------------- the labs' way

METHODS = ("forward", "central", "backward")
"""The difference quotients a lab writes (seed 003's `derivative(f, a, method, h)`)."""
SWEEP_STEPS = tuple(10.0**-k for k in range(1, 13))
"""The steps `step_sweep` tries: 1e-1 down to 1e-12."""


@dataclass(frozen=True)
class Difference:
    """One difference quotient as a lab computes it, by hand, at one step.

    forward: k = (J(w + eps) - J(w)) / eps; backward: (J(w) - J(w - eps)) / eps;
    central: (J(w + eps) - J(w - eps)) / (2 eps). `gradient` is symgrad's.
    """

    name: str
    index: tuple
    method: str
    step: float
    w: float
    value: float
    plus: float | None
    minus: float | None
    estimate: float
    gradient: float

    @property
    def label(self) -> str:
        """`w`, or `W[0, 1]` for an entry of an array."""
        return self.name + (
            f"[{', '.join(map(str, self.index))}]" if self.index else ""
        )


def finite_difference(
    module: types.ModuleType,
    point: dict[str, object],
    name: str,
    index: tuple = (),
    method: str = "forward",
    step: float = 1e-3,
) -> Difference:
    """The lab's difference quotient of the (summed) output along input `name`
    (entry `index` of an array) at `point`, and symgrad's gradient there.

    w + eps is computed in float64 as a notebook does (3 + 0.001), so the
    numbers are the notebook's: J = 9, J(w + eps) = 9.006001, k = 6.001 for
    J = w**2 at w = 3 (seeds 001 and 002).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"the step must be a positive number, not {step!r}")
    args = {n: as_value(point[n]) for n in parameters(module)}
    w = float(np.asarray(args[name], dtype=float)[index])
    value = _forward_value(module, args)
    plus = minus = None
    if method in ("forward", "central"):
        plus = _forward_value(module, _moved_entry(args, name, index, w + step))
    if method in ("backward", "central"):
        minus = _forward_value(module, _moved_entry(args, name, index, w - step))
    if method == "forward":
        estimate = (plus - value) / step
    elif method == "backward":
        estimate = (value - minus) / step
    else:
        estimate = (plus - minus) / (2 * step)
    gradient = _entry(
        np.asarray(_gradients(module, args)[name], dtype=float), index, None
    )
    return Difference(
        name, index, method, step, w, value, plus, minus, estimate, gradient
    )


def step_sweep(
    module: types.ModuleType,
    point: dict[str, object],
    name: str,
    index: tuple = (),
    steps: tuple[float, ...] = SWEEP_STEPS,
) -> list[tuple[float, Difference, Difference]]:
    """(step, forward difference, central difference) for each step: the error
    |estimate - gradient| falls as the step (forward) or its square (central),
    until float64 rounding, which grows as 1/step, takes over."""
    return [
        (
            h,
            finite_difference(module, point, name, index, "forward", h),
            finite_difference(module, point, name, index, "central", h),
        )
        for h in steps
    ]


def _moved_entry(args: dict, name: str, index: tuple, value: float) -> dict:
    """`args` with entry `index` of input `name` set to `value` (a copy)."""
    if not index:
        return {**args, name: value}
    moved = np.array(args[name], dtype=float)
    moved[index] = value
    return {**args, name: moved}
