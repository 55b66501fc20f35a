"""The `jax` target: the NumPy program printed with `jax.numpy`, compiled by `jax.jit`.

XLA fuses the elementwise lines around the matrix products, so the one-op-a-line
program runs as a few fused loops. The module also defines `function`, a
`jax.custom_vjp` whose derivative is symgrad's backward pass, so that `jax.grad`
of a user's loss that calls it differentiates through symgrad's code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from symgrad.codegen.engine import UNPRINTED, EngineBackend, respelled
from symgrad.codegen.printer import derived_codes
from symgrad.ir import Program
from symgrad.ops import Code, axis_text, key_text

_SPECIAL = ("jax.scipy.special",)


def _special(function: str, arity: int = 1) -> Code:
    """`jax.scipy.special.function(...)`: NumPy's module has no such function."""
    operands = ", ".join(f"{{{i}}}" for i in range(arity))
    return Code(f"jax.scipy.special.{function}({operands})", imports=_SPECIAL)


_BROADCAST = '''
def _broadcast(g, like, axis=None):
    """The adjoint of a sum over axis: g spread back over like's shape."""
    if axis is not None:
        g = jnp.expand_dims(g, axis)
    return jnp.broadcast_to(g, jnp.shape(like))
'''


def _matmul(a: str, b: str, vector_right: bool = False) -> str:
    """`a @ b`; a transposed matrix times a vector as the vector times the matrix,
    `g @ X` for `X.T @ g`: XLA's CPU code for X.T @ g is about 4x slower for a
    tall X (measured: 1e6 x 10, 335 ms against 85 ms)."""
    if not vector_right:
        return f"{a} @ {b}"
    return f"{b} @ {a[:-2] if a.endswith('.T') else a + '.T'}"


CODES = derived_codes(
    "numpy",
    respelled("jnp"),
    overrides={
        "erf": _special("erf"),
        "erfc": _special("erfc"),
        "gammaln": _special("gammaln"),
        "polygamma": _special("polygamma", 2),
        "matmul": Code(_matmul, 14, (14, 15)),
        # XLA's logistic: one exp, exact in both tails
        "sigmoid": Code("jax.nn.sigmoid({0})"),
        "logsumexp": Code(
            lambda a, axis, keepdims=False: (
                f"jax.scipy.special.logsumexp({a}"
                f"{axis_text(axis)}{', keepdims=True' if keepdims else ''})"
            ),
            imports=_SPECIAL,
        ),
        "gelu": Code(
            "0.5 * {0} * (1 + jax.scipy.special.erf({0} * 0.7071067811865476))",
            14,
            (0,),
            _SPECIAL,
        ),
        "broadcast": Code(
            lambda g, like, axis: f"_broadcast({g}, {like}{axis_text(axis)})",
            helper=("_broadcast", _BROADCAST.strip()),
        ),
        # zeros of like's shape with g at key: JAX arrays are immutable
        "scatter": Code(
            lambda g, like, key: f"jnp.zeros_like({like}).at{key_text(key)}.set({g})"
        ),
    },
    refused=UNPRINTED,
)


@dataclass(frozen=True)
class JaxBackend(EngineBackend):
    def prepared(self, program: Program) -> Program:
        """Each product of a transposed matrix and a vector marked, to print as
        `g @ X` (_matmul)."""
        shapes = program.shapes()
        body = program.forward + program.backward
        transposed = {a.name for a in body if a.op == "transpose"}

        def marked(a):
            if (
                a.op == "matmul"
                and a.args[0] in transposed
                and len(shapes.get(a.args[1], ())) == 1
            ):
                return replace(a, params=(True,))
            return a

        return replace(
            program,
            forward=tuple(map(marked, program.forward)),
            backward=tuple(map(marked, program.backward)),
        )


JAX = JaxBackend(
    "jax",
    value_type="Any",
    tensors=True,
    codes=CODES,
    several_outputs=False,
    refused=UNPRINTED,
    taken=frozenset({"jax", "jnp", "function"}),
    namespace="jnp",
)
