"""Claims about exponents of ``r``, stable ``beta``, crossover ranks, sign descent and equivalences."""

from __future__ import annotations

import sympy as sp

from proofs import asymptotics, equivalences, moments, sgd, sign_descent
from proofs.registry import ClaimRegistry
from proofs.symbols import alpha, beta, c, d, epsilon, eta, gamma, mu4, r, sigma2
from proofs.trajectory import sgd_trajectory, symbolic_batch
from proofs.vectors import Coordinate, CoordinateSum, Vector, inner

x, w, x0, v0, s0 = (Vector(name) for name in ("x", "w", "x0", "v0", "s0"))
kappa4 = mu4 - 3 * sigma2**2
half = sp.Rational(1, 2)


def _sorted_power_terms(expr):
    """Power terms of ``r`` as ``[(exponent, coefficient)]``, largest exponent first."""
    terms = asymptotics.power_terms(asymptotics.substitute_scaling(expr))
    return sorted(terms.items(), key=lambda item: -float(item[0].subs(beta, 0)))


def register(registry: ClaimRegistry) -> None:
    """Add the asymptotic, sign-descent and equivalence claims to ``registry``."""
    one_step = sgd_trajectory([symbolic_batch(1)])[1]

    @registry.claim(
        "sgd-output-power-terms",
        "At a training input, with gamma = alpha r^-beta, the one-step E|f_1(x0)|^2 is "
        "C2 r^(2-4beta) + C1 r^(1-4beta) with C2 = alpha^4 eta^2 sigma2^2 |v0|^2 |x0|^4 > 0, "
        "so it is Theta(1) if and only if beta = 1/2.",
    )
    def _():
        derived = _sorted_power_terms(sgd.output_second_moment(one_step, x0))
        scale = alpha**4 * eta**2 * inner(v0, v0)
        expected = [
            (2 - 4 * beta, scale * sigma2**2 * inner(x0, x0) ** 2),
            (1 - 4 * beta, scale * (2 * sigma2**2 * inner(x0, x0) ** 2 + kappa4 * CoordinateSum(x0, x0, x0, x0))),
        ]
        return derived, expected

    @registry.claim(
        "sgd-input-gradient-power-terms",
        "With upstream w = v0, the one-step E|g_1|^2 is C2 r^(2-4beta) + C1 r^(1-4beta) with "
        "C2 = alpha^4 eta^2 sigma2^2 |v0|^4 |x0|^2 > 0 and C1 = alpha^4 eta^2 |v0|^4 |x0|^2 (sigma2^2 (d-2) + mu4).",
    )
    def _():
        derived = _sorted_power_terms(sgd.input_gradient_second_moment(one_step, v0))
        scale = alpha**4 * eta**2 * inner(v0, v0) ** 2 * inner(x0, x0)
        expected = [(2 - 4 * beta, scale * sigma2**2), (1 - 4 * beta, scale * (sigma2**2 * (d - 2) + mu4))]
        return derived, expected

    for optimizer, label, slope in (("sgd", "SGD", 1 - 2 * beta), ("sign_descent", "sign descent", 1 - beta)):

        @registry.claim(
            f"{optimizer.replace('_', '-')}-rms-exponents",
            f"Under {label}, the RMS exponents of (output, input gradient, ||grad_B L|| at init) are "
            f"({slope}, {slope}, 1/2 - beta).",
        )
        def _(optimizer=optimizer, slope=slope):
            derived = tuple(asymptotics.rms_exponent(q, optimizer) for q in asymptotics.QUANTITIES)
            return derived, (slope, slope, half - beta)

    @registry.claim(
        "stable-exponents",
        "The beta with Theta(1) moments (leading coefficient checked nonzero): SGD output and input gradient {1/2}, "
        "sign descent {1}, gradient norm at init {1/2} for both.",
    )
    def _():
        names = [(q, o) for o in asymptotics.OPTIMIZERS for q in asymptotics.QUANTITIES]
        derived = tuple(asymptotics.stable_exponents_for(q, o) for q, o in names)
        expected = ({half}, {half}, {half}, {sp.S.One}, {sp.S.One}, {half})
        return derived, expected

    @registry.claim(
        "crossover-output",
        "The r^2 term of E|f_1(x)|^2 exceeds the r term when r > 1 + |x0|^2|x|^2/(x0.x)^2 + kappa4 sum_j x0_j^2 x_j^2 / "
        "(sigma2^2 (x0.x)^2); for Gaussian entries the last term is 0.",
    )
    def _():
        crossover = asymptotics.crossover_rank(sgd.output_second_moment(one_step, x))
        gaussian = crossover.subs(moments.distribution_substitutions("gaussian"))
        ratio = inner(x0, x0) * inner(x, x) / inner(x0, x) ** 2
        fourth = kappa4 * CoordinateSum(x, x, x0, x0) / (sigma2**2 * inner(x0, x) ** 2)
        return (crossover, gaussian), (1 + ratio + fourth, 1 + ratio)

    @registry.claim(
        "crossover-input-gradient",
        "The r^2 term of E|g_1|^2 exceeds the r term when r > d - 2 + mu4/sigma2^2: d - 1/5 (uniform), d + 1 (Gaussian), "
        "d - 1 (Rademacher).",
    )
    def _():
        crossover = asymptotics.crossover_rank(sgd.input_gradient_second_moment(one_step))
        cases = tuple(crossover.subs(moments.distribution_substitutions(n)) for n in ("uniform", "gaussian", "rademacher"))
        return (crossover,) + cases, (d - 2 + mu4 / sigma2**2, d - sp.Rational(1, 5), d + 1, d - 1)

    @registry.claim(
        "adam-first-step-is-sign-descent",
        "Adam's bias-corrected first update is g / (|g| + epsilon), which tends to sign(g) as epsilon -> 0.",
    )
    def _():
        g = sp.Symbol("g", real=True, nonzero=True)
        return (sign_descent.adam_first_update(), sign_descent.adam_first_update_limit()), (g / (sp.Abs(g) + epsilon), sp.sign(g))

    @registry.claim(
        "sign-of-outer-product",
        "sign(gamma v_i y_k) = sign(v_i) sign(y_k) for gamma > 0 (all 9 sign cases), so B_1 = -eta sign(v0) sign(A_0 x0)^T.",
    )
    def _():
        a, b = sp.symbols("a b", positive=True)
        cases = [(vi, yk) for vi in (a, -a, sp.S.Zero) for yk in (b, -b, sp.S.Zero)]
        derived = [sp.sign(gamma * vi * yk) for vi, yk in cases]
        return derived, [sp.sign(vi) * sp.sign(yk) for vi, yk in cases]

    @registry.claim(
        "gaussian-sign-correlation",
        "For Gaussian a, a.x - c a.x0 with c = (x0.x)/|x0|^2 is uncorrelated with a.x0, hence independent, "
        "and E[sign(a.x0)(a.x)] = sqrt(2/pi) sigma (x0.x)/|x0|.",
    )
    def _():
        derived = (sign_descent.orthogonal_remainder_covariance(), sign_descent.gaussian_sign_correlation(x0, x))
        expected = (sp.S.Zero, sp.sqrt(2 / sp.pi) * sp.sqrt(sigma2) * inner(x0, x) / sp.sqrt(inner(x0, x0)))
        return derived, expected

    @registry.claim(
        "sign-descent-output-moments",
        "After one sign-descent step, E f_1(x) = -eta gamma r sqrt(2/pi) sigma (x0.x)/|x0| sign(v0) and "
        "E|f_1(x)|^2 = eta^2 gamma^2 |sign(v0)|^2 [r sigma2 |x|^2 + r(r-1) (2/pi) sigma2 (x0.x)^2/|x0|^2] (Gaussian A_0).",
    )
    def _():
        m = sp.sqrt(2 / sp.pi) * sp.sqrt(sigma2) * inner(x0, x) / sp.sqrt(inner(x0, x0))
        mean = -eta * gamma * r * m * s0
        second = eta**2 * gamma**2 * inner(s0, s0) * (r * sigma2 * inner(x, x) + r * (r - 1) * m**2)
        return sign_descent.output_moments(), (mean, second)

    @registry.claim(
        "sign-descent-input-gradient-moments",
        "After one sign-descent step, coordinate j of E g_1(w) is -eta gamma (sign(v0).w) r sqrt(2/pi) sigma x0_j/|x0| "
        "and E|g_1(w)|^2 = eta^2 gamma^2 (sign(v0).w)^2 [r d sigma2 + r(r-1) (2/pi) sigma2] (Gaussian A_0).",
    )
    def _():
        j = sp.Symbol("j", integer=True)
        prefactor = -eta * gamma * inner(s0, w)
        mean = prefactor * r * sp.sqrt(2 / sp.pi) * sp.sqrt(sigma2) * Coordinate(x0, j) / sp.sqrt(inner(x0, x0))
        second = prefactor**2 * (r * d * sigma2 + r * (r - 1) * 2 / sp.pi * sigma2)
        return sign_descent.input_gradient_moments(), (mean, second)

    @registry.claim(
        "sgd-gamma-equals-eta-squared",
        "Under SGD, gamma -> c gamma and eta -> c^2 eta give the same output after 1 step; after 2 and 3 steps they "
        "share the leading gamma^2 term and first differ at gamma^4.",
    )
    def _():
        derived, expected = [], []
        for steps in (1, 2, 3):
            scaled_gamma, scaled_eta = equivalences.sgd_scale_versus_learning_rate(steps)
            difference = sp.expand(scaled_gamma - scaled_eta)
            leading = equivalences.leading_gamma_part(scaled_gamma) - equivalences.leading_gamma_part(scaled_eta)
            derived.append((equivalences.lowest_gamma_power(difference), sp.expand(leading)))
            expected.append((None if steps == 1 else 4, sp.S.Zero))
        return derived, expected

    @registry.claim(
        "sign-descent-gamma-equals-lr-B",
        "Under sign descent (Adam, epsilon -> 0), gamma -> c gamma with A's init and learning rate fixed equals "
        "B's learning rate -> c times itself, at every step (induction step on symbolic 2x2 matrices).",
    )
    def _():
        zero_A, zero_B, zero_output = equivalences.sign_descent_induction_step()
        return (zero_A, zero_B, zero_output), (sp.zeros(2, 2), sp.zeros(2, 2), sp.zeros(2, 1))

    @registry.claim(
        "adam-epsilon-breaks-equivalence",
        "With epsilon > 0, Adam's first-step outputs differ by the factor 1 + (1-c) epsilon / (c (gamma |u| + epsilon)), "
        "which tends to 1 as epsilon -> 0.",
    )
    def _():
        u = sp.Symbol("u", real=True, nonzero=True)
        discrepancy = equivalences.adam_epsilon_discrepancy()
        expected = (1 - c) * epsilon / (c * (gamma * sp.Abs(u) + epsilon))
        return (discrepancy, sp.limit(discrepancy, epsilon, 0)), (expected, sp.S.Zero)
