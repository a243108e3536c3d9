"""Claims about SGD: one step on a batch, two exact steps, and ``n`` steps in powers of ``gamma``."""

from __future__ import annotations

import sympy as sp

from proofs import asymptotics, expansion, sgd
from proofs.registry import ClaimRegistry
from proofs.symbols import alpha, beta, d, eta, gamma, mu4, r, sigma2
from proofs.trajectory import as_matrix_terms, sgd_trajectory, symbolic_batch
from proofs.vectors import Coordinate, CoordinateSum, Vector, dot, inner

x, w = Vector("x"), Vector("w")
x0, x1, v0, v1 = (Vector(name) for name in ("x0", "x1", "v0", "v1"))
kappa4 = mu4 - 3 * sigma2**2
STEPS_CHECKED = 5


def _pair_kernel(xa, xb, va, vb):
    """Return the stated one-step summand eta^2 gamma^4 (v_a.v_b) E[S(x_a, x) S(x_b, x)]."""
    moment = (
        sigma2**2 * (r * (r + 1) * inner(xa, x) * inner(xb, x) + r * inner(xa, xb) * inner(x, x))
        + r * kappa4 * CoordinateSum(xa, xb, x, x)
    )
    return eta**2 * gamma**4 * inner(va, vb) * moment


def _matrix(outer):
    return as_matrix_terms(outer)


def register(registry: ClaimRegistry) -> None:
    """Add the SGD claims to ``registry``."""
    batch = symbolic_batch(2)
    one_step = sgd_trajectory([batch])[1]
    two_steps = sgd_trajectory([[batch[0]], [batch[1]]])[2]
    u = x0 * inner(v0, w) + x1 * inner(v1, w)

    @registry.claim(
        "one-step-state",
        "One SGD step from B = 0 on a batch gives B_1 = -eta gamma sum_n v_n x_n^T A_0^T and A_1 = A_0.",
    )
    def _():
        derived = (_matrix(one_step.N), _matrix(one_step.M))
        expected = (_matrix({(v0, x0): -eta * gamma, (v1, x1): -eta * gamma}), sp.S.Zero)
        return derived, expected

    @registry.claim("one-step-output-mean", "E f_1(x) = -eta gamma^2 r sigma2 sum_n v_n (x_n.x).")
    def _():
        expected = -eta * gamma**2 * r * sigma2 * (v0 * inner(x0, x) + v1 * inner(x1, x))
        return sgd.output_mean(one_step), expected

    @registry.claim(
        "one-step-output-second-moment",
        "E|f_1(x)|^2 = eta^2 gamma^4 sum_{n,n'} (v_n.v_n') E[S(x_n, x) S(x_n', x)], with the gram-second-moment formula.",
    )
    def _():
        pairs = [(a, b) for a in batch for b in batch]
        expected = sum(_pair_kernel(a.x, b.x, a.v, b.v) for a, b in pairs)
        return sgd.output_second_moment(one_step), expected

    @registry.claim(
        "one-step-input-gradient-mean",
        "Coordinate j of E[gamma A_1^T B_1^T w] is -eta gamma^2 r sigma2 u_j, with u = sum_n x_n (v_n.w).",
    )
    def _():
        expected = -eta * gamma**2 * r * sigma2 * (Coordinate(x0, sp.Symbol("j", integer=True)) * inner(v0, w))
        expected += -eta * gamma**2 * r * sigma2 * (Coordinate(x1, sp.Symbol("j", integer=True)) * inner(v1, w))
        return sgd.input_gradient_mean_coordinate(one_step), expected

    @registry.claim(
        "one-step-input-gradient-second-moment",
        "E|gamma A_1^T B_1^T w|^2 = eta^2 gamma^4 r |u|^2 [sigma2^2 (d + r - 2) + mu4].",
    )
    def _():
        expected = eta**2 * gamma**4 * r * dot(u, u) * (sigma2**2 * (d + r - 2) + mu4)
        return sgd.input_gradient_second_moment(one_step), expected

    @registry.claim(
        "grad-B-norm-at-init",
        "At B = 0, E||grad_B L||_F^2 = gamma^2 r sigma2 sum_{n,n'} (v_n.v_n')(x_n.x_n'), for every optimizer.",
    )
    def _():
        expected = gamma**2 * r * sigma2 * sum(inner(a.v, b.v) * inner(a.x, b.x) for a in batch for b in batch)
        return sgd.grad_B_norm_squared_at_init(batch), expected

    @registry.claim(
        "two-step-state",
        "Two single-example steps give B_2 = -eta gamma (v0 x0^T + v1 x1^T) A_0^T exactly and "
        "A_2 = A_0 (I + eta^2 gamma^2 (v0.v1) x0 x1^T).",
    )
    def _():
        derived = (_matrix(two_steps.N), _matrix(two_steps.M))
        expected_N = _matrix({(v0, x0): -eta * gamma, (v1, x1): -eta * gamma})
        expected_M = _matrix({(x0, x1): eta**2 * gamma**2 * inner(v0, v1)})
        return derived, (expected_N, expected_M)

    @registry.claim(
        "two-step-output-mean",
        "E f_2(x) = -eta gamma^2 r sigma2 [v0 (x0.x) + v1 (x1.x) + eta^2 gamma^2 (v0.v1)(x1.x)(v0 |x0|^2 + v1 (x0.x1))].",
    )
    def _():
        correction = eta**2 * gamma**2 * inner(v0, v1) * inner(x1, x) * (v0 * inner(x0, x0) + v1 * inner(x0, x1))
        expected = -eta * gamma**2 * r * sigma2 * (v0 * inner(x0, x) + v1 * inner(x1, x) + correction)
        return sgd.output_mean(two_steps), expected

    @registry.claim(
        "two-step-output-exponent",
        "After two steps, with gamma = alpha r^-beta, E|f_2(x)|^2 has leading power max(2-4beta, 2-6beta, 2-8beta) of r, "
        "its coefficient at beta = 1/2 is alpha^4 eta^2 sigma2^2 |v0 (x0.x) + v1 (x1.x)|^2, and it is Theta(1) only at beta = 1/2.",
    )
    def _():
        moment = sgd.output_second_moment(two_steps)
        exponent = asymptotics.leading_exponent(moment)
        coefficient = asymptotics.leading_coefficient(moment, sp.Rational(1, 2))
        direction = v0 * inner(x0, x) + v1 * inner(x1, x)
        expected = (
            sp.Max(2 - 4 * beta, 2 - 6 * beta, 2 - 8 * beta),
            alpha**4 * eta**2 * sigma2**2 * dot(direction, direction),
            {sp.Rational(1, 2)},
        )
        return (exponent, coefficient, set(asymptotics.stable_set(exponent))), expected

    @registry.claim(
        "two-step-input-gradient-exponent",
        "After two steps, E|gamma A_2^T B_2^T w|^2 has leading power max(2-4beta, 2-6beta, 2-8beta) of r, "
        "coefficient alpha^4 eta^2 sigma2^2 |u|^2 at beta = 1/2, and is Theta(1) only at beta = 1/2.",
    )
    def _():
        moment = sgd.input_gradient_second_moment(two_steps)
        exponent = asymptotics.leading_exponent(moment)
        coefficient = asymptotics.leading_coefficient(moment, sp.Rational(1, 2))
        expected = (
            sp.Max(2 - 4 * beta, 2 - 6 * beta, 2 - 8 * beta),
            alpha**4 * eta**2 * sigma2**2 * dot(u, u),
            {sp.Rational(1, 2)},
        )
        return (exponent, coefficient, set(asymptotics.stable_set(exponent))), expected

    @registry.claim(
        "n-step-leading-B",
        f"For n = 1..{STEPS_CHECKED} single-example steps, B_n = N_n A_0^T where the gamma^1 part of N_n is "
        "-eta sum_(k<n) v_k x_k^T and its gamma^2 part is 0.",
    )
    def _():
        derived, expected = [], []
        for n in range(1, STEPS_CHECKED + 1):
            state = expansion.steps_state(n)
            derived.append((_matrix(expansion.gamma_coefficient(state.N, 1)), _matrix(expansion.gamma_coefficient(state.N, 2))))
            expected.append((_matrix(expansion.leading_B_term(n)), sp.S.Zero))
        return derived, expected

    @registry.claim(
        "n-step-remainder-orders",
        f"For n = 1..{STEPS_CHECKED}, the remainder of B_n beyond its gamma^1 part starts at gamma^3 (zero for n <= 2) "
        "and M_n - I, where A_n = A_0 M_n, starts at gamma^2 (zero for n = 1): "
        "B_n = (-eta gamma sum v_k x_k^T + O(gamma^3)) A_0^T and A_n = A_0 (I + O(gamma^2)).",
    )
    def _():
        derived = [expansion.remainder_orders(n) for n in range(1, STEPS_CHECKED + 1)]
        expected = [(None, None), (None, 2)] + [(3, 2)] * (STEPS_CHECKED - 2)
        return derived, expected

    @registry.claim(
        "n-step-induction",
        "For all n, by induction: if N_t = -eta gamma L + gamma^3 P and M_t = I + gamma^2 Q, one step gives "
        "P' = P - eta v x^T Q^T and Q' = Q + eta^2 L^T v x^T - eta gamma^2 P^T v x^T, both even in gamma.",
    )
    def _():
        P_next, Q_next = expansion.induction_step()
        L, LT, P, PT, Q, QT = sp.symbols("L L^T P P^T Q Q^T", commutative=False)
        v, xT = sp.symbols("v x^T", commutative=False)
        expected = (P - eta * v * xT * QT, Q + eta**2 * LT * v * xT - eta * gamma**2 * PT * v * xT, True, True)
        derived = (P_next, Q_next, expansion.is_even_in_gamma(P_next), expansion.is_even_in_gamma(Q_next))
        return derived, expected

    @registry.claim(
        "n-step-output-leading",
        "After 3 steps, f_3(x) = -eta gamma^2 sum_(k<3) v_k S(x_k, x) + O(gamma^4), the remainder starting exactly at gamma^4.",
    )
    def _():
        from proofs.equivalences import leading_gamma_part, lowest_gamma_power, sgd_output
        from proofs.moments import gram

        output = sgd_output(3, gamma, eta)
        leading = leading_gamma_part(output)
        expected_leading = -eta * gamma**2 * sum(e.v * gram(e.x, x) for e in symbolic_batch(3))
        return (leading, lowest_gamma_power(output - leading)), (expected_leading, 4)

    @registry.claim(
        "n-step-constants-grow",
        "Repeating one example n times: N_n = (-eta n gamma - eta^3 C(n,3) |v|^2 |x|^2 gamma^3 + ...) v x^T and "
        "M_n = I + (eta^2 C(n,2) |v|^2 gamma^2 + ...) x x^T (checked n = 1..6, summed in closed form for symbolic n), "
        "so the remainder relative to the leading term grows like n^2.",
    )
    def _():
        n = sp.Symbol("n", integer=True, positive=True)
        derived = [expansion.repeated_example_coefficients(k) for k in range(1, 7)]
        expected = [expansion.repeated_example_formulas(sp.Integer(k)) for k in range(1, 7)]
        _, n3, m2 = expansion.repeated_example_formulas(n)
        derived.append(expansion.summed_recursions(n))
        expected.append((sp.expand_func(m2), sp.expand_func(n3)))
        return derived, expected
