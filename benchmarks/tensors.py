"""Tensor models: symgrad's generated gradients against hand-written NumPy backprop.

Issue 12's goal: the examples' gradients equal a hand-written NumPy backprop
to 1e-10 and run within 1.1× of it. Each workload is a spec of examples/
compiled in memory, compared with the same computation written by hand
(to 1e-10) before both are timed:

* attention: softmax(Q K^T / 8) V over [batch 32, heads 8, tokens 128, d 64];
  an array output, so the vector-Jacobian product with an upstream gradient
  dy: symgrad's value_and_grad(Q, K, V, dy) against the hand-written one, and
  with dy = 1 too. forward + backward(tape, dy) is shown beside them: the
  teaching form (one operation per line, every adjoint kept for explain and
  the exercises), with no target of its own;
* gaussian_nll: the Gaussian negative log-likelihood of 512 samples of
  dimension 64 through a Cholesky factor; value_and_grad against the textbook
  gradient (solves with Sigma), forward + backward(tape) shown beside it.

    python benchmarks/tensors.py [--quick]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import _common as c  # first: pins threads before NumPy is imported
import numpy as np


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_hand(Q, K, V, dy):  # noqa: N803
    """softmax(Q K^T / sqrt(d)) V and its vector-Jacobian product, by hand."""
    scale = 1 / np.sqrt(Q.shape[-1])
    P = _softmax(Q @ np.swapaxes(K, -1, -2) * scale)  # noqa: N806
    out = P @ V
    dP = dy @ np.swapaxes(V, -1, -2)  # noqa: N806
    dV = np.swapaxes(P, -1, -2) @ dy  # noqa: N806
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True)) * scale  # noqa: N806
    return out, (dS @ K, np.swapaxes(dS, -1, -2) @ Q, dV)


def gaussian_nll_hand(X, mu, A, s):  # noqa: N803
    """The mean Gaussian NLL and its gradient: ∂/∂Σ = ½Σ⁻¹ - ½Σ⁻¹SΣ⁻¹, by hand."""
    n, d = X.shape
    Sigma = A @ A.T + np.diag(np.exp(s))  # noqa: N806
    L = np.linalg.cholesky(Sigma)  # noqa: N806
    D = X - mu  # noqa: N806
    Z = np.linalg.solve(L, D.T)  # noqa: N806
    nll = (
        np.sum(Z * Z) / (2 * n) + np.sum(np.log(np.diag(L))) + d / 2 * np.log(2 * np.pi)
    )
    inverse_d = np.linalg.solve(L.T, Z)  # Σ⁻¹ Dᵀ
    inverse = np.linalg.solve(L.T, np.linalg.solve(L, np.eye(d)))  # Σ⁻¹
    G = (inverse - inverse_d @ inverse_d.T / n) / 2  # noqa: N806
    return nll, (-inverse_d.mean(axis=1), 2 * G @ A, np.diag(G) * np.exp(s))


class Case(NamedTuple):
    name: str
    rows: dict[str, Callable]  # implementation -> call
    pairs: list[tuple[str, str]]  # (symgrad's, the hand-written reference)
    shown: list[str] = []  # compared with the first reference, with no target


def attention(quick: bool) -> Case:
    b, h, n, d = (2, 2, 8, 64) if quick else (32, 8, 128, 64)
    rng = np.random.default_rng(0)
    inputs = {k: rng.normal(size=(b, h, n, d)) for k in "QKV"}
    dy, ones = rng.normal(size=(b, h, n, d)), np.ones((b, h, n, d))
    module = c.symgrad.compile(c.EXAMPLES / "attention.yaml")

    def vjp():
        value, tape = module.forward(**inputs)
        return value, module.backward(tape, dy)

    rows = {
        # value_and_grad frees each array after its last use, and writes into
        # one no longer needed
        "symgrad value_and_grad(dy)": lambda: module.value_and_grad(**inputs, dy=dy),
        "hand-written NumPy": lambda: attention_hand(**inputs, dy=dy),
        "symgrad value_and_grad (dy = 1)": lambda: module.value_and_grad(**inputs),
        "hand-written NumPy (dy = 1)": lambda: attention_hand(**inputs, dy=ones),
        "symgrad forward + backward(tape, dy)": vjp,
    }
    names = list(rows)
    return Case(
        f"attention [{b}, {h}, {n}, {d}]", rows, [names[:2], names[2:4]], [names[4]]
    )


def gaussian_nll(quick: bool) -> Case:
    n, d = (16, 64) if quick else (512, 64)
    rng = np.random.default_rng(1)
    inputs = {"X": rng.normal(size=(n, d)), "mu": rng.normal(size=d) / 4,
              "A": rng.normal(size=(d, d)) / np.sqrt(d), "s": rng.normal(size=d) / 4}  # fmt: skip
    module = c.symgrad.compile(c.EXAMPLES / "gaussian_nll.yaml")

    def vjp():
        value, tape = module.forward(**inputs)
        return value, module.backward(tape)

    rows = {
        "symgrad value_and_grad": lambda: module.value_and_grad(**inputs),
        "hand-written NumPy": lambda: gaussian_nll_hand(**inputs),
        "symgrad forward + backward": vjp,
    }
    names = list(rows)
    return Case(f"gaussian_nll [{n}, {d}]", rows, [names[:2]], [names[2]])


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Tensor models: symgrad vs hand-written NumPy backprop", args.quick)
    targets = c.Targets(issue=12)
    for case in (attention(args.quick), gaussian_nll(args.quick)):
        for ours, theirs in case.pairs + [(k, case.pairs[0][1]) for k in case.shown]:
            got, want = case.rows[ours](), case.rows[theirs]()
            c.assert_agrees(case.name, got, want, rtol=1e-10, atol=1e-12)
        times = c.median_times(case.rows, args.quick)
        references = list(dict.fromkeys(theirs for _, theirs in case.pairs))
        c.ratio_table(case.name, [c.Row(k, v) for k, v in times.items()], references)
        for ours, theirs in case.pairs:
            ratio = times[ours] / times[theirs]
            targets.check(f"{case.name}: {ours} ÷ {theirs}", ratio, 1.1)
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
