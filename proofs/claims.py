"""The claims checked by ``python -m proofs``, grouped by topic in the ``claims_*`` modules.

:func:`default_registry` builds a fresh registry each time, so a caller (a test, for
example) can add claims to its copy without affecting other callers.
"""

from __future__ import annotations

from proofs.registry import ClaimRegistry


def default_registry() -> ClaimRegistry:
    """Return a new registry that contains every claim, in report order."""
    from proofs import claims_gaps, claims_moments, claims_scaling, claims_sgd

    registry = ClaimRegistry()
    for module in (claims_moments, claims_sgd, claims_scaling, claims_gaps):
        module.register(registry)
    return registry
