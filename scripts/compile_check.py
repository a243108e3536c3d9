"""Time one layer's SGD step of the engine eager and under torch.compile.

The step is the engine's work for one layer of one rank group. It runs the base
product, the adapter forward, the backward through B and A, the gradient norms from
b x b Gram matrices, and the in-place SGD updates of A and B. Like the default sweep, it
runs on the CPU in float32 with 9 configurations, batch 8 and width 4096.

Usage: python scripts/compile_check.py [RANK ...]   (default ranks: 16 1024)
"""

import statistics
import sys
import time

import torch

CONFIGURATIONS, BATCH, WIDTH = 9, 8, 4096


def layer_step(hidden, weight, A, B, gammas, target, learning_rate: float):
    count, batch, width = hidden.shape
    base = (hidden.reshape(count * batch, width) @ weight.T).view(count, batch, width)
    scaled_projection = torch.bmm(hidden, A.transpose(1, 2)) * gammas  # (C, b, r)
    z = torch.baddbmm(base, scaled_projection, B.transpose(1, 2))  # (C, b, d)
    grad_z = (torch.relu(z) - target) / batch
    grad_projection = torch.bmm(grad_z, B) * gammas  # (C, b, r)
    base_grad = (grad_z.reshape(count * batch, width) @ weight).view(count, batch, width)
    grad_hidden = torch.baddbmm(base_grad, grad_projection, A)  # (C, b, d)
    grams_B = torch.bmm(grad_z, grad_z.transpose(1, 2)) * torch.bmm(scaled_projection, scaled_projection.transpose(1, 2))
    grams_A = torch.bmm(grad_projection, grad_projection.transpose(1, 2)) * torch.bmm(hidden, hidden.transpose(1, 2))
    B.baddbmm_(grad_z.transpose(1, 2), scaled_projection, alpha=-learning_rate)
    A.baddbmm_(grad_projection.transpose(1, 2), hidden, alpha=-learning_rate)
    return torch.ops.aten.threshold_backward(grad_hidden, z, 0.0), grams_A.sum(dim=(1, 2)), grams_B.sum(dim=(1, 2))


def time_step(step, arguments, repeats: int = 10) -> tuple[float, float]:
    """Return (seconds of the first call, median seconds of the next ``repeats`` calls)."""
    started = time.perf_counter()
    step(*arguments)
    first = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step(*arguments)
        seconds.append(time.perf_counter() - started)
    return first, statistics.median(seconds)


def main() -> None:
    ranks = [int(rank) for rank in sys.argv[1:]] or [16, 1024]
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(WIDTH, WIDTH, generator=generator) / WIDTH**0.5
    compiled = torch.compile(layer_step)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for rank in ranks:
        hidden = torch.randn(CONFIGURATIONS, BATCH, WIDTH, generator=generator)
        target = torch.randn(CONFIGURATIONS, BATCH, WIDTH, generator=generator)
        gammas = torch.rand(CONFIGURATIONS, 1, 1, generator=generator)
        for name, step in (("eager", layer_step), ("compiled", compiled)):
            A = torch.randn(CONFIGURATIONS, rank, WIDTH, generator=generator) / WIDTH**0.5
            B = torch.zeros(CONFIGURATIONS, WIDTH, rank)
            first, median = time_step(step, (hidden, weight, A, B, gammas, target, 1e-3))
            print(f"rank {rank:5d} {name:8s}: first call {first:6.2f} s, then {1e3 * median:7.1f} ms per step (median of 10)")


if __name__ == "__main__":
    main()
