"""Regenerate the committed figures in figures/: ``python -m stability.make_figures``.

Two sweeps over the scaling exponent beta = 0, 1/8, ..., 1 (ranks 1..1024 at width
1024, three seeds), one under SGD and one under Adam, give the slope-versus-beta
figures and the coordinate checks. The default sweep (ranks 1..4096) gives the
learning curves and gradient norms. On a 2-core CPU this takes about two minutes.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from .analysis import analyse
from .config import SweepConfig
from .grid import parse_rank_grid
from .plots import coordinate_check, gradient_norms, learning_curves, slopes
from .scaling import parse_scaling_rules
from .sweep import run_sweep
from .theory import compute_theory

__all__ = ["beta_sweep_config", "main"]

logger = logging.getLogger(__name__)


def beta_sweep_config(optimizer: str) -> SweepConfig:
    """Return the beta sweep behind the slope-versus-beta figures."""
    return SweepConfig(
        ranks=parse_rank_grid("1..1024"),
        scalings=parse_scaling_rules("0..1:+0.125"),
        optimizer=optimizer,
        width=1024,
        steps=3,
        coord_steps=3,
        seeds=3,
    )


def _run(config: SweepConfig):
    result = run_sweep(config, show_progress=True)
    theory = compute_theory(config, result.probes)
    return result, theory, analyse(result, theory)


def _copy_png_figures(folder: Path, names: list[str], target: Path, prefix: str) -> list[Path]:
    """Copy the PNG files among ``names`` from ``folder`` to ``target``, each name prefixed."""
    copied = []
    for name in names:
        if name.endswith(".png"):
            destination = target / f"{prefix}{name}"
            shutil.copyfile(folder / name, destination)
            copied.append(destination)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stability.make_figures", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="folder for the PNG figures")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arguments.out.mkdir(parents=True, exist_ok=True)

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for optimizer in ("sgd", "adam"):
            result, theory, analysis = _run(beta_sweep_config(optimizer))
            names = slopes(result, analysis, folder) + coordinate_check(result, theory, folder)
            written += _copy_png_figures(folder, names, arguments.out, f"{optimizer}_")

        default = SweepConfig(ranks=parse_rank_grid("1..4096"), scalings=parse_scaling_rules("constant,rslora,lora"))
        result, theory, _ = _run(default)
        names = learning_curves(result, folder) + gradient_norms(result, theory, folder)
        written += _copy_png_figures(folder, names, arguments.out, "sgd_default_")

    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
