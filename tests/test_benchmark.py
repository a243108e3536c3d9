"""The benchmark's code path: engine against baseline, product tallies, timing helpers, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stability.benchmark import compare_results, fit_group_seconds, format_table
from stability.measure import run_baseline, run_engine
from stability.config import SweepConfig
from conftest import small_config

from stability.flops import ProductShape, record_products
from stability.plan import count_model_flops, time_products
from stability.sweep import run_sweep

REPOSITORY = Path(__file__).resolve().parent.parent


def tiny_config(**overrides) -> SweepConfig:
    """Return the small test sweep with 5 steps, in float32 unless a test requests float64."""
    values = dict(steps=5, dtype="float32")
    values.update(overrides)
    return small_config(**values)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_engine_agrees_with_baseline(dtype):
    config = tiny_config(dtype=dtype)
    engine_summary, engine_arrays = run_engine(config, trial_seconds=1e-4)
    _, baseline_arrays = run_baseline(config)
    agreement = compare_results(engine_arrays, baseline_arrays, rtol=1e-10 if dtype == "float64" else 1e-4)
    assert agreement["agree"], agreement
    assert engine_summary["model_flops"] == count_model_flops(config)
    assert engine_summary["product_flops"] == engine_summary["model_flops"]


def test_engine_agrees_with_baseline_on_rank_subset():
    # A --baseline-ranks run draws A for its own largest rank. The first rows of that draw
    # must equal the full grid's, so that the engine's groups of those ranks compare directly.
    config = tiny_config(dtype="float64")
    subset = tiny_config(dtype="float64", ranks=[1, 4])
    _, engine_arrays = run_engine(config, trial_seconds=1e-4)
    _, baseline_arrays = run_baseline(subset)
    index = [config.ranks.index(rank) for rank in subset.ranks]
    engine_subset = {name: values[index] for name, values in engine_arrays.items()}
    assert compare_results(engine_subset, baseline_arrays, rtol=1e-10)["agree"]


def test_compare_results_detects_difference():
    reference = {"loss": np.array([[1.0, 2.0], [3.0, 4.0]])}
    shifted = {"loss": reference["loss"] * np.array([[1.0, 1.0], [1.0, 1.01]])}
    agreement = compare_results(shifted, reference, rtol=1e-3)
    assert not agreement["agree"]
    assert agreement["metric"] == "loss"
    assert agreement["max_relative_difference"] == pytest.approx(0.01)


def test_compare_results_detects_divergence_mismatch():
    reference = {"loss": np.array([1.0, 2.0])}
    diverged = {"loss": np.array([1.0, np.nan])}
    assert not compare_results(diverged, reference, rtol=1e-3)["agree"]


def test_compare_results_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        compare_results({"loss": np.zeros(3)}, {"loss": np.zeros(4)}, rtol=1e-3)


def test_group_fit_recovers_line():
    groups = [{"rank": rank, "configurations": 9, "seconds": 1.5 + 0.002 * rank} for rank in (1, 4, 16, 64, 256)]
    groups.append({"rank": 512, "configurations": 3, "seconds": 100.0})  # a smaller chunk: left out
    fit = fit_group_seconds(groups)
    assert fit["intercept"] == pytest.approx(1.5)
    assert fit["slope"] == pytest.approx(0.002)
    assert fit["r_squared"] == pytest.approx(1.0)
    assert fit["points"] == 5


def test_group_fit_needs_three_ranks():
    # Two points fit any line exactly, so they give no fit.
    fit = fit_group_seconds([{"rank": 8, "configurations": 9, "seconds": 1.0},
                             {"rank": 16, "configurations": 9, "seconds": 2.0}])
    assert fit["slope"] is None


def test_table_signs_negative_slope():
    groups = [{"rank": rank, "configurations": 9, "seconds": 2.0 - 0.001 * rank, "storage": "dense"}
              for rank in (1, 2, 4, 8)]
    fit = fit_group_seconds(groups)
    summary = {
        "model_flops": 10**9, "planned_flops": 10**9, "dense_flops": 10**9,
        "seconds": {"median": 1.0, "min": 1.0, "max": 1.0, "values": [1.0]},
        "achieved_flops_per_second": {"median": 1e9}, "matmul_rate": {"median": 1e9, "min": 1e9, "max": 1e9},
        "efficiency": {"median": 1.0, "min": 1.0, "max": 1.0, "values": [1.0]}, "gemm_rate": {"median": 1e9},
        "efficiency_of_gemm_rate": 1.0, "read_bandwidth": {"median": 1e9},
        "peak_bytes": {"median": 1}, "planned_peak_bytes": 1, "peak_over_plan": 1.0,
        "group_seconds": groups, "group_fit": fit, "group_fits_by_storage": {"dense": fit},
    }
    table = format_table(tiny_config(), summary, "machine", "cpu")
    assert "seconds = 2.000 - 1.0000 ms x rank" in table
    assert "+ -" not in table
    assert "with dense adapters" not in table  # the same FLOPs: not repeated
    assert "1.00 s (1 run)" in table
    assert "100% to 100%" not in table  # one run has no range


def test_recorded_products_add_up_to_flop_count():
    config = tiny_config(optimizer="adam", learning_rate=1e-2, depth=3)
    with record_products() as products:
        result = run_sweep(config, show_progress=False)
    assert sum(count * shape.flops for shape, count in products.items()) == result.model_flops
    assert result.model_flops == count_model_flops(config)


def test_recorded_products_keep_layouts():
    config = tiny_config(ranks=[3])
    with record_products() as products:
        run_sweep(config, show_progress=False)
    # The forward adapter product h A^T reads A (C, r, d) as a transposed view.
    forward = ProductShape("bmm", 6, 4, 16, 3, False, True)
    assert products[forward] > 0
    # The SGD update of B adds V^T (gamma A h): a transposed (C, d, b) left operand.
    update = ProductShape("baddbmm_", 6, 16, 4, 3, True, False)
    assert products[update] == config.steps * config.depth


def test_time_products_times_each_shape():
    shapes = [
        ProductShape("mm", 1, 8, 32, 16, False, True),
        ProductShape("bmm", 3, 4, 32, 5, False, True),
        ProductShape("bmm", 3, 4, 5, 32, True, False),
        ProductShape("baddbmm_", 3, 32, 4, 5, True, False),
    ]
    seconds = time_products(shapes, torch.device("cpu"), torch.float32, trial_seconds=0.001, trials=2)
    assert set(seconds) == set(shapes)
    for shape in shapes:
        assert seconds[shape] > 0


def test_time_products_rejects_unknown_operation():
    with pytest.raises(ValueError, match="unknown product operation"):
        time_products([ProductShape("einsum", 1, 2, 2, 2, False, False)], torch.device("cpu"), torch.float32)


def test_cli_writes_json(tmp_path):
    output = tmp_path / "benchmark.json"
    command = [
        sys.executable, "-m", "stability.benchmark", "--ranks", "1..32", "--width", "32", "--steps", "3",
        "--seeds", "1", "--batch", "4", "--device", "cpu", "--repeats", "1", "--quiet", "--out", str(output),
    ]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "speedup" in completed.stdout
    record = json.loads(output.read_text())
    summary = record["summary"]
    assert summary["model_flops"] == summary["planned_flops"]
    assert summary["baseline"]["agreement"]["agree"]
    # batch 4 x 3 steps = 12 factor rows: ranks 8 to 32 are factored, each form gets its own line.
    assert [group["rank"] for group in summary["group_seconds"]] == [1, 2, 4, 8, 16, 32]
    assert [group["storage"] for group in summary["group_seconds"]] == ["dense"] * 3 + ["factored"] * 3
    assert set(summary["group_fits_by_storage"]) == {"dense", "factored"}
    assert "group cost, factored groups" in completed.stdout
    assert record["config"]["width"] == 32


def test_cli_rejects_baseline_rank_outside_grid():
    command = [sys.executable, "-m", "stability.benchmark", "--ranks", "1..4", "--baseline-ranks", "8"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "--baseline-ranks" in completed.stderr


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@requires_cuda
@pytest.mark.parametrize(
    "optimizer, learning_rate, storage", [("sgd", 0.05, "dense"), ("sgd", 0.05, "factored"), ("adam", 1e-2, "auto")]
)
def test_engine_on_cuda_agrees_with_baseline(optimizer, learning_rate, storage):
    config = tiny_config(dtype="float64", device="cuda", optimizer=optimizer, learning_rate=learning_rate,
                         adapter_storage=storage)
    _, engine_arrays = run_engine(config, trial_seconds=1e-4)
    _, baseline_arrays = run_baseline(config)
    agreement = compare_results(engine_arrays, baseline_arrays, rtol=1e-9)
    assert agreement["agree"], agreement


class _SyncGuard:
    """A progress object that makes every synchronising CUDA call raise after the first step.

    run_group calls update(1) after each step. The guard sets torch's sync debug mode to
    "error" after step 0 and back to "default" after the last step. So steps 1 to T-1 run
    under it, and the copies back to the host after the loop do not.
    """

    def __init__(self, steps: int):
        self.steps, self.done = steps, 0

    def update(self, count: int) -> None:
        self.done += count
        torch.cuda.set_sync_debug_mode("error" if self.done < self.steps else "default")


@requires_cuda
@pytest.mark.parametrize(
    "optimizer, learning_rate, storage",
    [("sgd", 0.05, "dense"), ("sgd", 0.05, "factored"), ("adam", 1e-2, "auto"), ("signsgd", 1e-2, "auto")],
)
def test_cuda_steps_do_not_synchronise(optimizer, learning_rate, storage):
    from stability.engine import run_group
    from stability.sweep import prepare_state

    config = tiny_config(device="cuda", optimizer=optimizer, learning_rate=learning_rate, steps=6,
                         adapter_storage=storage)
    state = prepare_state(config, torch.device("cuda"))
    configurations = [(seed, rule.gamma(config.alpha, 8)) for seed in range(config.seeds) for rule in config.scalings]
    try:
        group = run_group(state, 8, configurations, progress=_SyncGuard(config.steps))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(group.loss).all()
