"""Turn a sweep's measurements into fits, verdicts and theory comparisons."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .fit import estimate_slope, least_squares_slope, verdict_for
from .metrics import COORDINATE_METRICS, FITTED_METRICS, METRICS
from .sweep import SweepResult
from .theory import FLUCTUATION_RATIO_MAX, Theory, asymptotic_slope

__all__ = ["Analysis", "Comparison", "FitRecord", "analyse", "fit_ranks_for", "metric_values"]

logger = logging.getLogger(__name__)

# Fewer asymptotic ranks than this and the fit falls back to the largest ranks of the grid.
MIN_FIT_RANKS = 3


@dataclass
class FitRecord:
    """One slope fit: a scaling rule, a metric and a layer (an index or "all")."""

    scaling: str
    scaling_exponent: float
    metric: str
    layer: int | str
    steps: list[int]
    fit_ranks: list[int]
    ranks_used: list[int]  # fit ranks with a finite value for at least one seed
    asymptotic: bool  # the fit ranks lie where the exact fluctuation ratio is small
    slope: float | None
    slope_ci: list[float] | None
    seed_slopes: list[float]
    theory_slope: float | None  # r -> infinity
    exact_slope: float | None  # slope of the exact finite-rank prediction over fit_ranks
    rank_stable: bool
    verdict: str
    theory_verdict: str | None
    agrees_with_theory: bool | None
    excluded: list[dict] = field(default_factory=list)  # diverged (rank, seed) pairs left out
    note: str = ""


@dataclass
class Comparison:
    """Measurement against exact prediction at one rank, over seeds."""

    metric: str
    scaling: str
    scaling_exponent: float
    rank: int
    layer: int
    step: int
    statistic: str  # "mean_square" or "mean"
    measured: float
    predicted: float
    standard_error: float | None
    z: float | None
    seeds: int


@dataclass
class Analysis:
    fits: list[FitRecord]
    comparisons: list[Comparison]
    stable_rules: list[str]
    conclusion: str
    fit_ranks: dict[str, dict[str, list[int]]]  # metric -> layer -> ranks
    # Layer-average slope of each coordinate metric at every recorded step 1..coord_steps, fitted
    # separately, so that drift beyond the fitted step shows: [{scaling, metric, step, slope, slope_ci}].
    step_slopes: list[dict] = field(default_factory=list)

    def fits_json(self) -> list[dict]:
        return [asdict(fit) for fit in self.fits]


def metric_values(result: SweepResult, metric: str) -> tuple[np.ndarray, list[int]]:
    """Return (values (R, J, S, K, L), steps) at the steps a metric is fitted at."""
    if METRICS[metric].fit_step == "init":
        return getattr(result, metric)[:, :, :, :1, :], [0]
    steps = list(result.config.fit_steps)
    return result.coordinate[metric][:, :, :, steps, :], steps


def fit_ranks_for(ranks: list[int], ratio: np.ndarray) -> tuple[list[int], bool]:
    """Pick the asymptotic tail of the grid from the exact fluctuation ratio per rank.

    Returns the ranks from which on every ratio is at most FLUCTUATION_RATIO_MAX, or
    the largest MIN_FIT_RANKS ranks (flagged not asymptotic) when that tail is shorter.
    """
    start = len(ranks)
    while start > 0 and ratio[start - 1] <= FLUCTUATION_RATIO_MAX:
        start -= 1
    tail = ranks[start:]
    if len(tail) >= min(MIN_FIT_RANKS, len(ranks)) and tail:
        return list(tail), True
    return list(ranks[-MIN_FIT_RANKS:]), False


def _layer_views(values: np.ndarray, depth: int):
    """Yield (layer label, values without the layer axis); "all" averages over layers."""
    for layer in range(depth):
        yield layer, values[..., layer]
    if depth > 1:
        with np.errstate(invalid="ignore"):
            yield "all", values.mean(axis=-1)
    else:
        yield "all", values[..., 0]


def analyse(result: SweepResult, theory: Theory) -> Analysis:
    """Fit every metric for every scaling rule and layer, and compare with the exact moments."""
    config = result.config
    ranks = config.ranks
    fits: list[FitRecord] = []
    fit_ranks_json: dict[str, dict[str, list[int]]] = {}

    for metric in FITTED_METRICS:
        values, steps = metric_values(result, metric)
        last_step = max(steps)
        # A configuration whose loss is not finite at or before the fitted state is left out.
        diverged = (result.diverged_at >= 0) & (result.diverged_at <= last_step)  # (R, J, S)
        ratio = np.nanmean(theory.fluctuation[metric], axis=1)  # (R, L)
        predicted = theory.predicted.get(metric)
        # Exact predictions describe initialisation (step 0) or the first SGD step.
        exact_applies = predicted is not None and steps in ([0], [1])
        fit_ranks_json[metric] = {}

        for layer, layer_values in _layer_views(values, config.depth):
            layer_ratio = ratio.max(axis=1) if layer == "all" else ratio[:, layer]
            chosen, asymptotic = fit_ranks_for(ranks, layer_ratio)
            fit_ranks_json[metric][str(layer)] = chosen
            index = [ranks.index(r) for r in chosen]

            exact_curve = None
            if exact_applies:
                exact_values = predicted.mean(axis=-1) if layer == "all" else predicted[..., layer]
                exact_curve = np.nanmean(exact_values, axis=2)  # (R, J): mean over seeds

            for j, rule in enumerate(config.scalings):
                valid = ~diverged[index, j, :]
                estimate = estimate_slope(chosen, layer_values[index, j], valid)
                excluded = [
                    {"rank": ranks[i], "seed": config.seed_list[s], "diverged_at": int(result.diverged_at[i, j, s])}
                    for i in index
                    for s in range(config.seeds)
                    if diverged[i, j, s]
                ]
                fits.append(
                    _fit_record(
                        config, rule, metric, layer, steps, chosen, asymptotic, estimate, exact_curve, index, j, excluded
                    )
                )

    short = [fit for fit in fits if fit.slope is not None and len(fit.ranks_used) < MIN_FIT_RANKS]
    if short:
        logger.warning(
            "%d fit(s) rest on fewer than %d ranks (e.g. %s/%s on %s); pass a longer --ranks grid for reliable slopes",
            len(short), MIN_FIT_RANKS, short[0].scaling, short[0].metric, short[0].ranks_used,
        )

    comparisons = _compare(result, theory)
    step_slopes = _step_slopes(result, fit_ranks_json)
    stable = [
        rule.name
        for rule in config.scalings
        if all(
            fit.verdict == "rank-stable"
            for fit in fits
            if fit.scaling == rule.name and fit.layer == "all" and fit.metric in ("activation", "input_gradient")
        )
    ]
    return Analysis(fits, comparisons, stable, _conclusion(config, fits, stable), fit_ranks_json, step_slopes)


def _fit_record(config, rule, metric, layer, steps, chosen, asymptotic, estimate, exact_curve, index, j, excluded):
    theory_slope = asymptotic_slope(metric, config.optimizer, rule.exponent)
    exact_slope = None
    if exact_curve is not None:
        curve = exact_curve[index, j]
        if len(chosen) >= 2 and np.all(np.isfinite(curve)) and np.all(curve > 0):
            exact_slope = least_squares_slope(np.log(np.asarray(chosen, float)), np.log(curve))

    reference = exact_slope
    if reference is None and asymptotic:
        reference = theory_slope
    verdict = verdict_for(estimate.slope, estimate.slope_ci, config.stable_tol)
    if estimate.slope is not None and estimate.slope_ci is None:
        # A single seed gives no interval, and a verdict needs one.
        verdict = "inconclusive"
    no_slope = estimate.slope is None and not excluded  # too few ranks for a slope, and nothing diverged
    if no_slope:
        verdict = "inconclusive"
    theory_verdict = None if reference is None else verdict_for(reference, None, config.stable_tol)
    agrees = None
    if reference is not None and estimate.slope is not None:
        half_width = 0.0 if estimate.slope_ci is None else (estimate.slope_ci[1] - estimate.slope_ci[0]) / 2
        # The fit ranks keep the exact curve's local slope within FLUCTUATION_RATIO_MAX / 2 of its limit.
        agrees = abs(estimate.slope - reference) <= half_width + FLUCTUATION_RATIO_MAX / 2

    notes = []
    if not asymptotic:
        notes.append(
            "the grid ends before the asymptotic regime of this metric; the slope describes the "
            "finite-rank crossover, so compare it with exact_slope"
        )
    if excluded:
        notes.append(f"{len(excluded)} diverged configuration(s) left out")
    if estimate.slope is not None and estimate.slope_ci is None:
        notes.append("one usable seed, so no confidence interval and no verdict; pass --seeds 2 or more")
    if no_slope:
        notes.append("fewer than two ranks, so no slope; pass at least two ranks, e.g. --ranks 64,128")
    if estimate.slope is not None and len(estimate.ranks_used) < MIN_FIT_RANKS:
        notes.append(f"only {len(estimate.ranks_used)} usable ranks")
    for note in notes:
        # A pre-asymptotic fit is expected (e.g. the input-gradient RMS below r ~ d) and is reported in
        # the table; a diverged configuration has already been warned about by the sweep.
        logger.info("fit %s/%s/layer %s: %s", rule.name, metric, layer, note)

    return FitRecord(
        scaling=rule.name,
        scaling_exponent=float(rule.exponent),
        metric=metric,
        layer=layer,
        steps=list(steps),
        fit_ranks=list(chosen),
        ranks_used=estimate.ranks_used,
        asymptotic=asymptotic,
        slope=estimate.slope,
        slope_ci=None if estimate.slope_ci is None else list(estimate.slope_ci),
        seed_slopes=estimate.seed_slopes,
        theory_slope=theory_slope,
        exact_slope=exact_slope,
        rank_stable=verdict == "rank-stable",
        verdict=verdict,
        theory_verdict=theory_verdict,
        agrees_with_theory=agrees,
        excluded=excluded,
        note="; ".join(notes),
    )


def _step_slopes(result: SweepResult, fit_ranks: dict[str, dict[str, list[int]]]) -> list[dict]:
    config = result.config
    rows = []
    for metric in COORDINATE_METRICS:
        chosen = fit_ranks[metric]["all"]
        index = [config.ranks.index(r) for r in chosen]
        for step in range(1, config.coord_steps + 1):
            values = result.coordinate[metric][:, :, :, step, :].mean(axis=-1)  # (R, J, S)
            diverged = (result.diverged_at >= 0) & (result.diverged_at <= step)
            for j, rule in enumerate(config.scalings):
                estimate = estimate_slope(chosen, values[index, j], ~diverged[index, j, :])
                rows.append(
                    {
                        "scaling": rule.name,
                        "scaling_exponent": float(rule.exponent),
                        "metric": metric,
                        "step": step,
                        "slope": estimate.slope,
                        "slope_ci": None if estimate.slope_ci is None else list(estimate.slope_ci),
                    }
                )
    return rows


def _compare(result: SweepResult, theory: Theory) -> list[Comparison]:
    """Compare seed means of measurement and exact prediction at every rank and layer."""
    config = result.config
    comparisons = []
    for metric, step in theory.steps.items():
        if metric == "grad_norm_B":
            measured = result.grad_norm_B[:, :, :, 0, :]
        else:
            measured = result.coordinate[metric][:, :, :, step, :]
        use_squares = metric != "input_gradient"
        if use_squares:
            measured, predicted, statistic = measured**2, theory.predicted_square[metric], "mean_square"
        else:
            predicted, statistic = theory.predicted[metric], "mean"
        diverged = (result.diverged_at >= 0) & (result.diverged_at <= step)

        for i, rank in enumerate(config.ranks):
            for j, rule in enumerate(config.scalings):
                keep = ~diverged[i, j]
                for layer in range(config.depth):
                    differences = measured[i, j, keep, layer] - predicted[i, j, keep, layer]
                    count = int(np.isfinite(differences).sum())
                    if count == 0:
                        continue
                    standard_error = z = None
                    if count >= 2:
                        standard_error = float(np.nanstd(differences, ddof=1) / math.sqrt(count))
                        if standard_error > 0:
                            z = float(np.nanmean(differences) / standard_error)
                    comparisons.append(
                        Comparison(
                            metric=metric,
                            scaling=rule.name,
                            scaling_exponent=float(rule.exponent),
                            rank=rank,
                            layer=layer,
                            step=step,
                            statistic=statistic,
                            measured=float(np.nanmean(measured[i, j, keep, layer])),
                            predicted=float(np.nanmean(predicted[i, j, keep, layer])),
                            standard_error=standard_error,
                            z=z,
                            seeds=count,
                        )
                    )
    return comparisons


def _conclusion(config, fits: list[FitRecord], stable: list[str]) -> str:
    """Summarise in one line which rules kept activations and input gradients level, and how the others moved."""
    layer_average = {(fit.scaling, fit.metric): fit for fit in fits if fit.layer == "all"}
    parts = []
    for rule in config.scalings:
        activation = layer_average.get((rule.name, "activation"))
        gradient = layer_average.get((rule.name, "input_gradient"))
        if activation is None or activation.slope is None:
            parts.append(f"{rule.name} diverged" if activation is None or activation.excluded else f"{rule.name} no slope")
            continue
        part = f"{rule.name} {activation.verdict} ({activation.slope:+.2f})"
        if gradient is not None and gradient.verdict != activation.verdict:
            slope = "" if gradient.slope is None else f" ({gradient.slope:+.2f})"
            part += f", input gradient {gradient.verdict}{slope}"
        parts.append(part)
    lo, hi = min(config.ranks), max(config.ranks)
    steps = ",".join(str(s) for s in config.fit_steps)
    if len(config.ranks) < 2:
        return (
            f"Under {config.optimizer}, the grid has one rank ({lo}), so no slope or verdict was measured; "
            f"pass at least two ranks, e.g. --ranks 64,128."
        )
    if stable:
        head = f"Under {config.optimizer}, only {', '.join(stable)} kept the adapter output and input gradient level"
    else:
        head = f"Under {config.optimizer}, no scaling rule kept both the adapter output and input gradient level"
    line = f"{head} across ranks {lo}..{hi} at step {steps}; activation slopes: " + "; ".join(parts) + "."
    unresolved = [
        fit for fit in layer_average.values()
        if fit.metric in ("activation", "input_gradient") and fit.verdict == "inconclusive"
    ]
    if unresolved:
        line += (
            " Some verdicts are inconclusive: the intervals are too wide to decide, so pass more --seeds "
            "or a longer --ranks grid."
        )
    return line
