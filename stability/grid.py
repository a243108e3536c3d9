"""Parse rank grids and scaling-exponent lists from the command line.

A grid is a comma-separated list of items. Each item is one number or a range:

* ``A..B``      A, 2A, 4A, ... up to B, with B always included;
* ``A..B:xK``   A, KA, K²A, ... with ratio K, B included;
* ``A..B:+K``   arithmetic step K, with B included.

The union of all items is sorted and deduplicated. Ranks are integers; scaling
exponents are exact fractions, so ``0..1:+0.125`` yields nine exact values.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["GridError", "parse_number_grid", "parse_rank_grid"]

# A grid this long is almost surely a typo (e.g. a step of 1 over 1..1000000).
MAX_GRID_POINTS = 10_000


class GridError(ValueError):
    """A rank grid or exponent list that cannot be parsed. The message shows what to type instead."""


def _parse_number(text: str, item: str) -> Fraction:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise GridError(
            f"invalid number {text.strip()!r} in {item!r}; write integers or decimals such as 4 or 0.25"
        ) from None


def _expand_range(item: str) -> list[Fraction]:
    """Expand one ``A..B[:xK|:+K]`` item into its values."""
    bounds, _, step_text = item.partition(":")
    start_text, _, stop_text = bounds.partition("..")
    start = _parse_number(start_text, item)
    stop = _parse_number(stop_text, item)
    if stop < start:
        raise GridError(f"reversed range {item!r}: the end is below the start; write {stop_text.strip()}..{start_text.strip()}")

    step_text = step_text.strip()
    if not step_text:
        step_text = "x2"
    kind, amount_text = step_text[0], step_text[1:]
    if kind not in "x+":
        raise GridError(f"invalid step {step_text!r} in {item!r}; write :x2 for a ratio or :+1 for a step")
    amount = _parse_number(amount_text, item)

    values = [start]
    if kind == "x":
        if amount <= 1:
            raise GridError(f"ratio {amount_text!r} in {item!r} must be above 1, e.g. {bounds}:x2")
        if start <= 0:
            raise GridError(
                f"a ratio range must start above 0, but {item!r} starts at {start_text.strip()}; "
                f"use an arithmetic step such as {bounds}:+1"
            )
        while values[-1] * amount < stop:
            values.append(values[-1] * amount)
            if len(values) > MAX_GRID_POINTS:
                break
    else:
        if amount <= 0:
            raise GridError(f"step {amount_text!r} in {item!r} must be above 0, e.g. {bounds}:+1")
        while values[-1] + amount < stop:
            values.append(values[-1] + amount)
            if len(values) > MAX_GRID_POINTS:
                break
    if len(values) > MAX_GRID_POINTS:
        raise GridError(f"range {item!r} has more than {MAX_GRID_POINTS} points; use a larger step")
    if values[-1] != stop:
        values.append(stop)
    return values


def parse_number_grid(spec: str) -> list[Fraction]:
    """Parse a comma-separated list of numbers and ranges into sorted unique fractions.

    >>> [str(v) for v in parse_number_grid("0..1:+0.25")]
    ['0', '1/4', '1/2', '3/4', '1']
    >>> [int(v) for v in parse_number_grid("1..16,3")]
    [1, 2, 3, 4, 8, 16]
    """
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise GridError(f"empty item in {spec!r}; write a comma-separated list such as 1..4096 or 1,8,64")

    values: set[Fraction] = set()
    for item in items:
        if ".." in item:
            values.update(_expand_range(item))
        else:
            values.add(_parse_number(item, item))
        if len(values) > MAX_GRID_POINTS:
            raise GridError(f"{spec!r} has more than {MAX_GRID_POINTS} points; use larger steps")
    return sorted(values)


def parse_rank_grid(spec: str) -> list[int]:
    """Parse a rank grid such as ``1..4096`` into sorted unique positive integers.

    >>> parse_rank_grid("1..4096:x4")
    [1, 4, 16, 64, 256, 1024, 4096]
    >>> parse_rank_grid("8..32:+8,1")
    [1, 8, 16, 24, 32]
    """
    values = parse_number_grid(spec)
    for value in values:
        if value.denominator != 1:
            raise GridError(f"rank {value} in {spec!r} is not an integer; ranks are whole numbers such as 1..4096")
        if value < 1:
            raise GridError(f"rank {value} in {spec!r} is below 1; the smallest rank is 1, e.g. 1..4096")
    return [int(value) for value in values]
