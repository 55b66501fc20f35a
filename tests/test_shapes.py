"""Shape inference: NumPy's broadcasting, less its silent outer product."""

from __future__ import annotations

import re

import pytest

import symgrad
from symgrad.shapes import ShapeError, broadcast


@pytest.mark.parametrize(
    "shapes, result",
    [
        (((), (3,)), (3,)),  # a scalar
        ((("n", 3), (3,)), ("n", 3)),  # a bias added to X @ W
        (((3, 2), (1, 2)), (3, 2)),  # a size-1 axis, declared
        (((3, 1), (1,)), (3, 1)),
        (((3, 1), (1, 3)), (3, 3)),  # an outer product with its axes written out
        ((("n", 1), (1, "k"), ()), ("n", "k")),
        (((2, 3), (3,), (3,)), (2, 3)),
    ],
)
def test_broadcasts(shapes, result):
    assert broadcast(*shapes) == result


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            ((3, 1), (3,)),
            "shapes [3, 1] and [3] broadcast to [3, 3], larger than each of them: an "
            "outer product. If it is meant, give [3] its new axis, as [1, 3]; if not, "
            "make the shapes agree",
        ),
        ((("n",), ("n", 1)), "shapes [n] and [n, 1] broadcast to [n, n]"),
        (((2, 1), (3,), ()), "broadcast to [2, 3], larger than each of them"),
    ],
)
def test_an_outer_product_by_broadcasting_is_an_error(shapes, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        broadcast(*shapes)


def test_the_error_names_the_step():
    """NumPy's classic silent bug: a column of predictions minus a vector of labels."""
    spec = {
        "name": "mse",
        "inputs": {
            "X": {"shape": ["n", 3]},
            "W": {"shape": [3, 1]},
            "y": {"shape": ["n"]},
        },
        "steps": {"pred": "X @ W", "L": "mean((pred - y)**2)"},
        "output": "L",
    }
    with pytest.raises(
        symgrad.SpecError,
        match=re.escape("step 'L': shapes [n, 1] and [n] broadcast to [n, n]"),
    ):
        symgrad.compile(spec)
    spec["inputs"]["y"] = {
        "shape": ["n", 1]
    }  # the labels as a column: no outer product
    assert symgrad.compile(spec).__symgrad__.unit.output == "L"
