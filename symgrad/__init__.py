"""symgrad: compile mathematics into readable, checked backpropagation code.

mod = symgrad.compile("examples/udl_toy.yaml")     # a spec file, a dict, or
mod = symgrad.compile(x**2 * sin(w), wrt=[w])       # a SymPy expression
y, grads = mod.value_and_grad(...)
symgrad.check_gradients(mod, point)                 # against finite differences
"""

__version__ = "0.1.0"

from symgrad.check import check_gradients  # noqa: E402
from symgrad.explain import explain  # noqa: E402
from symgrad.pipeline import SymgradWarning  # noqa: E402
from symgrad.pipeline import compile_module as compile  # noqa: E402
from symgrad.spec import SpecError  # noqa: E402

__all__ = ["SpecError", "SymgradWarning", "check_gradients", "compile", "explain"]
