"""Rank grids and exponent lists: the parser's contract, checked by hypothesis and by examples."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stability.grid import GridError, parse_number_grid, parse_rank_grid
from stability.scaling import parse_scaling_rules


@given(start=st.integers(1, 64), stop=st.integers(1, 5000), ratio=st.integers(2, 5))
def test_ratio_range_contract(start, stop, ratio):
    if stop < start:
        with pytest.raises(GridError):
            parse_rank_grid(f"{start}..{stop}:x{ratio}")
        return
    ranks = parse_rank_grid(f"{start}..{stop}:x{ratio}")
    assert ranks[0] == start
    assert ranks[-1] == stop
    assert ranks == sorted(set(ranks))
    # Every rank but the last is the start times a power of the ratio.
    for k, rank in enumerate(ranks[:-1]):
        assert rank == start * ratio**k
    assert len(ranks) == 1 or ranks[-2] < stop <= ranks[-2] * ratio


@given(start=st.integers(1, 100), stop=st.integers(1, 400), step=st.integers(1, 50))
def test_step_range_contract(start, stop, step):
    if stop < start:
        with pytest.raises(GridError):
            parse_rank_grid(f"{start}..{stop}:+{step}")
        return
    ranks = parse_rank_grid(f"{start}..{stop}:+{step}")
    assert ranks[0] == start
    assert ranks[-1] == stop
    assert all(b - a == step for a, b in zip(ranks[:-2], ranks[1:-1]))
    if len(ranks) > 1:
        assert 0 < ranks[-1] - ranks[-2] <= step


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=20))
def test_comma_lists_sort_and_deduplicate(values):
    spec = ",".join(str(v) for v in values)
    assert parse_rank_grid(spec) == sorted(set(values))


@given(st.lists(st.sampled_from(["1..64", "4..4096:x4", "3..30:+9", "7", "100"]), min_size=1, max_size=4))
def test_union_of_items(items):
    combined = parse_rank_grid(",".join(items))
    expected = sorted(set().union(*(parse_rank_grid(item) for item in items)))
    assert combined == expected


def test_default_grid():
    assert parse_rank_grid("1..4096") == [2**k for k in range(13)]


def test_fraction_steps_are_exact():
    assert parse_number_grid("0..1:+0.125") == [Fraction(k, 8) for k in range(9)]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty"),
        ("1,,4", "empty"),
        ("64..8", "reversed"),
        ("0..8", "start above 0"),
        ("0", "below 1"),
        ("-4", "below 1"),
        ("1.5", "not an integer"),
        ("1..8:x1", "above 1"),
        ("1..8:+0", "above 0"),
        ("1..8:y2", "invalid step"),
        ("a..b", "invalid number"),
        ("1..10000000:+1", "more than"),
    ],
)
def test_invalid_rank_grids(spec, fragment):
    with pytest.raises(GridError, match=fragment):
        parse_rank_grid(spec)


def test_scaling_names_and_numbers_merge():
    rules = parse_scaling_rules("lora,0.5,0.25,constant")
    assert [rule.name for rule in rules] == ["constant", "beta=0.25", "rslora", "lora"]
    assert [rule.exponent for rule in rules] == [0, Fraction(1, 4), Fraction(1, 2), 1]


def test_scaling_range():
    rules = parse_scaling_rules("0..1:+0.25")
    assert [rule.name for rule in rules] == ["constant", "beta=0.25", "rslora", "beta=0.75", "lora"]


@pytest.mark.parametrize("spec", ["", "rs-lora", "lora,", "0..1"])
def test_invalid_scaling_lists(spec):
    with pytest.raises(GridError):
        parse_scaling_rules(spec)
