"""Theory lines for a sweep, evaluated from the exact formulas in ``proofs``.

Nothing here restates a formula: every prediction calls ``proofs.numeric``, which
evaluates the sympy derivations numerically. This module decides only where each
formula applies and turns the moments into the metrics' units.

* After one SGD step the coordinate metrics have exact finite-rank moments, given
  the probe batch (its inputs and output gradients at initialisation).
* The gradient norm of B at initialisation has an exact mean square for every optimizer.
* The asymptotic slopes come from ``proofs.numeric.theory_slope``: SGD for ``sgd``;
  sign descent (Adam's first step) for ``adam``, ``adamw`` and ``signsgd``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from proofs import numeric

from .config import SweepConfig
from .metrics import METRICS

__all__ = [
    "FLUCTUATION_RATIO_MAX",
    "Theory",
    "asymptotic_slope",
    "compute_theory",
    "theory_optimizer",
]

# The asymptotic part of the grid is where the exact fluctuation ratio q is at most this.
# For the activation and the input-gradient RMS, q is the incoherent part of E|f|^2 over
# the coherent part |E f|^2, and it bounds the deviation of the RMS's local log-log slope
# from its limit by q/2. For the coherent coefficient and the gradient norm, whose means
# follow exact powers of r, q is Var/mean^2 of the statistic, and -q/2 is about the bias
# of the log of one draw. Both are 0.05 or less here.
FLUCTUATION_RATIO_MAX = 0.1


def theory_optimizer(optimizer: str) -> str:
    """Map an optimizer to the update rule whose theory describes its first steps."""
    return "sgd" if optimizer == "sgd" else "sign_descent"


def asymptotic_slope(metric: str, optimizer: str, beta) -> float | None:
    """Return the r -> infinity log-log slope of ``metric``, or None where no theory applies."""
    quantity = METRICS[metric].theory_quantity
    if quantity is None:
        return None
    if quantity == "grad_norm_init":
        return float(numeric.theory_slope(quantity, "sgd", beta))
    return float(numeric.theory_slope(quantity, theory_optimizer(optimizer), beta))


@dataclass
class Theory:
    """Exact predictions for one sweep, as arrays indexed [rank, scaling, seed, layer]."""

    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # in the metric's units
    predicted_square: dict[str, np.ndarray] = field(default_factory=dict)  # exact E[metric^2]
    fluctuation: dict[str, np.ndarray] = field(default_factory=dict)  # (R, S, L): Var/mean^2, gamma-free
    steps: dict[str, int] = field(default_factory=dict)  # the step each prediction describes


def _rms(square_sum: np.ndarray, count: int) -> np.ndarray:
    return np.sqrt(square_sum / count)


def compute_theory(config: SweepConfig, probes: dict[str, list[np.ndarray]]) -> Theory:
    """Evaluate the exact moments for every rank, scaling, seed and layer of a sweep.

    ``probes`` maps "inputs" and "output_grads" to float64 arrays (S, b, d), one per layer.
    One-step predictions are filled only for SGD; fluctuation ratios (which set the fit
    ranges) are computed for every optimizer, because they describe the data and A.
    """
    ranks, scalings = config.ranks, config.scalings
    shape = (len(ranks), len(scalings), config.seeds, config.depth)
    sigma2, mu4 = numeric.init_moments(config.init, config.width)
    sgd = config.optimizer == "sgd"

    theory = Theory()
    names = ["grad_norm_B"] + (["activation", "input_gradient", "input_gradient_rms"] if sgd else [])
    for name in names:
        theory.predicted[name] = np.full(shape, np.nan)
        theory.predicted_square[name] = np.full(shape, np.nan)
        theory.steps[name] = 0 if name == "grad_norm_B" else 1
    for name in ("activation", "input_gradient", "input_gradient_rms", "grad_norm_B"):
        theory.fluctuation[name] = np.full((len(ranks), config.seeds, config.depth), np.nan)

    for seed in range(config.seeds):
        for layer in range(config.depth):
            inputs = probes["inputs"][layer][seed]
            output_grads = probes["output_grads"][layer][seed]
            batch, width = inputs.shape
            model = numeric.OneStepSGD(inputs, output_grads, sigma2=sigma2, mu4=mu4)
            directions = model.coherent_directions()  # (b, d)
            direction_rms = float(np.sqrt(np.mean(directions**2)))

            for i, rank in enumerate(ranks):
                # Ratios do not depend on gamma or the learning rate, so evaluate at 1.
                output_square = model.output_second_moment(rank, 1.0, 1.0).sum()
                output_coherent = (model.output_mean(rank, 1.0, 1.0) ** 2).sum()
                gradient_square = model.input_gradient_second_moment(rank, 1.0, 1.0).sum()
                gradient_coherent = (model.input_gradient_mean(rank, 1.0, 1.0) ** 2).sum()
                theory.fluctuation["activation"][i, seed, layer] = output_square / output_coherent - 1.0
                theory.fluctuation["input_gradient_rms"][i, seed, layer] = gradient_square / gradient_coherent - 1.0
                theory.fluctuation["input_gradient"][i, seed, layer] = model.coherent_coefficient_relative_variance(rank)
                theory.fluctuation["grad_norm_B"][i, seed, layer] = model.grad_B_norm_squared_relative_variance(rank)

                for j, rule in enumerate(scalings):
                    gamma = rule.gamma(config.alpha, rank)
                    square = model.grad_B_norm_squared_at_init(rank, gamma)
                    theory.predicted_square["grad_norm_B"][i, j, seed, layer] = square
                    theory.predicted["grad_norm_B"][i, j, seed, layer] = np.sqrt(square)
                    if not sgd:
                        continue
                    lr = config.learning_rate
                    square = model.output_second_moment(rank, gamma, lr).sum() / (batch * width)
                    theory.predicted_square["activation"][i, j, seed, layer] = square
                    theory.predicted["activation"][i, j, seed, layer] = np.sqrt(square)
                    square = model.input_gradient_second_moment(rank, gamma, lr).sum() / (batch * width)
                    theory.predicted_square["input_gradient_rms"][i, j, seed, layer] = square
                    theory.predicted["input_gradient_rms"][i, j, seed, layer] = np.sqrt(square)
                    mean_gradient = model.input_gradient_mean(rank, gamma, lr)
                    coefficient = float((mean_gradient * directions).sum() / (directions**2).sum())
                    theory.predicted["input_gradient"][i, j, seed, layer] = abs(coefficient) * direction_rms
    return theory
