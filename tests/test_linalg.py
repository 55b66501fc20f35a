"""Linear algebra (issue 12 item 5): solve, inv, det, logabsdet (slogdet's), cholesky,
solve_triangular, batched over leading axes. Gradients against the closed forms of
Giles ("An extended collection of matrix derivative results for forward and reverse
mode algorithmic differentiation", 2008, section 2.2) written in NumPy, and against
central finite differences on every entry; the Gaussian example against the
textbook gradient of the Gaussian log-likelihood."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

import symgrad
from symgrad.check import check_gradients
from symgrad.frontend.spec import SpecError
from tests.conftest import ROOT, assert_step_error


def mT(x):  # noqa: N802 (NumPy's name)
    return np.swapaxes(x, -1, -2)


def _well_conditioned(rng, shape):
    return rng.normal(size=shape) / 3 + 2 * np.eye(shape[-1])


def _compile(steps, inputs, wrt=None):
    spec = {"name": "linalg", "inputs": {k: {"shape": list(v)} for k, v in inputs.items()},
            "steps": steps}  # fmt: skip
    if wrt:
        spec["wrt"] = wrt
    return symgrad.compile(spec)


@pytest.mark.parametrize("batch", [(), (2,), (2, 1)])
def test_solve_inv_det_logabsdet_against_giles(batch):
    rng = np.random.default_rng(len(batch))
    shape = batch + (3, 3)
    A = _well_conditioned(rng, shape)  # noqa: N806
    B = rng.normal(size=(3, 2))  # noqa: N806
    W = rng.normal(size=batch + (3, 2))  # noqa: N806
    V = rng.normal(size=shape)  # noqa: N806
    module = _compile(
        {
            "y": "sum(W * solve(A, B)) + sum(V * inv(A)) + sum(det(A)) + sum(logabsdet(A))"
        },
        {"A": shape, "B": (3, 2), "W": W.shape, "V": shape},
        wrt=["A", "B"],
    )
    y, g = module.value_and_grad(A=A, B=B, W=W, V=V)
    X = np.linalg.solve(A, np.broadcast_to(B, batch + (3, 2)))  # noqa: N806 (NumPy 1 too)
    C = np.linalg.inv(A)  # noqa: N806
    d = np.linalg.det(A)
    value = np.sum(W * X) + np.sum(V * C) + np.sum(d) + np.sum(np.log(np.abs(d)))
    assert y == pytest.approx(value, rel=1e-12)
    # Giles 2.2.3: B̄ = A⁻ᵀ X̄, Ā = -B̄ Xᵀ; C = A⁻¹: Ā = -Cᵀ C̄ Cᵀ
    # Giles 2.2.4: det: Ā = C̄ det(A) A⁻ᵀ; log|det|: Ā = C̄ A⁻ᵀ
    Bbar = np.linalg.solve(mT(A), W)  # noqa: N806
    Abar = -Bbar @ mT(X) - mT(C) @ V @ mT(C) + (d[..., None, None] + 1) * mT(C)  # noqa: N806
    np.testing.assert_allclose(g.A, Abar, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.B, Bbar.reshape((-1, 3, 2)).sum(axis=0), rtol=1e-10)
    report = check_gradients(module, {"A": A, "B": B, "W": W, "V": V})
    assert report.ok, str(report)


def test_solve_with_a_vector():
    rng = np.random.default_rng(4)
    A = _well_conditioned(rng, (4, 4))  # noqa: N806
    b = rng.normal(size=4)
    module = _compile({"y": "sum(sin(solve(A, b)))"}, {"A": (4, 4), "b": (4,)})
    _, g = module.value_and_grad(A=A, b=b)
    x = np.linalg.solve(A, b)
    bbar = np.linalg.solve(A.T, np.cos(x))
    np.testing.assert_allclose(g.b, bbar, rtol=1e-12)
    np.testing.assert_allclose(g.A, -np.outer(bbar, x), rtol=1e-12)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_cholesky_of_a_symmetric_matrix(batch):
    """A = M Mᵀ + 4I: L = cholesky(A). The gradient of sum(W * L) with respect to M
    goes through A's lower triangle, which is all cholesky reads; as a check on the
    formula, the directional derivative along symmetric dA equals Murray's
    symmetric adjoint ½(S + Sᵀ) contracted with dA."""
    rng = np.random.default_rng(7)
    shape = batch + (4, 4)
    M = rng.normal(size=shape)  # noqa: N806
    W = rng.normal(size=shape)  # noqa: N806
    module = _compile(
        {"A": "M @ M.mT + 4 * eye4", "y": "sum(W * cholesky(A))"},
        {"M": shape, "W": shape, "eye4": (4, 4)},
        wrt=["M"],
    )
    point = {"M": M, "W": W, "eye4": np.eye(4)}
    y, g = module.value_and_grad(**point)
    A = M @ mT(M) + 4 * np.eye(4)  # noqa: N806
    L = np.linalg.cholesky(A)  # noqa: N806
    assert y == pytest.approx(np.sum(W * L), rel=1e-12)
    # Murray (2016), eq. 10, written out independently
    P = np.tril(mT(L) @ W)  # noqa: N806
    P = P - 0.5 * np.eye(4) * P  # Φ: the diagonal halved  # noqa: N806
    S = np.linalg.solve(mT(L), mT(np.linalg.solve(mT(L), mT(P))))  # noqa: N806
    Abar = (S + mT(S)) / 2  # noqa: N806
    np.testing.assert_allclose(g.M, 2 * Abar @ M, rtol=1e-10, atol=1e-12)
    assert check_gradients(module, point).ok


def test_gaussian_nll_example_against_the_textbook_gradient():
    """examples/gaussian_nll.yaml: ∂NLL/∂Σ = ½Σ⁻¹ - ½Σ⁻¹SΣ⁻¹ (S the scatter of the
    samples about μ), ∂/∂μ = -Σ⁻¹ mean(x - μ); Σ = AAᵀ + diag(eˢ) carries it to A, s."""
    module = symgrad.compile(ROOT / "examples/gaussian_nll.yaml")
    point = gaussian_point(n=40, d=64, seed=0)
    nll, g = module.value_and_grad(**point)
    want, grads = gaussian_nll_hand(**point)
    assert nll == pytest.approx(want, rel=1e-12)
    for name, expected in grads.items():
        np.testing.assert_allclose(getattr(g, name), expected, rtol=1e-10, atol=1e-12)


def gaussian_point(n: int, d: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, d)), "mu": rng.normal(size=d) / 4,
            "A": rng.normal(size=(d, d)) / np.sqrt(d), "s": rng.normal(size=d) / 4}  # fmt: skip


def gaussian_nll_hand(X, mu, A, s):  # noqa: N803
    n, d = X.shape
    Sigma = A @ A.T + np.diag(np.exp(s))  # noqa: N806
    D = X - mu  # noqa: N806
    sign, logdet = np.linalg.slogdet(Sigma)
    quad = np.sum(D * np.linalg.solve(Sigma, D.T).T) / n
    nll = quad / 2 + logdet / 2 + d / 2 * np.log(2 * np.pi)
    scatter = D.T @ D / n
    inverse = np.linalg.solve(Sigma, np.eye(d))
    G = (inverse - inverse @ scatter @ inverse) / 2  # noqa: N806
    return nll, {
        "mu": -np.linalg.solve(Sigma, D.mean(axis=0)),
        "A": 2 * G @ A,
        "s": np.diag(G) * np.exp(s),
    }


def test_gaussian_nll_finite_differences_on_a_small_case():
    text = (ROOT / "examples/gaussian_nll.yaml").read_text().replace("64", "3")
    text = text.replace("32*log", "1.5*log")
    module = symgrad.compile(yaml.safe_load(text))
    point = gaussian_point(n=5, d=3, seed=1)
    assert check_gradients(module, point).ok
    nll, g = module.value_and_grad(**point)
    want, grads = gaussian_nll_hand(**point)
    assert nll == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(g.A, grads["A"], rtol=1e-10)


def test_backward_passes_solve_and_never_invert():
    text = (ROOT / "generated/gaussian_nll.py").read_text()
    assert "np.linalg.solve(" in text
    assert "np.linalg.inv(" not in text
    assert (
        "for " not in text[text.index("def backward") :].split("def value_and_grad")[0]
    )


@pytest.mark.parametrize(
    "expression, words",
    [
        ("inv(B)", ["square", "[3, 2]"]),
        ("det(v)", ["square", "[3]"]),
        ("solve(A, B.T)", ["[3, 3]", "[2, 3]", "differ"]),
        ("cholesky(B)", ["square", "[3, 2]"]),
    ],
)
def test_shape_errors(expression, words):
    assert_step_error(
        {"A": {"shape": [3, 3]}, "B": {"shape": [3, 2]}, "v": {"shape": [3]}},
        expression,
        words,
    )


def test_slogdet_indexed_as_numpys_pair():
    """slogdet(A)[1] is log|det A| (logabsdet), slogdet(A)[0] its sign (derivative 0);
    against NumPy's slogdet and Giles's Ā = A⁻ᵀ for log|det A| (2.2.2)."""
    rng = np.random.default_rng(3)
    A = _well_conditioned(rng, (2, 3, 3)) * np.array([1.0, -1.0])[:, None, None]  # noqa: N806
    module = _compile(
        {"y": "sum(slogdet(A)[1]) + sum(slogdet(A)[0])"}, {"A": (2, 3, 3)}
    )
    sign, logdet = np.linalg.slogdet(A)
    y, g = module.value_and_grad(A=A)
    assert y == pytest.approx(np.sum(logdet) + np.sum(sign), rel=1e-12)
    np.testing.assert_allclose(g.A, mT(np.linalg.inv(A)), rtol=1e-10, atol=1e-12)
    assert check_gradients(module, {"A": A}).ok


@pytest.mark.parametrize(
    "expression, words",
    [("sum(slogdet(A))", "slogdet(A)[1]"), ("sum(slogdet(A)[2])", "[0] (the sign)")],
)
def test_slogdet_whole_or_out_of_range_is_an_error(expression, words):
    with pytest.raises(SpecError, match=re.escape(words)):
        _compile({"y": expression}, {"A": (3, 3)})
