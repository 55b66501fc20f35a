"""`path | dict | SymPy expression -> Spec`: load and validate what the user wrote.

A spec is parsed without running any of its text: YAML is loaded safely
(anchors and aliases refused), and each expression is parsed into a Python
AST, checked against an allow-list of syntax and names, and only then built
into SymPy by this module. Every problem raises `SpecError`, which names the
file, the line and the step.
"""

from __future__ import annotations

import ast
import builtins
import decimal
import difflib
import itertools
import keyword
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import sympy as sp
import yaml
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from symgrad.frontend.language import (
    CONSTANTS,
    FUNCTIONS,
    NORMALIZED_ONLY,
    TENSOR_FUNCTIONS,
    bottom_up,
    nodes,
    unsupported_function,
)
from symgrad.ops import BY_SYMPY, SPELLINGS, Static, TensorOp, tensor

# Limits on what a spec may ask for, so that hostile input ends quickly with an error.
MAX_SPEC_BYTES = 1_000_000
MAX_YAML_DEPTH = 20
MAX_NAMES = 10_000  # inputs, and steps
MAX_EXPRESSION_CHARS = 20_000
MAX_NESTING = 100
MAX_CONSTANT_BITS = 4096
MAX_STEP_NODES = 200  # a larger SymPy expression is cut into steps (SymPy recurses)

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "source",
    "inputs",
    "wrt",
    "steps",
    "output",
    "outputs",
    "derivatives",
    "at",
    "expect",
)
DERIVATIVES = ("jvp", "hvp", "hessian", "jacobian")
"""What a module may carry beyond the gradient (the `derivatives` key)."""
MAX_HESSIAN_INPUTS = 16  # hessian() calls hvp once per differentiated input
INPUT_KEYS = ("shape", "positive", "integers")

# Names the generated module itself uses, so a spec cannot take them (the python
# target calls the builtins abs, max and min). Any other function of the spec
# language may name an input or a step, which shadows the function from there on.
RESERVED = frozenset(
    {
        "abs",
        "max",
        "min",
        "np",
        "numpy",
        "math",
        "typing",
        "NamedTuple",
        "Any",
        "tape",
        "Tape",
        "dy",
        "Gradients",
        "Outputs",
    }
    | {"forward", "backward", "value_and_grad", "grad", "gradients", "symgrad"}
)

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class SpecError(Exception):
    """A problem with a spec: `file:line: error: [step 'name': ]message`."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        step: str | None = None,
    ) -> None:
        message = _abridged(message)
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.step = step

    def __str__(self) -> str:
        where = self.path or "<spec>"
        if self.line:
            where += f":{self.line}"
        step = f"step {self.step!r}: " if self.step else ""
        return f"{where}: error: {step}{self.message}"


@dataclass(frozen=True)
class Input:
    name: str
    shape: tuple[int | str, ...] = ()
    positive: bool = False
    # integer values in [0, integers) (a size or a dimension name): indices, as labels
    integers: int | str | None = None

    @property
    def symbol(self) -> sp.Symbol:
        if self.integers is not None:
            return sp.Symbol(self.name, integer=True)
        return make_symbol(self.name, positive=self.positive)


@dataclass(frozen=True)
class Step:
    name: str
    expr: sp.Expr
    text: str
    line: int | None = None


@dataclass(frozen=True)
class Spec:
    """A validated spec: every name resolved, every expression built, nothing YAML left."""

    name: str
    inputs: tuple[Input, ...]
    wrt: tuple[str, ...]
    steps: tuple[Step, ...]
    output: str
    description: str = ""
    source: str = ""
    path: str | None = None
    derivatives: tuple[str, ...] = ()  # beyond the gradient (DERIVATIVES)
    extra_outputs: tuple[str, ...] = ()
    """The outputs after the first (`outputs: [y, z]`): on the tape, and in jvp and
    jacobian; forward, backward, value_and_grad and grad are about `output`."""
    at: tuple[tuple[str, Any], ...] = ()  # (input, value): the spec's own point
    expect: tuple[Expected, ...] = ()  # a learner's values, to be marked

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output, `output` first."""
        return (self.output, *self.extra_outputs)

    @property
    def point(self) -> dict[str, Any]:
        """The `at:` point: floats, and nested lists for arrays."""
        return {name: _as_lists(value) for name, value in self.at}

    def expanded(self) -> sp.Expr:
        """The output as one SymPy expression of the inputs (steps substituted)."""
        values: dict[sp.Symbol, sp.Expr] = {}
        for step in self.steps:
            values[make_symbol(step.name)] = step.expr.xreplace(values)
        return values[make_symbol(self.output)]


@dataclass(frozen=True)
class Expected:
    """One value a learner wrote under `expect:`, compared at the precision written.

    `kind` is "value" (a step's or an input's value), "adjoint" (∂output/∂of,
    of a step) or "gradient" (∂output/∂of, of a differentiated input); `value`
    is a float or nested tuples of floats, `tolerance` half a unit of the last
    digit written (1.230: 0.0005) of each entry, alike nested.
    """

    name: str
    kind: str
    of: str
    text: str
    value: Any
    tolerance: Any
    line: int | None = None


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value


def make_symbol(name: str, *, positive: bool = False) -> sp.Symbol:
    """The one SymPy symbol symgrad uses for a name: real, and positive if declared so."""
    return sp.Symbol(name, positive=True) if positive else sp.Symbol(name, real=True)


# --------------------------------------------------------------------------- YAML


def load(path: str | Path) -> Spec:
    """Read and validate the spec file at `path`."""
    where = str(path)
    try:
        with open(path, "rb") as file:  # never more than the limit, whatever the file
            raw = file.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(
            f"cannot read spec: {err.strerror or err}", path=where
        ) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is larger than {MAX_SPEC_BYTES} bytes, the limit", path=where, line=1
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SpecError("spec is not UTF-8 text", path=where, line=line) from None
    return parse(text, where, default_name=Path(path).stem)


def parse(text: str, path: str = "<spec>", *, default_name: str | None = None) -> Spec:
    """Validate the YAML text of a spec."""
    data, lines, texts = _read_yaml(text, path)
    return _Builder(path, lines, default_line=1, texts=texts).spec(data, default_name)


def from_dict(data: dict[str, Any], *, path: str = "<dict>") -> Spec:
    """Validate a spec given as a Python dict (the parsed form of the YAML)."""
    return _Builder(path, {}).spec(data, None)


# libyaml's parser when PyYAML has it (fast on large files), else PyYAML's own.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(text: str, path: str) -> tuple[Any, dict[tuple, int], dict[tuple, str]]:
    """Parse YAML safely, refusing anchors and aliases; return the data, a line per
    key, and the text of each number under `expect:` as written (1.230, not 1.23).

    A first pass over the parser's events refuses anchors and aliases (so an
    alias bomb is never expanded) and nesting deeper than MAX_YAML_DEPTH (the
    composer recurses); only then is the document composed, once, with the safe
    loader (no Python tags).
    """
    try:
        try:
            _check_events(text, path, _SAFE_LOADER)
        except yaml.YAMLError:
            # libyaml has limits of its own (a nesting depth, for one) that can
            # fire before ours: let the pure-Python parser, which has none that
            # low, say whether the cause is one of symgrad's own limits.
            if _SAFE_LOADER is yaml.SafeLoader:
                raise
            _check_events(text, path, yaml.SafeLoader)
            raise
        loader = _SAFE_LOADER(text)
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(
            f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else 1
        ) from None
    lines: dict[tuple, int] = {}
    texts: dict[tuple, str] = {}
    if isinstance(root, yaml.MappingNode):
        _record_lines(root, (), lines, path)
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "expect":
                _record_texts(value, ("expect",), texts)
    return data, lines, texts


def _record_texts(node: yaml.Node, prefix: tuple, texts: dict[tuple, str]) -> None:
    """The text of every scalar below `node`, by its path of keys and list indices."""
    if isinstance(node, yaml.ScalarNode):
        texts[prefix] = node.value
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_texts(item, (*prefix, i), texts)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                _record_texts(value, (*prefix, key.value), texts)


def _check_events(text: str, path: str, loader: type) -> None:
    """Refuse anchors, aliases and nesting deeper than MAX_YAML_DEPTH, event by event."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SpecError(
                "YAML anchors and aliases are not allowed in a spec",
                path=path,
                line=line,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise SpecError(
                    f"YAML is nested more than {MAX_YAML_DEPTH} levels deep",
                    path=path,
                    line=line,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _record_lines(node: yaml.Node, prefix: tuple, lines: dict, path: str) -> None:
    """The line of every mapping key, by its path of keys; refuse duplicate keys."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _record_lines(item, prefix, lines, path)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        line = key_node.start_mark.line + 1
        if key is not None and prefix + (key,) in lines:
            first = lines[prefix + (key,)]
            raise SpecError(
                f"duplicate key {key!r} (first defined at line {first})",
                path=path,
                line=line,
                step=key if prefix == ("steps",) else None,
            )
        lines.setdefault(prefix + (key,), line)
        _record_lines(value_node, prefix + (key,), lines, path)


# --------------------------------------------------------------------------- validation


class _Builder:
    """Turns plain data into a Spec, raising SpecError with file and line."""

    def __init__(
        self,
        path: str,
        lines: dict[tuple, int],
        default_line: int | None = None,
        texts: dict[tuple, str] | None = None,
    ) -> None:
        self.path = path
        self.lines = lines
        self.default_line = default_line  # where a missing key is reported (files: 1)
        self.texts = texts or {}  # numbers under expect: as written

    def error(self, message: str, *key: str, step: str | None = None) -> SpecError:
        line = None
        for depth in range(len(key), 0, -1):  # the most precise line known
            line = _lookup(self.lines, tuple(key[:depth]))
            if line:
                break
        return SpecError(
            message, path=self.path, line=line or self.default_line, step=step
        )

    def spec(self, data: Any, default_name: str | None) -> Spec:
        if data is None:
            raise SpecError("the spec is empty", path=self.path, line=1)
        if not isinstance(data, dict):
            raise SpecError(
                f"a spec is a mapping of keys (name, inputs, steps, output), "
                f"not {_kind(data)}",
                path=self.path,
                line=1,
            )
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                raise self.error(
                    f"unknown key {key!r}{_suggest(str(key), TOP_LEVEL_KEYS)}", key
                )
        name = self.module_name(data.get("name"), default_name)
        description = self.text(data, "description")
        source = self.text(data, "source")
        inputs = self.inputs(data.get("inputs"))
        symbols: dict[str, sp.Expr] = {i.name: i.symbol for i in inputs}
        dims = {
            d: (i.symbol, axis)
            for i in reversed(inputs)
            for axis, d in enumerate(i.shape)
            if isinstance(d, str)
        }
        steps = self.steps(data.get("steps"), symbols, dims)
        output, *extra_outputs = self.output(data, steps, inputs)
        wrt = self.wrt(data.get("wrt"), inputs, steps)
        derivatives = self.derivatives(data.get("derivatives"), inputs, steps, wrt)
        at = self.at(data.get("at"), inputs, steps)
        expect = self.expect(data.get("expect"), inputs, steps, output, wrt, at)
        return Spec(
            name,
            inputs,
            wrt,
            steps,
            output,
            description,
            source,
            self.path,
            derivatives,
            tuple(extra_outputs),
            at,
            expect,
        )

    def at(
        self, raw: Any, inputs: tuple[Input, ...], steps: tuple[Step, ...]
    ) -> tuple[tuple[str, Any], ...]:
        """The `at:` point: a number (or nested lists of numbers) for some inputs."""
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            raise self.error(
                f"'at' must be a mapping of input names to values, not {_kind(raw)}",
                "at",
            )
        shapes = {i.name: i.shape for i in inputs}
        point = []
        for name, value in raw.items():
            if name not in shapes:
                what = (
                    "a step: at: gives inputs"
                    if name in {s.name for s in steps}
                    else (f"not an input{_suggest(str(name), shapes)}")
                )
                raise self.error(f"at: {name!r} is {what}", "at", name)
            number = _numbers(value)
            if number is None:
                raise self.error(
                    f"at: {name!r} must be a number or a list of numbers, not "
                    f"{_kind(value)}",
                    "at",
                    name,
                )
            self.check_rank(name, number, shapes[name], "at")
            point.append((name, number))
        return tuple(point)

    def check_rank(self, name: str, value: Any, shape: tuple, key: str) -> None:
        """`value` (numbers, nested tuples) fits the declared `shape` (a scalar
        input takes a batch of any shape)."""
        got = np.shape(value) if _rectangular(value) else None
        if got is None:
            raise self.error(f"{key}: {name!r} is not a rectangular array", key, name)
        if shape and (
            len(got) != len(shape)
            or any(
                isinstance(d, int) and d != n for d, n in zip(shape, got, strict=True)
            )
        ):
            declared = "[" + ", ".join(map(str, shape)) + "]"
            raise self.error(
                f"{key}: {name!r} has shape {list(got)}; the spec declares {declared}",
                key,
                name,
            )

    def expect(
        self,
        raw: Any,
        inputs: tuple[Input, ...],
        steps: tuple[Step, ...],
        output: str,
        wrt: tuple[str, ...],
        at: tuple[tuple[str, Any], ...],
    ) -> tuple[Expected, ...]:
        """A learner's values: steps (f0), adjoints (dy_dh3 or dydh3), gradients
        (dy_dbeta0 or dydbeta0), each compared at the precision written."""
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            raise self.error(
                f"'expect' must be a mapping of names to values, not {_kind(raw)}",
                "expect",
            )
        fixed = {n for n, _ in at}
        missing = [i.name for i in inputs if i.name not in fixed]
        if missing:
            raise self.error(
                f"expect: needs the point its values belong to: give every input "
                f"under at: ({', '.join(missing)} missing)",
                "expect",
            )
        names = _expectable(inputs, steps, output, wrt)
        shapes = {i.name: i.shape for i in inputs}
        expected = []
        for name, value in raw.items():
            if name not in names:
                hint = _suggest(str(name), names) or (
                    f"; write a step ({steps[0].name}), an adjoint "
                    f"(d{output}_d{steps[0].name} or d{output}d{steps[0].name}) or "
                    f"a gradient (d{output}_d{wrt[0]})"
                )
                raise self.error(f"expect: unknown name {name!r}{hint}", "expect", name)
            kind, of = names[name]
            number, tolerance, text = self.written(name, value)
            if of in shapes:
                self.check_rank(name, number, shapes[of], "expect")
            line = _lookup(self.lines, ("expect", name))
            expected.append(Expected(name, kind, of, text, number, tolerance, line))
        return tuple(expected)

    def written(self, name: str, value: Any) -> tuple[Any, Any, str]:
        """A number (or nested list) under expect:, half a unit of its last digit,
        and the text written."""

        def parse(v: Any, path: tuple) -> tuple[Any, Any, str]:
            if isinstance(v, list) and v:
                parts = [parse(item, (*path, i)) for i, item in enumerate(v)]
                return (
                    tuple(p[0] for p in parts),
                    tuple(p[1] for p in parts),
                    "[" + ", ".join(p[2] for p in parts) + "]",
                )
            text = self.texts.get(path, repr(v) if isinstance(v, float) else str(v))
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                text = None
            try:
                number = decimal.Decimal(text.strip()) if text is not None else None
            except decimal.InvalidOperation:
                number = None
            if number is None or not number.is_finite():
                raise self.error(
                    f"expect: {name!r} must be a number or a list of numbers, not "
                    f"{_kind(v)}",
                    "expect",
                    name,
                )
            return float(number), 0.5 * 10.0 ** number.as_tuple().exponent, text.strip()

        return parse(value, ("expect", name))

    def module_name(self, name: Any, default: str | None = None) -> str:
        if name is None and default is None:
            raise self.error("missing key 'name' (the generated module's name)")
        if name is None:
            if default.isidentifier() and not keyword.iskeyword(default):
                name = default
            else:
                raise self.error(
                    f"missing key 'name' (the file name {default!r} is not a Python "
                    f"identifier, so it cannot be the module's name)"
                )
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
        ):
            raise self.error(f"name {name!r} is not a Python identifier", "name")
        if name.startswith("_") or name in _MODULE_NAMES_TAKEN:
            raise self.error(
                f"name {name!r} cannot be the generated module's name (it would "
                f"shadow a module or file Python needs)",
                "name",
            )
        return name

    def text(self, data: dict, key: str) -> str:
        value = data.get(key, "")
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"{key!r} must be text, not {_kind(value)}", key)
        bad = _unprintable(str(value))
        if bad:
            raise self.error(f"{key!r} contains the control character {bad}", key)
        # Trailing blanks mean nothing, and would be trailing whitespace in the module.
        return "\n".join(line.rstrip() for line in str(value).splitlines())

    def check_name(self, name: Any, what: str, *key: str) -> str:
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise self.error(
                f"{what} name {name!r} is not a valid name (letters, digits and _, "
                f"starting with a letter)",
                *key,
            )
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            raise self.error(f"{what} name {name!r} is a Python keyword", *key)
        if name in RESERVED:
            raise self.error(
                f"{what} name {name!r} is reserved for the generated module", *key
            )
        if hasattr(builtins, name) and name not in FUNCTIONS:
            raise self.error(
                f"{what} name {name!r} would shadow the Python builtin", *key
            )
        return name

    def inputs(self, raw: Any) -> tuple[Input, ...]:
        if raw is None:
            raise self.error(
                "missing key 'inputs' (the free symbols, in order)", "inputs"
            )
        if not isinstance(raw, dict):
            raise self.error(
                f"'inputs' must be a mapping of names, not {_kind(raw)}", "inputs"
            )
        if not raw:
            raise self.error("'inputs' is empty: name at least one input", "inputs")
        if len(raw) > MAX_NAMES:
            raise self.error(f"more than {MAX_NAMES} inputs", "inputs")
        inputs = []
        for name, options in raw.items():
            self.check_name(name, "input", "inputs", name)
            options = {} if options is None else options
            if not isinstance(options, dict):
                raise self.error(
                    f"input {name!r} takes a mapping of options ({', '.join(INPUT_KEYS)}), "
                    f"not {_kind(options)}",
                    "inputs",
                    name,
                )
            for key in options:
                if key not in INPUT_KEYS:
                    raise self.error(
                        f"input {name!r}: unknown option {key!r}"
                        f"{_suggest(str(key), INPUT_KEYS)}",
                        "inputs",
                        name,
                    )
            shape = self.shape(name, options.get("shape", []))
            positive = options.get("positive", False)
            if not isinstance(positive, bool):
                raise self.error(
                    f"input {name!r}: 'positive' must be true or false", "inputs", name
                )
            integers = options.get("integers")
            ok = isinstance(integers, int) and not isinstance(integers, bool)
            if integers is not None and not (
                (ok and integers > 0)
                or (isinstance(integers, str) and _IDENTIFIER.match(integers))
            ):
                raise self.error(
                    f"input {name!r}: 'integers' is the number of values (a positive "
                    f"size or a dimension name, as labels: {{integers: k}}), not "
                    f"{integers!r}",
                    "inputs",
                    name,
                )
            inputs.append(Input(name, shape, positive, integers))
        dims = {d for i in inputs for d in i.shape if isinstance(d, str)}
        for i in inputs:
            if isinstance(i.integers, str) and i.integers not in dims:
                raise self.error(
                    f"input {i.name!r}: 'integers' names {i.integers!r}, which is no "
                    f"input's dimension",
                    "inputs",
                    i.name,
                )
        return tuple(inputs)

    def shape(self, name: str, raw: Any) -> tuple[int | str, ...]:
        """A declared shape: a list of sizes (positive ints) and dimension names."""
        if not isinstance(raw, list | tuple):
            raise self.error(
                f"input {name!r}: shape must be a list like [3, 2] or [n], not {raw!r}",
                "inputs",
                name,
            )
        for dim in raw:
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
            if not ok_int and not (isinstance(dim, str) and _IDENTIFIER.match(dim)):
                raise self.error(
                    f"input {name!r}: dimension {dim!r} is neither a positive size "
                    f"nor a name",
                    "inputs",
                    name,
                )
        return tuple(raw)

    def steps(
        self, raw: Any, symbols: dict[str, sp.Expr], dims: dict | None = None
    ) -> tuple[Step, ...]:
        if raw is None:
            raise self.error(
                "missing key 'steps' (named expressions, in order)", "steps"
            )
        if not isinstance(raw, dict):
            raise self.error(
                f"'steps' must be a mapping of names to expressions, not {_kind(raw)}",
                "steps",
            )
        if not raw:
            raise self.error("'steps' is empty: define at least one step", "steps")
        if len(raw) > MAX_NAMES:
            raise self.error(f"more than {MAX_NAMES} steps", "steps")
        later = {name for name in raw if isinstance(name, str)}
        kinds = dict.fromkeys(symbols, "an input")
        steps = []
        for name, text in raw.items():
            self.check_name(name, "step", "steps", name)
            if name in symbols:
                raise self.error(
                    f"{name!r} is already an input; a step needs a name of its own",
                    "steps",
                    name,
                    step=name,
                )
            if isinstance(text, bool) or not isinstance(text, str | int | float):
                raise self.error(
                    f"expected an expression, got {_kind(text)}",
                    "steps",
                    name,
                    step=name,
                )
            text = str(text)
            try:
                expr = parse_expression(text, symbols, kinds, later, dims)
            except SpecError as err:
                raise self.error(err.message, "steps", name, step=name) from None
            line = self.lines.get(("steps", name))
            steps.append(Step(name, expr, text, line))
            symbols[name] = make_symbol(name)
            kinds[name] = f"a step defined at line {line}" if line else "a step"
        return tuple(steps)

    def output(
        self, data: dict, steps: tuple[Step, ...], inputs: tuple[Input, ...]
    ) -> list[str]:
        """The output's name, or the names in `outputs` (distinct steps), in order."""
        if "outputs" in data:
            outputs = data["outputs"]
            if not isinstance(outputs, list) or not outputs:
                raise self.error("'outputs' must be a list of step names", "outputs")
            if "output" in data:
                raise self.error(
                    "give either 'output' or 'outputs', not both", "outputs"
                )
            if len(set(map(str, outputs))) != len(outputs):
                raise self.error("'outputs' names a step twice", "outputs")
            key = "outputs"
        elif "output" in data:
            outputs, key = [data["output"]], "output"
        else:
            outputs, key = [steps[-1].name], None
        names = [s.name for s in steps]
        for output in outputs:
            if not isinstance(output, str):
                raise self.error(
                    f"output must be a step's name, not {_kind(output)}", key
                )
            if output not in names:
                if output in {i.name for i in inputs}:
                    raise self.error(
                        f"output {output!r} is an input; the output must be a step",
                        key,
                    )
                raise self.error(
                    f"output {output!r} is not a step{_suggest(str(output), names)}",
                    key,
                )
        return outputs

    def wrt(
        self, raw: Any, inputs: tuple[Input, ...], steps: tuple[Step, ...]
    ) -> tuple[str, ...]:
        names = [i.name for i in inputs]
        integers = {i.name for i in inputs if i.integers is not None}
        if raw is None:  # integer inputs (indices) have no gradient
            return tuple(n for n in names if n not in integers)
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not raw:
            raise self.error("'wrt' must be a list of input names", "wrt")
        steps_by_name = {s.name for s in steps}
        for name in raw:
            if not isinstance(name, str):
                raise self.error(
                    f"'wrt' must be a list of input names, not of {_kind(name)}", "wrt"
                )
            if name in steps_by_name:
                raise self.error(
                    f"wrt names step {name!r}; gradients are taken with respect to "
                    f"inputs",
                    "wrt",
                )
            if name not in names:
                raise self.error(
                    f"wrt names {name!r}, which is not an input{_suggest(str(name), names)}",
                    "wrt",
                )
            if name in integers:
                raise self.error(
                    f"wrt names {name!r}, which holds integers (indices have no gradient)",
                    "wrt",
                )
        if len(set(raw)) != len(raw):
            raise self.error("'wrt' names an input twice", "wrt")
        return tuple(n for n in names if n in raw)

    def derivatives(
        self, raw: Any, inputs: tuple[Input, ...], steps: tuple[Step, ...], wrt: tuple
    ) -> tuple[str, ...]:
        if raw is None:
            return ()
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
            raise self.error(
                f"'derivatives' must be a list of {', '.join(DERIVATIVES)}",
                "derivatives",
            )
        for d in raw:
            if d not in DERIVATIVES:
                raise self.error(
                    f"unknown derivative {d!r}{_suggest(d, DERIVATIVES)}; a module "
                    f"can carry {', '.join(DERIVATIVES)}",
                    "derivatives",
                )
        taken = {i.name for i in inputs} | {s.name for s in steps}
        for d in raw:
            if d in taken:
                raise self.error(
                    f"derivative {d!r} would be a function of the module, but the "
                    f"spec names an input or step {d!r}",
                    "derivatives",
                )
        if "hessian" in raw and any(i.shape for i in inputs):
            raise self.error(
                "'hessian' needs scalar inputs (a batch is fine); for vectors and "
                "matrices ask for 'hvp' (a Hessian-vector product)",
                "derivatives",
            )
        if "hessian" in raw and len(wrt) > MAX_HESSIAN_INPUTS:
            raise self.error(
                f"'hessian' takes at most {MAX_HESSIAN_INPUTS} differentiated inputs "
                f"(one hvp each), not {len(wrt)}; ask for 'hvp' instead",
                "derivatives",
            )
        return tuple(d for d in DERIVATIVES if d in raw)


def _expectable(
    inputs: tuple[Input, ...], steps: tuple[Step, ...], output: str, wrt: tuple
) -> dict[str, tuple[str, str]]:
    """Every name `expect:` takes -> (kind, the step or input it is about).

    The generated code's adjoints are dy_dh3; the notebooks write dydh3: both.
    """
    names: dict[str, tuple[str, str]] = {}
    for w in wrt:
        for spelling in (f"d{output}_d{w}", f"d{output}d{w}"):
            names.setdefault(spelling, ("gradient", w))
    for step in steps:
        for spelling in (f"d{output}_d{step.name}", f"d{output}d{step.name}"):
            names.setdefault(spelling, ("adjoint", step.name))
    for v in (*inputs, *steps):  # a name of the spec's own wins
        names[v.name] = ("value", v.name)
    return names


def _numbers(value: Any) -> Any:
    """A number as a float, or nested lists of numbers as nested tuples; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, list) and value:
        items = [_numbers(v) for v in value]
        return None if any(i is None for i in items) else tuple(items)
    return None


def _rectangular(value: Any) -> bool:
    if not isinstance(value, tuple):
        return True
    shapes = {np.shape(v) if _rectangular(v) else None for v in value}
    return len(shapes) == 1 and None not in shapes


def with_derivatives(spec: Spec, derivatives: Any) -> Spec:
    """`spec` carrying `derivatives` (from the command line or the API), checked
    as the spec's own `derivatives` key is."""
    builder = _Builder(spec.path or "<spec>", {})
    checked = builder.derivatives(derivatives, spec.inputs, spec.steps, spec.wrt)
    return replace(spec, derivatives=checked)


def with_wrt(spec: Spec, wrt: Any) -> Spec:
    """`spec` differentiated with respect to `wrt` (names or SymPy symbols, from
    the API), checked as the spec's own `wrt` key is."""
    builder = _Builder(spec.path or "<spec>", {})
    names = [_symbol_name(w) for w in _as_list(wrt)]
    return replace(spec, wrt=builder.wrt(names, spec.inputs, spec.steps))


def _kind(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing",
    }
    return kinds.get(type(value), type(value).__name__)


def _suggest(word: str, options) -> str:
    """' (did you mean ...?)' for the option `word` looks like (fo: f0), or is close to."""
    options = list(options)
    alike = [o for o in options if _look(o) == _look(word)]
    close = alike or difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Characters easily typed or read for one another: O and 0, l, I and 1.
_LOOK_ALIKE = str.maketrans("oli", "011")


def _look(word: str) -> str:
    return word.casefold().translate(_LOOK_ALIKE)


def _lookup(lines: dict[tuple, int], key: tuple) -> int | None:
    try:
        return lines.get(key)
    except TypeError:  # an unhashable key (a list where a name belongs)
        return None


# Module names that would shadow what the generated module (or its user) imports.
_MODULE_NAMES_TAKEN = frozenset({"numpy", "np", "math", "typing", "symgrad"})

# Bidirectional-text controls, which can make text display differently from what it
# is (Trojan Source, CVE-2021-42574).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e")
_BIDI |= frozenset("\u2066\u2067\u2068\u2069")


def _unprintable(text: str) -> str | None:
    """The first character of `text` that must not reach generated code, as U+XXXX.

    Text fields go into the generated module's docstring and comments: control
    characters (a NUL byte makes the module unloadable), lone surrogates (not
    UTF-8) and bidirectional-text controls are refused; tabs and newlines are fine.
    """
    for char in text:
        code = ord(char)
        if char in "\t\n":
            continue
        if code < 32 or 127 <= code < 160 or 0xD800 <= code < 0xE000 or char in _BIDI:
            return f"U+{code:04X}"
    return None


def _abridged(message: str, limit: int = 80) -> str:
    """`message` with long quoted text and long numbers cut short, to stay readable."""

    def cut(match: re.Match) -> str:
        quoted = match.group(0)
        if len(quoted) <= limit:
            return quoted
        return quoted[: limit - 4] + "..." + quoted[-1]

    message = re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", cut, message)
    return re.sub(
        r"\d{40,}", lambda m: f"{m.group()[:8]}...({len(m.group())} digits)", message
    )


# --------------------------------------------------------------------------- expressions

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_COMPARE = {
    ast.Gt: sp.StrictGreaterThan, ast.GtE: sp.GreaterThan, ast.Lt: sp.StrictLessThan,
    ast.LtE: sp.LessThan, ast.Eq: sp.Eq, ast.NotEq: sp.Ne,
}  # fmt: skip


def parse_expression(
    text: str,
    symbols: dict[str, sp.Expr],
    kinds: dict[str, str],
    later: set[str] = frozenset(),
    dims: dict | None = None,
) -> sp.Expr:
    """Build the SymPy expression for `text`, whose names are `symbols`, without evaluating text.

    A name of `symbols` shadows a function of the same name, as in Python;
    `kinds` says what each one is ("an input"), for messages. `later` holds the
    names of all steps, for a clearer message about those not yet defined.
    """
    if len(text) > MAX_EXPRESSION_CHARS:
        raise SpecError(
            f"expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}"
        )
    if not text.strip():
        raise SpecError("empty expression")
    bad = _unprintable(text)
    if bad:
        raise SpecError(f"the expression contains the control character {bad}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        hint = _implicit_product(text) or err.msg
        raise SpecError(f"invalid syntax in {text.strip()!r}: {hint}") from None
    except (RecursionError, MemoryError):  # CPython's parser gives up on deep nesting
        raise SpecError(
            f"expression is nested too deeply to parse (more than {MAX_NESTING} "
            f"levels); split it into steps"
        ) from None
    except ValueError as err:  # e.g. an integer literal of more than 4300 digits
        raise SpecError(f"cannot parse expression: {err}") from None
    _check_depth(tree)
    try:
        result = _Expression(symbols, kinds, later, dims).build(tree.body)
    except (TypeError, ValueError, ArithmeticError, RecursionError) as err:
        # SymPy refusing to build something (e.g. a relation it cannot decide).
        raise SpecError(f"cannot build {text.strip()!r}: {err}") from None
    if not isinstance(result, sp.Expr):
        raise SpecError(f"{text.strip()!r} is a condition, not a number")
    if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SpecError(f"{text.strip()!r} is undefined (it evaluates to {result})")
    introduced = _introduced_function(result)
    if introduced:
        raise SpecError(
            f"SymPy rewrote {text.strip()!r} into {introduced}(...), which symgrad "
            f"cannot compile; split the expression into steps"
        )
    return result


# A number written against a name: 2x, 0.5sin(x) (a literal such as 1e5 or 0x1f
# matches too, and is told apart by parsing it).
_NUMBER_THEN_NAME = re.compile(r"(?<![\w.])(\d+\.?\d*(?:[eE][+-]?\d+)?)([A-Za-z_]\w*)")


def _implicit_product(text: str) -> str | None:
    """'write 2*x (multiplication needs *)' for the first 2x in `text`, if any."""
    for match in _NUMBER_THEN_NAME.finditer(text):
        try:
            ast.parse(match.group(), mode="eval")
        except SyntaxError:
            number, name = match.groups()
            return f"write {number}*{name} (multiplication needs *)"
    return None


def _introduced_function(expr: sp.Basic) -> str | None:
    """A function SymPy introduced while simplifying (re, im, ...), which cannot be lowered."""
    for node in nodes(expr):
        if isinstance(node, sp.Function) and not isinstance(
            node, (sp.Piecewise, TensorOp, *BY_SYMPY)
        ):
            return type(node).__name__
    return None


def _check_depth(tree: ast.AST) -> None:
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise SpecError(
                f"expression is nested more than {MAX_NESTING} levels deep; "
                f"split it into steps"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Expression:
    """Builds SymPy from an allow-listed Python AST; anything not listed is an error."""

    def __init__(
        self,
        symbols: dict[str, sp.Expr],
        kinds: dict[str, str],
        later: set[str],
        dims: dict | None = None,
    ) -> None:
        self.symbols = symbols
        self.kinds = kinds
        self.later = later
        self.dims = dims or {}  # dimension name -> (an input having it, its axis)
        self.constants: dict[sp.Expr, Any] = {}

    def build(self, node: ast.AST) -> sp.Basic:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise SpecError(f"{_describe(node)} is not allowed in an expression")
        result = method(node)
        if isinstance(result, sp.Expr) and result.is_number:
            # Checked as soon as it exists, before SymPy computes anything with it.
            check_constant(result, self.constants, ast.unparse(node))
        return result

    def number(self, node: ast.AST) -> sp.Expr:
        value = self.build(node)
        if not isinstance(value, sp.Expr):
            raise SpecError(
                f"{ast.unparse(node)!r} is a condition where a number is expected"
            )
        return value

    def condition(self, node: ast.AST) -> sp.Basic:
        value = self.build(node)
        if isinstance(value, sp.Expr):  # a name holds a number, never a condition
            raise SpecError(
                f"{ast.unparse(node)!r} is a number where a condition is expected"
            )
        if value.has(sp.Piecewise):
            # SymPy would solve such a condition for its variable (it can recurse
            # without end); a step holding the selected value keeps it a comparison.
            raise SpecError(
                f"the condition {ast.unparse(node)!r} contains a where/Piecewise "
                f"value; compute that value in a step of its own"
            )
        return value

    def _Constant(self, node: ast.Constant) -> sp.Basic:
        value = node.value
        if isinstance(value, bool):
            return sp.true if value else sp.false
        if isinstance(value, int):
            return sp.Integer(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise SpecError(f"number {ast.unparse(node)} is not finite")
            # The decimal the user wrote, exactly: 0.1 means 1/10.
            return sp.Rational(repr(value))
        raise SpecError(f"{_describe(node)} is not allowed in an expression")

    def _Name(self, node: ast.Name) -> sp.Expr:
        name = node.id
        if name in self.symbols:
            return self.symbols[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in self.later:
            raise SpecError(f"{name!r} is used before it is defined")
        if name in FUNCTIONS:
            raise SpecError(f"{name!r} is a function; call it, e.g. {name}(x)")
        if name == "e":
            raise SpecError("unknown name 'e': use exp(x) for e**x")
        known = list(self.symbols) + list(FUNCTIONS) + list(CONSTANTS)
        hint = _suggest(name, known) or (
            "; declare it under inputs: or define it as a step"
        )
        raise SpecError(f"unknown name {name!r}{hint}")

    def _UnaryOp(self, node: ast.UnaryOp) -> sp.Basic:
        if isinstance(node.op, ast.USub):
            return -self.number(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.number(node.operand)
        if isinstance(node.op, ast.Not):
            return sp.Not(self.condition(node.operand))
        raise SpecError(f"operator {ast.unparse(node)!r} is not allowed")

    def _BinOp(self, node: ast.BinOp) -> sp.Expr:
        left, right = self.number(node.left), self.number(node.right)
        if isinstance(node.op, ast.MatMult):
            return tensor("matmul", left, right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        if type(node.op) not in _BINARY:
            hint = ": use ** for powers (^ is XOR in Python)"
            raise SpecError(
                f"operator in {ast.unparse(node)!r} is not allowed"
                f"{hint if isinstance(node.op, ast.BitXor) else ''}"
            )
        if isinstance(node.op, ast.Div) and right == 0:
            raise SpecError(f"division by zero in {ast.unparse(node)!r}")
        return _BINARY[type(node.op)](left, right)

    def _Compare(self, node: ast.Compare) -> sp.Basic:
        terms = [self.number(node.left)] + [self.number(c) for c in node.comparators]
        parts = []
        for op, left, right in zip(node.ops, terms, terms[1:], strict=False):
            if type(op) not in _COMPARE:
                raise SpecError(f"comparison {ast.unparse(node)!r} is not allowed")
            parts.append(_COMPARE[type(op)](left, right))
        return sp.And(*parts)

    def _BoolOp(self, node: ast.BoolOp) -> sp.Basic:
        values = [self.condition(v) for v in node.values]
        return sp.And(*values) if isinstance(node.op, ast.And) else sp.Or(*values)

    def _Call(self, node: ast.Call) -> sp.Expr:
        callee = node.func
        unqualified = _unqualified(callee, FUNCTIONS)
        if unqualified:  # np.exp(x)
            call = ast.Call(ast.Name(unqualified), node.args, node.keywords)
            raise SpecError(f"write {ast.unparse(call)}, without '{callee.value.id}.'")
        if _is_number_or_operation(callee) and len(node.args) == 1:  # 2(x + 1)
            product = ast.BinOp(callee, ast.Mult(), node.args[0])
            raise SpecError(f"write {ast.unparse(product)} (multiplication needs *)")
        if not isinstance(callee, ast.Name):
            raise SpecError(
                f"only named functions can be called, not {ast.unparse(callee)!r}"
            )
        name = callee.id
        if name in self.symbols:  # the user's name shadows a function, as in Python
            raise SpecError(
                f"{name!r} is a value here ({self.kinds[name]}), not a function"
            )
        if name == "slogdet":  # NumPy's pair (sign, log|det|): one of them is indexed
            raise SpecError(
                "slogdet(A) is NumPy's pair (sign, log|det A|): write slogdet(A)[1] "
                "(or logabsdet(A)) for the logarithm, slogdet(A)[0] for the sign"
            )
        if name not in FUNCTIONS:
            raise SpecError(f"unknown function {name!r}{_function_hint(name)}")
        reduction = SPELLINGS[name].reduction if name in SPELLINGS else ""
        if reduction and len(node.args) == 1:  # max(x, axis=0) is amax(x, axis=0)
            return self._tensor_call(reduction, node)
        if name in TENSOR_FUNCTIONS and name in SPELLINGS:
            return self._tensor_call(name, node)
        if node.keywords:
            raise SpecError(f"{name}() takes no keyword arguments")
        func, counts = FUNCTIONS[name]
        if len(node.args) not in counts:
            raise SpecError(
                f"{name}() takes {_counts(counts)} argument(s), not {len(node.args)}"
            )
        if name == "Piecewise":
            return self._piecewise(node)
        if name == "where":
            cond, a, b = node.args
            return func(self.condition(cond), self.number(a), self.number(b))
        args = [self.number(a) for a in node.args]
        if name in NORMALIZED_ONLY and not args[0].is_number:
            return func(*args, evaluate=False)  # skips costly, optional rewrites
        return func(*args)  # a number folds, and build checks it (acos(2) is an error)

    def _tensor_call(self, name: str, node: ast.Call) -> sp.Expr:
        """A tensor function: its operands, then its constant arguments
        (`ops.Static`) by position or keyword; einsum's subscripts first."""
        op = SPELLINGS[name]
        args, statics = list(node.args), list(op.static)
        values: dict[str, Any] = {}
        if statics and statics[0].kind == "subscripts":
            if not args:
                raise SpecError(
                    f"{name}() takes its subscripts first, as {name}('ij,jk->ik', a, b)"
                )
            subscripts = statics.pop(0)
            values[subscripts.name] = _static_value(args.pop(0), subscripts, name)
            operands, rest = args, []
        elif op.variadic and args and isinstance(args[0], ast.List | ast.Tuple):
            operands, rest = args[0].elts, args[1:]  # concatenate([a, b], axis=0)
        else:
            operands, rest = args[: op.arity], args[op.arity :]
        if len(operands) < op.arity or len(rest) > len(statics):
            raise SpecError(
                f"{name}() takes {op.arity} operand(s) and at most {len(statics)} "
                f"constant argument(s) ({', '.join(s.name for s in statics)}), "
                f"not {len(node.args)} argument(s)"
            )
        given = list(zip(statics, rest, strict=False))
        by_name = {s.name: s for s in statics}
        for kw in node.keywords:
            if kw.arg not in by_name:
                raise SpecError(f"{name}() takes no keyword argument {kw.arg!r}")
            given.append((by_name[kw.arg], kw.value))
        for static, value in given:
            if static.name in values:
                raise SpecError(f"{name}() got {static.name!r} twice")
            values[static.name] = _static_value(value, static, name)
        for static in op.static:
            if static.required and static.name not in values:
                raise SpecError(f"{name}() needs its {static.name!r} argument")
        params = tuple(values.get(s.name, s.default) for s in op.static)
        built = [self.number(a) for a in operands]
        try:
            return op.build(*built, params=params)
        except ValueError as err:  # einsum's subscripts
            raise SpecError(str(err)) from None

    def _Attribute(self, node: ast.Attribute) -> sp.Expr:
        constant = _unqualified(node, CONSTANTS)
        if constant:
            raise SpecError(f"write {constant}, without '{node.value.id}.'")
        if node.attr == "mT":  # NumPy's matrix transpose of a stack of matrices
            return tensor("swapaxes", self.number(node.value), params=(-1, -2))
        if node.attr != "T":
            raise SpecError(
                f"attribute access {ast.unparse(node)!r} is not allowed (only .T, .mT)"
            )
        return tensor("transpose", self.number(node.value))

    def _Subscript(self, node: ast.Subscript) -> sp.Expr:
        pair = _slogdet_part(node, self.symbols)
        if pair is not None:  # slogdet(A)[1] is logabsdet(A); [0] the sign of det(A)
            part, call = pair
            logabsdet = ast.Call(ast.Name("logabsdet"), call.args, call.keywords)
            if part == 1:
                return self._Call(logabsdet)
            det = ast.Call(ast.Name("det"), call.args, call.keywords)
            return self._Call(ast.Call(ast.Name("sign"), [det], []))
        name = node.value.id if isinstance(node.value, ast.Name) else None
        if name in FUNCTIONS and name not in self.symbols:  # sin[x], as in some books
            call = ast.Call(node.value, [node.slice], [])
            raise SpecError(f"call functions with parentheses: {ast.unparse(call)}")
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        key: list = []
        arrays: list[sp.Expr] = []  # integer arrays: a gather, logp[arange(n), labels]
        for part in parts:
            index = self._index_array(part)
            if index is not None:
                arrays.append(index)
                key.append(f"#{len(arrays)}")
                continue
            if isinstance(part, ast.Slice):
                key.append(tuple(
                    None if p is None else _constant_int(p, "a slice bound")
                    for p in (part.lower, part.upper, part.step)
                ))  # fmt: skip
            elif isinstance(part, ast.Constant) and part.value is None:
                key.append(None)  # a new axis of size 1, as x[:, None]
            else:
                key.append(_constant_int(part, "an index"))
        if arrays:
            return tensor(
                "take", self.number(node.value), *arrays, params=(tuple(key),)
            )
        return tensor("index", self.number(node.value), params=(tuple(key),))

    def _index_array(self, part: ast.AST) -> sp.Expr | None:
        """An integer array used as an index: an input declared with `integers`, or
        arange(n) for a dimension name n (or a size)."""
        if isinstance(part, ast.Name) and part.id in self.symbols:
            symbol = self.symbols[part.id]
            return symbol if symbol.is_integer and symbol.is_Symbol else None
        call = isinstance(part, ast.Call) and isinstance(part.func, ast.Name)
        if not (call and part.func.id == "arange" and "arange" not in self.symbols):
            return None
        if len(part.args) != 1 or part.keywords:
            raise SpecError("arange takes one argument: a dimension name or a size")
        (n,) = part.args
        if isinstance(n, ast.Name) and n.id in self.dims:
            holder, axis = self.dims[n.id]
            return tensor("arange", holder, params=(axis, None))
        size = _constant_int(n, "arange's size (or a dimension name)")
        if size <= 0:
            raise SpecError(f"arange({size}) is empty")
        return tensor("arange", sp.Integer(size), params=(None, size))

    def _List(self, node: ast.List) -> sp.Expr:
        """[a, b, c]: the values stacked along a new first axis (np.array's rows)."""
        if not node.elts:
            raise SpecError("an empty list has no value")
        return tensor("stack", *(self.number(e) for e in node.elts), params=(0,))

    def _piecewise(self, node: ast.Call) -> sp.Expr:
        pieces = []
        for arg in node.args:
            if not isinstance(arg, ast.Tuple) or len(arg.elts) != 2:
                raise SpecError("Piecewise takes (value, condition) pairs")
            pieces.append((self.number(arg.elts[0]), self.condition(arg.elts[1])))
        if pieces[-1][1] is not sp.true:
            raise SpecError(
                "the last Piecewise pair must have the condition True (the otherwise case)"
            )
        return sp.Piecewise(*pieces)


# Other libraries' names for functions of the spec language.
_SPELLINGS = {
    "ln": ("log", "log is the natural logarithm"),
    "maximum": ("max", "max is elementwise, like np.maximum"),
    "minimum": ("min", "min is elementwise, like np.minimum"),
}
_MODULES = frozenset({"np", "numpy", "math", "sp", "sympy"})


def _function_hint(name: str) -> str:
    """For an unknown function: the spec language's spelling of it, or a close name."""
    if name not in _SPELLINGS:
        return _suggest(name, FUNCTIONS)
    spelling, note = _SPELLINGS[name]
    return f" (did you mean {spelling!r}? {note})"


def _is_number_or_operation(node: ast.AST) -> bool:
    """Whether `node` is a number or an operation, as 2(x + 1) and (a + b)(c) call."""
    number = isinstance(node, ast.Constant) and type(node.value) in (int, float)
    return number or isinstance(node, ast.BinOp)


def _unqualified(node: ast.AST, names) -> str | None:
    """The name among `names` that `np.exp` (math.pi, np.maximum) means, if any."""
    module = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    if not (module and node.value.id in _MODULES):
        return None
    name = _SPELLINGS.get(node.attr, (node.attr,))[0]
    return name if name in names else None


def _slogdet_part(node: ast.Subscript, symbols) -> tuple[int, ast.Call] | None:
    """(0 or 1, the call) for `slogdet(A)[0]` / `slogdet(A)[1]`, else None."""
    call = node.value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "slogdet"
        and "slogdet" not in symbols
    ):
        return None
    part = node.slice
    if not (isinstance(part, ast.Constant) and part.value in (0, 1, -1, -2)):
        raise SpecError(
            "index slogdet(A) with [0] (the sign) or [1] (log|det A|), as NumPy's pair"
        )
    return int(part.value) % 2, call


def _constant_int(node: ast.AST, what: str) -> int:
    """A literal integer such as 0 or -1 (indices and axes are constants)."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sign * node.value
    raise SpecError(f"{what} must be a constant integer, not {ast.unparse(node)!r}")


def _static_value(node: ast.AST, static: Static, function: str) -> Any:
    """The constant `node` holds for a tensor function's argument `static`."""
    what = f"{function}(): {static.name}"
    if static.kind == "int":
        return _constant_int(node, what)
    if static.kind == "bool":
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        raise SpecError(f"{what} must be True or False, not {ast.unparse(node)!r}")
    if static.kind == "subscripts":
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise SpecError(f"{what} must be a string such as 'ij,jk->ik'")
    if isinstance(node, ast.Constant) and node.value is None and static.kind == "axis":
        return None
    if isinstance(node, ast.Tuple | ast.List):
        if static.kind == "tensordot" and len(node.elts) == 2:
            return tuple(
                _static_value(e, Static(static.name, "axis"), function)
                for e in node.elts
            )
        return tuple(_constant_int(e, what) for e in node.elts)
    return _constant_int(node, what)


def _power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    """base**exponent, refusing constants too large to compute."""
    if base.is_Number and exponent.is_Number and abs(base) not in (0, 1):
        bits = (
            abs(float(exponent)) * abs(math.log2(abs(float(base))))
            if base.is_finite
            else math.inf
        )
        if bits > MAX_CONSTANT_BITS:
            raise SpecError(f"constant {base}**{exponent} is too large to compute")
    if base == 0 and exponent.is_Number and exponent.is_negative:
        raise SpecError("division by zero: 0 raised to a negative power")
    return base**exponent


# --------------------------------------------------------------------------- constants

_MP = mpmath.MPContext()  # a private context: 64-bit estimates, bounded magnitude
_MP.prec = 64
_MAX_INTERMEDIATE = _MP.mpf(2) ** MAX_CONSTANT_BITS
_MAX_FLOAT = _MP.mpf(sys.float_info.max)


class _NotConstant(Exception):
    """Raised inside `_estimate` for a constant that is not a finite real number."""


def check_constant(
    value: sp.Expr, cache: dict | None = None, text: str | None = None
) -> None:
    """Refuse a numeric constant that float64 code cannot hold.

    The constant must be real, finite and within float64's range; an exact
    fraction's numerator and denominator each too (the generated code prints
    them). The value is estimated in 64-bit floating point with every
    intermediate result bounded, so that no constant (exp(exp(exp(100)))) can
    make SymPy compute for ever.
    """
    cache = {} if cache is None else cache
    what = f"constant {text!r}" if text else f"constant {sp.sstr(value)}"
    if value.is_Rational:
        try:
            float(value.p), float(value.q)
        except OverflowError:
            raise SpecError(f"{what} is outside the range of float64 numbers") from None
        return
    try:
        estimate = _estimate(value, cache)
    except _NotConstant as err:
        raise SpecError(f"{what} {err}") from None
    if estimate is not None and abs(estimate) > _MAX_FLOAT:
        raise SpecError(f"{what} is outside the range of float64 numbers")


def _estimate(e: sp.Expr, cache: dict) -> Any:
    """A 64-bit estimate of the numeric expression `e`, or None where unknown."""
    if e in cache:
        return cache[e]
    value = _estimate_uncached(e, cache)
    if value is not None:
        if isinstance(value, _MP.mpc):
            if value.imag != 0:
                raise _NotConstant("is not a real number")
            value = value.real
        if not _MP.isfinite(value):
            raise _NotConstant("is undefined or infinite")
        if abs(value) > _MAX_INTERMEDIATE:
            raise _NotConstant("is outside the range of float64 numbers")
    cache[e] = value
    return value


def _estimate_uncached(e: sp.Expr, cache: dict) -> Any:
    if e.is_Rational:
        return _MP.mpf(e.p) / _MP.mpf(e.q)
    if e.is_Float or isinstance(e, sp.NumberSymbol):
        return _MP.mpf(e.evalf(20))
    if e.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise _NotConstant("is undefined or infinite")
    if e is sp.I:
        raise _NotConstant("is not a real number")
    args = [_estimate(a, cache) for a in e.args]
    if any(a is None for a in args):
        return None
    try:
        with _MP.workprec(64):
            if isinstance(e, sp.Add):
                return _MP.fsum(args)
            if isinstance(e, sp.Mul):
                return _MP.fprod(args)
            if isinstance(e, sp.Pow):
                return _MP.power(*args)
            op = BY_SYMPY.get(type(e))
            if op is not None:
                return op.mp_value(_MP, *args)
    except (ZeroDivisionError, ValueError, OverflowError):
        raise _NotConstant("is undefined") from None
    return None  # something this estimate does not know: left to SymPy


def _counts(counts: tuple[int, ...]) -> str:
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda",
        ast.ListComp: "a comprehension", ast.GeneratorExp: "a comprehension",
        ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
        ast.NamedExpr: "assignment (:=)", ast.JoinedStr: "a string", ast.IfExp: "'x if c else y'",
        ast.Starred: "unpacking (*)", ast.Await: "await", ast.Yield: "yield",
        ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a mapping", ast.Set: "a set",
    }  # fmt: skip
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        return f"a string ({node.value!r})"
    if isinstance(node, ast.Constant):
        return f"constant {node.value!r}"
    return names.get(type(node), type(node).__name__)


# --------------------------------------------------------------------------- SymPy input


def from_sympy(
    expr: Any,
    wrt: Any = None,
    inputs: Any = None,
    *,
    name: str = "expr",
    output: str | None = None,
) -> Spec:
    """A spec for a SymPy expression, or for a dict of named SymPy steps.

    Given a dict (`{"Z": Z, "a": a, "L": L}`, in order), each key is a step:
    where a later expression contains an earlier one (or its negation, as
    exp(-Z) holds -Z), or a symbol of the same name, it reads that step by
    name. The output is `output`, else the last step; a single expression is
    one step (or several if it is large) named y (out, result, value).
    Parameters are `inputs` if given, else `wrt` first and then the other free
    symbols sorted by name; `wrt` defaults to every free symbol. An object
    handed over through the API is trusted: it is held to no limit on depth or
    size (see `_as_steps`).
    """
    builder = _Builder("<sympy>", {})
    named = _named_steps(builder, expr)
    exprs = list(named.values()) or [sp.sympify(expr)]
    symbols = set().union(*(_free_symbols(e) for e in exprs))
    symbols = {s for s in symbols if s.name not in named}
    shapes = _free_shapes(symbols)
    free = sorted(shapes)
    wrt_names = free if wrt is None else [_symbol_name(w) for w in _as_list(wrt)]
    names = (
        [_symbol_name(s) for s in _as_list(inputs)]
        if inputs is not None
        else wrt_names + [n for n in free if n not in wrt_names]
    )
    for n in names:
        builder.check_name(n, "input")
    missing = [n for n in free + wrt_names if n not in names]
    if missing:
        raise SpecError(f"{missing[0]!r} is not among the inputs {names}")
    if len(set(names)) != len(names):
        raise SpecError(f"inputs {names} name a symbol twice")
    clash = [n for n in names if n in named]
    if clash:
        raise SpecError(f"{clash[0]!r} names both an input and a step")
    positive = {s.name for s in symbols if s.is_positive}
    new_inputs = tuple(Input(n, shapes.get(n, ()), n in positive) for n in names)
    if not named:  # one expression: its output takes a name no input has
        out = next(n for n in ("y", "out", "result", "value") if n not in names)
        named = {out: sp.sympify(expr)}
    if output is None:
        output = list(named)[-1]
    elif output not in named:
        raise SpecError(f"output {output!r} is not a step{_suggest(output, named)}")
    taken = {*names, *named}
    steps: list[Step] = []
    for step, e in named.items():
        if any(shapes.values()):  # scalar expressions keep the user's own symbols
            e = _from_matrices(e, {i.name: i.symbol for i in new_inputs})
        bad = unsupported_function(e)
        if bad:
            raise SpecError(
                f"unsupported function {bad!r}; supported: {', '.join(sorted(FUNCTIONS))}",
                step=step,
            )
        _check_constants(e)
        parts = _as_steps(e, step, taken)
        taken |= {p.name for p in parts}
        steps.extend(parts)
    return Spec(
        builder.module_name(name),
        new_inputs,
        builder.wrt(wrt_names, new_inputs, tuple(steps)),
        tuple(steps),
        output,
        path="<sympy>",
    )


def _named_steps(builder: _Builder, expr: Any) -> dict[str, sp.Expr]:
    """A dict of named SymPy steps, each reading the earlier ones by name; {} for
    a single expression (checked to be one)."""
    if not isinstance(expr, dict):
        _sympy_expression(expr, "")
        return {}
    named: dict[str, sp.Expr] = {}
    by_value: dict[sp.Basic, sp.Expr] = {}  # an earlier step as written -> its name
    for step, written in expr.items():
        builder.check_name(step, "step")
        value = _sympy_expression(written, f"step {step!r}: ")
        by_name = {
            s: make_symbol(s.name)
            for s in _free_symbols(value)
            if isinstance(s, sp.Symbol) and s.name in named
        }
        named[step] = value.xreplace({**by_value, **by_name})
        if not value.is_Atom:
            by_value[value] = make_symbol(step)
            by_value[-value] = -make_symbol(step)
    return named


def _sympy_expression(value: Any, where: str) -> sp.Expr:
    try:
        expr = sp.sympify(value, strict=True)
    except sp.SympifyError:
        expr = None
    if not isinstance(expr, sp.Expr):
        raise SpecError(
            f"{where}expected a SymPy expression, not {type(value).__name__}"
        )
    return expr


def _as_steps(expr: sp.Expr, output: str, taken: set[str]) -> tuple[Step, ...]:
    """`expr` as steps, the last one named `output`: one step unless `expr` is large.

    SymPy's walks (printing, assumptions, lowering) recurse once per level and
    follow a shared subexpression once per use: a deep composition, or a DAG
    whose tree is exponential (e = sin(e)/2 + e, 1,024 times), would take them
    past the stack or for ever. Such an expression is cut, bottom-up, into steps
    v1, v2, ...: each shared subexpression, and each subexpression whose tree
    reaches MAX_STEP_NODES nodes (a step counting as one), as a user would.
    """
    order = bottom_up(expr)
    tree: dict[sp.Basic, int] = {}  # nodes as printed: a shared one at each use
    for node in order:
        tree[node] = 1 + sum(tree[a] for a in node.args)
    if tree[expr] <= MAX_STEP_NODES:
        return (_sympy_step(output, expr, tree[expr]),)
    numeric = _numeric(order)
    uses = Counter(a for node in order for a in node.args)
    names = (n for n in (f"v{i}" for i in itertools.count(1)) if n not in taken)
    size: dict[sp.Basic, int] = {}
    rebuilt: dict[sp.Basic, sp.Basic] = {}  # the node, with the steps below by name
    steps = []
    for node in order:
        args = [rebuilt[a] for a in node.args]
        changed = any(new is not old for new, old in zip(args, node.args, strict=True))
        if changed:  # as the user built it: SymPy's eval again would cost much
            with sp.evaluate(False):
                rebuilt[node] = node.func(*args)
        else:
            rebuilt[node] = node
        size[node] = 1 + sum(size[a] for a in node.args)
        can_be_step = isinstance(node, sp.Expr) and bool(node.args) and node is not expr
        shared = uses[node] > 1 and not numeric[node]  # a shared constant stays
        if can_be_step and (shared or size[node] > MAX_STEP_NODES):
            steps.append(_sympy_step(next(names), rebuilt[node], size[node]))
            rebuilt[node], size[node] = make_symbol(steps[-1].name), 1
    return (*steps, _sympy_step(output, rebuilt[expr], size[expr]))


def _sympy_step(name: str, expr: sp.Expr, size: int) -> Step:
    """A step whose tree has `size` nodes, printed for the docstring if it is short."""
    text = (
        sp.sstr(expr)
        if size <= MAX_STEP_NODES
        else f"(a SymPy expression of {size} nodes)"
    )
    return Step(name, expr, text)


def _numeric(order: list[sp.Basic]) -> dict[sp.Basic, bool]:
    """Whether each node is a number, for nodes ordered children before parents.

    Expr.is_number would recurse from each node, through the whole tree below it.
    """
    numeric: dict[sp.Basic, bool] = {}
    for node in order:
        if not isinstance(node, sp.Expr):
            numeric[node] = False
        elif node.args:
            numeric[node] = all(numeric[a] for a in node.args)
        else:
            numeric[node] = bool(node.is_number)
    return numeric


def _check_constants(expr: sp.Basic) -> None:
    """`check_constant` for every numeric part of `expr` (a DAG: each node once)."""
    if nodes(expr) & {sp.zoo, sp.nan, sp.oo, -sp.oo}:
        raise SpecError(f"{sp.sstr(expr)} is undefined (it contains {sp.zoo} or nan)")
    cache: dict = {}
    for node, is_number in _numeric(bottom_up(expr)).items():  # children first
        if is_number:
            check_constant(node, cache)


def _free_symbols(expr: sp.Basic) -> set[sp.Basic]:
    """`expr.free_symbols`, without SymPy's recursion (once per use of a shared node)."""
    every = nodes(expr)
    bound = {b for n in every if isinstance(n, sp.Lambda) for b in n.bound_symbols}
    return {n for n in every if isinstance(n, sp.Symbol | sp.MatrixSymbol)} - bound


def _free_shapes(free: set[sp.Basic]) -> dict[str, tuple[int | str, ...]]:
    """The shape of every free symbol: () for scalars, a MatrixSymbol's own shape."""
    matrices = {n for n in free if isinstance(n, sp.MatrixSymbol)}
    dims = {d for m in matrices for d in m.shape if isinstance(d, sp.Symbol)}
    shapes = {s.name: () for s in free if isinstance(s, sp.Symbol) and s not in dims}
    for m in matrices:
        shape = []
        for d in m.shape:
            if not (d.is_Integer or isinstance(d, sp.Symbol)):
                raise SpecError(
                    f"matrix {m.name}: dimension {d} is neither a size nor a name"
                )
            shape.append(int(d) if d.is_Integer else d.name)
        shapes[m.name] = tuple(shape)
    return shapes


def _from_matrices(expr: sp.Basic, symbols: dict[str, sp.Symbol]) -> sp.Expr:
    """SymPy's matrix expressions as symgrad's: MatMul -> @, HadamardProduct -> *."""
    converted: dict[sp.Basic, sp.Basic] = {}
    for node in bottom_up(expr):  # no recursion: the expression may be deep
        args = [converted[a] for a in node.args]
        converted[node] = _from_matrix(node, args, symbols)
    return converted[expr]


def _from_matrix(
    expr: sp.Basic, args: list[sp.Basic], symbols: dict[str, sp.Symbol]
) -> sp.Basic:
    """One node of `_from_matrices`, given its arguments already converted."""
    if isinstance(expr, sp.MatrixSymbol | sp.Symbol):
        return symbols.get(expr.name, expr)
    if isinstance(expr, sp.MatMul):
        scalars = [a for a, m in zip(args, expr.args, strict=True) if not m.is_Matrix]
        matrices = [a for a, m in zip(args, expr.args, strict=True) if m.is_Matrix]
        product = matrices[0]
        for m in matrices[1:]:
            product = tensor("matmul", product, m)
        return sp.Mul(*scalars) * product
    if isinstance(expr, sp.MatAdd):
        return sp.Add(*args)
    if isinstance(expr, sp.HadamardProduct):
        return sp.Mul(*args)
    if isinstance(expr, sp.HadamardPower):
        return args[0] ** args[1]
    if isinstance(expr, sp.Transpose):
        return tensor("transpose", args[0])
    if isinstance(expr, ElementwiseApplyFunction):
        return expr.function(args[1])
    if isinstance(expr, sp.MatrixExpr):
        raise SpecError(f"unsupported matrix expression {type(expr).__name__}: {expr}")
    return expr.func(*args) if args else expr


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _symbol_name(value: Any) -> str:
    if isinstance(value, sp.Symbol | sp.MatrixSymbol):
        return value.name
    if isinstance(value, str):
        return value
    raise SpecError(f"expected a SymPy Symbol or a name, not {value!r}")
