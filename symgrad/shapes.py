"""Shapes of values: NumPy broadcasting over dimensions that are sizes or names.

A shape is a tuple of dimensions; a dimension is an int or a name (`n`,
`batch`) bound when the generated code is called. Two named dimensions agree
only if they have the same name; 1 broadcasts against anything.
"""

from __future__ import annotations

Dim = int | str
Shape = tuple[Dim, ...]


class ShapeError(ValueError):
    """Operands whose shapes do not fit the operation."""


def show(shape: Shape) -> str:
    return "scalar" if not shape else "[" + ", ".join(map(str, shape)) + "]"


def broadcast(*shapes: Shape) -> Shape:
    """The shape NumPy broadcasting gives these shapes, or ShapeError.

    Also a ShapeError: a result larger than every operand where one of them
    gains an axis it was not written with, `[n, 1]` and `[n]` giving `[n, n]`
    (NumPy's silent outer product, as in `y_pred - y` with a column of
    predictions). With the axes written out, `[n, 1]` and `[1, n]`, it is meant.
    """
    ndim = max(map(len, shapes), default=0)
    result: list[Dim] = []
    for i in range(-ndim, 0):
        dims = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(dims) > 1:
            raise ShapeError(
                f"shapes {' and '.join(map(show, shapes))} do not broadcast"
            )
        result.append(dims.pop() if dims else 1)
    full = tuple(result)
    short = [s for s in shapes if 0 < len(s) < ndim]
    if short and full not in shapes:
        written = (1,) * (ndim - len(short[0])) + short[0]
        raise ShapeError(
            f"shapes {' and '.join(map(show, shapes))} broadcast to {show(full)}, "
            f"larger than each of them: an outer product. If it is meant, give "
            f"{show(short[0])} its new axis, as {show(written)}; if "
            f"not, make the shapes agree"
        )
    return full


def reduced(
    shape: Shape, axis: int | tuple[int, ...] | None, keepdims: bool = False
) -> Shape:
    """The shape after summing over `axis` (all axes when None)."""
    axes = (
        range(len(shape))
        if axis is None
        else (axis,)
        if isinstance(axis, int)
        else axis
    )
    for a in axes:
        if not -len(shape) <= a < len(shape):
            raise ShapeError(
                f"axis {a} is out of range for a value of shape {show(shape)}"
            )
    gone = {a % len(shape) for a in axes}
    if keepdims:
        return tuple(1 if i in gone else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in gone)


def reduction_to(shape: Shape, target: Shape) -> tuple[tuple[int, ...], bool] | None:
    """The axes to sum (and keepdims) that turn a broadcast `shape` back into `target`.

    None when nothing needs summing.
    """
    lead = len(shape) - len(target)
    axes = list(range(lead))
    kept = [lead + i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1]
    if not axes and not kept:
        return None
    if kept:  # keep the size-1 axes of target; the leading ones go
        return tuple(axes + kept), True
    return tuple(axes), False


def matmul(a: Shape, b: Shape) -> Shape:
    """The shape of a @ b for vectors and matrices."""
    if not a or not b or len(a) > 2 or len(b) > 2:
        raise ShapeError(f"@ needs vectors or matrices, not {show(a)} @ {show(b)}")
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeError(
            f"{show(a)} @ {show(b)}: inner dimensions {inner_a} and {inner_b} differ"
        )
    return a[:-1] + b[1:] if len(b) == 2 else a[:-1]


def index(shape: Shape, key: tuple) -> Shape:
    """The shape of x[key] for a key of ints and slices (start, stop, step) of ints or None."""
    if len(key) > len(shape):
        raise ShapeError(f"{len(key)} indices for a value of shape {show(shape)}")
    result: list[Dim] = []
    for dim, k in zip(shape, key, strict=False):
        if isinstance(k, int):
            if isinstance(dim, int) and not -dim <= k < dim:
                raise ShapeError(f"index {k} is out of range for dimension {dim}")
            continue
        start, stop, step = k
        if isinstance(dim, int):
            result.append(len(range(dim)[slice(start, stop, step)]))
        elif (start, stop, step) == (None, None, None):
            result.append(dim)
        else:
            raise ShapeError(
                f"slicing the named dimension {dim!r} needs a full slice ':'"
            )
    return tuple(result) + shape[len(key) :]
