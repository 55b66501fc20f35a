"""An output that does not depend on a `wrt` input is compiled, and warned about.

Source: seed 000, "Optional Lab - Derivatives" (Coursera Machine Learning
Specialization), cell In [8]: `Z = symbols('Z')` makes Z an input of its own,
so `diff(Z, w1)` is 0 and the cell prints dL/dw1 = 0 and dL/db = 0. The cell
written as a spec does the same (and the gradient check agrees: 0 is the right
gradient of what was written); symgrad says why, and which input to look at.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml

import symgrad
from symgrad import cli
from symgrad.frontend.spec import from_dict
from symgrad.pipeline import build, dependence_warnings

CELL = {
    "name": "seed_cell",
    "inputs": {"w1": {}, "x1": {}, "b": {}, "y": {}, "Z": {}},
    "wrt": ["w1", "b"],
    "steps": {
        "a": "1 / (1 + exp(-Z))",
        "L": "-y*log(a) - (1 - y)*log(1 - a)",
    },
    "output": "L",
}
# The cell as meant (its next cell, In [10]): Z a step computed from w1 and b.
MEANT = {
    **CELL,
    "inputs": {"w1": {}, "x1": {}, "b": {}, "y": {}},
    "steps": {"Z": "w1*x1 + b", **CELL["steps"]},
}
WARNING = (
    "L does not depend on w1 or b: their gradients are 0. "
    "Is Z meant to be a step computed from w1 and b?"
)
POINT = {"w1": 0.5, "x1": 2.0, "b": -1.0, "y": 1.0}


@pytest.fixture
def cell(tmp_path):
    path = tmp_path / "seed_cell.yaml"
    path.write_text(yaml.safe_dump(CELL, sort_keys=False))
    return path


def test_the_seed_cell_gives_zero_gradients_and_a_warning():
    with pytest.warns(symgrad.SymgradWarning) as record:
        module = symgrad.compile(CELL)
    assert [str(w.message) for w in record] == [f"seed_cell: {WARNING}"]
    assert record[0].filename == __file__  # points at the line that compiled it
    grads = module.grad(**POINT, Z=0.3)
    assert (grads.w1, grads.b) == (0.0, 0.0)  # what the notebook printed


def test_the_cell_as_meant_has_the_chain_rule_gradient_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", symgrad.SymgradWarning)
        module = symgrad.compile(MEANT)
    grads = module.grad(**POINT)
    a = 1 / (1 + np.exp(-(POINT["w1"] * POINT["x1"] + POINT["b"])))
    dL_dZ = a - POINT["y"]  # the notebook's dL/dZ, simplified
    assert grads.w1 == pytest.approx(dL_dZ * POINT["x1"], rel=1e-12)
    assert grads.b == pytest.approx(dL_dZ, rel=1e-12)


@pytest.mark.parametrize("command", [["compile", "-o", "OUT"], ["check"], ["explain"]])
def test_commands_warn_on_stderr_and_still_succeed(cell, tmp_path, command, capsys):
    argv = [c.replace("OUT", str(tmp_path / "out")) for c in command]
    assert cli.main([argv[0], str(cell), *argv[1:]]) == 0
    assert capsys.readouterr().err == f"{cell}: warning: {WARNING}\n"


def test_explain_warns_from_the_library_too():
    with pytest.warns(symgrad.SymgradWarning, match="does not depend on w1 or b"):
        symgrad.explain(CELL)


@pytest.mark.parametrize(
    "inputs, steps, wrt, expected",
    [
        # one input ignored, no other input to point at
        ("w v", {"L": "w**2"}, ["w", "v"], "L does not depend on v: its gradient is 0"),
        # the hint names the input furthest from the output (x, not c)
        (
            "w x c",
            {"h": "sin(x)", "L": "c*h"},
            ["w", "c"],
            "L does not depend on w: its gradient is 0. "
            "Is x meant to be a step computed from w?",
        ),
        # a condition counts as dependence (its gradient is 0 for another reason)
        ("w x", {"L": "where(w > 0, x, 0)"}, ["w", "x"], None),
    ],
)
def test_dependence_warnings(inputs, steps, wrt, expected):
    spec = from_dict(
        {
            "name": "s",
            "inputs": {name: {} for name in inputs.split()},
            "wrt": wrt,
            "steps": steps,
            "output": "L",
        }
    )
    assert dependence_warnings(build(spec)) == ([expected] if expected else [])
