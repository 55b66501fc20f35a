"""Gradient/forward cost ratio: what value_and_grad costs in units of one forward pass.

Reverse mode's cheap-gradient bound says the gradient costs a small constant
times the function; issue 5's target is value_and_grad / forward <= 3 on every
workload. symgrad's forward is the generated `forward` (it also records the
tape); the ratio against the hand-written forward (the value alone) is shown
beside it, and so is each reference's own ratio.

    python benchmarks/grad_forward_ratio.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Gradient / forward cost ratio", args.quick)
    targets = c.Targets()
    workloads = [w.toy_scalar("python"), w.toy_scalar("numpy")]
    workloads += w.batched_workloads(args.quick)
    for workload in workloads:
        ours = workload.symgrad()
        scalar = "scalar" in workload.name
        impls = [ours, workload.hand]
        if workload.target == "numpy":
            impls += [i for i in workload.references(scalar=scalar) if i.forward]
        w.verify(impls, ours if ours.run is not None else workload.hand)
        fns = {}
        for impl in impls:
            if impl.run is not None and impl.forward is not None:
                fns[(impl.name, "forward")] = impl.forward
                fns[(impl.name, "both")] = impl.run
            if impl.backward is not None:
                fns[(impl.name, "backward")] = impl.backward
        times = c.median_times(fns, args.quick)
        hand_forward = times[(workload.hand.name, "forward")]
        cells = []
        if ours.run is None:
            targets.check(f"{workload.name}: value_and_grad ÷ forward", None, 3)
        for impl in impls:
            if (impl.name, "forward") not in times:
                cells.append([impl.name, "skipped", "", "", "", impl.note])
                continue
            forward, both = times[(impl.name, "forward")], times[(impl.name, "both")]
            cells.append(
                [
                    impl.name,
                    c.format_seconds(forward),
                    c.format_seconds(both),
                    c.format_ratio(both / forward),
                    c.format_ratio(both / hand_forward),
                    impl.note,
                ]
            )
            if impl is ours:
                targets.check(
                    f"{workload.name}, {ours.name}: value_and_grad ÷ forward",
                    both / forward,
                    3,
                )
                both = forward + times[(impl.name, "backward")]
                cells.append(
                    [
                        "  symgrad forward + backward(tape)",
                        c.format_seconds(forward),
                        c.format_seconds(both),
                        c.format_ratio(both / forward),
                        c.format_ratio(both / hand_forward),
                        "",
                    ]
                )
        title = workload.name + (f" ({workload.target} target)" if scalar else "")
        c.print_table(
            title,
            [
                "implementation",
                "forward",
                "value_and_grad",
                "÷ own forward",
                "÷ hand-written forward",
                "note",
            ],
            cells,
        )
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
