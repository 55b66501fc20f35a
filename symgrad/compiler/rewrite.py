"""Learner spellings recognised, and numerically stable forms: one step's SymPy
expression -> an equal expression, run by `lower` on each step before it is split.

A backprop notebook writes the sigmoid out, `a = 1/(1 + exp(-Z))`, and its loss
as `-y*log(a) - (1 - y)*log(1 - a)`. Compiled as written, the backward pass
divides by `a` and `1 - a` (inf at a logit of 40) and never reads `a - y`.
These rules, each an identity, find the notebook's spellings:

recognised (anywhere in a step)
    1/(1 + exp(-z))             sigmoid(z)
    exp(z)/(1 + exp(z))         sigmoid(z)
    log(1 + exp(z))             softplus(z)
    log(sum(exp(x)))            logsumexp(x)          (the same axis)
    exp(x)/sum(exp(x))          softmax(x)            (x a vector)
stable (s a sigmoid or a softmax, in this step or a step that is one, by name)
    log(s),     s = sigmoid(z)  -softplus(-z)
    log(1 - s), s = sigmoid(z)  -softplus(z)
    log(s),     s = softmax(x)  x - logsumexp(x)      (x a vector)
    k1*softplus(-z) + k2*softplus(z), k1 + k2 a number
                                (k1 + k2)*softplus(z) - k1*z
                                (binary cross-entropy on the logit z, which the
                                two log rules make of the notebook's loss:
                                softplus(z) - y*z, whose derivative is a - y)

Looking through names: a step whose expression is a sigmoid or a softmax
(after recognition), or a copy of such a step, is seen through by the stable
rules, so `L = -y*log(a) - ...` after `a = 1/(1 + exp(-Z))` becomes
`softplus(Z) - y*Z`; `a` stays a step (on the tape, and the backward pass reads
it as sigmoid(Z) = a). Nothing else is looked through: `e = exp(x)` then
`log(1 + e)` stays as written.

Each rewrite is reported: `rewrite` returns the names of the rules that fired,
and `lower` writes them, with the expression computed, into the step's comment
in the generated module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from symgrad.frontend.language import bottom_up
from symgrad.ops import TensorOp, sigmoid, softplus, tensor

Ranks = Callable[[sp.Expr], int | None]
"""The rank of an expression (0 scalar, 1 vector, ...), or None where unknown."""


@dataclass(frozen=True)
class Rewritten:
    """A step's expression after the rewrites, and what fired (in order, once each)."""

    expr: sp.Expr
    fired: tuple[str, ...]


def recognised(expr: sp.Expr) -> sp.Expr:
    """`expr` with the notebook's spellings read as the functions they are, and
    no other change (for `explain`, whose chain rule goes through every step as
    written: ∂a/∂Z of a = 1/(1 + exp(-Z)) is a*(1 - a))."""
    return rewrite(expr, {}, lambda e: None, _RULES[:4]).expr


def rewrite(
    expr: sp.Expr,
    known: dict[sp.Symbol, sp.Expr],
    rank: Ranks,
    rules: tuple[tuple[str, Callable], ...] | None = None,
) -> Rewritten:
    """`expr` with the module docstring's rules applied, children before parents.

    `known` maps the symbol of each earlier step that is a sigmoid or a softmax
    (or a copy of one) to that expression: the stable rules see through it.
    `rules` defaults to all of them.
    """
    rules = _RULES if rules is None else rules
    fired: list[str] = []
    done: dict[sp.Basic, sp.Basic] = {}
    numeric: dict[sp.Basic, bool] = {}  # constants stay (Expr.is_number recurses)
    for node in bottom_up(expr):
        args = [done[a] for a in node.args]
        changed = any(new is not old for new, old in zip(args, node.args, strict=True))
        new = node.func(*args) if changed else node
        numeric[node] = (
            all(numeric[a] for a in node.args) if node.args else bool(node.is_number)
        )
        if isinstance(new, sp.Expr) and not numeric[node]:
            for label, rule in rules:
                result = rule(new, known, rank)
                if result is not None:
                    new = result
                    if label not in fired:
                        fired.append(label)
        done[node] = new
    return Rewritten(done[expr], tuple(fired))


def describe(rewritten: Rewritten) -> str:
    """What a step's comment says of its rewrites: `symgrad computes this as
    -softplus(-z) (log-sigmoid)`."""
    fired = rewritten.fired
    if "cross-entropy on logits" in fired:  # what the two log rules led to
        fired = tuple(f for f in fired if not f.startswith("log"))
    return f"symgrad computes this as {sp.sstr(rewritten.expr)} ({', '.join(fired)})"


def seen_through(expr: sp.Expr, known: dict[sp.Symbol, sp.Expr]) -> sp.Expr | None:
    """What a step's expression is, for the stable rules of later steps: a sigmoid
    or a softmax (or a copy of a step that is one), else None."""
    expr = known.get(expr, expr)
    if isinstance(expr, sigmoid) or (
        isinstance(expr, TensorOp) and expr.op == "softmax"
    ):
        return expr
    return None


# --------------------------------------------------------------------------- rules


def _one_plus(e: sp.Expr) -> sp.Expr | None:
    """u for 1 + u, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        return e.args[1] if e.args[0] == 1 else e.args[0]
    return None


def _recognise_sigmoid(e, known, rank):
    """1/(1 + exp(u)) -> sigmoid(-u): 1/(1 + exp(-z)) is sigmoid(z); and
    exp(z)/(1 + exp(z)), which that makes exp(z)*sigmoid(-z), is sigmoid(z)."""
    if isinstance(e, sp.Pow) and e.exp == -1:
        u = _one_plus(e.base)
        if isinstance(u, sp.exp):
            return sigmoid(-u.args[0])
    if isinstance(e, sp.Mul):
        factors = list(e.args)
        for f in factors:
            if isinstance(f, sp.exp) and sigmoid(-f.args[0]) in factors:
                factors.remove(f)
                factors.remove(sigmoid(-f.args[0]))
                return sp.Mul(*factors, sigmoid(f.args[0]))
    return None


def _recognise_softplus(e, known, rank):
    """log(1 + exp(z)) -> softplus(z)."""
    if isinstance(e, sp.log):
        u = _one_plus(e.args[0])
        if isinstance(u, sp.exp):
            return softplus(u.args[0])
    return None


def _is_tensor(e: sp.Basic, op: str) -> bool:
    return isinstance(e, TensorOp) and e.op == op


def _sum_of_exp(e: sp.Basic) -> tuple[sp.Expr, int | None] | None:
    """(x, axis) for sum(exp(x), axis) (not keeping dimensions), else None."""
    if _is_tensor(e, "sum") and isinstance(e.operands[0], sp.exp):
        axis, keepdims = e.params
        if not keepdims:
            return e.operands[0].args[0], axis
    return None


def _recognise_logsumexp(e, known, rank):
    """log(sum(exp(x), axis)) -> logsumexp(x, axis)."""
    if isinstance(e, sp.log):
        found = _sum_of_exp(e.args[0])
        if found:
            x, axis = found
            return tensor("logsumexp", x, params=(axis, False))
    return None


def _recognise_softmax(e, known, rank):
    """exp(x)/sum(exp(x)) -> softmax(x), for a vector x (any other rank would
    need the sum to keep its dimensions, which sum(...) as written does not)."""
    if isinstance(e, sp.Mul) and len(e.args) == 2:
        top, bottom = e.args
        if isinstance(top, sp.Pow):
            top, bottom = bottom, top
        if isinstance(top, sp.exp) and isinstance(bottom, sp.Pow) and bottom.exp == -1:
            found = _sum_of_exp(bottom.base)
            if found and found[0] == top.args[0] and rank(found[0]) == 1:
                return tensor("softmax", found[0], params=(-1,))
    return None


def _log_sigmoid(e, known, rank):
    """log(sigmoid(z)) -> -softplus(-z)."""
    if isinstance(e, sp.log):
        s = seen_through(e.args[0], known)
        if isinstance(s, sigmoid):
            return -softplus(-s.args[0])
    return None


def _log_one_minus_sigmoid(e, known, rank):
    """log(1 - sigmoid(z)) -> -softplus(z)."""
    if isinstance(e, sp.log):
        u = _one_plus(e.args[0])
        if u is not None and u.could_extract_minus_sign():
            s = seen_through(-u, known)
            if isinstance(s, sigmoid):
                return -softplus(s.args[0])
    return None


def _log_softmax(e, known, rank):
    """log(softmax(x)) -> x - logsumexp(x), for a vector x."""
    if isinstance(e, sp.log):
        s = seen_through(e.args[0], known)
        if s is not None and _is_tensor(s, "softmax"):
            x = s.operands[0]
            if rank(x) == 1:
                return x - tensor("logsumexp", x, params=(None, False))
    return None


def _cross_entropy_on_logits(e, known, rank):
    """k1*softplus(-z) + k2*softplus(z) -> (k1 + k2)*softplus(z) - k1*z, when
    k1 + k2 is a number (1 for binary cross-entropy: softplus(z) - y*z)."""
    if not isinstance(e, sp.Add):
        return None
    terms: dict[sp.Expr, dict[int, list[int]]] = {}  # z -> sign -> term indices
    weights: list[sp.Expr | None] = []
    for i, term in enumerate(e.args):
        factors = sp.Mul.make_args(term)
        found = [f for f in factors if isinstance(f, softplus)]
        if len(found) != 1:
            weights.append(None)
            continue
        u = found[0].args[0]
        sign = -1 if u.could_extract_minus_sign() else 1
        z = -u if sign < 0 else u
        weights.append(sp.Mul(*(f for f in factors if f is not found[0])))
        terms.setdefault(z, {}).setdefault(sign, []).append(i)
    for z, by_sign in terms.items():
        if len(by_sign.get(1, ())) == 1 and len(by_sign.get(-1, ())) == 1:
            (i_neg,), (i_pos,) = by_sign[-1], by_sign[1]
            k1, k2 = weights[i_neg], weights[i_pos]
            total = sp.expand(k1 + k2)
            if total.is_number:
                rest = [t for i, t in enumerate(e.args) if i not in (i_neg, i_pos)]
                return sp.Add(*rest, total * softplus(z), -k1 * z)
    return None


_RULES: tuple[tuple[str, Callable], ...] = (
    ("sigmoid", _recognise_sigmoid),
    ("softplus", _recognise_softplus),
    ("logsumexp", _recognise_logsumexp),
    ("softmax", _recognise_softmax),
    ("log-sigmoid", _log_sigmoid),
    ("log(1 - sigmoid)", _log_one_minus_sigmoid),
    ("log-softmax", _log_softmax),
    ("cross-entropy on logits", _cross_entropy_on_logits),
)
"""(label, rule) in the order they are tried on each node; a rule returns the
node's replacement, or None. The first four recognise spellings (`recognised`)."""
