"""Numeric versions of the derived formulas, for overlaying theory on simulations.

Every function here evaluates a sympy expression derived in :mod:`proofs.sgd`,
:mod:`proofs.asymptotics` or :mod:`proofs.moments`, turned into numpy code with
``sympy.lambdify``. No formula is typed in a second time. Batch sums are done in numpy
with Gram matrices: a one-step moment of a batch is a sum of single-example kernels over
pairs of examples, because ``B_1`` is a sum over the batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from numbers import Real

import numpy as np
import sympy as sp

from proofs import asymptotics, moments, sgd
from proofs import symbols as sym
from proofs.vectors import CoordinateSum, Vector, inner

X, X0, X1 = Vector("x"), Vector("x0"), Vector("x1")
V0, V1, W = Vector("v0"), Vector("v1"), Vector("w")


def _lambdify(expr: sp.Expr, scalars: list[sp.Symbol], atoms: Mapping[sp.Expr, str]) -> Callable:
    """Lambdify ``expr`` with the given scalar symbols and named atoms as positional arguments."""
    names = {atom: sp.Symbol(name) for atom, name in atoms.items()}
    replaced = expr.xreplace(names)
    arguments = list(scalars) + list(names.values())
    leftover = replaced.free_symbols - set(arguments)
    if leftover or replaced.atoms(CoordinateSum):
        raise ValueError(f"expression {replaced} has unmapped symbols {sorted(map(str, leftover))}")
    return sp.lambdify(arguments, replaced, modules="numpy")


@functools.lru_cache(maxsize=None)
def _output_mean_kernel() -> Callable:
    # coefficient of v_n in E f_1(x): arguments (eta, gamma, r, sigma2, (x_n.x))
    return _lambdify(sgd.one_step_output_mean_coefficient(), [sym.eta, sym.gamma, sym.r, sym.sigma2], {inner(X, X0): "px"})


@functools.lru_cache(maxsize=None)
def _output_pair_kernel() -> Callable:
    atoms = {
        inner(V0, V1): "vv",
        inner(X, X0): "px",
        inner(X, X1): "qx",
        inner(X0, X1): "pq",
        inner(X, X): "xx",
        CoordinateSum(X, X, X0, X1): "pqxx",
    }
    return _lambdify(sgd.one_step_output_pair_kernel(), [sym.eta, sym.gamma, sym.r, sym.sigma2, sym.mu4], atoms)


@functools.lru_cache(maxsize=None)
def _input_gradient_kernels() -> tuple[Callable, Callable]:
    # The batch enters only through u = sum_n x_n (v_n.w): set x0 -> u and (v0.w) -> 1.
    mean_coefficient, second_moment = sgd.one_step_input_gradient_moments()
    second_moment = second_moment.xreplace({inner(V0, W): sp.S.One})
    mean = _lambdify(mean_coefficient, [sym.eta, sym.gamma, sym.r, sym.sigma2], {})
    second = _lambdify(second_moment, [sym.eta, sym.gamma, sym.r, sym.d, sym.sigma2, sym.mu4], {inner(X0, X0): "uu"})
    return mean, second


@functools.lru_cache(maxsize=None)
def _grad_B_pair_kernel() -> Callable:
    atoms = {inner(V0, V1): "vv", inner(X0, X1): "xx"}
    return _lambdify(sgd.grad_B_pair_kernel(), [sym.gamma, sym.r, sym.sigma2], atoms)


@functools.lru_cache(maxsize=None)
def _gram_moment_kernels() -> tuple[Callable, Callable]:
    # E S(p, q) with arguments (r, sigma2, (p.q)) and Cov[S(p, q), S(s, t)] with
    # arguments (r, sigma2, mu4, (p.s), (q.t), (p.t), (q.s), sum_j p_j q_j s_j t_j).
    p, q, s, t = (Vector(name) for name in ("p", "q", "s", "t"))
    mean = _lambdify(moments.expectation(moments.gram(p, q)), [sym.r, sym.sigma2], {inner(p, q): "pq"})
    covariance_atoms = {
        inner(p, s): "ps",
        inner(q, t): "qt",
        inner(p, t): "pt",
        inner(q, s): "qs",
        CoordinateSum(p, q, s, t): "pqst",
    }
    covariance = _lambdify(moments.gram_covariance(p, q, s, t), [sym.r, sym.sigma2, sym.mu4], covariance_atoms)
    return mean, covariance


class OneStepSGD:
    """Exact one-step SGD moments of a LoRA adapter trained from B = 0 on one batch.

    Assumes A_0 has iid entries (mean 0, variance sigma2, fourth moment mu4, symmetric)
    and that inputs and output gradients do not depend on A_0. The second assumption is
    exact at the first step, because the adapter's output is 0 while ``B = 0``.

    Parameters
    ----------
    inputs : array, shape (b, d_in)
        Rows ``x_n``, the batch the step was taken on. They are also the probe points.
    output_grads : array, shape (b, d_out)
        Rows ``v_n = dL/df(x_n)`` for the total loss ``L``, so any ``1/b`` of a mean loss
        is already included.
    sigma2, mu4 : float
        Variance and fourth moment of one entry of ``A_0`` (see :func:`init_moments`).

    The moments are exact at integer ranks. Non-integer ranks evaluate the same
    polynomial in ``r``, which has no probabilistic meaning there.
    """

    def __init__(self, inputs, output_grads, *, sigma2: float, mu4: float):
        x = np.asarray(inputs, dtype=np.float64)
        v = np.asarray(output_grads, dtype=np.float64)
        if x.ndim != 2 or v.ndim != 2:
            raise ValueError(f"inputs and output_grads must be 2-D (batch, dim), got shapes {x.shape} and {v.shape}")
        if x.shape[0] != v.shape[0] or x.shape[0] == 0:
            raise ValueError(f"inputs and output_grads need the same nonzero batch size, got {x.shape[0]} and {v.shape[0]}")
        if not (np.isfinite(x).all() and np.isfinite(v).all()):
            raise ValueError("inputs and output_grads must be finite; found NaN or inf")
        if not (math.isfinite(sigma2) and sigma2 > 0):
            raise ValueError(f"sigma2 must be a positive finite variance, got {sigma2!r}")
        if not (math.isfinite(mu4) and mu4 >= sigma2**2 * (1 - 1e-12)):
            raise ValueError(f"mu4 must be finite and at least sigma2**2 = {sigma2**2!r} (Jensen), got {mu4!r}")

        self.sigma2 = float(sigma2)
        self.mu4 = float(mu4)
        self._output_grads = v  # (b, d_out)
        self._input_dim = x.shape[1]
        self._gram_x = x @ x.T  # (b, b): (x_n.x_m)
        self._gram_v = v @ v.T  # (b, b): (v_n.v_m)
        self._fourth = np.einsum("nj,kj,mj->nkm", x, x, x * x)  # (b, b, b): sum_j x_nj x_kj x_mj**2
        self._directions = self._gram_v @ x  # (b, d_in): u_m = sum_n (v_n.v_m) x_n
        self._direction_norms = np.einsum("mj,mj->m", self._directions, self._directions)  # (b,)
        self._gram_u = self._directions @ self._directions.T  # (b, b): (u_m.u_l)
        squared_directions = self._directions**2
        self._fourth_u = squared_directions @ squared_directions.T  # (b, b): sum_j u_mj**2 u_lj**2
        pairs = (x[:, None, :] * x[None, :, :]).reshape(-1, x.shape[1])  # (b*b, d_in): x_n * x_n'
        batch = x.shape[0]
        self._fourth_x = (pairs @ pairs.T).reshape(batch, batch, batch, batch)  # sum_j x_aj x_bj x_cj x_dj

    def output_second_moment(self, rank, gamma, learning_rate) -> np.ndarray:
        """Return ``E |f_1(x_m)|**2`` summed over output coordinates, shape (b,)."""
        _check_hyperparameters(rank, gamma, learning_rate)
        gram, diagonal = self._gram_x, np.diag(self._gram_x)
        kernel = _output_pair_kernel()(
            learning_rate,
            gamma,
            rank,
            self.sigma2,
            self.mu4,
            self._gram_v[:, :, None],  # (v_n.v_n')
            gram[:, None, :],  # (x_n.x_m)
            gram[None, :, :],  # (x_n'.x_m)
            gram[:, :, None],  # (x_n.x_n')
            diagonal[None, None, :],  # |x_m|**2
            self._fourth,  # sum_j x_nj x_n'j x_mj**2
        )
        return np.broadcast_to(kernel, self._fourth.shape).sum(axis=(0, 1))

    def output_mean(self, rank, gamma, learning_rate) -> np.ndarray:
        """Return ``E f_1(x_m)``, shape (b, d_out)."""
        _check_hyperparameters(rank, gamma, learning_rate)
        coefficients = _output_mean_kernel()(learning_rate, gamma, rank, self.sigma2, self._gram_x)  # (b_n, b_m)
        return np.broadcast_to(coefficients, self._gram_x.shape).T @ self._output_grads

    def input_gradient_second_moment(self, rank, gamma, learning_rate) -> np.ndarray:
        """Return ``E |g_m|**2`` summed over input coordinates, ``g_m = gamma A_1^T B_1^T v_m``, shape (b,)."""
        _check_hyperparameters(rank, gamma, learning_rate)
        _, second = _input_gradient_kernels()
        values = second(learning_rate, gamma, rank, self._input_dim, self.sigma2, self.mu4, self._direction_norms)
        return np.broadcast_to(values, self._direction_norms.shape).astype(np.float64)

    def input_gradient_mean(self, rank, gamma, learning_rate) -> np.ndarray:
        """Return ``E g_m = -eta gamma**2 r sigma2 u_m``, shape (b, d_in)."""
        _check_hyperparameters(rank, gamma, learning_rate)
        mean, _ = _input_gradient_kernels()
        return mean(learning_rate, gamma, rank, self.sigma2) * self._directions

    def coherent_directions(self) -> np.ndarray:
        """Return ``u_m = sum_n x_n (v_n.v_m)``, the direction of ``E g_m``, shape (b, d_in)."""
        return self._directions.copy()

    def grad_B_norm_squared_at_init(self, rank, gamma) -> float:
        """Return ``E ||grad_B L||_F**2`` at ``B = 0``, ``grad_B L = gamma sum_n v_n (A_0 x_n)^T``."""
        _check_hyperparameters(rank, gamma, 1.0)
        kernel = _grad_B_pair_kernel()(gamma, rank, self.sigma2, self._gram_v, self._gram_x)
        return float(np.sum(kernel))

    def grad_B_norm_squared_relative_variance(self, rank) -> float:
        """Return ``Var / mean**2`` of ``||grad_B L||_F**2`` at ``B = 0`` over ``A_0``.

        ``||grad_B L||_F**2 = gamma**2 sum_{n,n'} (v_n.v_n') S(x_n, x_n')``, so the ratio does
        not depend on ``gamma``. It falls like ``1/r`` at large rank.
        """
        _check_hyperparameters(rank, 1.0, 1.0)
        mean_kernel, covariance_kernel = _gram_moment_kernels()
        gram, weights = self._gram_x, self._gram_v
        mean = np.sum(weights * mean_kernel(rank, self.sigma2, gram))
        covariance = covariance_kernel(
            rank,
            self.sigma2,
            self.mu4,
            gram[:, None, :, None],  # (x_a.x_c)
            gram[None, :, None, :],  # (x_b.x_d)
            gram[:, None, None, :],  # (x_a.x_d)
            gram[None, :, :, None],  # (x_b.x_c)
            self._fourth_x,  # sum_j x_aj x_bj x_cj x_dj
        )  # (b, b, b, b): Cov[S(x_a, x_b), S(x_c, x_d)]
        variance = np.einsum("ab,cd,abcd->", weights, weights, np.broadcast_to(covariance, self._fourth_x.shape))
        return float(variance / mean**2)

    def coherent_coefficient_relative_variance(self, rank) -> float:
        """Return ``Var / mean**2`` over ``A_0`` of the coherent coefficient of the one-step input gradients.

        The coefficient is the least-squares fit of all ``g_m`` on their expected directions,
        ``c = sum_m (g_m.u_m) / sum_m |u_m|**2``, with mean ``-eta gamma**2 r sigma2``. Because
        ``(g_m.u_m) = -eta gamma**2 S(u_m, u_m)``, the ratio does not depend on ``gamma`` or
        ``eta``. It falls like ``1/r`` at large rank.
        """
        _check_hyperparameters(rank, 1.0, 1.0)
        mean_kernel, covariance_kernel = _gram_moment_kernels()
        gram = self._gram_u
        mean = np.sum(mean_kernel(rank, self.sigma2, self._direction_norms))
        covariance = covariance_kernel(rank, self.sigma2, self.mu4, gram, gram, gram, gram, self._fourth_u)
        # (b, b): Cov[S(u_m, u_m), S(u_l, u_l)]
        variance = np.sum(np.broadcast_to(covariance, gram.shape))
        return float(variance / mean**2)


def theory_slope(quantity: str, optimizer: str, beta) -> float:
    """Return the leading exponent of ``r`` in the RMS of a quantity at scaling exponent ``beta``.

    This is the large-rank log-log slope on training inputs. ``quantity`` is one of
    ``"output"``, ``"input_gradient"``, ``"grad_norm_init"`` and ``optimizer`` one of
    ``"sgd"``, ``"sign_descent"``. The exponent is derived from the one-step second moments
    by :mod:`proofs.asymptotics`. It gives ``1 - 2 beta`` for SGD, ``1 - beta`` for
    sign descent, and ``1/2 - beta`` for the gradient norm at initialisation.
    ``beta`` may be a float, int, ``Fraction`` or sympy number.
    """
    if isinstance(beta, bool) or not isinstance(beta, (Real, Fraction, sp.Number)):
        raise TypeError(f"beta must be a real number, got {beta!r} of type {type(beta).__name__}")
    return float(_slope_function(quantity, optimizer)(float(beta)))


@functools.lru_cache(maxsize=None)
def _slope_function(quantity: str, optimizer: str) -> Callable[[float], float]:
    return sp.lambdify(sym.beta, asymptotics.rms_exponent(quantity, optimizer), modules="math")


def stable_exponents(quantity: str, optimizer: str) -> set:
    """Return the set of ``beta`` (sympy Rationals) that make the quantity Theta(1) in ``r``."""
    return set(asymptotics.stable_exponents_for(quantity, optimizer))


def init_moments(name: str, fan_in: int) -> tuple[float, float]:
    """Return ``(sigma2, mu4)`` of an initialisation of ``A`` with variance ``1/(3 fan_in)``.

    ``name`` is ``"uniform"``, ``"gaussian"`` or ``"rademacher"``. The variance is that of
    HF PEFT's default ``kaiming_uniform_(a=sqrt(5))`` on ``A``, which is
    U(+-1/sqrt(fan_in)). The fourth moment comes from :func:`proofs.moments.distribution_moment`.
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    variance = sp.Rational(1, 3 * int(fan_in))
    fourth = moments.distribution_moment(name, 4).subs(sym.sigma2, variance)
    return float(variance), float(fourth)


def _check_hyperparameters(rank, scale, learning_rate) -> None:
    for name, value in (("rank", rank), ("gamma", scale), ("learning_rate", learning_rate)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank!r}")
