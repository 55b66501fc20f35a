"""The engine targets (jax, torch, numba) against the numpy target, and in their engines.

Each engine's tests are skipped, with the reason, where the engine is not
installed (`pip install 'symgrad[jax]'`, `[torch]`, `[numba]`). Every example
is compiled for each engine and its value and gradients compared with the
numpy target's (itself checked against finite differences and sympy.diff
elsewhere) to 1e-10; then each engine's own machinery is exercised:
jax.test_util.check_grads of the custom_vjp function, torch.autograd.gradcheck
of the autograd.Function, training with torch.optim, torch.compile, and numba's
parallel loop and on-disk cache.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from symgrad.check import sample_point
from symgrad.codegen import TARGETS
from symgrad.frontend.spec import SpecError, load
from symgrad.ops import OPS
from symgrad.pipeline import build, source
from tests.conftest import EXAMPLES, ROOT
from tests.test_registry import PRINT_ARITY, PRINT_PARAMS

ENGINES = {"jax": "jax", "torch": "torch", "numba": "numba"}
TOLERANCE = 1e-10


def _engine(target: str):
    return pytest.importorskip(
        ENGINES[target],
        reason=f"{ENGINES[target]} is not installed (symgrad[{target}])",
    )


def _supported(target: str, path) -> bool:
    """Whether the target prints every operation of the spec (numba: specs without
    higher derivatives); otherwise compiling it is a clear error."""
    spec = load(path)
    compiled = build(spec)
    if target == "numba" and spec.derivatives:
        return False
    if len(spec.outputs) > 1:  # the engine targets compile one output
        return False
    codes = TARGETS[target].for_program(compiled.unit).printer().codes
    ops = {
        a.op for p in (compiled.backward, compiled.unit) for a in p.forward + p.backward
    }
    return ops <= set(codes)


def _numpy_values(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value, dtype=float)


def _assert_close(got, want, what: str) -> None:
    got, want = _numpy_values(got), _numpy_values(want)
    assert np.all(np.isfinite(want)), (what, want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert np.max(np.abs(got - want), initial=0.0) <= TOLERANCE * scale, (
        what,
        got,
        want,
    )


def _same_as_numpy(module, reference, point: dict) -> None:
    value, gradients = module.value_and_grad(**point)
    want_value, want = reference.value_and_grad(**point)
    _assert_close(value, want_value, "value")
    for name in want._fields:
        _assert_close(getattr(gradients, name), getattr(want, name), name)
    _, tape = module.forward(**point)
    rng = np.random.default_rng(1)
    dy = rng.normal(size=np.shape(want_value))
    _, want_tape = reference.forward(**point)
    backward, want_backward = (
        module.backward(tape, dy),
        reference.backward(want_tape, dy),
    )
    for name in want._fields:
        _assert_close(getattr(backward, name), getattr(want_backward, name), name)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("target", sorted(ENGINES))
def test_every_example_equals_the_numpy_target(target, path):
    _engine(target)
    if not _supported(target, path):
        with pytest.raises(SpecError, match=f"the {target} target"):  # with the reason
            symgrad.compile(path, target=target)
        return
    module = symgrad.compile(path, target=target)
    reference = symgrad.compile(path)
    rng = np.random.default_rng(0)
    for _ in range(2):
        _same_as_numpy(module, reference, sample_point(reference, rng))


@pytest.mark.parametrize("target", sorted(ENGINES))
def test_a_batch_and_a_broadcast_parameter_equal_the_numpy_target(target):
    """udl_toy over a batch of x: parameters scalar (summed), one of them a column
    (summed over the broadcast axis) and one per element."""
    _engine(target)
    module = symgrad.compile(ROOT / "examples/udl_toy.yaml", target=target)
    reference = symgrad.compile(ROOT / "examples/udl_toy.yaml")
    rng = np.random.default_rng(2)
    point = sample_point(reference, rng)
    point["x"] = point["x"] + rng.uniform(-0.01, 0.01, size=(3, 4))
    point["beta0"] = point["beta0"] + rng.uniform(-0.01, 0.01, size=(3, 1))
    point["beta1"] = point["beta1"] + rng.uniform(-0.01, 0.01, size=(3, 4))
    _same_as_numpy(module, reference, point)


@pytest.mark.parametrize("target", ["jax", "torch"])
def test_value_and_grad_takes_an_array_outputs_upstream_gradient(target):
    """An array output: value_and_grad(..., dy) and grad(..., dy) equal the numpy
    target's backward(tape, dy); dy = None is ones."""
    _engine(target)
    spec = {
        "name": "rows_softmax",
        "inputs": {"X": {"shape": ["n", 3]}, "W": {"shape": [3, 4]}},
        "steps": {"out": "softmax(X @ W, axis=-1)"},
    }
    module, reference = symgrad.compile(spec, target=target), symgrad.compile(spec)
    rng = np.random.default_rng(5)
    point = {"X": rng.normal(size=(5, 3)), "W": rng.normal(size=(3, 4))}
    dy = rng.normal(size=(5, 4))
    tape = reference.forward(**point)[1]
    for upstream, expected in (
        (dy, reference.backward(tape, dy)),
        (None, reference.backward(tape, np.ones((5, 4)))),
    ):
        for got in (
            module.value_and_grad(**point, dy=upstream)[1],
            module.grad(**point, dy=upstream),
        ):
            for name in expected._fields:
                np.testing.assert_allclose(
                    _numpy_values(getattr(got, name)),
                    getattr(expected, name),
                    rtol=TOLERANCE,
                    atol=TOLERANCE,
                )


def test_torch_prints_tanhs_adjoint_as_its_fused_kernel():
    """g * (1 - h**2) is torch.ops.aten.tanh_backward(g, h) (one pass, not three),
    in the MLP's value_and_grad, with the numpy target's gradients; where the
    factor has a line of its own (backward), the product stays a product."""
    torch = _engine("torch")
    path = ROOT / "examples" / "mlp.yaml"
    text = source(build(load(path)), "torch")
    fused = "dL_dt1 = torch.ops.aten.tanh_backward(dL_dhidden, hidden)"
    assert text.count(fused) == 2  # value_and_grad and grad
    assert "dL_dt1 = dL_dhidden * t10" in text  # backward: one operation a line
    module, reference = symgrad.compile(path, target="torch"), symgrad.compile(path)
    point = sample_point(reference, np.random.default_rng(6))
    _, expected = reference.value_and_grad(**point)
    _, got = module.value_and_grad(**point)
    for name in expected._fields:
        value = getattr(got, name)
        assert isinstance(value, torch.Tensor)
        np.testing.assert_allclose(
            value.numpy(), getattr(expected, name), rtol=TOLERANCE, atol=TOLERANCE
        )


@pytest.mark.parametrize("target", sorted(ENGINES))
def test_a_step_whose_value_is_a_constant(target):
    """`s0 = a/a` is 1, a Python number in the numpy target's code; PyTorch's
    functions and comparisons take it too (found by the long fuzzer)."""
    _engine(target)
    spec = {
        "name": "constant_step",
        "inputs": {"a": {}, "b": {}},
        "steps": {
            "s0": "a/a",
            "s1": "min(b, s0)",
            "s2": "where(not (s0 <= 0.5) or a >= 1, a, s0)",
            "s3": "s0**sin(b)",
            "y": "s1 + s2 + s3",
        },
        "output": "y",
    }
    module, reference = symgrad.compile(spec, target=target), symgrad.compile(spec)
    for point in ({"a": 0.3, "b": 0.7}, {"a": 1.5, "b": 2.5}):
        _same_as_numpy(module, reference, point)


def test_jax_custom_vjp_passes_check_grads_and_jax_grad_uses_it():
    jax = _engine("jax")
    from jax.test_util import check_grads

    module = symgrad.compile(ROOT / "examples/udl_toy.yaml", target="jax")
    reference = symgrad.compile(ROOT / "examples/udl_toy.yaml")
    point = sample_point(reference, np.random.default_rng(3))
    check_grads(module.function, tuple(point.values()), order=1, modes=["rev"])
    x = point["x"] + np.linspace(-0.01, 0.01, 5)  # near the point: inside the domain
    rest = {k: v for k, v in point.items() if k not in ("x", "omega0")}

    def loss(omega0):  # a user's loss around the compiled function
        return jax.numpy.sum(module.function(x=x, omega0=omega0, **rest) ** 2)

    y, gradients = reference.value_and_grad(x=x, omega0=point["omega0"], **rest)
    # d/dω Σ y² = Σ 2 y ∂y/∂ω, from the numpy target's backward with dy = 2y
    tape = reference.forward(x=x, omega0=point["omega0"], **rest)[1]
    want = reference.backward(tape, 2 * y).omega0
    _assert_close(jax.jit(jax.grad(loss))(point["omega0"]), want, "jax.grad")


def test_torch_function_passes_gradcheck_and_trains_logistic_regression():
    torch = _engine("torch")
    module = symgrad.compile(ROOT / "examples/udl_toy.yaml", target="torch")
    reference = symgrad.compile(ROOT / "examples/udl_toy.yaml")
    point = sample_point(reference, np.random.default_rng(4))
    args = [torch.tensor(point["x"] + np.linspace(-0.01, 0.01, 4))] + [
        torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in point.items()
        if k != "x"
    ]
    assert torch.autograd.gradcheck(module.function, args)
    with pytest.raises(ValueError, match="x cannot require grad"):
        module.function(args[0].clone().requires_grad_(True), *args[1:])

    # logistic regression trained with torch.optim through symgrad's backward
    logistic = symgrad.compile(
        ROOT / "examples/logistic_regression_batch.yaml", target="torch"
    )
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(500, 3, dtype=torch.float64, generator=generator)
    truth = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    y = (torch.rand(500, generator=generator, dtype=torch.float64) < torch.sigmoid(X @ truth)).double()  # fmt: skip
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w, b], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = logistic.function(X, y, w, b)
        loss.backward()
        return loss

    numpy_grad = symgrad.compile(ROOT / "examples/logistic_regression_batch.yaml").grad
    start = numpy_grad(X.numpy(), y.numpy(), w.detach().numpy(), b.item())
    first = closure().item()
    optimizer.step(closure)
    # at the optimum the numpy target's gradient has all but vanished: symgrad's
    # backward drove the optimizer
    end = numpy_grad(X.numpy(), y.numpy(), w.detach().numpy(), b.item())
    assert logistic.function(X, y, w, b).item() < first
    assert np.max(np.abs([*end.w, end.b])) < 1e-5 * np.max(np.abs([*start.w, start.b]))


def test_torch_compile_calls_the_function(tmp_path):
    """torch.compile of a loss that calls the Function (the module imported from its
    file: dynamo reads a function's globals through its module)."""
    _engine("torch")
    from symgrad import cli

    spec = ROOT / "examples/logistic_regression_batch.yaml"
    assert (
        cli.main(["compile", str(spec), "-o", str(tmp_path), "--target", "torch"]) == 0
    )
    script = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import logistic_regression_batch as m
X = torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(10, 3)
y = (torch.arange(10) % 2).double()
w = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
b = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
loss = torch.compile(lambda X, y, w, b: 3 * m.function(X, y, w, b))(X, y, w, b)
loss.backward()
want = m.grad(X, y, w.detach(), b.detach())
assert torch.allclose(w.grad, 3 * want.w, rtol=1e-12, atol=0)
assert torch.allclose(b.grad, 3 * want.b, rtol=1e-12, atol=0)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0 and "InvalidCxxCompiler" in result.stderr:
        pytest.skip("torch.compile needs a C++ compiler, which this machine lacks")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def imported(spec: Path, directory: Path, target: str):
    """The module `symgrad compile` writes for `spec` into `directory`, imported
    from its file (numba caches its loops beside it)."""
    from symgrad import cli

    command = ["compile", str(spec), "-o", str(directory), "--target", target]
    assert cli.main(command) == 0
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(spec.stem)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(spec.stem, None)


def test_numba_parallel_loop_and_cache(tmp_path):
    _engine("numba")
    spec = ROOT / "examples/udl_toy.yaml"
    module = imported(spec, tmp_path, "numba")
    assert module.CACHE
    reference = symgrad.compile(spec)
    point = sample_point(reference, np.random.default_rng(5))
    point["x"] = point["x"] + np.random.default_rng(6).uniform(-0.01, 0.01, 10_000)
    serial = module.value_and_grad(**point)
    module.PARALLEL = True
    parallel = module.value_and_grad(**point)
    _assert_close(parallel[0], serial[0], "value")
    for name in serial[1]._fields:  # sums in another order: rounding only
        _assert_close(getattr(parallel[1], name), getattr(serial[1], name), name)
    _same_as_numpy(module, reference, point)
    assert list((tmp_path / "__pycache__").glob("udl_toy.*.nbi")), "no numba cache"


# ------------------------------------------------------------ the op tables


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_op_is_printed_or_refused_with_a_reason(target, op):
    """A target's table prints the op as a Python expression, or refuses it by name;
    an engine target (a table of its own) must do one of the two for every op."""
    backend = TARGETS[target]
    printer = backend.printer()
    names = tuple(f"operand{i}" for i in range(PRINT_ARITY.get(op, OPS[op].arity)))
    if op == "heaviside":
        names = ("operand0", "0.5")
    params = PRINT_PARAMS.get(op, ())
    if op in printer.codes:
        ast.parse(printer.expression(op, names, params), mode="eval")
        return
    assert backend.codes is None or op in backend.refused, (target, op)
    with pytest.raises(Exception, match=f"the {target} target cannot print {op}"):
        printer.expression(op, names, params)


def test_a_refused_op_is_a_clear_compile_error():
    with pytest.raises(SpecError, match="the numba target cannot print polygamma"):
        symgrad.compile(
            {"name": "pg", "inputs": {"x": {}}, "steps": {"y": "polygamma(1, x)"}},
            target="numba",
        )


@pytest.mark.parametrize("target", sorted(ENGINES))
def test_the_engines_import_name_is_refused_as_a_spec_name(target):
    with pytest.raises(SpecError, match=f"uses the name '{target}'"):
        symgrad.compile(
            {"name": "n", "inputs": {target: {}}, "steps": {"y": f"sin({target})"}},
            target=target,
        )


def test_the_numpy_target_imports_no_engine():
    """symgrad and a numpy-target module import NumPy only, whatever is installed."""
    script = (
        "import sys, symgrad; m = symgrad.compile('examples/udl_toy.yaml');"
        "m.grad(2.3, 1, 2, -3, 0.4, -0.3, 0.1, -0.4, 2, 3, -0.5);"
        "print(sorted({'jax', 'torch', 'numba'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("target", sorted(ENGINES))
def test_a_missing_engine_is_a_clear_error(target, capsys):
    """Without its engine installed, a target's module cannot be imported or checked:
    `symgrad compile --target` says which package is missing (exit 2), no traceback."""
    if importlib.util.find_spec(ENGINES[target]) is not None:
        pytest.skip(f"{ENGINES[target]} is installed")
    from symgrad.cli import main
    from symgrad.pipeline import MissingModule

    spec = str(ROOT / "examples" / "softplus.yaml")
    assert main(["compile", spec, "--target", target, "-o", "-"]) == 2
    err = capsys.readouterr().err
    assert f"imports {ENGINES[target]}, which is not installed" in err
    assert "Traceback" not in err
    with pytest.raises(MissingModule, match=ENGINES[target]):
        symgrad.compile(spec, target=target)
