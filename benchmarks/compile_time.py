"""Compile time against expression size: symgrad.compile vs sympy.diff + lambdify(cse=True).

Three families: the k-layer chain h_i = sin(a_i*h_(i-1) + c_i), h_0 = x, with
every a_i, c_i and x differentiated (k = 2 ... 4096); random expressions of
up to 10,000 operations (sin/cos/tanh, +, -, *) over 20 symbols, passed to
symgrad.compile as one SymPy expression; and random fan-out DAGs of up to
10,000 named steps, each reading one or two of the last 40 values (sin, cos,
tanh, a*b, a - b, 0.5*(a + b)), where a value has many readers. Each point
is one in-process call with imports warm and SymPy's cache cleared. The
symbolic reference is skipped beyond k = 32 (it grows about 8x per doubling)
and gives up after a per-point time limit; jax.jit compile time is shown up
to k = 64 when JAX is installed. Issue 5's targets: k = 64 in < 0.5 s,
k = 1024 in < 10 s, the 10,000-operation expression in < 10 s, and a linear
curve (growth exponent ~1 between doublings); issue 10's: k = 4096 and the
10,000-step fan-out DAG in < 10 s each.

    python benchmarks/compile_time.py [--quick] [--stages]
"""

from __future__ import annotations

import math
import random

import _common as c  # first: pins threads before NumPy is imported
import numpy as np
import sympy as sp
from sympy.core.cache import clear_cache

SYMPY_MAX_K = 32
JAX_MAX_K = 64


def chain_spec(k: int) -> dict:
    """The k-layer chain as a spec with named steps."""
    inputs = {"x": {}}
    steps = {}
    previous = "x"
    for i in range(1, k + 1):
        inputs[f"a{i}"] = {}
        inputs[f"c{i}"] = {}
        steps[f"h{i}"] = f"sin(a{i}*{previous} + c{i})"
        previous = f"h{i}"
    return {"name": f"chain{k}", "inputs": inputs, "steps": steps, "output": previous}


def chain_expression(k: int) -> tuple[sp.Expr, list[sp.Symbol]]:
    """The same chain as one nested SymPy expression, and its symbols in spec order."""
    x = sp.Symbol("x", real=True)
    symbols, h = [x], x
    for i in range(1, k + 1):
        a, cc = sp.symbols(f"a{i} c{i}", real=True)
        symbols += [a, cc]
        h = sp.sin(a * h + cc)
    return h, symbols


def random_expression(n_ops: int, n_symbols: int = 20, seed: int = 0):
    """A random expression tree of n_ops operations, built as a user would (evaluated).

    SymPy's automatic simplification merges a few operations (x*x -> x**2),
    so its count_ops may be slightly below n_ops.
    """
    rng = random.Random(seed)
    # s0, s1, ...: lambdify(cse=True) names its temporaries x0, x1, ... (and
    # SymPy 1.12 lets them overwrite arguments of the same names).
    symbols = sp.symbols(f"s0:{n_symbols}", real=True)
    unary = (sp.sin, sp.cos, sp.tanh)
    n_binary = 6 * n_ops // 10
    kinds = ["unary"] * (n_ops - n_binary) + ["binary"] * n_binary
    rng.shuffle(kinds)
    pool = [rng.choice(symbols) for _ in range(n_binary + 1)]
    for kind in kinds:
        if kind == "unary":
            i = rng.randrange(len(pool))
            pool[i] = rng.choice(unary)(pool[i])
            continue
        a = pool.pop(rng.randrange(len(pool)))
        b = pool.pop(rng.randrange(len(pool)))
        r = rng.random()
        pool.append(a + b if r < 0.4 else a * b if r < 0.8 else a - b)
    return pool[0], list(symbols)


FAN_OUT_FORMS = (
    "sin({a})",
    "cos({a})",
    "tanh({a})",
    "{a}*{b}",
    "{a} - {b}",
    "0.5*({a} + {b})",
)
FAN_OUT_WINDOW = 40


def fan_out_spec(n_steps: int, n_inputs: int = 20, seed: int = 0) -> dict:
    """A random DAG of named steps, each reading values among the last 40 (fan-out)."""
    rng = random.Random(seed)
    values = [f"x{i}" for i in range(n_inputs)]
    steps = {}
    for i in range(n_steps):
        a, b = rng.sample(values[-FAN_OUT_WINDOW:], 2)
        steps[f"v{i}"] = rng.choice(FAN_OUT_FORMS).format(a=a, b=b)
        values.append(f"v{i}")
    return {
        "name": f"fan_out{n_steps}",
        "inputs": {x: {} for x in values[:n_inputs]},
        "steps": steps,
        "output": values[-1],
    }


def symgrad_compile(source, **options):
    """(seconds, module) of one symgrad.compile with SymPy's cache cleared."""
    clear_cache()
    return c.once(lambda: c.symgrad.compile(source, **options))


def sympy_compile(expr, symbols, limit: float):
    """(seconds, function, note) of sympy.diff + lambdify(cse=True), or None after `limit`."""
    clear_cache()
    try:
        with c.time_limit(limit):
            seconds, fn = c.once(
                lambda: sp.lambdify(
                    symbols, [expr, *[sp.diff(expr, s) for s in symbols]], cse=True
                )
            )
    except c.TimeLimitExceeded as err:
        return None, None, str(err)
    return seconds, fn, ""


def jax_compile(k: int):
    """Seconds to trace, compile and run jax.jit(value_and_grad) of the chain once."""
    jax, why = c.tool("jax")
    if jax is None:
        return None, why
    jnp = jax.numpy

    def chain(x, *params):
        h = x
        for i in range(k):
            h = jnp.sin(params[2 * i] * h + params[2 * i + 1])
        return h

    fn = jax.jit(jax.value_and_grad(chain, argnums=tuple(range(2 * k + 1))))
    args = [0.3] + [0.5] * (2 * k)
    seconds, _ = c.once(lambda: jax.block_until_ready(fn(*args)))
    return seconds, ""


def ir_size(module) -> str:
    compiled = getattr(module, "__symgrad__", None)
    unit = getattr(compiled, "unit", None)
    if unit is None:
        return "?"
    return str(len(unit.forward) + len(unit.backward))


def check_agreement(label, module, fn, point) -> None:
    value, grads = module.value_and_grad(*point)
    value_ref, *grads_ref = fn(*point)
    if np.all(np.isfinite([value_ref, *grads_ref])):
        c.assert_agrees(label, (value, list(grads)), (value_ref, grads_ref), rtol=1e-6)


def growth(seconds: float | None, previous: tuple[int, float | None], size: int) -> str:
    """log(t/t_prev)/log(size/size_prev): 1 is linear, 2 quadratic."""
    size_prev, seconds_prev = previous
    if seconds is None or not seconds_prev or size == size_prev:
        return ""
    return f"{math.log(seconds / seconds_prev) / math.log(size / size_prev):.2f}"


def cost_cells(
    seconds: float, size: int, previous: tuple[int, float | None], per: str
) -> list[str]:
    """symgrad.compile's time, its time per unit of size (in `per`: ms or µs), growth."""
    scale, digits = {"ms": (1e3, 2), "µs": (1e6, 0)}[per]
    return [
        c.format_seconds(seconds),
        f"{seconds / size * scale:.{digits}f} {per}",
        growth(seconds, previous, size),
    ]


def stages(source, label: str, **options) -> None:
    """Where symgrad.compile spends its time (uses symgrad.pipeline's internals)."""
    try:
        from symgrad import pipeline

        clear_cache()
        t_spec, spec = c.once(lambda: pipeline.load_spec(source, **options))
        t_build, compiled = c.once(lambda: pipeline.build(spec))
        t_source, text = c.once(lambda: pipeline.source(compiled))
        t_import, _ = c.once(
            lambda: pipeline.import_source(text, compiled.spec.name, compiled)
        )
    except (AttributeError, TypeError, ImportError) as err:
        print(f"(stage breakdown unavailable: {err})\n")
        return
    c.print_table(
        f"Stages of symgrad.compile: {label}",
        [
            "load_spec",
            "build (lower, reverse x2, dce, cancel)",
            "source (render)",
            "import",
        ],
        [[c.format_seconds(t) for t in (t_spec, t_build, t_source, t_import)]],
    )


def main(argv=None) -> int:
    args = c.parse_args(
        __doc__.splitlines()[0],
        argv,
        stages="also print where symgrad.compile spends its time at the largest sizes",
    )
    quick, show_stages = args.quick, args.stages
    c.print_header("Compile time against expression size", quick)
    symgrad_compile(chain_spec(2))  # warm imports and templates
    ks = [2, 4, 8] if quick else [2**i for i in range(1, 13)]
    sympy_max_k, jax_max_k = (4, 2) if quick else (SYMPY_MAX_K, JAX_MAX_K)
    limit = 10.0 if quick else 60.0
    targets = c.Targets()
    cells, previous = [], (1, None)
    times = {}
    for k in ks:
        seconds, module = symgrad_compile(chain_spec(k))
        times[k] = seconds
        row = [k, ir_size(module), *cost_cells(seconds, k, previous, "ms")]
        previous = (k, seconds)
        if k <= sympy_max_k:
            expr, symbols = chain_expression(k)
            ref, fn, note = sympy_compile(expr, symbols, limit)
            if fn is not None and k <= 8:
                point = np.random.default_rng(k).uniform(-1, 1, 2 * k + 1)
                check_agreement(f"chain k={k}", module, fn, point)
            row += [
                "gave up" if ref is None else c.format_seconds(ref),
                c.format_ratio(c.ratio(ref, seconds)),
                note,
            ]
        else:
            row += ["skipped", "–", f"k > {sympy_max_k}"]
        if k <= jax_max_k:
            jax_seconds, why = jax_compile(k)
            row.insert(-1, why or c.format_seconds(jax_seconds))
        else:
            row.insert(-1, "skipped")
        cells.append(row)
    c.print_table(
        "k-layer chain h_i = sin(a_i*h_(i-1) + c_i): compile time",
        [
            "k",
            "IR ops",
            "symgrad.compile",
            "per layer",
            "growth exponent",
            "sympy.diff + lambdify(cse)",
            "÷ symgrad",
            "jax.jit compile",
            "note",
        ],
        cells,
    )
    targets.check("chain k = 64: symgrad.compile", times.get(64), 0.5, " s")
    targets.check("chain k = 1024: symgrad.compile", times.get(1024), 10, " s")
    targets.check(
        "chain k = 4096: symgrad.compile (issue 10)", times.get(4096), 10, " s"
    )
    if show_stages:
        stages(chain_spec(ks[-1]), f"chain k = {ks[-1]}")

    sizes = [50, 100] if quick else [1000, 3000, 10000]
    cells, previous = [], (1, None)
    for n in sizes:
        expr, symbols = random_expression(n)
        seconds, module = symgrad_compile(expr, wrt=symbols)
        ref, fn, note = sympy_compile(expr, symbols, limit)
        if fn is not None:
            point = np.random.default_rng(n).uniform(-1, 1, len(symbols))
            check_agreement(f"random n={n}", module, fn, point)
        cells.append(
            [
                n,
                sp.count_ops(expr),
                ir_size(module),
                *cost_cells(seconds, n, previous, "µs"),
                "gave up" if ref is None else c.format_seconds(ref),
                c.format_ratio(c.ratio(ref, seconds)),
                note,
            ]
        )
        previous = (n, seconds)
        if n == 10000:
            targets.check(
                "10,000-operation expression: symgrad.compile", seconds, 10, " s"
            )
    c.print_table(
        "Random expression over 20 symbols, all 20 gradients: compile time",
        [
            "operations",
            "count_ops",
            "IR ops",
            "symgrad.compile",
            "per operation",
            "growth exponent",
            "sympy.diff + lambdify(cse)",
            "÷ symgrad",
            "note",
        ],
        cells,
    )
    if show_stages:
        expr, symbols = random_expression(sizes[-1])
        stages(expr, f"random expression, {sizes[-1]} operations", wrt=symbols)

    cells, previous = [], (1, None)
    for n in sizes:
        seconds, module = symgrad_compile(fan_out_spec(n))
        cells.append([n, ir_size(module), *cost_cells(seconds, n, previous, "µs")])
        previous = (n, seconds)
        if n == 10000:
            targets.check(
                "fan-out DAG of 10,000 steps: symgrad.compile (issue 10)",
                seconds,
                10,
                " s",
            )
    c.print_table(
        "Random fan-out DAG: named steps reading the last "
        f"{FAN_OUT_WINDOW} values, 20 inputs, all 20 gradients: compile time",
        ["steps", "IR ops", "symgrad.compile", "per step", "growth exponent"],
        cells,
    )
    if show_stages:
        stages(fan_out_spec(sizes[-1]), f"fan-out DAG, {sizes[-1]} steps")
    targets.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
