"""The corpus of broken specs in tests/bad_specs/: each one is an error people can act on.

For every spec: exit status 2, exactly one line on stderr of the form
`file:line: error: [step 'name': ]message` with the expected line, step and
message (tests/bad_specs/expected.yaml), no traceback, and nothing written:
existing output files stay byte-identical, even the one of a good spec
compiled in the same command.
"""

from __future__ import annotations

import re

import pytest
import yaml

from symgrad import cli
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
