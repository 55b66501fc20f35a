"""Every example compiles, checks, matches sympy.diff, and its golden module is fresh.

Regenerate the golden files after a change to the compiler with
`symgrad compile examples/*.yaml` (and read one of them as a learner would).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from symgrad import cli
from symgrad.check import check_gradients, locals_on_return, sample_point
from symgrad.codegen import TARGETS
from symgrad.frontend.spec import load
from symgrad.pipeline import build, import_source, source
from tests.conftest import EXAMPLES, ROOT, exact_gradient


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert cli.main(["compile", *map(str, EXAMPLES), "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_golden_module_is_fresh(path, regenerated):
    name = load(path).name
    fresh = (regenerated / f"{name}.py").read_text()
    golden = ROOT / "generated" / f"{name}.py"
    assert golden.exists(), f"run: symgrad compile {path.relative_to(ROOT)}"
    assert golden.read_text() == fresh, (
        f"stale; run: symgrad compile {path.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_gradients(path, target):
    """Finite differences at random points, and sympy.diff evaluated exactly (1e-12).

    Tensor examples are compared with hand-written NumPy in test_tensors.py.
    """
    compiled = build(load(path))
    tensor = compiled.unit.tensor
    if tensor and target == "python":
        pytest.skip("the python target compiles scalar specs only")
    module = import_source(source(compiled, target), compiled.spec.name, compiled)
    rng = np.random.default_rng(7)
    for _ in range(3):
        point = sample_point(module, rng)
        report = check_gradients(module, point)
        assert report.ok, str(report)
        if tensor:
            continue
        value, exact = exact_gradient(compiled.spec, point)
        y, grads = module.value_and_grad(**point)
        assert float(y) == pytest.approx(value, rel=1e-12, abs=1e-14)
        for name, reference in exact.items():
            got = float(getattr(grads, name))
            assert got == pytest.approx(reference, rel=1e-11, abs=1e-13), name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_value_and_grad_keeps_no_intermediate_to_the_end(path):
    """numpy target: every intermediate is deleted after its last use, so at
    return only the arguments and what is returned are alive (peak memory as
    in hand-written NumPy; benchmarks/peak_memory.py measures it)."""
    compiled = build(load(path))
    module = import_source(source(compiled), compiled.spec.name, compiled)
    point = sample_point(module, np.random.default_rng(3))
    alive = set(locals_on_return(module.value_and_grad, **point))
    returned = {compiled.unit.output, "gradients"}
    returned.add("args")  # the arguments themselves, for a batch's `_summed`
    returned |= {g for _, g in compiled.unit.gradients if isinstance(g, str)}
    assert alive - set(point) - returned == set()


def _prints(target: str, path) -> bool:
    """Whether `target` compiles the example: its operations printed, its derivatives
    carried (an example it cannot compile is refused elsewhere with a clear error)."""
    spec = load(path)
    compiled = build(spec)
    backend = TARGETS[target].for_program(compiled.unit)
    if (
        (compiled.unit.tensor and not backend.tensors)
        or (spec.derivatives and not backend.higher)
        or (len(spec.outputs) > 1 and not backend.several_outputs)
    ):
        return False
    codes = backend.printer().codes
    body = (
        compiled.backward.forward + compiled.backward.backward + compiled.unit.backward
    )
    return {a.op for a in body} <= set(codes)


@pytest.mark.parametrize("target", ["numpy", "python", "jax", "torch", "numba"])
def test_generated_code_is_ruff_clean(tmp_path, target):
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(ROOT / ".venv/bin"))
    if ruff is None:
        pytest.skip("ruff is not installed (pip install '.[test]')")
    if target in ("jax", "torch", "numba"):  # compile checks the gradients: runs them
        pytest.importorskip(target, reason=f"{target} is not installed")
    out = tmp_path / "generated"  # inside the project's ruff configuration via --config
    specs = [p for p in EXAMPLES if _prints(target, p)]
    assert (
        cli.main(["compile", *map(str, specs), "-o", str(out), "--target", target]) == 0
    )
    config = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run([ruff, *command, *config, "--no-cache", str(out)],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_generated_imports_only_numpy_or_math():
    for path in sorted((ROOT / "generated").glob("*.py")):
        imports = [
            line
            for line in path.read_text().splitlines()
            if line.startswith(("import", "from"))
        ]
        allowed = {
            "import numpy as np",
            "import math",
            "from typing import Any, NamedTuple",
        }
        assert set(imports) <= allowed, (path.name, imports)


def test_golden_modules_import_from_a_fresh_interpreter():
    code = "import generated.udl_toy as m; print(m.grad(2.3, 1, 2, -3, 0.4, -0.3, 0.1, -0.4, 2, 3, -0.5).beta0)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert round(float(out.stdout), 3) == -0.646


@pytest.mark.parametrize("target", ["numpy", "python"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_grad_gives_value_and_grads_gradients(path, target):
    """grad, with a body of its own or not, returns value_and_grad's gradients, bit
    for bit (the same lines, less those that only the output reads)."""
    compiled = build(load(path))
    if compiled.unit.tensor and target == "python":
        pytest.skip("the python target compiles scalar specs only")
    module = import_source(source(compiled, target), compiled.spec.name, compiled)
    point = sample_point(module, np.random.default_rng(11))
    got, want = module.grad(**point), module.value_and_grad(**point)[1]
    assert got._fields == want._fields
    for name, g, w in zip(got._fields, got, want, strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)


def test_logistic_regressions_grad_skips_the_loss(monkeypatch):
    """grad computes only what the gradients read: logistic regression's loss (the
    softplus of every logit, and its sum) is left to value_and_grad."""
    compiled = build(load(ROOT / "examples" / "logistic_regression_batch.yaml"))
    module = import_source(source(compiled), compiled.spec.name, compiled)
    point = sample_point(module, np.random.default_rng(5))
    want = module.value_and_grad(**point)[1]

    def loss_computed(x):
        raise AssertionError("the loss's softplus was computed")

    monkeypatch.setattr(module, "_softplus", loss_computed)
    got = module.grad(**point)
    np.testing.assert_array_equal(got.w, want.w)
    with pytest.raises(AssertionError, match="softplus"):  # value_and_grad needs it
        module.value_and_grad(**point)
