"""The generated code tells one story with `explain` (issue 14, item 1).

Every comment names only values the reader can find (the spec's inputs and
steps, or a variable of that very function); each differentiated input's
adjoint has its own name (`dy_dbeta0`); the tape holds the inputs, the
steps and only the temporaries `backward` reads; notes are in the spec's
notation, in the same words as `explain`'s backward table.
"""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest

import symgrad
from symgrad.compiler.reverse import objective
from symgrad.ir import is_temporary
from symgrad.pipeline import build, load_spec, source
from tests.conftest import EXAMPLES, ROOT

PARTIAL = re.compile(r"∂(\w+)")


def _functions(text: str) -> dict[str, tuple[ast.FunctionDef, list[str]]]:
    """Each top-level function: its node and its comment lines."""
    lines = text.splitlines()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            body = lines[node.lineno - 1 : node.end_lineno]
            found[node.name] = (
                node,
                [x.strip() for x in body if x.strip().startswith("#")],
            )
    return found


def _assigned(node: ast.FunctionDef) -> set[str]:
    names = {a.arg for a in node.args.args}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
    return names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_comments_name_only_what_exists(path):
    spec = load_spec(path)
    named = {i.name for i in spec.inputs} | {s.name for s in spec.steps}
    # several outputs: backward differentiates L = dx·x + dy·y, its docstring says
    total = objective(build(spec).backward)
    text = (ROOT / "generated" / f"{path.stem}.py").read_text(encoding="utf-8")
    for name in ("forward", "backward", "value_and_grad"):
        node, comments = _functions(text)[name]
        local = _assigned(node) | ({total} if name == "backward" else set())
        for comment in comments:
            for v in PARTIAL.findall(comment):
                assert v in named or v in local, f"{path.stem}.{name}: {comment}"
                assert not is_temporary(v) or v in local, (
                    f"{path.stem}.{name}: {comment}"
                )
            assert len(comment) <= 120, f"{path.stem}.{name}: a long comment {comment}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_input_gradient_has_its_own_name(path):
    compiled = build(load_spec(path))
    for program in (compiled.backward, compiled.unit):
        out = objective(program)  # the output, or L for several (dL_dr)
        for w, g in program.gradients:
            if isinstance(g, str):
                assert g == f"d{out}_d{w}", (w, g)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_tape_holds_what_backward_reads(path):
    compiled = build(load_spec(path))
    text = source(compiled)
    backward = text[text.index("def backward(") : text.index("def value_and_grad(")]
    module = symgrad.compile(path)
    fields = module.Tape._fields
    spec = compiled.spec
    named = [i.name for i in spec.inputs] + [s.name for s in spec.steps]
    assert set(named) <= set(fields)  # a learner can print tape.f0
    for field in fields:
        if is_temporary(field):
            assert f"tape.{field}" in backward, field


def test_udl_toy_reads_as_the_notebook():
    text = (ROOT / "generated" / "udl_toy.py").read_text(encoding="utf-8")
    backward = text[text.index("def backward(") : text.index("def value_and_grad(")]
    assert (
        "# ∂y/∂h3 = ∂y/∂f3·∂f3/∂h3   (∂f3/∂h3 = omega3)\n    dy_dh3 = dy_df3 * omega3"
        in backward
    )
    assert "dy_dbeta0 = dy_df0" in backward
    assert "beta0 = tape.beta0" not in backward  # no input unpacked only for its shape
    assert "np.ndim" not in backward  # the one-point test is a named helper
    # the comments are explain's rows, in its words
    e = symgrad.explain(ROOT / "examples" / "udl_toy.yaml", swell=False)
    for row in e.backward[1:]:
        chain = " + ".join(f"∂y/∂{t.user}·∂{t.user}/∂{row.name}" for t in row.terms)
        assert f"# ∂y/∂{row.name} = {chain}" in backward, row.name


def test_a_comment_is_printed_above_the_lines_it_explains():
    # softmax_cross_entropy's value_and_grad: no line before its adjoint's comment
    text = (ROOT / "generated" / "softmax_cross_entropy.py").read_text(encoding="utf-8")
    node, _ = _functions(text)["value_and_grad"]
    body = text.splitlines()[node.lineno - 1 : node.end_lineno]
    comment = next(i for i, x in enumerate(body) if x.strip().startswith("# ∂L/∂loss"))
    assert body[comment - 1].strip() == "del loss"
    assert not body[comment + 1].strip().startswith(("del ", "#"))


@pytest.mark.parametrize("batch", [False, True])
def test_an_input_returned_as_a_gradient_is_the_callers_own(batch):
    mod = symgrad.compile({
        "name": "lin", "inputs": {"w": {}, "x": {}}, "steps": {"y": "w*x"}, "output": "y"
    })  # fmt: skip
    x = np.array([1.0, 2.0, 3.0]) if batch else 2.0
    y, grads = mod.value_and_grad(w=np.ones(3) if batch else 1.5, x=x)
    assert np.allclose(grads.w, x) and np.allclose(grads.x, 1.0 if batch else 1.5)
    if batch:
        assert grads.w is not x  # ∂(w*x)/∂w = x, copied
        grads.w[0] = 99.0
        assert x[0] == 1.0
    _, tape = mod.forward(w=np.ones(3) if batch else 1.5, x=x)
    g = mod.backward(tape)
    assert np.allclose(g.w, x)
    if batch:
        assert g.w is not x


@pytest.mark.parametrize("name", ["mlp", "logistic_regression_batch"])
def test_tensor_steps_comments_show_explains_local_derivatives(name):
    """A tensor step's local derivative in the code's comment is the one
    `explain`'s table shows (∂hidden/∂W1 = Xᵀ·(1 - hidden**2)⊙, ∂z/∂w = X)."""
    path = ROOT / "examples" / f"{name}.yaml"
    code = (ROOT / "generated" / f"{name}.py").read_text()
    e = symgrad.explain(path, swell=False)
    shown = 0
    for row in e.backward:
        notes = [x for x in code.splitlines() if f"# ∂{e.output}/∂{row.name} = " in x]
        for t in row.terms:
            if notes and t.text:
                assert all(f"∂{t.user}/∂{row.name} = {t.text}" in x for x in notes)
                shown += 1
    assert shown >= 2
    assert "(tensor rule)" not in code


def test_a_batchs_gradients_are_summed_in_one_line():
    """value_and_grad passes its arguments to `_summed` as one tuple (not each
    differentiated input on a line of its own: 14 lines for udl_toy)."""
    for path in sorted((ROOT / "generated").glob("*.py")):
        calls = [x for x in path.read_text().splitlines() if "_summed(" in x]
        for line in calls:
            if not line.startswith("def "):
                assert line.rstrip().endswith(")"), (path.name, line)
