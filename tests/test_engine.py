"""The batched engine against the plain reference, hand-computed metrics, and FLOP counts."""

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import small_config

from stability.adapters import DenseAdapters
from stability.baseline import run_reference_sweep
from stability.engine import FlopCounter, probe_metrics
from stability.model import draw_task
from stability.plan import count_model_flops, make_plan
from stability.scaling import parse_scaling_rules
from stability.sweep import run_sweep


def assert_results_equal(fast, reference, rtol=1e-10):
    for name in fast.coordinate:
        np.testing.assert_allclose(fast.coordinate[name], reference.coordinate[name], rtol=rtol, atol=1e-300, err_msg=name)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=rtol)
    np.testing.assert_allclose(fast.grad_norm_A, reference.grad_norm_A, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(fast.grad_norm_B, reference.grad_norm_B, rtol=rtol, atol=1e-300)
    np.testing.assert_array_equal(fast.diverged_at, reference.diverged_at)


@pytest.mark.parametrize(
    "optimizer, learning_rate",
    [("sgd", 0.05), ("adam", 1e-2), ("adamw", 1e-2), ("signsgd", 1e-2)],
)
def test_engine_matches_reference(optimizer, learning_rate):
    config = small_config(optimizer=optimizer, learning_rate=learning_rate)
    assert_results_equal(run_sweep(config, show_progress=False), run_reference_sweep(config))


def test_engine_matches_reference_deep_tanh():
    config = small_config(depth=3, activation="tanh", init="gaussian", ranks=[3, 16], seeds=1)
    assert_results_equal(run_sweep(config, show_progress=False), run_reference_sweep(config))


@pytest.mark.parametrize("ranks", [[1, 2, 4, 8], [3, 16]])
def test_factored_adapters_match_reference(ranks):
    config = small_config(adapter_storage="factored", ranks=ranks)
    assert_results_equal(run_sweep(config, show_progress=False), run_reference_sweep(config), rtol=1e-9)


def test_factored_adapters_match_reference_with_last_measurement():
    # coord_steps == steps adds a probe measurement after the last step, with full factors.
    config = small_config(adapter_storage="factored", depth=3, activation="tanh", steps=4, coord_steps=4,
                          fit_steps=[1, 4])
    assert_results_equal(run_sweep(config, show_progress=False), run_reference_sweep(config), rtol=1e-9)


def test_auto_storage_mixes_forms_and_matches_reference():
    # batch 4 x 6 steps = 24 factor rows: rank 16 is factored, rank 3 dense.
    config = small_config(ranks=[3, 16])
    assert_results_equal(run_sweep(config, show_progress=False), run_reference_sweep(config))


@pytest.mark.parametrize(
    "optimizer, learning_rate, storage, chunk",
    [
        ("adam", 1e-2, "dense", 4),  # 6 configurations split 4 + 2
        ("sgd", 0.05, "factored", 4),  # a replica split across groups: one A_0 per configuration
        ("sgd", 0.05, "factored", 3),  # whole replicas: one A_0 per replica
    ],
)
def test_engine_matches_reference_when_chunked(optimizer, learning_rate, storage, chunk):
    config = small_config(optimizer=optimizer, learning_rate=learning_rate, adapter_storage=storage)
    plan = make_plan(config, torch.device("cpu"))
    plan.chunk_sizes = {rank: chunk for rank in config.ranks}
    assert_results_equal(run_sweep(config, show_progress=False, plan=plan), run_reference_sweep(config), rtol=1e-9)


def test_divergence_matches_reference():
    config = small_config(learning_rate=5.0, steps=8)
    fast = run_sweep(config, show_progress=False)
    assert (fast.diverged_at >= 0).any()
    np.testing.assert_array_equal(fast.diverged_at, run_reference_sweep(config).diverged_at)


def test_probe_metrics_hand_computed():
    # d = 2, r = 1, gamma = 1: A = [1, 0], B = [2, 0]^T, probe x = [1, 1], v = [1, 3].
    A = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)  # (C=1, r=1, d=2)
    B = torch.tensor([[[2.0], [0.0]]], dtype=torch.float64)  # (1, d=2, r=1)
    x = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)  # (1, b=1, 2)
    v = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    u = (v @ v.transpose(1, 2)) @ x  # u = (v . v) x = [10, 10]
    gammas = torch.ones(1, 1, 1, dtype=torch.float64)
    values = probe_metrics(FlopCounter(), DenseAdapters(FlopCounter(), A, B), gammas, x, v, u)
    # f(x) = B A x = [2, 0], so RMS = sqrt(4 / 2).
    assert values["activation"].item() == pytest.approx(math.sqrt(2.0))
    # g = A^T B^T v = A^T * 2 = [2, 0], RMS sqrt(2).
    assert values["input_gradient_rms"].item() == pytest.approx(math.sqrt(2.0))
    # c = g.u / |u|^2 = 20 / 200; coherent part |c| RMS(u) = 0.1 * 10.
    assert values["input_gradient"].item() == pytest.approx(1.0)


def test_probe_metrics_scale_with_gamma():
    generator = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    B = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    x, v = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64), torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    u = (v @ v.transpose(1, 2)) @ x
    adapters = DenseAdapters(FlopCounter(), A, B)
    ones = probe_metrics(FlopCounter(), adapters, torch.ones(2, 1, 1, dtype=torch.float64), x, v, u)
    scaled = probe_metrics(FlopCounter(), adapters, torch.full((2, 1, 1), 0.25, dtype=torch.float64), x, v, u)
    for name in ones:
        torch.testing.assert_close(scaled[name], 0.25 * ones[name])


@pytest.mark.parametrize(
    "optimizer, storage, coord_steps",
    [("sgd", "dense", 3), ("adam", "auto", 3), ("sgd", "factored", 3), ("sgd", "factored", 6), ("sgd", "auto", 6)],
)
def test_flop_count_matches_plan(optimizer, storage, coord_steps):
    config = small_config(optimizer=optimizer, learning_rate=1e-2, ranks=[1, 3, 8, 16], depth=3,
                          adapter_storage=storage, coord_steps=coord_steps)
    assert run_sweep(config, show_progress=False).model_flops == count_model_flops(config)


def test_flop_count_matches_torch_counter():
    # Adam keeps every product out of place, where torch's counter counts it (it skips in-place baddbmm_).
    config = small_config(optimizer="adam", learning_rate=1e-2, ranks=[1, 3, 8], depth=3)
    with FlopCounterMode(display=False) as data_counter:
        draw_task(config)  # the teacher's forward pass makes the data; it is not model work
    with FlopCounterMode(display=False) as counter:
        result = run_sweep(config, show_progress=False)
    assert counter.get_total_flops() - data_counter.get_total_flops() == result.model_flops


def test_flop_count_hand_tiny_model():
    # One rank-1 configuration, d = 2, b = 1, one layer, one step, metrics at steps 0 and 1.
    config = small_config(ranks=[1], scalings=parse_scaling_rules("lora"), width=2, depth=1, batch=1, seeds=1,
                          steps=1, coord_steps=1, fit_steps=[1], adapter_storage="dense")
    d, b, r = 2, 1, 1
    probes = 2 * b * d * d + 4 * b * b * d  # base forward, then u = (V V^T) X
    first_layer = 2 * b * d * d  # x W^T for the single step
    step = 10 * b * d * r + 4 * b * b * (d + r)  # adapter forward, backward, Grams, update
    measurements = 2 * 8 * b * d * r  # two probe measurements of four products
    assert count_model_flops(config) == probes + first_layer + step + measurements


def test_flop_count_hand_tiny_factored_model():
    # As above with factored adapters: step 0 has empty factors, so B's products are skipped;
    # the last measurement runs on one factor row (f = 1).
    config = small_config(ranks=[1], scalings=parse_scaling_rules("lora"), width=2, depth=1, batch=1, seeds=1,
                          steps=1, coord_steps=1, fit_steps=[1], adapter_storage="factored")
    d, b, r, f = 2, 1, 1, 1
    probes = 2 * b * d * d + 4 * b * b * d
    first_layer = 2 * b * d * d
    # Step 0, with its probe rows (2b): rows A_0^T forward, probe rows through A_0 back, Grams.
    step = 2 * (2 * b) * d * r + 2 * b * d * r + 4 * b * b * (d + r)
    # Last measurement: x A^T = x A_0^T + (x X^T) P, then (. Q^T) G, v G^T Q, and . A_0 + (. P^T) X.
    measurement = 2 * b * d * r + 2 * b * d * r + 8 * b * f * (d + r)
    assert count_model_flops(config) == probes + first_layer + step + measurement
