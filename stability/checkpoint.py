"""A run folder's saved state, so that an interrupted sweep loses no finished group.

``run.json`` contains the resolved configuration and the chunking chosen at the start,
and ``groups/`` contains one ``.npz`` per finished group of configurations. Both are
written atomically. ``--resume`` reads them back, runs only the missing groups with the same
chunking, and so reproduces the numbers of an uninterrupted run on the same device.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, SweepConfig
from .engine import GroupResult
from .files import atomic_write_bytes, atomic_write_json

__all__ = ["RUN_FILE", "RunStore"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
# Files a run writes besides run.json and groups/, which --force removes with the earlier run.
OUTPUT_FILES = ("results.json", "metrics.csv", "summary.md")
FIGURE_PATTERNS = ("coordinate_check.*", "slopes.*", "learning_curves.*", "gradient_norms.*")
RUN_SCHEMA_VERSION = 1


class RunStore:
    """Reads and writes the saved state of one run folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.groups = self.folder / "groups"

    def has_run(self) -> bool:
        return (self.folder / RUN_FILE).exists()

    def start(self, config: SweepConfig, chunk_sizes: dict[int, int], device: str) -> None:
        """Write run.json for a new run, after removing an earlier run's groups and output files."""
        if self.groups.exists():
            shutil.rmtree(self.groups)
        for name in OUTPUT_FILES:
            (self.folder / name).unlink(missing_ok=True)
        for pattern in FIGURE_PATTERNS:
            for path in self.folder.glob(pattern):
                path.unlink()
        self.groups.mkdir(parents=True)
        atomic_write_json(
            self.folder / RUN_FILE,
            {
                "schema_version": RUN_SCHEMA_VERSION,
                "config": config.to_json(),
                "chunk_sizes": {str(rank): size for rank, size in chunk_sizes.items()},
                "device": device,
            },
        )

    def load(self) -> tuple[SweepConfig, dict[int, int], str]:
        """Return (config, chunk sizes, device) saved by start()."""
        path = self.folder / RUN_FILE
        try:
            data = json.loads(path.read_text())
            config = SweepConfig.from_json(data["config"])
            chunk_sizes = {int(rank): int(size) for rank, size in data["chunk_sizes"].items()}
            return config, chunk_sizes, data["device"]
        except FileNotFoundError:
            raise ConfigError(f"no run to resume in {self.folder}: {RUN_FILE} is missing; start one without --resume") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path} is not a valid run file ({error}); start a new run with --out NEW_FOLDER") from None

    def _path(self, rank: int, start: int) -> Path:
        return self.groups / f"rank-{rank:06d}-from-{start:04d}.npz"

    def save_group(self, rank: int, start: int, group: GroupResult, flops: int, seconds: float) -> None:
        arrays = {f"coordinate_{name}": values.numpy() for name, values in group.coordinate.items()}
        arrays.update(
            grad_norm_A=group.grad_norm_A.numpy(),
            grad_norm_B=group.grad_norm_B.numpy(),
            loss=group.loss.numpy(),
            diverged_at=group.diverged_at.numpy(),
            flops=np.array(flops, dtype=np.int64),
            seconds=np.array(seconds),
        )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self._path(rank, start), buffer.getvalue())

    def load_group(self, rank: int, start: int) -> tuple[GroupResult, int, float] | None:
        """Return (group, flops, seconds) if this group was saved, else None."""
        path = self._path(rank, start)
        if not path.exists():
            return None
        with np.load(path) as data:
            coordinate = {
                key.removeprefix("coordinate_"): torch.from_numpy(data[key])
                for key in data.files
                if key.startswith("coordinate_")
            }
            group = GroupResult(
                coordinate=coordinate,
                grad_norm_A=torch.from_numpy(data["grad_norm_A"]),
                grad_norm_B=torch.from_numpy(data["grad_norm_B"]),
                loss=torch.from_numpy(data["loss"]),
                diverged_at=torch.from_numpy(data["diverged_at"]),
            )
            return group, int(data["flops"]), float(data["seconds"])
