"""Shared pytest configuration: Hypothesis profiles.

``ci`` (the default) is derandomized, so every run draws the same examples. ``dev`` draws
fresh random examples and more of them. Select one with ``HYPOTHESIS_PROFILE=dev``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
