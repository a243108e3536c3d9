"""Sign-descent (Adam's first step) formulas against torch's Adam and Monte-Carlo with Gaussian A_0."""

import numpy as np
import pytest
import sympy as sp
import torch

from proofs import sign_descent
from proofs.symbols import d, eta, gamma, r, sigma2
from proofs.vectors import Coordinate, Vector, evaluate_vectors

X0, X, S0, W = Vector("x0"), Vector("x"), Vector("s0"), Vector("w")


def within_standard_errors(samples, expected, label):
    mean = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    bad = np.abs(mean - expected) > 5 * standard_error
    assert not np.any(bad), f"{label}: Monte-Carlo {mean} +- {standard_error} vs formula {expected}"


def numeric(expr, vectors, values):
    """Evaluate a derived expression at concrete vectors and scalar values (``d`` among the values)."""
    return float(evaluate_vectors(expr, vectors, dimension=values.get(d)).xreplace(values))


def adam_first_step(A0, x0, v0, scale, learning_rate, eps=1e-30):
    """One torch Adam step on L = <v0, f(x0)>, so dL/df = v0, for batched adapters A0 (N, r, d_in)."""
    A = torch.as_tensor(A0).clone().requires_grad_()
    B = torch.zeros(A0.shape[0], len(v0), A0.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([A, B], lr=learning_rate, eps=eps)
    output = scale * torch.einsum("nok,nkd,d->no", B, A, torch.as_tensor(x0))  # (N, d_out)
    (output * torch.as_tensor(v0)).sum().backward()
    optimizer.step()
    return A.detach().numpy(), B.detach().numpy()


def test_adam_first_step_is_sign_descent():
    rng = np.random.default_rng(0)
    A0 = rng.normal(size=(5, 3, 4))
    x0, v0 = rng.normal(size=4), np.array([0.5, -2.0, 0.0])
    A1, B1 = adam_first_step(A0, x0, v0, scale=0.3, learning_rate=0.01)
    expected_B1 = -0.01 * np.einsum("o,nk->nok", np.sign(v0), np.sign(A0 @ x0))  # (N, d_out, r)
    np.testing.assert_allclose(B1, expected_B1, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(A1, A0)


def test_gaussian_sign_correlation_matches_monte_carlo():
    rng = np.random.default_rng(1)
    variance, samples = 0.4, 1_000_000
    p, x = rng.normal(size=(2, 5))
    a = rng.normal(0.0, np.sqrt(variance), size=(samples, 5))
    expr = sign_descent.gaussian_sign_correlation(X0, X)
    expected = numeric(expr, {X0: p, X: x}, {sigma2: variance})
    within_standard_errors(np.sign(a @ p) * (a @ x), expected, "E[sign(a.p)(a.x)]")


def test_sign_descent_moments_match_torch_adam():
    rng = np.random.default_rng(2)
    rank, d_in, samples, variance = 6, 5, 40_000, 0.2
    scale, learning_rate = 0.7, 0.05
    x0, x = rng.normal(size=(2, d_in))
    v0, w = np.array([1.5, -0.3, 0.8]), rng.normal(size=3)
    A0 = rng.normal(0.0, np.sqrt(variance), size=(samples, rank, d_in))
    A1, B1 = adam_first_step(A0, x0, v0, scale, learning_rate)

    outputs = scale * np.einsum("nok,nkd,d->no", B1, A1, x)  # (N, d_out): f_1(x)
    gradients = scale * np.einsum("nkd,nok,o->nd", A1, B1, w)  # (N, d_in): gamma A_1^T B_1^T w
    vectors = {X0: x0, X: x, S0: np.sign(v0), W: w}
    values = {eta: learning_rate, gamma: scale, r: rank, sigma2: variance, d: d_in}

    mean, second = sign_descent.output_moments()
    mean_coefficient = mean.coeff(S0)
    within_standard_errors(outputs, numeric(mean_coefficient, vectors, values) * np.sign(v0), "output mean")
    within_standard_errors((outputs**2).sum(axis=1), numeric(second, vectors, values), "output second moment")

    mean_j, gradient_second = sign_descent.input_gradient_moments()
    index = sp.Symbol("j", integer=True)
    expected_mean = [numeric(mean_j.xreplace({Coordinate(X0, index): sp.Float(x0[j])}), vectors, values) for j in range(d_in)]
    within_standard_errors(gradients, np.array(expected_mean), "input gradient mean")
    within_standard_errors((gradients**2).sum(axis=1), numeric(gradient_second, vectors, values), "input gradient second moment")


@pytest.mark.parametrize("factor", [0.25, 3.0])
def test_adam_gamma_scaling_matches_lr_B_scaling(factor):
    # With epsilon negligible, Adam's update ignores a positive rescaling of all gradients.
    rng = np.random.default_rng(3)
    A0 = rng.normal(size=(3, 4))
    X, Y, probe = rng.normal(size=(6, 4)), rng.normal(size=(6, 2)), rng.normal(size=4)

    def train(scale, lr_B):
        A = torch.tensor(A0, requires_grad=True)
        B = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.Adam([{"params": [A], "lr": 0.02}, {"params": [B], "lr": lr_B}], eps=1e-30)
        for x, y in zip(torch.as_tensor(X), torch.as_tensor(Y)):
            optimizer.zero_grad()
            loss = 0.5 * ((scale * B @ A @ x - y) ** 2).sum()
            loss.backward()
            optimizer.step()
        return (scale * B @ A @ torch.as_tensor(probe)).detach().numpy()

    np.testing.assert_allclose(train(factor * 0.5, 0.03), train(0.5, factor * 0.03), rtol=1e-9)
