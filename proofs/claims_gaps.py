"""Claims that locate each shortcut of the published proof and measure what it changes."""

from __future__ import annotations

import sympy as sp

from proofs import asymptotics, gaps
from proofs.registry import ClaimRegistry
from proofs.symbols import beta, d, mu4, r, sigma2
from proofs.vectors import CoordinateSum, Vector, inner

p, x = Vector("p"), Vector("x")
kappa4 = mu4 - 3 * sigma2**2
half = sp.Rational(1, 2)


def register(registry: ClaimRegistry) -> None:
    """Add the proof-gap claims to ``registry``."""

    @registry.claim(
        "gap-mean-inside-power-output",
        "Replacing A_0^T A_0 by its mean r sigma2 I inside E[S(p,x)^2] misses "
        "r [sigma2^2 ((p.x)^2 + |p|^2|x|^2) + kappa4 sum_j p_j^2 x_j^2], the whole moment when (p.x) = 0.",
    )
    def _():
        exact, shortcut = gaps.mean_inside_power()["output"]
        missing = r * (sigma2**2 * (inner(p, x) ** 2 + inner(p, p) * inner(x, x)) + kappa4 * CoordinateSum(p, p, x, x))
        return exact - shortcut, missing

    @registry.claim(
        "gap-mean-inside-power-input-gradient",
        "The same substitution inside E|A_0^T A_0 p|^2 misses r |p|^2 (sigma2^2 (d - 2) + mu4), "
        "which exceeds the kept r^2 sigma2^2 |p|^2 while r < d - 2 + mu4/sigma2^2.",
    )
    def _():
        exact, shortcut = gaps.mean_inside_power()["input_gradient"]
        return exact - shortcut, r * inner(p, p) * (sigma2**2 * (d - 2) + mu4)

    @registry.claim(
        "gap-power-of-sum",
        "E[S(p,x)^m] has degree m in r, but writing (sum_k h_k)^m as sum_k h_k^m leaves degree 1 (m = 2, 3, 4), "
        "which would move the output exponent from 2 - 4 beta to 1 - 4 beta.",
    )
    def _():
        derived = []
        for m in (2, 3, 4):
            exact, shortcut = gaps.power_of_sum(m)
            derived.append((sp.degree(exact, r), sp.degree(shortcut, r)))
        return derived, [(2, 1), (3, 1), (4, 1)]

    @registry.claim(
        "gap-dependent-output-gradient",
        "Under squared loss v1 depends on A_0. Treating it as fixed at its mean changes E f_2(x) by terms of leading "
        "power max(1 - 4beta, 1 - 6beta, 2 - 8beta) of r, which is -1 at beta = 1/2, where E f_2 is Theta(1): "
        "a 1/r relative error that leaves the exponent unchanged.",
    )
    def _():
        exact, shortcut = gaps.dependent_output_gradient()
        difference_exponent = asymptotics.leading_exponent(exact - shortcut)
        mean_exponent = asymptotics.leading_exponent(exact)
        derived = (difference_exponent, difference_exponent.subs(beta, half), mean_exponent.subs(beta, half))
        expected = (sp.Max(1 - 4 * beta, 1 - 6 * beta, 2 - 8 * beta), sp.Integer(-1), sp.Integer(0))
        return derived, expected

    @registry.claim(
        "gap-odd-moments",
        "E[(o.f_1(x))^3] is odd in x and nonzero, so odd moments average to 0 over inputs symmetric about 0 at every rank; "
        "only even (or absolute) moments can be Theta(1).",
    )
    def _():
        third, at_negated = gaps.odd_moment_at_negated_input()
        return (sp.expand(third + at_negated), third == 0), (sp.S.Zero, False)

    @registry.claim(
        "gap-nonzero-leading-coefficient",
        "If the probe x is orthogonal to every training input, E|f_1(x)|^2 has leading power 1 - 4beta instead of "
        "2 - 4beta, and is Theta(1) only at beta = 1/4: the 'only if' needs sum_n v_n (x_n.x) != 0.",
    )
    def _():
        general, orthogonal = gaps.orthogonal_probe_output_moment()
        derived_exponents = (asymptotics.leading_exponent(general), asymptotics.leading_exponent(orthogonal))
        derived_sets = tuple(set(asymptotics.stable_set(e)) for e in derived_exponents)
        expected = ((2 - 4 * beta, 1 - 4 * beta), ({half}, {sp.Rational(1, 4)}))
        return (derived_exponents, derived_sets), expected
