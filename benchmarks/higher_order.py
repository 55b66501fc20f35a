"""Second derivatives and forward mode: what hvp and jvp cost against the gradient.

Issue 13's goals: hvp (H·v by forward over reverse) ≤ 4 × value_and_grad,
and jvp (forward mode) ≤ 2 × forward, on the toy model over a batch and on
logistic regression (1e6 × 10; tiny sizes with --quick). Every time is
symgrad's own generated function, measured in the same run; the hand-written
NumPy forward is shown for scale. Before timing, jvp is compared with
central differences of forward along the direction, and hvp with central
differences of the gradient. Last, compile time with hvp on the k-layer chain
of benchmarks/compile_time.py (goal: k = 1024 in < 15 s, linear in k), with
SymPy's cache cleared before each compile.

    python benchmarks/higher_order.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w
import numpy as np
from compile_time import chain_spec, symgrad_compile

FORWARD = "symgrad forward"
GRADIENT = "symgrad value_and_grad"
STEP = 1e-5  # of the central differences that check jvp and hvp


def workloads(quick: bool) -> list[w.Workload]:
    if quick:
        return [w.toy_batch(1000), w.logistic_regression(1000, 10)]
    return [w.toy_batch(1_000_000), w.logistic_regression(1_000_000, 10)]


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Higher order: hvp ÷ gradient and jvp ÷ forward", args.quick)
    targets = c.Targets(issue=13)
    for workload in workloads(args.quick):
        module, why = c.compile_or_skip(workload.spec, derivatives=["jvp", "hvp"])
        if module is None:
            print(f"{workload.name}: {why}\n")
            continue
        rng = np.random.default_rng(2)
        v = [rng.normal(size=np.shape(workload.inputs[n])) for n in workload.wrt]
        _verify(module, workload, v)
        times = _times(module, workload, v, args.quick)
        rows = [c.Row(name, seconds) for name, seconds in times.items()]
        c.ratio_table(workload.name, rows, [FORWARD, GRADIENT])
        jvp, hvp = times["symgrad jvp"] / times[FORWARD], times["symgrad hvp"]
        targets.check(f"{workload.name}: jvp ÷ forward", jvp, 2)
        targets.check(
            f"{workload.name}: hvp ÷ value_and_grad", hvp / times[GRADIENT], 4
        )
    ks = [8, 16, 32] if args.quick else [256, 512, 1024]
    compiled = _compile_times(ks)
    targets.check(
        "chain k = 1024: symgrad.compile with hvp", compiled.get(1024), 15, " s"
    )
    targets.print()
    return 0


def _compile_times(ks: list[int]) -> dict[int, float]:
    """symgrad.compile of the k-layer chain with and without hvp, as a table."""
    symgrad_compile(chain_spec(2), derivatives=["hvp"])  # warm imports and templates
    times, cells = {}, []
    for k in ks:
        plain, _ = symgrad_compile(chain_spec(k))
        times[k], _ = symgrad_compile(chain_spec(k), derivatives=["hvp"])
        growth = f"{np.log2(times[k] / times[k // 2]):.2f}" if k // 2 in times else "–"
        cells.append([k, c.format_seconds(plain), c.format_seconds(times[k]), growth])
    c.print_table(
        "k-layer chain: compile time with hvp",
        ["k", "symgrad.compile", "with hvp", "growth exponent (with hvp)"],
        cells,
    )
    return times


def _times(module, workload: w.Workload, v: list, quick: bool) -> dict[str, float]:
    inputs = workload.args
    return c.median_times(
        {
            "hand-written NumPy forward": workload.hand.forward,
            FORWARD: lambda: module.forward(*inputs),
            "symgrad jvp": lambda: module.jvp(*inputs, *v),
            GRADIENT: lambda: module.value_and_grad(*inputs),
            "symgrad hvp": lambda: module.hvp(*inputs, *v),
        },
        quick,
    )


def _verify(module, workload: w.Workload, v: list) -> None:
    """jvp and hvp against central differences along v (of forward and of grad)."""

    def moved(t: float) -> list:
        step = dict(zip(workload.wrt, v, strict=True))
        return [x + t * step[n] if n in step else x for n, x in workload.inputs.items()]

    inputs = moved(0.0)
    _, tangent = module.jvp(*inputs, *v)
    up, down = module.forward(*moved(STEP))[0], module.forward(*moved(-STEP))[0]
    difference = np.sum(up - down) / (2 * STEP)  # of the summed output
    c.assert_agrees("jvp", np.sum(tangent), difference, rtol=1e-5)
    product = module.hvp(*inputs, *v)
    up, down = module.grad(*moved(STEP)), module.grad(*moved(-STEP))
    differences = [(u - d) / (2 * STEP) for u, d in zip(up, down, strict=True)]
    c.assert_agrees("hvp", list(product), differences, rtol=1e-5)


if __name__ == "__main__":
    raise SystemExit(main())
