"""A learner's own numbers: `expect:` values marked, and the labs' step sweep drawn.

A spec's `expect:` block holds values a student computed by hand at the
spec's `at:` point: step values (`f0: 1.230`), adjoints (`dy_dh3: -0.632` or
the notebook's `dydh3`) and gradients (`dy_dbeta0`). `mark` compares each with
what symgrad computes there, at the precision the student wrote: 1.230 is
right when the true value is within 0.0005 of it (each entry of a list alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symgrad.check import Difference
from symgrad.frontend.spec import Expected
from symgrad.pipeline import Compiled
from symgrad.teach.explain import explain

SLACK = 1e-9
"""Relative slack on half a unit of the last digit, for the binary rounding of a
decimal (a true 1.2305 is right written 1.230 or 1.231)."""


@dataclass(frozen=True)
class Mark:
    """One expected value, the true one, and whether they agree at the precision written."""

    expected: Expected
    true: Any
    right: bool

    def line(self) -> str:
        e = self.expected
        if self.right:
            verdict = "right"
        elif np.shape(self.true) != np.shape(e.value):
            verdict = (
                f"WRONG: the true value has shape {list(np.shape(self.true))}, not "
                f"{list(np.shape(e.value))}: {_full(self.true)}"
            )
        else:
            verdict = (
                f"WRONG: the true value is {_rounded(self.true, e.tolerance)} "
                f"({_full(self.true)})"
            )
        return f"{e.name} = {e.text}: {verdict}"


def mark(compiled: Compiled) -> list[Mark]:
    """Each `expect:` value of the spec against symgrad's at the spec's `at:` point."""
    spec = compiled.spec
    if not spec.expect:
        return []
    e = explain(compiled, spec.point, level="steps", swell=False)
    marks = []
    for x in spec.expect:
        if x.kind == "value":
            true = e.value(x.of)
        elif x.kind == "adjoint":
            true = e.adjoint(x.of)
        else:
            true = e.gradients[x.of]
        marks.append(Mark(x, true, _agrees(true, x.value, x.tolerance)))
    return marks


def _agrees(true: Any, written: Any, tolerance: Any) -> bool:
    true, written = np.asarray(true, dtype=float), np.asarray(written, dtype=float)
    if true.shape != written.shape:
        return False
    bound = np.asarray(tolerance, dtype=float) * (1 + SLACK)
    return bool(np.all(np.abs(true - written) <= bound))


def _rounded(true: Any, tolerance: Any) -> str:
    """The true value at the precision the student wrote (0.0005: three decimals)."""
    if isinstance(tolerance, tuple):
        parts = [
            _rounded(t, tol)
            for t, tol in zip(np.asarray(true), tolerance, strict=False)
        ]
        return "[" + ", ".join(parts) + "]"
    decimals = max(0, round(-np.log10(2 * tolerance)))
    return f"{float(true):.{decimals}f}"


def _full(true: Any) -> str:
    array = np.asarray(true, dtype=float)
    if array.ndim == 0:
        return f"{float(array):.10g}"
    return np.array2string(array, precision=10, separator=", ")


# --------------------------------------------------------------------------- the sweep


def plot_sweep(
    sweeps: dict[str, list[tuple[float, Difference, Difference]]], path
) -> Path:
    """A log-log plot of |estimate - gradient| against the step, forward and
    central, one pair of lines per input. Needs matplotlib (ImportError if not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for label, rows in sweeps.items():
        steps = [h for h, _, _ in rows]
        for i, method in ((1, "forward"), (2, "central")):
            errors = [max(abs(r[i].estimate - r[i].gradient), 1e-17) for r in rows]
            axes.loglog(steps, errors, marker="o", label=f"{label}: {method}")
    axes.set_xlabel("step ε")
    axes.set_ylabel("|finite difference − gradient|")
    axes.set_title("Finite-difference error against the step")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
