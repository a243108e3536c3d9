"""The scaling rule gamma_r = alpha * r^-beta against HF PEFT's formulas."""

import math

from hypothesis import given
from hypothesis import strategies as st

from stability.scaling import ScalingRule, gamma, parse_scaling_rules


def peft_scaling(lora_alpha: float, r: int, use_rslora: bool) -> float:
    """HF PEFT's LoraLayer.update_layer (peft 0.10 onwards): alpha/sqrt(r) with rsLoRA, else alpha/r."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


@given(alpha=st.floats(0.01, 1024, allow_nan=False), rank=st.integers(1, 65536))
def test_named_rules_match_peft(alpha, rank):
    rules = {rule.name: rule for rule in parse_scaling_rules("constant,rslora,lora")}
    assert math.isclose(rules["lora"].gamma(alpha, rank), peft_scaling(alpha, rank, False), rel_tol=1e-12)
    assert math.isclose(rules["rslora"].gamma(alpha, rank), peft_scaling(alpha, rank, True), rel_tol=1e-12)
    assert rules["constant"].gamma(alpha, rank) == alpha


@given(
    alpha=st.floats(0.01, 100, allow_nan=False),
    beta=st.fractions(0, 2, max_denominator=16),
    rank=st.integers(1, 4096),
    factor=st.integers(2, 8),
)
def test_gamma_is_a_power_law(alpha, beta, rank, factor):
    ratio = gamma(alpha, rank * factor, beta) / gamma(alpha, rank, beta)
    assert math.isclose(ratio, factor ** (-float(beta)), rel_tol=1e-9)


def test_rule_gamma_uses_its_exponent():
    assert ScalingRule(exponent=1, name="lora").gamma(16, 8) == 2.0
