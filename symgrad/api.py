"""The library's entry point `symgrad.compile`: the compiler, with the teaching
tools' notebook display on top (so the compiler itself never imports them)."""

from __future__ import annotations

import functools
import types

from symgrad.pipeline import compile_module
from symgrad.teach.notebook import attach_display


@functools.wraps(compile_module)
def compile(*args, **kwargs) -> types.ModuleType:  # noqa: A001 (symgrad.compile)
    return attach_display(compile_module(*args, **kwargs))
