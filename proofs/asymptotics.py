"""Leading power of the rank under ``gamma = alpha * r**(-beta)``, and the stable exponents.

A moment derived elsewhere is a finite sum of terms ``coefficient * r**e * gamma**k``.
After the substitution every term is ``coefficient * r**(e - k beta)``. Terms are grouped
by exponent, groups whose coefficients cancel are dropped, and the leading exponent is the
maximum of the remaining exponents, a piecewise-linear function of ``beta``.

A moment is Theta(1) in ``r`` exactly when its leading exponent is 0 and the leading
coefficient is nonzero. For ``beta`` where the exponent is positive it diverges, and
where negative it vanishes. So the stable exponents are the roots of the leading exponent,
provided every leading coefficient is nonzero. Each function that relies on that states
the condition. For the output it is ``sum_n v_n (x_n.x) != 0``, which is true at a
training input in general position.
"""

from __future__ import annotations

import functools
import sympy as sp

from proofs import sgd, sign_descent
from proofs.symbols import beta, gamma, r, scaling_rule
from proofs.trajectory import symbolic_batch, sgd_trajectory
from proofs.vectors import Vector

QUANTITIES = ("output", "input_gradient", "grad_norm_init")
"""Measured quantities: adapter output, gradient passed to the adapter's input, and ``||grad_B L||_F`` at initialisation."""

OPTIMIZERS = ("sgd", "sign_descent")
"""Optimizers with derived exponents. ``sign_descent`` is also Adam's first step as epsilon -> 0."""


def substitute_scaling(expr: sp.Expr) -> sp.Expr:
    """Replace ``gamma`` by ``alpha * r**(-beta)``."""
    return expr.subs(gamma, scaling_rule())


def power_terms(expr: sp.Expr) -> dict[sp.Expr, sp.Expr]:
    """Group the terms of an expression by their power of ``r``.

    Returns ``{exponent: coefficient}``, where exponents may depend on ``beta`` and
    coefficients that cancel to zero are dropped. Raises ValueError if a coefficient
    still contains ``r`` (for example ``r`` inside a square root).
    """
    return dict(_power_terms(expr))


@functools.lru_cache(maxsize=256)
def _power_terms(expr: sp.Expr) -> dict[sp.Expr, sp.Expr]:
    groups: dict[sp.Expr, sp.Expr] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        exponent = sp.S.Zero
        coefficient = sp.S.One
        for factor in sp.Mul.make_args(term):
            base, power = factor.as_base_exp()
            if base == r:
                exponent += power
            else:
                coefficient *= factor
        if coefficient.has(r):
            raise ValueError(f"term {term} is not a power of r times an r-free coefficient")
        exponent = sp.expand(exponent)
        groups[exponent] = groups.get(exponent, sp.S.Zero) + coefficient
    return {e: sp.factor(cf) for e, cf in groups.items() if sp.simplify(cf) != 0}


def leading_exponent(expr: sp.Expr) -> sp.Expr:
    """Return the leading power of ``r`` in a moment after ``gamma = alpha r**(-beta)``.

    The result is ``Max`` of the exponents of the nonzero groups, which sympy simplifies
    to one linear function of ``beta`` where one group dominates for every ``beta``.
    """
    terms = power_terms(substitute_scaling(expr))
    if not terms:
        raise ValueError("the expression is identically zero, so it has no leading power of r")
    return sp.Max(*terms.keys())


def leading_coefficient(expr: sp.Expr, beta_value) -> sp.Expr:
    """Return the coefficient of the leading power of ``r`` at a given ``beta``."""
    terms = power_terms(substitute_scaling(expr))
    values = {e: e.subs(beta, beta_value) for e in terms}
    top = max(values.values())
    return sp.factor(sum(cf for e, cf in terms.items() if values[e] == top))


def stable_set(exponent: sp.Expr) -> sp.Set:
    """Return the real ``beta`` where a leading exponent is 0."""
    return sp.solveset(sp.Eq(exponent, 0), beta, sp.S.Reals)


def crossover_rank(expr: sp.Expr) -> sp.Expr:
    """Return the rank at which the ``r**2`` part of a moment equals its ``r**1`` part.

    ``expr`` must be ``a r**2 + b r`` times factors free of ``r`` (a one-step second moment
    with ``gamma`` kept symbolic). Above the returned rank the coherent ``r**2`` term
    dominates. Below it the fluctuation term dominates, and the RMS grows like
    ``sqrt(r)`` times ``gamma**2``, not like ``r`` times ``gamma**2``.
    """
    polynomial = sp.Poly(sp.expand(expr), r)
    if polynomial.degree() != 2 or polynomial.coeff_monomial(1) != 0:
        raise ValueError(f"expected a r**2 + b r, got a polynomial of degree {polynomial.degree()} in r")
    return sp.simplify(polynomial.coeff_monomial(r) / polynomial.coeff_monomial(r**2))


@functools.lru_cache(maxsize=None)
def second_moment_at_training_input(quantity: str, optimizer: str) -> sp.Expr:
    """Return the one-step second moment of a quantity at the training example ``(x0, v0)``.

    The output is probed at ``x = x0`` and the input gradient uses upstream ``w = v0``, so
    the leading coefficients contain ``|x0|**4 |v0|**2`` and similar, which are nonzero.
    The gradient norm is measured at initialisation, before any update, so it is the
    same for both optimizers.
    """
    _check_names(quantity, optimizer)
    x0, v0 = Vector("x0"), Vector("v0")
    if quantity == "grad_norm_init":
        return sgd.grad_B_norm_squared_at_init(symbolic_batch(1))
    if optimizer == "sgd":
        state = sgd_trajectory([symbolic_batch(1)])[1]
        if quantity == "output":
            return sgd.output_second_moment(state, x0)
        return sgd.input_gradient_second_moment(state, v0)
    if quantity == "output":
        return sign_descent.at_training_input(sign_descent.output_moments()[1])
    return sign_descent.at_training_input(sign_descent.input_gradient_moments()[1])


@functools.lru_cache(maxsize=None)
def rms_exponent(quantity: str, optimizer: str) -> sp.Expr:
    """Return the leading exponent of ``r`` in the RMS (half that of the second moment) as a function of ``beta``."""
    return sp.expand(leading_exponent(second_moment_at_training_input(quantity, optimizer)) / 2)


@functools.lru_cache(maxsize=None)
def stable_exponents_for(quantity: str, optimizer: str) -> frozenset:
    """Return the ``beta`` that make the quantity Theta(1), with the nonzero-coefficient check done.

    Raises ArithmeticError if the leading coefficient vanishes at a root, because then
    that ``beta`` is not proved stable.
    """
    moment = second_moment_at_training_input(quantity, optimizer)
    roots = stable_set(rms_exponent(quantity, optimizer))
    if not isinstance(roots, sp.FiniteSet):
        raise ArithmeticError(f"stable exponents of {quantity} under {optimizer} are not a finite set: {roots}")
    for root in roots:
        if sp.simplify(leading_coefficient(moment, root)) == 0:
            raise ArithmeticError(f"leading coefficient of {quantity} under {optimizer} vanishes at beta = {root}")
    return frozenset(roots)


def _check_names(quantity: str, optimizer: str) -> None:
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; expected one of {QUANTITIES}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")

