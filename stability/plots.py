"""Figures of a run, drawn from the measured arrays and the fits (PNG and SVG)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .analysis import Analysis  # noqa: E402
from .files import atomic_write_bytes  # noqa: E402
from .metrics import COORDINATE_METRICS  # noqa: E402
from .sweep import SweepResult  # noqa: E402
from .theory import Theory, asymptotic_slope, theory_optimizer  # noqa: E402

__all__ = ["draw_figures"]

_SMOOTHING_STEPS = 5  # learning curves show a moving average over this many steps


def _save(figure, folder: Path, stem: str) -> list[str]:
    names = []
    for extension in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension, dpi=120, bbox_inches="tight")
        atomic_write_bytes(folder / f"{stem}.{extension}", buffer.getvalue())
        names.append(f"{stem}.{extension}")
    plt.close(figure)
    return names


def _valid_mask(result: SweepResult, step: int) -> np.ndarray:
    """(R, J, S): False where the configuration diverged at or before ``step``."""
    return ~((result.diverged_at >= 0) & (result.diverged_at <= step))


def _seed_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 2) of values (R, J, S), ignoring invalid or non-finite entries."""
    masked = np.where(valid & np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all seeds invalid: the mean is NaN, drawn as a gap
        return np.nanmean(masked, axis=2)


def coordinate_check(result: SweepResult, theory: Theory, folder: Path) -> list[str]:
    config = result.config
    ranks = np.array(config.ranks)
    scalings = config.scalings
    figure, axes = plt.subplots(
        len(COORDINATE_METRICS), len(scalings), figsize=(3.4 * len(scalings), 2.8 * len(COORDINATE_METRICS)),
        squeeze=False, sharex=True,
    )
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, config.coord_steps))
    for row, metric in enumerate(COORDINATE_METRICS):
        layer_mean = result.coordinate[metric].mean(axis=-1)  # (R, J, S, steps)
        for column, rule in enumerate(scalings):
            axis = axes[row][column]
            for step in range(1, config.coord_steps + 1):
                curve = _seed_mean(layer_mean[..., step], _valid_mask(result, step))[:, column]
                axis.loglog(ranks, curve, "o-", ms=3, color=colours[step - 1], label=f"step {step}")
            if metric in theory.predicted:
                exact = np.nanmean(theory.predicted[metric].mean(axis=-1), axis=2)[:, column]
                axis.loglog(ranks, exact, "k--", lw=1, label="exact, step 1")
            if row == 0:
                axis.set_title(_rule_title(rule))
                _mark_divergence(axis, result, column)
            if column == 0:
                axis.set_ylabel(metric.replace("_", " "))
            if row == len(COORDINATE_METRICS) - 1:
                axis.set_xlabel("rank r")
            _widen_log_axis(axis)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"Coordinate check under {config.optimizer}: adapter on its training batch, mean over layers and seeds")
    return _save(figure, folder, "coordinate_check")


def _rule_title(rule) -> str:
    if rule.name.startswith("beta="):
        return rule.name
    return f"{rule.name} (beta={float(rule.exponent):g})"


# A log axis spans at least this many decades, so that a level curve looks level.
_MIN_DECADES = 2.0


def _widen_log_axis(axis) -> None:
    low, high = axis.get_ylim()
    if low > 0 and high > 0 and np.log10(high / low) < _MIN_DECADES:
        centre = np.sqrt(low * high)
        axis.set_ylim(centre / 10 ** (_MIN_DECADES / 2), centre * 10 ** (_MIN_DECADES / 2))


def _mark_divergence(axis, result: SweepResult, column: int) -> None:
    """Note in the panel which ranks lost configurations to divergence during the coordinate steps."""
    steps = result.diverged_at[:, column, :]  # (R, S)
    early = (steps >= 0) & (steps <= result.config.coord_steps)
    ranks = [rank for rank, lost in zip(result.config.ranks, early.any(axis=1)) if lost]
    if ranks:
        first = int(steps[early].min())
        axis.text(
            0.02, 0.02, f"diverged at step {first}+: r in {ranks[0]}..{ranks[-1]}",
            transform=axis.transAxes, fontsize=7, color="red",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )


def slopes(result: SweepResult, analysis: Analysis, folder: Path) -> list[str]:
    config = result.config
    figure, axis = plt.subplots(figsize=(5.5, 4))
    betas = np.array([float(rule.exponent) for rule in config.scalings])
    grid = np.linspace(min(betas.min(), 0.0), max(betas.max(), 1.0), 100)
    for metric, marker in (("activation", "o"), ("input_gradient", "s")):
        fits = [f for f in analysis.fits if f.metric == metric and f.layer == "all"]
        x = np.array([f.scaling_exponent for f in fits if f.slope is not None])
        y = np.array([f.slope for f in fits if f.slope is not None])
        errors = np.array(
            [[f.slope - f.slope_ci[0], f.slope_ci[1] - f.slope] if f.slope_ci else [0.0, 0.0] for f in fits if f.slope is not None]
        ).T.reshape(2, -1)
        axis.errorbar(x, y, yerr=errors, fmt=marker, capsize=3, label=f"{metric.replace('_', ' ')} (measured)")
    theory = [asymptotic_slope("activation", config.optimizer, beta) for beta in grid]
    axis.plot(grid, theory, "k-", lw=1, label=f"theory ({theory_optimizer(config.optimizer)})")
    axis.axhspan(-config.stable_tol, config.stable_tol, color="green", alpha=0.12, label="rank-stable band")
    axis.axhline(0.0, color="grey", lw=0.5)
    axis.set_xlabel("scaling exponent beta (gamma = alpha r^-beta)")
    axis.set_ylabel("log-log slope vs rank")
    axis.set_title(f"Slope in rank after step {','.join(map(str, config.fit_steps))} ({config.optimizer})")
    axis.legend(fontsize=8)
    return _save(figure, folder, "slopes")


def learning_curves(result: SweepResult, folder: Path) -> list[str]:
    config = result.config
    scalings = config.scalings
    figure, axes = plt.subplots(1, len(scalings), figsize=(3.6 * len(scalings), 3.2), squeeze=False)
    colours = plt.cm.plasma(np.linspace(0.0, 0.9, len(config.ranks)))
    window = min(_SMOOTHING_STEPS, config.steps)
    kernel = np.ones(window) / window
    for column, rule in enumerate(scalings):
        axis = axes[0][column]
        finished = []  # curves of ranks where no seed diverged, which set the y range
        ends = []  # (step, loss, colour) where a curve stops because a seed diverged
        for i, rank in enumerate(config.ranks):
            diverged = result.diverged_at[i, column]
            first = int(diverged[diverged >= 0].min()) if (diverged >= 0).any() else config.steps
            mean_loss = result.loss[i, column, :, :first].mean(axis=0)  # (first,)
            if first < config.steps and first < window:
                # Too few steps to smooth: draw the raw losses up to the divergence.
                steps, curve = np.arange(first), mean_loss
            else:
                steps, curve = np.arange(window - 1, first), np.convolve(mean_loss, kernel, mode="valid")
            axis.plot(steps, curve, color=colours[i], lw=1.2, label=f"r={rank}")
            if first < config.steps:
                ends.append((max(first - 1, 0), curve[-1] if len(curve) else np.inf, colours[i]))
            else:
                finished.append(curve)
        axis.set_yscale("log")
        if finished:
            values = np.concatenate(finished)
            values = values[np.isfinite(values) & (values > 0)]
            if values.size:
                axis.set_ylim(values.min() / 1.1, values.max() * 1.5)
        top = axis.get_ylim()[1]
        for step, loss, colour in ends:
            # A curve that leaves the panel gets its x on the upper edge.
            axis.plot(step, min(loss, top) if np.isfinite(loss) else top, "x", color=colour, ms=8)
        axis.set_title(_rule_title(rule))
        axis.set_xlabel("step")
    axes[0][0].set_ylabel(f"training loss ({window}-step mean)")
    axes[0][-1].legend(fontsize=6, ncol=2)
    figure.suptitle(f"Learning curves per rank ({config.optimizer}, lr {config.learning_rate:g}); x: diverged", y=1.04)
    return _save(figure, folder, "learning_curves")


def gradient_norms(result: SweepResult, theory: Theory, folder: Path) -> list[str]:
    config = result.config
    ranks = np.array(config.ranks)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    total = np.sqrt(result.grad_norm_A**2 + result.grad_norm_B**2).sum(axis=-1)  # (R, J, S, T)
    for j, rule in enumerate(config.scalings):
        at_init = _seed_mean(result.grad_norm_B[..., 0, :].sum(axis=-1), _valid_mask(result, 0))[:, j]
        line = left.loglog(ranks, at_init, "o-", ms=3, label=rule.name)[0]
        exact = np.nanmean(theory.predicted["grad_norm_B"].sum(axis=-1), axis=2)[:, j]
        left.loglog(ranks, exact, "--", color=line.get_color(), lw=1)
        finished = _valid_mask(result, config.steps)
        during = _seed_mean(total.mean(axis=-1), finished)[:, j]
        right.loglog(ranks, during, "o-", ms=3, color=line.get_color(), label=rule.name)
    left.set_title("|dL/dB| at initialisation (dashed: exact)")
    right.set_title("mean over steps of sqrt(|dL/dA|^2 + |dL/dB|^2)")
    for axis in (left, right):
        axis.set_xlabel("rank r")
        axis.legend(fontsize=8)
    left.set_ylabel("Frobenius norm, summed over layers")
    return _save(figure, folder, "gradient_norms")


def draw_figures(result: SweepResult, theory: Theory, analysis: Analysis, folder: Path) -> list[str]:
    """Draw every figure into ``folder``; returns the file names."""
    names = []
    names += coordinate_check(result, theory, folder)
    names += slopes(result, analysis, folder)
    names += learning_curves(result, folder)
    names += gradient_norms(result, theory, folder)
    return names
