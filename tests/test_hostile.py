"""Hostile input: nothing in a spec runs, injects code, or makes symgrad work without bound.

A spec is read by symgrad and its generated module is imported by others, so
both ends are tried here: text meant to execute (Python calls, YAML Python
tags), text meant to break out of the generated docstring and comments, and
input meant to exhaust time, memory or the stack (a 50 MB file, alias bombs,
10,000-deep nesting, huge constants). Every case must end quickly with a clear
`SpecError`; the limits asserted are generous (30 s), because the point is that
nothing hangs, not how fast an error is.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import subprocess
import sys
import time
import tokenize

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import cli, pipeline
from symgrad.frontend.spec import SpecError, from_dict, from_sympy, load, parse
from symgrad.pipeline import build, import_source, source
from tests.conftest import ROOT

GENEROUS = 30.0  # seconds: "ends", not "is fast"


def _spec(expression: str, **extra) -> dict:
    return {
        "name": "hostile",
        "inputs": {"x": {}, "w": {}},
        "steps": {"y": expression},
        **extra,
    }


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- nothing runs

PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__.__init__.__globals__['os'].system('touch {marker}')",
    "(lambda: __import__('os').system('touch {marker}'))()",
    "[__import__('os').system('touch {marker}') for _ in [1]]",
    "eval(\"__import__('os').system('touch {marker}')\")",
    "exec(\"import os; os.system('touch {marker}')\")",
    "open('{marker}', 'w')",
    "(s := __import__('os')) and s.system('touch {marker}')",
    "f\"{{__import__('os').system('touch {marker}')}}\"",
    "sin.__globals__",
    "x if __import__('os').system('touch {marker}') else w",
    "globals()['__builtins__']",
    "breakpoint()",
    'sympify(\'__import__("os").system("touch {marker}")\')',
    "Piecewise((__import__('os').system('touch {marker}'), True))",
    "max(x, key=lambda v: __import__('os').system('touch {marker}'))",
    "getattr(x, '__class__')",
    "import os",
    "x; import os",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=_short)
def test_expressions_never_execute(payload, tmp_path):
    marker = tmp_path / "pwned"
    expression = payload.format(marker=marker)
    with pytest.raises(SpecError):
        symgrad.compile(_spec(expression))
    spec = tmp_path / "hostile.yaml"
    spec.write_text(
        "name: hostile\ninputs: {x: {}, w: {}}\nsteps:\n  y: " + json.dumps(expression)
    )
    for argv in (
        ["compile", str(spec), "-o", str(tmp_path / "out")],
        ["check", str(spec)],
    ):
        assert cli.main(argv) == 2
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


YAML_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/new:os.system ["touch {marker}"]',
    "!!python/name:os.system",
    '!!python/object/apply:subprocess.check_output [["touch", "{marker}"]]',
    "!!python/module:os",
    '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
]


@pytest.mark.parametrize("tag", YAML_TAGS)
@pytest.mark.parametrize("where", ["step", "description", "top"])
def test_yaml_python_tags_never_execute(tag, where, tmp_path):
    marker = tmp_path / "pwned"
    value = tag.format(marker=marker)
    step = value if where == "step" else "x*w"
    text = f"name: tags\ninputs: {{x: {{}}, w: {{}}}}\nsteps:\n  y: {step}\n"
    if where == "description":
        text += f"description: {value}\n"
    if where == "top":
        text = f"--- {value}\n"
    with pytest.raises(SpecError, match="error: "):
        parse(text, "tags.yaml")
    assert not marker.exists()


def test_a_string_is_a_path_never_an_expression(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(SpecError, match="cannot read spec"):
        symgrad.compile(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()


# --------------------------------------------------------------------------- no injection

NASTY_TEXT = [
    '"""\nimport os; os.system("PWNED")\n"""',
    "'''\nPWNED = 1\n'''",
    'ends with a quote"',
    'ends with two quotes""',
    'four quotes """" and \\""" and \\\\"""',
    "trailing backslash \\",
    "trailing blanks   \nand a tab\t\n",
    "\\N{BULLET} \\u2022 \\x41 \\0 \\' \\\" \\\\",
    "r'raw' b'bytes' f'{PWNED}'",
    "a line\n\\\nimport os  # PWNED\n",
    "# PWNED comment\n\n\n   indented\n\ttabbed",
    "unicode: ∂y/∂x ≈ ½ — 日本語 \U0001f600",
    '"""' * 5,
    "\\" * 7,
]


def _code_outside_docstring_and_comments(text: str) -> str:
    """The generated source with its comments and the module docstring left out."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    docstring = next(t for t in tokens if t.type == tokenize.STRING)
    kept = [
        t.string for t in tokens if t.type != tokenize.COMMENT and t is not docstring
    ]
    return " ".join(kept)


def _assert_only_expected_statements(tree: ast.Module) -> None:
    """Module level: the docstring, imports of numpy/math/typing, classes, defs, helpers."""
    body = tree.body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    for node in body[1:]:
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= {"math", "numpy"}
        elif isinstance(node, ast.ImportFrom):
            assert node.module in {"typing", "collections", "__future__"}
        elif isinstance(node, ast.ClassDef):
            assert node.name in {"Tape", "Gradients"}
        elif isinstance(node, ast.FunctionDef):
            assert node.name in {"forward", "backward", "value_and_grad", "grad"} or (
                node.name.startswith("_")
            )
        elif isinstance(node, ast.Assign):  # helpers' constants; the numpy settings
            assert all(
                isinstance(t, ast.Name)
                and (t.id.startswith("_") or t.id in {"CHECK_ARGUMENTS", "SHAPES"})
                for t in node.targets
            )
        else:
            raise AssertionError(f"unexpected statement: {ast.dump(node)[:200]}")


@pytest.mark.parametrize("text", NASTY_TEXT, ids=_short)
@pytest.mark.parametrize("target", ["numpy", "python"])
def test_text_fields_cannot_break_out_of_the_docstring(text, target):
    spec = from_dict(
        {
            "name": "injected",
            "description": text,
            "source": text,
            "inputs": {"x": {}, "w": {}},
            # a comment inside an expression reaches the generated comments too
            "steps": {"f": "w*x  # " + text.replace("\n", " "), "y": "sin(f)"},
        }
    )
    generated = source(build(spec), target, checked="Checked: by a test.")
    tree = ast.parse(generated)
    _assert_only_expected_statements(tree)
    assert "PWNED" not in _code_outside_docstring_and_comments(generated)
    assert all(line == line.rstrip() for line in generated.splitlines())  # ruff W291
    docstring = ast.get_docstring(tree, clean=False)
    for line in text.strip().splitlines():  # the text itself, unchanged
        assert line.strip() in docstring
    module = import_source(generated, "injected", None)
    value, grads = module.value_and_grad(x=0.5, w=2.0)
    assert value == pytest.approx(np.sin(1.0))
    assert grads.w == pytest.approx(0.5 * np.cos(1.0))


@pytest.mark.parametrize(
    "field, value",
    [
        ("description", "NUL \x00 byte"),
        ("description", "escape \x1b[2J"),
        ("source", "carriage\rreturn"),
        ("description", "bidi \u202e override"),
        ("source", "isolate \u2066 text \u2069"),
        ("description", "lone surrogate \ud800"),
        ("description", "C1 control \x85 next line"),
    ],
)
def test_control_characters_in_text_are_refused(field, value):
    with pytest.raises(SpecError, match=f"'{field}' contains the control character"):
        from_dict({**_spec("x"), field: value})


@pytest.mark.parametrize(
    "spec",
    [
        {**_spec("x"), "name": 'x"""\nimport os'},
        {**_spec("x"), "name": "__init__"},
        {**_spec("x"), "name": "numpy"},
        _spec("x") | {"inputs": {"x\nimport os": {}}},
        _spec("x") | {"inputs": {'x"""': {}}},
        _spec("x") | {"inputs": {"x": {}, "ｘ": {}}},  # NFKC-equal to x in Python
        _spec("x") | {"steps": {"y = 1\nimport os\nz": "x"}},
        _spec("x") | {"steps": {"y": "x  # \x00"}},
        _spec("x") | {"steps": {"y": "x  # \u202e"}},
    ],
)
def test_names_and_expressions_that_would_inject_are_refused(spec):
    with pytest.raises(SpecError):
        from_dict(spec)


@pytest.mark.parametrize(
    "name", ["x\nimport os", 'a"""b', "__builtins__", "np", "tape", "dy", "lambda"]
)
def test_sympy_symbols_with_hostile_names_are_refused(name):
    with pytest.raises(SpecError):
        from_sympy(sp.Symbol(name) * sp.Symbol("w"))


# --------------------------------------------------------------------------- bounded work


def _ends_with_error(func, *args, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError, match=match):
        func(*args)
    assert time.perf_counter() - start < GENEROUS


def test_a_50_megabyte_spec_is_refused_unread(tmp_path):
    spec = tmp_path / "huge.yaml"
    head = "name: huge\ninputs: {x: {}}\nsteps:\n  y: x\ndescription: |\n"
    with spec.open("w") as f:
        f.write(head)
        line = "  " + "lorem ipsum " * 8 + "\n"
        for _ in range(50_000_000 // len(line)):
            f.write(line)
    assert spec.stat().st_size > 50_000_000
    _ends_with_error(load, spec, match="larger than")


def test_a_spec_with_too_many_steps_is_refused():
    steps = "".join(f"  s{i}: x + {i}\n" for i in range(20_000))
    text = "name: many\ninputs: {x: {}}\nsteps:\n" + steps
    _ends_with_error(parse, text, match="more than 10000 steps")


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\nname: laughs\ninputs: {x: {}}\nsteps: {y: x}\n"


def _quadratic_blowup() -> str:
    big = "x" * 100_000
    return f"name: q\ninputs: {{x: {{}}}}\nsteps: {{y: x}}\nsource: &s {big}\n" + (
        "".join(f"k{i}: *s\n" for i in range(5_000))
    )


@pytest.mark.parametrize("make", [_billion_laughs, _quadratic_blowup])
def test_alias_bombs_are_refused_before_expansion(make):
    _ends_with_error(parse, make(), "bomb.yaml", match="anchors and aliases")


DEEP = {
    "parentheses": "(" * 9_999 + "x" + ")" * 9_999,
    "unary minus": "-" * 10_000 + "x",
    "additions": "x+" * 9_999 + "x",
    "powers": "x**" * 6_000 + "x",
    "calls": "sin(" * 4_000 + "x" + ")" * 4_000,
    "lists": "[" * 9_000 + "x" + "]" * 9_000,
    "attributes": "x" + ".T" * 9_000,
    "not": "where(" + "not " * 4_000 + "x > 0, x, w)",
}


@pytest.mark.parametrize("kind", DEEP)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(kind):
    _ends_with_error(
        from_dict, _spec(DEEP[kind]), match="nested|characters long|too many nested"
    )


def test_deeply_nested_yaml_is_refused():
    text = "name: deep\ninputs: {x: {}}\nsteps: {y: x}\nsource: " + "[" * 10_000
    text += "]" * 10_000 + "\n"
    _ends_with_error(parse, text, "deep.yaml", match="nested more than")
    text = "name: deep\ninputs: {x: {}}\nsteps: {y: x}\nsource:\n"
    text += "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2_000))
    _ends_with_error(parse, text, "deep.yaml", match="nested more than")


def test_a_10000_deep_sympy_expression_compiles():
    """A SymPy object is trusted (no depth limit): it is cut into steps."""
    x = sp.Symbol("x")
    expr = x
    for _ in range(10_000):  # unevaluated: SymPy's own checks would recurse
        expr = sp.sin(expr, evaluate=False)
    module = symgrad.compile(expr, target="python")
    expected_value, expected_grad = 0.5, 1.0
    for _ in range(10_000):
        expected_grad *= math.cos(expected_value)
        expected_value = math.sin(expected_value)
    value, grads = module.value_and_grad(0.5)
    assert value == pytest.approx(expected_value, rel=1e-12)
    assert grads.x == pytest.approx(expected_grad, rel=1e-9)


def test_a_condition_too_deep_to_walk_is_a_clear_error(monkeypatch):
    """A condition cannot be a step: nested deeper than SymPy can recurse, even
    with the limit raised (here: not raised at all), it is a SpecError."""
    monkeypatch.setattr(pipeline, "MAX_RECURSION", sys.getrecursionlimit())
    x = sp.Symbol("x")
    condition = x > 0
    for _ in range(2_000):  # built raw: SymPy's constructors recurse to sort
        both = sp.Basic.__new__(sp.And, x < 1, condition)
        condition = sp.Basic.__new__(sp.Not, both)
        hash(both), hash(condition)  # each hash computed once, as SymPy would
    expr = sp.Piecewise((x**2, condition), (x, True), evaluate=False)
    _ends_with_error(symgrad.compile, expr, match="nested too deeply")


HUGE = [
    "x * 2**2**2**2**30",
    "x * 10**10**10",
    "x ** (2**2**40)",
    "x * (10**300)**(10**300)",
    "x * 9" + "9" * 5_000,
    "x * 1e400",
    "x * 10**400",
    "x * exp(exp(exp(100)))",
    "max(x, exp(exp(exp(exp(100)))))",
    "x * sin(exp(10**6))",
    "x * factorial(10**100)",
    "x * 2" + "**2" * 60,
    "x / 2**1500",
    "x * 1e-320",
    "x * log(-1)",
    "x * acos(2)",
    "x * (-8)**(1/3)",
    "x * atan2(0, 0)",
]


@pytest.mark.parametrize("expression", HUGE, ids=_short)
def test_pathological_constants_end_with_an_error(expression):
    _ends_with_error(from_dict, _spec(expression), match="error: step 'y'")


@pytest.mark.parametrize(
    "expression",
    [
        "x * sqrt(2**1000 + 1) * sqrt(3**600 + 7)",  # SymPy looks for square factors
        "x * log(2**1000 + 1) * sin(3**600)",
        "x * max(log(6), log(2) + log(3))",  # a tie SymPy cannot decide exactly
        "where(log(6) > log(2) + log(3), x, w)",
        "x" + "*x" * 4_000,
        "+".join(f"{i}*x**{i}" for i in range(1, 1_500)),
    ],
    ids=_short,
)
def test_expensive_looking_constants_end(expression):
    start = time.perf_counter()
    try:
        build(from_dict(_spec(expression)))
    except SpecError:
        pass
    assert time.perf_counter() - start < GENEROUS


def test_constants_at_the_edge_of_float64_still_compile():
    module = symgrad.compile(_spec("x * 1.7e308 + w * exp(700) + 2**1000 / 3**600"))
    value, grads = module.value_and_grad(x=0.5, w=1.0)
    assert grads.x == pytest.approx(1.7e308)
    assert grads.w == pytest.approx(np.exp(700))


_MEMORY_PROBE = """
import json, resource, sys, time
from pathlib import Path
from symgrad.frontend.spec import SpecError, load
results = {}
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        load(path)
        error = None
    except SpecError as err:
        error = str(err)
    results[Path(path).name] = {
        "kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
        "seconds": time.perf_counter() - start,
        "error": error,
    }
print(json.dumps(results))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX only")
def test_hostile_files_end_quickly_with_bounded_memory(tmp_path):
    files = {
        "laughs.yaml": _billion_laughs(),
        "quadratic.yaml": _quadratic_blowup(),
        "deep.yaml": "source: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "long_line.yaml": "name: n\nsource: " + "a" * 900_000 + "\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with (tmp_path / "big.yaml").open("w") as f:
        f.write("name: big\n" + "# padding\n" * 5_000_000)  # 50 MB
    paths = [str(p) for p in sorted(tmp_path.iterdir())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report) == 5
    for name, row in report.items():
        assert row["error"] and "error: " in row["error"], name
        assert row["seconds"] < GENEROUS, (name, row)
        assert row["kib"] < 100 * 1024, (name, row)  # 100 MiB more at most
