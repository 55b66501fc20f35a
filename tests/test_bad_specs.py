"""The corpus of broken specs in tests/bad_specs/: each one is an error people can act on.

For every spec: exit status 2, exactly one line on stderr of the form
`file:line: error: [step 'name': ]message` with the expected line, step and
message (tests/bad_specs/expected.yaml), no traceback, and nothing written:
existing output files stay byte-identical, even the one of a good spec
compiled in the same command.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

import symgrad
from symgrad import cli
from symgrad.check import OutOfDomain, check_gradients
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "bad_specs"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
CASES = sorted(p.name for p in CORPUS.glob("*.yaml") if p.name != "expected.yaml")
GOOD = ROOT / "examples" / "derivative_square.yaml"


def test_the_corpus_is_complete():
    assert len(CASES) >= 40
    assert set(CASES) == set(EXPECTED), "every spec needs an expected error, and back"


def _module_name(spec) -> str:
    """The module the spec would write if it were valid: its `name:` or its file's stem."""
    match = re.search(rb"^name: *(\w+) *$", spec.read_bytes(), re.MULTILINE)
    return match.group(1).decode() if match else spec.stem


def _expected_line(spec, expected: dict) -> str:
    step = f"step {expected['step']!r}: " if expected["step"] else ""
    return f"{spec}:{expected['line']}: error: {step}"


@pytest.mark.parametrize("name", CASES)
def test_bad_spec_is_reported_and_nothing_is_written(name, tmp_path, capsys):
    spec = CORPUS / name
    expected = EXPECTED[name]
    out = tmp_path / "out"
    out.mkdir()
    precious = {
        "derivative_square.py": b"# the good spec's module, from an earlier run\n",
        f"{_module_name(spec)}.py": b"# precious: must survive byte for byte\n",
    }
    for file, content in precious.items():
        (out / file).write_bytes(content)

    # A good spec first: compile checks everything before it writes anything.
    status = cli.main(["compile", str(GOOD), str(spec), "-o", str(out), "--no-check"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(_expected_line(spec, expected)), captured.err
    assert expected["message"] in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(precious)  # no temporaries
    for file, content in precious.items():
        assert (out / file).read_bytes() == content

    # `check` reads the spec the same way and says the same thing.
    assert cli.main(["check", str(spec)]) == 2
    assert capsys.readouterr().err == captured.err


def test_debug_shows_the_traceback(capsys):
    spec = CORPUS / "import_call.yaml"
    assert cli.main(["compile", "--debug", str(spec), "-o", "-"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(EXPECTED[spec.name]["message"])


# --------------------------------------------------------------------------- bad points
# Outside its domain a generated module behaves like the library it is written in:
# the numpy target returns nan/inf (with NumPy's RuntimeWarning), the python target
# raises what `math` raises. `symgrad check` reports such a point as outside the
# domain (exit status 2), never as a gradient mismatch (exit status 1).

OUTSIDE = [
    ("log(x)", -1.0),
    ("log(x)", 0.0),
    ("sqrt(x)", -4.0),
    ("sqrt(x)", 0.0),  # defined, but the gradient is infinite
    ("1/x", 0.0),
    ("acos(x)", 2.0),
    ("asin(x)", -1.5),
    ("x**1.5", -1.0),  # Python's float ** 1.5 would be complex
    ("x**1.5", 0.0),  # defined at 0, but not just left of it
    ("exp(x)", 1000.0),  # overflows float64
    ("log(1 - x**2)", 1.0),
    ("x**x", -0.5),
]


def _module(expression: str, target: str):
    spec = {"name": "outside", "inputs": {"x": {}}, "steps": {"y": expression}}
    return symgrad.compile(spec, target=target)


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("expression, x", OUTSIDE)
def test_points_outside_the_domain_are_reported_as_such(expression, x, target):
    with pytest.raises(OutOfDomain):
        check_gradients(_module(expression, target), {"x": x})


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("expression, x", OUTSIDE[:6])
def test_check_at_a_point_outside_the_domain_exits_2(
    expression, x, target, tmp_path, capsys
):
    spec = tmp_path / "outside.yaml"
    spec.write_text(f"name: outside\ninputs: {{x: {{}}}}\nsteps:\n  y: {expression}\n")
    assert cli.main(["check", str(spec), "--at", f"x={x}", "--target", target]) == 2
    captured = capsys.readouterr()
    assert f"{spec}: outside the function's domain: " in captured.err
    assert "MISMATCH" not in captured.out + captured.err
    assert "Traceback" not in captured.err


def test_a_fixed_input_that_leaves_no_domain_is_named(tmp_path, capsys):
    spec = tmp_path / "partly.yaml"
    spec.write_text("name: partly\ninputs: {x: {}, w: {}}\nsteps:\n  y: w*log(x)\n")
    assert cli.main(["check", str(spec), "--at", "x=-1"]) == 2
    assert "with x=-1" in capsys.readouterr().err


def test_numpy_target_returns_nan_and_inf_as_numpy_does():
    module = _module("log(x) + 1/(x - 2)", "numpy")
    with pytest.warns(RuntimeWarning):
        value, _ = module.value_and_grad(x=-1.0)
    assert np.isnan(value)
    with pytest.warns(RuntimeWarning):
        value, grads = module.value_and_grad(x=np.array([0.0, 2.0, 3.0]))
    assert np.isneginf(value[0]) and np.isposinf(value[1]) and np.isfinite(value[2])


@pytest.mark.parametrize(
    "expression, x, error",
    [
        ("log(x)", -1.0, ValueError),
        ("sqrt(x)", -1.0, ValueError),
        ("acos(x)", 2.0, ValueError),
        ("1/x", 0.0, ZeroDivisionError),
        ("exp(x)", 1000.0, OverflowError),
    ],
)
def test_python_target_raises_as_math_does(expression, x, error):
    module = _module(expression, "python")
    with pytest.raises(error):
        module.value_and_grad(x=x)


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("power", ["x**w", "x**1.5", "(x - 3)**w"])
def test_a_fractional_power_of_a_negative_number_is_not_complex(target, power):
    """Python's ** would make (-1.0)**0.5 a complex number: symgrad prints np.power
    (nan) and math.pow (ValueError), like every other value outside a domain."""
    spec = {"name": "power", "inputs": {"x": {}, "w": {}}, "steps": {"y": power}}
    module = symgrad.compile(spec, target=target)
    for call in (module.forward, module.value_and_grad):
        if target == "python":
            with pytest.raises(ValueError):
                call(-1.0, 0.5)
        else:
            with np.errstate(invalid="ignore"):
                value, _ = call(-1.0, 0.5)
            assert np.isnan(value)
    value, grads = module.value_and_grad(4.0, 0.5)  # inside the domain: unchanged
    assert value == pytest.approx(
        {"x**w": 2.0, "x**1.5": 8.0, "(x - 3)**w": 1.0}[power]
    )


def test_compiling_a_function_defined_nowhere_exits_2(tmp_path, capsys):
    spec = tmp_path / "nowhere.yaml"
    spec.write_text("name: nowhere\ninputs: {x: {}}\nsteps:\n  y: sqrt(-1 - x**2)\n")
    assert cli.main(["compile", str(spec), "-o", str(tmp_path / "out")]) == 2
    assert "outside the function's domain" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_debug_before_the_command_shows_the_traceback(capsys):
    spec = CORPUS / "import_call.yaml"
    assert cli.main(["--debug", "compile", str(spec), "-o", "-"]) == 2
    assert "Traceback" in capsys.readouterr().err
