"""symgrad: compile mathematics into readable, checked backpropagation code.

mod = symgrad.compile("examples/udl_toy.yaml")     # a spec file, a dict, or
mod = symgrad.compile(x**2 * sin(w), wrt=[w])       # a SymPy expression
y, grads = mod.value_and_grad(...)
symgrad.check_gradients(mod, point)                 # against finite differences
symgrad.explain(mod, at=point)                      # the chain rule, step by step
symgrad.graph(mod, at=point); symgrad.plot(mod, "x")  # inline in a notebook
"""

from symgrad._version import __version__
from symgrad.api import compile
from symgrad.check import check_gradients
from symgrad.frontend.spec import SpecError
from symgrad.pipeline import SymgradWarning
from symgrad.teach.explain import explain
from symgrad.teach.notebook import graph, plot

__all__ = [
    "SpecError",
    "SymgradWarning",
    "__version__",
    "check_gradients",
    "compile",
    "explain",
    "graph",
    "plot",
]
