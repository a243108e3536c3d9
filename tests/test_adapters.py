"""Factored SGD adapters against dense ones, the storage rule, and the planner's view of both."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_config

from stability.adapters import DenseAdapters, FactoredAdapters, uses_factored_storage
from stability.config import ConfigError
from stability.flops import FlopCounter
from stability.plan import bytes_per_configuration, group_bytes, make_plan, shared_bytes


@settings(max_examples=40)
@given(
    replicas=st.integers(1, 3),
    shared=st.integers(1, 3),
    rows=st.integers(1, 4),
    width=st.integers(1, 9),
    rank=st.integers(1, 9),
    steps=st.integers(0, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_factored_products_equal_dense(replicas, shared, rows, width, rank, steps, seed):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    count, flops, learning_rate = replicas * shared, FlopCounter(), 0.3
    initial = draw(replicas, rank, width)
    dense = DenseAdapters(flops, initial.repeat_interleave(shared, dim=0), torch.zeros(count, width, rank,
                                                                                    dtype=torch.float64))
    factored = FactoredAdapters(flops, initial, shared, count, max(steps, 1), rows, width)
    for _ in range(steps):
        factors = (draw(count, rows, width), draw(count, rows, rank), draw(count, rows, rank), draw(count, rows, width))
        dense.sgd_step(learning_rate, *factors)
        factored.sgd_step(learning_rate, *factors)

    probe_rows, probe_columns = draw(count, rows, width), draw(count, rows, rank)
    added = draw(count, rows, width)
    for name, arguments in (
        ("project", (probe_rows,)),
        ("expand", (probe_columns,)),
        ("expand", (probe_columns, added)),
        ("pull_back_B", (probe_rows,)),
        ("pull_back_A", (probe_columns,)),
        ("pull_back_A", (probe_columns, added)),
    ):
        torch.testing.assert_close(getattr(factored, name)(*arguments), getattr(dense, name)(*arguments),
                                   rtol=1e-10, atol=1e-10, msg=name)


def test_full_factors_reject_step():
    factored = FactoredAdapters(FlopCounter(), torch.zeros(1, 2, 3), 1, 1, steps=1, batch=2, width=3)
    factors = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))
    factored.sgd_step(0.1, *factors)
    with pytest.raises(RuntimeError, match="buffers are full"):
        factored.sgd_step(0.1, *factors)


def test_factored_adapters_need_whole_replicas():
    with pytest.raises(ValueError, match="configurations"):
        FactoredAdapters(FlopCounter(), torch.zeros(2, 2, 3), 2, 5, steps=1, batch=1, width=3)


@pytest.mark.parametrize(
    "storage, optimizer, rank, expected",
    [
        ("auto", "sgd", 160, True),  # 8 x 40 = 320 factor rows, twice the rank
        ("auto", "sgd", 159, False),
        ("auto", "adam", 4096, False),
        ("dense", "sgd", 4096, False),
        ("factored", "sgd", 1, True),
    ],
)
def test_storage_rule(storage, optimizer, rank, expected):
    assert uses_factored_storage(storage, optimizer, batch=8, steps=40, rank=rank) is expected


def test_factored_storage_needs_sgd():
    with pytest.raises(ConfigError, match="--optimizer sgd"):
        small_config(optimizer="adam", learning_rate=1e-3, adapter_storage="factored")


def test_plan_groups_whole_replicas_when_factored():
    # 3 rules x 2 replicas; a budget for 5 configurations keeps groups of whole replicas (3).
    config = small_config(adapter_storage="factored", ranks=[8])
    budget = shared_bytes(config, torch.device("cpu")) + group_bytes(config, 8, 5) + 1
    config = small_config(adapter_storage="factored", ranks=[8], max_memory_bytes=budget)
    assert make_plan(config, torch.device("cpu")).chunk_sizes[8] == 3


def test_group_bytes_count_one_initial_per_replica():
    config = small_config(adapter_storage="factored", ranks=[8])
    per_configuration = bytes_per_configuration(config, 8)
    initial = config.depth * 8 * config.width * 8  # float64 A_0 per layer
    assert group_bytes(config, 8, 6) == 6 * per_configuration + 2 * initial
    assert group_bytes(config, 8, 4) == 4 * per_configuration + 4 * initial  # a split replica


def test_storage_forms_agree_over_long_float64_run():
    # 100 steps put 400 rows in the factors, 25 times the rank: rounding in the long sums
    # would show here. In float64 the forms stay within 1e-9 of each other.
    from stability.sweep import run_sweep

    results = {
        storage: run_sweep(small_config(adapter_storage=storage, ranks=[4, 16], steps=100, seeds=1),
                           show_progress=False)
        for storage in ("dense", "factored")
    }
    for name in ("loss", "grad_norm_A", "grad_norm_B"):
        dense, factored = getattr(results["dense"], name), getattr(results["factored"], name)
        assert np.isfinite(dense).all()
        np.testing.assert_allclose(factored, dense, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "seeds, expected",
    [([0, 0, 0, 1, 1, 1], 3), ([5, 5], 2), ([0, 0, 0, 1], 1), ([0, 1, 0, 1], 1), ([0, 0, 1, 1, 0, 0], 1)],
)
def test_replica_runs_share_only_whole_runs(seeds, expected):
    from stability.engine import _replica_runs

    assert _replica_runs(seeds) == expected


def test_warm_up_config_keeps_optimizer_and_storage():
    from stability.measure import warm_up_config

    config = small_config(adapter_storage="factored", dtype="float32")
    tiny = warm_up_config(config)
    assert (tiny.optimizer, tiny.adapter_storage, tiny.dtype, tiny.device) == ("sgd", "factored", "float32", "cpu")
    assert tiny.ranks == [1, 2]
    assert tiny.steps == 2
