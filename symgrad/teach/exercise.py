"""`spec, point -> notebook`: a backpropagation exercise in the style of the UDL notebooks.

The notebook gives the point and the forward pass; each line of the backward
pass that computes a named adjoint (`dy_df3 = ...`) is left for the student,
under its chain-rule comment (without the local derivative, which is the
exercise) and a TODO. A last cell compares the student's values with the
true ones, computed by symgrad's generated `backward` when the notebook was
written, and says which line is wrong. The notebook needs only NumPy to run.

It is written with nbformat when installed, else as the same JSON (nbformat
v4) by hand; `solution=True` fills the answers in (for a teacher, and the tests).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from symgrad.check import as_value, locals_on_return
from symgrad.codegen.printer import Printer, fusible
from symgrad.compiler.reverse import objective, weighted
from symgrad.ir import is_temporary
from symgrad.pipeline import Compiled, import_source, source

TODO = "None  # TODO"
TOLERANCE = 1e-6  # relative; the true values are printed with 17 digits


def exercise(compiled: Compiled, point: dict[str, Any], solution: bool = False) -> dict:
    """The notebook (a dict in nbformat v4) for `compiled` at `point`."""
    spec = compiled.spec
    program = compiled.backward
    module = import_source(source(compiled), spec.name, compiled)
    args = {name: as_value(point[name]) for name in program.inputs}
    with np.errstate(all="ignore"):
        _, tape = module.forward(**args)
        true = locals_on_return(module.backward, tape)
    printer = Printer("numpy")
    read = {x for a in program.backward for x in a.args if isinstance(x, str)}
    forward = printer.body(program.forward, fusible(program.forward, read))
    answers = [a.name for a in program.backward if not is_temporary(a.name)]
    backward = printer.body(program.backward, fusible(program.backward, set(answers)))
    # backward's defaults: the first output's upstream gradient 1, the others' 0
    out = objective(program)  # the output, or L = dx·x + dy·y for several
    seeds = []
    for i, (o, name) in enumerate(program.seeds):
        shape = np.shape(getattr(tape, o))
        seeds.append((o, name, 0 if i else 1, shape))
    start = " and ".join(f"∂{out}/∂{o} = {name} = {v}" for o, name, v, _ in seeds)
    if program.extra_seeds:
        start += f" ({out} = {weighted(program)}: the gradients of {program.output})"
    setup = ["import numpy as np", ""]
    for source_text in printer.helper_sources():
        setup += [source_text, ""]
    setup += [f"{name} = {_literal(args[name])}" for name in program.inputs]

    student, expected = [], {}
    for line in backward:
        if line.defines is None:
            student.append(_without_local(line.text))
        elif line.defines in answers:
            expected[line.defines] = true[line.defines]
            student.append(line.text if solution else f"{line.defines} = {TODO}")
        elif solution:
            student.append(line.text)  # a temporary of the worked answer
    cells = [
        _markdown(
            f"# Backpropagation by hand: {spec.name}\n\n"
            + (spec.description.strip() + "\n\n" if spec.description.strip() else "")
            + "The forward pass is given. Fill in each line of the backward pass "
            f"marked TODO with the adjoint it names (`d{out}_dv` holds "
            f"∂{out}/∂v), using the values the forward pass computed, then run the "
            "last cell: it checks your numbers and says which line is wrong."
        ),
        _code("\n".join(setup)),
        _markdown("## Forward pass"),
        _code("\n".join(line.text for line in forward)),
        _markdown(
            f"## Backward pass\n\nStart from {start}. Each comment is the "
            "chain-rule product to compute; the local derivative is yours to find."
        ),
        _code("\n".join([*map(_seed_line, seeds), *student])),
        _markdown("## Check your answers"),
        _code(_checker(expected)),
    ]
    return _notebook(cells)


def _seed_line(seed: tuple) -> str:
    """`dy = 1.0`, or `dy = np.ones((3,))` for an array output (0: np.zeros)."""
    _, name, value, shape = seed
    if not shape:
        return f"{name} = {float(value)}"
    return f"{name} = {'np.ones' if value else 'np.zeros'}({shape})"


def _without_local(comment: str) -> str:
    """`# ∂y/∂h3 = ∂y/∂f3·∂f3/∂h3`: the chain rule without its local derivative."""
    return comment.split("   (")[0]


def _literal(value: Any) -> str:
    if np.ndim(value) == 0:
        return repr(float(value))
    return f"np.array({np.asarray(value, dtype=float).tolist()!r})"


def _checker(expected: dict[str, Any]) -> str:
    true = ",\n".join(f"    {name!r}: {_literal(v)}" for name, v in expected.items())
    return f"""# The true values, computed by symgrad's generated backward at this point.
TRUE = {{
{true},
}}
wrong = []
for name, value in TRUE.items():
    mine = globals().get(name)
    if mine is None:
        wrong.append(f"{{name}} is not filled in yet (TODO)")
    elif np.shape(mine) != np.shape(value) or not np.allclose(
        mine, value, rtol={TOLERANCE}, atol=1e-12
    ):
        wrong.append(f"{{name}} = {{mine}} is wrong: the true value is {{value}}")
if wrong:
    print(f"{{len(wrong)}} of {{len(TRUE)}} lines to fix; the first:")
    print(wrong[0])
    print("(the lines after a wrong one may be wrong only because they use it)")
else:
    print(f"All {{len(TRUE)}} lines are right.")"""


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": text,
    }


def _notebook(cells: list[dict]) -> dict:
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"  # nbformat 4.5: stable ids, deterministic output
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_text(notebook: dict) -> str:
    """The notebook as a file's text: validated by nbformat when it is installed."""
    try:
        import nbformat
    except ImportError:
        return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    node = nbformat.from_dict(notebook)
    nbformat.validate(node)
    return nbformat.writes(node) + "\n"
