"""docs/seeds.md runs: every `$ symgrad ...` line on it prints what the page
shows, with the conventions of docs/tutorial.md (tests/test_tutorial.py), and
`# exit status N` after a command for a status other than 0."""

from __future__ import annotations

import re
import shutil

import pytest

from symgrad.check import locals_on_return
from symgrad.pipeline import build, import_source, load_spec, source
from tests.conftest import ROOT
from tests.test_tutorial import (
    FENCE,
    FILE_COMMENT,
    console_commands,
    matches,
    run_symgrad,
)

SEEDS = ROOT / "docs" / "seeds.md"
STATUS = re.compile(r"\s+#\s*exit status (\d+)\s*$")


def test_every_command_on_the_seeds_page_prints_what_it_shows(tmp_path, monkeypatch):
    if not SEEDS.exists():  # an sdist without docs/
        pytest.skip(f"{SEEDS} is not here")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    text = SEEDS.read_text(encoding="utf-8")
    ran = 0
    for m in FENCE.finditer(text):
        lang, body = m.group(1), m.group(2)
        where = f"docs/seeds.md:{text.count(chr(10), 0, m.start()) + 1}"
        if lang == "yaml":
            name = FILE_COMMENT.match(body.splitlines()[0])
            if name:
                (tmp_path / name.group(1)).write_text(body, encoding="utf-8")
        elif lang == "console":
            for command, expected in console_commands(body):
                wanted = STATUS.search(command)
                command = STATUS.sub("", command)
                status, output = run_symgrad(command)
                assert status == (int(wanted.group(1)) if wanted else 0), (
                    f"{where}: `{command}` exited {status}\n{output}"
                )
                assert matches(expected, output), (
                    f"{where}: `{command}` printed\n{output}"
                )
                ran += 1
    assert ran >= 17


SEED_004 = ROOT.parent / "shared" / "seeds" / "004_9f626b9e2d98ecbf.txt"
SIDE_BY_SIDE = "## Seed 004's backward pass, generated and by hand"
CELL = re.compile(r"^\| ∂y/∂(\w+) \| (.*?) \| (`.*?) \| (.*?) \|$", re.M)


def _side_by_side() -> str:
    if not SEEDS.exists():
        pytest.skip(f"{SEEDS} is not here")
    text = SEEDS.read_text(encoding="utf-8")
    assert SIDE_BY_SIDE in text
    return text[text.index(SIDE_BY_SIDE) :]


def test_seed_004s_generated_backward_is_quoted_as_compiled():
    """The page's generated `backward` is today's, and each line of its table is
    in it, with the value the notebook prints for that adjoint."""
    section = _side_by_side()
    compiled = build(load_spec(ROOT / "examples" / "udl_toy.yaml"))
    code = source(compiled)
    backward = code[
        code.index("def backward(") : code.index("\n\n\ndef value_and_grad")
    ]
    blocks = [m.group(2) for m in FENCE.finditer(section) if m.group(1) == "python"]
    assert backward + "\n" in blocks
    module = import_source(code, "udl_toy", compiled)
    _, tape = module.forward(**compiled.spec.point)
    adjoints = locals_on_return(module.backward, tape)
    rows = CELL.findall(section)
    assert len(rows) == 18  # 8 adjoints of steps, 10 gradients
    for name, _, generated, value in rows:
        for line in re.findall(r"`([^`]+)`", generated):
            assert f"    {line}\n" in backward, line
        if value.strip():
            assert f"{adjoints[f'dy_d{name}']:.3f}" == value.strip(), name


def test_seed_004s_notebook_lines_are_quoted_faithfully():
    """The notebook's cell and each chain rule in the table are its own text."""
    section = _side_by_side()
    if not SEED_004.exists():
        pytest.skip(f"{SEED_004} is not here (the seeds live beside the project)")
    notebook = SEED_004.read_text(encoding="utf-8")
    blocks = [m.group(2) for m in FENCE.finditer(section) if m.group(1) == "python"]
    assert blocks[0].rstrip("\n") in notebook
    for _, quoted, _, _ in CELL.findall(section):
        for piece in re.findall(r"`([^`]+)`", quoted):
            assert piece in notebook, piece
