"""Counting the matrix products of a sweep: their FLOPs, and how many of each shape.

Every product the engine runs goes through a FlopCounter, so the sweep's FLOP count
is exact (the tests check it against ``plan.count_model_flops`` and torch's own
FlopCounterMode), and the benchmark can time each kind of product alone.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["FlopCounter", "ProductShape", "record_products"]


@dataclass(frozen=True)
class ProductShape:
    """One kind of matrix product the engine runs: ``batch`` products (m, k) @ (k, n).

    ``operation`` is the torch call: ``mm``, ``bmm``, ``baddbmm`` (a tensor plus the
    product) or ``baddbmm_`` (the product added into its output in place). An operand
    is ``transposed`` when it is a transposed view, with its last two dimensions
    swapped in memory. The benchmark rebuilds the same layout when it times the
    product alone.
    """

    operation: str
    batch: int
    m: int
    k: int
    n: int
    left_transposed: bool
    right_transposed: bool

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


def _is_transposed(matrix: torch.Tensor) -> bool:
    """Return True when the last two dimensions of ``matrix`` are stored column-major."""
    rows, columns = matrix.shape[-2:]
    return rows > 1 and columns > 1 and matrix.stride(-2) == 1 and matrix.stride(-1) != 1


# Tallies opened by record_products(); every FlopCounter adds its products to each.
_product_tallies: list[Counter] = []


@contextmanager
def record_products():
    """Count, by ProductShape, every product that any FlopCounter runs inside the block.

    Yields the Counter, which fills as the products run.
    """
    tally: Counter[ProductShape] = Counter()
    _product_tallies.append(tally)
    try:
        yield tally
    finally:
        _product_tallies.remove(tally)


class FlopCounter:
    """Counts the FLOPs of the matrix products the engine runs (2 m n k each)."""

    def __init__(self) -> None:
        self.total = 0

    def _record(self, operation: str, left: torch.Tensor, right: torch.Tensor) -> None:
        *batch, m, k = left.shape
        shape = ProductShape(
            operation,
            batch[0] if batch else 1,
            m,
            k,
            right.shape[-1],
            _is_transposed(left),
            _is_transposed(right),
        )
        self.total += shape.flops
        for tally in _product_tallies:
            tally[shape] += 1

    def bmm(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        self._record("bmm", left, right)
        return torch.bmm(left, right)

    def baddbmm(self, added: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Return added + left @ right, batched, in one call."""
        self._record("baddbmm", left, right)
        return torch.baddbmm(added, left, right)

    def baddbmm_(self, out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float) -> None:
        self._record("baddbmm_", left, right)
        out.baddbmm_(left, right, alpha=alpha)

    def mm(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        self._record("mm", left, right)
        return left @ right
