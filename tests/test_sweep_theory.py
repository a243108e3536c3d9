"""Small sweeps against the theory: slopes, verdicts and the exact finite-rank moments."""

import math

import numpy as np
import pytest
from scipy import stats

from proofs import numeric
from stability.analysis import analyse
from stability.config import SweepConfig
from stability.grid import parse_rank_grid
from stability.scaling import parse_scaling_rules
from stability.sweep import run_sweep
from stability.theory import compute_theory

# Family-wise error rate for the per-rank agreement checks below.
FAMILY_ALPHA = 0.01


def run(**overrides):
    values = dict(
        ranks=parse_rank_grid("1..256"),
        scalings=parse_scaling_rules("constant,rslora,lora"),
        width=256,
        batch=2,
        steps=2,
        coord_steps=1,
        seeds=8,
        device="cpu",
    )
    values.update(overrides)
    config = SweepConfig(**values)
    result = run_sweep(config, show_progress=False)
    theory = compute_theory(config, result.probes)
    return config, result, theory, analyse(result, theory)


@pytest.fixture(scope="module")
def sgd_sweep():
    return run()


@pytest.fixture(scope="module")
def many_seeds_sweep():
    # Small ranks have heavy-tailed moments (products of four Gaussian-like factors), so
    # the per-rank t-tests need many seeds to be valid there.
    return run(ranks=parse_rank_grid("1..64"), width=64, seeds=64)


def layer_average_fits(analysis, metric):
    return {fit.scaling: fit for fit in analysis.fits if fit.metric == metric and fit.layer == "all"}


@pytest.mark.parametrize("metric", ["activation", "input_gradient"])
def test_sgd_slopes_follow_one_minus_two_beta(sgd_sweep, metric):
    _, _, _, analysis = sgd_sweep
    fits = layer_average_fits(analysis, metric)
    for name, beta in (("constant", 0.0), ("rslora", 0.5), ("lora", 1.0)):
        fit = fits[name]
        assert fit.theory_slope == pytest.approx(1 - 2 * beta)
        low, high = fit.slope_ci
        assert low - 0.05 <= 1 - 2 * beta <= high + 0.05, (name, fit.slope, fit.slope_ci)
        assert fit.agrees_with_theory


def test_sgd_verdicts(sgd_sweep):
    _, _, _, analysis = sgd_sweep
    fits = layer_average_fits(analysis, "activation")
    assert fits["constant"].verdict == "explodes"
    assert fits["rslora"].verdict == "rank-stable"
    assert fits["lora"].verdict == "collapses"
    assert analysis.stable_rules == ["rslora"]


def test_gradient_norm_at_init_slope(sgd_sweep):
    _, _, _, analysis = sgd_sweep
    fits = layer_average_fits(analysis, "grad_norm_B")
    for name, beta in (("constant", 0.0), ("rslora", 0.5), ("lora", 1.0)):
        low, high = fits[name].slope_ci
        assert low - 0.05 <= 0.5 - beta <= high + 0.05


def test_exact_moments_agree_at_every_rank(many_seeds_sweep):
    """Every per-rank z-score passes a Bonferroni-corrected two-sided t-test."""
    config, _, _, analysis = many_seeds_sweep
    comparisons = [c for c in analysis.comparisons if c.z is not None]
    assert len(comparisons) == 4 * len(config.ranks) * 3 * config.depth
    bound = stats.t.ppf(1 - FAMILY_ALPHA / (2 * len(comparisons)), config.seeds - 1)
    worst = max(comparisons, key=lambda c: abs(c.z))
    assert abs(worst.z) <= bound, worst


def test_dropped_fluctuation_term_is_detected(many_seeds_sweep):
    """The published proof's shortcut, E[A^T A] = r sigma2 I inside the square, fails below r ~ d."""
    config, result, theory, _ = many_seeds_sweep
    measured = result.coordinate["input_gradient_rms"][:, :, :, 1, :] ** 2  # (R, J, S, L)
    # With A^T A replaced by its mean, |g|^2 is the square of the coherent prediction.
    shortcut = theory.predicted["input_gradient"] ** 2
    differences = measured - shortcut
    z = differences.mean(axis=2) / (differences.std(axis=2, ddof=1) / math.sqrt(config.seeds))
    # Up to d/8 the noise term is at least 8 times the coherent one.
    small_ranks = [i for i, r in enumerate(config.ranks) if r <= config.width // 8]
    bound = stats.t.ppf(1 - FAMILY_ALPHA / 2, config.seeds - 1)
    assert np.all(z[small_ranks] > bound)


def test_input_gradient_rms_crossover_is_pre_asymptotic(sgd_sweep):
    _, _, _, analysis = sgd_sweep
    fit = layer_average_fits(analysis, "input_gradient_rms")["rslora"]
    assert not fit.asymptotic
    assert fit.exact_slope < -0.2  # below r ~ d the noise term makes rsLoRA's RMS fall
    assert fit.agrees_with_theory


def test_wrong_fourth_moment_is_detected():
    """At width 4 the fourth cumulant matters: Gaussian moments do not fit Rademacher draws."""
    config, result, _, _ = run(ranks=[1, 2, 4], width=4, batch=2, seeds=400, init="rademacher",
                               scalings=parse_scaling_rules("lora"), dtype="float64")
    sigma2, _ = numeric.init_moments("rademacher", config.width)
    _, gaussian_mu4 = numeric.init_moments("gaussian", config.width)
    measured = result.coordinate["activation"][:, 0, :, 1, 0] ** 2 * config.batch * config.width  # (R, S)
    wrong, right = [], []
    for s in range(config.seeds):
        inputs, grads = result.probes["inputs"][0][s], result.probes["output_grads"][0][s]
        for mu4, store in ((gaussian_mu4, wrong), (numeric.init_moments("rademacher", config.width)[1], right)):
            model = numeric.OneStepSGD(inputs, grads, sigma2=sigma2, mu4=mu4)
            store.append([model.output_second_moment(r, 1.0 / r, config.learning_rate).sum() for r in config.ranks])
    for predicted, should_agree in ((np.array(right).T, True), (np.array(wrong).T, False)):
        differences = measured - predicted
        z = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / math.sqrt(config.seeds))
        bound = stats.t.ppf(1 - FAMILY_ALPHA / (2 * len(config.ranks)), config.seeds - 1)
        assert np.all(np.abs(z) <= bound) == should_agree, z


def test_adam_reports_sign_descent_theory():
    _, _, _, analysis = run(optimizer="adam", seeds=6)
    fits = layer_average_fits(analysis, "activation")
    for name, beta in (("constant", 0.0), ("rslora", 0.5), ("lora", 1.0)):
        assert fits[name].theory_slope == pytest.approx(1 - beta)
        assert fits[name].exact_slope is None  # the exact finite-rank moments are for SGD
        assert fits[name].slope is not None
    assert fits["lora"].verdict == "rank-stable"
