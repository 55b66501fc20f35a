"""The `symgrad` command: compile and check specs.

Exit status: 0 success (also when a gradient could not be verified: that is
a warning), 1 a gradient check found a mismatch, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from symgrad._version import __version__
from symgrad.check import (
    FULL_JACOBIAN,
    METHODS,
    Difference,
    OutOfDomain,
    check_gradients,
    finite_difference,
    sample_point,
    step_sweep,
)
from symgrad.codegen import TARGETS
from symgrad.compiler.lower import LoweringError
from symgrad.frontend.spec import DERIVATIVES, SpecError, load, with_derivatives
from symgrad.pipeline import (
    Compiled,
    MissingModule,
    build,
    dependence_warnings,
    import_source,
    source,
)

CHECK_POINTS = 3
LAB_STEP = 1e-3  # the labs' epsilon (seeds 001 and 002)


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (SpecError, LoweringError, UsageError, MissingModule) as err:
        if args.debug:
            traceback.print_exc()
        print(
            f"{err}" if isinstance(err, SpecError) else f"symgrad: error: {err}",
            file=sys.stderr,
        )
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symgrad",
        description="Compile mathematics into readable, checked backpropagation code.",
    )
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    compile_ = commands.add_parser(
        "compile", help="write a Python module for each spec"
    )
    compile_.add_argument("specs", nargs="+", metavar="SPEC", type=Path)
    compile_.add_argument(
        "-o",
        "--output",
        default="generated",
        metavar="DIR",
        help="directory to write to (default: generated/; '-' prints to stdout)",
    )
    compile_.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="numpy",
        help="numpy (default; arrays broadcast) or python (math only, fastest scalars)",
    )
    compile_.add_argument(
        "--no-check",
        action="store_true",
        help="skip the finite-difference check before writing",
    )
    compile_.add_argument(
        "--derivatives",
        default="",
        metavar="LIST",
        help=f"functions to add beyond the gradient, comma-separated "
        f"({','.join(DERIVATIVES)}), to those the spec's derivatives key asks for",
    )
    compile_.set_defaults(run=_compile)

    check = commands.add_parser(
        "check",
        help="compare gradients with central finite differences, and mark the "
        "spec's expect: values",
    )
    check.add_argument("specs", nargs="+", metavar="SPEC", type=Path)
    check.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix an input (a number, a fraction a/b or a JSON list); once per input; "
        "added to the spec's at: point",
    )
    check.add_argument(
        "--points",
        type=int,
        default=CHECK_POINTS,
        metavar="N",
        help=f"random points to check (default {CHECK_POINTS}; 1 when every input is fixed)",
    )
    check.add_argument(
        "--seed", type=int, default=0, help="random seed for the points (default 0)"
    )
    check.add_argument("--target", choices=sorted(TARGETS), default="numpy")
    lab = check.add_argument_group(
        "the labs' finite differences",
        "instead of the verdict, print the difference quotient a lab computes by "
        "hand: J(w), J(w + eps) and k = (J(w + eps) - J(w))/eps, for each "
        "differentiated input, next to symgrad's gradient",
    )
    lab.add_argument(
        "--method",
        choices=METHODS,
        help="forward (J(w + eps) - J(w))/eps, backward, or central "
        "(J(w + eps) - J(w - eps))/(2 eps)",
    )
    lab.add_argument(
        "--step",
        type=float,
        metavar="EPS",
        help=f"the step eps (default {LAB_STEP:g})",
    )
    lab.add_argument(
        "--sweep",
        action="store_true",
        help="a table of the forward and central error against the step, 1e-1 to 1e-12",
    )
    lab.add_argument(
        "--plot",
        metavar="FILE",
        type=Path,
        help="with --sweep: a log-log plot of that table (PNG; needs matplotlib)",
    )
    check.set_defaults(run=_check)
    _add_explain_commands(commands)
    _add_learner_commands(commands)
    for command in commands.choices.values():  # `symgrad CMD --debug` works too
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    return parser


def _compile(args: argparse.Namespace) -> int:
    results = []
    for (
        path
    ) in args.specs:  # everything is compiled and checked before anything is written
        compiled = _built(path, args.derivatives)
        checked = ""
        if not args.no_check:
            try:
                reports = _run_checks(compiled, args.target, {}, CHECK_POINTS, 0)
            except OutOfDomain as err:
                raise UsageError(
                    f"{path}: outside the function's domain: {err} "
                    f"(--no-check writes the module without checking)"
                ) from None
            failed = [r for r in reports if r.verdict == "mismatch"]
            if failed:
                print(
                    f"{path}: gradient mismatch; nothing written\n{failed[0]}",
                    file=sys.stderr,
                )
                return 1
            checked = (
                f"Checked: symgrad compared these gradients with central finite "
                f"differences at {len(reports)} random points before writing this file."
            )
            unverified = [r for r in reports if r.verdict == "unverified"]
            if unverified:
                print(
                    f"{path}: warning: could not verify the gradient at "
                    f"{len(unverified)} of {len(reports)} points ({unverified[0].reason}); "
                    f"writing it anyway",
                    file=sys.stderr,
                )
                checked += (
                    f" At {len(unverified)} of them finite differences could not "
                    f"settle every entry ({unverified[0].reason})."
                )
        results.append((path, compiled, source(compiled, args.target, checked)))
    for path, compiled, text in results:
        if args.output == "-":
            sys.stdout.write(text)
            continue
        target = Path(args.output) / f"{compiled.spec.name}.py"
        _write_atomically(target, text)
        print(
            f"{path} -> {target}  ({len(compiled.unit.forward)} forward and "
            f"{compiled.unit.backward_operations} backward operations)"
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    given = _parse_at(args.at)
    lab = args.method is not None or args.step is not None or args.sweep
    if args.plot is not None and not args.sweep:
        raise UsageError("--plot draws the --sweep table: give --sweep too")
    if args.step is not None and not (args.step > 0 and np.isfinite(args.step)):
        raise UsageError(f"--step {args.step}: the step must be a positive number")
    status = 0
    for path in args.specs:
        compiled = _built(path)
        unknown = [n for n in given if n not in [i.name for i in compiled.spec.inputs]]
        if unknown:
            raise UsageError(f"--at {unknown[0]}: {path} has no input {unknown[0]!r}")
        fixed = {**compiled.spec.point, **given}  # the spec's at:, overridden by --at
        if lab:
            status = max(status, _lab(path, compiled, args, fixed))
            status = max(status, _marks(path, compiled))
            continue
        every_input_fixed = len(fixed) == len(compiled.spec.inputs)
        try:
            reports = _run_checks(
                compiled,
                args.target,
                fixed,
                1 if every_input_fixed else args.points,
                args.seed,
            )
        except OutOfDomain as err:
            print(f"{path}: outside the function's domain: {err}", file=sys.stderr)
            status = max(status, 2)
            continue
        for report in reports:
            print(f"{path}: {report}")
        mismatches = [r for r in reports if r.verdict == "mismatch" and not r.kinks]
        unverified = [r for r in reports if r.verdict == "unverified"]
        worst = max((r.worst.error for r in reports if r.worst), default=0.0)
        if mismatches:
            print(
                f"{path}: MISMATCH: analytical and numerical gradients differ by more "
                f"than the finite differences' error bound "
                f"(worst relative error {worst:.2e})"
            )
            status = max(status, 1)
        elif unverified:
            print(
                f"{path}: could not verify at {len(unverified)} of {len(reports)} "
                f"point(s): {unverified[0].reason}; no mismatch found"
            )
        else:
            checked = ", ".join(["gradients", *reports[0].derivatives[1:]])  # + jvp...
            print(
                f"{path}: ok: {len(reports)} point(s), {checked} match "
                f"central finite differences (worst relative error {worst:.1e})"
            )
        status = max(status, _marks(path, compiled))
    return status


def _marks(path: Path, compiled: Compiled) -> int:
    """The spec's expect: values marked (status 1 if any is wrong)."""
    from symgrad.teach.answers import mark

    marks = mark(compiled)
    if not marks:
        return 0
    point = ", ".join(f"{n} = {v}" for n, v in compiled.spec.at)
    right = sum(m.right for m in marks)
    print(f"{path}: expect: {right} of {len(marks)} right, at {point}")
    for m in marks:
        where = f"{path}:{m.expected.line}" if m.expected.line else f"{path}"
        print(f"  {where}: {m.line()}")
    return 0 if right == len(marks) else 1


def _lab(path: Path, compiled: Compiled, args: argparse.Namespace, fixed: dict) -> int:
    """The labs' difference quotients (and --sweep's table) at one point."""
    module = import_source(source(compiled, args.target), compiled.spec.name, compiled)
    try:
        point = sample_point(module, np.random.default_rng(args.seed), fixed)
        method, step = args.method or "forward", args.step or LAB_STEP
        entries = [
            (w, index)
            for w in compiled.spec.wrt
            for index in list(np.ndindex(np.shape(point[w])))[:FULL_JACOBIAN]
        ]
        at = ", ".join(f"{n} = {_shown(v)}" for n, v in point.items())
        if not args.sweep or args.method or args.step:
            print(f"{path}: {method} differences, eps = {step:g}, at {at}")
            for w, index in entries:
                print(
                    _difference_text(
                        finite_difference(module, point, w, index, method, step),
                        compiled.spec.output,
                    )
                )
        if args.sweep:
            sweeps = {}
            for w, index in entries:
                rows = step_sweep(module, point, w, index)
                sweeps[rows[0][1].label] = rows
                print(_sweep_text(path, at, rows, compiled.spec.output))
    except OutOfDomain as err:
        print(f"{path}: outside the function's domain: {err}", file=sys.stderr)
        return 2
    if args.plot is not None:
        from symgrad.teach.answers import plot_sweep

        try:
            print(f"{path} -> {plot_sweep(sweeps, args.plot)}")
        except ImportError:
            print(
                f"{path}: no plot: matplotlib is not installed (pip install "
                f"matplotlib); the table above has the numbers",
                file=sys.stderr,
            )
    return 0


def _shown(value: object) -> str:
    return (
        repr(value) if np.ndim(value) == 0 else json.dumps(np.asarray(value).tolist())
    )


def _difference_text(d: Difference, out: str) -> str:
    """The lab's line: J = 9.0, J(w + eps) = 9.006001, k = 6.001000 (symgrad: 6.0)."""
    w = d.label
    parts = [f"{out} = {d.value!r}"]
    if d.plus is not None:
        parts.append(f"{out}({w} + eps) = {d.plus!r}")
    if d.minus is not None:
        parts.append(f"{out}({w} - eps) = {d.minus!r}")
    quotient = {
        "forward": f"({out}({w} + eps) - {out})/eps",
        "backward": f"({out} - {out}({w} - eps))/eps",
        "central": f"({out}({w} + eps) - {out}({w} - eps))/(2 eps)",
    }[d.method]
    return (
        f"  {w}: {', '.join(parts)}, d{out}_d{w} ~= k = {quotient} = {d.estimate:.6f} "
        f"({d.estimate!r}); symgrad's gradient {d.gradient!r}, "
        f"k - gradient = {d.estimate - d.gradient:.2e}"
    )


def _sweep_text(path: Path, at: str, rows: list, out: str) -> str:
    label, gradient = rows[0][1].label, rows[0][1].gradient
    lines = [
        f"{path}: d{out}_d{label} by finite differences against the step, at {at} "
        f"(symgrad's gradient {gradient!r})",
        f"  {'eps':>7}  {'forward k':>22}  {'error':>8}  {'central k':>22}  {'error':>8}",
    ]
    for h, forward, central in rows:
        lines.append(
            f"  {h:>7.0e}  {forward.estimate:>22.15g}  "
            f"{abs(forward.estimate - gradient):>8.1e}  {central.estimate:>22.15g}  "
            f"{abs(central.estimate - gradient):>8.1e}"
        )
    return "\n".join(lines)


def _built(path: Path, derivatives: str | None = None) -> Compiled:
    """The spec at `path` compiled (with the `derivatives` the command line adds,
    comma-separated), with what is worth a warning said on stderr."""
    spec = load(path)
    if derivatives:
        spec = with_derivatives(spec, [*spec.derivatives, *derivatives.split(",")])
    compiled = build(spec)
    for message in dependence_warnings(compiled):
        print(f"{path}: warning: {message}", file=sys.stderr)
    return compiled


def _run_checks(compiled: Compiled, target: str, fixed: dict, points: int, seed: int):
    module = import_source(source(compiled, target), compiled.spec.name, compiled)
    rng = np.random.default_rng(seed)
    if len(fixed) == len(compiled.spec.inputs):
        return [check_gradients(module, fixed, rng)]
    return [
        check_gradients(module, sample_point(module, rng, fixed), rng)
        for _ in range(points)
    ]


def _parse_at(values: list[str]) -> dict[str, object]:
    """The point that --at NAME=VALUE options fix; spaces may surround name and value."""
    point = {}
    for item in values:
        name, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise UsageError(f"--at {item!r}: expected NAME=VALUE")
        if name in point:
            raise UsageError(f"--at {item!r}: {name!r} is fixed by an earlier --at")
        point[name] = _at_value(item, text)
    return point


def _at_value(item: str, text: str) -> object:
    """A number, a fraction a/b of two numbers, or a JSON list; parsed, never evaluated."""
    numerator, slash, denominator = text.partition("/")
    if slash:
        a, b = (_at_json(item, part, float) for part in (numerator, denominator))
        if b == 0:
            raise UsageError(f"--at {item!r}: division by zero")
        return a / b
    return _at_json(item, text, float | list)


def _at_json(item: str, text: str, kinds) -> object:
    """`text`, part of `item`, as JSON of one of `kinds`: every number a float."""
    try:
        value = json.loads(text, parse_int=float)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, kinds):
        raise UsageError(
            f"--at {item!r}: the value is not a number, a fraction a/b or a JSON list"
        )
    return value


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file renamed into place: a reader never sees half a module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- explain, graph, plot


def _add_explain_commands(commands) -> None:
    """`explain`, `graph` and `plot`: the chain rule shown (symgrad/teach/explain.py)."""
    at = {
        "action": "append",
        "default": [],
        "metavar": "NAME=VALUE",
        "help": "fix an input (a number, a fraction a/b or a JSON list), added to the "
        "spec's at: point; the others are sampled",
    }
    seed = {"type": int, "default": 0, "help": "random seed for sampled inputs"}
    level = {
        "choices": ["auto", "steps", "ops"],
        "default": "auto",
        "help": "rows per named step or per single operation (default: auto)",
    }
    explain = commands.add_parser(
        "explain", help="forward and backward tables: the chain rule at a point"
    )
    explain.add_argument("spec", metavar="SPEC", type=Path)
    explain.add_argument("--at", **at)
    explain.add_argument(
        "--format", choices=["text", "markdown", "latex", "html"], default="text"
    )
    explain.add_argument("--level", **level)
    explain.add_argument("--seed", **seed)
    explain.add_argument(
        "--order",
        type=int,
        choices=[1, 2],
        default=1,
        help="2 adds the Hessian: each ∂²y/∂u∂w, its formula and value (scalar inputs)",
    )
    explain.set_defaults(run=_explain)

    graph = commands.add_parser(
        "graph", help="the computation graph as Graphviz DOT, with values and adjoints"
    )
    graph.add_argument("spec", metavar="SPEC", type=Path)
    graph.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        help="graph.dot (also writes graph.svg when Graphviz's dot is installed); "
        "default: DOT to stdout",
    )
    graph.add_argument("--at", **at)
    graph.add_argument("--level", **level)
    graph.add_argument("--seed", **seed)
    graph.set_defaults(run=_graph)

    plot = commands.add_parser(
        "plot", help="the function, its derivative and finite differences (PNG)"
    )
    plot.add_argument("spec", metavar="SPEC", type=Path)
    plot.add_argument("--wrt", required=True, metavar="NAME", help="the input to vary")
    plot.add_argument(
        "-o", "--output", metavar="FILE", help="PNG to write (default NAME_WRT.png)"
    )
    plot.add_argument("--at", **at)
    plot.add_argument(
        "--range", nargs=2, type=float, metavar=("LO", "HI"), help="default: value ± 3"
    )
    plot.add_argument("--seed", **seed)
    plot.set_defaults(run=_plot)


def _explained(args: argparse.Namespace):
    from symgrad.teach.explain import ExplainError, explain

    try:
        return explain(
            _built(args.spec),
            _parse_at(args.at),  # added to the spec's at: point
            level=args.level,
            seed=args.seed,
            order=getattr(args, "order", 1),  # graph and plot have no --order
        )
    except ExplainError as err:
        raise UsageError(f"{args.spec}: {err}") from None


def _explain(args: argparse.Namespace) -> int:
    sys.stdout.write(_explained(args).render(args.format))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from symgrad.teach.explain import write_graph

    explanation = _explained(args)
    if args.output == "-":
        sys.stdout.write(explanation.dot())
        return 0
    written = write_graph(explanation, args.output)
    print(f"{args.spec} -> {', '.join(map(str, written))}")
    if len(written) == 1:
        print("(Graphviz's dot is not on PATH: no SVG; dot -Tsvg renders the file)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from symgrad.teach.explain import ExplainError, plot

    try:
        path = plot(
            _built(args.spec),
            args.wrt,
            _parse_at(args.at),
            args.output,
            span=tuple(args.range) if args.range else None,
            seed=args.seed,
        )
    except ExplainError as err:
        raise UsageError(f"{args.spec}: {err}") from None
    print(f"{args.spec} -> {path}")
    return 0


# ---------------------------------------------------------------- examples, exercise


def _add_learner_commands(commands) -> None:
    """`examples` (the specs symgrad ships) and `exercise` (a notebook to fill in)."""
    examples = commands.add_parser(
        "examples", help="copy the example specs symgrad ships into a directory"
    )
    examples.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        nargs="?",
        default=Path("examples"),
        help="where to copy them (default: examples/); existing files are kept",
    )
    examples.set_defaults(run=_examples)

    exercise = commands.add_parser(
        "exercise",
        help="a notebook to fill in: the forward pass given, each backward line a TODO",
    )
    exercise.add_argument("spec", metavar="SPEC", type=Path)
    exercise.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="the notebook to write (default: SPEC's name + _exercise.ipynb)",
    )
    exercise.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix an input (the spec's own point, else sampled, for the others)",
    )
    exercise.add_argument(
        "--seed", type=int, default=0, help="random seed for sampled inputs"
    )
    exercise.add_argument(
        "--solution", action="store_true", help="fill the answers in (for a teacher)"
    )
    exercise.set_defaults(run=_exercise)


def _examples(args: argparse.Namespace) -> int:
    from symgrad._data import shipped

    source = shipped("examples")
    if args.directory.exists() and not args.directory.is_dir():
        raise UsageError(f"{args.directory} is not a directory")
    args.directory.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for spec in sorted(source.glob("*.yaml")):
        target = args.directory / spec.name
        if target.exists():
            kept.append(spec.name)
            continue
        target.write_bytes(spec.read_bytes())
        copied.append(spec.name)
    print(f"{len(copied)} example spec(s) copied to {args.directory}/")
    if kept:
        print(f"kept the existing {', '.join(kept)}")
    return 0


def _exercise(args: argparse.Namespace) -> int:
    from symgrad.teach.exercise import exercise, notebook_text

    compiled = _built(args.spec)
    spec = compiled.spec
    fixed = dict(getattr(spec, "at", None) or {}) | _parse_at(args.at)
    unknown = sorted(set(fixed) - {i.name for i in spec.inputs})
    if unknown:
        raise UsageError(
            f"{args.spec}: --at {unknown[0]}: {spec.name} has no such input"
        )
    module = import_source(source(compiled), spec.name, compiled)
    try:
        point = sample_point(module, np.random.default_rng(args.seed), fixed)
    except OutOfDomain as err:
        raise UsageError(f"{args.spec}: {err}") from None
    path = args.output or Path(f"{spec.name}_exercise.ipynb")
    text = notebook_text(exercise(compiled, point, solution=args.solution))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"{args.spec} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
