"""The resolved configuration of a rank sweep, validated before any work starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from .adapters import ADAPTER_STORAGES
from .scaling import ScalingRule

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_LEARNING_RATES",
    "default_learning_rate",
    "INITS",
    "OPTIMIZERS",
    "ConfigError",
    "SweepConfig",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "signsgd")
INITS = ("uniform", "gaussian", "rademacher")
ACTIVATIONS = ("relu", "tanh", "gelu", "linear")
DTYPES = ("float32", "float64")

# SGD: |dL/dz|^2 grows like the width d, and so does the step that A takes once B
# is nonzero. At lr = 8/d some rank-1 adapters (gamma = 1) diverged within 50 steps
# (widths 64 and 1024, seeds 0-2, this toolkit's sweep on a 2-core CPU), so the
# default is half that. The slopes after one SGD step do not depend on lr, because
# that step is linear in lr. Adam's first step moves every entry of B by lr, and 1e-3
# is the usual LoRA value.
SGD_LEARNING_RATE_TIMES_WIDTH = 4.0
ADAMW_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "signsgd": 1e-3}


def default_learning_rate(optimizer: str, width: int) -> float:
    if optimizer == "sgd":
        return SGD_LEARNING_RATE_TIMES_WIDTH / width
    return DEFAULT_LEARNING_RATES.get(optimizer, 1e-3)


class ConfigError(ValueError):
    """An invalid sweep configuration; the message names the value and what to type instead."""


@dataclass
class SweepConfig:
    """Everything that determines a sweep's numbers, saved whole into results.json."""

    ranks: list[int]
    scalings: list[ScalingRule]
    alpha: float = 1.0  # gamma_r = alpha * r**(-beta); PEFT calls it lora_alpha
    optimizer: str = "sgd"  # the theorem's setting
    learning_rate: float | None = None  # None: 4/width for SGD, else DEFAULT_LEARNING_RATES
    weight_decay: float | None = None  # AdamW only; None: torch.optim.AdamW's default 0.01, and 0 otherwise
    steps: int = 40  # training steps, for the learning curves
    coord_steps: int = 3  # coordinate metrics are recorded after 0..coord_steps updates
    fit_steps: list[int] = field(default_factory=lambda: [1])  # steps whose metrics enter the slope fits
    width: int = 4096  # d: the base layers are d x d, so ranks up to d are genuine
    depth: int = 2  # frozen base layers, each with an adapter
    batch: int = 8  # examples per step; the probe batch is the first one
    seeds: int = 3  # independent replicas (adapter init and data); slope CIs are over seeds
    seed: int = 0  # first seed; replicas use seed, seed + 1, ...
    task_seed: int = 0  # draws the frozen base network and the teacher, shared by all replicas
    task_scale: float = 0.5  # teacher = base weights + task_scale * (a random matrix of the same scale)
    init: str = "uniform"  # A's entries: PEFT's kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(d))
    activation: str = "relu"
    device: str = "auto"
    dtype: str = "float32"
    stable_tol: float = 0.1  # |slope| below this counts as level (rank-stable)
    allow_rank_above_width: bool = False
    max_memory_bytes: int | None = None  # None: most of the device's free memory
    adapter_storage: str = "auto"  # dense A and B, or SGD's A_0 plus factored updates (stability.adapters)

    def __post_init__(self) -> None:
        if self.weight_decay is None:
            self.weight_decay = ADAMW_WEIGHT_DECAY if self.optimizer == "adamw" else 0.0
        if self.learning_rate is None:
            # A width below 1 has no default; validate() then names the width as the problem.
            self.learning_rate = default_learning_rate(self.optimizer, self.width) if self.width >= 1 else math.nan
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid value."""
        self._validate_choices()
        self._validate_counts()
        self._validate_numbers()

    def _validate_choices(self) -> None:
        if not self.ranks:
            raise ConfigError("the rank grid is empty; pass e.g. --ranks 1..4096")
        if min(self.ranks) < 1:
            raise ConfigError(f"rank {min(self.ranks)} is below 1; pass e.g. --ranks 1..4096")
        if not self.scalings:
            raise ConfigError("no scaling rule given; pass e.g. --scaling constant,rslora,lora")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; use one of {', '.join(INITS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        if self.adapter_storage not in ADAPTER_STORAGES:
            raise ConfigError(
                f"unknown adapter storage {self.adapter_storage!r}; use one of {', '.join(ADAPTER_STORAGES)}"
            )
        if self.adapter_storage == "factored" and self.optimizer != "sgd":
            raise ConfigError(
                f"--adapter-storage factored needs --optimizer sgd (each {self.optimizer} step changes every "
                f"entry of A and B); pass --adapter-storage auto or dense"
            )

    def _validate_counts(self) -> None:
        for name in ("steps", "width", "depth", "batch", "seeds"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} is {value}, but it must be at least 1")
        if self.coord_steps < 1:
            raise ConfigError(f"--coord-steps is {self.coord_steps}, but it must be at least 1")
        if self.coord_steps > self.steps:
            raise ConfigError(
                f"--coord-steps {self.coord_steps} exceeds --steps {self.steps}; "
                f"pass --coord-steps {self.steps} or more --steps"
            )
        if not self.fit_steps:
            raise ConfigError("--fit-steps is empty; pass e.g. --fit-steps 1")
        for step in self.fit_steps:
            if not 1 <= step <= self.coord_steps:
                raise ConfigError(
                    f"fit step {step} is outside the recorded coordinate steps 1..{self.coord_steps}; "
                    f"pass --fit-steps 1..{self.coord_steps} or raise --coord-steps"
                )
        if max(self.ranks) > self.width and not self.allow_rank_above_width:
            raise ConfigError(
                f"the largest rank {max(self.ranks)} exceeds --width {self.width}, so B A cannot have that rank; "
                f"pass --width {max(self.ranks)} or --allow-rank-above-width"
            )

    def _validate_numbers(self) -> None:
        for option, value in (("--lr", self.learning_rate), ("--alpha", self.alpha), ("--task-scale", self.task_scale),
                              ("--weight-decay", self.weight_decay), ("--stable-tol", self.stable_tol)):
            if not math.isfinite(value):
                raise ConfigError(f"{option} is {value}, but it must be a finite number")
        if not self.learning_rate > 0:
            raise ConfigError(f"--lr is {self.learning_rate}, but it must be above 0")
        if not self.alpha > 0:
            raise ConfigError(f"--alpha is {self.alpha}, but it must be above 0")
        if self.task_scale < 0:
            raise ConfigError(f"--task-scale is {self.task_scale}, but it must be 0 or more")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay is {self.weight_decay}, but it must be 0 or more")
        if self.weight_decay != 0 and self.optimizer != "adamw":
            raise ConfigError(
                f"--weight-decay applies to adamw only, but the optimizer is {self.optimizer}; "
                f"drop --weight-decay or pass --optimizer adamw"
            )
        if not self.stable_tol > 0:
            raise ConfigError(f"--stable-tol is {self.stable_tol}, but it must be above 0")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def to_json(self) -> dict:
        """Return the configuration as JSON-ready values (exponents as strings and floats)."""
        data = asdict(self)
        data["scalings"] = [
            {"name": rule.name, "scaling_exponent": float(rule.exponent), "exact": str(rule.exponent)}
            for rule in self.scalings
        ]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "SweepConfig":
        values = dict(data)
        values["scalings"] = [ScalingRule(Fraction(item["exact"]), item["name"]) for item in data["scalings"]]
        return cls(**values)
