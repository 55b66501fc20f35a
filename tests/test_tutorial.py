"""docs/tutorial.md runs: every code block in it is executed, so it cannot rot.

Conventions of the tutorial, which this test enforces:

* ```yaml blocks whose first line is a comment naming a file (`# logistic.yaml`)
  are written to that file before anything after them runs.
* ```python blocks run in order in one namespace. A ```text block right after
  a python block is the output it prints.
* ```console / ```bash blocks: each `$ symgrad ...` line runs through
  `symgrad.cli.main` in-process; the lines after it are its output.
* Expected output is compared line by line, in order, with blank lines and
  trailing spaces ignored; a line `...` stands for any number of lines (the
  shown lines may be a selection only where a `...` says so), and `...`
  inside a line for any text (a number that varies by platform).

Everything runs in an empty temporary directory: the tutorial copies the
examples there itself (`symgrad examples`), as a reader would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex

import pytest

from symgrad import cli
from tests.conftest import ROOT

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
FILE_COMMENT = re.compile(r"#\s*([\w./-]+\.ya?ml)\s*$")


def blocks() -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced block, in order."""
    text = TUTORIAL.read_text(encoding="utf-8")
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def matches(expected: str, actual: str) -> bool:
    """`expected` (with `...` wildcards) against `actual`, line by line."""
    want = [line.rstrip() for line in expected.splitlines() if line.strip()]
    have = [line.rstrip() for line in actual.splitlines() if line.strip()]
    return _match(want, have)


def _match(want: list[str], have: list[str]) -> bool:
    if not want:
        return not have
    if want[0].strip() == "...":
        return any(_match(want[1:], have[i:]) for i in range(len(have) + 1))
    return bool(have) and _same_line(want[0], have[0]) and _match(want[1:], have[1:])


def _same_line(want: str, have: str) -> bool:
    """Equal, where `...` inside a line stands for any text (a volatile number)."""
    if "..." not in want:
        return want == have
    pattern = ".*".join(re.escape(part) for part in want.split("..."))
    return re.fullmatch(pattern, have) is not None


def console_commands(body: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block."""
    result: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            result.append((line[2:].strip(), []))
        elif result:
            result[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"output before any command: {line!r}")
    return [(command, "\n".join(out)) for command, out in result]


def run_symgrad(command: str) -> tuple[int, str]:
    argv = shlex.split(command)
    assert argv[0] == "symgrad", command
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv[1:])
    return status, out.getvalue() + err.getvalue()


def test_the_tutorial_runs(tmp_path, monkeypatch):
    if not TUTORIAL.exists():  # an sdist without docs/
        pytest.skip(f"{TUTORIAL} is not here")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__tutorial__"}
    found = blocks()
    assert {"python", "console", "yaml", "text"} <= {lang for lang, _, _ in found}
    previous_output: str | None = None  # what the last python block printed
    ran = 0
    for lang, body, line in found:
        where = f"docs/tutorial.md:{line}"
        if lang == "yaml":
            first = body.splitlines()[0] if body.strip() else ""
            name = FILE_COMMENT.match(first)
            if name:
                (tmp_path / name.group(1)).write_text(body, encoding="utf-8")
            previous_output = None
        elif lang == "python":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(body, where, "exec"), namespace)  # noqa: S102
            previous_output = printed.getvalue()
            ran += 1
        elif lang == "text" and previous_output is not None:
            assert matches(body, previous_output), (
                f"{where}: the python block above printed\n{previous_output}"
            )
            previous_output = None
        elif lang in ("console", "bash", "shell"):
            for command, expected in console_commands(body):
                if not command.startswith("symgrad "):
                    continue  # pip install and the like: not run here
                if command.startswith("symgrad plot ") and not HAVE_MATPLOTLIB:
                    continue  # the optional extra is not installed
                status, output = run_symgrad(command)
                assert status == 0, f"{where}: `{command}` exited {status}\n{output}"
                if expected.strip():
                    assert matches(expected, output), (
                        f"{where}: `{command}` printed\n{output}"
                    )
                ran += 1
            previous_output = None
        else:
            previous_output = None
    assert ran >= 8


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ("a\nb", "a\nb\n", True),
        ("a\n...\nd", "a\nb\nc\nd", True),
        ("a\n...", "a\nb", True),
        ("a\nc", "a\nb\nc", False),
        ("a", "a\nb", False),
        ("error 1...e-10)", "error 1.3e-10)", True),
        ("error 1...e-10)", "error 1.3e-11)", False),
    ],
)
def test_output_matching(expected, actual, ok):
    assert matches(expected, actual) is ok
