"""SGD derivations against real SGD steps: exact enumeration, Monte-Carlo with torch, and the trajectory algebra."""

import itertools
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs.numeric import OneStepSGD, init_moments
from proofs.symbols import eta, gamma
from proofs.trajectory import sgd_trajectory, symbolic_batch
from proofs.vectors import CoordinateSum


def sgd_step(A, B, X, V, learning_rate, scale):
    """One SGD step on batched adapters. A: (N, r, d_in), B: (N, d_out, r), X: (b, d_in), V: (b, d_out)."""
    AX = np.einsum("nkd,bd->nbk", A, X)  # (N, b, r): A x_b
    grad_B = scale * np.einsum("bo,nbk->nok", V, AX)  # (N, d_out, r): gamma sum_b v_b (A x_b)^T
    BtV = np.einsum("nok,bo->nbk", B, V)  # (N, b, r): B^T v_b
    grad_A = scale * np.einsum("nbk,bd->nkd", BtV, X)  # (N, r, d_in): gamma sum_b B^T v_b x_b^T
    return A - learning_rate * grad_A, B - learning_rate * grad_B


def all_sign_matrices(rank, dim):
    patterns = np.array(list(itertools.product((-1.0, 1.0), repeat=rank * dim)))
    return patterns.reshape(-1, rank, dim)


@st.composite
def small_batches(draw):
    rank = draw(st.integers(1, 3))
    d_in = draw(st.integers(1, 3 if rank < 3 else 2))
    batch = draw(st.integers(1, 3))
    d_out = draw(st.integers(1, 2))
    entries = st.integers(-2, 2)
    X = np.array([[draw(entries) for _ in range(d_in)] for _ in range(batch)], dtype=float)
    V = np.array([[draw(entries) for _ in range(d_out)] for _ in range(batch)], dtype=float)
    return rank, X, V


@given(small_batches())
@settings(max_examples=30)
def test_one_step_moments_match_enumeration(case):
    rank, X, V = case
    scale, learning_rate = 0.7, 0.3
    A0 = all_sign_matrices(rank, X.shape[1])  # (patterns, r, d_in), every +-1 matrix equally likely
    B0 = np.zeros((len(A0), V.shape[1], rank))
    A1, B1 = sgd_step(A0, B0, X, V, learning_rate, scale)

    outputs = scale * np.einsum("nok,nkd,md->nmo", B1, A1, X)  # (patterns, b, d_out): f_1(x_m)
    gradients = scale * np.einsum("nkd,nok,mo->nmd", A1, B1, V)  # (patterns, b, d_in): gamma A_1^T B_1^T v_m
    grad_B0 = scale * np.einsum("bo,nbk->nok", V, np.einsum("nkd,bd->nbk", A0, X))

    model = OneStepSGD(X, V, sigma2=1.0, mu4=1.0)
    exact = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.output_mean(rank, scale, learning_rate), outputs.mean(axis=0), **exact)
    np.testing.assert_allclose(
        model.output_second_moment(rank, scale, learning_rate), (outputs**2).sum(axis=2).mean(axis=0), **exact
    )
    np.testing.assert_allclose(model.input_gradient_mean(rank, scale, learning_rate), gradients.mean(axis=0), **exact)
    np.testing.assert_allclose(
        model.input_gradient_second_moment(rank, scale, learning_rate), (gradients**2).sum(axis=2).mean(axis=0), **exact
    )
    grad_B_norms = (grad_B0**2).sum(axis=(1, 2))  # (patterns,)
    np.testing.assert_allclose(model.grad_B_norm_squared_at_init(rank, scale), grad_B_norms.mean(), **exact)
    if grad_B_norms.mean() > 0:
        relative_variance = grad_B_norms.var() / grad_B_norms.mean() ** 2
        np.testing.assert_allclose(model.grad_B_norm_squared_relative_variance(rank), relative_variance, **exact)

    directions = model.coherent_directions()  # (b, d_in)
    if (directions**2).sum() > 0:
        coefficients = np.einsum("nmd,md->n", gradients, directions) / (directions**2).sum()  # (patterns,)
        relative_variance = coefficients.var() / coefficients.mean() ** 2
        np.testing.assert_allclose(model.coherent_coefficient_relative_variance(rank), relative_variance, **exact)


def torch_one_step(name, rank, X, W, Y, scale, learning_rate, samples, seed):
    """Train batched adapters one SGD step with autograd on L = |W x + f(x) - y|^2 / 2, summed over the batch.

    Returns per-sample numpy arrays: outputs f_1(x_m), input gradients g_m, and ||grad_B L||_F^2 at init.
    """
    generator = torch.Generator().manual_seed(seed)
    d_in, d_out = X.shape[1], W.shape[0]
    sigma2, _ = init_moments(name, d_in)
    if name == "gaussian":
        A = torch.randn(samples, rank, d_in, generator=generator, dtype=torch.float64) * np.sqrt(sigma2)
    elif name == "uniform":
        A = (torch.rand(samples, rank, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * np.sqrt(3 * sigma2)
    else:
        A = (torch.randint(0, 2, (samples, rank, d_in), generator=generator).double() * 2 - 1) * np.sqrt(sigma2)
    A = A.requires_grad_()
    B = torch.zeros(samples, d_out, rank, dtype=torch.float64, requires_grad=True)
    x, w, y = (torch.as_tensor(t) for t in (X, W, Y))

    def adapter(inputs):  # inputs (b, d_in), shared, or (samples, b, d_in) -> (samples, b, d_out)
        if inputs.dim() == 2:
            return scale * torch.einsum("sok,skd,bd->sbo", B, A, inputs)
        return scale * torch.einsum("sok,skd,sbd->sbo", B, A, inputs)

    optimizer = torch.optim.SGD([A, B], lr=learning_rate)
    loss = 0.5 * ((x @ w.T + adapter(x) - y) ** 2).sum()
    loss.backward()
    grad_B_norm = (B.grad**2).sum(dim=(1, 2)).detach().numpy()
    optimizer.step()

    probes = x.expand(samples, -1, -1).clone().requires_grad_()  # (samples, b, d_in): one copy per sample
    with torch.no_grad():
        outputs = adapter(x).numpy()
    v = (x @ w.T - y).detach()  # (b, d_out): dL/df at B = 0, unchanged by A_0
    (adapter(probes) * v).sum().backward()
    return outputs, probes.grad.numpy(), grad_B_norm, v.numpy()


def assert_within_standard_errors(samples, expected, label, axis=0):
    mean = samples.mean(axis=axis)
    standard_error = samples.std(axis=axis, ddof=1) / np.sqrt(samples.shape[axis])
    bad = np.abs(mean - expected) > 5 * standard_error + 1e-15
    assert not bad.any(), f"{label}: Monte-Carlo {mean[bad]} +- {standard_error[bad]} vs formula {np.asarray(expected)[bad]}"


def assert_relative_variance_close(values, predicted, label):
    """Compare Var/mean^2 of samples with a prediction, allowing 5 standard errors of the variance."""
    mean, variance = values.mean(), values.var(ddof=1)
    variance_error = ((values - mean) ** 2).std(ddof=1) / np.sqrt(len(values))
    mean_error = values.std(ddof=1) / np.sqrt(len(values))
    tolerance = 5 * (variance_error / mean**2 + 2 * variance * mean_error / abs(mean) ** 3)
    assert abs(variance / mean**2 - predicted) < tolerance, f"{label}: sampled {variance / mean**2:.5g} vs {predicted:.5g}"


@pytest.mark.parametrize("name", ["uniform", "gaussian"])
def test_one_step_moments_match_torch_sgd(name):
    rng = np.random.default_rng(2024)
    rank, d_in, d_out, batch = 4, 6, 3, 3
    X = rng.normal(size=(batch, d_in))
    W = rng.normal(size=(d_out, d_in))
    Y = rng.normal(size=(batch, d_out))
    scale, learning_rate = 1.3, 0.8
    outputs, gradients, grad_B_norm, V = torch_one_step(name, rank, X, W, Y, scale, learning_rate, 40_000, seed=5)

    sigma2, mu4 = init_moments(name, d_in)
    model = OneStepSGD(X, V, sigma2=sigma2, mu4=mu4)
    assert_within_standard_errors(outputs, model.output_mean(rank, scale, learning_rate), f"{name} output mean")
    assert_within_standard_errors(
        (outputs**2).sum(axis=2), model.output_second_moment(rank, scale, learning_rate), f"{name} output second moment"
    )
    assert_within_standard_errors(gradients, model.input_gradient_mean(rank, scale, learning_rate), f"{name} gradient mean")
    assert_within_standard_errors(
        (gradients**2).sum(axis=2),
        model.input_gradient_second_moment(rank, scale, learning_rate),
        f"{name} gradient second moment",
    )
    assert_within_standard_errors(grad_B_norm, model.grad_B_norm_squared_at_init(rank, scale), f"{name} grad_B norm")

    directions = model.coherent_directions()  # (b, d_in)
    coefficients = np.einsum("smd,md->s", gradients, directions) / (directions**2).sum()  # (samples,)
    for values, predicted, label in (
        (grad_B_norm, model.grad_B_norm_squared_relative_variance(rank), "grad_B norm"),
        (coefficients, model.coherent_coefficient_relative_variance(rank), "coherent coefficient"),
    ):
        assert_relative_variance_close(values, predicted, f"{name} {label}")


def test_trajectory_matches_direct_sgd_for_three_steps():
    rng = np.random.default_rng(3)
    rank, d_in, d_out, steps = 3, 5, 2, 3
    scale, learning_rate = 0.9, 0.4
    X = rng.normal(size=(steps, d_in))
    V = rng.normal(size=(steps, d_out))
    A0 = rng.normal(size=(1, rank, d_in))
    A, B = A0, np.zeros((1, d_out, rank))
    for k in range(steps):
        A, B = sgd_step(A, B, X[k : k + 1], V[k : k + 1], learning_rate, scale)

    examples = symbolic_batch(steps)
    state = sgd_trajectory([[e] for e in examples])[steps]
    vectors = {**{e.x: X[k] for k, e in enumerate(examples)}, **{e.v: V[k] for k, e in enumerate(examples)}}

    def number(coefficient):
        value = coefficient.xreplace({eta: learning_rate, gamma: scale})
        for atom in value.atoms(CoordinateSum):
            value = value.xreplace({atom: float(np.prod([vectors[v] for v in atom.args], axis=0).sum())})
        return float(value)

    M = np.eye(d_in) + sum(number(c) * np.outer(vectors[a], vectors[b]) for (a, b), c in state.M.items())
    N = sum(number(c) * np.outer(vectors[a], vectors[b]) for (a, b), c in state.N.items())
    np.testing.assert_allclose(A[0], A0[0] @ M, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B[0], N @ A0[0].T, rtol=1e-12, atol=1e-12)


def test_coherent_directions_are_gradient_weighted_inputs():
    rng = np.random.default_rng(0)
    X, V = rng.normal(size=(4, 7)), rng.normal(size=(4, 2))
    model = OneStepSGD(X, V, sigma2=0.1, mu4=0.03)
    np.testing.assert_allclose(model.coherent_directions(), (V @ V.T) @ X)


def test_one_step_calls_take_milliseconds():
    rng = np.random.default_rng(0)
    X, V = rng.normal(size=(8, 4096)), rng.normal(size=(8, 64))
    model = OneStepSGD(X, V, sigma2=1 / (3 * 4096), mu4=1.8 / (3 * 4096) ** 2)
    model.output_second_moment(8, 1.0, 1e-3)  # the first call lambdifies the kernels
    start = time.perf_counter()
    for rank in range(1, 51):
        model.output_second_moment(rank, 1.0, 1e-3)
        model.output_mean(rank, 1.0, 1e-3)
        model.input_gradient_second_moment(rank, 1.0, 1e-3)
        model.input_gradient_mean(rank, 1.0, 1e-3)
        model.grad_B_norm_squared_at_init(rank, 1.0)
        model.grad_B_norm_squared_relative_variance(rank)
        model.coherent_coefficient_relative_variance(rank)
    per_call = (time.perf_counter() - start) / 350
    assert per_call < 5e-3, f"one call took {per_call * 1e3:.2f} ms on average"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(inputs=np.ones(3), output_grads=np.ones((3, 2))), "must be 2-D"),
        (dict(inputs=np.ones((3, 2)), output_grads=np.ones((2, 2))), "same nonzero batch size"),
        (dict(inputs=np.full((1, 2), np.nan), output_grads=np.ones((1, 2))), "must be finite"),
    ],
)
def test_one_step_rejects_invalid_batches(arguments, message):
    with pytest.raises(ValueError, match=message):
        OneStepSGD(**arguments, sigma2=1.0, mu4=3.0)


def test_one_step_rejects_invalid_moments_and_rank():
    X, V = np.ones((2, 3)), np.ones((2, 1))
    with pytest.raises(ValueError, match="sigma2 must be a positive"):
        OneStepSGD(X, V, sigma2=0.0, mu4=1.0)
    with pytest.raises(ValueError, match="mu4 must be finite and at least"):
        OneStepSGD(X, V, sigma2=1.0, mu4=0.5)
    model = OneStepSGD(X, V, sigma2=1.0, mu4=3.0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        model.output_mean(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="gamma must be a finite real number"):
        model.output_mean(2, float("inf"), 1.0)


def test_init_moments_match_torch_kaiming_uniform():
    fan_in = 64
    weight = torch.empty(512, fan_in, dtype=torch.float64)
    torch.nn.init.kaiming_uniform_(weight, a=np.sqrt(5), generator=torch.Generator().manual_seed(0))
    sigma2, mu4 = init_moments("uniform", fan_in)
    assert sigma2 == pytest.approx(1 / (3 * fan_in))
    assert mu4 == pytest.approx(9 / 5 * sigma2**2)
    assert weight.abs().max().item() <= 1 / np.sqrt(fan_in)
    entries = weight.numpy().ravel()
    assert_within_standard_errors(entries**2, sigma2, "kaiming_uniform_ variance")
    assert_within_standard_errors(entries**4, mu4, "kaiming_uniform_ fourth moment")


def test_init_moments_named_cases():
    sigma2, mu4 = init_moments("gaussian", 10)
    assert (sigma2, mu4) == pytest.approx((1 / 30, 3 / 900))
    assert init_moments("rademacher", 10) == pytest.approx((1 / 30, 1 / 900))
    with pytest.raises(ValueError, match="fan_in must be a positive integer"):
        init_moments("uniform", 0)
