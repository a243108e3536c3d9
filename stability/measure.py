"""One measured run of the benchmark: the batched sweep or the straightforward one.

Each function here is meant to run in a fresh process, so that the peak memory it
reports belongs to the sweep alone.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from .config import SweepConfig

__all__ = ["RESULT_ARRAYS", "run_baseline", "run_engine"]

RESULT_ARRAYS = ("loss", "grad_norm_A", "grad_norm_B")


def _resident_bytes() -> int:
    """Return the process's resident set size now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_resident_bytes()


def _peak_resident_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _result_arrays(result) -> dict[str, np.ndarray]:
    arrays = {name: getattr(result, name) for name in RESULT_ARRAYS}
    arrays.update({f"coordinate_{name}": values for name, values in result.coordinate.items()})
    return arrays


def warm_up_config(config: SweepConfig) -> SweepConfig:
    """Return a tiny sweep with the optimizer, storage, dtype and device of ``config``.

    Running it first pays the process's one-time costs (library loading, first calls of
    each kernel and of torch.optim), which would otherwise land on the first group. Both
    the engine and the baseline run it before they are timed.
    """
    return replace(config, ranks=[1, 2], width=8, depth=config.depth, batch=2, steps=2, coord_steps=1,
                   fit_steps=[1], seeds=1, max_memory_bytes=None, allow_rank_above_width=False)


def run_engine(
    config: SweepConfig, show_progress: bool = False, trial_seconds: float = 0.02
) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the batched sweep, then time each of its products alone; return (summary, arrays).

    Call it in a fresh process: the peak memory it reports is the process's peak.
    ``trial_seconds`` is the length of each timed trial of one product (see time_products).
    """
    import torch
    from tqdm import tqdm

    from .flops import record_products
    from .plan import make_plan, measure_gemm_rate, measure_read_bandwidth, time_products
    from .sweep import resolve_device, run_sweep

    device = resolve_device(config.device)
    plan = make_plan(config, device)
    run_sweep(warm_up_config(config), show_progress=False)
    # NOTE: the CUDA branches here have not run on a GPU yet; scripts/gpu_check.sh runs them.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    resident_before = _resident_bytes()
    load_before = os.getloadavg()[0]

    with record_products() as products:
        result = run_sweep(config, show_progress=show_progress, plan=plan)

    if device.type == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated(device)
    else:
        peak_bytes = _peak_resident_bytes() - resident_before
    load_after = os.getloadavg()[0]

    # The sweep's tensors are freed now, so timing the products alone does not add to its peak.
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    bar = tqdm(total=len(products), desc="matmul rate", unit="shape", disable=not show_progress, dynamic_ncols=True)
    with bar:
        seconds_per_call = time_products(products, device, dtype, trial_seconds=trial_seconds, progress=bar)
    product_seconds = sum(count * seconds_per_call[shape] for shape, count in products.items())
    product_flops = sum(count * shape.flops for shape, count in products.items())
    gemm_rate = measure_gemm_rate(device, dtype, size=config.width)
    largest_adapter = max(plan.chunk_sizes.values()) * max(config.ranks) * config.width  # one layer's A, (C, r, d)
    read_bandwidth = measure_read_bandwidth(device, dtype, largest_adapter)

    summary = {
        "seconds": result.seconds,
        "model_flops": result.model_flops,
        "planned_flops": plan.model_flops,
        "group_seconds": result.group_seconds,
        "peak_bytes": peak_bytes,
        "planned_peak_bytes": plan.peak_bytes,
        "product_seconds": product_seconds,
        "product_flops": product_flops,
        "matmul_rate": product_flops / product_seconds,
        "gemm_rate": gemm_rate,
        "read_bandwidth": read_bandwidth,
        "product_shapes": len(products),
        # Each kind of product, the one taking the most time first.
        "products": sorted(
            (
                {**asdict(shape), "calls": count, "seconds_per_call": seconds_per_call[shape]}
                for shape, count in products.items()
            ),
            key=lambda product: -product["calls"] * product["seconds_per_call"],
        ),
        "load_average": [load_before, load_after],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    return summary, _result_arrays(result)


def run_baseline(config: SweepConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the straightforward implementation on the CPU; return (summary, arrays)."""
    from .baseline import run_reference_sweep

    run_reference_sweep(warm_up_config(config))
    resident_before = _resident_bytes()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_reference_sweep(config)
    seconds = time.perf_counter() - started
    summary = {
        "seconds": seconds,
        "peak_bytes": _peak_resident_bytes() - resident_before,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    return summary, _result_arrays(result)
