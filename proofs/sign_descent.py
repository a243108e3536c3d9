"""Adam's first step is sign descent, and its moments scale as ``gamma * r``.

At the first step Adam's bias-corrected moments are ``m_hat = g`` and ``v_hat = g**2``, so
the update is ``-eta g / (|g| + epsilon)``, which tends to ``-eta sign(g)`` as
``epsilon -> 0`` (proved by :func:`adam_first_update`). With ``B_0 = 0`` the gradient of
``A`` is 0, so ``A_1 = A_0``, and for one example ``(x0, v0)``

    grad_B L = gamma v0 (A_0 x0)^T,     B_1 = -eta sign(v0) sign(A_0 x0)^T,
    f_1(x) = gamma B_1 A_0 x = -eta gamma sign(v0) sum_k sign(a_k.x0) (a_k.x),
    g_1(w) = gamma A_1^T B_1^T w = -eta gamma (sign(v0).w) sum_k sign(a_k.x0) a_k.

``B_1`` no longer carries ``gamma``, so the adapter's output carries ``gamma`` once
instead of twice (SGD), and both moments grow like ``gamma * r``, not ``gamma**2 * r``.

The row sums here have terms ``h_k = sign(a_k.x0) (a_k.y)``. Their one-row moments are
``E[h] = m(x0, y)`` and ``E[h h'] = sigma2 (y.y')`` (because ``sign**2 = 1`` almost surely
for a continuous distribution). For Gaussian rows ``m(p, y) = sqrt(2/pi) sigma (p.y)/|p|``
(:func:`gaussian_sign_correlation`). For other continuous symmetric distributions
``m(p, p) = E|a.p|`` is still positive, so the exponents are the same, but ``m`` has no
closed form here.
"""

from __future__ import annotations

import functools

import sympy as sp

from proofs.moments import iid_row_sum_moment, linear_form_moment
from proofs.symbols import epsilon, eta, gamma
from proofs.vectors import BasisVector, Vector, inner, sum_over_index

X0 = Vector("x0")
"""Training input of the first step."""

SIGN_V0 = Vector("s0")
"""The output vector ``sign(v0)``, the entrywise sign of the first output gradient."""

PROBE = Vector("x")
UPSTREAM = Vector("w")
INDEX = sp.Symbol("j", integer=True)


def adam_first_update() -> sp.Expr:
    """Return Adam's first update direction ``m_hat / (sqrt(v_hat) + epsilon)`` for one gradient entry ``g``.

    Starts from ``m_0 = v_0 = 0`` with decay rates ``beta1``, ``beta2`` and bias correction.
    The result is ``g / (|g| + epsilon)``.
    """
    g = sp.Symbol("g", real=True, nonzero=True)
    beta1, beta2 = sp.symbols("beta1 beta2", positive=True)
    first = (1 - beta1) * g
    second = (1 - beta2) * g**2
    return sp.simplify((first / (1 - beta1)) / (sp.sqrt(second / (1 - beta2)) + epsilon))


def adam_first_update_limit() -> sp.Expr:
    """Return the ``epsilon -> 0`` limit of Adam's first update, which is ``sign(g)``."""
    update = adam_first_update()
    (g,) = [s for s in update.free_symbols if s.name == "g"]
    return sp.limit(update, epsilon, 0).rewrite(sp.sign).subs(g / sp.Abs(g), sp.sign(g))


def orthogonal_remainder_covariance(p: Vector = X0, y: Vector = PROBE) -> sp.Expr:
    """Return ``E[(a.(y - c p)) (a.p)]`` with ``c = (p.y)/(p.p)``, which is 0.

    For Gaussian ``a`` the two linear forms are jointly Gaussian, so zero covariance means
    independence: ``a.y = c (a.p) + z`` with ``z`` independent of ``a.p``. That gives
    ``E[sign(a.p)(a.y)] = c E|a.p|``.
    """
    coefficient = inner(p, y) / inner(p, p)
    return sp.simplify(linear_form_moment([y - coefficient * p, p]))


@functools.lru_cache(maxsize=None)
def gaussian_abs_mean() -> sp.Expr:
    """Return ``E|z|`` for ``z ~ N(0, s)``, integrated: ``sqrt(2 s / pi)``, as a function of ``s``."""
    z = sp.Symbol("z", real=True)
    s = sp.Symbol("s", positive=True)
    density = sp.exp(-(z**2) / (2 * s)) / sp.sqrt(2 * sp.pi * s)
    return sp.Lambda(s, sp.simplify(sp.integrate(sp.Abs(z) * density, (z, -sp.oo, sp.oo))))


def gaussian_sign_correlation(p: Vector, y: Vector) -> sp.Expr:
    """Return ``E[sign(a.p)(a.y)]`` for ``a ~ N(0, sigma2 I)``: ``sqrt(2/pi) sigma (p.y)/|p|``.

    ``y`` may be a basis vector ``e_j``, which gives the coordinate ``E[sign(a.p) a_j]``.
    """
    variance_of_ap = linear_form_moment([p, p])
    return inner(p, y) / inner(p, p) * gaussian_abs_mean()(variance_of_ap)


def gaussian_sign_row_moment(p: Vector):
    """Return the one-row moment function for terms ``sign(a.p)(a.y)`` with Gaussian ``a``."""

    def row_moment(block: list[Vector]) -> sp.Expr:
        if len(block) == 1:
            return gaussian_sign_correlation(p, block[0])
        if len(block) == 2:
            return linear_form_moment(block)
        raise NotImplementedError(f"sign row moments of order {len(block)} are not derived")

    return row_moment


@functools.lru_cache(maxsize=None)
def output_moments(probe: Vector = PROBE) -> tuple[sp.Expr, sp.Expr]:
    """Return ``(E f_1(x), E |f_1(x)|**2)`` after one sign-descent step on ``(x0, v0)``, Gaussian ``A_0``.

    ``E f_1(x) = -eta gamma r m(x0, x) s0`` and
    ``E |f_1(x)|**2 = eta**2 gamma**2 (s0.s0) [r sigma2 |x|**2 + r (r-1) m(x0, x)**2]``.
    """
    row_moment = gaussian_sign_row_moment(X0)
    mean_sum = iid_row_sum_moment([probe], row_moment)
    square_sum = iid_row_sum_moment([probe, probe], row_moment)
    mean = -eta * gamma * mean_sum * SIGN_V0
    second = eta**2 * gamma**2 * inner(SIGN_V0, SIGN_V0) * square_sum
    return sp.expand(mean), sp.expand(second)


@functools.lru_cache(maxsize=None)
def input_gradient_moments(upstream: Vector = UPSTREAM) -> tuple[sp.Expr, sp.Expr]:
    """Return (coordinate ``j`` of ``E g_1(w)``, ``E |g_1(w)|**2``) after one sign-descent step, Gaussian ``A_0``.

    ``E |g_1(w)|**2 = eta**2 gamma**2 (s0.w)**2 [r d sigma2 + r (r-1) (2/pi) sigma2]``.
    """
    basis = BasisVector(INDEX)
    row_moment = gaussian_sign_row_moment(X0)
    prefactor = -eta * gamma * inner(SIGN_V0, upstream)
    mean_j = prefactor * iid_row_sum_moment([basis], row_moment)
    square_j = prefactor**2 * iid_row_sum_moment([basis, basis], row_moment)
    return sp.expand(mean_j), sum_over_index(square_j, INDEX)


def at_training_input(expr: sp.Expr) -> sp.Expr:
    """Evaluate a sign-descent moment at the training input ``x = x0`` and upstream ``w = v0``.

    Substitutes ``(x0.x) -> (x0.x0)``, ``(x.x) -> (x0.x0)`` and
    ``(s0.w) -> (s0.v0) = sum_i |v0_i|``, written as the symbol ``l1_v0``.
    """
    l1 = sp.Symbol("l1_v0", positive=True)
    replacements = {
        inner(X0, PROBE): inner(X0, X0),
        inner(PROBE, PROBE): inner(X0, X0),
        inner(SIGN_V0, UPSTREAM): l1,
    }
    return sp.expand(expr.xreplace(replacements))

