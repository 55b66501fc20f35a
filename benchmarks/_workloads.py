"""The workloads of issue 5 and their references, shared by the benchmark scripts.

Each workload has a symgrad spec, its inputs, a hand-written reference (the
backprop code a user writes without symgrad) and the tools a user would pick
instead: sympy.lambdify of sympy.diff, JAX, PyTorch and HIPS autograd.
Every implementation is an `Impl` whose `run()` computes the value and the
gradients; `result()` gives them as (value, [gradients]) for the correctness
check that precedes every timing.

Import benchmarks/_common.py (which pins threads) before this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from _common import (
    EXAMPLES,
    Row,
    assert_agrees,
    compile_or_skip,
    median_times,
    tool,
)


@dataclass
class Impl:
    """One way to compute a workload's value and gradients.

    `run` is what is timed (None: skipped, `note` says why); `normalize`
    turns its result into (value, [gradients]) for the correctness check;
    `forward` computes only the value (for the gradient/forward ratio) and
    `backward` only the gradients from a recorded tape (symgrad).
    """

    name: str
    run: Callable[[], Any] | None
    note: str = ""
    normalize: Callable[[Any], Any] = lambda result: result
    forward: Callable[[], Any] | None = None
    backward: Callable[[], Any] | None = None

    def result(self) -> Any:
        value, grads = self.normalize(self.run())
        return value, list(grads)


HAND_GRAD = "hand-written NumPy, gradients alone"


@dataclass
class Workload:
    name: str
    spec: Any
    inputs: dict[str, Any]
    wrt: tuple[str, ...]
    expression: Callable[..., Any]  # expression(ns, *inputs) with ns numpy/jnp/torch
    hand: Impl
    lambdify: Callable[[bool, str | None], Impl] | None = None
    target: str = "numpy"
    # the hand-written gradients alone (no value), for symgrad's `grad`
    hand_grad: Callable[..., Any] | None = None

    @property
    def args(self) -> tuple:
        return tuple(self.inputs.values())

    def symgrad(self) -> Impl:
        name = f"symgrad ({self.target} target)"
        module, why = compile_or_skip(self.spec, target=self.target)
        if module is None:
            return Impl(name, None, why)
        args = self.args
        tape = module.forward(*args)[1]
        return Impl(
            name,
            lambda: module.value_and_grad(*args),
            forward=lambda: module.forward(*args),
            backward=lambda: module.backward(tape),
        )

    def grads_alone(self) -> list[Impl]:
        """symgrad's `grad` and the hand-written gradients without the value (an
        empty list where the workload has no such hand code)."""
        if self.hand_grad is None:
            return []
        module, why = compile_or_skip(self.spec, target=self.target)
        args, alone = self.args, lambda grads: (0.0, grads)
        hand = Impl(HAND_GRAD, lambda: self.hand_grad(*args), normalize=alone)
        if module is None:
            return [Impl(f"symgrad ({self.target} target) grad", None, why), hand]
        ours = Impl(
            f"symgrad ({self.target} target) grad",
            lambda: module.grad(*args),
            normalize=alone,
        )
        return [ours, hand]

    def references(self, *, scalar: bool = False, traced: bool = False) -> list[Impl]:
        """lambdify (where the workload has one), JAX, PyTorch, HIPS autograd.

        With `traced`, JAX and PyTorch (invisible to tracemalloc) are listed
        as skipped without being imported.
        """
        impls = []
        if self.lambdify is not None:
            impls.append(self.lambdify(False, None))
            impls.append(self.lambdify(True, None))
            if scalar:
                impls.append(self.lambdify(True, "math"))
        if traced:
            why = "allocates outside tracemalloc's view"
            impls += [Impl(JAX, None, why), Impl(TORCH, None, why)]
        else:
            impls += [jax_impl(self), torch_impl(self, scalar)]
        return impls + [autograd_impl(self)]


def timed_rows(impls: list[Impl], quick: bool) -> list[Row]:
    """A table row per implementation: its median time (interleaved), or skipped."""
    runnable = {i.name: i.run for i in impls if i.run is not None}
    times = median_times(runnable, quick)
    return [Row(i.name, times.get(i.name), i.note) for i in impls]


def verify(impls: list[Impl], reference: Impl, rtol: float = 1e-7) -> None:
    """Assert that every runnable implementation agrees with `reference` before timing."""
    want = reference.result()
    for impl in impls:
        if impl.run is not None and impl is not reference:
            assert_agrees(impl.name, impl.result(), want, rtol=rtol)


# ------------------------------------------------------------------- toy model

TOY_SPEC = EXAMPLES / "udl_toy.yaml"
TOY_WRT = tuple(f"beta{i}" for i in range(5)) + tuple(f"omega{i}" for i in range(5))
# The point of the seed notebook (UDL "Gradients I"): y = 0.864 at x = 2.3.
TOY_POINT = {
    "x": 2.3,
    "beta0": 1.0,
    "beta1": 2.0,
    "beta2": -3.0,
    "beta3": 0.4,
    "beta4": -0.3,
    "omega0": 0.1,
    "omega1": -0.4,
    "omega2": 2.0,
    "omega3": 3.0,
    "omega4": -0.5,
}


def toy_expression(ns, x, beta0, beta1, beta2, beta3, beta4, *omegas):
    omega0, omega1, omega2, omega3, omega4 = omegas
    f1 = beta1 + omega1 * ns.sin(beta0 + omega0 * x)
    return beta4 + omega4 * ns.log(beta3 + omega3 * ns.cos(beta2 + omega2 * ns.exp(f1)))


def toy_math(
    x, beta0, beta1, beta2, beta3, beta4, omega0, omega1, omega2, omega3, omega4
):
    """Hand-written scalar backprop with `math`, as in the seed notebook."""
    f0 = beta0 + omega0 * x
    h1 = math.sin(f0)
    f1 = beta1 + omega1 * h1
    h2 = math.exp(f1)
    f2 = beta2 + omega2 * h2
    h3 = math.cos(f2)
    f3 = beta3 + omega3 * h3
    h4 = math.log(f3)
    y = beta4 + omega4 * h4
    dy_df3 = omega4 / f3
    dy_df2 = -omega3 * dy_df3 * math.sin(f2)
    dy_df1 = omega2 * dy_df2 * h2
    dy_df0 = omega1 * dy_df1 * math.cos(f0)
    return y, (
        dy_df0,
        dy_df1,
        dy_df2,
        dy_df3,
        1.0,
        dy_df0 * x,
        dy_df1 * h1,
        dy_df2 * h2,
        dy_df3 * h3,
        h4,
    )


def toy_math_forward(x, beta0, beta1, beta2, beta3, beta4, *omegas):
    omega0, omega1, omega2, omega3, omega4 = omegas
    h1 = math.sin(beta0 + omega0 * x)
    h2 = math.exp(beta1 + omega1 * h1)
    h3 = math.cos(beta2 + omega2 * h2)
    h4 = math.log(beta3 + omega3 * h3)
    return beta4 + omega4 * h4


def toy_numpy(
    x, beta0, beta1, beta2, beta3, beta4, omega0, omega1, omega2, omega3, omega4
):
    """Hand-written NumPy backprop of one point or a batch of x (gradients of sum(y))."""
    f0 = beta0 + omega0 * x
    h1 = np.sin(f0)
    f1 = beta1 + omega1 * h1
    h2 = np.exp(f1)
    f2 = beta2 + omega2 * h2
    h3 = np.cos(f2)
    f3 = beta3 + omega3 * h3
    h4 = np.log(f3)
    y = beta4 + omega4 * h4
    dy_df3 = omega4 / f3
    dy_df2 = -omega3 * dy_df3 * np.sin(f2)
    dy_df1 = omega2 * dy_df2 * h2
    dy_df0 = omega1 * dy_df1 * np.cos(f0)
    if np.ndim(y) == 0:
        return y, (
            dy_df0,
            dy_df1,
            dy_df2,
            dy_df3,
            1.0,
            dy_df0 * x,
            dy_df1 * h1,
            dy_df2 * h2,
            dy_df3 * h3,
            h4,
        )
    return y, (
        np.sum(dy_df0),
        np.sum(dy_df1),
        np.sum(dy_df2),
        np.sum(dy_df3),
        float(y.size),
        np.sum(dy_df0 * x),
        np.sum(dy_df1 * h1),
        np.sum(dy_df2 * h2),
        np.sum(dy_df3 * h3),
        np.sum(h4),
    )


def toy_numpy_forward(x, beta0, beta1, beta2, beta3, beta4, *omegas):
    return toy_expression(np, x, beta0, beta1, beta2, beta3, beta4, *omegas)


def toy_scalar(target: str) -> Workload:
    """The seed-004 toy model at the notebook's point, one scalar call."""
    args = tuple(TOY_POINT.values())
    if target == "python":
        hand = Impl(
            "hand-written math",
            lambda: toy_math(*args),
            forward=lambda: toy_math_forward(*args),
        )
    else:
        hand = Impl(
            "hand-written NumPy",
            lambda: toy_numpy(*args),
            forward=lambda: toy_numpy_forward(*args),
        )
    return Workload(
        "toy model (seed 004), scalar",
        TOY_SPEC,
        dict(TOY_POINT),
        TOY_WRT,
        toy_expression,
        hand,
        lambdify=lambda cse, modules: _toy_lambdify(args, cse, modules, batch=False),
        target=target,
    )


def toy_batch(n: int) -> Workload:
    """The toy model over a batch of n values of x (parameters scalar)."""
    inputs = dict(TOY_POINT)
    inputs["x"] = np.random.default_rng(0).uniform(0.0, 5.0, n)  # log's argument > 0
    args = tuple(inputs.values())
    hand = Impl(
        "hand-written NumPy",
        lambda: toy_numpy(*args),
        forward=lambda: toy_numpy_forward(*args),
    )
    return Workload(
        f"toy model, batch of {n:.0e}",
        TOY_SPEC,
        inputs,
        TOY_WRT,
        toy_expression,
        hand,
        lambdify=lambda cse, modules: _toy_lambdify(args, cse, modules, batch=True),
    )


@cache
def _toy_lambdified(cse: bool, modules: str | None) -> Callable:
    symbols = sp.symbols(list(TOY_POINT), real=True)
    expr = toy_expression(sp, *symbols)
    wrt = [symbols[list(TOY_POINT).index(w)] for w in TOY_WRT]
    grads = [sp.diff(expr, w) for w in wrt]
    return sp.lambdify(symbols, [expr, *grads], modules=modules, cse=cse)


def _toy_lambdify(args, cse: bool, modules: str | None, batch: bool) -> Impl:
    fn = _toy_lambdified(cse, modules)
    name = _lambdify_name(cse, modules)
    if not batch:
        return Impl(name, lambda: fn(*args), normalize=lambda r: (r[0], r[1:]))
    n = args[0].size

    def run():
        value, *grads = fn(*args)
        return value, [np.sum(g) if np.ndim(g) else g * n for g in grads]

    return Impl(name, run)


def _lambdify_name(cse: bool, modules: str | None) -> str:
    options = ", ".join(
        [f"modules={modules!r}"] * (modules is not None) + ["cse=True"] * cse
    )
    return f"sympy.lambdify(diff{', ' + options if options else ''})"


# --------------------------------------------------------- logistic regression

LOGREG_SPEC = EXAMPLES / "logistic_regression_batch.yaml"


def logreg_expression(ns, X, y, w, b):
    a = 1 / (1 + ns.exp(-(X @ w + b)))
    return ns.sum(-y * ns.log(a) - (1 - y) * ns.log(1 - a))


def logreg_numpy(X, y, w, b):
    """Hand-written NumPy: the BCE of a logistic unit, dL/dz = a - y."""
    a = 1 / (1 + np.exp(-(X @ w + b)))
    L = np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a))
    dz = a - y
    return L, (X.T @ dz, np.sum(dz))


def logreg_numpy_grad(X, y, w, b):
    """The hand-written gradients alone: no loss."""
    dz = 1 / (1 + np.exp(-(X @ w + b))) - y
    return X.T @ dz, np.sum(dz)


def logreg_numpy_forward(X, y, w, b):
    return logreg_expression(np, X, y, w, b)


def logistic_regression(n: int, d: int) -> Workload:
    """Issue 5's logistic regression: n samples x d features, sum of cross-entropies."""
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=d)
    X = rng.normal(size=(n, d)) / math.sqrt(d)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ w_true)))).astype(float)
    inputs = {"X": X, "y": y, "w": rng.normal(size=d) * 0.5, "b": 0.1}
    args = tuple(inputs.values())
    hand = Impl(
        "hand-written NumPy",
        lambda: logreg_numpy(*args),
        forward=lambda: logreg_numpy_forward(*args),
    )
    return Workload(
        f"logistic regression {n:.0e} x {d}"
        if n >= 10_000
        else f"logistic regression {n} x {d}",
        LOGREG_SPEC,
        inputs,
        ("w", "b"),
        logreg_expression,
        hand,
        lambdify=lambda cse, modules: _logreg_lambdify(inputs, cse),
        hand_grad=logreg_numpy_grad,
    )


@cache
def _logreg_lambdified(d: int, cse: bool) -> Callable:
    """lambdify of one sample's loss and its gradient over d feature symbols."""
    # Not x0, x1, ...: SymPy 1.12's lambdify(cse=True) names its temporaries so,
    # overwriting the arguments of the same names (wrong gradients).
    xs, ws = sp.symbols(f"X0:{d}", real=True), sp.symbols(f"w0:{d}", real=True)
    ys, bs = sp.symbols("y b", real=True)
    z = sum(xi * wi for xi, wi in zip(xs, ws, strict=True)) + bs
    a = 1 / (1 + sp.exp(-z))
    loss = -ys * sp.log(a) - (1 - ys) * sp.log(1 - a)
    grads = [sp.diff(loss, v) for v in (*ws, bs)]
    return sp.lambdify((*xs, ys, *ws, bs), [loss, *grads], cse=cse)


def _logreg_lambdify(inputs: dict[str, Any], cse: bool) -> Impl:
    """The lambdified per-sample loss applied to the columns of X, then summed."""
    X, y, w, b = inputs.values()
    d = X.shape[1]
    fn = _logreg_lambdified(d, cse)
    columns = tuple(np.ascontiguousarray(X.T))  # prepared once, like the data

    def run():
        loss_i, *grads_i = fn(*columns, y, *w, b)
        sums = [np.sum(g) for g in grads_i]
        return np.sum(loss_i), (np.array(sums[:d]), sums[d])

    return Impl(_lambdify_name(cse, None) + " per feature", run)


# ------------------------------------------------------------------------- MLP

MLP_SPEC = EXAMPLES / "mlp.yaml"


def mlp_expression(ns, X, Y, W1, b1, W2, b2):
    hidden = ns.tanh(X @ W1 + b1)
    return ns.mean((hidden @ W2 + b2 - Y) ** 2)


def mlp_numpy(X, Y, W1, b1, W2, b2):
    """Hand-written NumPy backprop of a tanh MLP with a mean squared error."""
    hidden = np.tanh(X @ W1 + b1)
    error = hidden @ W2 + b2 - Y
    L = np.mean(error**2)
    d_out = (2 / error.size) * error
    d_pre = (d_out @ W2.T) * (1 - hidden**2)
    return L, (
        X.T @ d_pre,
        np.sum(d_pre, axis=0),
        hidden.T @ d_out,
        np.sum(d_out, axis=0),
    )


def mlp_numpy_grad(X, Y, W1, b1, W2, b2):
    """The hand-written gradients alone: no mean of the squared error."""
    hidden = np.tanh(X @ W1 + b1)
    error = hidden @ W2 + b2 - Y
    d_out = (2 / error.size) * error
    d_pre = (d_out @ W2.T) * (1 - hidden**2)
    return X.T @ d_pre, np.sum(d_pre, axis=0), hidden.T @ d_out, np.sum(d_out, axis=0)


def mlp_numpy_forward(X, Y, W1, b1, W2, b2):
    return mlp_expression(np, X, Y, W1, b1, W2, b2)


def mlp(n: int, d_in: int, d_hidden: int, d_out: int) -> Workload:
    """Issue 5's 2-layer MLP n x d_in -> d_hidden (tanh) -> d_out, mean squared error."""
    rng = np.random.default_rng(2)
    inputs = {
        "X": rng.normal(size=(n, d_in)),
        "Y": rng.normal(size=(n, d_out)),
        "W1": rng.normal(size=(d_in, d_hidden)) / math.sqrt(d_in),
        "b1": rng.normal(size=d_hidden) * 0.1,
        "W2": rng.normal(size=(d_hidden, d_out)) / math.sqrt(d_hidden),
        "b2": rng.normal(size=d_out) * 0.1,
    }
    args = tuple(inputs.values())
    hand = Impl(
        "hand-written NumPy",
        lambda: mlp_numpy(*args),
        forward=lambda: mlp_numpy_forward(*args),
    )
    return Workload(
        f"MLP {n}x{d_in} -> {d_hidden} -> {d_out}",
        MLP_SPEC,
        inputs,
        ("W1", "b1", "W2", "b2"),
        mlp_expression,
        hand,
        hand_grad=mlp_numpy_grad,
    )


def batched_workloads(quick: bool) -> list[Workload]:
    """The three batched workloads of issue 5 (tiny sizes for --quick)."""
    if quick:
        return [toy_batch(1000), logistic_regression(1000, 10), mlp(64, 8, 16, 4)]
    return [
        toy_batch(1_000_000),
        logistic_regression(1_000_000, 10),
        mlp(4096, 64, 128, 10),
    ]


# ---------------------------------------------------------- JAX, PyTorch, autograd


JAX = "jax.jit(value_and_grad), CPU"
TORCH = "torch autograd"


def jax_impl(workload: Workload) -> Impl:
    name = JAX
    jax, why = tool("jax")
    if jax is None:
        return Impl(name, None, why)
    jnp = jax.numpy
    names = list(workload.inputs)
    argnums = tuple(names.index(w) for w in workload.wrt)

    def objective(*args):
        out = workload.expression(jnp, *args)
        return jnp.sum(out), out

    value_and_grad = jax.jit(
        jax.value_and_grad(objective, argnums=argnums, has_aux=True)
    )
    forward = jax.jit(lambda *args: workload.expression(jnp, *args))
    args = [jnp.asarray(v) if isinstance(v, np.ndarray) else v for v in workload.args]
    return Impl(
        name,
        lambda: jax.block_until_ready(value_and_grad(*args)),
        normalize=lambda r: (r[0][1], r[1]),
        forward=lambda: jax.block_until_ready(forward(*args)),
    )


def torch_impl(workload: Workload, scalar: bool) -> Impl:
    """PyTorch autograd; scalar inputs become tensors in each call (floats in, floats out)."""
    name = TORCH
    torch, why = tool("torch")
    if torch is None:
        return Impl(name, None, why)
    names = list(workload.inputs)
    positions = [names.index(w) for w in workload.wrt]

    def tensor(value, requires_grad):
        return torch.tensor(value, dtype=torch.float64, requires_grad=requires_grad)

    if scalar:

        def run():
            args = [tensor(v, i in positions) for i, v in enumerate(workload.args)]
            out = workload.expression(torch, *args)
            grads = torch.autograd.grad(out, [args[i] for i in positions])
            return out.item(), [g.item() for g in grads]

        def forward():
            args = [tensor(v, False) for v in workload.args]
            return workload.expression(torch, *args).item()

        return Impl(name, run, forward=forward)

    # Batches: the tensors are made once, like the parameters of a training loop.
    args = [
        torch.from_numpy(v) if isinstance(v, np.ndarray) else tensor(v, False)
        for v in workload.args
    ]
    for i in positions:
        args[i] = args[i].detach().clone().requires_grad_(True)

    def run_batch():
        out = workload.expression(torch, *args)
        grads = torch.autograd.grad(out.sum(), [args[i] for i in positions])
        return out, grads

    def forward_batch():
        with torch.no_grad():
            return workload.expression(torch, *args)

    return Impl(name, run_batch, forward=forward_batch)


def autograd_impl(workload: Workload) -> Impl:
    name = "HIPS autograd"
    autograd, why = tool("autograd")
    if autograd is None:
        return Impl(name, None, why)
    import autograd.numpy as anp

    names = list(workload.inputs)
    argnum = tuple(names.index(w) for w in workload.wrt)
    vjp_maker = autograd.make_vjp(
        lambda *args: workload.expression(anp, *args), argnum=argnum
    )
    args = workload.args

    def run():
        vjp, out = vjp_maker(*args)
        return out, vjp(anp.ones_like(out))

    return Impl(name, run, forward=lambda: workload.expression(anp, *args))
