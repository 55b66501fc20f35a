"""`Spec -> Program`: split each step into single-operation assignments, with CSE.

The `Emitter` is shared with `reverse`, so the backward pass is lowered by the
same code and reuses every value the forward pass already holds (value
numbering: one name per distinct `(op, operands)`). Lowering keeps the
arithmetic readable: `a - b` and `a / b` rather than `a + (-1)*b` and
`a * b**-1`.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.functions import OPS
from symgrad.ir import COMMUTATIVE, Assign, Operand, Program
from symgrad.spec import Spec

_RELATIONS = {
    sp.StrictGreaterThan: "gt", sp.GreaterThan: "ge", sp.StrictLessThan: "lt",
    sp.LessThan: "le", sp.Eq: "eq", sp.Ne: "ne", sp.And: "and", sp.Or: "or",
}  # fmt: skip


class LoweringError(ValueError):
    """An expression uses something symgrad cannot compile."""


def lower(spec: Spec) -> Program:
    """The forward pass of `spec` as single-operation assignments."""
    taken = {i.name for i in spec.inputs} | {s.name for s in spec.steps}
    emitter = Emitter(taken)
    for step in spec.steps:
        note = f"{step.name} = {' '.join(step.text.split())}"
        emitter.lower(step.expr, name=step.name, note=note, alias=False)
    return Program(
        name=spec.name,
        inputs=tuple(i.name for i in spec.inputs),
        steps=tuple(s.name for s in spec.steps),
        output=spec.output,
        wrt=spec.wrt,
        forward=tuple(emitter.body),
    )


def constant(value: sp.Expr) -> int | float:
    """A numeric SymPy expression as a Python number."""
    if value.is_Integer:
        return int(value)
    number = complex(value.evalf())
    if number.imag:
        raise LoweringError(f"constant {value} is not real")
    return number.real


class Emitter:
    """Appends single-operation assignments to `body`, one name per distinct value."""

    def __init__(self, taken: set[str], body: tuple[Assign, ...] = ()) -> None:
        self.taken = set(taken) | {a.name for a in body}
        self.body: list[Assign] = []
        self.values: dict[tuple, Operand] = {_key(a.op, a.args): a.name for a in body}
        self.counter = 0

    def fresh(self) -> str:
        """A short temporary name that no user name or earlier temporary uses."""
        while f"t{self.counter}" in self.taken:
            self.counter += 1
        name = f"t{self.counter}"
        self.taken.add(name)
        return name

    def emit(
        self, op: str, args: tuple[Operand, ...], name: str | None = None
    ) -> Operand:
        key = _key(op, args)
        if key in self.values:
            if name is None:
                return self.values[key]
            op, args = "copy", (self.values[key],)  # a named step that repeats a value
        target = name or self.fresh()
        self.body.append(Assign(target, op, args))
        self.values.setdefault(key, target)
        return target

    def lower(
        self,
        expr: sp.Basic,
        *,
        name: str | None = None,
        note: str = "",
        alias: bool = True,
    ) -> Operand:
        """Emit `expr`; the last assignment is called `name`.

        When `expr` is already held by a name (or is a constant), return that
        operand if `alias`, else copy it into `name`.
        """
        start = len(self.body)
        result = self._lower(expr, name)
        if name is not None and result != name and not alias:
            result = self.emit("copy", (result,), name)
        if note and len(self.body) > start:
            self.body[start] = replace(self.body[start], note=note)
        return result

    def _lower(self, e: sp.Basic, name: str | None = None) -> Operand:
        if isinstance(e, sp.Symbol):
            return e.name
        if e.is_number:
            return constant(e)
        if isinstance(e, sp.Add):
            return self._add(e, name)
        if isinstance(e, sp.Mul):
            return self._mul(e, name)
        if isinstance(e, sp.Pow):
            return self._pow(e, name)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e.args, name)
        if isinstance(e, sp.Not):
            return self.emit("not", (self._lower(e.args[0]),), name)
        if type(e) in _RELATIONS:
            args = e.args if isinstance(e, sp.And | sp.Or) else (e.lhs, e.rhs)
            return self._chain(
                _RELATIONS[type(e)], [self._lower(a) for a in args], name
            )
        op = OPS.get(type(e))
        if op is None:
            raise LoweringError(f"unsupported function {type(e).__name__!r} in {e}")
        args = [self._lower(a) for a in e.args]
        if op in ("max", "min"):
            return self._chain(op, args, name)
        return self.emit(op, tuple(args), name)

    def _chain(self, op: str, args: list[Operand], name: str | None) -> Operand:
        acc = args[0]
        for i, arg in enumerate(args[1:], start=2):
            acc = self.emit(op, (acc, arg), name if i == len(args) else None)
        return acc

    def _add(self, e: sp.Add, name: str | None) -> Operand:
        # a - b reads as subtraction: split off terms with a minus sign.
        signed = [
            (-t, "sub") if t.could_extract_minus_sign() else (t, "add")
            for t in e.as_ordered_terms()
        ]
        first = next((i for i, (_, op) in enumerate(signed) if op == "add"), None)
        if first is None:
            acc = self.emit(
                "neg", (self._lower(signed[0][0]),), name if len(signed) == 1 else None
            )
            rest = signed[1:]
        else:
            acc = self._lower(signed[first][0])
            rest = signed[:first] + signed[first + 1 :]
        for i, (term, op) in enumerate(rest, start=1):
            acc = self.emit(
                op, (acc, self._lower(term)), name if i == len(rest) else None
            )
        return acc

    def _mul(self, e: sp.Mul, name: str | None) -> Operand:
        # a / b reads as division: factors with a negative power go to the denominator.
        coefficient = sp.Integer(1)
        numerator: list[sp.Expr] = []
        denominator: list[sp.Expr] = []
        for f in e.as_ordered_factors():
            if f.is_number:
                coefficient *= f
            elif f.is_Pow and f.exp.is_number and f.exp.is_negative:
                denominator.append(f.base ** (-f.exp))
            else:
                numerator.append(f)
        negate = coefficient.could_extract_minus_sign()
        coefficient = -coefficient if negate else coefficient
        numbers: list[Operand] = []
        if coefficient.is_Rational:
            p, q = coefficient.p, coefficient.q
            numbers, denominator_numbers = (
                ([p] if p != 1 else []),
                ([q] if q != 1 else []),
            )
        else:
            numbers, denominator_numbers = [constant(coefficient)], []
        if negate and numbers:  # -2*x reads as (-2) * x, not -(2 * x)
            numbers, negate = [-numbers[0]], False
        top = numbers + [self._lower(f) for f in numerator]
        bottom = [self._lower(f) for f in denominator] + denominator_numbers
        # Only the last of the operations below takes `name`.
        remaining = [
            max(len(top) - 1, 0) + max(len(bottom) - 1, 0) + bool(bottom) + negate
        ]

        def emit(op: str, args: tuple[Operand, ...]) -> Operand:
            remaining[0] -= 1
            return self.emit(op, args, None if remaining[0] else name)

        acc: Operand = top[0] if top else 1
        for f in top[1:]:
            acc = emit("mul", (acc, f))
        if bottom:
            den = bottom[0]
            for f in bottom[1:]:
                den = emit("mul", (den, f))
            acc = emit("div", (acc, den))
        if negate:
            acc = emit("neg", (acc,))
        return acc

    def _pow(self, e: sp.Pow, name: str | None) -> Operand:
        base, exponent = e.args
        if exponent.is_number:
            value = constant(exponent)
            if value == 0.5:
                return self.emit("sqrt", (self._lower(base),), name)
            if value < 0:
                return self.emit("div", (1, self._lower(base ** (-exponent))), name)
            return self.emit("pow", (self._lower(base), value), name)
        return self.emit("pow", (self._lower(base), self._lower(exponent)), name)

    def _piecewise(self, pieces: tuple, name: str | None) -> Operand:
        (value, condition), rest = pieces[0], pieces[1:]
        if condition is sp.true or not rest:
            return self._lower(value, name)
        otherwise = self._piecewise(rest, None)
        return self.emit(
            "where", (self._lower(condition), self._lower(value), otherwise), name
        )


def _key(op: str, args: tuple[Operand, ...]) -> tuple:
    if op in COMMUTATIVE:
        args = tuple(sorted(args, key=repr))
    # 2 and 2.0 are the same constant but print differently: keep them apart.
    return (op, tuple((type(a).__name__, a) for a in args))
