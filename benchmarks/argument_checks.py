"""Argument checks: what `_arrays` costs a small call (lists made arrays, shapes checked).

`forward` and `value_and_grad` of a numpy-target module pass their arguments
through `_arrays`, which makes lists and tuples arrays and, in a tensor module,
checks their shapes against the spec's; `CHECK_ARGUMENTS = False` skips it.
Issue 10's target: on small tensor calls, value_and_grad with the check costs
at most 1.05x the same module without it. The toy model at one point (a scalar
module: the list conversion alone, on eleven arguments) and hand-written NumPy
(no checks at all) are shown for context.

    python benchmarks/argument_checks.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w

import symgrad

ON, OFF = "symgrad, CHECK_ARGUMENTS = True", "symgrad, CHECK_ARGUMENTS = False"


def checked(workload: w.Workload, check: bool) -> w.Impl:
    """symgrad's value_and_grad of `workload`, in a module with CHECK_ARGUMENTS = check."""
    module = symgrad.compile(workload.spec)
    module.CHECK_ARGUMENTS = check
    args = workload.args
    return w.Impl(ON if check else OFF, lambda: module.value_and_grad(*args))


def on_over_off(workload: w.Workload, quick: bool) -> float | None:
    """Print the workload's table; return value_and_grad's time with ÷ without the check."""
    impls = [checked(workload, True), checked(workload, False), workload.hand]
    w.verify(impls, impls[0])
    rows = w.timed_rows(impls, quick)
    table = c.ratio_table(workload.name, rows, [OFF, "hand-written NumPy"])
    return c.ratio(table[ON].value, table[OFF].value)


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Argument checks: value_and_grad on small calls", args.quick)
    targets = c.Targets(issue=10)
    for workload in [
        w.logistic_regression(32, 4),
        w.logistic_regression(256, 10),
        w.mlp(32, 8, 16, 4),
        w.mlp(128, 16, 32, 4),
    ]:
        ratio = on_over_off(workload, args.quick)
        targets.check(f"{workload.name}: with the check ÷ without", ratio, 1.05)
    on_over_off(w.toy_scalar("numpy"), args.quick)  # context: no target
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
