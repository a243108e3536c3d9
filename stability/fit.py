"""Log-log slopes of a metric against rank, with confidence intervals over seeds, and verdicts.

Each seed's slope is the least-squares slope of log(value) on log(rank) over the fit
ranks. With several fit steps, log(value) is first averaged over the steps, which is
the pooled fit with one intercept per step. The reported slope is the mean over seeds,
and its interval is the two-sided 95% Student-t interval of that mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "SlopeEstimate",
    "estimate_slope",
    "least_squares_slope",
    "verdict_for",
]

CONFIDENCE = 0.95
VERDICTS = ("rank-stable", "explodes", "collapses", "inconclusive", "diverged")


@dataclass
class SlopeEstimate:
    """A slope over seeds and what went into it."""

    slope: float | None
    slope_ci: tuple[float, float] | None
    seed_slopes: list[float]
    ranks_used: list[int]  # ranks with a valid value for at least one seed


def least_squares_slope(log_ranks: np.ndarray, log_values: np.ndarray) -> float:
    """Return the least-squares slope of log_values on log_ranks (both 1-d, at least 2 points)."""
    centred = log_ranks - log_ranks.mean()
    return float(np.dot(centred, log_values - log_values.mean()) / np.dot(centred, centred))


def estimate_slope(ranks: list[int], values: np.ndarray, valid: np.ndarray) -> SlopeEstimate:
    """Fit the slope of ``values`` against ``ranks`` for every seed.

    Parameters
    ----------
    ranks : the fit ranks, length R.
    values : array (R, S) or (R, S, K) with K fit steps; must be positive where valid.
    valid : boolean array (R, S): False excludes that rank for that seed (e.g. it diverged).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 2:
        values = values[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_values = np.log(values).mean(axis=2)  # (R, S): pooled over steps
    usable = valid & np.isfinite(log_values)
    log_ranks = np.log(np.asarray(ranks, dtype=float))

    seed_slopes, used = [], set()
    for seed in range(log_values.shape[1]):
        keep = usable[:, seed]
        if keep.sum() < 2:
            continue
        seed_slopes.append(least_squares_slope(log_ranks[keep], log_values[keep, seed]))
        used.update(int(r) for r, k in zip(ranks, keep) if k)

    if not seed_slopes:
        return SlopeEstimate(None, None, [], [])
    slope = float(np.mean(seed_slopes))
    interval = None
    if len(seed_slopes) >= 2:
        standard_error = float(np.std(seed_slopes, ddof=1)) / math.sqrt(len(seed_slopes))
        half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(seed_slopes) - 1)) * standard_error
        interval = (slope - half_width, slope + half_width)
    return SlopeEstimate(slope, interval, seed_slopes, sorted(used))


def verdict_for(slope: float | None, interval: tuple[float, float] | None, tolerance: float) -> str:
    """Classify a slope: level within +-tolerance, growing, shrinking, or undecided.

    With an interval, the whole interval must lie on one side. Without one (a theory
    slope, which is exact) the point estimate decides.

    >>> verdict_for(0.02, (-0.03, 0.07), 0.1)
    'rank-stable'
    >>> verdict_for(0.5, (0.05, 0.95), 0.1)
    'inconclusive'
    """
    if slope is None:
        return "diverged"
    low, high = interval if interval is not None else (slope, slope)
    if -tolerance <= low and high <= tolerance:
        return "rank-stable"
    if low > tolerance:
        return "explodes"
    if high < -tolerance:
        return "collapses"
    return "inconclusive"
