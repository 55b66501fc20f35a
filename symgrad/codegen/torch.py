"""The `torch` target: the NumPy program printed with PyTorch's functions.

The module converts its arguments to float64 tensors, computes without
recording a graph (torch.no_grad) and defines `Function`, a
`torch.autograd.Function` whose backward is symgrad's backward pass, so that
`loss.backward()` of a user's model that calls it runs symgrad's code.
"""

from __future__ import annotations

import re

from symgrad.codegen.engine import UNPRINTED, EngineBackend, respelled
from symgrad.codegen.printer import derived_codes
from symgrad.ops import Code, axis_text

# NumPy's spelling where PyTorch's differs: a maximum or minimum with 0 is a clamp
# (torch.maximum takes tensors only)
_CLAMP = re.compile(r"np\.(maximum|minimum)\(([\w.]+|\{0\}), 0\)")
_TORCH = respelled("torch")


def _spelling(text: str) -> str:
    text = _CLAMP.sub(
        lambda m: f"torch.clamp({m[2]}, {'min' if m[1] == 'maximum' else 'max'}=0)",
        text,
    )
    return _TORCH(text)


def _reduction(function: str):
    """torch.function(a, dim=axis, keepdim=...): NumPy's axis=None is every dim."""

    def fmt(a, axis, keepdims=False, ddof=0):
        if ddof:
            raise ValueError(f"{function} with ddof is not printed for torch")
        dim = "tuple(range(" + a + ".dim()))" if axis is None else axis
        keep = ", keepdim=True" if keepdims else ""
        if axis is None and not keepdims and function != "logsumexp":
            return f"torch.{function}({a})"
        return f"torch.{function}({a}, dim={dim}{keep})"

    return fmt


_NUMBER = re.compile(r"\(?-?[\d.]+(e-?\d+)?\)?\Z")


def _extremum(kind: str):
    """torch.maximum(a, b) of tensors; against a constant, a clamp (min= for max)."""
    bound = "min" if kind == "maximum" else "max"

    def fmt(*args):
        constants = [a for a in args if _NUMBER.match(a)]
        text = None
        for arg in args:
            if arg in constants:
                continue
            text = arg if text is None else f"torch.{kind}({text}, {arg})"
        for constant in constants:
            text = f"torch.clamp({text}, {bound}={constant})"
        return text

    return fmt


_BROADCAST = '''
def _broadcast(g, like, axis=None):
    """The adjoint of a sum over axis: g spread back over like's shape (a view)."""
    g = torch.as_tensor(g, dtype=like.dtype, device=like.device)
    if axis is not None:
        g = g.unsqueeze(axis)
    return g.expand(like.shape)
'''
_SCATTER = '''
def _scatter(g, like, key):
    """The adjoint of like[key]: zeros of like's shape with g at key."""
    out = torch.zeros_like(like)
    out[key] = g
    return out
'''


# g * (1 - h**2), tanh's adjoint (h = tanh(x)): PyTorch's fused kernel, one pass
# over the arrays where the three operations make three
_TANH_ADJOINT = re.compile(r"\(1 - ([\w.]+)\*\*2\)\Z")


def _product(a: str, b: str) -> str:
    """a * b; g * (1 - h**2) (either order) as torch.ops.aten.tanh_backward(g, h),
    which computes exactly that for any tensors g and h."""
    for g, other in ((a, b), (b, a)):
        match = _TANH_ADJOINT.match(other)
        if match:
            return f"torch.ops.aten.tanh_backward({g}, {match[1]})"
    return f"{a} * {b}"


def _key(key: tuple) -> str:
    """A NumPy key as a Python expression: (slice(None, None, None), 0)."""
    parts = [
        str(k) if isinstance(k, int) else f"slice{tuple(k)!r}".replace(",)", ")")
        for k in key
    ]
    return f"({', '.join(parts)},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _copy(a: str) -> str:
    """A step whose value is a constant (`s0 = a/a` is 1) is a tensor: PyTorch's
    functions take tensors, where NumPy's take Python numbers too."""
    if _NUMBER.match(a):
        return f"torch.tensor({a}, dtype=torch.float64)"
    if a in ("True", "False"):
        return f"torch.tensor({a})"
    return a


CODES = derived_codes(
    "numpy",
    _spelling,
    overrides={
        "copy": Code(_copy),
        "mul": Code(_product, 14, (14, 15)),
        "erf": Code("torch.erf({0})"),
        "erfc": Code("torch.erfc({0})"),
        "gammaln": Code("torch.lgamma({0})"),
        "polygamma": Code("torch.polygamma({0}, {1})"),
        "power": Code("torch.pow({0}, {1})"),
        "mod": Code("torch.remainder({0}, {1})"),
        "cbrt": Code("torch.sign({0}) * torch.abs({0}) ** (1 / 3)", 14, (15,)),
        "gelu": Code("0.5 * {0} * (1 + torch.erf({0} * 0.7071067811865476))", 14, (0,)),
        "sigmoid": Code("torch.sigmoid({0})"),
        "silu": Code("{0} * torch.sigmoid({0})", 14, (15,)),
        "softplus": Code(
            "torch.clamp({0}, min=0) + torch.log1p(torch.exp(-torch.abs({0})))", 13
        ),
        "max": Code(_extremum("maximum")),
        "min": Code(_extremum("minimum")),
        "heaviside": Code("torch.heaviside({0}, torch.full_like({0}, {1}))"),
        "size": Code("torch.numel({0})"),
        "sum": Code(_reduction("sum")),
        "mean": Code(_reduction("mean")),
        "softmax": Code(lambda a, axis: f"torch.softmax({a}, dim={axis})"),
        "logsumexp": Code(_reduction("logsumexp"), repeats=True),
        "broadcast": Code(
            lambda g, like, axis: f"_broadcast({g}, {like}{axis_text(axis)})",
            helper=("_broadcast", _BROADCAST.strip()),
        ),
        "scatter": Code(
            lambda g, like, key: f"_scatter({g}, {like}, {_key(key)})",
            helper=("_scatter", _SCATTER.strip()),
        ),
    },
    refused=UNPRINTED,
)

TORCH = EngineBackend(
    "torch",
    value_type="Any",
    tensors=True,
    frees_arrays=True,
    arrays=True,
    codes=CODES,
    several_outputs=False,
    refused=UNPRINTED,
    taken=frozenset({"torch", "Function", "function", "ctx", "value"}),
    namespace="torch",
)
