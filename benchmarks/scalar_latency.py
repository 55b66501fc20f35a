"""Scalar-call latency: value and gradient of the toy model at one point.

Issue 5's target: the python target's value_and_grad costs at most 1.1x the
hand-written `math` backprop. The numpy target is shown against hand-written
NumPy on the same Python floats, and both against sympy.lambdify of sympy.diff
(with and without cse=True), JAX, PyTorch and HIPS autograd when installed.

    python benchmarks/scalar_latency.py [--quick]
"""

from __future__ import annotations

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header(
        "Scalar-call latency: toy model (seed 004), value + 10 gradients", args.quick
    )
    python = w.toy_scalar("python")
    numpy = w.toy_scalar("numpy")
    impls = [
        python.symgrad(),
        python.hand,
        numpy.symgrad(),
        numpy.hand,
        *numpy.references(scalar=True),
    ]
    reference = next((i for i in impls if i.run is not None), python.hand)
    w.verify(impls, reference)
    rows = w.timed_rows(impls, args.quick)
    table = c.ratio_table(
        "value_and_grad, one call with Python floats",
        rows,
        ["hand-written math", "hand-written NumPy"],
    )
    targets = c.Targets()
    targets.check(
        "python target, scalar value+gradient ÷ hand-written math",
        c.ratio(table[rows[0].name].value, table["hand-written math"].value),
        1.1,
    )
    targets.check(
        "numpy target, scalar value+gradient ÷ hand-written NumPy (context)",
        c.ratio(table[rows[2].name].value, table["hand-written NumPy"].value),
        1.1,
    )
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
