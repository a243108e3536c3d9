"""Run a whole rank sweep: draw the task, train every rank group, collect the arrays."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .adapters import storage_by_rank
from .config import ConfigError, SweepConfig
from .engine import FlopCounter, GroupResult, SweepState, compute_probes, run_group
from .metrics import COORDINATE_METRICS
from .model import draw_adapter_rows, draw_task
from .checkpoint import RunStore
from .plan import Plan, make_plan

__all__ = ["SweepResult", "configuration_id", "prepare_state", "resolve_device", "run_sweep"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:i`` into a device that exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:0") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:0")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} requested, but this torch build sees no CUDA device; pass --device cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name} requested, but only {torch.cuda.device_count()} CUDA device(s) exist; "
                f"pass --device cuda:0"
            )
    return device


@dataclass
class SweepResult:
    """Every measured number of a sweep, as arrays indexed [rank, scaling, seed, ...]."""

    config: SweepConfig
    coordinate: dict[str, np.ndarray]  # name -> (R, J, S, coord_steps + 1, L)
    grad_norm_A: np.ndarray  # (R, J, S, T, L)
    grad_norm_B: np.ndarray  # (R, J, S, T, L)
    loss: np.ndarray  # (R, J, S, T)
    diverged_at: np.ndarray  # (R, J, S): first step with a non-finite loss, -1 if none
    probes: dict[str, list[np.ndarray]] = field(default_factory=dict)  # float64 (S, b, d) per layer
    seconds: float = 0.0
    model_flops: int = 0
    device: str = "cpu"
    # One entry per group: rank, configurations, seconds (including the copy back to the host), storage.
    group_seconds: list[dict] = field(default_factory=list)
    computed_flops: int = 0  # FLOPs of the work done in this process (less than model_flops after --resume)
    resumed_groups: int = 0  # groups loaded from an earlier run instead of computed

    @classmethod
    def empty(cls, config: SweepConfig) -> "SweepResult":
        shape = (len(config.ranks), len(config.scalings), config.seeds)
        coordinate_shape = shape + (config.coord_steps + 1, config.depth)
        return cls(
            config=config,
            coordinate={name: np.full(coordinate_shape, np.nan) for name in COORDINATE_METRICS},
            grad_norm_A=np.full(shape + (config.steps, config.depth), np.nan),
            grad_norm_B=np.full(shape + (config.steps, config.depth), np.nan),
            loss=np.full(shape + (config.steps,), np.nan),
            diverged_at=np.full(shape, -1, dtype=np.int64),
        )

    def store(self, rank_index: int, members: list[tuple[int, int]], group: GroupResult) -> None:
        """Copy a group's results into place; ``members`` lists (scaling index, seed index)."""
        scaling_index = np.array([j for j, _ in members])
        seed_index = np.array([s for _, s in members])
        for name, values in group.coordinate.items():
            self.coordinate[name][rank_index, scaling_index, seed_index] = values.double().numpy()
        self.grad_norm_A[rank_index, scaling_index, seed_index] = group.grad_norm_A.double().numpy()
        self.grad_norm_B[rank_index, scaling_index, seed_index] = group.grad_norm_B.double().numpy()
        self.loss[rank_index, scaling_index, seed_index] = group.loss.double().numpy()
        self.diverged_at[rank_index, scaling_index, seed_index] = group.diverged_at.numpy()


def prepare_state(config: SweepConfig, device: torch.device) -> SweepState:
    """Draw the task and move everything that all rank groups share to the device."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    flops = FlopCounter()
    task = draw_task(config)

    weights = [w.to(device, dtype) for w in task.weights]
    inputs = task.inputs.to(device, dtype)
    targets = task.targets.to(device, dtype)
    seeds, steps, batch, width = inputs.shape
    first_layer_base = flops.mm(inputs.reshape(-1, width), weights[0].T).view(seeds, steps, batch, width)

    probes = compute_probes(weights, inputs[:, 0], targets[:, 0], config.activation, flops)
    adapter_rows = [
        [draw_adapter_rows(config, seed, layer).to(dtype) for layer in range(config.depth)]
        for seed in config.seed_list
    ]
    return SweepState(
        config=config,
        device=device,
        dtype=dtype,
        weights=weights,
        inputs=inputs,
        targets=targets,
        first_layer_base=first_layer_base,
        adapter_rows=adapter_rows,
        probes=probes,
        flops=flops,
    )


def _groups(config: SweepConfig, plan: Plan):
    """Yield (rank index, rank, start, members) with members as (scaling index, seed index) pairs."""
    members = [(j, s) for s in range(config.seeds) for j in range(len(config.scalings))]
    for rank_index, rank in enumerate(config.ranks):
        size = plan.chunk_sizes[rank]
        for start in range(0, len(members), size):
            yield rank_index, rank, start, members[start : start + size]


def configuration_id(config: SweepConfig, rank: int, scaling_index: int, seed_index: int) -> str:
    """Name one configuration in logs, e.g. ``rank=64/rslora/seed=1``."""
    return f"rank={rank}/{config.scalings[scaling_index].name}/seed={config.seed_list[seed_index]}"


def run_sweep(
    config: SweepConfig,
    *,
    show_progress: bool = True,
    plan: Plan | None = None,
    store: RunStore | None = None,
) -> SweepResult:
    """Run every rank group of ``config`` and return the measurements (no fits yet).

    With a ``store``, each finished group is saved at once, and groups already saved
    there are loaded instead of run again.
    """
    device = resolve_device(config.device)
    if plan is None:
        plan = make_plan(config, device)
    logger.info(
        "sweep: %d ranks x %d scalings x %d seeds on %s in %d groups",
        len(config.ranks),
        len(config.scalings),
        config.seeds,
        device,
        plan.groups,
    )
    if config.dtype == "float32" and device.type == "cuda":
        logger.info("float32 matmuls run in full precision (TF32 is left at torch's default)")

    started = time.perf_counter()
    state = prepare_state(config, device)
    result = SweepResult.empty(config)
    result.device = str(device)
    result.probes = {
        "inputs": [x.double().cpu().numpy() for x in state.probes.inputs],
        "output_grads": [v.double().cpu().numpy() for v in state.probes.output_grads],
    }

    groups = list(_groups(config, plan))
    storages = storage_by_rank(config)
    saved = {}
    if store is not None:
        for _, rank, start, _ in groups:
            loaded = store.load_group(rank, start)
            if loaded is not None:
                saved[(rank, start)] = loaded
        if saved:
            logger.info("resuming: %d of %d groups were already saved", len(saved), len(groups))

    result.model_flops = state.flops.total  # the shared work: data, probes, first layer
    result.computed_flops = state.flops.total
    result.resumed_groups = len(saved)
    progress = tqdm(
        total=(len(groups) - len(saved)) * config.steps,
        disable=not show_progress,
        unit="step",
        desc="sweep",
        dynamic_ncols=True,
        # Into a log file (not a terminal), redraw rarely rather than hundreds of times.
        mininterval=0.1 if sys.stderr.isatty() else 10.0,
    )
    with progress:
        for rank_index, rank, start, members in groups:
            if (rank, start) in saved:
                group, flops, seconds = saved[(rank, start)]
            else:
                progress.set_postfix_str(f"rank {rank}")
                configurations = [
                    (seed_index, config.scalings[j].gamma(config.alpha, rank)) for j, seed_index in members
                ]
                group_started, flops_before = time.perf_counter(), state.flops.total
                group = run_group(state, rank, configurations, progress)
                seconds, flops = time.perf_counter() - group_started, state.flops.total - flops_before
                result.computed_flops += flops
                if store is not None:
                    store.save_group(rank, start, group, flops, seconds)
                _log_divergence(config, rank, members, group)
            result.group_seconds.append(
                {"rank": rank, "configurations": len(members), "seconds": seconds, "storage": storages[rank]}
            )
            result.model_flops += flops
            result.store(rank_index, members, group)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - started
    return result


def _log_divergence(config: SweepConfig, rank: int, members, group: GroupResult) -> None:
    diverged = [
        f"{configuration_id(config, rank, j, seed_index)} at step {step}"
        for (j, seed_index), step in zip(members, group.diverged_at.tolist())
        if step >= 0
    ]
    if diverged:
        logger.warning("%d configuration(s) diverged: %s", len(diverged), ", ".join(diverged))
