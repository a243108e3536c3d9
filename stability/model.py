"""The toy model: a frozen random MLP, a teacher task, and the adapters' initialisation.

The student computes, for layers l = 0 .. L-1,

    z_l = W_l h_{l-1} + gamma * B_l A_l h_{l-1},   h_l = phi(z_l),   h_{-1} = x,

with no nonlinearity after the last layer, and is trained on the loss
``mean_n 0.5 * |z_{L-1}(x_n) - y_n|^2``. The teacher has the same architecture with
weights ``W_l + Delta_l`` and no adapters, so the adapters must learn the Delta_l.

All random draws happen on the CPU in float64 from seeds derived with
``numpy.random.SeedSequence`` and are then cast and moved, so a seed gives the same
numbers on every device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import SweepConfig

__all__ = [
    "Task",
    "activation_functions",
    "draw_adapter_init",
    "draw_adapter_rows",
    "draw_task",
    "make_generator",
]

# Purposes mixed into seeds, so that streams for different uses never coincide.
_BASE_WEIGHTS, _TEACHER_WEIGHTS, _INPUTS, _ADAPTER_A = 1, 2, 3, 4


def make_generator(*key: int) -> torch.Generator:
    """Return a CPU generator seeded from the integer key (seed, purpose, layer, ...)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint64)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(state[0] >> np.uint64(1)))
    return generator


def draw_adapter_init(init: str, rows: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """Draw A (rows x fan_in) in float64 with iid entries of variance 1/(3 fan_in).

    That is the variance of HF PEFT's default ``kaiming_uniform_(A, a=sqrt(5))``, which
    is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); ``proofs.numeric.init_moments`` gives the
    fourth moments the theory uses.
    """
    bound = 1.0 / math.sqrt(fan_in)
    if init == "uniform":
        return (torch.rand(rows, fan_in, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * bound
    if init == "gaussian":
        return torch.randn(rows, fan_in, generator=generator, dtype=torch.float64) * (bound / math.sqrt(3.0))
    if init == "rademacher":
        signs = torch.randint(0, 2, (rows, fan_in), generator=generator, dtype=torch.int8)
        return (signs.to(torch.float64) * 2.0 - 1.0) * (bound / math.sqrt(3.0))
    raise ValueError(f"unknown init {init!r}")


def activation_functions(name: str):
    """Return (phi, phi_prime, gain) for a nonlinearity; gain keeps the layers' scale near 1."""
    if name == "relu":
        return torch.relu, lambda z: (z > 0).to(z.dtype), math.sqrt(2.0)
    if name == "tanh":
        return torch.tanh, lambda z: 1.0 - torch.tanh(z) ** 2, torch.nn.init.calculate_gain("tanh")
    if name == "gelu":
        def gelu_prime(z):
            cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
            return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

        # NOTE: ReLU's gain, an approximation for GELU (torch.nn.init has none for it).
        return torch.nn.functional.gelu, gelu_prime, math.sqrt(2.0)
    if name == "linear":
        return (lambda z: z), (lambda z: torch.ones_like(z)), 1.0
    raise ValueError(f"unknown activation {name!r}")


@dataclass
class Task:
    """The frozen base network, the teacher's targets and each replica's input stream."""

    weights: list[torch.Tensor]  # W_l, each (d, d)
    inputs: torch.Tensor  # (S, T, b, d): the batch of every replica at every step
    targets: torch.Tensor  # (S, T, b, d): teacher outputs for those inputs


def _layer_gains(config: SweepConfig) -> list[float]:
    _, _, gain = activation_functions(config.activation)
    return [1.0] + [gain] * (config.depth - 1)


def draw_task(config: SweepConfig) -> Task:
    """Draw base weights, teacher weights and the input stream, and compute targets (float64, CPU)."""
    d = config.width
    weights, teacher = [], []
    for layer, gain in enumerate(_layer_gains(config)):
        scale = gain / math.sqrt(d)
        base = torch.randn(d, d, generator=make_generator(config.task_seed, _BASE_WEIGHTS, layer), dtype=torch.float64)
        delta = torch.randn(d, d, generator=make_generator(config.task_seed, _TEACHER_WEIGHTS, layer), dtype=torch.float64)
        weights.append(base * scale)
        teacher.append((base + config.task_scale * delta) * scale)

    inputs = torch.stack(
        [
            torch.randn(config.steps, config.batch, d, generator=make_generator(seed, _INPUTS), dtype=torch.float64)
            for seed in config.seed_list
        ]
    )  # (S, T, b, d)

    phi, _, _ = activation_functions(config.activation)
    hidden = inputs
    for layer, weight in enumerate(teacher):
        hidden = hidden @ weight.T
        if layer < config.depth - 1:
            hidden = phi(hidden)
    return Task(weights=weights, inputs=inputs, targets=hidden)


def draw_adapter_rows(config: SweepConfig, seed: int, layer: int) -> torch.Tensor:
    """Draw replica ``seed``'s A for ``layer`` at the largest rank (float64, CPU).

    Every rank's A is the first r rows of this draw, so ranks within a replica
    share randomness (common random numbers), which steadies the slope in rank.
    """
    return draw_adapter_init(config.init, max(config.ranks), config.width, make_generator(seed, _ADAPTER_A, layer))
