"""Claims about one entry's cumulants and the moments of ``A_0^T A_0``."""

from __future__ import annotations

import sympy as sp

from proofs import moments
from proofs.registry import ClaimRegistry
from proofs.symbols import d, even_moment, mu4, r, sigma2
from proofs.vectors import BasisVector, Coordinate, CoordinateSum, Vector, inner, sum_over_index

p, q, s, t, x = (Vector(name) for name in ("p", "q", "s", "t", "x"))
j = sp.Symbol("j", integer=True)
kappa4 = mu4 - 3 * sigma2**2


def register(registry: ClaimRegistry) -> None:
    """Add the moment-engine claims to ``registry``."""

    @registry.claim("cumulant-4", "The fourth cumulant of one entry is kappa4 = mu4 - 3 sigma2^2.")
    def _():
        return moments.cumulant(4), kappa4

    @registry.claim("cumulant-6", "The sixth cumulant of one symmetric entry is mu6 - 15 mu4 sigma2 + 30 sigma2^3.")
    def _():
        return moments.cumulant(6), even_moment(6) - 15 * mu4 * sigma2 + 30 * sigma2**3

    @registry.claim(
        "gaussian-moments",
        "N(0, sigma2) has (variance, mu4, mu6) = (sigma2, 3 sigma2^2, 15 sigma2^3), integrated from the density.",
    )
    def _():
        derived = tuple(moments.distribution_moment("gaussian", k) for k in (2, 4, 6))
        return derived, (sigma2, 3 * sigma2**2, 15 * sigma2**3)

    @registry.claim(
        "rademacher-moments",
        "+-sqrt(sigma2) with equal probability has (variance, mu4, mu6) = (sigma2, sigma2^2, sigma2^3).",
    )
    def _():
        derived = tuple(moments.distribution_moment("rademacher", k) for k in (2, 4, 6))
        return derived, (sigma2, sigma2**2, sigma2**3)

    @registry.claim(
        "uniform-moments",
        "U(-a, a) with a^2 = 3 sigma2 has (variance, mu4, mu6) = (sigma2, 9 sigma2^2/5, 27 sigma2^3/7).",
    )
    def _():
        derived = tuple(moments.distribution_moment("uniform", k) for k in (2, 4, 6))
        return derived, (sigma2, sp.Rational(9, 5) * sigma2**2, sp.Rational(27, 7) * sigma2**3)

    @registry.claim("gram-mean", "E[S(p, x)] = r sigma2 (p.x), where S(p, x) = p^T A_0^T A_0 x.")
    def _():
        return moments.expectation(moments.gram(p, x)), r * sigma2 * inner(p, x)

    @registry.claim(
        "gram-second-moment",
        "E[S(p, x) S(q, x)] = sigma2^2 [r(r+1)(p.x)(q.x) + r (p.q)|x|^2] + r kappa4 sum_j p_j q_j x_j^2.",
    )
    def _():
        derived = moments.expectation(moments.gram(p, x) * moments.gram(q, x))
        expected = (
            sigma2**2 * (r * (r + 1) * inner(p, x) * inner(q, x) + r * inner(p, q) * inner(x, x))
            + r * kappa4 * CoordinateSum(p, q, x, x)
        )
        return derived, expected

    @registry.claim(
        "gram-product-general",
        "E[S(p, q) S(s, t)] = sigma2^2 [r^2 (p.q)(s.t) + r ((p.s)(q.t) + (p.t)(q.s))] + r kappa4 sum_j p_j q_j s_j t_j.",
    )
    def _():
        derived = moments.expectation(moments.gram(p, q) * moments.gram(s, t))
        expected = (
            sigma2**2 * (r**2 * inner(p, q) * inner(s, t) + r * (inner(p, s) * inner(q, t) + inner(p, t) * inner(q, s)))
            + r * kappa4 * CoordinateSum(p, q, s, t)
        )
        return derived, expected

    @registry.claim(
        "gram-covariance",
        "Cov[S(p, q), S(s, t)] = r sigma2^2 ((p.s)(q.t) + (p.t)(q.s)) + r kappa4 sum_j p_j q_j s_j t_j, "
        "so relative fluctuations of S fall like 1/r.",
    )
    def _():
        expected = r * sigma2**2 * (inner(p, s) * inner(q, t) + inner(p, t) * inner(q, s)) + r * kappa4 * CoordinateSum(p, q, s, t)
        return moments.gram_covariance(p, q, s, t), expected

    @registry.claim(
        "gram-coordinate-second-moment",
        "E[(A_0^T A_0 p)_j^2] = r (sigma2^2 |p|^2 + (mu4 - sigma2^2) p_j^2) + r(r-1) sigma2^2 p_j^2.",
    )
    def _():
        derived = moments.expectation(moments.gram(BasisVector(j), p) ** 2)
        p_j = Coordinate(p, j)
        expected = r * (sigma2**2 * inner(p, p) + (mu4 - sigma2**2) * p_j**2) + r * (r - 1) * sigma2**2 * p_j**2
        return derived, expected

    @registry.claim(
        "gram-vector-inner-product",
        "Summed over the d coordinates: E[(A_0^T A_0 p).(A_0^T A_0 q)] = r (p.q) [sigma2^2 (d + r - 2) + mu4].",
    )
    def _():
        basis = BasisVector(j)
        coordinate_product = moments.expectation(moments.gram(basis, p) * moments.gram(basis, q))
        derived = sum_over_index(coordinate_product, j)
        return derived, r * inner(p, q) * (sigma2**2 * (d + r - 2) + mu4)
