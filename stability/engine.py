"""The batched sweep engine: every configuration of one rank trains in lock-step.

Configurations of equal rank (scaling rules x replicas) have equal shapes, so each
adapter product is one batched matmul over them, and each frozen base layer is one
matmul over all their hidden states. The forward and backward passes are written
out by hand, and the tests check them against autograd and ``torch.optim``. Writing
them out lets SGD update A and B from the batch factors without materialising their
gradients, and gives gradient norms from b x b Gram matrices. The adapters are held
dense or, for SGD at large ranks, as A_0 plus the low-rank sum of the updates so far
(``stability.adapters``); the steps below call the same four products either way.

Nothing inside a step reads a value back to the host, so on CUDA the steps queue
without synchronising. Divergence is found on the device after the steps, as the
first step whose loss is not finite.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .adapters import DenseAdapters, FactoredAdapters, is_factored
from .config import SweepConfig
from .flops import FlopCounter
from .metrics import COORDINATE_METRICS
from .model import activation_functions

__all__ = [
    "FlopCounter",
    "GroupResult",
    "Probes",
    "SweepState",
    "compute_probes",
    "probe_metrics",
    "run_group",
]

logger = logging.getLogger(__name__)


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


def probe_metrics(flops: FlopCounter, adapters, gammas, x, v, u) -> dict[str, torch.Tensor]:
    """Return the coordinate metrics (each of shape (C,)) of adapters gamma B A on a probe batch.

    ``adapters`` holds A (C, r, d_in) and B (C, d_out, r) (see ``stability.adapters``);
    gammas is (C, 1, 1). The probe inputs x are (C, b, d_in), the output gradients v
    (C, b, d_out), the coherent directions u (C, b, d_in).
    """
    # gamma scales the (C, b, r) factor, the smallest tensor of each chain.
    outputs = adapters.expand(adapters.project(x) * gammas)  # (C, b, d_out)
    grads = adapters.pull_back_A(adapters.pull_back_B(v) * gammas)  # (C, b, d_in): gamma A^T B^T v_m
    return _coordinate_values(outputs, grads, u)


def _coordinate_values(outputs, grads, u) -> dict[str, torch.Tensor]:
    """Return the coordinate metrics from the adapter's probe outputs and input gradients."""
    coefficient = (grads * u).sum(dim=(1, 2)) / (u * u).sum(dim=(1, 2))  # (C,)
    return {
        "activation": outputs.pow(2).mean(dim=(1, 2)).sqrt(),
        "input_gradient_rms": grads.pow(2).mean(dim=(1, 2)).sqrt(),
        "input_gradient": coefficient.abs() * u.pow(2).mean(dim=(1, 2)).sqrt(),
    }


def _measure_probes(state: SweepState, adapters, gammas, seed_index, out: dict[str, torch.Tensor], step: int) -> None:
    """Write the coordinate metrics of the current adapters into ``out[name][:, step, layer]``."""
    probes = state.probes
    for layer, layer_adapters in enumerate(adapters):
        values = probe_metrics(
            state.flops,
            layer_adapters,
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


def _replica_runs(seeds: list[int]) -> int:
    """Return k when ``seeds`` is U runs of k equal consecutive entries, all runs distinct; else 1."""
    runs = []
    for seed in seeds:
        if runs and runs[-1][0] == seed:
            runs[-1][1] += 1
        else:
            runs.append([seed, 1])
    lengths = {length for _, length in runs}
    distinct = len({seed for seed, _ in runs}) == len(runs)
    return lengths.pop() if len(lengths) == 1 and distinct else 1


def _make_adapters(state: SweepState, rank: int, configurations: list[tuple[int, float]]):
    """Return each layer's adapters for one group, and the torch optimizer if it needs one."""
    config, flops = state.config, state.flops
    device, dtype = state.device, state.dtype
    count, seeds = len(configurations), [seed for seed, _ in configurations]

    if is_factored(config, rank):
        shared = _replica_runs(seeds)
        replicas = seeds[::shared]
        adapters = [
            FactoredAdapters(
                flops,
                torch.stack([state.adapter_rows[seed][layer][:rank] for seed in replicas]).to(device, dtype),
                shared,
                count,
                config.steps,
                config.batch,
                config.width,
            )
            for layer in range(config.depth)
        ]
        return adapters, None

    adapters = [
        DenseAdapters(
            flops,
            torch.stack([state.adapter_rows[seed][layer][:rank] for seed in seeds]).to(device, dtype),  # (C, r, d)
            torch.zeros(count, config.width, rank, device=device, dtype=dtype),  # (C, d, r)
        )
        for layer in range(config.depth)
    ]
    parameters = [layer.A for layer in adapters] + [layer.B for layer in adapters]
    return adapters, _make_optimizer(config, parameters)


def run_group(state: SweepState, rank: int, configurations: list[tuple[int, float]], progress=None) -> GroupResult:
    """Train every configuration of one rank for ``config.steps`` steps in lock-step.

    ``configurations`` lists (replica index, gamma) pairs. Returns host tensors.
    """
    config, flops = state.config, state.flops
    device, dtype = state.device, state.dtype
    phi, phi_prime, _ = activation_functions(config.activation)
    count, batch, width, depth = len(configurations), config.batch, config.width, config.depth

    seed_index = torch.tensor([seed for seed, _ in configurations], device=device)
    gammas = torch.tensor([g for _, g in configurations], device=device, dtype=dtype).view(count, 1, 1)

    adapters, optimizer = _make_adapters(state, rank, configurations)

    coordinate = {
        name: torch.full((count, config.coord_steps + 1, depth), math.nan, device=device, dtype=dtype)
        for name in COORDINATE_METRICS
    }
    grad_norm_A = torch.zeros(count, config.steps, depth, device=device, dtype=dtype)
    grad_norm_B = torch.zeros(count, config.steps, depth, device=device, dtype=dtype)
    losses = torch.zeros(count, config.steps, device=device, dtype=dtype)

    probes = state.probes
    for step in range(config.steps):
        # At a measured step the probe batch rides along in the adapter products, whose A
        # and B are the ones the probe measures: one pass over A or B serves both.
        measuring = step <= config.coord_steps
        probe_outputs, probe_grads = [None] * depth, [None] * depth

        # Forward: z_l = W_l h + gamma B_l A_l h.
        x = state.inputs[seed_index, step]  # (C, b, d)
        hiddens, pre_activations, scaled_projections = [], [], []
        hidden = x
        for layer in range(depth):
            hiddens.append(hidden)
            if layer == 0:
                base = state.first_layer_base[seed_index, step]
            else:
                base = flops.mm(hidden.reshape(count * batch, width), state.weights[layer].T).view(count, batch, width)
            if measuring:
                rows = torch.cat([hidden, probes.inputs[layer][seed_index]], dim=1)  # (C, 2b, d)
                scaled_rows = adapters[layer].project(rows) * gammas  # (C, 2b, r)
                expanded = adapters[layer].expand(scaled_rows)  # (C, 2b, d)
                scaled_projection = scaled_rows[:, :batch]
                z = base + expanded[:, :batch]
                probe_outputs[layer] = expanded[:, batch:]  # gamma B A x_m
            else:
                scaled_projection = adapters[layer].project(hidden) * gammas  # (C, b, r): gamma A h
                z = adapters[layer].expand(scaled_projection, base)  # (C, b, d): base + gamma B A h
            scaled_projections.append(scaled_projection)
            pre_activations.append(z)
            hidden = phi(z) if layer < depth - 1 else z

        # Backward and update, top layer first: each layer's A and B are updated as soon
        # as the gradient for the layer below has been taken through them. For the loss
        # mean_n 0.5 |z_n - y_n|^2, the top layer's dL/dz is (z - y) / b.
        grad_z = (hidden - state.targets[seed_index, step]).div_(batch)  # (C, b, d)
        for layer in reversed(range(depth)):
            hidden, scaled_projection = hiddens[layer], scaled_projections[layer]
            if measuring:
                columns = torch.cat([grad_z, probes.output_grads[layer][seed_index]], dim=1)  # (C, 2b, d)
                grad_rows = adapters[layer].pull_back_B(columns) * gammas  # (C, 2b, r): dL/d(A h), then gamma B^T v_m
                grad_projection = grad_rows[:, :batch]
            else:
                grad_projection = adapters[layer].pull_back_B(grad_z) * gammas  # (C, b, r): dL/d(A h)
            if layer > 0:
                base_grad = flops.mm(grad_z.reshape(count * batch, width), state.weights[layer]).view(count, batch, width)
                if measuring:
                    through_A = adapters[layer].pull_back_A(grad_rows)  # (C, 2b, d)
                    grad_hidden = base_grad + through_A[:, :batch]
                    probe_grads[layer] = through_A[:, batch:]  # gamma A^T B^T v_m
                else:
                    grad_hidden = adapters[layer].pull_back_A(grad_projection, base_grad)  # (C, b, d)
            elif measuring:
                probe_grads[layer] = adapters[layer].pull_back_A(grad_rows[:, batch:])  # before A's update below

            # ||grad_B||^2 = sum (V V^T) * (gA h)(gA h)^T and ||grad_A||^2 likewise, from b x b Grams.
            grad_gram = flops.bmm(grad_z, grad_z.transpose(1, 2))  # (C, b, b)
            if layer == depth - 1:
                # The loss 0.5/b sum_n |z_n - y_n|^2 is 0.5 b trace(V V^T), from the Gram at hand.
                losses[:, step] = 0.5 * batch * grad_gram.diagonal(dim1=1, dim2=2).sum(dim=1)
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
            _update(config, optimizer, adapters[layer], grad_z, scaled_projection, grad_projection, hidden)

            if layer > 0:
                grad_z = _activation_backward(config.activation, phi_prime, grad_hidden, pre_activations[layer - 1])
        if optimizer is not None:
            optimizer.step()
        if measuring:
            for layer in range(depth):
                directions = probes.directions[layer][seed_index]
                for name, value in _coordinate_values(probe_outputs[layer], probe_grads[layer], directions).items():
                    coordinate[name][:, step, layer] = value
        if progress is not None:
            progress.update(1)

    if config.coord_steps == config.steps:
        _measure_probes(state, adapters, gammas, seed_index, coordinate, config.steps)

    # The first step whose loss is not finite, found once on the device after the steps.
    not_finite = ~torch.isfinite(losses)  # (C, T)
    first = not_finite.to(torch.uint8).argmax(dim=1)  # argmax returns the first maximal index
    diverged_at = torch.where(not_finite.any(dim=1), first, torch.full_like(first, -1))

    return GroupResult(
        coordinate={name: values.cpu() for name, values in coordinate.items()},
        grad_norm_A=grad_norm_A.cpu(),
        grad_norm_B=grad_norm_B.cpu(),
        loss=losses.cpu(),
        diverged_at=diverged_at.cpu(),
    )


def _activation_backward(activation: str, phi_prime, grad: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
    """Return grad * phi'(pre_activation); for ReLU in one pass, with torch's own ReLU backward."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, pre_activation, 0.0)
    return grad * phi_prime(pre_activation)


def _update(config, optimizer, adapters, grad_z, scaled_projection, grad_projection, hidden) -> None:
    """Apply one optimizer step to one layer's adapters.

    grad_B = V^T (gamma A h) and grad_A = (dL/dAh)^T h, with V = dL/dz.
    """
    if config.optimizer == "sgd":
        adapters.sgd_step(config.learning_rate, grad_z, scaled_projection, grad_projection, hidden)
        return
    grad_A, grad_B = adapters.gradients(grad_z, scaled_projection, grad_projection, hidden)
    if config.optimizer == "signsgd":
        adapters.B.add_(grad_B.sign_(), alpha=-config.learning_rate)
        adapters.A.add_(grad_A.sign_(), alpha=-config.learning_rate)
        return
    # Adam and AdamW are elementwise, so one torch.optim instance over the batched
    # tensors equals one instance per configuration; it steps after all layers.
    adapters.B.grad, adapters.A.grad = grad_B, grad_A
