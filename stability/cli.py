"""Command-line pieces shared by ``stability.simulate`` and ``stability.benchmark``.

Both take the same sweep options, parse them into one validated SweepConfig, and
report invalid input as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import re

from .adapters import ADAPTER_STORAGES
from .config import ACTIVATIONS, INITS, OPTIMIZERS, SweepConfig
from .grid import GridError, parse_number_grid, parse_rank_grid
from .scaling import parse_scaling_rules

__all__ = ["EXIT_USAGE", "HelpFormatter", "OneLineErrorParser", "add_sweep_arguments", "parse_config", "parse_size"]

EXIT_USAGE = 2
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except for flags and options whose help explains a missing default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def fail(self, message: str):
        """Exit with status 2 and one line naming the problem."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> int:
    """Parse a memory size such as ``8GiB``, ``512MB`` or ``1024`` (bytes) into bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; write e.g. 8GiB or 512MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that define a sweep: grid, training, model, device and measurement."""
    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "--ranks", default="1..4096",
        help="ranks: A..B doubles from A to B (B included), A..B:xK uses ratio K, A..B:+K step K; "
        "comma lists combine",
    )
    grid.add_argument(
        "--scaling", default="constant,rslora,lora",
        help="scaling rules: constant (beta=0), rslora (beta=1/2), lora (beta=1), or exponents beta and "
        "ranges such as 0..1:+0.125",
    )
    grid.add_argument("--alpha", type=float, default=1.0, help="alpha in gamma_r = alpha * r^-beta (PEFT's lora_alpha)")
    grid.add_argument("--seeds", type=int, default=3, help="independent replicas (adapter init and data); CIs are over them")
    grid.add_argument("--seed", type=int, default=0, help="first replica seed; replicas use seed, seed+1, ...")

    training = parser.add_argument_group("training")
    training.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="update rule for A and B")
    training.add_argument(
        "--lr", type=float, default=None,
        help="learning rate (default: 4/width for sgd, 1e-3 for adam, adamw and signsgd)",
    )
    training.add_argument("--weight-decay", type=float, default=None,
                          help="AdamW's decoupled weight decay (default: 0.01, torch's; adamw only)")
    training.add_argument("--steps", type=int, default=40, help="training steps (learning curves)")
    training.add_argument("--coord-steps", type=int, default=3, help="record coordinate metrics after 0..N steps")
    training.add_argument(
        "--fit-steps", default="1",
        help="steps whose coordinate metrics enter the slope fits (a grid spec such as 1..3:+1); the exact "
        "theory describes step 1",
    )
    training.add_argument("--batch", type=int, default=8, help="examples per step; the first batch is the probe")

    model = parser.add_argument_group("model")
    model.add_argument("--width", type=int, default=4096, help="width d of the frozen d x d base layers")
    model.add_argument("--depth", type=int, default=2, help="number of base layers, each with an adapter")
    model.add_argument("--init", default="uniform", choices=INITS,
                       help="distribution of A's entries, all with variance 1/(3 d) (uniform is PEFT's default)")
    model.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="nonlinearity between layers")
    model.add_argument("--task-seed", type=int, default=0, help="seed of the frozen base network and the teacher")
    model.add_argument("--task-scale", type=float, default=0.5,
                       help="teacher weights = base + task_scale x a random matrix of the base's scale")
    model.add_argument("--allow-rank-above-width", action="store_true",
                       help="allow ranks above --width (B A then has rank at most the width)")

    run = parser.add_argument_group("device and measurement")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:i (auto picks CUDA when present)")
    run.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="floating-point precision")
    run.add_argument("--max-memory", type=parse_size, default=None,
                     help="memory budget, e.g. 8GiB (default: 80%% of the device's free memory)")
    run.add_argument("--adapter-storage", default="auto", choices=ADAPTER_STORAGES,
                     help="how A and B are held: dense, or (SGD only) factored as A_0 plus the low-rank sum of "
                          "updates; auto factors SGD adapters of rank >= batch x steps / 2")
    run.add_argument("--stable-tol", type=float, default=0.1,
                     help="a slope whose 95%% CI lies within +-this counts as rank-stable")


def parse_config(arguments: argparse.Namespace) -> SweepConfig:
    """Build a validated SweepConfig from parsed arguments (raises ConfigError or GridError)."""
    fit_steps = parse_number_grid(arguments.fit_steps)
    if any(step.denominator != 1 for step in fit_steps):
        raise GridError(f"--fit-steps {arguments.fit_steps!r} must list whole steps, e.g. 1 or 1..3:+1")
    return SweepConfig(
        ranks=parse_rank_grid(arguments.ranks),
        scalings=parse_scaling_rules(arguments.scaling),
        alpha=arguments.alpha,
        optimizer=arguments.optimizer,
        learning_rate=arguments.lr,
        weight_decay=arguments.weight_decay,
        steps=arguments.steps,
        coord_steps=arguments.coord_steps,
        fit_steps=[int(step) for step in fit_steps],
        width=arguments.width,
        depth=arguments.depth,
        batch=arguments.batch,
        seeds=arguments.seeds,
        seed=arguments.seed,
        task_seed=arguments.task_seed,
        task_scale=arguments.task_scale,
        init=arguments.init,
        activation=arguments.activation,
        device=arguments.device,
        dtype=arguments.dtype,
        stable_tol=arguments.stable_tol,
        allow_rank_above_width=arguments.allow_rank_above_width,
        max_memory_bytes=arguments.max_memory,
        adapter_storage=arguments.adapter_storage,
    )


