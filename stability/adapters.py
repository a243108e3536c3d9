"""Two ways to hold one layer's adapters for a batch of C configurations of equal rank.

``DenseAdapters`` keeps A (C, r, d) and B (C, d, r) as tensors and updates them in place.

``FactoredAdapters`` serves plain SGD. Each SGD step adds an outer product of rank at
most b (the batch) to A and to B, and B starts at zero, so after t steps

    A_t = A_0 + P^T X    with X the t b layer inputs seen and P = -lr dL/d(A h),
    B_t = G^T Q          with G = -lr dL/dz and Q = gamma A h,

where P, Q are (t b, r) and X, G are (t b, d). Applying A_t or B_t costs O(t b (d + r))
plus one pass over A_0, against O(r d) for each pass over a dense A or B. A_0 is also
the same for every scaling rule of a replica, so one read of it serves all of them.
For t b well below r this reads far less memory than the dense form, which reads A
and B three times and writes them once per step. In exact arithmetic both forms give
the same numbers; in floating point they differ by rounding (the tests compare both
with the reference implementation). NOTE: in float32 over hundreds of steps, a ReLU
input within rounding of zero can fall on different sides in the two forms, so the
trajectories can separate. docs/benchmarks.md has a measured case; float64 keeps the
forms together.
"""

from __future__ import annotations

import torch

from .flops import FlopCounter

__all__ = [
    "ADAPTER_STORAGES",
    "DenseAdapters",
    "FactoredAdapters",
    "describe_storage",
    "is_factored",
    "storage_by_rank",
    "uses_factored_storage",
]

ADAPTER_STORAGES = ("auto", "dense", "factored")


def uses_factored_storage(storage: str, optimizer: str, batch: int, steps: int, rank: int) -> bool:
    """Return True when a group of ``rank`` keeps its adapters factored.

    ``auto`` factors SGD adapters whose factors end at most twice as wide as the rank
    (``batch * steps <= 2 * rank``), so that on average over the steps they are no
    wider than the rank. The threshold comes from timing one group of 9 configurations
    on a 2-core CPU at width 4096, batch 8 and 40 steps (factors 320 rows wide). Per
    step, factored against dense, it took 56 against 63 ms at rank 128, 60 against 84
    ms at rank 256 and 172 against about 600 ms at rank 4096. At ranks 1 to 64 the
    dense form was faster (41 to 47 against 53 to 57 ms).
    """
    if storage == "factored":
        return True
    if storage == "dense":
        return False
    return optimizer == "sgd" and batch * steps <= 2 * rank


def is_factored(config, rank: int) -> bool:
    """Return True when a SweepConfig's group of ``rank`` keeps its adapters factored."""
    return uses_factored_storage(config.adapter_storage, config.optimizer, config.batch, config.steps, rank)


def storage_by_rank(config) -> dict[int, str]:
    """Return "dense" or "factored" for each rank of a SweepConfig's grid."""
    return {rank: "factored" if is_factored(config, rank) else "dense" for rank in config.ranks}


def describe_storage(config) -> str:
    """Return e.g. ``auto: dense at ranks 1..128, factored at ranks 256..4096``."""
    parts = []
    for storage in ("dense", "factored"):
        ranks = [rank for rank, chosen in storage_by_rank(config).items() if chosen == storage]
        if ranks:
            span = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}..{ranks[-1]}"
            parts.append(f"{storage} at rank{'s' if len(ranks) > 1 else ''} {span}")
    return f"{config.adapter_storage}: {', '.join(parts)}"


class DenseAdapters:
    """One layer's A (C, r, d) and B (C, d, r) as dense tensors."""

    def __init__(self, flops: FlopCounter, A: torch.Tensor, B: torch.Tensor) -> None:
        self.flops, self.A, self.B = flops, A, B

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Return rows A^T: (C, n, d) -> (C, n, r)."""
        return self.flops.bmm(rows, self.A.transpose(1, 2))

    def expand(self, scaled: torch.Tensor, added: torch.Tensor | None = None) -> torch.Tensor:
        """Return added + scaled B^T: (C, n, r) -> (C, n, d)."""
        if added is None:
            return self.flops.bmm(scaled, self.B.transpose(1, 2))
        return self.flops.baddbmm(added, scaled, self.B.transpose(1, 2))

    def pull_back_B(self, columns: torch.Tensor) -> torch.Tensor:
        """Return columns B: (C, n, d) -> (C, n, r)."""
        return self.flops.bmm(columns, self.B)

    def pull_back_A(self, grad_rows: torch.Tensor, added: torch.Tensor | None = None) -> torch.Tensor:
        """Return added + grad_rows A: (C, n, r) -> (C, n, d)."""
        if added is None:
            return self.flops.bmm(grad_rows, self.A)
        return self.flops.baddbmm(added, grad_rows, self.A)

    def sgd_step(self, learning_rate: float, grad_z, scaled_projection, grad_projection, hidden) -> None:
        """B -= lr V^T (gamma A h) and A -= lr (dL/dAh)^T h, in place from the (C, b, .) batch factors."""
        self.flops.baddbmm_(self.B, grad_z.transpose(1, 2), scaled_projection, alpha=-learning_rate)
        self.flops.baddbmm_(self.A, grad_projection.transpose(1, 2), hidden, alpha=-learning_rate)

    def gradients(self, grad_z, scaled_projection, grad_projection, hidden) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (grad_A, grad_B) as dense tensors, for the optimizers that need them."""
        grad_B = self.flops.bmm(grad_z.transpose(1, 2), scaled_projection)  # (C, d, r)
        grad_A = self.flops.bmm(grad_projection.transpose(1, 2), hidden)  # (C, r, d)
        return grad_A, grad_B


class FactoredAdapters:
    """One layer's SGD adapters as A = A_0 + P^T X and B = G^T Q (see the module docstring).

    ``initial`` is A_0, once per replica: (U, r, d). When ``shared`` is k > 1, the C =
    U k configurations come in U runs of k consecutive ones that start from the same
    A_0, and each product with A_0 is one (k n)-row product per replica.
    """

    def __init__(self, flops: FlopCounter, initial: torch.Tensor, shared: int, count: int, steps: int,
                 batch: int, width: int) -> None:
        replicas, rank, _ = initial.shape
        if replicas * shared != count:
            raise ValueError(f"{replicas} initial A's shared by {shared} do not make {count} configurations")
        self.flops, self.initial, self.shared, self.count = flops, initial, shared, count
        rows = steps * batch
        options = dict(device=initial.device, dtype=initial.dtype)
        self.inputs = torch.empty(count, rows, width, **options)  # X
        self.output_steps = torch.empty(count, rows, width, **options)  # G = -lr dL/dz
        self.input_steps = torch.empty(count, rows, rank, **options)  # P = -lr dL/d(A h)
        self.projections = torch.empty(count, rows, rank, **options)  # Q = gamma A h
        self.filled = 0  # rows of the factors written so far: t b after t steps

    def _factor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, : self.filled]

    def _with_initial(self, rows: torch.Tensor, initial: torch.Tensor, added: torch.Tensor | None) -> torch.Tensor:
        """Return added + rows @ initial, one product per replica over its k configurations' rows."""
        count, n, _ = rows.shape
        replicas = initial.shape[0]
        grouped = rows.reshape(replicas, self.shared * n, rows.shape[2])
        if added is None:
            product = self.flops.bmm(grouped, initial)
        else:
            product = self.flops.baddbmm(added.reshape(replicas, self.shared * n, -1), grouped, initial)
        return product.view(count, n, -1)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Return rows A^T = rows A_0^T + (rows X^T) P."""
        projected = self._with_initial(rows, self.initial.transpose(1, 2), None)
        if self.filled:
            coefficients = self.flops.bmm(rows, self._factor(self.inputs).transpose(1, 2))
            projected = self.flops.baddbmm(projected, coefficients, self._factor(self.input_steps))
        return projected

    def expand(self, scaled: torch.Tensor, added: torch.Tensor | None = None) -> torch.Tensor:
        """Return added + scaled B^T = added + (scaled Q^T) G; B is zero before the first step."""
        if not self.filled:
            if added is None:
                return scaled.new_zeros(scaled.shape[0], scaled.shape[1], self.inputs.shape[2])
            return added
        coefficients = self.flops.bmm(scaled, self._factor(self.projections).transpose(1, 2))
        if added is None:
            return self.flops.bmm(coefficients, self._factor(self.output_steps))
        return self.flops.baddbmm(added, coefficients, self._factor(self.output_steps))

    def pull_back_B(self, columns: torch.Tensor) -> torch.Tensor:
        """Return columns B = (columns G^T) Q."""
        if not self.filled:
            return columns.new_zeros(columns.shape[0], columns.shape[1], self.projections.shape[2])
        coefficients = self.flops.bmm(columns, self._factor(self.output_steps).transpose(1, 2))
        return self.flops.bmm(coefficients, self._factor(self.projections))

    def pull_back_A(self, grad_rows: torch.Tensor, added: torch.Tensor | None = None) -> torch.Tensor:
        """Return added + grad_rows A = added + grad_rows A_0 + (grad_rows P^T) X."""
        pulled = self._with_initial(grad_rows, self.initial, added)
        if self.filled:
            coefficients = self.flops.bmm(grad_rows, self._factor(self.input_steps).transpose(1, 2))
            pulled = self.flops.baddbmm(pulled, coefficients, self._factor(self.inputs))
        return pulled

    def sgd_step(self, learning_rate: float, grad_z, scaled_projection, grad_projection, hidden) -> None:
        """Append this step's rank-b updates of A and B to the factors."""
        step = slice(self.filled, self.filled + grad_z.shape[1])
        if step.stop > self.inputs.shape[1]:
            raise RuntimeError(
                f"the factor buffers are full ({self.inputs.shape[1]} rows): create FactoredAdapters with more steps"
            )
        self.output_steps[:, step].copy_(grad_z).mul_(-learning_rate)
        self.projections[:, step].copy_(scaled_projection)
        self.input_steps[:, step].copy_(grad_projection).mul_(-learning_rate)
        self.inputs[:, step].copy_(hidden)
        self.filled = step.stop
