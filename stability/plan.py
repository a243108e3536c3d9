"""Memory and FLOP estimates of a sweep, made before anything is allocated.

The engine trains all configurations of one rank together; when they do not fit in
the memory budget, they are split into chunks. The FLOP count here repeats, product
by product, what the engine runs (the tests check both against torch's own counter).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass

import torch

from .config import SweepConfig
from .adapters import is_factored
from .flops import ProductShape

__all__ = [
    "Plan",
    "PlanError",
    "available_memory",
    "count_model_flops",
    "drawing_bytes",
    "format_bytes",
    "make_plan",
    "measure_matmul_rate",
    "measure_gemm_rate",
    "measure_read_bandwidth",
    "time_products",
]

# Share of the free memory a sweep may plan to use when --max-memory is not given.
_FREE_MEMORY_SHARE = 0.8


class PlanError(ValueError):
    """A sweep that cannot fit in memory; the message gives the estimate and a way out."""


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def available_memory(device: torch.device) -> int:
    """Return the bytes free on ``device`` now (host memory for the CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # NOTE: outside Linux the free memory is unknown; assume half of the physical memory.
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _element_size(config: SweepConfig) -> int:
    return 8 if config.dtype == "float64" else 4


def _holds_adapter_rows(device: torch.device | None) -> bool:
    """Return True when the drawn A rows live in the memory being planned (host memory, so the CPU)."""
    return device is None or device.type == "cpu"


def shared_bytes(config: SweepConfig, device: torch.device | None = None) -> int:
    """Bytes held for the whole sweep: base weights, data, probes and, on the CPU, the drawn A rows.

    On CUDA the A rows stay in host memory and each group copies its prefix to the device.
    """
    d, b, seeds, depth = config.width, config.batch, config.seeds, config.depth
    elements = depth * d * d  # frozen weights
    elements += 3 * seeds * config.steps * b * d  # inputs, targets, first-layer base outputs
    elements += 3 * depth * seeds * b * d  # probes
    if _holds_adapter_rows(device):
        elements += seeds * depth * max(config.ranks) * d  # A rows, every rank's A is a prefix
    return elements * _element_size(config)


def drawing_bytes(config: SweepConfig) -> int:
    """Estimate the host bytes at peak while the task is drawn, before any group trains.

    ``draw_task`` works in float64. It keeps each layer's base and teacher weights and
    needs about three more d x d temporaries for the layer it draws. The inputs and the
    teacher's hidden states add about four (S, T, b, d) arrays. The cast copies and
    the A rows that ``prepare_state`` keeps come on top.
    """
    d, depth = config.width, config.depth
    data = config.seeds * config.steps * config.batch * d
    float64_elements = (2 * depth + 3) * d * d + 4 * data
    return 8 * float64_elements + shared_bytes(config, torch.device("cpu"))


def bytes_per_configuration(config: SweepConfig, rank: int) -> int:
    """Bytes one configuration of ``rank`` needs on the device while it trains.

    For factored adapters this leaves out A_0, which ``group_bytes`` counts once per
    replica.
    """
    d, b, depth = config.width, config.batch, config.depth
    parameters = 2 * depth * rank * d
    if is_factored(config, rank):
        elements = depth * 2 * b * config.steps * (d + rank)  # the factors X, G (t b, d) and P, Q (t b, r)
    elif config.optimizer in ("adam", "adamw"):
        elements = parameters * 4  # parameters, gradients, two moment estimates
    elif config.optimizer == "signsgd":
        elements = parameters + 2 * rank * d  # one layer's gradients at a time
    else:
        elements = parameters  # SGD updates in place from the batch factors
    elements += depth * (8 * b * d + 4 * b * rank)  # activations and backward temporaries
    return elements * _element_size(config)


def group_bytes(config: SweepConfig, rank: int, count: int) -> int:
    """Bytes a group of ``count`` configurations of ``rank`` needs on the device while it trains.

    Factored adapters hold one A_0 per replica when the group is whole replicas (a
    multiple of the number of scaling rules, as ``make_plan`` chooses), else one per
    configuration.
    """
    total = count * bytes_per_configuration(config, rank)
    if is_factored(config, rank):
        rules = len(config.scalings)
        initial_copies = count // rules if count % rules == 0 else count
        total += initial_copies * config.depth * rank * config.width * _element_size(config)
    return total


def _step_rows(config: SweepConfig, step: int) -> int:
    """Rows in each adapter product at ``step``: the batch, and the probe batch at a measured step."""
    return 2 * config.batch if step <= config.coord_steps and step < config.steps else config.batch


def _factored_flops(config: SweepConfig, rank: int) -> int:
    """FLOPs of one configuration's adapter products with factored adapters, over all steps."""
    d, b, r, depth, steps = config.width, config.batch, rank, config.depth, config.steps
    total = 0
    for step in range(steps):
        filled, rows = b * step, _step_rows(config, step)
        for layer in range(depth):
            # Rows through A_0 on the way back: the gradient (and probe) rows above layer 0;
            # at layer 0 only the probe's rows at a measured step.
            back_rows = rows if layer > 0 else rows - b
            total += 2 * (rows + back_rows) * d * r + 4 * b * b * (d + r)  # A_0 products and the Grams
            if filled:
                total += (6 * rows + 2 * back_rows) * filled * (d + r)
    if config.coord_steps == config.steps:  # a last probe measurement after the final step
        total += depth * (4 * b * d * r + 8 * b * b * steps * (d + r))
    return total


def _dense_flops(config: SweepConfig, rank: int) -> int:
    """FLOPs of one configuration's adapter products with dense adapters, over all steps."""
    d, b, r, depth = config.width, config.batch, rank, config.depth
    per_step = depth * (10 * b * d * r + 4 * b * b * (d + r)) + (depth - 1) * 2 * b * d * r
    probe_measurements = config.coord_steps + 1
    return config.steps * per_step + probe_measurements * depth * 8 * b * d * r


def count_model_flops(config: SweepConfig) -> int:
    """Count the FLOPs of every matrix product the engine runs for the sweep (2 m n k each).

    The count does not depend on how configurations are chunked: every product is
    batched over configurations, or over replicas for A_0 in factored form, so its
    FLOPs add up the same.
    """
    d, b, seeds, depth, steps = config.width, config.batch, config.seeds, config.depth, config.steps
    configurations = len(config.scalings) * seeds

    # Probes: forward and backward of the base network on the first batch, then u = (V V^T) X.
    total = 2 * seeds * b * d * d * depth + 2 * seeds * b * d * d * (depth - 1) + 4 * seeds * b * b * d * depth
    total += 2 * seeds * steps * b * d * d  # the first layer's base output, shared by all configurations

    for rank in config.ranks:
        base = steps * (depth - 1) * 4 * b * d * d  # base forward and backward above the first layer
        adapters = _factored_flops(config, rank) if is_factored(config, rank) else _dense_flops(config, rank)
        total += configurations * (base + adapters)
    return total


@dataclass
class Plan:
    """A sweep's schedule: chunk sizes per rank, estimated peak memory and FLOPs."""

    chunk_sizes: dict[int, int]  # rank -> configurations trained together
    configurations: int  # scaling rules x replicas, per rank
    peak_bytes: int
    budget_bytes: int
    model_flops: int

    @property
    def groups(self) -> int:
        return sum(-(-self.configurations // size) for size in self.chunk_sizes.values())


def make_plan(config: SweepConfig, device: torch.device) -> Plan:
    """Size the chunks to the memory budget, or raise PlanError if one configuration cannot fit."""
    budget = config.max_memory_bytes
    if budget is None:
        budget = int(available_memory(device) * _FREE_MEMORY_SHARE)
    configurations = len(config.scalings) * config.seeds
    shared = shared_bytes(config, device)

    # On the CPU the float64 task drawing is part of the same memory, before training starts.
    peak = drawing_bytes(config) if device.type == "cpu" else shared
    if peak > budget:
        raise PlanError(
            f"drawing the task needs about {format_bytes(peak)} (width {config.width}, {config.steps} steps, "
            f"{config.seeds} seeds), but the budget is {format_bytes(budget)}; lower --width, --steps or --seeds, "
            f"or raise --max-memory if more memory is free"
        )
    chunk_sizes = {}
    for rank in config.ranks:
        fits = _largest_group(config, rank, configurations, budget - shared)
        if fits < 1:
            needed = shared + group_bytes(config, rank, 1)
            raise PlanError(
                f"the sweep needs about {format_bytes(needed)} at rank {rank} (width {config.width}, "
                f"{config.optimizer}), but the budget is {format_bytes(budget)}; lower the largest rank "
                f"and --width, use --optimizer sgd, or raise --max-memory if more memory is free"
            )
        chunk_sizes[rank] = fits
        peak = max(peak, shared + group_bytes(config, rank, fits))

    return Plan(chunk_sizes, configurations, peak, budget, count_model_flops(config))


def _largest_group(config: SweepConfig, rank: int, configurations: int, budget: int) -> int:
    """Return the most configurations of ``rank`` (at most ``configurations``) that fit in ``budget`` bytes.

    Factored groups prefer whole replicas (multiples of the number of scaling rules),
    whose configurations share one A_0.
    """
    per_configuration = bytes_per_configuration(config, rank)
    if not is_factored(config, rank):
        return int(min(configurations, max(budget, 0) // per_configuration))
    rules = len(config.scalings)
    whole = [count for count in range(rules, configurations + 1, rules) if group_bytes(config, rank, count) <= budget]
    if whole:
        return whole[-1]
    return max((count for count in range(1, rules) if group_bytes(config, rank, count) <= budget), default=0)


def measure_matmul_rate(config: SweepConfig, device: torch.device, seconds: float = 0.5) -> float:
    """Time the sweep's two main products on ``device`` and return their FLOP/s.

    The products are the adapter's batched (C, b, d) x (C, d, r) at the largest rank
    and the base layer's (C b, d) x (d, d), with C the configurations of one rank. With
    factored adapters the first is the product with A_0, one per replica over the rows
    of all its scaling rules: (S, J b, d) x (S, d, r).
    """
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    count = len(config.scalings) * config.seeds
    rank, width, batch = max(config.ranks), config.width, config.batch
    adapters, rows = (config.seeds, count * batch // config.seeds) if is_factored(config, rank) else (count, batch)
    generator = torch.Generator(device="cpu").manual_seed(0)
    adapter = torch.randn(adapters, rank, width, generator=generator, dtype=dtype).to(device)
    hidden = torch.randn(count * batch, width, generator=generator, dtype=dtype).to(device)
    weight = torch.randn(width, width, generator=generator, dtype=dtype).to(device)
    flops_per_round = 2 * count * batch * width * rank + 2 * count * batch * width * width

    def one_round():
        torch.bmm(hidden.view(adapters, rows, width), adapter.transpose(1, 2))
        hidden @ weight.T

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one_round()  # warm-up: first-call allocations and kernel selection
    synchronise()
    rounds, started = 0, time.perf_counter()
    while True:
        one_round()
        rounds += 1
        synchronise()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return rounds * flops_per_round / elapsed


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_per_call(call, device: torch.device, trial_seconds: float, trials: int) -> float:
    """Return the median seconds of one ``call`` over ``trials`` timed trials, after a warm-up.

    Each trial repeats the call until it has run for about ``trial_seconds``, so that
    short products are not timed below the clock's and the launch's resolution.
    """
    call()  # warm-up: first-call allocations and kernel selection
    _synchronise(device)
    started = time.perf_counter()
    call()
    _synchronise(device)
    single = time.perf_counter() - started
    calls = max(1, math.ceil(trial_seconds / max(single, 1e-9)))

    per_call = []
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        _synchronise(device)
        per_call.append((time.perf_counter() - started) / calls)
    return statistics.median(per_call)


def _operand(batch: int | None, rows: int, columns: int, transposed: bool, device, dtype, generator) -> torch.Tensor:
    """Return a (batch,) rows x columns operand, stored transposed when ``transposed``."""
    stored = (columns, rows) if transposed else (rows, columns)
    if batch is not None:
        stored = (batch, *stored)
    values = torch.empty(stored, device=device, dtype=dtype).uniform_(-1.0, 1.0, generator=generator)
    values /= math.sqrt(max(rows, columns))  # keeps repeated in-place updates far from overflow
    return values.transpose(-1, -2) if transposed else values


def time_products(
    products,
    device: torch.device,
    dtype: torch.dtype,
    *,
    trial_seconds: float = 0.02,
    trials: int = 3,
    progress=None,
) -> dict[ProductShape, float]:
    """Time each ProductShape alone, with the engine's torch call and operand layouts.

    Returns the median seconds per call. ``progress``, if given, is a tqdm bar that
    advances by one per shape.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = {}
    for shape in products:
        batch = None if shape.operation == "mm" else shape.batch
        left = _operand(batch, shape.m, shape.k, shape.left_transposed, device, dtype, generator)
        right = _operand(batch, shape.k, shape.n, shape.right_transposed, device, dtype, generator)
        if shape.operation == "baddbmm_":
            out = _operand(batch, shape.m, shape.n, False, device, dtype, generator)

            def call(out=out, left=left, right=right):
                out.baddbmm_(left, right, alpha=-1e-3)

        elif shape.operation == "baddbmm":
            added = _operand(batch, shape.m, shape.n, False, device, dtype, generator)

            def call(added=added, left=left, right=right):
                torch.baddbmm(added, left, right)

        elif shape.operation == "bmm":

            def call(left=left, right=right):
                torch.bmm(left, right)

        elif shape.operation == "mm":

            def call(left=left, right=right):
                torch.mm(left, right)

        else:
            raise ValueError(f"unknown product operation {shape.operation!r}")
        seconds[shape] = _seconds_per_call(call, device, trial_seconds, trials)
        del left, right, call
        if progress is not None:
            progress.update(1)
    return seconds


def measure_gemm_rate(device: torch.device, dtype: torch.dtype, size: int = 4096, rows: int = 1024) -> float:
    """Return the FLOP/s of one (rows x size) @ (size x size) product, a near-peak GEMM for context."""
    shape = ProductShape("mm", 1, rows, size, size, False, False)
    seconds = time_products([shape], device, dtype, trial_seconds=0.1)[shape]
    return shape.flops / seconds


def measure_read_bandwidth(device: torch.device, dtype: torch.dtype, elements: int) -> float:
    """Return the bytes per second at which ``device`` sums a tensor of ``elements`` entries.

    A sum reads each entry once and writes almost nothing, so this is close to the
    memory's read bandwidth when the tensor is much larger than the caches. It bounds
    the skinny adapter products, which read A or B once and do 2 b FLOPs per entry.
    """
    values = torch.empty(elements, device=device, dtype=dtype).uniform_(-1.0, 1.0)
    seconds = _seconds_per_call(values.sum, device, trial_seconds=0.05, trials=3)
    return elements * values.element_size() / seconds
