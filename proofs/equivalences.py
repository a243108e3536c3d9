"""Hyperparameter changes that are equivalent to rescaling ``gamma`` by a factor ``c > 0``.

* SGD: the adapter's output after ``n`` steps is ``-eta gamma**2 sum_k v_k S(x_k, x)`` plus
  ``O(eta**3 gamma**4)`` (:mod:`proofs.expansion`). The leading term depends on ``eta`` and
  ``gamma`` only through ``eta gamma**2``, so ``gamma -> c gamma`` equals ``eta -> c**2 eta``
  to leading order. After one step the two are exactly equal. From the second step on,
  ``A`` moves by ``eta**2 gamma**2`` terms, which the two changes scale differently
  (``c**2`` against ``c**4``).
* Sign descent (Adam as ``epsilon -> 0``): every update is ``-lr * sign(gradient)``, and
  ``sign`` ignores positive factors. Running with ``(c gamma, eta_B)`` and with
  ``(gamma, c eta_B)`` from the same ``A_0`` keeps ``A`` equal and ``B`` in ratio ``c``
  at every step, so the outputs agree exactly (:func:`sign_descent_induction_step`).
  For ``epsilon > 0`` the equality fails (:func:`adam_epsilon_discrepancy`).
"""

from __future__ import annotations

import sympy as sp

from proofs.symbols import c, epsilon, eta, gamma
from proofs.trajectory import sgd_trajectory, symbolic_batch
from proofs.vectors import Vector

PROBE = Vector("x")


def sgd_output(steps: int, scale: sp.Expr, learning_rate: sp.Expr) -> sp.Expr:
    """Return the exact output after ``steps`` single-example SGD steps for given ``gamma`` and ``eta``."""
    batches = [[example] for example in symbolic_batch(steps)]
    state = sgd_trajectory(batches, learning_rate=learning_rate, scale=scale)[steps]
    return sp.expand(state.output(PROBE, scale=scale))


def lowest_gamma_power(expr: sp.Expr) -> int | None:
    """Return the lowest power of ``gamma`` in a polynomial, or None if it is zero."""
    expr = sp.expand(expr)
    if expr == 0:
        return None
    return min(int(m[0]) for m in sp.Poly(expr, gamma).monoms())


def sgd_scale_versus_learning_rate(steps: int) -> tuple[sp.Expr, sp.Expr]:
    """Return the exact outputs with ``gamma -> c gamma`` and with ``eta -> c**2 eta`` after ``steps`` steps."""
    return sgd_output(steps, c * gamma, eta), sgd_output(steps, gamma, c**2 * eta)


def leading_gamma_part(expr: sp.Expr) -> sp.Expr:
    """Return the lowest-order term in ``gamma`` of a polynomial (with its ``gamma`` power)."""
    power = lowest_gamma_power(expr)
    if power is None:
        return sp.S.Zero
    return sp.expand(expr).coeff(gamma, power) * gamma**power


def sign_descent_step(A: sp.Matrix, B: sp.Matrix, x: sp.Matrix, v: sp.Matrix, scale, lr_A, lr_B):
    """Return ``(A', B')`` after one sign-descent step on one example ``(x, v)``.

    The gradients are ``grad_B = gamma v x^T A^T`` and ``grad_A = gamma B^T v x^T``, and each
    entry moves by ``-lr * sign(gradient entry)``. ``factor_terms`` pulls common positive
    factors out of every entry so that sympy's ``sign`` can drop them.
    """
    grad_B = scale * v * x.T * A.T
    grad_A = scale * B.T * v * x.T
    new_B = B - lr_B * grad_B.applyfunc(lambda entry: sp.sign(sp.factor_terms(entry)))
    new_A = A - lr_A * grad_A.applyfunc(lambda entry: sp.sign(sp.factor_terms(entry)))
    return new_A, new_B


def sign_descent_induction_step(rank: int = 2, d_in: int = 2, d_out: int = 2):
    """Prove the sign-descent equivalence by one step on generic symbolic matrices.

    Hypothesis at step ``t``: run 1 (scale ``c gamma``, B learning rate ``eta``) is at
    ``(A, B)`` and run 2 (scale ``gamma``, B learning rate ``c eta``) at ``(A, c B)``. Both
    produce the output ``c gamma B A x``, so both see the same output gradient ``v``.
    Returns ``(A_2 - A_1, B_2 - c B_1, output_2 - output_1)`` after one step, all zero.
    The step starts from ``B = 0`` at ``t = 0``, so induction gives every step.
    """
    A = sp.Matrix(rank, d_in, lambda i, j: sp.Symbol(f"a{i}{j}", real=True))
    B = sp.Matrix(d_out, rank, lambda i, j: sp.Symbol(f"b{i}{j}", real=True))
    x = sp.Matrix(d_in, 1, lambda i, _: sp.Symbol(f"x{i}", real=True))
    v = sp.Matrix(d_out, 1, lambda i, _: sp.Symbol(f"v{i}", real=True))
    lr_A = sp.Symbol("eta_A", positive=True)

    A1, B1 = sign_descent_step(A, B, x, v, c * gamma, lr_A, eta)
    A2, B2 = sign_descent_step(A, c * B, x, v, gamma, lr_A, c * eta)

    probe = sp.Matrix(d_in, 1, lambda i, _: sp.Symbol(f"p{i}", real=True))
    output_1 = c * gamma * B1 * A1 * probe
    output_2 = gamma * B2 * A2 * probe
    return (A2 - A1).applyfunc(sp.expand), (B2 - c * B1).applyfunc(sp.expand), (output_2 - output_1).applyfunc(sp.expand)


def adam_epsilon_discrepancy() -> sp.Expr:
    """Return ``output(gamma, c eta) / output(c gamma, eta) - 1`` for one Adam step with ``epsilon > 0``.

    One entry ``u`` of ``v0 (A_0 x0)^T`` gives the B gradient ``gamma u``, Adam's first
    update ``-eta gamma u / (gamma |u| + epsilon)``, and an output proportional to
    ``gamma`` times it. The ratio minus one is ``(1 - c) epsilon / (c (gamma |u| + epsilon))``,
    nonzero for ``c != 1`` and ``epsilon > 0``, and 0 in the limit ``epsilon -> 0``.
    """
    u = sp.Symbol("u", real=True, nonzero=True)

    def output(scale, lr):
        return scale * (-lr * scale * u / (sp.Abs(scale * u) + epsilon))

    return sp.simplify(output(gamma, c * eta) / output(c * gamma, eta) - 1)
