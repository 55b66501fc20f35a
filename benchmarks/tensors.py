"""Tensor models: symgrad's generated backward pass against hand-written NumPy backprop.

Issue 12's goal: the examples' gradients equal a hand-written NumPy backprop
to 1e-10 and run within 1.1× of it. Each workload is a spec of examples/
compiled in memory; symgrad's `forward` + `backward(tape, dy)` (a
vector-Jacobian product for an array output) is timed against the same
computation written by hand, after the two are compared to 1e-10.

* attention: softmax(Q K^T / 8) V over [batch 32, heads 8, tokens 128, d 64]

    python benchmarks/tensors.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import numpy as np

SYMGRAD = "symgrad forward + backward"
HAND = "hand-written NumPy"
VAG = "symgrad value_and_grad (dy = 1)"
HAND_ONES = "hand-written NumPy (dy = 1)"


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


def attention(quick: bool) -> tuple[str, dict, callable, tuple]:
    b, h, n, d = (2, 2, 8, 64) if quick else (32, 8, 128, 64)
    rng = np.random.default_rng(0)
    args = {k: rng.normal(size=(b, h, n, d)) for k in "QKV"}
    dy = rng.normal(size=(b, h, n, d))
    return f"attention [{b}, {h}, {n}, {d}]", args, attention_hand, (dy,)


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Tensor models: symgrad vs hand-written NumPy backprop", args.quick)
    targets = c.Targets(issue=12)
    for spec, workload in (("attention", attention),):
        name, inputs, hand, extra = workload(args.quick)
        module = c.symgrad.compile(c.EXAMPLES / f"{spec}.yaml")
        dy = extra[0]

        def ours(module=module, inputs=inputs, dy=dy):
            value, tape = module.forward(**inputs)
            return value, module.backward(tape, dy)

        def reference(hand=hand, inputs=inputs, extra=extra):
            return hand(**inputs, dy=extra[0])

        c.assert_agrees(name, ours(), reference(), rtol=1e-10, atol=1e-12)
        ones = np.ones_like(dy)
        both = {
            SYMGRAD: ours,
            HAND: reference,
            # dy = 1: value_and_grad frees each temporary once it is used
            VAG: lambda module=module, inputs=inputs: module.value_and_grad(**inputs),
            HAND_ONES: lambda hand=hand, inputs=inputs, ones=ones: hand(
                **inputs, dy=ones
            ),
        }
        c.assert_agrees(name, both[VAG](), both[HAND_ONES](), rtol=1e-10, atol=1e-12)
        times = c.median_times(both, args.quick)
        rows = [c.Row(k, v) for k, v in times.items()]
        c.ratio_table(name, rows, [HAND, HAND_ONES])
        for ours_, theirs in ((SYMGRAD, HAND), (VAG, HAND_ONES)):
            targets.check(
                f"{name}: {ours_} ÷ {theirs}", times[ours_] / times[theirs], 1.1
            )
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
