"""Scaling rules gamma_r = alpha * r**(-beta) for a LoRA adapter of rank r.

The adapter adds ``gamma_r * B @ A`` to a frozen layer. HF PEFT's ``LoraLayer``
uses ``scaling = lora_alpha / r`` (beta = 1, standard LoRA) and, with
``use_rslora=True``, ``lora_alpha / sqrt(r)`` (beta = 1/2, rsLoRA,
arXiv 2312.03732). ``constant`` (beta = 0) keeps gamma at alpha for every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .grid import GridError, parse_number_grid

__all__ = ["NAMED_RULES", "ScalingRule", "gamma", "parse_scaling_rules"]

NAMED_RULES: dict[str, Fraction] = {
    "constant": Fraction(0),
    "rslora": Fraction(1, 2),
    "lora": Fraction(1),
}


def gamma(alpha: float, rank: int, beta: float | Fraction) -> float:
    """Return the adapter multiplier gamma_r = alpha * rank**(-beta).

    >>> gamma(16, 64, Fraction(1, 2))
    2.0
    """
    return float(alpha) * float(rank) ** (-float(beta))


@dataclass(frozen=True, order=True)
class ScalingRule:
    """A scaling exponent beta with the name a user gave it."""

    exponent: Fraction
    name: str

    def gamma(self, alpha: float, rank: int) -> float:
        return gamma(alpha, rank, self.exponent)


def _name_for(beta: Fraction) -> str:
    for name, value in NAMED_RULES.items():
        if value == beta:
            return name
    return f"beta={float(beta):g}"


def parse_scaling_rules(spec: str) -> list[ScalingRule]:
    """Parse ``constant,rslora,lora`` or exponents such as ``0..1:+0.125`` into rules.

    Names and numbers mix freely; rules with equal exponents are merged, and the
    result is sorted by exponent. A number equal to a named rule's exponent takes
    that name.

    >>> [r.name for r in parse_scaling_rules("lora,0.25,rslora")]
    ['beta=0.25', 'rslora', 'lora']
    """
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise GridError(f"empty item in scaling list {spec!r}; write e.g. constant,rslora,lora or 0..1:+0.25")

    exponents: set[Fraction] = set()
    for item in items:
        key = item.lower()
        if key in NAMED_RULES:
            exponents.add(NAMED_RULES[key])
            continue
        if not (key[:1].isdigit() or key[:1] in "-+."):
            names = ", ".join(NAMED_RULES)
            raise GridError(f"unknown scaling {item!r}; use one of {names} or a number beta such as 0.5")
        exponents.update(parse_number_grid(item))

    if not all(math.isfinite(float(beta)) for beta in exponents):
        raise GridError(f"scaling exponents in {spec!r} must be finite numbers")
    return [ScalingRule(beta, _name_for(beta)) for beta in sorted(exponents)]
