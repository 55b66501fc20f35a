"""What the array-engine targets (`jax`, `torch`) share: gradients summed to shape.

An engine target prints the same single-op program as the numpy target, in the
engine's own functions (each backend module derives its table from the
registry's NumPy forms). Its modules make every argument one of the engine's
arrays first, so a value always has `.shape`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from symgrad.codegen.backend import Backend, Gradient
from symgrad.ir import Operand, Program
from symgrad.ops import OPS

_NUMPY = re.compile(r"\bnp\.")


PRINTED_TENSOR_OPS = frozenset(
    {"matmul", "transpose", "sum", "mean", "index", "softmax", "logsumexp"}
    | {"broadcast", "scatter", "outer", "size"}
)
"""The tensor operations the engine targets print (checked against the numpy target)."""

UNPRINTED = {
    name: "a tensor operation the engine targets do not print yet"
    for name, op in OPS.items()
    if op.kind in ("tensor", "adjoint") and name not in PRINTED_TENSOR_OPS
}
"""The others, refused at compile time with this reason."""


def respelled(namespace: str):
    """`np.exp(x)` -> `{namespace}.exp(x)`: the NumPy spelling an engine shares."""
    return lambda text: _NUMPY.sub(f"{namespace}.", text)


@dataclass(frozen=True)
class EngineBackend(Backend):
    """`namespace` is what the module calls the engine's array functions (`jnp`)."""

    namespace: str = ""

    def gradient(
        self, program: Program, name: str, grad: Operand, one_point: bool = False
    ) -> Gradient:
        """Each gradient of a scalar spec summed back to its input's shape (a batch
        broadcasts); a tensor spec's has its input's shape already."""
        plain = super().gradient(program, name, grad)
        if not program.tensor:
            return Gradient(
                f"_sum_to({plain.text}, {name}, {program.output})",
                plain.reads | {name, program.output},
                frozenset({"_sum_to"}),
            )
        if grad == 0:
            return Gradient(f"{self.namespace}.zeros_like({name})", frozenset({name}))
        return plain
