"""Peak memory of a batched gradient, numpy target vs hand-written NumPy.

Measured with tracemalloc, which sees NumPy's array buffers: the peak bytes
allocated during one call beyond what was allocated before it (inputs are
not counted; the returned value and gradients are). Issue 5's target: the
numpy target's peak no higher than the hand-written NumPy backprop. JAX and
PyTorch allocate outside Python's allocator and are not measurable this way.

    python benchmarks/peak_memory.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header(
        "Peak memory (tracemalloc) of value_and_grad over a batch", args.quick
    )
    targets = c.Targets()
    for workload in w.batched_workloads(args.quick):
        ours = workload.symgrad()
        impls = [ours, workload.hand, *workload.references(traced=True)]
        w.verify(impls, ours if ours.run is not None else workload.hand)
        rows = []
        for impl in impls:
            if impl.run is None:
                rows.append(c.Row(impl.name, None, impl.note))
                continue
            rows.append(c.Row(impl.name, c.peak_memory(impl.run)))
            if impl is ours:
                forward = c.peak_memory(impl.forward)
                rows.append(c.Row("  symgrad forward (the tape)", forward))
        table = c.ratio_table(
            workload.name, rows, ["hand-written NumPy"], unit="peak memory"
        )
        targets.check(
            f"{workload.name}: numpy target peak ÷ hand-written NumPy",
            c.ratio(table[ours.name].value, table["hand-written NumPy"].value),
            1.0,
        )
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
