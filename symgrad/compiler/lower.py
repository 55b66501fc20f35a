"""`Spec -> Program`: split each step into single-operation assignments, with CSE.

The `Emitter` is shared with `reverse`, so the backward pass is lowered by the
same code and reuses every value the forward pass already holds (value
numbering: one name per distinct `(op, operands)`). Lowering keeps the
arithmetic readable: `a - b` and `a / b` rather than `a + (-1)*b` and
`a * b**-1`.
"""

from __future__ import annotations

import ast
from dataclasses import replace

import sympy as sp

from symgrad.compiler.rewrite import describe, rewrite, seen_through
from symgrad.frontend.spec import Spec, SpecError, make_symbol
from symgrad.ir import Assign, Operand, Program
from symgrad.ops import BY_SYMPY, OPS, TensorOp
from symgrad.shapes import Shape, ShapeError, show


class LoweringError(ValueError):
    """An expression uses something symgrad cannot compile."""


def lower(spec: Spec) -> Program:
    """The forward pass of `spec` as single-operation assignments.

    Raises SpecError (naming the step) when shapes do not fit.
    """
    taken = {i.name for i in spec.inputs} | {s.name for s in spec.steps}
    emitter = Emitter(taken, shapes={i.name: i.shape for i in spec.inputs})
    known: dict[sp.Symbol, sp.Expr] = {}  # steps the stable rewrites see through
    for step in spec.steps:
        dropped = _dropped_array(step.text, step.expr, emitter.shapes)
        if dropped is not None:
            raise SpecError(
                f"SymPy simplifies {' '.join(step.text.split())!r} to {step.expr}, "
                f"cancelling the array {dropped} ({show(emitter.shapes[dropped])}): "
                f"the result would lose the shape NumPy gives it; write the step "
                f"without {dropped}",
                path=spec.path,
                line=step.line,
                step=step.name,
            )
        note = f"{step.name} = {' '.join(step.text.split())}"
        rewritten = rewrite(step.expr, known, _ranks(emitter.shapes))
        if rewritten.fired:  # never silently: the comment says what is computed
            note += f"\n{describe(rewritten)}"
        seen = seen_through(rewritten.expr, known)
        if seen is not None:
            known[make_symbol(step.name)] = seen
        try:
            emitter.lower(rewritten.expr, name=step.name, note=note, alias=False)
        except (ShapeError, LoweringError) as err:
            raise SpecError(
                str(err), path=spec.path, line=step.line, step=step.name
            ) from None
    return Program(
        name=spec.name,
        inputs=tuple(i.name for i in spec.inputs),
        input_shapes=tuple(i.shape for i in spec.inputs),
        steps=tuple(s.name for s in spec.steps),
        output=spec.output,
        wrt=spec.wrt,
        forward=tuple(emitter.body),
    )


def _dropped_array(text: str, expr: sp.Expr, shapes: dict[str, Shape]) -> str | None:
    """An array (a name of non-scalar shape) that `text` names and its SymPy
    expression no longer has: SymPy cancelled it (X - X, X/X, 0*X)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):  # a SymPy route's own text
        return None
    written = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    kept = {s.name for s in expr.free_symbols if isinstance(s, sp.Symbol)}
    return next((n for n in sorted(written - kept) if shapes.get(n)), None)


def _ranks(shapes: dict[str, Shape]):
    """The rank of an expression for the rewrites: a name's, or the largest of an
    elementwise expression's names (None where a tensor operation is involved)."""

    def rank(expr: sp.Expr) -> int | None:
        if expr.has(TensorOp):
            return None
        names = [s.name for s in expr.free_symbols if isinstance(s, sp.Symbol)]
        if any(n not in shapes for n in names):
            return None
        return max((len(shapes[n]) for n in names), default=0)

    return rank


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

    def __init__(
        self,
        taken: set[str],
        body: tuple[Assign, ...] = (),
        shapes: dict[str, Shape] | None = None,
    ) -> None:
        self.taken = set(taken) | {a.name for a in body}
        self.body: list[Assign] = []
        self.values = {_key(a.op, a.args, a.params): a.name for a in body}
        self.shapes: dict[str, Shape] = {**(shapes or {})}
        self.shapes.update((a.name, a.shape) for a in body)
        self.counter = 0

    def fresh(self) -> str:
        """A short temporary name that no user name or earlier temporary uses."""
        while f"t{self.counter}" in self.taken:
            self.counter += 1
        name = f"t{self.counter}"
        self.taken.add(name)
        return name

    def emit(self, op: str, args: tuple[Operand, ...], params: tuple = ()) -> Operand:
        """The name holding `op(*args)`: an existing one, or a new temporary."""
        if len(self.shape(args[0])) < OPS[op].identity_below:
            return args[0]  # the sum of a scalar, the transpose of a vector
        if OPS[op].specialize is not None:  # dot(x, s) is x * s
            op, params = OPS[op].specialize([self.shape(a) for a in args], params)
        key = _key(op, args, params)
        if key not in self.values:
            name = self.fresh()
            shape = OPS[op].shape([self.shape(a) for a in args], params)
            self.body.append(Assign(name, op, args, params=params, shape=shape))
            self.values[key] = name
            self.shapes[name] = shape
        return self.values[key]

    def keep(self, a: Assign) -> None:
        """Append an assignment made elsewhere, as if emitted (later values may reuse it)."""
        self.body.append(a)
        self.values.setdefault(_key(a.op, a.args, a.params), a.name)
        self.shapes[a.name] = a.shape
        self.taken.add(a.name)

    def holding(self, a: Assign) -> str | None:
        """The name already holding the value `a` computes, if any."""
        return self.values.get(_key(a.op, a.args, a.params))

    def shape(self, operand: Operand) -> Shape:
        return self.shapes.get(operand, ()) if isinstance(operand, str) else ()

    def lower(
        self,
        expr: sp.Basic | list[sp.Expr],
        *,
        name: str | None = None,
        note: str = "",
        alias: bool = True,
    ) -> Operand:
        """Emit `expr` (or the sum of a list of terms); its value is called `name`.

        When `expr` is already held by a name (or is a constant), return that
        operand if `alias`, else copy it into `name`.
        """
        start = len(self.body)
        result = self.sum(expr) if isinstance(expr, list) else self._lower(expr)
        if name is not None and result != name:
            if len(self.body) > start and self.body[-1].name == result:
                self._rename(result, name)  # a new temporary: give it the name
                result = name
            elif not alias:
                shape = self.shape(result)
                self.body.append(Assign(name, "copy", (result,), shape=shape))
                self.shapes[name] = shape
                result = name
        if note and len(self.body) > start:
            self.body[start] = replace(self.body[start], note=note)
        return result

    def _rename(self, temporary: str, name: str) -> None:
        last = self.body[-1]
        self.body[-1] = replace(last, name=name)
        self.values[_key(last.op, last.args, last.params)] = name
        self.shapes[name] = self.shapes.pop(temporary)
        self.taken.add(name)
        self.taken.discard(temporary)  # the next temporary reuses its number

    def _lower(self, e: sp.Basic) -> Operand:
        if isinstance(e, sp.Symbol):
            return e.name
        if e.is_number:
            return constant(e)
        if isinstance(e, sp.Add):
            return self._add(e)
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e.args)
        if isinstance(e, sp.ITE):  # a condition that picks between conditions
            return self.emit("where", tuple(self._lower(a) for a in e.args))
        if isinstance(e, TensorOp):
            return self.emit(e.op, tuple(self._lower(a) for a in e.operands), e.params)
        op = BY_SYMPY.get(type(e))
        if op is None:
            raise LoweringError(f"unsupported function {type(e).__name__!r} in {e}")
        args = [self._lower(a) for a in e.args]
        if op.chain:  # max(a, b, c) -> max(max(a, b), c)
            return self._chain(op.name, args)
        return self.emit(op.name, tuple(args))

    def _chain(self, op: str, args: list[Operand]) -> Operand:
        acc = args[0]
        for arg in args[1:]:
            acc = self.emit(op, (acc, arg))
        return acc

    def _add(self, e: sp.Add) -> Operand:
        # SymPy's canonical order: deterministic, and unlike as_ordered_terms()
        # it costs nothing on deep expressions.
        return self.sum(list(e.args))

    def sum(self, terms: list[sp.Expr]) -> Operand:
        """Emit the sum of `terms` left to right; a - b reads as subtraction."""
        if len(terms) == 1:
            return self._lower(terms[0])
        signed = [
            (-t, "sub") if t.could_extract_minus_sign() else (t, "add") for t in terms
        ]
        first = next((i for i, (_, op) in enumerate(signed) if op == "add"), None)
        if first is None:
            acc = self.emit("neg", (self._lower(signed[0][0]),))
            rest = signed[1:]
        else:
            acc = self._lower(signed[first][0])
            rest = signed[:first] + signed[first + 1 :]
        for term, op in rest:
            acc = self.emit(op, (acc, self._lower(term)))
        return acc

    def _mul(self, e: sp.Mul) -> Operand:
        # a / b reads as division: factors with a negative power go to the denominator.
        coefficient = sp.Integer(1)
        numerator: list[sp.Expr] = []
        denominator: list[sp.Expr] = []
        for f in e.args:
            if f.is_number:
                coefficient *= f
            elif f.is_Pow and f.exp.is_number and f.exp.is_negative:
                denominator.append(f.base ** (-f.exp))
            else:
                numerator.append(f)
        negate = coefficient.could_extract_minus_sign()
        coefficient = -coefficient if negate else coefficient
        if coefficient.is_Rational:
            p, q = coefficient.p, coefficient.q
            numbers = [p] if p != 1 else []
            denominator_numbers = [q] if q != 1 else []
        else:
            numbers, denominator_numbers = [constant(coefficient)], []
        if negate and numbers:  # -2*x reads as (-2) * x, not -(2 * x)
            numbers, negate = [-numbers[0]], False
        top = numbers + [self._lower(f) for f in numerator]
        bottom = [self._lower(f) for f in denominator] + denominator_numbers
        acc = self._chain("mul", top) if top else 1
        if bottom:
            acc = self.emit("div", (acc, self._chain("mul", bottom)))
        if negate:
            acc = self.emit("neg", (acc,))
        return acc

    def _pow(self, e: sp.Pow) -> Operand:
        base, exponent = e.args
        if exponent.is_number:
            value = constant(exponent)
            if value == 0.5:
                return self.emit("sqrt", (self._lower(base),))
            if value < 0:
                return self.emit("div", (1, self._lower(base ** (-exponent))))
            # x**n for a whole number n; any other exponent is `power` (np.power,
            # math.pow), since Python's ** makes a negative float to a fractional
            # power a complex number
            op = "pow" if value % 1 == 0 else "power"
            return self.emit(op, (self._lower(base), value))
        return self.emit("power", (self._lower(base), self._lower(exponent)))

    def _piecewise(self, pieces: tuple) -> Operand:
        (value, condition), rest = pieces[0], pieces[1:]
        if condition is sp.true or not rest:
            return self._lower(value)
        otherwise = self._piecewise(rest)
        return self.emit(
            "where", (self._lower(condition), self._lower(value), otherwise)
        )


def _key(op: str, args: tuple[Operand, ...], params: tuple = ()) -> tuple:
    if OPS[op].commutative:
        args = tuple(sorted(args, key=repr))
    # 2 and 2.0 are the same constant but print differently: keep them apart.
    return (op, tuple((type(a).__name__, a) for a in args), params)
