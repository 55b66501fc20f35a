"""Names are the user's: an input or a step may take a function's name.

The rule is Python's: a name shadows the function from its definition on (an
input in every step, a step from the next step on); before that, the name
still calls the function, and calling it after is a clear error.
"""

from __future__ import annotations

import pytest

import symgrad
from symgrad.frontend.spec import SpecError, from_dict
from tests.conftest import exact_gradient

SHADOWING = {
    "name": "shadowing",
    "inputs": {"x": {}, "log": {}},  # an input: log is a value in every step
    "steps": {
        "a": "sigmoid(x) + exp(x)",  # functions still: their steps come later
        "dot": "a * log",
        "softplus": "softplus(dot)",  # the function: its own step is not done yet
        "sigmoid": "sigmoid(softplus) + dot",
        "exp": "exp(sigmoid) - a",
        "relu": "relu(exp) + relu(x)",
        "sum": "relu * sigmoid + exp",
        "y": "sum + softplus * exp",
    },
}


@pytest.mark.parametrize("target", ["numpy", "python"])
def test_steps_and_inputs_may_take_function_names(target):
    """The generated code calls np.exp, _sigmoid, math.exp, ...: a local variable
    called exp or sigmoid breaks nothing."""
    spec = from_dict(SHADOWING)
    module = symgrad.compile(SHADOWING, target=target)
    point = {"x": 0.7, "log": 1.3}
    exact_value, exact = exact_gradient(spec, point)
    value, grads = module.value_and_grad(**point)
    assert value == pytest.approx(exact_value, rel=1e-13)
    assert grads.x == pytest.approx(exact["x"], rel=1e-12)
    assert grads.log == pytest.approx(exact["log"], rel=1e-12)
    assert symgrad.check_gradients(module, point).ok


def _error(inputs: dict, steps: dict) -> str:
    with pytest.raises(SpecError) as caught:
        from_dict({"name": "names", "inputs": inputs, "steps": steps})
    return caught.value.message


@pytest.mark.parametrize(
    "inputs, steps, message",
    [
        (
            {"x": {}, "log": {}},
            {"y": "log(x)"},
            "'log' is a value here (an input), not a function",
        ),
        (
            {"x": {}},
            {"dot": "x * 2", "y": "dot(x, x)"},
            "'dot' is a value here (a step), not a function",
        ),
        ({"x": {}, "abs": {}}, {"y": "x"}, "input name 'abs' is reserved"),
        ({"x": {}}, {"min": "x", "y": "x"}, "step name 'min' is reserved"),
        ({"x": {}, "len": {}}, {"y": "x"}, "would shadow the Python builtin"),
    ],
)
def test_shadowed_and_refused_names(inputs, steps, message):
    assert message in _error(inputs, steps)


# --------------------------------------------------------------------------- hints
# Each common slip gets a message that says what to write instead.

HINTS = [
    (
        "x^2",
        "operator in 'x ^ 2' is not allowed: use ** for powers (^ is XOR in Python)",
    ),
    ("e**x", "unknown name 'e': use exp(x) for e**x"),
    (
        "ln(x)",
        "unknown function 'ln' (did you mean 'log'? log is the natural logarithm)",
    ),
    ("np.exp(x)", "write exp(x), without 'np.'"),
    ("math.exp(x) + 1", "write exp(x), without 'math.'"),
    ("np.arcsin(x)", "write arcsin(x), without 'np.'"),
    ("np.maximum(x, w)", "write max(x, w), without 'np.'"),
    ("np.pi * x", "write pi, without 'np.'"),
    ("2x + 1e5", "invalid syntax in '2x + 1e5': write 2*x (multiplication needs *)"),
    ("0x1f + 3.5w", "write 3.5*w (multiplication needs *)"),
    ("2(x + 1)", "write 2 * (x + 1) (multiplication needs *)"),
    ("sin[x]", "call functions with parentheses: sin(x)"),
    ("fo + 1", "unknown name 'fo' (did you mean 'f0'?)"),
    ("W * x", "unknown name 'W' (did you mean 'w'?)"),
    ("z * x", "unknown name 'z'; declare it under inputs: or define it as a step"),
    ("maximum(x, w)", "unknown function 'maximum' (did you mean 'max'?"),
    ("arcsec(x)", "unknown function 'arcsec' (did you mean 'arcsin'?)"),
]


@pytest.mark.parametrize("expression, message", HINTS)
def test_a_slip_gets_a_hint(expression, message):
    assert message in _error({"x": {}, "w": {}}, {"f0": "w*x", "y": expression})


def test_e_is_a_name_when_the_spec_defines_it():
    spec = from_dict(
        {"name": "e", "inputs": {"x": {}, "e": {}}, "steps": {"y": "e**x"}}
    )
    assert str(spec.steps[0].expr) == "e**x"
