"""Batched throughput: value and gradient over a batch, numpy target vs the alternatives.

Workloads of issue 5: the toy model on a batch of 1e6 (parameters scalar, the
gradient of the summed output), logistic regression 1e6 x 10 and a 2-layer
MLP 4096x64 -> 128 -> 10. Target: symgrad's numpy target at most 1.1x the
hand-written NumPy backprop on every workload. A second table per workload
times `grad` alone against the hand-written gradients without the value
(issue 15: grad computes only what the gradients read). A workload whose spec symgrad
cannot compile yet (tensors) is reported as skipped; its references still run.

    python benchmarks/batched_throughput.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Batched throughput: value_and_grad over a batch", args.quick)
    targets = c.Targets()
    for workload in w.batched_workloads(args.quick):
        ours = workload.symgrad()
        impls = [ours, workload.hand, *workload.references()]
        w.verify(impls, ours if ours.run is not None else workload.hand)
        rows = w.timed_rows(impls, args.quick)
        table = c.ratio_table(workload.name, rows, ["hand-written NumPy"])
        targets.check(
            f"{workload.name}: numpy target ÷ hand-written NumPy",
            c.ratio(table[ours.name].value, table["hand-written NumPy"].value),
            1.1,
        )
        alone = workload.grads_alone()
        if alone:
            w.verify(alone, alone[1])
            c.ratio_table(
                f"{workload.name}, grad alone",
                w.timed_rows(alone, args.quick),
                [w.HAND_GRAD],
            )
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
