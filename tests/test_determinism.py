"""The same spec gives byte-identical modules: across processes, hash seeds and key order.

Each hash seed gets one fresh interpreter that compiles every example with
both targets (`symgrad compile`, checks included). One of them also compiles
rewritten copies of the examples whose YAML differs only in ways that do not
change their meaning: top-level keys and input options in another order, flow
instead of block style, comments. Every module, and every message, must match
byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import EXAMPLES, ROOT

HASH_SEEDS = ("0", "1", "12345")
TARGETS = ("numpy", "python")

_DRIVER = """
import contextlib, io, json, sys
from pathlib import Path
from symgrad import cli
out, specs = Path(sys.argv[1]), sys.argv[2:]
log = {}
for spec in map(Path, specs):
    for target in ("numpy", "python"):
        err, std = io.StringIO(), io.StringIO()
        folder = out / spec.parent.name / target
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            status = cli.main(["compile", str(spec), "-o", str(folder), "--target", target])
        message = err.getvalue().replace(str(spec.parent), "<dir>")
        log[f"{spec.parent.name}/{spec.name}/{target}"] = [status, message]
print(json.dumps(log, sort_keys=True))
"""


def _reordered(data: dict) -> dict:
    """The same spec with its top-level keys reversed and each input's options reversed."""
    data = dict(reversed(list(data.items())))
    data["inputs"] = {
        name: dict(reversed(list((options or {}).items())))
        for name, options in data["inputs"].items()
    }
    return data


def _write_variants(tmp_path) -> list[str]:
    """Each example rewritten twice: keys reordered in flow style, and in block style."""
    paths = []
    for folder, flow in (("flow", True), ("block", False)):
        (tmp_path / folder).mkdir(parents=True)
        for example in EXAMPLES:
            data = _reordered(yaml.safe_load(example.read_text(encoding="utf-8")))
            text = yaml.safe_dump(
                data, sort_keys=False, default_flow_style=flow, allow_unicode=True
            )
            variant = tmp_path / folder / example.name
            variant.write_text(f"# {example.name}, rewritten\n{text}", encoding="utf-8")
            paths.append(str(variant))
    return paths


def _compile_all(out, seed: str, specs: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(out), *specs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _modules(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_output_is_byte_identical_across_hash_seeds_and_key_order(tmp_path):
    examples = [str(p) for p in EXAMPLES]
    variants = _write_variants(tmp_path / "variants")
    runs = {}
    for seed in HASH_SEEDS:
        specs = examples + (variants if seed == "1" else [])
        out = tmp_path / f"seed{seed}"
        runs[seed] = (out, _compile_all(out, seed, specs))
    logs = {}
    for seed, (_, process) in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        logs[seed] = json.loads(stdout)

    reference = _modules(runs["0"][0] / "examples")
    assert len(reference) >= len(EXAMPLES), "every example compiles with numpy at least"
    assert any(name.startswith("python/") for name in reference)
    for seed in HASH_SEEDS[1:]:
        assert _modules(runs[seed][0] / "examples") == reference, (
            f"PYTHONHASHSEED={seed}"
        )
        for key, result in logs["0"].items():
            assert logs[seed][key] == result, (seed, key)
    for folder in ("flow", "block"):
        assert _modules(runs["1"][0] / folder) == reference, folder
        for key, result in logs["0"].items():
            assert logs["1"][key.replace("examples/", f"{folder}/")] == result, key
