"""The gradient check judged on two corpora, and its cost at large sizes.

* Ill-conditioned but correct gradients: the check must never call one a
  mismatch (a false alarm makes `symgrad compile` refuse a correct module),
  and it should verify most of them.
* Deliberately wrong gradients (a compiled module with its gradient code
  edited or wrapped): the check must call every one a mismatch.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import symgrad
from symgrad import cli
from symgrad.check import (
    DIRECTIONS,
    FULL_JACOBIAN,
    SAMPLED_ENTRIES,
    check_gradients,
    sample_point,
)
from symgrad.frontend.spec import from_dict, load
from symgrad.pipeline import build, import_source, source


def scalar(steps: dict[str, str], *names: str) -> dict:
    return {
        "name": "corpus",
        "inputs": {n: {} for n in names or ("x",)},
        "steps": steps,
    }


def chaotic(kinds: list[str], depth: int = 30) -> dict[str, str]:
    """A long composition whose derivative is large and changes sign every ~1e-6."""
    steps = {"h0": "x"}
    for k in range(1, depth + 1):
        text = kinds[k % len(kinds)].format(p=f"h{k - 1}", c=round(0.1 * (k % 7), 1))
        steps[f"h{k}"] = text
    return steps


# Derivative ~4e5 at x = 1: the old fixed-step check (h = 1e-6) was 43% off while
# the compiled gradient is right to 1e-10.
CHAOTIC = chaotic(["sin(3.7*{p} + {c})", "exp(cos({p}))", "cos(3.1*{p} - {c})"])
# Derivative ~1e9: float64 itself computes the function only to ~1e-7 there.
WILD = chaotic(["sin(3.7*{p} + {c})", "cos(2.9*{p} + {c})"])

ILL_CONDITIONED = {
    "chaotic composition, x = 1.0": (scalar(CHAOTIC), {"x": 1.0}),
    "chaotic composition, x = 1.2": (scalar(CHAOTIC), {"x": 1.2}),
    "chaotic composition, derivative 1e9": (scalar(WILD), {"x": 0.7}),
    "exp(exp(x)) near 3": (scalar({"y": "exp(exp(x))"}), {"x": 3.0}),
    "1/(x - 1.0001) near its pole": (scalar({"y": "1/(x - 1.0001)"}), {"x": 1.0000999}),
    "sin(1000*x)": (scalar({"y": "sin(1000*x)"}), {"x": 0.3}),
    "x**50": (scalar({"y": "x**50"}), {"x": 1.7}),
    "log(1 + 1e-12*x)": (scalar({"y": "log(1 + 1e-12*x)"}), {"x": 0.5}),
    "a product of 24 factors": (
        scalar({"y": " * ".join(f"(x + {k / 10})" for k in range(1, 25))}),
        {"x": 0.35},
    ),
    "saturated tanh times a large weight": (
        scalar({"y": "1e6 * tanh(20*x*w)"}, "x", "w"),
        {"x": 0.9, "w": 1.1},
    ),
    "exp(exp(X)) summed over 32 entries (sampled)": (
        {
            "name": "corpus",
            "inputs": {"X": {"shape": [32]}},
            "steps": {"y": "sum(exp(exp(X)))"},
        },  # fmt: skip
        {"X": np.linspace(2.6, 3.0, 32)},
    ),
    "sin(1000 * X @ w) (sampled)": (
        {
            "name": "corpus",
            "inputs": {"X": {"shape": [8, 4]}, "w": {"shape": [4]}},
            "steps": {"y": "sum(sin(1000 * X @ w))"},
        },  # fmt: skip
        {
            "X": np.linspace(-1, 1, 32).reshape(8, 4),
            "w": np.array([0.3, -0.2, 0.1, 0.4]),
        },
    ),
}


def test_no_false_alarm_on_ill_conditioned_gradients():
    verdicts = {}
    for name, (spec, point) in ILL_CONDITIONED.items():
        verdicts[name] = check_gradients(symgrad.compile(spec), point).verdict
    counts = {
        v: list(verdicts.values()).count(v) for v in ("ok", "unverified", "mismatch")
    }
    summary = f"{len(verdicts)} correct gradients: {counts}; {verdicts}"
    assert counts["mismatch"] == 0, f"false alarms {counts['mismatch']}: {summary}"
    assert counts["ok"] >= len(verdicts) - 2, summary
    assert verdicts["chaotic composition, x = 1.0"] == "ok", summary


def test_a_gradient_float64_cannot_compute_closely_is_unverified_not_a_mismatch():
    report = check_gradients(symgrad.compile(scalar(WILD)), {"x": 0.7})
    assert report.verdict == "unverified" and not report.ok
    assert report.rows[0].digits == 50  # decided by the high-precision retry
    assert "could not verify x: " in str(report) and report.reason.startswith("x: ")


@pytest.mark.parametrize(
    "spec, point",
    [
        (scalar({"y": "relu(x - 0.05)"}), {"x": 0.0}),
        ({"name": "flat", "inputs": {"x": {"shape": [3]}},
          "steps": {"y": "sum(relu(x - 0.05))"}}, {"x": np.zeros(3)}),
        # conv1d_pool's case: x[1, 3] feeds three windows, all negative, one at -0.055
        ({"name": "pool", "inputs": {"x": {"shape": [4]}},
          "steps": {"y": "sum(max(reshape(relu(x + [-0.5, -0.055, -2, -1]), (-1, 2)), axis=-1))"}},
         {"x": np.zeros(4)}),
    ],
)  # fmt: skip
def test_a_function_flat_near_the_point_is_verified_past_a_nearby_kink(spec, point):
    """0 from the smallest steps down where only the largest reach past a kink
    (relu's at 0.05, nearer than the first step 1/16 but beyond the kink margin):
    a zero gradient is verified, and a wrong one there is a mismatch."""
    module = symgrad.compile(spec)
    report = check_gradients(module, point)
    assert report.verdict == "ok", str(report)
    wrong = wrapped(spec, lambda g: {"x": np.asarray(g["x"]) + 0.5})
    assert check_gradients(wrong, point).verdict == "mismatch"


# --------------------------------------------------------------------------- wrong gradients


def edited(spec: dict, old: str, new: str, count: int = 2):
    """The compiled module with `old` replaced by `new` in its generated source
    (a regular expression; it must match `count` times: by default once in
    `backward` and once in `value_and_grad`)."""
    compiled = build(from_dict(spec))
    text, found = re.subn(old, new, source(compiled))
    assert found == count, f"{old!r} matched {found} times in the generated code"
    return import_source(text, compiled.spec.name, compiled)


def wrapped(spec: dict, change):
    """The compiled module with value_and_grad's gradients passed through `change`."""
    module = symgrad.compile(spec)
    original = module.value_and_grad

    def value_and_grad(*args, **kwargs):
        value, gradients = original(*args, **kwargs)
        return value, gradients._replace(**change(gradients._asdict()))

    module.value_and_grad = value_and_grad
    return module


def tensor(steps: dict[str, str], **shapes: list[int]) -> dict:
    return {"name": "corpus", "inputs": {n: {"shape": s} for n, s in shapes.items()},
            "steps": steps}  # fmt: skip


def scale(factor: float, name: str):
    return lambda g: {name: g[name] * factor}


def flip_entry(name: str, index: tuple[int, ...]):
    def change(g):
        flipped = np.array(g[name])
        flipped[index] = -flipped[index]
        return {name: flipped}

    return change


RNG = np.random.default_rng(5)
W64 = {"W": RNG.normal(size=(64, 64)) / 8, "x": RNG.normal(size=64)}
W4096 = {"w": RNG.normal(size=4096) / 30}
LAYER = tensor({"y": "sum(tanh(W @ x))"}, W=[64, 64], x=[64])
BIG = tensor({"y": "sum(sin(w) * exp(w)) + sum(w)**2"}, w=[4096])

WRONG = {
    "d sin = +sin, not cos": (
        lambda: edited(scalar({"y": "w*x*sin(x)"}, "x", "w"), r"np\.cos\(", "np.sin("),
        {"x": 0.7, "w": 1.3},
    ),
    "a dropped fan-out term": (
        lambda: edited(
            scalar({"y": "w*x*sin(x)"}, "x", "w"), r"(dy_dx = )[^+\n]+ \+ ", r"\1"
        ),
        {"x": 0.7, "w": 1.3},
    ),
    "scaled by 1 + 1e-6": (
        lambda: wrapped(
            scalar({"y": "sin(x)*exp(w) + x*w"}, "x", "w"), scale(1 + 1e-6, "w")
        ),
        {"x": 0.7, "w": 1.3},
    ),
    "scaled by 1 + 1e-6, chaotic composition": (
        lambda: wrapped(scalar(CHAOTIC), scale(1 + 1e-6, "x")),
        {"x": 1.0},
    ),
    "off by 1e-3": (
        lambda: wrapped(scalar({"y": "x**3"}), lambda g: {"x": g["x"] + 1e-3}),
        {"x": 1.5},
    ),
    "square W's gradient transposed": (
        lambda: wrapped(
            tensor({"y": "sum(tanh(W @ x))"}, W=[3, 3], x=[3]),
            lambda g: {"W": g["W"].T},
        ),  # fmt: skip
        {"W": np.arange(9.0).reshape(3, 3) / 10 - 0.4, "x": np.array([0.3, -0.5, 0.8])},
    ),
    "a 3x2 gradient's entries permuted": (
        lambda: wrapped(
            tensor({"y": "sum(tanh(x @ W))"}, W=[3, 2], x=[3]),
            lambda g: {"W": g["W"].T.reshape(3, 2)},
        ),  # fmt: skip
        {"W": np.arange(6.0).reshape(3, 2) / 10 - 0.2, "x": np.array([0.3, -0.5, 0.8])},
    ),
    "a 64x64 W's gradient transposed (sampled)": (
        lambda: wrapped(LAYER, lambda g: {"W": g["W"].T}),
        W64,
    ),
    "a 4096-entry gradient scaled by 1 + 1e-6 (sampled)": (
        lambda: wrapped(BIG, scale(1 + 1e-6, "w")),
        W4096,
    ),
    "one block of a 4096-entry gradient zeroed (sampled)": (
        lambda: wrapped(
            BIG, lambda g: {"w": np.where(np.arange(4096) < 64, 0, g["w"])}
        ),
        W4096,
    ),
    "one sign flipped in a 4096-entry gradient (sampled)": (
        lambda: wrapped(BIG, flip_entry("w", (1234,))),
        W4096,
    ),
    "one sign flipped in a 64x64 gradient (sampled)": (
        lambda: wrapped(LAYER, flip_entry("W", (5, 7))),
        W64,
    ),
}


def test_every_wrong_gradient_is_caught():
    verdicts = {}
    for name, (make, point) in WRONG.items():
        verdicts[name] = check_gradients(make(), point).verdict
    missed = [name for name, verdict in verdicts.items() if verdict != "mismatch"]
    assert not missed, f"misses {len(missed)} of {len(verdicts)}: {missed} ({verdicts})"


def test_the_edits_make_modules_that_are_wrong_only_in_the_gradient():
    """The corpus's own check: the edited modules compute the same value."""
    point = {"x": 0.7, "w": 1.3}
    right = symgrad.compile(scalar({"y": "w*x*sin(x)"}, "x", "w"))
    for name in ("d sin = +sin, not cos", "a dropped fan-out term"):
        make, _ = WRONG[name]
        value, grads = make().value_and_grad(**point)
        assert value == right.value_and_grad(**point)[0]
        assert grads.x != pytest.approx(right.grad(**point).x, rel=1e-3)


# --------------------------------------------------------------------------- cost


def test_a_large_input_is_checked_on_samples_and_directions_at_a_fixed_cost():
    module = symgrad.compile(BIG)
    calls = []

    @functools.wraps(module.forward)
    def counted(*args, **kwargs):
        calls.append(1)
        return counted.__wrapped__(*args, **kwargs)

    module.forward = counted
    report = check_gradients(module, W4096)
    assert report.ok, str(report)
    assert len(report.rows) == SAMPLED_ENTRIES + DIRECTIONS
    assert [r.direction for r in report.rows[-DIRECTIONS:]] == [1, 2, 3, 4]
    # A few dozen evaluations per row, however many entries the input has.
    assert len(calls) < 100 * len(report.rows)
    # Small inputs are still checked entry by entry.
    small = check_gradients(symgrad.compile(tensor({"y": "sum(w**3)"}, w=[FULL_JACOBIAN])),
                            {"w": np.linspace(-1, 1, FULL_JACOBIAN)})  # fmt: skip
    assert [r.index for r in small.rows] == [(i,) for i in range(FULL_JACOBIAN)]


MLP_4096 = """\
name: wide_mlp
inputs:
  X: {shape: [n, 4096]}
  Y: {shape: [n, 10]}
  W1: {shape: [4096, 64]}
  b1: {shape: [64]}
  W2: {shape: [64, 10]}
  b2: {shape: [10]}
wrt: [W1, b1, W2, b2]
steps:
  hidden: tanh(X @ W1 + b1)
  out: hidden @ W2 + b2
  L: mean((out - Y)**2)
output: L
"""


def test_an_mlp_with_fixed_sizes_4096_by_64_compiles_with_its_check(tmp_path, capsys):
    spec = tmp_path / "wide_mlp.yaml"
    spec.write_text(MLP_4096)
    assert cli.main(["compile", str(spec), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "wide_mlp.py").exists()
    assert "mismatch" not in capsys.readouterr().err
    # the points keep the declared sizes; the named dimension n stays small
    compiled = build(load(spec))
    module = import_source(source(compiled), "wide_mlp", compiled)
    point = sample_point(module, np.random.default_rng(0))
    assert np.shape(point["W1"]) == (4096, 64) and np.shape(point["X"]) == (2, 4096)


# --------------------------------------------------------------------------- command line


def test_check_exits_0_when_it_cannot_verify_and_1_on_a_mismatch(tmp_path, capsys):
    spec = tmp_path / "wild.yaml"
    spec.write_text(
        "name: wild\ninputs: {x: {}}\nsteps:\n"
        + "".join(f"  {name}: {text}\n" for name, text in WILD.items())
    )
    assert cli.main(["check", str(spec), "--at", "x=0.7"]) == 0
    out = capsys.readouterr().out
    assert "could not verify at 1 of 1 point(s)" in out and "MISMATCH" not in out
    # compile writes it, with a warning
    assert cli.main(["compile", str(spec), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "out" / "wild.py").exists()
    assert "warning: could not verify" in captured.err
