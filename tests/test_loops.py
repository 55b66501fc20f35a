"""The numba target's fused loops for tensor specs (`symgrad/codegen/loops.py`).

value_and_grad and grad run their elementwise steps, and the sums of them, in
`@njit` loops between the matrix products. The plan and the printed source are
checked without numba (what fuses, what stays a NumPy line, the order); with
numba installed, each module's gradients equal the numpy target's for float,
float32, integer, list and non-contiguous arguments, serially and in parallel,
and a wrong shape is a ValueError instead of a read past an array's end.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import symgrad
from symgrad.check import sample_point
from symgrad.codegen import loops
from symgrad.codegen.numba import NUMBA_LOOPS
from symgrad.compiler.optimize import dce
from symgrad.frontend.spec import SpecError
from symgrad.pipeline import build, load_spec, source
from tests.test_engine_targets import imported
from tests.test_tensor_fuzz import _equal

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TENSOR_EXAMPLES = [
    "attention",
    "conv1d_pool",
    "gaussian_nll",
    "logistic_regression_batch",
    "mlp",
    "softmax_cross_entropy",
    "softmax_cross_entropy_labels",
]


def _plan(spec) -> list:
    """value_and_grad's lines and loops (forward and backward planned as one)."""
    unit = build(load_spec(spec)).unit
    unit = dce(unit, roots={unit.output})
    returned = {unit.output} | {g for _, g in unit.gradients if isinstance(g, str)}
    return loops.plan(
        unit.forward + unit.backward, unit.shapes(), returned, NUMBA_LOOPS.fuses
    )


def _members(item) -> list[str]:
    return [a.name for a in item.members]


def _function(text: str, name: str) -> str:
    """The source of the function `name` in a module's text."""
    tree = ast.parse(text)
    (node,) = [n for n in tree.body if getattr(n, "name", None) == name]
    return ast.get_source_segment(text, node)


# ------------------------------------------------------------ the plan (no numba)


def test_the_mlp_fuses_the_loss_and_tanhs_adjoint_around_the_matrix_products():
    """tanh stays NumPy's (SIMD, 10x numba's scalar libm call here); the squared
    error, its mean, its adjoint and b2's sum run in one loop; 1 - hidden**2 moves
    into the backward loop that reads it, which also sums b1's gradient."""
    plan = _plan(EXAMPLES / "mlp.yaml")
    fused = [_members(x) for x in plan if isinstance(x, loops.Loop)]
    assert fused == [
        ["out", "t3", "t4", "L", "t5", "t6", "t7", "dL_dt3", "dL_db2"],
        ["t9", "t10", "dL_dt1", "dL_db1"],
    ]
    lines = [x.name for x in plan if not isinstance(x, loops.Loop)]
    assert lines[:4] == ["t0", "t1", "hidden", "t2"]  # hidden = tanh(...): a line
    mse, adjoint = [x for x in plan if isinstance(x, loops.Loop)]
    assert mse.stored == {"L", "dL_dt3", "dL_db2"}  # t3 and t4 stay in registers
    assert adjoint.stored == {"dL_dt1", "dL_db1"}


def test_independent_steps_of_one_shape_share_a_loop():
    """Logistic regression: the loss terms and the adjoint a - y read the same y;
    one loop over [n] adds up L and dL_db and stores only dL_dz."""
    plan = _plan(EXAMPLES / "logistic_regression_batch.yaml")
    (loop,) = [x for x in plan if isinstance(x, loops.Loop)]
    assert _members(loop) == ["t2", "t3", "L", "dL_dz", "dL_db"]
    assert loop.stored == {"L", "dL_dz", "dL_db"}
    lines = [x.name for x in plan if not isinstance(x, loops.Loop)]
    assert {"a", "t1"} <= set(lines)  # sigmoid and softplus: NumPy's


def test_a_loop_never_waits_on_a_line_that_reads_it():
    """u = x*w feeds a matrix product whose result feeds an elementwise step of
    u's shape: two loops (one would need the product before and after it)."""
    spec = {
        "name": "around_matmul",
        "inputs": {"X": {"shape": ["n", 4]}, "W": {"shape": [4, 4]}},
        "steps": {"u": "X * 2 + 1", "v": "u @ W", "L": "sum(u * v - u)"},
    }
    plan = _plan(spec)
    order = {}
    for i, item in enumerate(plan):
        for name in _members(item) if isinstance(item, loops.Loop) else [item.name]:
            order[name] = i
    for item in plan:
        members = _members(item) if isinstance(item, loops.Loop) else [item.name]
        for a in item.members if isinstance(item, loops.Loop) else [item]:
            for u in a.args:
                if isinstance(u, str) and u in order and u not in members:
                    assert order[u] < order[a.name], (u, a.name)
    matmul = next(x for x in plan if not isinstance(x, loops.Loop) and x.op == "matmul")
    for item in plan:
        if isinstance(item, loops.Loop):
            before = [a for a in item.members if order[a.name] < order[matmul.name]]
            assert not before or len(before) == len(item.members)


@pytest.mark.parametrize(
    "step, looped, numpy",
    [
        ("sum(x**2 * y - y)", "t0 = x[_i] ** 2", None),
        ("sum(sqrt(x**2 + 1) * y)", "math.sqrt(", None),
        # NumPy's SIMD exp; a power other than an integer or 1/2 (pow in numba)
        ("sum(exp(x) * y)", None, "np.exp(x)"),
        ("sum(x**1.5 * y)", None, "np.power(x, 1.5)"),
    ],
)
def test_what_a_loop_computes(step, looped, numpy):
    spec = {
        "name": "what_fuses",
        "inputs": {"x": {"shape": ["n"]}, "y": {"shape": ["n"]}},
        "steps": {"L": step},
    }
    text = source(build(load_spec(spec)), "numba")
    value_and_grad = _function(text, "value_and_grad")
    loop = _function(text, "_loop0")  # each has one, with the sum in it
    assert "L += " in loop
    if looped:
        assert looped in loop
    if numpy:
        assert numpy in value_and_grad and numpy.replace("np.", "math.") not in loop


def test_the_printed_loop_reads_broadcast_operands_at_their_own_axes():
    """b1 [h] against [n, h] is read as b1[_j]; a sum over axis 0 adds into
    _dL_db1[_j], so that loop keeps _i serial (numba.prange would race)."""
    text = source(build(load_spec(EXAMPLES / "mlp.yaml")), "numba")
    mse = _function(text, "_loop0")
    assert "b2[_j] + t2[_i, _j]" in mse
    assert "_dL_db2[_j] += dL_dt3" in mse
    assert "for _i in range(_n0):" in mse and "prange" not in mse
    assert "L /= _n0 * _n1" in mse  # the mean
    logistic = source(
        build(load_spec(EXAMPLES / "logistic_regression_batch.yaml")), "numba"
    )
    assert "for _i in numba.prange(_n0):" in _function(logistic, "_loop0")


def test_grad_reuses_value_and_grads_loop_where_they_are_the_same():
    text = source(build(load_spec(EXAMPLES / "mlp.yaml")), "numba")
    assert text.count("@_compiled") == 3  # two for value_and_grad, one more for grad
    assert _function(text, "grad").count("_loop1[PARALLEL]") == 1


def test_a_scalar_spec_keeps_the_one_loop_numba_module():
    text = source(build(load_spec(EXAMPLES / "udl_toy.yaml")), "numba")
    assert "_value_and_grad_loop" in text and "_loop0" not in text


def test_what_the_numba_target_still_refuses():
    with pytest.raises(SpecError, match="the numba target has no jvp"):
        source(build(load_spec(EXAMPLES / "newton_logistic.yaml")), "numba")
    with pytest.raises(SpecError, match="the numba target compiles specs with one"):
        source(build(load_spec(EXAMPLES / "polar_jacobian.yaml")), "numba")


def test_the_module_is_deterministic():
    compiled = build(load_spec(EXAMPLES / "gaussian_nll.yaml"))
    assert source(compiled, "numba") == source(compiled, "numba")


# ------------------------------------------------------------ with numba


def _numba():
    return pytest.importorskip(
        "numba", reason="numba is not installed (symgrad[numba])"
    )


def _close(got, want, rtol=1e-10) -> None:
    _equal(got, want, rtol)


@pytest.mark.parametrize("name", TENSOR_EXAMPLES)
def test_arguments_of_every_kind_give_the_numpy_targets_gradients(name):
    """float64, float32 (compared at float32's precision), integers, lists, and
    arrays that are views with strides of their own (X.T.copy().T)."""
    _numba()
    path = EXAMPLES / f"{name}.yaml"
    module, reference = symgrad.compile(path, target="numba"), symgrad.compile(path)
    rng = np.random.default_rng(3)
    point = sample_point(reference, rng)
    want = reference.value_and_grad(**point)
    _close(module.value_and_grad(**point), want)
    _close((want[0], module.grad(**point)), want)
    strided = {
        k: np.asfortranarray(v) if np.ndim(v) == 2 else v for k, v in point.items()
    }
    _close(module.value_and_grad(**strided), want)
    lists = {k: v.tolist() if np.ndim(v) else v for k, v in point.items()}
    _close(module.value_and_grad(**lists), want)
    single = {
        k: v.astype(np.float32) if np.ndim(v) and v.dtype.kind == "f" else v
        for k, v in point.items()
    }
    _close(module.value_and_grad(**single), reference.value_and_grad(**single), 1e-4)


def test_integer_arguments():
    _numba()
    spec = {
        "name": "integers",
        "inputs": {"x": {"shape": ["n", 3]}, "b": {"shape": [3]}, "c": {}},
        "steps": {"L": "sum((x + b)**2 * c - x * b)"},
    }
    module, reference = symgrad.compile(spec, target="numba"), symgrad.compile(spec)
    point = {"x": np.arange(12).reshape(4, 3) - 5, "b": np.array([1, -2, 3]), "c": 2}
    _close(module.value_and_grad(**point), reference.value_and_grad(**point))
    assert module.grad(**point).x.dtype == np.float64


def test_parallel_loops_give_the_serial_results():
    _numba()
    path = EXAMPLES / "logistic_regression_batch.yaml"
    module = symgrad.compile(path, target="numba")
    rng = np.random.default_rng(4)
    point = {
        "X": rng.normal(size=(1000, 2)),
        "y": (rng.uniform(size=1000) < 0.5).astype(float),
        "w": rng.normal(size=2),
        "b": 0.3,
    }
    serial = module.value_and_grad(**point)
    module.PARALLEL = True
    _close(module.value_and_grad(**point), serial)  # sums in another order


def test_a_wrong_shape_is_a_value_error_even_unchecked():
    """CHECK_ARGUMENTS = False skips the module's shape check; the loop still checks
    the arrays it reads (numba does not check bounds)."""
    _numba()
    path = EXAMPLES / "logistic_regression_batch.yaml"
    module = symgrad.compile(path, target="numba")
    module.CHECK_ARGUMENTS = False
    X, w = np.ones((5, 2)), np.ones(2)
    with pytest.raises(ValueError, match="shapes do not fit together"):
        module.value_and_grad(X, np.ones(4), w, 0.1)


def test_a_module_written_to_a_file_caches_its_loops(tmp_path):
    _numba()
    spec = EXAMPLES / "mlp.yaml"
    module = imported(spec, tmp_path, "numba")
    assert module.CACHE
    reference = symgrad.compile(spec)
    point = sample_point(reference, np.random.default_rng(8))
    _close(module.value_and_grad(**point), reference.value_and_grad(**point))
    assert list((tmp_path / "__pycache__").glob("mlp._loop0-*.nbi")), "no cache"


def test_an_array_outputs_upstream_gradient():
    """attention's output is an array: its backward loops start from dy (given
    between forward and backward), None being ones."""
    _numba()
    path = EXAMPLES / "attention.yaml"
    module, reference = symgrad.compile(path, target="numba"), symgrad.compile(path)
    point = sample_point(reference, np.random.default_rng(9))
    out, tape = reference.forward(**point)
    dy = np.random.default_rng(10).normal(size=np.shape(out))
    for upstream, seed in ((dy, dy), (None, np.ones_like(out))):
        want = (out, reference.backward(tape, seed))
        _close(module.value_and_grad(**point, dy=upstream), want)
        _close((out, module.grad(**point, dy=upstream)), want)
