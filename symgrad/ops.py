"""The op registry: every fact about every operation symgrad knows, in one place.

One `Op` per operation of the IR (`exp`, `add`, `matmul`, ...) says:

* how the spec language spells it and builds it (`spellings`, `counts`,
  `build`) and which SymPy classes lower to it (`sympy`);
* what it means (`meaning`, a SymPy expression of its operands; `mpmath`, a
  high-precision value for constant checks);
* its derivatives: the local partials ∂out/∂operand come from `sympy.diff`
  of the meaning unless `partials` gives them by hand; tensor operations give
  a vector-Jacobian product (`vjp`) and a Jacobian-vector product (`jvp`);
* its shape rule, its domain (where checks sample it), its kinks (where the
  derivative is a subgradient), how it is displayed (`text`, `latex`);
* how each code-generation target prints it (`code`: target -> `Code`).

A new elementwise function is one `Op(...)` entry below; the rest of symgrad
reads this table and never compares an operation's name with a string.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.symbol import Str

import symgrad.shapes as S

Format = str | Callable[..., str]


# --------------------------------------------------------------------------- printing


@dataclass(frozen=True)
class Code:
    """How one target prints an operation.

    `fmt` is a format string over the printed operands (`"np.exp({0})"`) or a
    callable of the operands and the op's static parameters. `prec` is the
    precedence of the printed expression and `needs` the least precedence each
    operand needs to go without parentheses (Python's grammar; a call is an
    atom, 100, whose operands need nothing). `imports` and `helper` are what
    the printed line needs in the module: modules to import, and the source
    of a helper function (by its name) the target defines once. `ufunc` names
    the NumPy ufunc the printed expression calls, which a value_and_grad may
    print as `np.subtract(a, b, out=a)` where `a` is not needed again.
    """

    fmt: Format
    prec: int = 100
    needs: tuple[int, ...] | None = None
    imports: tuple[str, ...] = ()
    helper: tuple[str, str] | None = None  # (name, source)
    repeats: bool = False  # names an operand twice: never inline an expression into it
    # the NumPy ufunc it is (`np.add` for a + b): it can write into an operand (out=)
    ufunc: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fmt, str) and any(
            self.fmt.count(f"{{{i}}}") > 1 for i in range(3)
        ):
            object.__setattr__(self, "repeats", True)

    def print(self, args: list[str], params: tuple = ()) -> str:
        fmt = self.fmt
        return fmt(*args, *params) if callable(fmt) else fmt.format(*args)

    def operand_needs(self, arity: int) -> tuple[int, ...]:
        return self.needs if self.needs is not None else (0,) * arity


def infix(
    symbol: str, prec: int, needs: tuple[int, ...], ufunc: str | None = None
) -> Code:
    return Code(f"{{0}} {symbol} {{1}}", prec, needs, ufunc=ufunc)


def np_call(function: str) -> Code:
    """`np.function(operands)` (a ufunc's `ufunc` set)."""
    found = functools.reduce(getattr, function.split("."), np)  # linalg.det too
    ufunc = f"np.{function}" if isinstance(found, np.ufunc) else None
    return Code(_call_format(f"np.{function}"), ufunc=ufunc)


def math_call(function: str) -> Code:
    """`math.function(operands)` (the math module imported)."""
    return Code(_call_format(f"math.{function}"), imports=("math",))


def _call_format(function: str) -> Callable[..., str]:
    return lambda *args: f"{function}({', '.join(args)})"


def helper(name: str, source: str, fmt: Format | None = None, **code: Any) -> Code:
    """A call of a helper function the generated module defines (`source`);
    `fmt` and `code` (precedence, imports, ...) when the line is more than the call."""
    return Code(fmt or _call_format(name), helper=(name, source.strip()), **code)


def vectorized_math(function: str) -> Code:
    """NumPy lacks it: the math module's, applied elementwise (`_erf = ...`)."""
    return helper(f"_{function}", _vectorized(function), imports=("math",))


def _vectorized(function: str) -> str:
    return (
        f"# NumPy has no {function}; the math module's, applied elementwise.\n"
        f"_{function} = np.vectorize(math.{function}, otypes=[float])"
    )


# --------------------------------------------------------------------------- SymPy meaning


class Defined(sp.Function):
    """An elementwise function of symgrad's own, defined by its written-out form.

    SymPy keeps it as one function (the generated code prints it as one
    line); `_definition` is the form in elementary functions (numbers fold
    through it, the tests differentiate it as an independent reference), and
    `derivative`, when given, is ∂/∂(argument i) in terms of the function
    itself (sigmoid' = sigmoid·(1 - sigmoid)).
    """

    sign_rule: str | None = None  # "positive" or "nonnegative" for a real argument

    @classmethod
    def eval(cls, *args):
        if all(a.is_Number for a in args):
            return cls._definition(*args)
        return None

    def _eval_evalf(self, prec):
        return self._definition(*self.args)._eval_evalf(prec)

    def _eval_rewrite_as_exp(self, *args, **kwargs):
        return self._definition(*args)

    def fdiff(self, argindex=1):
        rule = type(self).derivative
        if rule is not None:
            return rule(self, *self.args)[argindex - 1]
        placeholders = [sp.Dummy(real=True) for _ in self.args]
        value = sp.diff(self._definition(*placeholders), placeholders[argindex - 1])
        return value.xreplace(dict(zip(placeholders, self.args, strict=True)))

    def _eval_is_real(self):
        return all(a.is_real for a in self.args) or None

    def _eval_is_positive(self):
        if self.sign_rule == "positive" and all(a.is_extended_real for a in self.args):
            return True
        return None

    def _eval_is_nonnegative(self):
        if self.sign_rule and all(a.is_extended_real for a in self.args):
            return True
        return None


def defined(
    name: str,
    definition: Callable[..., sp.Expr],
    derivative: Callable[..., tuple[sp.Expr, ...]] | None = None,
    *,
    nargs: int = 1,
    sign: str | None = None,
) -> type[Defined]:
    """A `Defined` SymPy function class called `name`."""
    return type(
        name,
        (Defined,),
        {
            "nargs": nargs,
            "_definition": staticmethod(definition),
            "derivative": staticmethod(derivative) if derivative else None,
            "sign_rule": sign,
            "__doc__": f"{name}: {sp.sstr(definition(*sp.symbols('x y z')[:nargs]))}",
        },
    )


sigmoid = defined(
    "sigmoid",
    lambda x: 1 / (1 + sp.exp(-x)),
    lambda s, x: (s * (1 - s),),
    sign="positive",
)
softplus = defined(
    "softplus",
    lambda x: sp.log(1 + sp.exp(x)),
    lambda s, x: (sigmoid(x),),
    sign="positive",
)
relu = defined(
    "relu",
    lambda x: sp.Piecewise((x, x > 0), (0, True)),
    lambda s, x: (sp.Heaviside(x, 0),),  # PyTorch's relu'(0) = 0
    sign="nonnegative",
)


log1p = defined("log1p", lambda x: sp.log(1 + x), lambda s, x: (1 / (1 + x),))
expm1 = defined("expm1", lambda x: sp.exp(x) - 1, lambda s, x: (s + 1,))
log2 = defined("log2", lambda x: sp.log(x) / sp.log(2))
log10 = defined("log10", lambda x: sp.log(x) / sp.log(10))
exp2 = defined("exp2", lambda x: 2**x, lambda s, x: (sp.log(2) * s,), sign="positive")
cbrt = defined(
    "cbrt",
    lambda x: sp.sign(x) * sp.Abs(x) ** sp.Rational(1, 3),
    lambda s, x: (1 / (3 * s**2),),
)
hypot = defined(
    "hypot",
    lambda a, b: sp.sqrt(a**2 + b**2),
    lambda s, a, b: (a / s, b / s),
    nargs=2,
    sign="nonnegative",
)
logaddexp = defined(
    "logaddexp",
    lambda a, b: sp.log(sp.exp(a) + sp.exp(b)),
    lambda s, a, b: (sp.exp(a - s), sp.exp(b - s)),
    nargs=2,
)
logaddexp2 = defined(
    "logaddexp2",
    lambda a, b: sp.log(2**a + 2**b) / sp.log(2),
    lambda s, a, b: (2 ** (a - s), 2 ** (b - s)),
    nargs=2,
)
sinc = defined(
    "sinc",
    lambda x: sp.sinc(sp.pi * x),
    lambda s, x: (sp.Piecewise((0, sp.Eq(x, 0)), ((sp.cos(sp.pi * x) - s) / x, True)),),
)
logit = defined(
    "logit", lambda x: sp.log(x / (1 - x)), lambda s, x: (1 / (x * (1 - x)),)
)
elu = defined(
    "elu",
    lambda x, a: sp.Piecewise((x, x > 0), (a * (sp.exp(x) - 1), True)),
    lambda s, x, a: (
        sp.Piecewise((1, x > 0), (s + a, True)),
        sp.Piecewise((0, x > 0), (sp.exp(x) - 1, True)),
    ),
    nargs=2,
)
# Klambauer et al., "Self-Normalizing Neural Networks" (2017); PyTorch's constants
_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
selu = defined(
    "selu",
    lambda x: (
        sp.Float(_SELU_SCALE, 30)
        * sp.Piecewise((x, x > 0), (sp.Float(_SELU_ALPHA, 30) * (sp.exp(x) - 1), True))
    ),
    # in terms of the output, as elu's: exp(x) of the branch not taken (x > 0)
    # would overflow for a large x
    lambda s, x: (
        sp.Piecewise(
            (sp.Float(_SELU_SCALE, 30), x > 0),
            (s + sp.Float(_SELU_SCALE * _SELU_ALPHA, 30), True),
        ),
    ),
)
leaky_relu = defined(
    "leaky_relu",
    lambda x, a: sp.Piecewise((x, x > 0), (a * x, True)),
    # PyTorch's leaky_relu'(0) = slope
    lambda s, x, a: (
        sp.Piecewise((1, x > 0), (a, True)),
        sp.Piecewise((0, x > 0), (x, True)),
    ),
    nargs=2,
)
_LEAKY_SLOPE = sp.Rational(1, 100)  # PyTorch's default negative slope
gelu = defined("gelu", lambda x: x / 2 * (1 + sp.erf(x / sp.sqrt(2))))
silu = defined(
    "silu",
    lambda x: x / (1 + sp.exp(-x)),
    lambda s, x: (sigmoid(x) * (1 + x * (1 - sigmoid(x))),),
)
softsign = defined(
    "softsign", lambda x: x / (1 + sp.Abs(x)), lambda s, x: (1 / (1 + sp.Abs(x)) ** 2,)
)
relu6 = defined(
    "relu6",
    lambda x: sp.Min(sp.Max(x, 0), 6),
    # PyTorch's hardtanh: 0 at both kinks
    lambda s, x: (sp.Piecewise((1, (x > 0) & (x < 6)), (0, True)),),
    sign="nonnegative",
)
clip = defined(
    "clip",
    lambda x, lo, hi: sp.Min(sp.Max(x, lo), hi),
    # PyTorch's clamp: the gradient flows to x on the closed interval
    lambda s, x, lo, hi: (
        sp.Piecewise((1, (x >= lo) & (x <= hi)), (0, True)),
        sp.Piecewise((1, x < lo), (0, True)),
        sp.Piecewise((1, x > hi), (0, True)),
    ),
    nargs=3,
)
round_half_even = defined(
    "round", lambda x: sp.Integer(round(x)) if x.is_Number else sp.floor(x + sp.S.Half)
)


class TensorOp(sp.Function):
    """A tensor operation: its operands, then a Str holding its static parameters.

    SymPy treats it as an opaque function of its operands (elementwise algebra
    around it stays valid under NumPy broadcasting); the registry's `vjp` and
    `jvp` differentiate it and each target prints it.
    """

    op = ""
    is_commutative = True
    is_real = True

    @property
    def operands(self) -> tuple[sp.Expr, ...]:
        return self.args[:-1]

    @property
    def params(self) -> tuple:
        return ast.literal_eval(self.args[-1].name)

    def _latex(self, printer) -> str:
        args = [printer.parenthesize(a, 60) for a in self.operands]
        return OPS[self.op].latex(*args, *self.params)

    def _sympystr(self, printer) -> str:
        text = OPS[self.op].text
        marks = [f"\0{i}\0" for i in range(len(self.operands))]
        shape = text(*marks, *self.params)  # where each operand lands
        args = [
            printer._print(a)  # an argument of a call: `sum(w**2)`
            if re.search(rf"[(,] ?{mark}[,)]", shape)
            else printer.parenthesize(a, 60)  # beside an operator: `(a + b).T`
            for mark, a in zip(marks, self.operands, strict=True)
        ]
        return text(*args, *self.params)


def tensor(op: str, *operands: sp.Expr, params: tuple = ()) -> TensorOp:
    """The SymPy node of a tensor operation."""
    return _TENSOR_CLASSES[op](*operands, Str(repr(tuple(params))))


def key_text(key: tuple, arrays: tuple = ()) -> str:
    """`[:, 0]` for the key ((None, None, None), 0); "#1" is the first of `arrays`."""
    parts = []
    for k in key:
        if isinstance(k, str):
            parts.append(arrays[int(k[1:]) - 1])
        elif k is None or isinstance(k, int):
            parts.append(str(k))
        else:
            start, stop, step = ("" if v is None else str(v) for v in k)
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    return "[" + ", ".join(parts) + "]"


def axis_text(axis) -> str:
    return "" if axis is None else f", axis={axis}"


def _latex_axis(axis) -> str:
    return "" if axis is None else rf"_{{\text{{axis}} {axis}}}"


# --------------------------------------------------------------------------- the Op


@dataclass(frozen=True)
class Static:
    """A constant argument of a tensor function: its keyword and what it holds.

    `kind` is "int", "axis" (an int, a tuple of ints or None), "bool",
    "subscripts" (einsum's string) or "tensordot" (an int or a pair of tuples).
    """

    name: str
    kind: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Op:
    """Everything symgrad knows about one operation (see the module docstring)."""

    name: str
    arity: int
    kind: str = "function"  # arithmetic, function, condition, select, tensor, adjoint
    meaning: Callable[..., sp.Basic] | None = None
    sympy: tuple[type, ...] = ()
    spellings: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()  # argument counts a spec may call it with
    build: Callable[..., sp.Basic] | None = None  # the spec's call -> SymPy
    lazy: bool = False  # built unevaluated: its eval only rewrites (sin(-x) -> -sin(x))
    chain: bool = False  # an n-ary SymPy node lowers to a chain of binary ops
    variadic: bool = False  # takes `arity` operands or more
    # rank of the operand below which the op is the identity (a sum of a scalar)
    identity_below: int = 0
    commutative: bool = False
    partials: Callable[..., tuple[sp.Expr | None, ...]] | None = None
    vjp: Callable[..., tuple[sp.Expr | None, ...]] | None = None
    jvp: Callable[..., sp.Expr] | None = None
    shape: Callable[..., S.Shape] = lambda shapes, params: S.broadcast(*shapes)
    mpmath: str | Callable | None = None  # a function of an mpmath context, or its name
    domain: tuple[tuple[float, float], ...] = ()
    # numeric operands (then the static parameters) -> distance to a kink
    kink: Callable[..., Any] | None = None
    # constant arguments of a tensor function, by position after the operands or
    # by keyword (a `Static` of kind "subscripts" comes before them, as einsum's)
    static: tuple[Static, ...] = ()
    # the spelling a call with one operand (or an axis) means: max(x) is amax(x)
    reduction: str = ""
    # the op emitted instead, given the operands' shapes (dot(x, s) is x * s)
    specialize: Callable[..., str] | None = None
    text: Callable[..., str] | None = None
    latex: Callable[..., str] | None = None
    code: dict[str, Code] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.counts:
            object.__setattr__(self, "counts", (self.arity,))
        if self.build is None and self.sympy:
            object.__setattr__(self, "build", self.sympy[0])
        if self.build is None and self.kind == "tensor":
            name = self.name
            object.__setattr__(
                self,
                "build",
                lambda *operands, params=(): tensor(name, *operands, params=params),
            )
        if self.meaning is None and self.build is not None and self.kind != "tensor":
            object.__setattr__(self, "meaning", self.build)

    @property
    def differentiable(self) -> bool:
        """Whether a gradient flows through its operands (conditions carry none)."""
        return self.kind != "condition"

    @property
    def structural(self) -> bool:
        """Whether its value is a count or positions (a size, an index range): the
        same for any values of its operands, and an integer."""
        return self.jvp is _constant_jvp

    @property
    def elementwise(self) -> bool:
        """Elementwise arithmetic over numbers (not a tensor operation, condition or choice)."""
        return self.kind in ("arithmetic", "function")

    def mp_value(self, ctx: Any, *args: Any) -> Any:
        """The value in the mpmath context `ctx` (its precision), or None if unknown."""
        if self.mpmath is None:
            return None
        if isinstance(self.mpmath, str):
            return getattr(ctx, self.mpmath)(*args)
        return self.mpmath(ctx, *args)

    def sample_domain(self, i: int) -> tuple[float, float]:
        """The interval the checks sample operand `i` from (inside the domain, away from kinks)."""
        return self.domain[i] if i < len(self.domain) else (-2.0, 2.0)


# --------------------------------------------------------------------------- rules


def _zero(*operands: sp.Expr, out: sp.Symbol) -> tuple[sp.Expr, ...]:
    """Derivative zero almost everywhere (sign, steps, rounding): PyTorch's convention."""
    return (sp.Integer(0),) * len(operands)


def _tie(other: sp.Expr) -> sp.Expr:
    """Heaviside(0) for a tie in max/min: the two operands share the gradient
    (PyTorch's torch.maximum), but a constant keeps all of it (relu'(0) = 0)."""
    return sp.Integer(0) if other.is_number else sp.Rational(1, 2)


def _extremum_partials(sign: int):
    """∂max/∂a_i: 1 for the largest operand; a tie of k operands shares it, 1/k each
    (PyTorch's rule for max and min of a tensor), unless a constant is among them."""

    def partials(*args, out):
        if len(args) == 2:  # one Heaviside per operand: the common case reads short
            a, b = args
            return (
                sp.Heaviside(sign * (a - b), _tie(b)),
                sp.Heaviside(sign * (b - a), _tie(a)),
            )
        # 1 where a_i holds the result: the result is the extreme, so a tie is the
        # only place where sign*(a_i - out) reaches 0
        hits = [sp.Heaviside(sign * (a - out), 1) for a in args]
        shared = sp.Add(
            *(h for h, a in zip(hits, args, strict=True) if not a.is_number)
        )
        # SymPy keeps one constant of a max; tied with the result, it takes the
        # whole gradient (and the denominator never vanishes)
        held = sp.Add(*(h for h, a in zip(hits, args, strict=True) if a.is_number))
        return tuple((1 - held) * h / (shared + held) for h in hits)

    return partials


def _nested(function: str) -> Callable[..., str]:
    """np.maximum(np.maximum(a, b), c): NumPy's binary function over several operands."""

    def fmt(*args):
        text = args[0]
        for arg in args[1:]:
            text = f"{function}({text}, {arg})"
        return text

    return fmt


def _closest_pair(*args):
    """The distance between the two closest operands (a tie is a kink of max and min)."""
    return np.min(
        [np.abs(a - b) for i, a in enumerate(args) for b in args[i + 1 :]], axis=0
    )


def _runner_up_gap(sign: int):
    """The kink of max(x, axis) (sign 1) or min (-1): how far the extremum of each
    slice is from the next value. An exact tie is no kink for the checks (central
    differences see the shared gradient there), only a near one is."""

    def kink(x, axis=None, keepdims=False):
        axes = range(np.ndim(x)) if axis is None else np.atleast_1d(axis)
        kept = [i for i in range(np.ndim(x)) if i not in np.mod(axes, np.ndim(x))]
        x = np.moveaxis(sign * x, list(kept), list(range(len(kept))))
        x = np.reshape(x, np.shape(x)[: len(kept)] + (-1,))
        if np.shape(x)[-1] < 2:
            return np.inf
        top = np.sort(x, axis=-1)
        gap = top[..., -1] - top[..., -2]
        return np.where(gap == 0, np.inf, gap)

    return kink


def _power_partials(a, b, *, out):
    """∂(a**b): b * a**(b - 1) is finite at a = 0, where out * b / a is not; and
    0**b is 0 for every positive b, so nothing flows to b through a zero base."""
    return (b * a ** (b - 1), sp.Integer(0) if a == 0 else out * sp.log(a))


def _mm(a, b):
    return tensor("matmul", a, b)


def _t(a):
    return tensor("transpose", a)


def _mt(a, rank: int):
    """The matrix transpose: a.T for a matrix, the last two axes swapped for a stack."""
    return _t(a) if rank == 2 else tensor("swapaxes", a, params=(-1, -2))


def _matmul_vjp(g, a, b, *, out, shapes, params):
    """C = A @ B: dA = dC @ B.T, dB = A.T @ dC, each summed over the batch
    dimensions its operand was broadcast along; vectors as einsums."""
    ranks = (len(shapes[0]), len(shapes[1]))
    if ranks == (2, 2):
        return _mm(g, _t(b)), _mm(_t(a), g)
    if ranks == (2, 1):
        return tensor("outer", g, b), _mm(_t(a), g)
    if ranks == (1, 2):
        return _mm(b, g), tensor("outer", a, g)
    if ranks == (1, 1):
        return g * b, g * a
    if min(ranks) >= 2:
        batch = S.matmul(*shapes)[:-2]
        return (
            sum_to(_mm(g, _mt(b, ranks[1])), batch + shapes[0][-2:], shapes[0]),
            sum_to(_mm(_mt(a, ranks[0]), g), batch + shapes[1][-2:], shapes[1]),
        )
    return einsum_vjp(_matmul_subscripts(*shapes), g, (a, b))


def _matmul_subscripts(a: S.Shape, b: S.Shape) -> str:
    """Explicit einsum subscripts that compute a @ b for these shapes (a stack
    times a vector): the batch axes get letters of their own, and a batch
    dimension of 1 broadcast against a larger one a letter that is summed away."""
    core = ("i" if len(a) >= 2 else "") + ("j" if len(b) >= 2 else "")
    out = S.matmul(a, b)
    batch = out[: len(out) - len(core)]
    letters = iter("abcdefghlmnopqrstuvwxyz")
    shared = [next(letters) for _ in batch]

    def term(shape, core):
        own = shape[: -len(core)] if core else shape
        start = len(batch) - len(own)
        return (
            "".join(
                next(letters) if d == 1 and batch[start + i] != 1 else shared[start + i]
                for i, d in enumerate(own)
            )
            + core
        )

    ta = term(a, "ik" if len(a) >= 2 else "k")
    tb = term(b, "kj" if len(b) >= 2 else "k")
    return f"{ta},{tb}->{''.join(shared)}{core}"


def _matmul_specialize(shapes, params):
    """`dot` is NumPy's: a scalar operand multiplies; vectors and matrices are @."""
    if params and () in shapes:
        return "mul", ()
    if params and max(map(len, shapes)) > 2:
        raise S.ShapeError(
            f"dot of {' and '.join(map(S.show, shapes))}: NumPy's dot of arrays of "
            f"rank 3 or more is not @; write @, einsum or tensordot"
        )
    return "matmul", ()


def sum_to(term, shape: S.Shape, target: S.Shape):
    """`term`, of the broadcast `shape`, summed back to `target` (the adjoint of
    NumPy's broadcasting): the leading axes it gained, then (kept) the size-1
    axes it was stretched along."""
    if shape == target:
        return term
    lead = len(shape) - len(target)
    if lead > 0:
        axis = None if not target else _one(tuple(range(lead)))
        term = tensor("sum", term, params=(axis, False))
    kept = tuple(i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1)
    if kept:
        term = tensor("sum", term, params=(_one(kept), True))
    return term


def _one(axes: tuple[int, ...]) -> int | tuple[int, ...]:
    return axes[0] if len(axes) == 1 else axes


# ---- gather: indexing with integer arrays


def _take_shape(shapes, params):
    return S.take(shapes[0], params[0], list(shapes[1:]))


def _take_vjp(g, a, *indices, out, shapes, params):
    """The adjoint of a[key] with integer arrays: g added back at key (a repeated
    index accumulates); the indices get none."""
    return (tensor("scatter_add", g, a, *indices, params=params),) + (None,) * len(
        indices
    )


def _take_text(a, *rest):
    *arrays, key = rest
    return f"{a}{key_text(key, tuple(arrays))}"


def _arange_shape(shapes, params):
    axis, size = params
    return (size,) if axis is None else (shapes[0][axis],)


def _arange_code(holder, axis, size):
    return (
        f"np.arange({size})"
        if axis is None
        else f"np.arange(np.shape({holder})[{axis}])"
    )


_SCATTER_ADD = """
def _scatter_add(g, like, key):
    \"\"\"The adjoint of like[key] for integer-array indices: zeros of like's shape
    with g added at key (np.add.at: a repeated index accumulates).\"\"\"
    out = np.zeros(np.shape(like))
    np.add.at(out, key, g)
    return out
"""


# ---- shape operations


def _reshape_like(g, a):
    return tensor("reshape_like", g, a)


def _expand_dims_shape(shapes, params):
    (a,) = shapes
    axes = params[0] if isinstance(params[0], tuple) else (params[0],)
    result: list = [None] * (len(a) + len(axes))
    for axis in S.axes(tuple(result), axes):
        result[axis] = 1
    rest = iter(a)
    return tuple(1 if d == 1 else next(rest) for d in result)


def _squeeze_shape(shapes, params):
    (a,) = shapes
    if params[0] is None:
        return tuple(d for d in a if d != 1)
    gone = S.axes(a, params[0])
    for axis in gone:
        if a[axis] != 1:
            raise S.ShapeError(
                f"squeeze: axis {axis} of a value of shape {S.show(a)} is not of size 1"
            )
    return tuple(d for i, d in enumerate(a) if i not in gone)


def _joined(what: str, shapes, axis: int, stack: bool):
    """The common rank, and the axis made nonnegative, of concatenate's or stack's operands."""
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise S.ShapeError(
            f"{what} needs operands of one rank, not {', '.join(map(S.show, shapes))}"
        )
    rank = ranks.pop()
    return S.axes((None,) * (rank + stack), axis)[0]


def _concatenate_shape(shapes, params):
    axis = _joined("concatenate", shapes, params[0], False)
    rest = {s[:axis] + s[axis + 1 :] for s in shapes}
    sizes = [s[axis] for s in shapes]
    if len(rest) != 1 or not all(isinstance(d, int) for d in sizes):
        raise S.ShapeError(
            f"concatenate along axis {params[0]}: shapes "
            f"{', '.join(map(S.show, shapes))} must agree elsewhere, and their sizes "
            f"along the axis be numbers"
        )
    first = shapes[0]
    return first[:axis] + (sum(sizes),) + first[axis + 1 :]


def _concatenate_vjp(g, *operands, out, shapes, params):
    """Each operand's adjoint is its slice of g along the axis."""
    axis = _joined("concatenate", shapes, params[0], False)
    result, start = [], 0
    for shape in shapes:
        key = ((None, None, None),) * axis + ((start, start + shape[axis], None),)
        result.append(tensor("index", g, params=(key,)))
        start += shape[axis]
    return tuple(result)


def _stack_shape(shapes, params):
    axis = _joined("stack", shapes, params[0], True)
    if len(set(shapes)) != 1:
        raise S.ShapeError(
            f"stack needs operands of one shape, not {', '.join(map(S.show, shapes))}"
        )
    return shapes[0][:axis] + (len(shapes),) + shapes[0][axis:]


def _stack_vjp(g, *operands, out, shapes, params):
    """Each operand's adjoint is g at its position along the new axis."""
    axis = _joined("stack", shapes, params[0], True)
    full = ((None, None, None),) * axis
    return tuple(tensor("index", g, params=(full + (k,),)) for k in range(len(shapes)))


def _roll_vjp(g, a, *, out, shapes, params):
    shift, axis = params
    back = tuple(-s for s in shift) if isinstance(shift, tuple) else -shift
    return (tensor("roll", g, params=(back, axis)),)


def _roll_shape(shapes, params):
    shift, axis = params
    if isinstance(shift, tuple) != isinstance(axis, tuple) or (
        isinstance(shift, tuple) and len(shift) != len(axis)
    ):
        raise S.ShapeError(f"roll: shift {shift} and axis {axis} do not pair up")
    if axis is not None:
        S.axes(shapes[0], axis)
    return shapes[0]


def _joint_jvp(op: str):
    """Linear in all operands at once: the op of the tangents (zeros for a constant)."""

    def jvp(tangents, *operands, out, params):
        if all(t == 0 for t in tangents):
            return sp.Integer(0)
        zeros = [
            tensor("broadcast", 0, a, params=(None,)) if t == 0 else t
            for t, a in zip(tangents, operands, strict=True)
        ]
        return tensor(op, *zeros, params=params)

    return jvp


def _repeat_shape(shapes, params):
    (a,) = shapes
    repeats, axis = params
    if axis is None and len(a) != 1:
        raise S.ShapeError(
            f"repeat of a value of shape {S.show(a)} needs an axis "
            f"(NumPy's default flattens it)"
        )
    (axis,) = S.axes(a, 0 if axis is None else axis)
    if not isinstance(a[axis], int) and repeats != 1:
        raise S.ShapeError(f"repeat along the named dimension {a[axis]!r}")
    return a[:axis] + (a[axis] * repeats,) + a[axis + 1 :]


def _repeat_vjp(g, a, *, out, shapes, params):
    repeats, axis = params
    (axis,) = S.axes(shapes[0], 0 if axis is None else axis)
    return (tensor("unrepeat", g, a, params=(repeats, axis)),)


def _tile_shape(shapes, params):
    (a,) = shapes
    reps = params[0] if isinstance(params[0], tuple) else (params[0],)
    full = (1,) * (len(reps) - len(a)) + a
    reps = (1,) * (len(full) - len(reps)) + reps
    if any(r != 1 and not isinstance(d, int) for d, r in zip(full, reps, strict=True)):
        raise S.ShapeError(
            f"tile of {S.show(a)} by {params[0]}: a named dimension repeats"
        )
    return tuple(d if r == 1 else d * r for d, r in zip(full, reps, strict=True))


_UNREPEAT = """
def _unrepeat(g, like, repeats, axis):
    \"\"\"The adjoint of np.repeat(like, repeats, axis): each element's copies summed.\"\"\"
    shape = np.shape(like)
    g = np.reshape(g, shape[:axis] + (shape[axis], repeats) + shape[axis + 1 :])
    return np.sum(g, axis=axis + 1)
"""
_UNTILE = """
def _untile(g, like, reps):
    \"\"\"The adjoint of np.tile(like, reps): the tiles summed.\"\"\"
    reps = reps if isinstance(reps, tuple) else (reps,)
    shape = np.shape(like)
    full = (1,) * (len(reps) - len(shape)) + shape  # np.tile's leading 1s
    reps = (1,) * (len(full) - len(reps)) + reps
    g = np.reshape(g, [d for pair in zip(reps, full) for d in pair])
    return np.reshape(np.sum(g, axis=tuple(range(0, 2 * len(full), 2))), shape)
"""


def _join_text(name: str):
    return lambda *args: f"{name}([{', '.join(args[:-1])}]{axis_text(args[-1])})"


def _join_code(name: str) -> Code:
    return Code(lambda *args: f"np.{name}([{', '.join(args[:-1])}], axis={args[-1]})")


# ---- linear algebra: the adjoints in Giles's matrix forms (M. B. Giles, "An
# extended collection of matrix derivative results for forward and reverse mode
# algorithmic differentiation", 2008, section 2.2), batched over leading axes


def _solve(a, b):
    return tensor("solve", a, b)


def _square(what: str):
    def shape(shapes, params):
        _matrix_shape(what, shapes[0], square=True)
        return shapes[0]

    return shape


def _det_shape(shapes, params):
    _matrix_shape("det", shapes[0], square=True)
    return shapes[0][:-2]


def _solve_shape(shapes, params):
    a, b = shapes
    _matrix_shape("solve", a, square=True)
    if len(b) == 1:  # NumPy 2: a vector only when b is 1-D
        if len(a) != 2 or b[0] != a[-1]:
            raise S.ShapeError(
                f"solve of {S.show(a)} and the vector {S.show(b)}: a vector needs one "
                f"square matrix of its size"
            )
        return b
    if b[-2] != a[-1]:
        raise S.ShapeError(
            f"solve of {S.show(a)} and {S.show(b)}: sizes {a[-1]} and {b[-2]} differ"
        )
    try:
        batch = S.plain_broadcast(a[:-2], b[:-2])
    except S.ShapeError:
        raise S.ShapeError(
            f"solve of {S.show(a)} and {S.show(b)}: the batch dimensions do not broadcast"
        ) from None
    return batch + b[-2:]


def _solve_specialize(shapes, params):
    """NumPy 2 reads b as a vector only when it is 1-D; NumPy 1 also where b has one
    axis fewer than A. There b gets a leading axis, `(1,)` (a stack of matrices on
    every NumPy; the shape is the same)."""
    a, b = shapes
    return "solve", ((1,) if len(b) >= 2 and len(b) == len(a) - 1 else ())


def _solve_code(a, b, lead=0):
    b = f"np.expand_dims({b}, 0)" if lead else b
    return f"np.linalg.solve({a}, {b})"


def _solve_vjp(g, a, b, *, out, shapes, params):
    """X = A⁻¹B: B̄ = A⁻ᵀX̄ (a solve), Ā = -B̄Xᵀ (Giles 2.2.3)."""
    rank = len(shapes[0])
    gb = _solve(_mt(a, rank), g)
    if len(shapes[1]) == 1:
        return -tensor("outer", gb, out), gb
    batch = S.plain_broadcast(shapes[0][:-2], shapes[1][:-2])
    ga = -_mm(gb, _mt(out, len(batch) + 2))
    return (
        sum_to(ga, batch + shapes[0][-2:], shapes[0]),
        sum_to(gb, batch + shapes[1][-2:], shapes[1]),
    )


def _solve_jvp(tangents, a, b, *, out, params):
    """Ẋ = A⁻¹(Ḃ - ȦX)."""
    ta, tb = tangents
    rhs = tb - (tensor("matmul", ta, out) if ta != 0 else 0)
    return _solve(a, rhs) if rhs != 0 else sp.Integer(0)


def _inv_vjp(g, a, *, out, shapes, params):
    """C = A⁻¹: Ā = -Cᵀ C̄ Cᵀ (Giles 2.2.3); C is the forward value, no new inverse."""
    rank = len(shapes[0])
    return (-_mm(_mm(_mt(out, rank), g), _mt(out, rank)),)


def _inv_jvp(tangents, a, *, out, params):
    return -_mm(_mm(out, tangents[0]), out)


def _inverse_transpose(a, rank: int):
    """A⁻ᵀ, the adjoint of log|det A| (Giles 2.2.4): here the inverse is the answer."""
    return _mt(tensor("inv", a), rank)


def _matrix_of(x, rank: int):
    """A value per matrix of a stack, broadcast against the matrices: x[..., None, None]."""
    return x if rank == 2 else tensor("expand_dims", x, params=((-2, -1),))


def _det_vjp(g, a, *, out, shapes, params):
    """C = det A: Ā = C̄ C A⁻ᵀ (Giles 2.2.4)."""
    rank = len(shapes[0])
    return (_matrix_of(g * out, rank) * _inverse_transpose(a, rank),)


def _logabsdet_vjp(g, a, *, out, shapes, params):
    """C = log|det A|: Ā = C̄ A⁻ᵀ."""
    rank = len(shapes[0])
    return (_matrix_of(g, rank) * _inverse_transpose(a, rank),)


def _det_jvp(tangents, a, *, out, params):
    return out * tensor("trace_last", _solve(a, tangents[0]))


def _logabsdet_jvp(tangents, a, *, out, params):
    return tensor("trace_last", _solve(a, tangents[0]))


def _lower_half(x):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    return tensor("tril", x, params=(0,)) - x * tensor("eye", x) / 2


def _cholesky_vjp(g, a, *, out, shapes, params):
    """A = LLᵀ: S = L⁻ᵀ Φ(LᵀL̄) L⁻¹ (Murray, "Differentiation of the Cholesky
    decomposition", 2016, eq. 10), by two solves with Lᵀ. np.linalg.cholesky reads
    only A's lower triangle, so that is where the gradient goes: S + Sᵀ below the
    diagonal, S on it (its symmetric part, ½(S + Sᵀ), for a symmetric direction)."""
    rank = len(shapes[0])
    lt = _mt(out, rank)
    p = _lower_half(_mm(lt, g))
    s = _solve(lt, _mt(_solve(lt, _mt(p, rank)), rank))
    both = s + _mt(s, rank)
    return (tensor("tril", both, params=(0,)) - s * tensor("eye", s),)


def _cholesky_jvp(tangents, a, *, out, params):
    """L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ), Ȧ the symmetric matrix of the lower triangle read."""
    t = tangents[0]
    low = tensor("tril", t, params=(-1,))
    sym = low + tensor("swapaxes", low, params=(-1, -2)) + t * tensor("eye", t)
    y = _solve(out, sym)
    inner = tensor(
        "swapaxes", _solve(out, tensor("swapaxes", y, params=(-1, -2))), params=(-1, -2)
    )
    return _mm(out, _lower_half(inner))


# ---- einsum and the contractions written as one


def parse_subscripts(text: str, count: int) -> str:
    """einsum's subscripts in explicit form (`ij,jk->ik`), or ValueError.

    The implicit form (`ij,jk`) gets NumPy's output: the letters used once, in
    alphabetical order. Not supported (an error): `...`, and an axis repeated
    within one operand (a diagonal; trace and diag take it).
    """
    text = text.replace(" ", "")
    if "." in text:
        raise ValueError(f"einsum {text!r}: '...' is not supported; name every axis")
    inputs, arrow, output = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != count:
        raise ValueError(
            f"einsum {text!r} names {len(terms)} operand(s), but {count} are given"
        )
    letters = "".join(terms)
    if not all(c.isascii() and c.isalpha() for c in letters + output):
        raise ValueError(f"einsum {text!r}: axes are letters a-z, A-Z")
    for t in terms:
        if len(set(t)) != len(t):
            raise ValueError(
                f"einsum {text!r}: an axis repeated within one operand ({t!r}) is "
                f"not supported; use trace or diag"
            )
    if not arrow:
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    elif len(set(output)) != len(output) or set(output) - set(letters):
        raise ValueError(
            f"einsum {text!r}: each output axis must appear once, and in an operand"
        )
    return f"{','.join(terms)}->{output}"


def einsum_vjp(subscripts: str, g, operands) -> tuple:
    """The adjoint of each operand of einsum(subscripts, *operands): an einsum of
    the other operands and g into the operand's axes, spread (broadcast) along
    any axis only that operand has."""
    inputs, output = subscripts.split("->")
    terms = inputs.split(",")
    result = []
    for k, (term, a) in enumerate(zip(terms, operands, strict=True)):
        others = [
            (t, o)
            for i, (t, o) in enumerate(zip(terms, operands, strict=True))
            if i != k
        ]
        if not (output == "" and g == 1):
            others.append((output, g))
        present = set("".join(t for t, _ in others))
        kept = "".join(c for c in term if c in present)
        missing = tuple(i for i, c in enumerate(term) if c not in present)
        if len(others) == 1 and others[0][0] == kept:
            d = others[0][1]  # nothing to contract
        elif not others:
            d = sp.Integer(1)
        else:
            inner = f"{','.join(t for t, _ in others)}->{kept}"
            d = tensor("einsum", *(o for _, o in others), params=(inner,))
        if missing:
            d = tensor("broadcast", d, a, params=(_one(missing),))
        result.append(d)
    return tuple(result)


def _einsum_vjp(g, *operands, out, shapes, params):
    return einsum_vjp(params[0], g, operands)


def _einsum_jvp(tangents, *operands, out, params):
    """Multilinear: the sum over operands of the einsum with that operand's tangent."""
    return sum(
        (
            tensor("einsum", *operands[:k], t, *operands[k + 1 :], params=params)
            for k, t in enumerate(tangents)
            if t != 0
        ),
        sp.Integer(0),
    )


def _einsum_build(*operands, params):
    return tensor(
        "einsum", *operands, params=(parse_subscripts(params[0], len(operands)),)
    )


def _tensordot_subscripts(a: S.Shape, b: S.Shape, axes) -> str:
    """np.tensordot(a, b, axes) as explicit einsum subscripts."""
    if isinstance(axes, int):
        if not 0 <= axes <= min(len(a), len(b)):
            raise S.ShapeError(
                f"tensordot of {S.show(a)} and {S.show(b)}: cannot contract {axes} axes"
            )
        over_a, over_b = tuple(range(len(a) - axes, len(a))), tuple(range(axes))
    else:
        over_a, over_b = (tuple(x) if isinstance(x, tuple) else (x,) for x in axes)
        if len(over_a) != len(over_b):
            raise S.ShapeError(f"tensordot axes {axes}: the two lists differ in length")
        over_a = S.axes(a, over_a) if over_a else ()
        over_b = S.axes(b, over_b) if over_b else ()
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ta = [next(letters) for _ in a]
    tb = [next(letters) for _ in b]
    for i, j in zip(over_a, over_b, strict=True):
        tb[j] = ta[i]
    out = [c for i, c in enumerate(ta) if i not in over_a]
    out += [c for j, c in enumerate(tb) if j not in over_b]
    return f"{''.join(ta)},{''.join(tb)}->{''.join(out)}"


def _tensordot_shape(shapes, params):
    subscripts = _tensordot_subscripts(*shapes, params[0])
    try:
        return S.einsum(subscripts, shapes)
    except S.ShapeError:
        raise S.ShapeError(
            f"tensordot of {' and '.join(map(S.show, shapes))} over axes "
            f"{params[0]}: the contracted dimensions differ"
        ) from None


def _tensordot_vjp(g, a, b, *, out, shapes, params):
    return einsum_vjp(_tensordot_subscripts(*shapes, params[0]), g, (a, b))


def _matrix_shape(what: str, shape: S.Shape, square: bool = False) -> None:
    """ShapeError unless `shape` is a matrix (or a stack of them), square if asked."""
    if len(shape) < 2 or (square and shape[-1] != shape[-2]):
        kind = "a square matrix" if square else "a matrix"
        raise S.ShapeError(f"{what} needs {kind}, not a value of shape {S.show(shape)}")


def _trace_shape(shapes, params):
    (a,) = shapes
    if len(a) != 2:
        raise S.ShapeError(
            f"trace needs a square matrix, not a value of shape {S.show(a)}"
        )
    _matrix_shape("trace", a, square=True)
    return ()


def _diag_shape(shapes, params):
    (a,) = shapes
    if len(a) == 1:
        return (a[0], a[0])
    if len(a) != 2:
        raise S.ShapeError(
            f"diag needs a vector or a square matrix, not a value of shape {S.show(a)}"
        )
    _matrix_shape("diag", a, square=True)
    return a[:1]


def _outer_shape(shapes, params):
    if any(len(s) != 1 for s in shapes):
        raise S.ShapeError(
            f"outer needs two vectors, not {' and '.join(map(S.show, shapes))}"
        )
    return (shapes[0][0], shapes[1][0])


def _swapaxes_shape(shapes, params):
    (a,) = shapes
    i, j = (S.axes(a, axis)[0] for axis in params)
    swapped = list(a)
    swapped[i], swapped[j] = a[j], a[i]
    return tuple(swapped)


def _triangle_shape(shapes, params):
    _matrix_shape("tril and triu", shapes[0])
    return shapes[0]


def _k_text(k) -> str:
    return "" if k == 0 else f", {k}"


def _spread(g, a, axis, keepdims, times=None):
    """The adjoint of a reduction over `axis`: g expanded there, over a's shape
    (`times` that, which has a's shape: a number g needs no spreading then)."""
    if times is not None and (keepdims or sp.sympify(g).is_number):
        return g * times  # a kept axis of size 1 broadcasts in the product
    spread = tensor("broadcast", g, a, params=(None if keepdims else axis,))
    return spread if times is None else spread * times


def _beside(out, a, axis, keepdims):
    """A reduction's output beside its operand in elementwise arithmetic: as it is
    where the axis was kept (it broadcasts), else spread back over a's shape."""
    return out if keepdims else _spread(out, a, axis, keepdims)


def _sum_vjp(g, a, *, out, shapes, params):
    axis, keepdims = params
    return (_spread(g, a, axis, keepdims),)


def _count(a, out):
    """How many elements of a each element of a reduction's output `out` covers."""
    return tensor("size", a) / tensor("size", out)


def _mean_vjp(g, a, *, out, shapes, params):
    axis, keepdims = params
    share = (
        g / tensor("size", a)
        if axis is None
        else g * tensor("size", out) / tensor("size", a)
    )
    return (_spread(share, a, axis, keepdims),)


def _softmax_vjp(g, a, *, out, shapes, params):
    (axis,) = params
    return (out * (g - tensor("sum", g * out, params=(axis, True))),)


def _logsumexp_vjp(g, a, *, out, shapes, params):
    axis, keepdims = params
    return (_spread(g, a, axis, keepdims, sp.exp(a - _beside(out, a, axis, keepdims))),)


def _hits(a, out, axis, keepdims):
    """1 where an element of a holds its slice's max (or min), else 0."""
    return sp.Piecewise((1, sp.Eq(a, _beside(out, a, axis, keepdims))), (0, True))


def _extremum_vjp(g, a, *, out, shapes, params):
    """max/min over an axis: the gradient goes to the element that holds it; k tied
    elements share it, 1/k each (PyTorch's rule for max and min of a tensor)."""
    axis, keepdims = params
    hits = _hits(a, out, axis, keepdims)
    count = tensor("sum", hits, params=(axis, True))
    return (_spread(g, a, axis, keepdims, hits / count),)


def _extremum_jvp(tangents, a, *, out, params):
    axis, keepdims = params
    hits = _hits(a, out, axis, keepdims)
    return tensor("sum", tangents[0] * hits, params=params) / tensor(
        "sum", hits, params=params
    )


def _prod_vjp(g, a, *, out, shapes, params):
    """∂prod/∂a_i is the product of the other elements (exact where some a_j is 0)."""
    axis, keepdims = params
    others = tensor("prod_others", a, params=(axis,))
    return (_spread(g, a, axis, keepdims, others),)


def _prod_jvp(tangents, a, *, out, params):
    others = tensor("prod_others", a, params=(params[0],))
    return tensor("sum", tangents[0] * others, params=params)


def _centered(a, axis):
    return a - tensor("mean", a, params=(axis, True))


def _var_vjp(g, a, *, out, shapes, params):
    """var = sum((a - mean)²) / (N - ddof): ∂/∂a = 2 (a - mean) / (N - ddof)."""
    axis, keepdims, ddof = params
    return (
        _spread(g, a, axis, keepdims, 2 * _centered(a, axis) / (_count(a, out) - ddof)),
    )


def _var_jvp(tangents, a, *, out, params):
    axis, keepdims, ddof = params
    t = tangents[0] * 2 * _centered(a, axis)
    return tensor("sum", t, params=(axis, keepdims)) / (_count(a, out) - ddof)


def _std_vjp(g, a, *, out, shapes, params):
    """std = sqrt(var): ∂/∂a = (a - mean) / ((N - ddof) std)."""
    axis, keepdims, ddof = params
    scale = g / ((_count(a, out) - ddof) * out)
    return (_spread(scale, a, axis, keepdims, _centered(a, axis)),)


def _std_jvp(tangents, a, *, out, params):
    axis, keepdims, ddof = params
    t = tangents[0] * _centered(a, axis)
    return tensor("sum", t, params=(axis, keepdims)) / ((_count(a, out) - ddof) * out)


def _nonzero(x):
    """x + (x == 0): a denominator that is 0 only where its numerator is (the
    norm of zeros), whose quotient is then 0 (a sum: SymPy keeps it whole)."""
    return x + sp.Piecewise((1, sp.Eq(x, 0)), (0, True))


def _norm_vjp(g, a, *, out, shapes, params):
    """‖a‖₂ (Frobenius for a matrix): ∂/∂a = a / ‖a‖, and 0 at 0 (PyTorch's
    subgradient, test_norm_subgradient)."""
    axis, keepdims = params
    return (
        _spread(g, a, axis, keepdims, a / _nonzero(_beside(out, a, axis, keepdims))),
    )


def _norm_jvp(tangents, a, *, out, params):
    return tensor("sum", tangents[0] * a, params=params) / _nonzero(out)


def _cumprod_vjp(g, a, *, out, shapes, params):
    axis = 0 if params[0] is None else params[0]
    return (tensor("cumprod_adjoint", g, a, params=(axis,)),)


def _cumprod_jvp(tangents, a, *, out, params):
    axis = 0 if params[0] is None else params[0]
    return tensor("cumprod_tangent", tangents[0], a, params=(axis,))


_CUMPROD = """
def _cumprod_{kind}(v, x, axis):
    \"\"\"{what}.

    d[..., i, j] = ∂out_j/∂x_i (along axis, moved last) is the product of x_k for
    k <= j other than i, 0 for j < i: exact where an element is 0.
    \"\"\"
    x = np.moveaxis(x, axis, -1)
    n = np.shape(x)[-1]
    before = np.cumprod(np.concatenate([np.ones_like(x[..., :1]), x[..., :-1]], -1), -1)
    later = np.triu(np.ones((n, n), dtype=bool), 1)  # k > i
    between = np.cumprod(np.where(later, x[..., None, :], 1.0), -1)  # i < k <= j
    d = np.where(np.triu(np.ones((n, n), dtype=bool)), before[..., None] * between, 0.0)
    return np.moveaxis(np.sum(d * np.moveaxis(v, axis, -1){spread}, {over}), -1, axis)
"""
_CUMPROD_HELPERS = {
    "adjoint": _CUMPROD.format(
        kind="adjoint",
        what="The adjoint of np.cumprod(x, axis) at v",
        spread="[..., None, :]",
        over=-1,
    ),
    "tangent": _CUMPROD.format(
        kind="tangent",
        what="The tangent of np.cumprod(x, axis) along v",
        spread="[..., :, None]",
        over=-2,
    ),
}


def _cumsum_vjp(g, a, *, out, shapes, params):
    """The adjoint of a running sum is the running sum from the other end."""
    axis = 0 if params[0] is None else params[0]
    flip = {"params": (axis,)}
    return (
        tensor("flip", tensor("cumsum", tensor("flip", g, **flip), **flip), **flip),
    )


def _linear_jvp(op: str):
    """The JVP of an operation linear in its first operand: the op applied to the tangent."""

    def jvp(tangents, *operands, out, params):
        if tangents[0] == 0:  # the other operands only give a shape or a key
            return sp.Integer(0)
        return tensor(op, tangents[0], *operands[1:], params=params)

    return jvp


def _bilinear_jvp(op: str):
    """d(a ∘ b) = da ∘ b + a ∘ db, for a product-like operation."""

    def jvp(tangents, a, b, *, out, params):
        ta, tb = tangents
        return sum(
            (
                tensor(op, *pair, params=params)
                for pair, t in (((ta, b), ta), ((a, tb), tb))
                if t != 0
            ),
            sp.Integer(0),
        )

    return jvp


def _softmax_jvp(tangents, a, *, out, params):
    (axis,) = params
    t = tangents[0]
    return out * (t - tensor("sum", t * out, params=(axis, True)))


def _logsumexp_jvp(tangents, a, *, out, params):
    axis, keepdims = params
    weights = sp.exp(a - _beside(out, a, axis, keepdims))
    return tensor("sum", tangents[0] * weights, params=params)


def _no_vjp(g, *operands, **_):
    """Operations only backward passes use: never differentiated in reverse again."""
    return (None,) * len(operands)


def _second_order_of_prod(tangents, *operands, out, params):
    """prod's and cumprod's adjoints have no tangent rule: hvp is refused."""
    raise S.ShapeError(
        "second derivatives (hvp, hessian) of prod and cumprod are not supported"
    )


def _constant_jvp(tangents, *operands, out, params):
    return sp.Integer(0)


def _reduced_shape(shapes, params):
    axis, keepdims = params[:2]
    return S.reduced(shapes[0], axis, keepdims)


def _cumsum_shape(shapes, params):
    (a,) = shapes
    if params[0] is None and len(a) != 1:
        raise S.ShapeError(
            f"cumsum and cumprod of a value of shape {S.show(a)} need an axis "
            f"(NumPy's default flattens it)"
        )
    if isinstance(params[0], tuple):
        raise S.ShapeError(f"cumsum and cumprod take one axis, not {params[0]}")
    S.axes(a, params[0])
    return a


def _reduction_text(name: str):
    return lambda a, axis, keepdims=False, ddof=0: (
        f"{name}({a}{axis_text(axis)}{_keep_text(keepdims)}"
        + (f", ddof={ddof}" if ddof else "")
        + ")"
    )


def _keep_text(keepdims: bool) -> str:
    return ", keepdims=True" if keepdims else ""


def _reduction_code(function: str) -> Code:
    """`np.sum(a, axis=0, keepdims=True)`, and ddof for var and std."""
    return Code(_reduction_text(function))


# --------------------------------------------------------------------------- printed forms

_SIMPLE = re.compile(r"-?[\w.]+\Z")


def _power(a: str, b: str) -> str:
    # ruff format hugs ** only between simple operands
    return f"{a}**{b}" if _SIMPLE.match(a) and _SIMPLE.match(b) else f"{a} ** {b}"


def _divide(a: str, b: str, numbers: bool = False) -> str:
    """`a / b`; `np.divide(a, b)` where both may be Python numbers (the parameter
    `numbers`, set by the numpy target): their / raises ZeroDivisionError where
    NumPy gives inf or nan and a RuntimeWarning."""
    return f"np.divide({a}, {b})" if numbers else f"{a} / {b}"


def _python_heaviside(x: str, h0: str) -> str:
    if float(h0) == 0:
        return f"1.0 if {x} > 0 else 0.0"
    return f"1.0 if {x} > 0 else {h0} if {x} == 0 else 0.0"


_SIGMOID = """
def _sigmoid(x):
    \"\"\"1 / (1 + exp(-x)), exact in both tails: exp never sees a positive argument
    (float constants: a NumPy call with a Python int costs more on small arrays).\"\"\"
    return np.exp(np.minimum(x, 0.0)) / (1.0 + np.exp(-np.abs(x)))
"""
_SOFTPLUS = """
def _softplus(x):
    \"\"\"log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|)).\"\"\"
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
"""
_SOFTMAX = """
def _softmax(x, axis=-1):
    \"\"\"exp(x) / sum(exp(x)) along axis, shifted by the maximum so it cannot overflow
    (divided in place: e is a new float array).\"\"\"
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e
"""
_LOGSUMEXP = """
def _logsumexp(x, axis=None, keepdims=False):
    \"\"\"log(sum(exp(x))) along axis, shifted by the maximum so it cannot overflow.\"\"\"
    m = np.max(x, axis=axis, keepdims=True)
    result = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return result if keepdims else np.squeeze(result, axis)
"""
_PROD_OTHERS = """
def _prod_others(x, axis=None):
    \"\"\"For each element of x, the product of the others along axis (all: None),
    from running products on both sides: exact where an element is 0.\"\"\"
    if axis is None or not isinstance(axis, int):  # several axes: flattened into one
        kept = [] if axis is None else [a for a in range(np.ndim(x)) if a - np.ndim(x) not in axis and a not in axis]
        gone = [a for a in range(np.ndim(x)) if a not in kept]
        moved = np.transpose(x, kept + gone)
        flat = np.reshape(moved, np.shape(moved)[: len(kept)] + (-1,))
        others = np.reshape(_prod_others(flat, -1), np.shape(moved))
        return np.transpose(others, np.argsort(kept + gone))
    x = np.moveaxis(x, axis, -1)
    ones = np.ones_like(x[..., :1])
    left = np.cumprod(np.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, x[..., :0:-1]], axis=-1), axis=-1)
    return np.moveaxis(left * right[..., ::-1], -1, axis)
"""
_BROADCAST = """
def _broadcast(g, like, axis=None):
    \"\"\"The adjoint of a sum over axis: g spread back over like's shape (a view).

    np.asarray(..., like=like) keeps the array type, so Dask stays lazy.
    \"\"\"
    if axis is not None:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(np.asarray(g, like=like), np.shape(like))
"""
_SCATTER = """
def _scatter(g, like, key):
    \"\"\"The adjoint of like[key]: zeros of like's shape with g at key.\"\"\"
    out = np.zeros_like(like, dtype=float)
    out[key] = g
    return out
"""

_ERF = _vectorized("erf")
_COMPARISON = (10, (11, 11))


def _both(numpy: Code, python: Code | None = None) -> dict[str, Code]:
    return {"numpy": numpy, "python": numpy if python is None else python}


def _function(name: str, sympy_class: Any, *, python: str | None = None, **facts) -> Op:
    """An elementwise function NumPy and the math module both have by the same name.

    `sympy_class` builds it; a class (not a function like sympy.sqrt, which
    builds a power) also lowers to it.
    """
    return Op(
        name,
        facts.pop("arity", 1),
        sympy=(sympy_class,) if isinstance(sympy_class, type) else (),
        build=sympy_class,
        spellings=facts.pop("spellings", (name,)),
        mpmath=facts.pop("mpmath", name),
        code={
            "numpy": np_call(facts.pop("numpy", name)),
            "python": math_call(python or name),
        },
        **facts,
    )


def _times(a: str) -> str:
    """`a * ` as a factor, nothing for 1."""
    return "" if a in ("1", "1.0") else f"{a} * "


def _where(cond, a, b):
    return sp.Piecewise((a, cond), (b, True))


# --------------------------------------------------------------------------- the registry

_REDUCE = (Static("axis", "axis"), Static("keepdims", "bool", default=False))
"""The constant arguments of a reduction: sum(x, axis=(0, 2), keepdims=True)."""

_REGISTRY: tuple[Op, ...] = (
    # ---- arithmetic
    Op("copy", 1, "arithmetic", meaning=lambda a: a, code=_both(Code("{0}"))),
    Op(
        "neg", 1, "arithmetic", meaning=lambda a: -a,
        code=_both(Code("-{0}", 15, (17,), ufunc="np.negative")),
    ),
    Op(
        "add", 2, "arithmetic", meaning=lambda a, b: a + b, commutative=True,
        code=_both(infix("+", 13, (13, 14), "np.add")),
    ),
    Op(
        "sub", 2, "arithmetic", meaning=lambda a, b: a - b,
        code=_both(infix("-", 13, (13, 14), "np.subtract")),
    ),
    Op(
        "mul", 2, "arithmetic", meaning=lambda a, b: a * b, commutative=True,
        code=_both(infix("*", 14, (14, 15), "np.multiply")),
    ),
    Op(
        "div", 2, "arithmetic", meaning=lambda a, b: a / b,
        code={
            "numpy": Code(_divide, 14, (14, 15), ufunc="np.divide"),
            "python": infix("/", 14, (14, 15)),
        },
    ),
    # a**n for a whole number n: Python's ** (a negative base is fine)
    Op(
        "pow", 2, "arithmetic", meaning=lambda a, b: a**b,
        # b * a**(b - 1) is finite at a = 0, where out * b / a is not.
        partials=_power_partials,
        domain=((-2.0, 2.0), (3.0, 3.0)),
        code=_both(Code(_power, 16, (17, 15), ufunc="np.power")),
    ),
    # a**b for any other exponent: np.power gives nan and math.pow raises ValueError
    # for a negative base, where Python's ** would make a complex number.
    Op(
        "power", 2, "arithmetic", meaning=lambda a, b: a**b,
        partials=_power_partials,
        domain=((0.5, 2.0), (-2.0, 2.0)),
        code={"numpy": np_call("power"), "python": math_call("pow")},
    ),
    # ---- elementwise functions
    _function("exp", sp.exp),
    _function("log", sp.log, domain=((0.1, 3.0),)),
    _function("sqrt", sp.sqrt, domain=((0.1, 3.0),)),
    _function("sin", sp.sin, lazy=True),
    _function("cos", sp.cos, lazy=True),
    _function("tan", sp.tan, lazy=True, domain=((-1.2, 1.2),)),
    _function("sinh", sp.sinh, lazy=True),
    _function("cosh", sp.cosh, lazy=True),
    _function("tanh", sp.tanh, lazy=True),
    _function(
        "asin", sp.asin, numpy="arcsin", lazy=True, spellings=("asin", "arcsin"),
        domain=((-0.9, 0.9),),
    ),
    _function(
        "acos", sp.acos, numpy="arccos", lazy=True, spellings=("acos", "arccos"),
        domain=((-0.9, 0.9),),
    ),
    _function("atan", sp.atan, numpy="arctan", lazy=True, spellings=("atan", "arctan")),
    _function(
        "atan2", sp.atan2, numpy="arctan2", arity=2, spellings=("atan2", "arctan2"),
        domain=((0.5, 2.0), (0.5, 2.0)),
    ),
    Op(
        "erf", 1, sympy=(sp.erf,), spellings=("erf",), lazy=True, mpmath="erf",
        code={"numpy": vectorized_math("erf"), "python": math_call("erf")},
    ),
    Op(
        "abs", 1, sympy=(sp.Abs,), spellings=("abs", "Abs"), mpmath=lambda m, x: abs(x),
        kink=lambda x: np.abs(x),
        code={"numpy": np_call("abs"), "python": Code("abs({0})")},
    ),
    Op(
        "sign", 1, sympy=(sp.sign,), spellings=("sign",), mpmath="sign",
        partials=_zero, kink=lambda x: np.abs(x),
        code={
            "numpy": np_call("sign"),
            "python": Code("math.copysign(1.0, {0}) if {0} else 0.0", 1, (2,), ("math",)),
        },
    ),
    Op(
        "max", 2, sympy=(sp.Max,), spellings=("max", "Max"), variadic=True, reduction="amax",
        counts=tuple(range(2, 9)), commutative=True, mpmath=lambda m, *a: max(a),
        partials=_extremum_partials(1), kink=_closest_pair,
        code={"numpy": Code(_nested("np.maximum")), "python": Code(_call_format("max"))},
    ),
    Op(
        "min", 2, sympy=(sp.Min,), spellings=("min", "Min"), variadic=True, reduction="amin",
        counts=tuple(range(2, 9)), commutative=True, mpmath=lambda m, *a: min(a),
        partials=_extremum_partials(-1), kink=_closest_pair,
        code={"numpy": Code(_nested("np.minimum")), "python": Code(_call_format("min"))},
    ),
    # heaviside(x, h0): 0 for x < 0, h0 at 0, 1 for x > 0 (local derivatives use it)
    Op(
        "heaviside", 2, sympy=(sp.Heaviside,), partials=_zero,
        kink=lambda x, h0: np.abs(x),
        code={
            "numpy": np_call("heaviside"),
            "python": Code(_python_heaviside, 1, (11, 0), repeats=True),
        },
    ),
    # the learners' functions: one readable line each, stable in both tails
    Op(
        "sigmoid", 1, sympy=(sigmoid,), spellings=("sigmoid",),
        code={
            "numpy": helper("_sigmoid", _SIGMOID),
            # exp of a negative argument only: no OverflowError, and exact in both tails
            "python": Code(
                "1 / (1 + math.exp(-{0})) if {0} >= 0 "
                "else math.exp({0}) / (1 + math.exp({0}))",
                1, (17,), ("math",),
            ),
        },
    ),
    Op(
        "softplus", 1, sympy=(softplus,), spellings=("softplus",),
        code={
            "numpy": helper("_softplus", _SOFTPLUS),
            "python": Code(
                "max({0}, 0.0) + math.log1p(math.exp(-abs({0})))", 13, (0,), ("math",)
            ),
        },
    ),
    Op(
        "relu", 1, sympy=(relu,), spellings=("relu",), kink=lambda x: np.abs(x),
        code={"numpy": Code("np.maximum({0}, 0)"), "python": Code("max({0}, 0.0)")},
    ),
    # ---- more of NumPy's and the frameworks' functions
    _function("asinh", sp.asinh, numpy="arcsinh", lazy=True, spellings=("asinh", "arcsinh")),
    _function(
        "acosh", sp.acosh, numpy="arccosh", lazy=True, spellings=("acosh", "arccosh"),
        domain=((1.1, 3.0),),
    ),
    _function(
        "atanh", sp.atanh, numpy="arctanh", lazy=True, spellings=("atanh", "arctanh"),
        domain=((-0.9, 0.9),),
    ),
    # accurate where the written-out form is not (log(1 + 1e-12), exp(1e-12) - 1)
    _function("log1p", log1p, domain=((-0.5, 3.0),)),
    _function("expm1", expm1),
    _function("log2", log2, domain=((0.1, 3.0),), mpmath=lambda m, x: m.log(x, 2)),
    _function("log10", log10, domain=((0.1, 3.0),)),
    Op(
        "exp2", 1, sympy=(exp2,), spellings=("exp2",), mpmath=lambda m, x: m.power(2, x),
        code={"numpy": np_call("exp2"), "python": Code("2.0 ** {0}", 16, (15,))},
    ),
    Op(
        "cbrt", 1, sympy=(cbrt,), spellings=("cbrt",), mpmath="cbrt",
        domain=((0.2, 3.0),),  # cbrt'(0) is infinite
        code={
            "numpy": np_call("cbrt"),
            "python": Code("math.copysign(abs({0}) ** (1 / 3), {0})", imports=("math",)),
        },
    ),
    _function("hypot", hypot, arity=2, domain=((0.5, 2.0), (-2.0, -0.5))),
    Op(
        "logaddexp", 2, sympy=(logaddexp,), spellings=("logaddexp",),
        mpmath=lambda m, a, b: m.log(m.exp(a) + m.exp(b)),
        code={
            "numpy": np_call("logaddexp"),
            "python": Code(
                "max({0}, {1}) + math.log1p(math.exp(-abs({0} - {1})))", 13, (0, 0),
                ("math",),
            ),
        },
    ),
    Op(
        "logaddexp2", 2, sympy=(logaddexp2,), spellings=("logaddexp2",),
        mpmath=lambda m, a, b: m.log(m.power(2, a) + m.power(2, b), 2),
        code={
            "numpy": np_call("logaddexp2"),
            "python": Code(
                "max({0}, {1}) + math.log2(1 + 2.0 ** -abs({0} - {1}))", 13, (0, 0),
                ("math",),
            ),
        },
    ),
    # NumPy's normalized sinc: sin(pi x) / (pi x), 1 at 0
    Op(
        "sinc", 1, sympy=(sinc,), spellings=("sinc",), mpmath="sincpi",
        code={
            "numpy": np_call("sinc"),
            "python": Code(
                "math.sin(math.pi * {0}) / (math.pi * {0}) if {0} else 1.0", 1, (0,),
                ("math",),
            ),
        },
    ),
    Op(
        "erfc", 1, sympy=(sp.erfc,), spellings=("erfc",), lazy=True, mpmath="erfc",
        code={"numpy": vectorized_math("erfc"), "python": math_call("erfc")},
    ),
    Op(
        "logit", 1, sympy=(logit,), spellings=("logit",), domain=((0.1, 0.9),),
        mpmath=lambda m, x: m.log(x / (1 - x)),
        code={
            "numpy": Code("np.log({0}) - np.log1p(-{0})", 13, (0,)),
            "python": Code("math.log({0}) - math.log1p(-{0})", 13, (0,), ("math",)),
        },
    ),
    # log(cosh(x)) without overflow: |x| + log1p(exp(-2|x|)) - log(2)
    Op(
        "logcosh", 1, spellings=("logcosh",), mpmath=lambda m, x: m.log(m.cosh(x)),
        sympy=(defined("logcosh", lambda x: sp.log(sp.cosh(x)), lambda s, x: (sp.tanh(x),)),),
        code={
            "numpy": Code("np.abs({0}) + np.log1p(np.exp(-2 * np.abs({0}))) - 0.6931471805599453", 13),
            "python": Code(
                "abs({0}) + math.log1p(math.exp(-2 * abs({0}))) - 0.6931471805599453", 13,
                imports=("math",),
            ),
        },
    ),
    # activations, with PyTorch's subgradients at their kinks
    Op(
        "elu", 2, sympy=(elu,), spellings=("elu",), counts=(1, 2),
        build=lambda x, alpha=1: elu(x, alpha), kink=lambda x, alpha: np.abs(x),
        domain=((-2.0, 2.0), (0.5, 2.0)),
        code={
            "numpy": Code(
                lambda x, a: f"np.where({x} > 0, {x}, {_times(a)}np.expm1(np.minimum({x}, 0)))",
                repeats=True,
            ),
            "python": Code(
                lambda x, a: f"{x} if {x} > 0 else {_times(a)}math.expm1({x})", 1,
                imports=("math",), repeats=True,
            ),
        },
    ),
    Op(
        "selu", 1, sympy=(selu,), spellings=("selu",), kink=lambda x: np.abs(x),
        code={
            "numpy": Code(
                f"{_SELU_SCALE} * np.where({{0}} > 0, {{0}}, "
                f"{_SELU_ALPHA} * np.expm1(np.minimum({{0}}, 0)))", 14, (0,),
            ),
            "python": Code(
                f"{_SELU_SCALE} * ({{0}} if {{0}} > 0 else {_SELU_ALPHA} * math.expm1({{0}}))",
                14, (0,), ("math",),
            ),
        },
    ),
    Op(
        "leaky_relu", 2, sympy=(leaky_relu,), spellings=("leaky_relu",), counts=(1, 2),
        build=lambda x, slope=_LEAKY_SLOPE: leaky_relu(x, slope),
        kink=lambda x, slope: np.abs(x), domain=((-2.0, 2.0), (0.05, 0.5)),
        code={
            "numpy": Code("np.where({0} > 0, {0}, {1} * {0})"),
            "python": Code("{0} if {0} > 0 else {1} * {0}", 1, (0, 0)),
        },
    ),
    Op(
        "gelu", 1, sympy=(gelu,), spellings=("gelu",),
        mpmath=lambda m, x: x / 2 * (1 + m.erf(x / m.sqrt(2))),
        code={
            "numpy": helper(
                "_erf", _ERF, "0.5 * {0} * (1 + _erf({0} * 0.7071067811865476))".format,
                prec=14,
                imports=("math",), repeats=True,
            ),
            "python": Code(
                "0.5 * {0} * (1 + math.erf({0} * 0.7071067811865476))", 14, (0,), ("math",)
            ),
        },
    ),
    Op(
        "silu", 1, sympy=(silu,), spellings=("silu", "swish"),
        mpmath=lambda m, x: x / (1 + m.exp(-x)),
        code={
            "numpy": helper(
                "_sigmoid", _SIGMOID, "{0} * _sigmoid({0})".format, prec=14, repeats=True
            ),
            "python": Code(
                "{0} * (1 / (1 + math.exp(-{0})) if {0} >= 0 "
                "else math.exp({0}) / (1 + math.exp({0})))",
                14, (0,), ("math",),
            ),
        },
    ),
    Op(
        "softsign", 1, sympy=(softsign,), spellings=("softsign",),
        mpmath=lambda m, x: x / (1 + abs(x)),
        code={
            "numpy": Code("{0} / (1 + np.abs({0}))", 14, (15,)),
            "python": Code("{0} / (1 + abs({0}))", 14, (15,)),
        },
    ),
    Op(
        "relu6", 1, sympy=(relu6,), spellings=("relu6",),
        mpmath=lambda m, x: min(max(x, 0), 6),
        kink=lambda x: np.minimum(np.abs(x), np.abs(x - 6)), domain=((-2.0, 8.0),),
        code={"numpy": Code("np.clip({0}, 0, 6)"), "python": Code("min(max({0}, 0.0), 6.0)")},
    ),
    Op(
        "clip", 3, sympy=(clip,), spellings=("clip", "clamp"), mpmath=lambda m, x, lo, hi: min(max(x, lo), hi),
        kink=lambda x, lo, hi: np.minimum(np.abs(x - lo), np.abs(x - hi)),
        domain=((-2.0, 2.0), (-1.0, -0.5), (0.5, 1.0)),
        code={"numpy": np_call("clip"), "python": Code("min(max({0}, {1}), {2})")},
    ),
    # steps: derivative zero almost everywhere (PyTorch's convention)
    Op(
        "floor", 1, sympy=(sp.floor,), spellings=("floor",), partials=_zero, mpmath="floor",
        kink=lambda x: np.abs(x - np.round(x)),
        code={"numpy": np_call("floor"), "python": Code("float(math.floor({0}))", imports=("math",))},
    ),
    Op(
        "ceil", 1, sympy=(sp.ceiling,), spellings=("ceil", "ceiling"), partials=_zero,
        mpmath="ceil", kink=lambda x: np.abs(x - np.round(x)),
        code={"numpy": np_call("ceil"), "python": Code("float(math.ceil({0}))", imports=("math",))},
    ),
    Op(
        "round", 1, sympy=(round_half_even,), spellings=("round",), partials=_zero,
        mpmath=lambda m, x: m.mpf(round(float(x))),
        kink=lambda x: np.abs(np.abs(x - np.floor(x)) - 0.5),
        code={"numpy": np_call("round"), "python": Code("float(round({0}))")},
    ),
    # mod(a, b) = a - b floor(a / b), the sign of b (NumPy's mod, Python's %)
    Op(
        "mod", 2, sympy=(sp.Mod,), spellings=("mod",),
        partials=lambda a, b, *, out: (sp.Integer(1), -sp.floor(a / b)),
        mpmath=lambda m, a, b: a - b * m.floor(a / b),
        kink=lambda a, b: np.abs(b) * np.abs(a / b - np.round(a / b)),
        domain=((-2.0, 2.0), (0.7, 1.3)),
        code={"numpy": np_call("mod"), "python": Code("{0} % {1}", 14, (14, 15))},
    ),
    # log|Γ(x)| and polygamma(n, x) (digamma is n = 0): NumPy has neither, so the
    # numpy target imports scipy.special for them; the python target has none
    Op(
        "gammaln", 1, sympy=(sp.loggamma,), spellings=("gammaln", "lgamma", "loggamma"),
        mpmath="loggamma", domain=((0.5, 3.0),),
        code={"numpy": Code("scipy.special.gammaln({0})", imports=("scipy.special",))},
    ),
    Op(
        "polygamma", 2, sympy=(sp.polygamma,), spellings=("polygamma",),
        partials=lambda n, x, *, out: (None, sp.polygamma(n + 1, x)),
        mpmath="psi", domain=((0.0, 0.0), (0.5, 3.0)),
        code={"numpy": Code("scipy.special.polygamma({0}, {1})", imports=("scipy.special",))},
    ),
    # ---- conditions and selection (Piecewise, where)
    *(
        Op(
            name, 2, "condition", sympy=(cls,), commutative=name in ("eq", "ne"),
            kink=lambda a, b: np.abs(a - b), code=_both(infix(symbol, *_COMPARISON)),
        )
        for name, cls, symbol in (
            ("gt", sp.StrictGreaterThan, ">"), ("ge", sp.GreaterThan, ">="),
            ("lt", sp.StrictLessThan, "<"), ("le", sp.LessThan, "<="),
            ("eq", sp.Eq, "=="), ("ne", sp.Ne, "!="),
        )
    ),
    Op(
        "and", 2, "condition", sympy=(sp.And,), chain=True, commutative=True,
        code={"numpy": np_call("logical_and"), "python": Code("{0} and {1}", 5, (6, 6))},
    ),
    Op(
        "or", 2, "condition", sympy=(sp.Or,), chain=True, commutative=True,
        code={"numpy": np_call("logical_or"), "python": Code("{0} or {1}", 4, (5, 5))},
    ),
    Op(
        "not", 1, "condition", sympy=(sp.Not,),
        code={"numpy": np_call("logical_not"), "python": Code("not {0}", 6, (7,))},
    ),
    Op(
        "where", 3, "select", meaning=_where, spellings=("where",), build=_where,
        partials=lambda c, a, b, *, out: (
            None, sp.Piecewise((1, c), (0, True)), sp.Piecewise((0, c), (1, True)),
        ),
        code={
            "numpy": np_call("where"),
            "python": Code("{1} if {0} else {2}", 1, (2, 2, 2)),
        },
    ),
    # ---- tensor operations; their static arguments are `params`
    Op(
        "matmul", 2, "tensor", spellings=("dot",),
        # dot(a, b) is NumPy's dot: a scalar operand multiplies (`specialize`)
        build=lambda a, b, params=(): tensor("matmul", a, b, params=("dot",)),
        specialize=_matmul_specialize,
        vjp=_matmul_vjp, jvp=_bilinear_jvp("matmul"),
        shape=lambda shapes, params: S.matmul(*shapes),
        text=lambda a, b, dot=None: f"dot({a}, {b})" if dot else f"{a} @ {b}",
        latex=lambda a, b, dot=None: f"{a} {b}",
        code={"numpy": infix("@", 14, (14, 15), "np.matmul")},
    ),
    Op(
        "transpose", 1, "tensor", spellings=("transpose",), identity_below=2,
        vjp=lambda g, a, **_: (_t(g),), jvp=_linear_jvp("transpose"),
        shape=lambda shapes, params: shapes[0][::-1],
        text=lambda a: f"{a}.T", latex=lambda a: f"{a}^{{T}}",
        code={"numpy": Code("{0}.T", 100, (100,))},
    ),
    # swapaxes(a, -1, -2) is a.mT: the matrix transpose of a stack of matrices
    Op(
        "swapaxes", 1, "tensor", spellings=("swapaxes",),
        static=(Static("axis1", "int", required=True), Static("axis2", "int", required=True)),
        vjp=lambda g, a, *, params, **_: (tensor("swapaxes", g, params=params),),
        jvp=_linear_jvp("swapaxes"), shape=_swapaxes_shape,
        text=lambda a, i, j: f"{a}.mT" if (i, j) == (-1, -2) else f"swapaxes({a}, {i}, {j})",
        code={"numpy": Code(lambda a, i, j: f"np.swapaxes({a}, {i}, {j})")},
    ),
    # einsum('ij,jk->ik', a, b): its adjoints are einsums (ops.einsum_vjp)
    Op(
        "einsum", 1, "tensor", spellings=("einsum",), variadic=True,
        static=(Static("subscripts", "subscripts", required=True),),
        build=_einsum_build, vjp=_einsum_vjp, jvp=_einsum_jvp,
        shape=lambda shapes, params: S.einsum(params[0], shapes),
        text=lambda *args: f"einsum('{args[-1]}', {', '.join(args[:-1])})",
        code={"numpy": Code(
            lambda *args: f'np.einsum("{args[-1]}", {", ".join(args[:-1])})'
        )},
    ),
    Op(
        "tensordot", 2, "tensor", spellings=("tensordot",),
        static=(Static("axes", "tensordot", default=2),),
        vjp=_tensordot_vjp, jvp=_bilinear_jvp("tensordot"), shape=_tensordot_shape,
        text=lambda a, b, axes: f"tensordot({a}, {b}, axes={axes})",
        code={"numpy": Code(lambda a, b, axes: f"np.tensordot({a}, {b}, axes={axes})")},
    ),
    Op(
        "outer", 2, "tensor", spellings=("outer",),
        vjp=lambda g, a, b, **_: (_mm(g, b), _mm(a, g)),
        jvp=_bilinear_jvp("outer"), shape=_outer_shape,
        text=lambda a, b: f"outer({a}, {b})", code={"numpy": np_call("outer")},
    ),
    Op(
        "trace", 1, "tensor", spellings=("trace",),
        vjp=lambda g, a, **_: (g * tensor("eye", a),), jvp=_linear_jvp("trace"),
        shape=_trace_shape, text=lambda a: f"trace({a})",
        latex=lambda a: rf"\operatorname{{tr}} {a}", code={"numpy": np_call("trace")},
    ),
    # diag(v) is the diagonal matrix of v, diag(M) the diagonal of a square M:
    # each is the other's adjoint
    Op(
        "diag", 1, "tensor", spellings=("diag",),
        vjp=lambda g, a, **_: (tensor("diag", g),), jvp=_linear_jvp("diag"),
        shape=_diag_shape, text=lambda a: f"diag({a})", code={"numpy": np_call("diag")},
    ),
    *(
        Op(
            name, 1, "tensor", spellings=(name,), static=(Static("k", "int", default=0),),
            vjp=lambda g, a, *, params, name=name, **_: (tensor(name, g, params=params),),
            jvp=_linear_jvp(name), shape=_triangle_shape,
            text=lambda a, k, name=name: f"{name}({a}{_k_text(k)})",
            code={"numpy": Code(lambda a, k, name=name: f"np.{name}({a}{_k_text(k)})")},
        )
        for name in ("tril", "triu")
    ),
    Op(
        "sum", 1, "tensor", spellings=("sum",), static=_REDUCE, identity_below=1,
        vjp=_sum_vjp, jvp=_linear_jvp("sum"), shape=_reduced_shape,
        text=_reduction_text("sum"),
        latex=lambda a, axis, keepdims=False: rf"\textstyle\sum{_latex_axis(axis)} {a}",
        code={"numpy": _reduction_code("np.sum")},
    ),
    Op(
        "mean", 1, "tensor", spellings=("mean",), static=_REDUCE, identity_below=1,
        vjp=_mean_vjp, jvp=_linear_jvp("mean"), shape=_reduced_shape,
        text=_reduction_text("mean"),
        latex=lambda a, axis, keepdims=False: rf"\operatorname{{mean}}{_latex_axis(axis)} {a}",
        code={"numpy": _reduction_code("np.mean")},
    ),
    # max(x) and min(x) with one operand (or an axis) are these reductions
    *(
        Op(
            name, 1, "tensor", spellings=(name,), static=_REDUCE, identity_below=1,
            vjp=_extremum_vjp, jvp=_extremum_jvp, shape=_reduced_shape,
            kink=_runner_up_gap(sign), text=_reduction_text(name),
            code={"numpy": _reduction_code(f"np.{name[1:]}")},
        )
        for name, sign in (("amax", 1), ("amin", -1))
    ),
    Op(
        "prod", 1, "tensor", spellings=("prod",), static=_REDUCE, identity_below=1,
        vjp=_prod_vjp, jvp=_prod_jvp, shape=_reduced_shape,
        text=_reduction_text("prod"), code={"numpy": _reduction_code("np.prod")},
    ),
    *(
        Op(
            name, 1, "tensor", spellings=(name,),
            static=(*_REDUCE, Static("ddof", "int", default=0)),
            vjp=vjp, jvp=jvp, shape=_reduced_shape,
            text=_reduction_text(name), code={"numpy": _reduction_code(f"np.{name}")},
        )
        for name, vjp, jvp in (("var", _var_vjp, _var_jvp), ("std", _std_vjp, _std_jvp))
    ),
    # the 2-norm of a vector, the Frobenius norm of a matrix (over axis: of each slice)
    Op(
        "norm", 1, "tensor", spellings=("norm",), static=_REDUCE,
        vjp=_norm_vjp, jvp=_norm_jvp, shape=_reduced_shape,
        text=_reduction_text("norm"),
        latex=lambda a, axis, keepdims=False: rf"\lVert {a} \rVert{_latex_axis(axis)}",
        code={"numpy": _reduction_code("np.linalg.norm")},
    ),
    Op(
        "cumsum", 1, "tensor", spellings=("cumsum",), static=(Static("axis", "axis"),),
        vjp=_cumsum_vjp, jvp=_linear_jvp("cumsum"), shape=_cumsum_shape,
        text=lambda a, axis: f"cumsum({a}{axis_text(axis)})",
        code={"numpy": Code(lambda a, axis: f"np.cumsum({a}{axis_text(axis)})")},
    ),
    # cumprod's derivatives multiply the other elements (no division: exact at 0),
    # an n x n matrix per slice along the axis
    Op(
        "cumprod", 1, "tensor", spellings=("cumprod",), static=(Static("axis", "axis"),),
        vjp=_cumprod_vjp, jvp=_cumprod_jvp, shape=_cumsum_shape,
        text=lambda a, axis: f"cumprod({a}{axis_text(axis)})",
        code={"numpy": Code(lambda a, axis: f"np.cumprod({a}{axis_text(axis)})")},
    ),
    Op(
        "flip", 1, "tensor", spellings=("flip",), static=(Static("axis", "axis"),),
        vjp=lambda g, a, *, params, **_: (tensor("flip", g, params=params),),
        jvp=_linear_jvp("flip"),
        shape=lambda shapes, params: (S.axes(shapes[0], params[0]), shapes[0])[1],
        text=lambda a, axis: f"flip({a}{axis_text(axis)})",
        code={"numpy": Code(lambda a, axis: f"np.flip({a}{axis_text(axis)})")},
    ),
    Op(
        "index", 1, "tensor",
        vjp=lambda g, a, *, params, **_: (tensor("scatter", g, a, params=params),),
        jvp=_linear_jvp("index"),
        shape=lambda shapes, params: S.index(shapes[0], params[0]),
        text=lambda a, key: f"{a}{key_text(key)}",
        latex=lambda a, key: f"{a}{key_text(key)}",
        code={"numpy": Code(lambda a, key: f"{a}{key_text(key)}", 100, (100,))},
    ),
    # a[key] where key holds integer arrays: logp[arange(n), labels]
    Op(
        "take", 1, "tensor", variadic=True,
        vjp=_take_vjp, jvp=_linear_jvp("take"), shape=_take_shape,
        text=_take_text, code={"numpy": Code(_take_text, 100, (100,))},
    ),
    # arange(n): 0, 1, ..., n-1 for a dimension n of an input (or a size)
    Op(
        "arange", 1, "tensor", vjp=lambda g, a, **_: (None,), jvp=_constant_jvp,
        shape=_arange_shape,
        text=lambda a, axis, size: (
            f"arange({size})" if axis is None else f"arange({a}.shape[{axis}])"
        ),
        code={"numpy": Code(_arange_code)},
    ),
    Op(
        "reshape", 1, "tensor", spellings=("reshape",),
        static=(Static("shape", "axis", required=True),),
        vjp=lambda g, a, **_: (_reshape_like(g, a),), jvp=_linear_jvp("reshape"),
        shape=lambda shapes, params: S.reshaped(
            shapes[0], params[0] if isinstance(params[0], tuple) else (params[0],)
        ),
        text=lambda a, shape: f"reshape({a}, {shape})",
        code={"numpy": Code(lambda a, shape: f"np.reshape({a}, {shape})")},
    ),
    Op(
        "expand_dims", 1, "tensor", spellings=("expand_dims",),
        static=(Static("axis", "axis", required=True),),
        vjp=lambda g, a, **_: (_reshape_like(g, a),), jvp=_linear_jvp("expand_dims"),
        shape=_expand_dims_shape,
        text=lambda a, axis: f"expand_dims({a}, {axis})",
        code={"numpy": Code(lambda a, axis: f"np.expand_dims({a}, {axis})")},
    ),
    Op(
        "squeeze", 1, "tensor", spellings=("squeeze",), static=(Static("axis", "axis"),),
        vjp=lambda g, a, **_: (_reshape_like(g, a),), jvp=_linear_jvp("squeeze"),
        shape=_squeeze_shape,
        text=lambda a, axis: f"squeeze({a}{axis_text(axis)})",
        code={"numpy": Code(lambda a, axis: f"np.squeeze({a}{axis_text(axis)})")},
    ),
    # concatenate([a, b], axis=0) and stack([a, b], axis=0); [a, b] is stack
    Op(
        "concatenate", 1, "tensor", spellings=("concatenate",), variadic=True,
        static=(Static("axis", "int", default=0),),
        vjp=_concatenate_vjp, jvp=_joint_jvp("concatenate"), shape=_concatenate_shape,
        text=_join_text("concatenate"), code={"numpy": _join_code("concatenate")},
    ),
    Op(
        "stack", 1, "tensor", spellings=("stack",), variadic=True,
        static=(Static("axis", "int", default=0),),
        vjp=_stack_vjp, jvp=_joint_jvp("stack"), shape=_stack_shape,
        text=_join_text("stack"), code={"numpy": _join_code("stack")},
    ),
    Op(
        "repeat", 1, "tensor", spellings=("repeat",),
        static=(Static("repeats", "int", required=True), Static("axis", "axis")),
        vjp=_repeat_vjp, jvp=_linear_jvp("repeat"), shape=_repeat_shape,
        text=lambda a, r, axis: f"repeat({a}, {r}{axis_text(axis)})",
        code={"numpy": Code(lambda a, r, axis: f"np.repeat({a}, {r}{axis_text(axis)})")},
    ),
    Op(
        "tile", 1, "tensor", spellings=("tile",), static=(Static("reps", "axis", required=True),),
        vjp=lambda g, a, *, params, **_: (tensor("untile", g, a, params=params),),
        jvp=_linear_jvp("tile"), shape=_tile_shape,
        text=lambda a, reps: f"tile({a}, {reps})",
        code={"numpy": Code(lambda a, reps: f"np.tile({a}, {reps})")},
    ),
    Op(
        "roll", 1, "tensor", spellings=("roll",),
        static=(Static("shift", "axis", required=True), Static("axis", "axis")),
        vjp=_roll_vjp, jvp=_linear_jvp("roll"), shape=_roll_shape,
        text=lambda a, shift, axis: f"roll({a}, {shift}{axis_text(axis)})",
        code={"numpy": Code(lambda a, shift, axis: f"np.roll({a}, {shift}{axis_text(axis)})")},
    ),
    Op(
        "solve", 2, "tensor", spellings=("solve",),
        vjp=_solve_vjp, jvp=_solve_jvp, shape=_solve_shape,
        specialize=_solve_specialize,
        text=lambda a, b, *lead: f"solve({a}, {b})",
        code={"numpy": Code(_solve_code)},
    ),
    Op(
        "inv", 1, "tensor", spellings=("inv",),
        vjp=_inv_vjp, jvp=_inv_jvp, shape=_square("inv"),
        text=lambda a: f"inv({a})", latex=lambda a: f"{a}^{{-1}}",
        code={"numpy": np_call("linalg.inv")},
    ),
    Op(
        "det", 1, "tensor", spellings=("det",),
        vjp=_det_vjp, jvp=_det_jvp, shape=_det_shape,
        text=lambda a: f"det({a})", code={"numpy": np_call("linalg.det")},
    ),
    # log|det A|, NumPy's slogdet(A)[1] (its sign is a step: derivative 0)
    Op(
        "logabsdet", 1, "tensor", spellings=("logabsdet", "logdet"),
        vjp=_logabsdet_vjp, jvp=_logabsdet_jvp, shape=_det_shape,
        text=lambda a: f"logabsdet({a})",
        code={"numpy": Code("np.linalg.slogdet({0})[1]")},
    ),
    Op(
        "cholesky", 1, "tensor", spellings=("cholesky",),
        vjp=_cholesky_vjp, jvp=_cholesky_jvp, shape=_square("cholesky"),
        text=lambda a: f"cholesky({a})", code={"numpy": np_call("linalg.cholesky")},
    ),
    Op(
        "softmax", 1, "tensor", spellings=("softmax",),
        # default axis -1: over the last axis (the classes)
        static=(Static("axis", "axis", default=-1),),
        vjp=_softmax_vjp, jvp=_softmax_jvp,
        shape=lambda shapes, params: (S.axes(shapes[0], params[0]), shapes[0])[1],
        text=lambda a, axis: f"softmax({a}{axis_text(axis)})",
        code={"numpy": helper(
            "_softmax", _SOFTMAX, lambda a, axis: f"_softmax({a}{axis_text(axis)})"
        )},
    ),
    Op(
        "logsumexp", 1, "tensor", spellings=("logsumexp",), static=_REDUCE, identity_below=1,
        vjp=_logsumexp_vjp, jvp=_logsumexp_jvp, shape=_reduced_shape,
        text=_reduction_text("logsumexp"),
        code={"numpy": helper(
            "_logsumexp", _LOGSUMEXP,
            lambda a, axis, keepdims=False: (
                f"_logsumexp({a}{axis_text(axis)}{_keep_text(keepdims)})"
            ),
        )},
    ),
    # ---- only in backward passes
    # broadcast(g, like; axis): g expanded at axis, to like's shape
    Op(
        "broadcast", 2, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("broadcast"),
        shape=lambda shapes, params: shapes[1],
        text=lambda g, like, axis: f"broadcast({g}{axis_text(axis)} to {like})",
        code={"numpy": helper(
            "_broadcast", _BROADCAST,
            lambda g, like, axis: f"_broadcast({g}, {like}{axis_text(axis)})",
        )},
    ),
    # scatter(g, like; key): zeros like `like`, g at key
    Op(
        "scatter", 2, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("scatter"),
        shape=lambda shapes, params: shapes[1],
        text=lambda g, like, key: f"scatter({g} into {like}{key_text(key)})",
        code={"numpy": helper(
            "_scatter", _SCATTER,
            lambda g, like, key: f"_scatter({g}, {like}, np.s_{key_text(key)})",
        )},
    ),
    # eye(like): the identity matrix of like's last axis (trace's adjoint)
    Op(
        "eye", 1, "adjoint", vjp=_no_vjp, jvp=_constant_jvp,
        shape=lambda shapes, params: shapes[0][-2:],
        text=lambda a: f"eye_like({a})", code={"numpy": Code("np.eye(np.shape({0})[-1])")},
    ),
    # trace_last(a): the trace of each matrix of a stack (det's and cholesky's JVP)
    Op(
        "trace_last", 1, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("trace_last"),
        shape=lambda shapes, params: shapes[0][:-2],
        text=lambda a: f"trace_last({a})",
        code={"numpy": Code("np.trace({0}, axis1=-2, axis2=-1)")},
    ),
    # scatter_add(g, like, *indices; key): zeros like `like`, g added at key
    Op(
        "scatter_add", 2, "adjoint", variadic=True, vjp=_no_vjp,
        jvp=_linear_jvp("scatter_add"), shape=lambda shapes, params: shapes[1],
        text=lambda g, like, *rest: f"scatter_add({g} into {_take_text(like, *rest)})",
        code={"numpy": helper(
            "_scatter_add", _SCATTER_ADD,
            lambda g, like, *rest: (
                f"_scatter_add({g}, {like}, np.s_{key_text(rest[-1], rest[:-1])})"
            ),
        )},
    ),
    Op(
        "unrepeat", 2, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("unrepeat"),
        shape=lambda shapes, params: shapes[1],
        text=lambda g, like, r, axis: f"unrepeat({g} to {like}, {r}, axis={axis})",
        code={"numpy": helper(
            "_unrepeat", _UNREPEAT, lambda g, like, r, axis: f"_unrepeat({g}, {like}, {r}, {axis})"
        )},
    ),
    Op(
        "untile", 2, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("untile"),
        shape=lambda shapes, params: shapes[1],
        text=lambda g, like, reps: f"untile({g} to {like}, {reps})",
        code={"numpy": helper(
            "_untile", _UNTILE, lambda g, like, reps: f"_untile({g}, {like}, {reps})"
        )},
    ),
    *(
        Op(
            f"cumprod_{kind}", 2, "adjoint", vjp=_no_vjp, jvp=_second_order_of_prod,
            shape=lambda shapes, params: shapes[1],
            text=lambda g, x, axis, kind=kind: f"cumprod_{kind}({g}, {x}, axis={axis})",
            code={"numpy": helper(
                f"_cumprod_{kind}", _CUMPROD_HELPERS[kind],
                lambda g, x, axis, kind=kind: f"_cumprod_{kind}({g}, {x}, {axis})",
            )},
        )
        for kind in ("adjoint", "tangent")
    ),
    # reshape_like(g, like): g in like's shape (the adjoint of the shape operations)
    Op(
        "reshape_like", 2, "adjoint", vjp=_no_vjp, jvp=_linear_jvp("reshape_like"),
        shape=lambda shapes, params: shapes[1],
        text=lambda g, like: f"reshape({g} like {like})",
        code={"numpy": Code("np.reshape({0}, np.shape({1}))")},
    ),
    # prod_others(a; axis): each element's product of the others (prod's adjoint)
    Op(
        "prod_others", 1, "adjoint", vjp=_no_vjp, jvp=_second_order_of_prod,
        shape=lambda shapes, params: shapes[0],
        text=lambda a, axis: f"prod_others({a}{axis_text(axis)})",
        code={"numpy": helper(
            "_prod_others", _PROD_OTHERS,
            lambda a, axis: f"_prod_others({a}{axis_text(axis)})",
        )},
    ),
    Op(
        "size", 1, "adjoint", vjp=_no_vjp, jvp=_constant_jvp,
        shape=lambda shapes, params: (),
        text=lambda a: f"size({a})", code={"numpy": Code("{0}.size", 100, (100,))},
    ),
)  # fmt: skip

OPS: dict[str, Op] = {op.name: op for op in _REGISTRY}
"""Every operation, by its name in the IR."""

BY_SYMPY: dict[type, Op] = {cls: op for op in _REGISTRY for cls in op.sympy}
"""The operation each SymPy class lowers to."""

SPELLINGS: dict[str, Op] = {s: op for op in _REGISTRY for s in op.spellings}
"""The operation each function name of the spec language calls."""

ALIASES: dict[str, tuple[Callable[..., sp.Expr], tuple[int, ...]]] = {
    "square": (lambda x: x**2, (1,)),
    "reciprocal": (lambda x: 1 / x, (1,)),
    "rsqrt": (lambda x: 1 / sp.sqrt(x), (1,)),
    "digamma": (lambda x: sp.polygamma(0, x), (1,)),
}
"""Functions of the spec language that are written out in other operations."""

TENSOR_ALIASES: dict[str, tuple[Callable[..., sp.Expr], tuple[int, ...]]] = {
    # L⁻¹b for a lower-triangular L: NumPy has no triangular solver, so it is
    # np.linalg.solve of tril(L) (the triangle scipy.linalg.solve_triangular reads)
    "solve_triangular": (
        lambda a, b: tensor("solve", tensor("tril", a, params=(0,)), b),
        (2,),
    ),
}
"""Tensor functions of the spec language written out in other tensor operations."""

_TENSOR_CLASSES: dict[str, type] = {
    op.name: type(op.name, (TensorOp,), {"op": op.name})
    for op in _REGISTRY
    if op.kind in ("tensor", "adjoint")
}


def _check_registry() -> None:
    """Every op has a derivative and can be printed; no silent gaps."""
    for op in _REGISTRY:
        tensorish = op.kind in ("tensor", "adjoint")
        if tensorish and (op.vjp is None or op.jvp is None or op.text is None):
            raise AssertionError(f"tensor operation {op.name} needs vjp, jvp and text")
        if not tensorish and op.meaning is None:
            raise AssertionError(f"operation {op.name} needs a SymPy meaning")
        if "numpy" not in op.code:
            raise AssertionError(f"the numpy target cannot print {op.name}")


_check_registry()
