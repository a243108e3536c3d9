"""Shared pytest configuration: Hypothesis profiles and a small sweep configuration.

``ci`` (the default) is derandomized, so every run draws the same examples. ``dev`` draws
fresh random examples and more of them. Select one with ``HYPOTHESIS_PROFILE=dev``.
"""

import os

from hypothesis import settings

from stability.config import SweepConfig
from stability.scaling import parse_scaling_rules

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def small_config(**overrides) -> SweepConfig:
    """Return a sweep small enough for unit tests: 4 ranks, 3 rules, 2 seeds, width 16 (float64 on the CPU)."""
    values = dict(
        ranks=[1, 2, 4, 8],
        scalings=parse_scaling_rules("constant,rslora,lora"),
        width=16,
        depth=2,
        steps=6,
        coord_steps=3,
        seeds=2,
        batch=4,
        dtype="float64",
        device="cpu",
        learning_rate=0.05,
    )
    values.update(overrides)
    return SweepConfig(**values)
