"""The `python` target: plain Python floats and the math module, for the fastest scalar calls."""

from symgrad.codegen.backend import Backend

PYTHON = Backend("python", value_type="float", tensors=False)
