"""The straightforward implementation of a sweep, kept as the engine's reference.

One ``torch.nn`` model per configuration, a LoRA module on every layer, autograd for
every gradient, ``torch.optim`` for the updates, and Python loops over ranks,
scaling rules and seeds. It computes the same metrics as the batched engine from the
same random draws, so the tests can require equal numbers and the benchmark can time
both on the same grid.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SweepConfig
from .metrics import COORDINATE_METRICS
from .model import activation_functions, draw_adapter_rows, draw_task
from .sweep import SweepResult

__all__ = ["LoraLinear", "LoraMLP", "run_reference_sweep"]


class LoraLinear(nn.Module):
    """A frozen linear layer plus ``gamma * B A``, as HF PEFT's LoRA layer computes it."""

    def __init__(self, weight: torch.Tensor, adapter_init: torch.Tensor, gamma: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.lora_A = nn.Parameter(adapter_init.clone())  # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], adapter_init.shape[0], dtype=weight.dtype))
        self.gamma = gamma

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * (x @ self.lora_A.T) @ self.lora_B.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.adapter(x)


class LoraMLP(nn.Module):
    def __init__(self, weights, adapter_inits, gamma: float, activation: str):
        super().__init__()
        self.layers = nn.ModuleList(LoraLinear(w, a, gamma) for w, a in zip(weights, adapter_inits))
        self.phi = activation_functions(activation)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = self.phi(x)
        return x


class SignSGD(torch.optim.Optimizer):
    """theta <- theta - lr * sign(grad)."""

    def __init__(self, parameters, lr: float):
        super().__init__(parameters, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.add_(parameter.grad.sign(), alpha=-group["lr"])


def _optimizer(config: SweepConfig, parameters):
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.learning_rate)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.learning_rate)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return SignSGD(parameters, lr=config.learning_rate)


def _probes(weights, inputs, targets, activation):
    """Layer inputs and output gradients of the base network on one batch, by autograd."""
    phi = activation_functions(activation)[0]
    layer_inputs, pre_activations = [], []
    hidden = inputs.clone().requires_grad_(True)  # so that autograd tracks every z
    for index, weight in enumerate(weights):
        layer_inputs.append(hidden)
        z = hidden @ weight.T
        z.retain_grad()
        pre_activations.append(z)
        hidden = phi(z) if index < len(weights) - 1 else z
    loss = 0.5 * (hidden - targets).pow(2).sum() / inputs.shape[0]
    loss.backward()
    return [x.detach() for x in layer_inputs], [z.grad.detach() for z in pre_activations]


def run_reference_sweep(config: SweepConfig) -> SweepResult:
    """Run ``config`` one configuration at a time on the CPU; returns the same arrays as run_sweep."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    task = draw_task(config)
    weights = [w.to(dtype) for w in task.weights]
    inputs, targets = task.inputs.to(dtype), task.targets.to(dtype)
    result = SweepResult.empty(config)
    adapter_rows = [[draw_adapter_rows(config, seed, layer).to(dtype) for layer in range(config.depth)]
                    for seed in config.seed_list]

    for s in range(config.seeds):
        probe_inputs, probe_grads = _probes(weights, inputs[s, 0], targets[s, 0], config.activation)
        for i, rank in enumerate(config.ranks):
            for j, rule in enumerate(config.scalings):
                model = LoraMLP(weights, [rows[:rank] for rows in adapter_rows[s]], rule.gamma(config.alpha, rank),
                                config.activation)
                optimizer = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
                for step in range(config.steps + 1):
                    if step <= config.coord_steps:
                        _record_probes(result, model, probe_inputs, probe_grads, (i, j, s), step)
                    if step == config.steps:
                        break
                    loss = 0.5 * (model(inputs[s, step]) - targets[s, step]).pow(2).sum() / config.batch
                    optimizer.zero_grad()
                    loss.backward()
                    result.loss[i, j, s, step] = loss.item()
                    if not torch.isfinite(loss) and result.diverged_at[i, j, s] < 0:
                        result.diverged_at[i, j, s] = step
                    for layer_index, layer in enumerate(model.layers):
                        result.grad_norm_A[i, j, s, step, layer_index] = layer.lora_A.grad.norm().item()
                        result.grad_norm_B[i, j, s, step, layer_index] = layer.lora_B.grad.norm().item()
                    optimizer.step()
    return result


def _record_probes(result: SweepResult, model: LoraMLP, probe_inputs, probe_grads, index, step) -> None:
    """Apply each adapter to the probe batch and store the coordinate metrics."""
    i, j, s = index
    for layer_index, layer in enumerate(model.layers):
        x = probe_inputs[layer_index].clone().requires_grad_(True)
        v = probe_grads[layer_index]
        outputs = layer.adapter(x)
        (grads,) = torch.autograd.grad((outputs * v).sum(), x)  # gamma A^T B^T v_m for every m
        directions = (v @ v.T) @ probe_inputs[layer_index]  # u_m = sum_n (v_m . v_n) x_n
        coefficient = (grads * directions).sum() / directions.pow(2).sum()
        values = {
            "activation": outputs.detach().pow(2).mean().sqrt(),
            "input_gradient_rms": grads.pow(2).mean().sqrt(),
            "input_gradient": coefficient.abs() * directions.pow(2).mean().sqrt(),
        }
        for name in COORDINATE_METRICS:
            result.coordinate[name][i, j, s, step, layer_index] = values[name].item()
