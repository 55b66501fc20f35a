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
    full = plain_broadcast(*shapes)
    ndim = len(full)
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
    gone = set(axes(shape, axis))
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
    """The shape of a @ b as NumPy computes it: vectors, matrices, and stacks of
    matrices whose leading (batch) dimensions broadcast."""
    if not a or not b:
        raise ShapeError(f"@ needs arrays, not {show(a)} @ {show(b)}")
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeError(
            f"{show(a)} @ {show(b)}: inner dimensions {inner_a} and {inner_b} differ"
        )
    try:
        batch = plain_broadcast(a[:-2], b[:-2])
    except ShapeError:
        raise ShapeError(
            f"{show(a)} @ {show(b)}: the batch dimensions "
            f"{show(a[:-2])} and {show(b[:-2])} do not broadcast"
        ) from None
    return batch + a[-2:-1] + (b[-1:] if len(b) >= 2 else ())


def plain_broadcast(*shapes: Shape) -> Shape:
    """NumPy's broadcast of `shapes` (leading axes added freely), or ShapeError."""
    ndim = max(map(len, shapes), default=0)
    result: list[Dim] = []
    for i in range(-ndim, 0):
        dims = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(dims) > 1:
            raise ShapeError(
                f"shapes {' and '.join(map(show, shapes))} do not broadcast"
            )
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def einsum(subscripts: str, shapes: list[Shape]) -> Shape:
    """The shape of np.einsum(subscripts, ...) for explicit subscripts `ij,jk->ik`."""
    inputs, output = subscripts.split("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(
            f"einsum {subscripts!r} names {len(terms)} operands, not {len(shapes)}"
        )
    sizes: dict[str, Dim] = {}
    for term, shape in zip(terms, shapes, strict=True):
        if len(term) != len(shape):
            raise ShapeError(
                f"einsum {subscripts!r}: {term!r} names {len(term)} axes of a value "
                f"of shape {show(shape)}"
            )
        for letter, dim in zip(term, shape, strict=True):
            if sizes.setdefault(letter, dim) != dim:
                raise ShapeError(
                    f"einsum {subscripts!r}: axis {letter!r} is {sizes[letter]} "
                    f"in one operand and {dim} in another"
                )
    return tuple(sizes[letter] for letter in output)


def axes(shape: Shape, axis: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """`axis` (an int, a tuple, or None for all) as nonnegative axes of `shape`, or ShapeError."""
    listed = (
        range(len(shape))
        if axis is None
        else (axis,)
        if isinstance(axis, int)
        else axis
    )
    for a in listed:
        if not -len(shape) <= a < len(shape):
            raise ShapeError(
                f"axis {a} is out of range for a value of shape {show(shape)}"
            )
    result = tuple(a % len(shape) for a in listed)
    if len(set(result)) != len(result):
        raise ShapeError(f"axis {axis} repeats an axis")
    return result


def index(shape: Shape, key: tuple) -> Shape:
    """The shape of x[key] for a key of ints, slices (start, stop, step) of ints or
    None, and None (a new axis of size 1)."""
    used = [k for k in key if k is not None]
    if len(used) > len(shape):
        raise ShapeError(f"{len(used)} indices for a value of shape {show(shape)}")
    result: list[Dim] = []
    dims = iter(shape)
    for k in key:
        if k is None:
            result.append(1)
            continue
        dim = next(dims)
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
    return tuple(result) + tuple(dims)


def reshaped(shape: Shape, new: tuple[int, ...]) -> Shape:
    """The shape of np.reshape(x, new) (one -1 inferred), or ShapeError."""
    if sum(d == -1 for d in new) > 1 or any(d < -1 or d == 0 for d in new):
        raise ShapeError(f"cannot reshape to {new}: sizes are positive, one may be -1")
    names = sorted(d for d in shape if isinstance(d, str))
    size = 1
    for d in shape:
        size *= d if isinstance(d, int) else 1
    known = 1
    for d in new:
        known *= d if d != -1 else 1
    if -1 not in new:
        if names or known != size:
            raise ShapeError(
                f"a value of shape {show(shape)} cannot be reshaped to {new}"
            )
        return tuple(new)
    if size % known or (names and (len(names) > 1 or size // known != 1)):
        raise ShapeError(f"a value of shape {show(shape)} cannot be reshaped to {new}")
    inferred: Dim = names[0] if names else size // known
    return tuple(inferred if d == -1 else d for d in new)


def take(shape: Shape, key: tuple, arrays: list[Shape]) -> Shape:
    """The shape of x[key] where key holds integer arrays ("#1" is the first of
    `arrays`) besides ints, slices and None: NumPy's advanced indexing. The
    arrays (and the ints among them) broadcast together; their shape stands where
    they stand if they are adjacent in the key, else first."""
    used = [k for k in key if k is not None]
    if len(used) > len(shape):
        raise ShapeError(f"{len(used)} indices for a value of shape {show(shape)}")
    advanced = [i for i, k in enumerate(key) if isinstance(k, int | str)]
    try:
        joint = plain_broadcast(
            *(arrays[int(key[i][1:]) - 1] for i in advanced if isinstance(key[i], str))
        )
    except ShapeError:
        raise ShapeError(
            f"the index arrays of shapes {', '.join(map(show, arrays))} do not broadcast"
        ) from None
    adjacent = advanced == list(range(advanced[0], advanced[-1] + 1))
    plain = tuple((None, None, None) if i in advanced else k for i, k in enumerate(key))
    rest = index(shape, plain)  # the advanced axes kept whole, to be replaced
    result: list[Dim] = []
    position = 0
    for i, k in enumerate(key):
        if k is None:
            result.append(1)
            position += 1
            continue
        if i in advanced:
            dim = rest[position]
            if isinstance(k, int) and isinstance(dim, int) and not -dim <= k < dim:
                raise ShapeError(f"index {k} is out of range for dimension {dim}")
            if adjacent and i == advanced[0]:
                result.extend(joint)
        else:
            result.append(rest[position])
        position += 1
    result.extend(rest[position:])
    return tuple(result) if adjacent else joint + tuple(result)
