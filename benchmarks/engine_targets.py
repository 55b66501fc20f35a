"""Engine targets: symgrad's jax, torch and numba targets against jax.jit, torch and torch.compile.

Issue 15's workloads in one run, each ratio to the hand-written NumPy backprop
measured in the same process: the toy model on a batch of 1e6, logistic
regression 1e6 x 10, the MLP 4096x64 -> 128 -> 10, logistic regression 3 x 2
and the toy model at one point. Every implementation is checked against the
hand-written code before it is timed; a target that cannot compile a workload
is listed as skipped with the reason. A second
table gives each JIT's first call (trace and compile) beside symgrad.compile.

    taskset -c 0 python benchmarks/engine_targets.py        # one CPU, one thread each
    BENCH_THREADS=all python benchmarks/engine_targets.py   # every core (numba PARALLEL too)
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import _common as c  # first: pins threads before NumPy is imported
import _workloads as w
import numpy as np

import symgrad
from symgrad.pipeline import build, load_spec, source

HAND = "hand-written NumPy"
ENGINE_TARGETS = ("jax", "torch", "numba")


def _written(spec, target: str, directory: Path, suffix: str = ""):
    """The module of `spec` for `target`, written to `directory` and imported from its
    file (numba caches beside it; torch.compile reads its globals through it)."""
    compiled = build(load_spec(spec))
    name = f"{compiled.spec.name}_{target}{suffix}"
    path = directory / f"{name}.py"
    path.write_text(source(compiled, target))
    loader = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module
    loader.loader.exec_module(module)
    return module


def _engine_args(target: str, args: tuple) -> tuple:
    """The arguments as the engine holds its data: arrays made once, like a model's."""
    if target == "jax":
        jax, _ = c.tool("jax")
        return tuple(
            jax.numpy.asarray(a) if isinstance(a, np.ndarray) else a for a in args
        )
    if target == "torch":
        torch, _ = c.tool("torch")
        return tuple(torch.as_tensor(a, dtype=torch.float64) for a in args)
    return args


def symgrad_impls(
    workload: w.Workload, directory: Path, all_threads: bool, quick: bool
):
    """symgrad's numpy target and each engine target (and torch.compile of the torch
    target's value_and_grad); (impls, first-call seconds by name)."""
    impls, first = [workload.symgrad()], {}
    for target in ENGINE_TARGETS:
        name = f"symgrad ({target} target)"
        engine, why = c.tool(target)
        if engine is None:
            impls.append(w.Impl(name, None, why))
            continue
        try:
            module = _written(workload.spec, target, directory)
        except Exception as err:  # noqa: BLE001 - a target that cannot compile it
            impls.append(
                w.Impl(name, None, f"{type(err).__name__}: {err}".split("\n")[0])
            )
            continue
        args = _engine_args(target, workload.args)
        run = _runner(target, module.value_and_grad, args)
        first[name] = c.once(run)[0]
        impls.append(w.Impl(name, run))
        if target == "numba" and all_threads:
            parallel_module = _written(workload.spec, target, directory, "_parallel")
            parallel_module.PARALLEL = True
            parallel = f"{name}, PARALLEL"
            parallel_run = _runner(target, parallel_module.value_and_grad, args)
            first[parallel] = c.once(parallel_run)[0]
            impls.append(w.Impl(parallel, parallel_run))
        if target == "torch":
            compiled_name = f"{name} + torch.compile"
            if quick:
                impls.append(w.Impl(compiled_name, None, "skipped in --quick"))
                continue
            compiled = engine.compile(module.value_and_grad)
            compiled_run = _runner(target, compiled, args)
            first[compiled_name] = c.once(compiled_run)[0]
            impls.append(w.Impl(compiled_name, compiled_run))
    return impls, first


def _runner(target: str, function, args):
    if target == "jax":
        jax, _ = c.tool("jax")
        return lambda: jax.block_until_ready(function(*args))
    return lambda: function(*args)


def peer_impls(workload: w.Workload, quick: bool, scalar: bool):
    """jax.jit, torch autograd and torch.compile (of the forward; AOTAutograd compiles
    its backward), with their first calls."""
    jax_impl = w.jax_impl(workload)
    torch_impl = w.torch_impl(workload, scalar)
    impls, first = [jax_impl, torch_impl], {}
    if jax_impl.run is not None:
        first[jax_impl.name] = c.once(jax_impl.run)[0]
    name = "torch.compile(autograd)"
    torch, why = c.tool("torch")
    if torch is None or quick or scalar:
        reason = why or (
            "skipped in --quick" if quick else "one point: a tensor per call"
        )
        return [*impls, w.Impl(name, None, reason)], first
    names = list(workload.inputs)
    positions = [names.index(v) for v in workload.wrt]
    args = [torch.as_tensor(v, dtype=torch.float64) for v in workload.args]
    for i in positions:
        args[i] = args[i].detach().clone().requires_grad_(True)
    expression = torch.compile(lambda *a: workload.expression(torch, *a))

    def run():
        out = expression(*args)
        return out, torch.autograd.grad(out.sum(), [args[i] for i in positions])

    first[name] = c.once(run)[0]
    return [*impls, w.Impl(name, run)], first


def workloads(quick: bool) -> list[w.Workload]:
    return [
        *w.batched_workloads(quick),
        w.logistic_regression(3, 2),
        w.toy_scalar("numpy"),
    ]


def main(argv=None) -> int:
    args = c.parse_args(__doc__.splitlines()[0], argv)
    c.print_header("Engine targets: value_and_grad, ratios to hand NumPy", args.quick)
    all_threads = c.ALL_THREADS
    compile_rows = []
    with tempfile.TemporaryDirectory() as directory:
        for workload in workloads(args.quick):
            scalar = workload.name.startswith("toy model (seed 004)")
            ours, first = symgrad_impls(
                workload, Path(directory), all_threads, args.quick
            )
            peers, peer_first = peer_impls(workload, args.quick, scalar)
            point = workload.args
            math = w.Impl("hand-written math", lambda point=point: w.toy_math(*point))
            extra = [math, w.toy_scalar("python").symgrad()] if scalar else []
            impls = [workload.hand, *extra, *ours, *peers]
            w.verify(impls, workload.hand)
            rows = w.timed_rows(impls, args.quick)
            c.ratio_table(workload.name, rows, [HAND])
            seconds, _ = c.once(
                lambda workload=workload: symgrad.compile(workload.spec)
            )
            compile_rows.append(
                [workload.name, c.format_seconds(seconds)]
                + [
                    ", ".join(
                        f"{n}: {c.format_seconds(s)}"
                        for n, s in {**first, **peer_first}.items()
                    )
                ]
            )
    c.print_table(
        "Compile times: symgrad.compile, and each JIT's first call",
        ["workload", "symgrad.compile (numpy)", "first call (trace + compile + run)"],
        compile_rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
