"""Scalar symbols shared by every derivation.

The names follow the LoRA scaling analysis: an adapter ``f(x) = gamma * B A x`` with
rank ``r``, input dimension ``d``, ``A`` initialised with iid entries of variance
``sigma2`` and even moments ``mu4``, ``mu6``, ..., learning rate ``eta`` and scaling
factor ``gamma = alpha * r**(-beta)``.
"""

from __future__ import annotations

import sympy as sp

r = sp.Symbol("r", positive=True, integer=True)
"""Adapter rank, the number of iid rows of ``A``."""

d = sp.Symbol("d", positive=True, integer=True)
"""Input dimension of the adapter (columns of ``A``)."""

sigma2 = sp.Symbol("sigma2", positive=True)
"""Variance of one entry of ``A_0``."""

mu4 = sp.Symbol("mu4", positive=True)
"""Fourth moment of one entry of ``A_0``."""

eta = sp.Symbol("eta", positive=True)
"""Learning rate (of ``B`` under sign descent)."""

gamma = sp.Symbol("gamma", positive=True)
"""Scaling factor of the adapter output, ``f(x) = gamma * B A x``."""

alpha = sp.Symbol("alpha", positive=True)
"""Rank-independent constant of the scaling rule ``gamma = alpha * r**(-beta)``."""

beta = sp.Symbol("beta", real=True)
"""Scaling exponent: LoRA has ``beta = 1``, rsLoRA ``beta = 1/2``."""

c = sp.Symbol("c", positive=True)
"""Positive factor used in the hyperparameter equivalences."""

epsilon = sp.Symbol("epsilon", positive=True)
"""Adam's denominator constant."""


def even_moment(order: int) -> sp.Expr:
    """Return the symbol for the ``order``-th moment of one entry of ``A_0``.

    Odd moments are zero because the entries are symmetric, so only even orders
    have symbols: ``sigma2`` for order 2, ``mu4`` for 4 and ``mu<order>`` above.
    """
    if order < 2 or order % 2:
        raise ValueError(f"order must be an even integer >= 2, got {order!r}")
    if order == 2:
        return sigma2
    if order == 4:
        return mu4
    return sp.Symbol(f"mu{order}", positive=True)


def scaling_rule() -> sp.Expr:
    """Return ``gamma_r = alpha * r**(-beta)``, the one place the rule is written."""
    return alpha * r ** (-beta)
