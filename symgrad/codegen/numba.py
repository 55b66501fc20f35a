"""The `numba` target: elementwise work fused in loops compiled by `numba.njit`.

A scalar spec's forward and backward of each batch element run in one loop
whose body is the python target's single-op lines (floats and the math
module): each element's values stay in registers instead of making one pass
over memory per operation, and the gradients of inputs broadcast over the
batch are summed in the loop. A tensor spec is printed as the numpy target
prints it, except that value_and_grad and grad run their elementwise steps,
and the sums of them, in such loops between the matrix products
(`codegen.loops`).
"""

from __future__ import annotations

from dataclasses import dataclass

from symgrad.codegen.backend import Backend
from symgrad.codegen.numpy import NumpyBackend
from symgrad.codegen.printer import derived_codes, registry_codes
from symgrad.codegen.python import PythonBackend
from symgrad.ir import Assign, Program
from symgrad.ops import OPS

_TENSOR = "a tensor operation: only the numpy lines of a tensor spec print it"

REFUSED = {
    "polygamma": "the math module has no polygamma",
    "gammaln": "its derivative is polygamma, which the math module lacks",
    **{name: _TENSOR for name, op in OPS.items() if op.kind in ("tensor", "adjoint")},
}
CODES = derived_codes(
    "python",
    lambda text: text,
    overrides={},
    refused=REFUSED,
)


_TAKEN = frozenset({"numba", "CACHE", "PARALLEL"})


@dataclass(frozen=True)
class NumbaBackend(PythonBackend):
    """The python target's lines (a value only on the branch of a where that needs
    it), in a loop over the batch."""

    def for_program(self, program: Program) -> Backend:
        return NUMBA_LOOPS if program.tensor else self


# The steps a loop computes: those numba compiles to as fast a scalar as NumPy's.
# numba calls the C library's scalar exp, log, tanh, ... (no SIMD without Intel's
# SVML, which pip's llvmlite lacks): 6.3 ms for exp of 1e6 floats against NumPy's
# 0.68 ms here, far more than the memory pass a loop saves (0.56 ms), so they stay
# NumPy lines. sin and cos measured the same either way (7.7 ms).
_CHEAP = frozenset(
    {"neg", "add", "sub", "mul", "div", "abs", "sign", "max", "min"}
    | {"heaviside", "relu", "relu6", "leaky_relu", "softsign", "clip", "sqrt"}
    | {"floor", "ceil", "round", "mod", "sin", "cos", "where"}
    | {name for name, op in OPS.items() if op.kind == "condition"}
)


@dataclass(frozen=True)
class NumbaLoopsBackend(NumpyBackend):
    def fuses(self, a: Assign) -> bool:
        """Arithmetic, comparisons and choices; a power only to a constant integer
        or 1/2 (numba multiplies, or takes a square root; else it calls pow, 9.9 ms
        for 1e6 against NumPy's 2.3 ms)."""
        if a.op in ("pow", "power"):
            exponent = a.args[1]
            return not isinstance(exponent, str) and (
                float(exponent).is_integer() or exponent == 0.5
            )
        return a.op in _CHEAP


NUMBA_LOOPS = NumbaLoopsBackend(
    "numba",
    value_type="Any",
    tensors=True,
    frees_arrays=True,
    arrays=True,
    codes=registry_codes("numpy"),
    several_outputs=False,
    taken=_TAKEN,
    higher=False,
    loop_codes=CODES,
    template="tensor.py.j2",
    accepts="Arguments are NumPy arrays and numbers; lists and tuples are made arrays.",
)
"""A tensor spec on the numba target: the numpy target's lines, value_and_grad's
and grad's elementwise steps in fused loops."""

NUMBA = NumbaBackend(
    "numba",
    value_type="Any",
    tensors=False,
    branches=True,
    codes=CODES,
    several_outputs=False,
    refused=REFUSED,
    taken=_TAKEN,
    higher=False,
)
