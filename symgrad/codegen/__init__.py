"""`(Spec, Program, Program) -> module source`: code generation, one backend per target.

A target is a `Backend` (a module here: `numpy.py`, `python.py`) plus its
folder of Jinja templates. The backend says what differs between targets
(the annotation of tape fields, how a gradient is returned, whether arrays
are freed); the registry (`symgrad.ops`) says how each operation prints;
`render` lays the lines out through the target's template. Nothing outside
a backend tests a target's name.
"""

from __future__ import annotations

from symgrad.codegen.backend import Backend
from symgrad.codegen.jax import JAX
from symgrad.codegen.numba import NUMBA
from symgrad.codegen.numpy import NUMPY
from symgrad.codegen.python import PYTHON
from symgrad.codegen.render import render
from symgrad.codegen.torch import TORCH

TARGETS: dict[str, Backend] = {b.name: b for b in (NUMPY, PYTHON, JAX, TORCH, NUMBA)}

__all__ = ["TARGETS", "Backend", "render"]
