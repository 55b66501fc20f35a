"""A learner's loop: the spec's own point (`at:`), their own answers marked
(`expect:`), and the labs' finite differences (`check --method/--step/--sweep`).

The numbers are the seeds' notebooks': seed 004 (UDL, CM20315 Gradients I)
prints its true values at three decimals; seeds 001 and 002 compute
k = (J(w + eps) - J)/eps with eps = 0.001 and print J_epsilon and k.
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

import symgrad
from symgrad import cli
from symgrad.check import finite_difference, step_sweep
from symgrad.frontend.spec import SpecError, load, parse
from tests.conftest import ROOT

TOY = ROOT / "examples" / "udl_toy.yaml"
SQUARE = ROOT / "examples" / "derivative_square.yaml"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# seed 004's point, and the UDL notebook's printed true values
SEED_004_POINT = {
    "x": 2.3, "beta0": 1.0, "beta1": 2.0, "beta2": -3.0, "beta3": 0.4, "beta4": -0.3,
    "omega0": 0.1, "omega1": -0.4, "omega2": 2.0, "omega3": 3.0, "omega4": -0.5,
}  # fmt: skip

STUDENT = """\
name: udl_student
inputs: {x: {}, beta0: {}, beta1: {}, beta2: {}, beta3: {}, beta4: {},
         omega0: {}, omega1: {}, omega2: {}, omega3: {}, omega4: {}}
wrt: [beta0, beta1, beta2, beta3, beta4, omega0, omega1, omega2, omega3, omega4]
steps:
  f0: beta0 + omega0*x
  h1: sin(f0)
  f1: beta1 + omega1*h1
  h2: exp(f1)
  f2: beta2 + omega2*h2
  h3: cos(f2)
  f3: beta3 + omega3*h3
  h4: log(f3)
  y: beta4 + omega4*h4
at: {x: 2.3, beta0: 1.0, beta1: 2.0, beta2: -3.0, beta3: 0.4, beta4: -0.3,
     omega0: 0.1, omega1: -0.4, omega2: 2.0, omega3: 3.0, omega4: -0.5}
expect:
  f0: 1.230
  h2: 5.086
  dydh3: -0.632
  dy_df0: -0.646
  dydbeta0: -0.646
"""


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _write(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ----------------------------------------------------------------- at:


def test_the_toy_spec_carries_seed_004s_point():
    assert load(TOY).point == SEED_004_POINT


def test_explain_uses_the_specs_point_without_at(capsys):
    status, out, _ = _run(capsys, "explain", TOY)
    assert status == 0
    assert out.startswith("udl_toy: the chain rule at x=2.3, beta0=1, beta1=2")
    e = symgrad.explain(TOY)
    assert e.point == SEED_004_POINT
    assert round(e.adjoint("f0"), 3) == -0.646
    # --at (and at=) override single entries of the spec's point
    assert symgrad.explain(TOY, at={"x": 0.5}).point["x"] == 0.5
    assert symgrad.explain(TOY, at={"x": 0.5}).point["beta2"] == -3.0


def test_check_uses_the_specs_point_once(capsys):
    status, out, _ = _run(capsys, "check", TOY)
    assert status == 0
    assert "ok: 1 point(s)" in out
    assert "at x=2.3, beta0=1, beta1=2" in out


def test_an_array_point_reproduces_seed_000s_numpy_cell():
    """logistic_regression_batch.yaml's at: is the notebook's X, y, w, b."""
    e = symgrad.explain(ROOT / "examples" / "logistic_regression_batch.yaml")
    np.testing.assert_allclose(e.gradients["w"], [0.1537824, 0.05303517], atol=5e-9)
    assert e.gradients["b"] == pytest.approx(0.6494514041852678, rel=1e-14)


BAD_AT = {
    "unknown input": ("at: {q: 1}", "at: 'q' is not an input", 5),
    "misspelled input": ("at: {xx: 1}", "(did you mean 'x'?)", 5),
    "a step": ("at: {J: 1}", "at: 'J' is a step", 5),
    "text": ("at: {x: one}", "'x' must be a number or a list of numbers", 5),
    "wrong shape": ("at: {v: [1, 2]}", "'v' has shape [2]; the spec declares [3]", 5),
    "ragged": ("at: {v: [[1], [2, 3]]}", "'v' is not a rectangular array", 5),
}


@pytest.mark.parametrize("case", sorted(BAD_AT))
def test_a_bad_at_is_an_error_with_its_line(case, tmp_path, capsys):
    line, message, lineno = BAD_AT[case]
    spec = _write(
        tmp_path,
        f"name: bad\ninputs: {{x: {{}}, v: {{shape: [3]}}}}\nsteps:\n  J: x*sum(v)\n{line}\n",
    )
    with pytest.raises(SpecError) as err:
        load(spec)
    assert message in str(err.value)
    assert err.value.line == lineno
    status, _, stderr = _run(capsys, "check", spec)
    assert status == 2
    assert f"{spec}:{lineno}: error: " in stderr


# ----------------------------------------------------------------- expect:


def test_the_notebooks_true_values_are_all_right(capsys):
    status, out, _ = _run(capsys, "check", TOY)
    assert status == 0
    assert "expect: 22 of 22 right" in out
    assert "WRONG" not in out


def test_a_student_with_one_wrong_value_is_told_the_true_one(tmp_path, capsys):
    spec = _write(tmp_path, STUDENT, "student.yaml")
    status, out, _ = _run(capsys, "check", spec)
    assert status == 1
    assert "expect: 4 of 5 right" in out
    assert f"{spec}:18: f0 = 1.230: right" in out
    assert f"{spec}:19: h2 = 5.086: WRONG: the true value is 5.068 (5.06829505" in out
    assert f"{spec}:20: dydh3 = -0.632: right" in out
    assert f"{spec}:21: dy_df0 = -0.646: right" in out


@pytest.mark.parametrize(
    ("written", "right"),
    [
        ("5.07", True),  # two decimals: 5.0683 rounds to 5.07
        ("5.070", False),  # three: it does not
        ("5.068", True),
        ("5.0683", True),
        ("5.0682", False),  # the true value is 5.068295...
        ("5", True),  # a whole number: within 0.5
        ("6", False),
        ("[5.068]", False),  # a list where the value is a scalar
    ],
)
def test_answers_are_compared_at_the_precision_written(written, right, tmp_path):
    from symgrad.pipeline import build
    from symgrad.teach.answers import mark

    text = STUDENT.split("expect:")[0] + f"expect:\n  h2: {written}\n"
    (only,) = mark(build(load(_write(tmp_path, text))))
    assert only.right is right
    assert only.expected.text == written


def test_gradients_of_vectors_are_marked_entry_by_entry(tmp_path):
    from symgrad.pipeline import build
    from symgrad.teach.answers import mark

    spec = _write(
        tmp_path,
        """\
        name: batch
        inputs: {X: {shape: [n, d]}, y: {shape: [n]}, w: {shape: [d]}, b: {}}
        wrt: [w, b]
        steps:
          z: X @ w + b
          a: 1/(1 + exp(-z))
          L: sum(-y*log(a) - (1 - y)*log(1 - a))
        at: {X: [[0.1, 0.2], [0.4, 0.5], [0.5, 0.3]], y: [0, 1, 0], w: [0.1, 0.2], b: 0.1}
        expect:
          dL_dw: [0.1537824, 0.05303517]
          dLdb: 0.6494514
          dL_dz: [0.5374, -0.4403, 0.5523]
          a: [0.5374, 0.5597, 0.56]  # 0.5523
        """,
    )
    marks = {m.expected.name: m.right for m in mark(build(load(spec)))}
    assert marks == {"dL_dw": True, "dLdb": True, "dL_dz": True, "a": False}


BAD_EXPECT = {
    "unknown name": ("  dydq: 1.0", "expect: unknown name 'dydq'"),
    "close name": ("  dy_dfo: 1.0", "(did you mean 'dy_df0'?)"),
    "not a number": ("  f0: one", "'f0' must be a number or a list of numbers"),
    "input not differentiated": ("  dydx: 1.0", "unknown name 'dydx'"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPECT))
def test_a_bad_expect_is_an_error_with_its_line(case, tmp_path, capsys):
    line, message = BAD_EXPECT[case]
    text = STUDENT.split("expect:")[0] + f"expect:\n{line}\n"
    spec = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load(spec)
    assert message in str(err.value)
    assert err.value.line == 18
    status, _, stderr = _run(capsys, "check", spec)
    assert status == 2
    assert f"{spec}:18: error: " in stderr


def test_expect_needs_the_whole_point():
    text = STUDENT.replace("x: 2.3, ", "")
    with pytest.raises(SpecError, match=r"give every input under at: \(x missing\)"):
        parse(text)


# ----------------------------------------------------------------- the labs' differences

# (example, w, the notebook's J_epsilon and k), seeds 001 and 002
LAB = {
    "derivative_square": (3.0, 9.006001, 6.000999999999479),
    "derivative_double": (3.0, 6.002, 1.9999999999997797),
    "derivative_cube": (2.0, 8.012006000999998, 12.006000999997823),
    "derivative_inverse": (2.0, 0.49975012493753124, -0.2498750624687629),
    "derivative_inverse_square": (4.0, 0.06246876171484496, -0.031238285155041345),
}


@pytest.mark.parametrize("example", sorted(LAB))
def test_forward_differences_are_the_notebooks_to_the_last_digit(example):
    w, j_epsilon, k = LAB[example]
    module = symgrad.compile(ROOT / "examples" / f"{example}.yaml")
    d = finite_difference(module, {"w": w}, "w", method="forward", step=0.001)
    assert d.plus == j_epsilon
    assert d.estimate == k
    # the notebook's smaller step: k = 6.000000496442226 (seed 001)
    if example == "derivative_square":
        assert finite_difference(module, {"w": w}, "w", step=1e-9).estimate == (
            6.000000496442226
        )


def test_check_forward_prints_the_labs_line(capsys):
    status, out, _ = _run(
        capsys, "check", SQUARE, "--method", "forward", "--step", "1e-3"
    )
    assert status == 0
    assert "forward differences, eps = 0.001, at w = 3.0" in out
    assert (
        "w: J = 9.0, J(w + eps) = 9.006001, dJ_dw ~= k = (J(w + eps) - J)/eps = 6.001000"
        in out
    )
    assert "symgrad's gradient 6.0" in out


def test_check_central_and_backward(capsys):
    _, out, _ = _run(capsys, "check", SQUARE, "--method", "central", "--step", "0.5")
    # (3.5**2 - 2.5**2) / 1 = 6 exactly: w**2's central difference has no error
    assert "J(w - eps) = 6.25" in out and "= 6.000000 (6.0)" in out
    _, out, _ = _run(capsys, "check", SQUARE, "--method", "backward", "--step", "0.5")
    assert "(J - J(w - eps))/eps = 5.500000 (5.5)" in out


def test_seed_004s_finite_difference_cells():
    """dydbeta4_fd and dydomega0_fd: forward differences with step 0.0001."""
    module = symgrad.compile(TOY)
    beta4 = finite_difference(module, SEED_004_POINT, "beta4", step=0.0001)
    omega0 = finite_difference(module, SEED_004_POINT, "omega0", step=0.0001)
    assert (beta4.plus - beta4.value) / 0.0001 == beta4.estimate
    assert f"{beta4.estimate:3.3f}" == "1.000" and beta4.gradient == 1.0
    # the notebook prints both %3.3f: the step's error is in the third decimal
    assert f"{omega0.gradient:3.3f}" == "-1.485"
    assert abs(omega0.estimate - omega0.gradient) < 1e-3


def test_the_sweep_shows_the_error_falling_then_rising(capsys):
    module = symgrad.compile(SQUARE)
    rows = step_sweep(module, {"w": 3.0}, "w")
    assert [h for h, _, _ in rows] == [10.0**-k for k in range(1, 13)]
    forward_errors = [abs(f.estimate - f.gradient) for _, f, _ in rows]
    # J = w**2: the forward difference is 2w + eps exactly, until rounding
    assert forward_errors[0] == pytest.approx(0.1, rel=1e-9)
    assert forward_errors[2] == pytest.approx(1e-3, rel=1e-6)
    assert forward_errors[-1] > forward_errors[5]  # 1e-12: rounding dominates
    status, out, err = _run(capsys, "check", SQUARE, "--sweep")
    assert status == 0
    assert "dJ_dw by finite differences against the step, at w = 3.0" in out
    assert len([line for line in out.splitlines() if "e-" in line[:10]]) == 12


@pytest.mark.skipif(HAVE_MATPLOTLIB, reason="matplotlib is installed")
def test_the_sweep_plot_is_skipped_cleanly_without_matplotlib(tmp_path, capsys):
    png = tmp_path / "sweep.png"
    status, out, err = _run(capsys, "check", SQUARE, "--sweep", "--plot", png)
    assert status == 0
    assert "matplotlib is not installed" in err
    assert not png.exists()


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="needs matplotlib")
def test_the_sweep_plot_is_written(tmp_path, capsys):
    png = tmp_path / "sweep.png"
    status, out, _ = _run(capsys, "check", SQUARE, "--sweep", "--plot", png)
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plot", "x.png"], "--plot draws the --sweep table"),
        (["--step", "0"], "the step must be a positive number"),
        (["--step", "nan"], "the step must be a positive number"),
    ],
)
def test_bad_lab_options_exit_2(argv, message, capsys):
    status, _, err = _run(capsys, "check", SQUARE, *argv)
    assert status == 2
    assert message in err


def test_outside_the_domain_the_lab_says_so(capsys):
    status, _, err = _run(
        capsys, "check", ROOT / "examples" / "derivative_inverse.yaml",
        "--at", "w=0", "--method", "forward",
    )  # fmt: skip
    assert status == 2
    assert "outside the function's domain" in err
