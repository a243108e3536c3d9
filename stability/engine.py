"""The batched sweep engine: every configuration of one rank trains in lock-step.

Configurations of equal rank (scaling rules x replicas) have equal shapes, so each
adapter product is one batched matmul over them, and each frozen base layer is one
matmul over all their hidden states. The forward and backward passes are written
out by hand, and the tests check them against autograd and ``torch.optim``. Writing
them out lets SGD update A and B in place from the batch factors without
materialising their gradients, and gives gradient norms from b x b Gram matrices.

Nothing inside a step reads a value back to the host, so on CUDA the steps queue
without synchronising; divergence is recorded on the device as the first step
whose loss is not finite.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .config import SweepConfig
from .metrics import COORDINATE_METRICS
from .model import Task, activation_functions

__all__ = ["FlopCounter", "GroupResult", "Probes", "SweepState", "compute_probes", "probe_metrics", "run_group"]

logger = logging.getLogger(__name__)


class FlopCounter:
    """Counts the FLOPs of the matrix products the engine runs (2 m n k each)."""

    def __init__(self) -> None:
        self.total = 0

    def bmm(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        batch, m, k = left.shape
        self.total += 2 * batch * m * k * right.shape[-1]
        return torch.bmm(left, right)

    def baddbmm_(self, out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float) -> None:
        batch, m, k = left.shape
        self.total += 2 * batch * m * k * right.shape[-1]
        out.baddbmm_(left, right, alpha=alpha)

    def mm(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        m, k = left.shape
        self.total += 2 * m * k * right.shape[-1]
        return left @ right


@dataclass
class Probes:
    """Each layer's inputs and output gradients on the first batch at initialisation.

    With B = 0 the adapters change nothing, so these are the same for every rank and
    scaling of a replica. The coordinate metrics apply each adapter to them after t
    steps: the adapter is measured as a map on the inputs it was trained on, with
    inputs and output gradients that do not depend on its own A.
    """

    inputs: list[torch.Tensor]  # per layer (S, b, d): X_l, the layer's inputs
    output_grads: list[torch.Tensor]  # per layer (S, b, d): V_l = dL/dz_l
    directions: list[torch.Tensor]  # per layer (S, b, d): u_m = sum_n x_n (v_n . v_m)


@dataclass
class SweepState:
    """Device tensors shared by every rank group of a sweep."""

    config: SweepConfig
    device: torch.device
    dtype: torch.dtype
    weights: list[torch.Tensor]  # W_l (d, d)
    inputs: torch.Tensor  # (S, T, b, d)
    targets: torch.Tensor  # (S, T, b, d)
    first_layer_base: torch.Tensor  # (S, T, b, d): x @ W_0^T, the same for every configuration
    adapter_rows: list[list[torch.Tensor]]  # [seed][layer] (max rank, d) on the host
    probes: Probes
    flops: FlopCounter = field(default_factory=FlopCounter)


def compute_probes(weights, inputs, targets, activation: str, flops: FlopCounter) -> Probes:
    """Run the base network (adapters at zero) on each replica's first batch.

    ``inputs`` and ``targets`` are (S, b, d); the loss is mean_n 0.5 |z_n - y_n|^2.
    """
    phi, phi_prime, _ = activation_functions(activation)
    seeds, batch, width = inputs.shape
    depth = len(weights)

    layer_inputs, pre_activations = [], []
    hidden = inputs
    for layer, weight in enumerate(weights):
        layer_inputs.append(hidden)
        z = flops.mm(hidden.reshape(seeds * batch, width), weight.T).view(seeds, batch, width)
        pre_activations.append(z)
        hidden = phi(z) if layer < depth - 1 else z

    output_grads = [None] * depth
    grad = (hidden - targets) / batch  # (S, b, d)
    for layer in reversed(range(depth)):
        output_grads[layer] = grad
        if layer > 0:
            grad = flops.mm(grad.reshape(seeds * batch, width), weights[layer]).view(seeds, batch, width)
            grad = grad * phi_prime(pre_activations[layer - 1])

    directions = []
    for x, v in zip(layer_inputs, output_grads):
        gram = flops.bmm(v, v.transpose(1, 2))  # (S, b, b): v_n . v_m
        directions.append(flops.bmm(gram, x))  # (S, b, d): u_m = sum_n (v_m . v_n) x_n
    return Probes(layer_inputs, output_grads, directions)


@dataclass
class GroupResult:
    """Host copies of what one group of configurations recorded."""

    coordinate: dict[str, torch.Tensor]  # name -> (C, coord_steps + 1, L)
    grad_norm_A: torch.Tensor  # (C, T, L)
    grad_norm_B: torch.Tensor  # (C, T, L)
    loss: torch.Tensor  # (C, T)
    diverged_at: torch.Tensor  # (C,) first step with a non-finite loss, -1 if none


def probe_metrics(flops: FlopCounter, A, B, gammas, x, v, u) -> dict[str, torch.Tensor]:
    """Return the coordinate metrics (each of shape (C,)) of adapters gamma B A on a probe batch.

    Shapes: A (C, r, d_in), B (C, d_out, r), gammas (C, 1, 1). The probe inputs x are
    (C, b, d_in), the output gradients v (C, b, d_out), the coherent directions u (C, b, d_in).
    """
    outputs = flops.bmm(flops.bmm(x, A.transpose(1, 2)), B.transpose(1, 2)) * gammas  # (C, b, d_out)
    grads = flops.bmm(flops.bmm(v, B), A) * gammas  # (C, b, d_in): gamma A^T B^T v_m
    coefficient = (grads * u).sum(dim=(1, 2)) / (u * u).sum(dim=(1, 2))  # (C,)
    return {
        "activation": outputs.pow(2).mean(dim=(1, 2)).sqrt(),
        "input_gradient_rms": grads.pow(2).mean(dim=(1, 2)).sqrt(),
        "input_gradient": coefficient.abs() * u.pow(2).mean(dim=(1, 2)).sqrt(),
    }


def _measure_probes(state: SweepState, A, B, gammas, seed_index, out: dict[str, torch.Tensor], step: int) -> None:
    """Write the coordinate metrics of the current adapters into ``out[name][:, step, layer]``."""
    probes = state.probes
    for layer in range(len(A)):
        values = probe_metrics(
            state.flops,
            A[layer],
            B[layer],
            gammas,
            probes.inputs[layer][seed_index],
            probes.output_grads[layer][seed_index],
            probes.directions[layer][seed_index],
        )
        for name, value in values.items():
            out[name][:, step, layer] = value


def _make_optimizer(config: SweepConfig, parameters: list[torch.Tensor]):
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.learning_rate)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return None  # sgd and signsgd update in place


def run_group(state: SweepState, rank: int, configurations: list[tuple[int, float]], progress=None) -> GroupResult:
    """Train every configuration of one rank for ``config.steps`` steps in lock-step.

    ``configurations`` lists (replica index, gamma) pairs. Returns host tensors.
    """
    config, flops = state.config, state.flops
    device, dtype = state.device, state.dtype
    phi, phi_prime, _ = activation_functions(config.activation)
    count, batch, width, depth = len(configurations), config.batch, config.width, config.depth
    learning_rate = config.learning_rate

    seed_index = torch.tensor([seed for seed, _ in configurations], device=device)
    gammas = torch.tensor([g for _, g in configurations], device=device, dtype=dtype).view(count, 1, 1)

    A = [
        torch.stack([state.adapter_rows[seed][layer][:rank] for seed, _ in configurations]).to(device, dtype)
        for layer in range(depth)
    ]  # each (C, r, d)
    B = [torch.zeros(count, width, rank, device=device, dtype=dtype) for _ in range(depth)]  # each (C, d, r)
    optimizer = _make_optimizer(config, A + B)

    coordinate = {
        name: torch.full((count, config.coord_steps + 1, depth), math.nan, device=device, dtype=dtype)
        for name in COORDINATE_METRICS
    }
    grad_norm_A = torch.zeros(count, config.steps, depth, device=device, dtype=dtype)
    grad_norm_B = torch.zeros(count, config.steps, depth, device=device, dtype=dtype)
    losses = torch.zeros(count, config.steps, device=device, dtype=dtype)
    diverged_at = torch.full((count,), -1, device=device, dtype=torch.long)

    for step in range(config.steps):
        if step <= config.coord_steps:
            _measure_probes(state, A, B, gammas, seed_index, coordinate, step)

        # Forward: z_l = W_l h + gamma B_l A_l h.
        x = state.inputs[seed_index, step]  # (C, b, d)
        hiddens, pre_activations, projections = [], [], []
        hidden = x
        for layer in range(depth):
            hiddens.append(hidden)
            if layer == 0:
                base = state.first_layer_base[seed_index, step]
            else:
                base = flops.mm(hidden.reshape(count * batch, width), state.weights[layer].T).view(count, batch, width)
            projection = flops.bmm(hidden, A[layer].transpose(1, 2))  # (C, b, r): A h
            projections.append(projection)
            z = base + flops.bmm(projection, B[layer].transpose(1, 2)) * gammas  # (C, b, d)
            pre_activations.append(z)
            hidden = phi(z) if layer < depth - 1 else z

        residual = hidden - state.targets[seed_index, step]
        loss = 0.5 * residual.pow(2).sum(dim=(1, 2)) / batch  # (C,)
        losses[:, step] = loss
        newly_diverged = (~torch.isfinite(loss)) & (diverged_at < 0)
        diverged_at.masked_fill_(newly_diverged, step)

        # Backward and update, top layer first: each layer's A and B are updated as soon
        # as the gradient for the layer below has been taken through them.
        grad_z = residual / batch  # (C, b, d): dL/dz for the top layer
        for layer in reversed(range(depth)):
            hidden, projection = hiddens[layer], projections[layer]
            scaled_projection = projection * gammas  # (C, b, r): gamma A h
            grad_projection = flops.bmm(grad_z, B[layer]) * gammas  # (C, b, r): dL/d(A h)
            if layer > 0:
                grad_hidden = flops.mm(grad_z.reshape(count * batch, width), state.weights[layer]).view(
                    count, batch, width
                ) + flops.bmm(grad_projection, A[layer])  # (C, b, d)

            # ||grad_B||^2 = sum (V V^T) * (gA h)(gA h)^T and ||grad_A||^2 likewise, from b x b Grams.
            grad_gram = flops.bmm(grad_z, grad_z.transpose(1, 2))
            grad_norm_B[:, step, layer] = (
                (grad_gram * flops.bmm(scaled_projection, scaled_projection.transpose(1, 2))).sum(dim=(1, 2)).sqrt()
            )
            grad_norm_A[:, step, layer] = (
                (
                    flops.bmm(grad_projection, grad_projection.transpose(1, 2))
                    * flops.bmm(hidden, hidden.transpose(1, 2))
                )
                .sum(dim=(1, 2))
                .sqrt()
            )
            _update(config, flops, optimizer, A[layer], B[layer], grad_z, scaled_projection, grad_projection, hidden)

            if layer > 0:
                grad_z = grad_hidden * phi_prime(pre_activations[layer - 1])
        if optimizer is not None:
            optimizer.step()
        if progress is not None:
            progress.update(1)

    if config.coord_steps == config.steps:
        _measure_probes(state, A, B, gammas, seed_index, coordinate, config.steps)

    return GroupResult(
        coordinate={name: values.cpu() for name, values in coordinate.items()},
        grad_norm_A=grad_norm_A.cpu(),
        grad_norm_B=grad_norm_B.cpu(),
        loss=losses.cpu(),
        diverged_at=diverged_at.cpu(),
    )


def _update(config, flops, optimizer, A, B, grad_z, scaled_projection, grad_projection, hidden) -> None:
    """Apply one optimizer step to one layer's A (C, r, d) and B (C, d, r).

    grad_B = V^T (gamma A h) and grad_A = (dL/dAh)^T h, with V = dL/dz.
    """
    if config.optimizer == "sgd":
        flops.baddbmm_(B, grad_z.transpose(1, 2), scaled_projection, alpha=-config.learning_rate)
        flops.baddbmm_(A, grad_projection.transpose(1, 2), hidden, alpha=-config.learning_rate)
        return

    grad_B = flops.bmm(grad_z.transpose(1, 2), scaled_projection)  # (C, d, r)
    grad_A = flops.bmm(grad_projection.transpose(1, 2), hidden)  # (C, r, d)
    if config.optimizer == "signsgd":
        B.add_(grad_B.sign_(), alpha=-config.learning_rate)
        A.add_(grad_A.sign_(), alpha=-config.learning_rate)
        return
    # Adam and AdamW are elementwise, so one torch.optim instance over the batched
    # tensors equals one instance per configuration; it steps after all layers.
    B.grad, A.grad = grad_B, grad_A
