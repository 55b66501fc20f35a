"""The `numba` target: forward and backward of each batch element fused in one loop.

The loop body is the python target's single-op lines (floats and the math
module), compiled by `numba.njit`: each element's values stay in registers
instead of making one pass over memory per operation, and the gradients of
inputs broadcast over the batch are summed in the loop. Scalar (elementwise)
specs only: a spec with vectors and matrices is refused at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass

from symgrad.codegen.printer import derived_codes
from symgrad.codegen.python import PythonBackend
from symgrad.ops import OPS

_TENSOR = "a tensor operation: the numba target fuses scalar specs only"

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


@dataclass(frozen=True)
class NumbaBackend(PythonBackend):
    """The python target's lines (a value only on the branch of a where that needs
    it), in a loop over the batch."""


NUMBA = NumbaBackend(
    "numba",
    value_type="Any",
    tensors=False,
    branches=True,
    codes=CODES,
    several_outputs=False,
    refused=REFUSED,
    taken=frozenset({"numba", "CACHE", "PARALLEL"}),
    higher=False,
)
