"""`symgrad exercise` (issue 14, item 7): a notebook whose backward lines are the
student's, and a cell that marks them. Run in-process (exec of the code
cells) always, and headless through a Jupyter kernel (nbclient) when
nbclient and ipykernel are installed (the test extra has them)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json

import pytest

from symgrad import cli
from symgrad.pipeline import build, load_spec
from symgrad.teach.exercise import TODO, exercise, notebook_text
from tests.conftest import ROOT

TOY = ROOT / "examples/udl_toy.yaml"
POINT = {
    "x": 2.3, "beta0": 1.0, "beta1": 2.0, "beta2": -3.0, "beta3": 0.4, "beta4": -0.3,
    "omega0": 0.1, "omega1": -0.4, "omega2": 2.0, "omega3": 3.0, "omega4": -0.5,
}  # fmt: skip
KERNEL = all(
    importlib.util.find_spec(m) is not None
    for m in ("nbclient", "nbformat", "ipykernel")
)


def _notebook(path=TOY, point=POINT, solution=False) -> dict:
    return exercise(build(load_spec(path)), point, solution=solution)


def _source(cell) -> str:
    return (
        cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    )


def _run_in_process(nb: dict) -> str:
    """What the code cells print, run in order in one namespace."""
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile(_source(cell), "<cell>", "exec"), namespace)  # noqa: S102
    return out.getvalue()


def _with_line(nb: dict, name: str, line: str) -> dict:
    """The notebook with the student's line for `name` replaced by `line`."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        lines = _source(cell).split("\n")
        cell["source"] = "\n".join(
            line if x.startswith(f"{name} = ") else x for x in lines
        )
    return nb


def test_the_blank_notebook_asks_for_each_backward_line():
    nb = _notebook()
    code = [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    forward, backward = code[1], code[2]
    assert "f0 = beta0 + omega0 * x" in forward and "h1 = np.sin(f0)" in forward
    assert f"dy_dh3 = {TODO}" in backward and f"dy_dbeta0 = {TODO}" in backward
    assert "# ∂y/∂h3 = ∂y/∂f3·∂f3/∂h3\n" in backward + "\n"
    assert "(∂f3/∂h3 = omega3)" not in backward  # the local derivative is the exercise
    printed = _run_in_process(nb)
    assert (
        "18 of 18 lines to fix; the first:\ndy_dh4 is not filled in yet (TODO)"
        in printed
    )


def test_the_solution_passes_and_a_wrong_line_is_named():
    solved = _notebook(solution=True)
    assert "All 18 lines are right." in _run_in_process(solved)
    # ∂f3/∂h3 mistaken for h3 (the value, not the weight): the line of dy_dh3
    wrong = _with_line(solved, "dy_dh3", "dy_dh3 = dy_df3 * h3")
    printed = _run_in_process(wrong)
    assert "lines to fix; the first:\ndy_dh3 = " in printed
    assert "is wrong: the true value is -0.632307" in printed


def test_a_tensor_spec_solution_passes():
    spec = load_spec(ROOT / "examples/mlp.yaml")
    from symgrad.check import sample_point
    from symgrad.pipeline import import_source, source

    compiled = build(spec)
    module = import_source(source(compiled), spec.name, compiled)
    import numpy as np

    point = sample_point(module, np.random.default_rng(0))
    nb = exercise(compiled, point, solution=True)
    # dL_dt3 (of the loss's temporary; the mean's seed multiplies it directly),
    # dL_dhidden, dL_dt1, the 4 gradients
    assert "All 7 lines are right." in _run_in_process(nb)


def test_the_file_is_a_valid_notebook(tmp_path):
    text = notebook_text(_notebook())
    data = json.loads(text)
    assert data["nbformat"] == 4 and data["metadata"]["kernelspec"]["name"] == "python3"
    if importlib.util.find_spec("nbformat") is not None:
        import nbformat

        nbformat.validate(nbformat.reads(text, as_version=4))


def test_cli_writes_the_exercise(tmp_path, capsys):
    target = tmp_path / "ex.ipynb"
    at = [f"--at={k}={v}" for k, v in POINT.items()]
    assert cli.main(["exercise", str(TOY), "-o", str(target), *at]) == 0
    data = json.loads(target.read_text(encoding="utf-8"))
    assert any("dy_df3 = None  # TODO" in _source(c) for c in data["cells"])
    assert cli.main(["exercise", str(TOY), "-o", str(target), "--at", "q=1"]) == 2
    assert "no such input" in capsys.readouterr().err


@pytest.mark.skipif(not KERNEL, reason="nbclient, nbformat or ipykernel not installed")
@pytest.mark.parametrize("solution", [False, True])
def test_the_notebook_runs_headless(tmp_path, solution):
    import nbclient
    import nbformat

    nb = nbformat.reads(notebook_text(_notebook(solution=solution)), as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # a cell that raised would raise here: the blank one fails politely
    last = nb.cells[-1].outputs
    printed = "".join(o.get("text", "") for o in last if o.output_type == "stream")
    if solution:
        assert "All 18 lines are right." in printed
    else:
        assert (
            "18 of 18 lines to fix; the first:\ndy_dh4 is not filled in yet" in printed
        )


def test_examples_are_copied_and_existing_files_kept(tmp_path, capsys):
    target = tmp_path / "mine"
    assert cli.main(["examples", str(target)]) == 0
    shipped = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
    assert sorted(p.name for p in target.iterdir()) == shipped
    (target / "udl_toy.yaml").write_text("# my edits\n", encoding="utf-8")
    assert cli.main(["examples", str(target)]) == 0
    assert (target / "udl_toy.yaml").read_text(encoding="utf-8") == "# my edits\n"
    assert "kept the existing" in capsys.readouterr().out
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    assert cli.main(["examples", str(afile)]) == 2
