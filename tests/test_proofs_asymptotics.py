"""Properties of the rank exponents, stable scaling exponents, crossover ranks and equivalences."""

import functools
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs import asymptotics, equivalences, sgd
from proofs.numeric import OneStepSGD, init_moments, stable_exponents, theory_slope
from proofs.symbols import beta, c, eta, gamma
from proofs.trajectory import sgd_trajectory, symbolic_batch

rational_betas = st.fractions(min_value=-2, max_value=3, max_denominator=12)
EXPECTED_SLOPES = {
    ("output", "sgd"): lambda b: 1 - 2 * b,
    ("input_gradient", "sgd"): lambda b: 1 - 2 * b,
    ("grad_norm_init", "sgd"): lambda b: Fraction(1, 2) - b,
    ("output", "sign_descent"): lambda b: 1 - b,
    ("input_gradient", "sign_descent"): lambda b: 1 - b,
    ("grad_norm_init", "sign_descent"): lambda b: Fraction(1, 2) - b,
}


@given(rational_betas)
@settings(max_examples=40)
def test_theory_slope_matches_stated_exponents(beta_value):
    for (quantity, optimizer), slope in EXPECTED_SLOPES.items():
        exact = asymptotics.rms_exponent(quantity, optimizer).subs(beta, sp.Rational(beta_value))
        assert exact == sp.Rational(slope(beta_value)), (quantity, optimizer)
        assert theory_slope(quantity, optimizer, beta_value) == pytest.approx(float(slope(beta_value)))


@given(rational_betas)
@settings(max_examples=40)
def test_sgd_output_is_stable_only_at_one_half(beta_value):
    moment = asymptotics.second_moment_at_training_input("output", "sgd")
    exponent = asymptotics.leading_exponent(moment).subs(beta, sp.Rational(beta_value))
    coefficient = asymptotics.leading_coefficient(moment, sp.Rational(beta_value))
    assert coefficient != 0
    assert (exponent == 0) == (beta_value == Fraction(1, 2))


@given(rational_betas)
@settings(max_examples=40)
def test_sign_descent_output_is_stable_only_at_one(beta_value):
    moment = asymptotics.second_moment_at_training_input("output", "sign_descent")
    exponent = asymptotics.leading_exponent(moment).subs(beta, sp.Rational(beta_value))
    assert asymptotics.leading_coefficient(moment, sp.Rational(beta_value)) != 0
    assert (exponent == 0) == (beta_value == 1)


def test_stable_exponents_are_exactly_one_half_and_one():
    assert stable_exponents("output", "sgd") == {sp.Rational(1, 2)}
    assert stable_exponents("input_gradient", "sgd") == {sp.Rational(1, 2)}
    assert stable_exponents("output", "sign_descent") == {sp.Integer(1)}
    assert stable_exponents("input_gradient", "sign_descent") == {sp.Integer(1)}
    assert stable_exponents("grad_norm_init", "sgd") == {sp.Rational(1, 2)}
    assert stable_exponents("grad_norm_init", "sign_descent") == {sp.Rational(1, 2)}


@functools.lru_cache(maxsize=None)
def two_step_output_exponent():
    state = sgd_trajectory([[e] for e in symbolic_batch(2)])[2]
    return asymptotics.leading_exponent(sgd.output_second_moment(state))


@given(st.fractions(min_value=Fraction(1, 12), max_value=3, max_denominator=12))
@settings(max_examples=20)
def test_two_step_output_keeps_exponent_for_positive_beta(beta_value):
    exponent = two_step_output_exponent()
    assert exponent.subs(beta, sp.Rational(beta_value)) == 2 - 4 * sp.Rational(beta_value)


@pytest.mark.parametrize("beta_value", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("quantity", ["output", "input_gradient"])
def test_exact_moments_have_theory_slope_at_large_rank(quantity, beta_value):
    rng = np.random.default_rng(11)
    X, V = rng.normal(size=(4, 16)), rng.normal(size=(4, 3))
    sigma2, mu4 = init_moments("uniform", 16)
    model = OneStepSGD(X, V, sigma2=sigma2, mu4=mu4)
    ranks = np.array([2.0**12, 2.0**16])
    method = model.output_second_moment if quantity == "output" else model.input_gradient_second_moment
    rms = [np.sqrt(method(int(rank), 2.0 * rank**-beta_value, 1e-2).mean()) for rank in ranks]
    slope = np.diff(np.log(rms))[0] / np.diff(np.log(ranks))[0]
    assert slope == pytest.approx(theory_slope(quantity, "sgd", beta_value), abs=0.01)


def test_input_gradient_crossover_rank_splits_moment_in_half():
    # At r* = d - 2 + mu4/sigma2^2 the coherent part |E g|^2 is exactly half of E|g|^2.
    rng = np.random.default_rng(0)
    X, V = rng.normal(size=(3, 32)), rng.normal(size=(3, 2))
    sigma2, mu4 = init_moments("uniform", 32)
    model = OneStepSGD(X, V, sigma2=sigma2, mu4=mu4)
    crossover = 32 - 2 + mu4 / sigma2**2
    coherent = (model.input_gradient_mean(crossover, 0.5, 0.1) ** 2).sum(axis=1)
    np.testing.assert_allclose(model.input_gradient_second_moment(crossover, 0.5, 0.1), 2 * coherent, rtol=1e-12)


@given(st.floats(min_value=0.1, max_value=10.0), st.integers(1, 64))
@settings(max_examples=25)
def test_sgd_gamma_scaling_matches_eta_scaling(factor, rank):
    rng = np.random.default_rng(rank)
    X, V = rng.normal(size=(3, 5)), rng.normal(size=(3, 2))
    model = OneStepSGD(X, V, sigma2=0.2, mu4=0.1)
    scaled_gamma = model.output_second_moment(rank, factor * 0.7, 0.3)
    scaled_eta = model.output_second_moment(rank, 0.7, factor**2 * 0.3)
    np.testing.assert_allclose(scaled_gamma, scaled_eta, rtol=1e-10)


def test_sgd_equivalence_holds_symbolically_to_leading_order():
    for steps in (1, 2, 3):
        scaled_gamma, scaled_eta = equivalences.sgd_scale_versus_learning_rate(steps)
        leading_difference = equivalences.leading_gamma_part(scaled_gamma) - equivalences.leading_gamma_part(scaled_eta)
        assert sp.expand(leading_difference) == 0
    two_gamma, two_eta = equivalences.sgd_scale_versus_learning_rate(2)
    assert equivalences.lowest_gamma_power(two_gamma - two_eta) == 4
    assert sp.expand(two_gamma - two_eta).coeff(gamma, 4).has(c, eta)


def test_sign_descent_equivalence_holds_symbolically():
    for difference in equivalences.sign_descent_induction_step():
        assert difference.is_zero_matrix


def test_theory_slope_rejects_unknown_names_and_types():
    with pytest.raises(ValueError, match="unknown quantity 'loss'"):
        theory_slope("loss", "sgd", 0.5)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        theory_slope("output", "adamw", 0.5)
    with pytest.raises(TypeError, match="beta must be a real number"):
        theory_slope("output", "sgd", "1/2")


def test_power_terms_rejects_r_inside_a_root():
    with pytest.raises(ValueError, match="not a power of r"):
        asymptotics.power_terms(sp.sqrt(asymptotics.r + 1))
