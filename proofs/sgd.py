"""Exact moments of a LoRA adapter's output and input gradient after SGD steps.

Every function here assumes:

* ``B_0 = 0``, and ``A_0`` has iid symmetric entries with variance ``sigma2`` and fourth
  moment ``mu4``.
* The output gradients ``v_n`` are fixed vectors, not functions of ``A_0``. At the first
  step this is exact, because with ``B_0 = 0`` the adapter's output is 0, so ``v_n``
  cannot depend on ``A_0``. Later steps need it as an assumption, and
  :mod:`proofs.gaps` computes what it hides.

One step on a batch ``{(x_n, v_n)}`` gives (proved by :mod:`proofs.trajectory`)

    B_1 = -eta gamma sum_n v_n x_n^T A_0^T,   A_1 = A_0,
    f_1(x) = -eta gamma**2 sum_n v_n S(x_n, x),   S(p, x) = p^T A_0^T A_0 x,
    g_1(w) = gamma A_1^T B_1^T w = -eta gamma**2 A_0^T A_0 u,   u = sum_n x_n (v_n.w),

and the moments below are exact for every finite rank ``r`` and dimension ``d``.
"""

from __future__ import annotations

import functools

import sympy as sp

from proofs.moments import expectation, gram
from proofs.symbols import gamma
from proofs.trajectory import Example, FactoredState, Outer, sgd_trajectory, symbolic_batch
from proofs.vectors import Coordinate, Vector, dot, inner, sum_over_index

INDEX = sp.Symbol("j", integer=True)
"""Coordinate index of input-space vectors, summed from 1 to ``d``."""

PROBE = Vector("x")
"""Input at which the adapter's output is evaluated."""

UPSTREAM = Vector("w")
"""Output gradient sent back through the adapter to compute the input gradient."""


def output_mean(state: FactoredState, probe: sp.Expr = PROBE) -> sp.Expr:
    """Return ``E f_t(x)`` as a combination of output-gradient vectors."""
    return expectation(state.output(probe))


def output_second_moment(state: FactoredState, probe: sp.Expr = PROBE) -> sp.Expr:
    """Return ``E |f_t(x)|**2``, summed over the output coordinates."""
    f = state.output(probe)
    return expectation(dot(f, f))


def input_gradient_mean_coordinate(state: FactoredState, upstream: sp.Expr = UPSTREAM) -> sp.Expr:
    """Return coordinate ``j`` of ``E g_t(w)``, with ``g_t(w) = gamma A_t^T B_t^T w``."""
    return expectation(state.input_gradient_coordinate(upstream, INDEX))


def input_gradient_coordinate_second_moment(state: FactoredState, upstream: sp.Expr = UPSTREAM) -> sp.Expr:
    """Return ``E[g_t(w)_j**2]`` for one coordinate ``j``."""
    return expectation(state.input_gradient_coordinate(upstream, INDEX) ** 2)


def input_gradient_second_moment(state: FactoredState, upstream: sp.Expr = UPSTREAM) -> sp.Expr:
    """Return ``E |g_t(w)|**2``, summed over the ``d`` input coordinates."""
    return sum_over_index(input_gradient_coordinate_second_moment(state, upstream), INDEX)


def frobenius_inner(first: Outer, second: Outer) -> sp.Expr:
    """Return the Frobenius inner product of ``N A_0^T`` and ``N' A_0^T`` (random).

    For ``N = sum c v_a x_b^T`` and ``N' = sum c' v_a' x_b'^T`` it is
    ``sum c c' (v_a.v_a') S(x_b, x_b')``, because ``(A_0 x_b).(A_0 x_b') = S(x_b, x_b')``.
    """
    total = sp.S.Zero
    for (a, b), coeff in first.items():
        for (a2, b2), coeff2 in second.items():
            total += coeff * coeff2 * inner(a, a2) * gram(b, b2)
    return total


def grad_B_at_init(batch: list[Example], scale: sp.Expr = gamma) -> Outer:
    """Return ``grad_B L`` at ``B = 0`` as ``N`` in ``N A_0^T``: ``gamma sum_n v_n x_n^T``.

    The gradient is read off the first SGD step, ``grad_B L = -(B_1 - B_0) / eta``, so it
    is the same for every optimizer that starts from this point.
    """
    unit_step = FactoredState().sgd_step(batch, learning_rate=sp.S.One, scale=scale)
    return {key: -value for key, value in unit_step.N.items()}


def grad_B_norm_squared_at_init(batch: list[Example], scale: sp.Expr = gamma) -> sp.Expr:
    """Return ``E ||grad_B L||_F**2`` at ``B = 0``, which is ``gamma**2 r sigma2 sum_{n,n'} (v_n.v_n')(x_n.x_n')``."""
    gradient = grad_B_at_init(batch, scale)
    return expectation(frobenius_inner(gradient, gradient))


@functools.lru_cache(maxsize=None)
def grad_B_pair_kernel() -> sp.Expr:
    """Return ``E <G0, G1>_F`` for the gradients ``G_n = gamma v_n x_n^T A_0^T`` of two single examples.

    ``E ||grad_B L||_F**2`` of a batch is the sum of this kernel over ordered pairs ``(n, n')``.
    """
    first, second = symbolic_batch(2)
    return expectation(frobenius_inner(grad_B_at_init([first]), grad_B_at_init([second])))


@functools.lru_cache(maxsize=None)
def one_example_states() -> tuple[FactoredState, FactoredState]:
    """Return the one-step states for the single-example batches ``[(x0, v0)]`` and ``[(x1, v1)]``."""
    first, second = symbolic_batch(2)
    return sgd_trajectory([[first]])[1], sgd_trajectory([[second]])[1]


@functools.lru_cache(maxsize=None)
def one_step_output_mean_coefficient() -> sp.Expr:
    """Return the coefficient of ``v0`` in ``E f_1(x)`` for the batch ``[(x0, v0)]``.

    It is ``-eta gamma**2 r sigma2 (x0.x)``. Because ``B_1`` is a sum over the batch, a
    batch's mean output is the sum of these coefficients times ``v_n``.
    """
    state, _ = one_example_states()
    mean = output_mean(state)
    return sp.expand(mean.coeff(Vector("v0")))


@functools.lru_cache(maxsize=None)
def one_step_output_pair_kernel() -> sp.Expr:
    """Return ``E[f^(0)(x) . f^(1)(x)]`` for the one-step outputs of two single-example batches.

    ``f_1 = sum_n f^(n)`` over the batch, so ``E |f_1(x)|**2`` is the sum of this kernel
    over all ordered pairs ``(n, n')`` with ``x0 = x_n``, ``x1 = x_n'``, ``v0 = v_n``,
    ``v1 = v_n'``. It equals ``eta**2 gamma**4 (v0.v1) E[S(x0, x) S(x1, x)]``.
    """
    first, second = one_example_states()
    return expectation(dot(first.output(PROBE), second.output(PROBE)))


@functools.lru_cache(maxsize=None)
def one_step_input_gradient_moments() -> tuple[sp.Expr, sp.Expr]:
    """Return ``(mean coefficient, second moment)`` of the one-step input gradient for ``[(x0, v0)]``.

    With upstream gradient ``w``, ``E g_1(w) = coefficient * (v0.w) * x0`` and the second
    moment is ``E |g_1(w)|**2``. A batch enters only through ``u = sum_n x_n (v_n.w)``, so
    the batch result is the single-example one with ``x0 -> u`` and ``(v0.w) -> 1``.
    """
    state, _ = one_example_states()
    direction = inner(Vector("v0"), UPSTREAM) * Coordinate(Vector("x0"), INDEX)
    coefficient = sp.cancel(input_gradient_mean_coordinate(state) / direction)
    if coefficient.has(Vector):
        raise AssertionError(f"input-gradient mean is not along (v0.w) x0: coefficient {coefficient}")
    return coefficient, input_gradient_second_moment(state)
