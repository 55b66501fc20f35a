"""docs/seeds.md runs: every `$ symgrad ...` line on it prints what the page
shows, with the conventions of docs/tutorial.md (tests/test_tutorial.py), and
`# exit status N` after a command for a status other than 0."""

from __future__ import annotations

import re
import shutil

import pytest

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
