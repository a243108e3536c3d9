"""Command line: ``python -m stability.benchmark``, the engine's speed on one sweep grid.

Each measured run happens in a fresh Python process, so that its peak memory is its own:

* ``engine``: runs the batched sweep (``run_sweep``), reads its peak memory, then times
  every kind of matrix product the sweep ran, alone, with the same torch call and
  operand layouts. The sum of count x isolated seconds over those products is the
  time the products alone would take. The sweep's FLOPs divided by it is the
  machine's matmul rate on the sweep's shapes, and that time divided by the sweep's
  seconds is the efficiency.
* ``baseline``: runs the straightforward implementation (``run_reference_sweep``, one
  ``nn.Module`` per configuration, autograd and ``torch.optim``) on the same grid and
  steps, and the parent checks that it computed the same metrics.

Peak memory is the peak resident set size (``getrusage``) minus the process's resident
size before the sweep starts on the CPU, and ``torch.cuda.max_memory_allocated`` on
CUDA. It is compared with the planner's estimate (``plan.make_plan``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .cli import EXIT_USAGE, HelpFormatter, OneLineErrorParser, add_sweep_arguments, parse_config
from .config import ConfigError, SweepConfig
from .files import atomic_write_json
from .grid import GridError, parse_rank_grid
from .measure import run_baseline, run_engine

__all__ = ["build_parser", "compare_results", "fit_group_seconds", "format_table", "main", "summarise"]

SCHEMA_VERSION = 1
# Largest relative difference at which the engine and the baseline agree, by dtype. In
# float32 the baseline's Frobenius norms of dL/dA and dL/dB, reductions over d x r
# entries, were off from a float64 run by up to 1.1e-3 at r = d = 4096 (the engine's,
# from b x b Grams, by 2e-7), so float32 allows 5e-3.
AGREEMENT_RTOL = {"float32": 5e-3, "float64": 1e-9}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m stability.benchmark",
        description=(
            "Time the batched sweep engine on one grid (default: the default sweep of "
            "python -m stability.simulate), compare its FLOP/s with the machine's matmul rate on the "
            "sweep's own product shapes, time the straightforward implementation on the same grid, and "
            "compare peak memory with the planner's estimate. Prints a table and writes JSON. "
            "The baseline always runs on the CPU."
        ),
        formatter_class=HelpFormatter,
    )
    add_sweep_arguments(parser)

    run = parser.add_argument_group("benchmark")
    run.add_argument("--repeats", type=int, default=3, help="engine sweeps, each in a fresh process; the table shows the median")
    baseline = run.add_mutually_exclusive_group()
    baseline.add_argument("--skip-baseline", action="store_true", help="do not run the straightforward implementation")
    baseline.add_argument(
        "--baseline-ranks", default=None,
        help="run the baseline on these ranks only (a rank grid); the speedup then compares the engine's "
        "groups of the same ranks, and is marked as a subset",
    )
    run.add_argument("--out", type=Path, default=None, help="JSON output (default: runs/benchmark-<timestamp>.json)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--worker", choices=("engine", "baseline"), default=None, help=argparse.SUPPRESS)
    run.add_argument("--worker-files", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def config_from_arguments(arguments: argparse.Namespace, ranks: str | None = None) -> SweepConfig:
    """Build the SweepConfig of the benchmarked grid, optionally on other ranks (raises ConfigError or GridError)."""
    config = parse_config(arguments)
    if ranks is None:
        return config
    return dataclasses.replace(config, ranks=parse_rank_grid(ranks))


def _worker_main(arguments: argparse.Namespace) -> int:
    """Run one measurement in this process and write its files into --worker-files."""
    folder = arguments.worker_files
    config = SweepConfig.from_json(json.loads((folder / "config.json").read_text()))
    if arguments.worker == "engine":
        summary, arrays = run_engine(config, show_progress=not arguments.quiet)
    else:
        summary, arrays = run_baseline(config)
    np.savez(folder / "arrays.npz", **arrays)
    atomic_write_json(folder / "summary.json", summary)
    return 0


# ---------------------------------------------------------------------------------------
# The parent process: start the workers, compare, print and write.


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _run_worker(kind: str, config: SweepConfig, folder: Path, quiet: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """Run one worker process on ``config`` and return its summary and arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", config.to_json())
    command = [sys.executable, "-m", "stability.benchmark", "--worker", kind, "--worker-files", str(folder)]
    if quiet:
        command.append("--quiet")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_root(), environment.get("PYTHONPATH")]))

    ticker = _ElapsedTicker(kind, enabled=kind == "baseline" and not quiet)
    with ticker:
        completed = subprocess.run(command, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the {kind} run failed with exit status {completed.returncode}; its error is printed above")
    summary = json.loads((folder / "summary.json").read_text())
    with np.load(folder / "arrays.npz") as data:
        arrays = {name: data[name] for name in data.files}
    return summary, arrays


class _ElapsedTicker:
    """Show a progress line with the elapsed time while a worker without its own bar runs."""

    def __init__(self, description: str, enabled: bool):
        self.description, self.enabled = description, enabled
        self._stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(desc=self.description, bar_format="{desc}: {elapsed} elapsed", dynamic_ncols=True)
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        while not self._stop.wait(1.0):
            self._bar.refresh()

    def __exit__(self, *exc_info):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._bar.close()


def compare_results(engine: dict[str, np.ndarray], baseline: dict[str, np.ndarray], rtol: float) -> dict:
    """Compare two sets of metric arrays; return the largest relative difference and whether all agree.

    The difference of each entry is taken relative to the largest magnitude of its
    metric, so entries near zero (such as grad_norm_A at step 0) do not dominate.
    """
    worst, worst_name = 0.0, None
    for name, reference in baseline.items():
        measured = engine[name]
        if measured.shape != reference.shape:
            raise ValueError(f"{name} has shape {measured.shape} in the engine but {reference.shape} in the baseline")
        finite = np.isfinite(reference) & np.isfinite(measured)
        if not np.array_equal(np.isfinite(reference), np.isfinite(measured)):
            return {"agree": False, "max_relative_difference": float("inf"), "metric": name}
        if not finite.any():
            continue
        scale = np.abs(reference[finite]).max()
        if scale == 0:
            continue
        difference = float(np.abs(measured[finite] - reference[finite]).max() / scale)
        if difference > worst:
            worst, worst_name = difference, name
    return {"agree": worst <= rtol, "max_relative_difference": worst, "metric": worst_name}


def fit_group_seconds(group_seconds: list[dict]) -> dict:
    """Fit seconds = intercept + slope x rank to the groups by least squares.

    Groups with fewer configurations than the largest group are left out, so that
    every point has the same batch of configurations.
    """
    full = max(group["configurations"] for group in group_seconds)
    ranks = np.array([g["rank"] for g in group_seconds if g["configurations"] == full], dtype=float)
    seconds = np.array([g["seconds"] for g in group_seconds if g["configurations"] == full], dtype=float)
    # A line through two points fits them exactly, so R^2 means something from three distinct ranks.
    if len(np.unique(ranks)) < 3:
        return {"intercept": None, "slope": None, "r_squared": None, "points": len(ranks)}
    slope, intercept = np.polyfit(ranks, seconds, 1)
    predicted = intercept + slope * ranks
    total = ((seconds - seconds.mean()) ** 2).sum()
    r_squared = 1.0 - ((seconds - predicted) ** 2).sum() / total if total > 0 else 1.0
    return {"intercept": float(intercept), "slope": float(slope), "r_squared": float(r_squared), "points": len(ranks)}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _format_bytes(count: float) -> str:
    from .plan import format_bytes

    return format_bytes(count)


def _machine() -> str:
    from .environment import environment_info

    info = environment_info("cpu")
    return f"{info['cpu']}, {info['cpu_count']} CPUs, {platform.system()}, torch {info['versions']['torch']}"


def summarise(config: SweepConfig, engine_runs: list[dict], baseline: dict | None) -> dict:
    """Combine the runs into the numbers of the table (medians with their range)."""
    from .plan import count_model_flops

    seconds = _spread([run["seconds"] for run in engine_runs])
    achieved = _spread([run["model_flops"] / run["seconds"] for run in engine_runs])
    matmul_rate = _spread([run["matmul_rate"] for run in engine_runs])
    efficiency = _spread([run["product_seconds"] / run["seconds"] for run in engine_runs])
    gemm_rate = _spread([run["gemm_rate"] for run in engine_runs])
    peak = _spread([run["peak_bytes"] for run in engine_runs])
    planned = engine_runs[0]["planned_peak_bytes"]

    # Each group's median over the runs; every run has the same groups in the same order.
    group_seconds = []
    for index, group in enumerate(engine_runs[0]["group_seconds"]):
        median = statistics.median(run["group_seconds"][index]["seconds"] for run in engine_runs)
        group_seconds.append({**group, "seconds": median})
    # Within one adapter storage the cost is linear in rank; switching forms shifts the line.
    storages = sorted({group.get("storage", "dense") for group in group_seconds})
    group_fits = {
        storage: fit_group_seconds([group for group in group_seconds if group.get("storage", "dense") == storage])
        for storage in storages
    }

    summary = {
        "model_flops": engine_runs[0]["model_flops"],
        "planned_flops": engine_runs[0]["planned_flops"],
        # What the same steps cost with every adapter dense, as the baseline computes them.
        "dense_flops": count_model_flops(dataclasses.replace(config, adapter_storage="dense")),
        "seconds": seconds,
        "achieved_flops_per_second": achieved,
        "matmul_rate": matmul_rate,
        "efficiency": efficiency,
        "gemm_rate": gemm_rate,
        "efficiency_of_gemm_rate": achieved["median"] / gemm_rate["median"],
        "read_bandwidth": _spread([run["read_bandwidth"] for run in engine_runs]),
        "peak_bytes": peak,
        "planned_peak_bytes": planned,
        "peak_over_plan": peak["median"] / planned,
        "group_seconds": group_seconds,
        "group_fit": fit_group_seconds(group_seconds),
        "group_fits_by_storage": group_fits,
        "sum_of_ranks": sum(config.ranks),
    }
    if baseline is not None:
        summary["baseline"] = baseline
        summary["speedup"] = baseline["seconds"] / baseline["engine_seconds"]
    return summary


def format_table(config: SweepConfig, summary: dict, machine: str, device: str) -> str:
    """Return the printed table: one line per measured quantity."""

    def rate(value: float) -> str:
        return f"{value / 1e9:.1f} GFLOP/s"

    def spread(values: dict, text) -> str:
        """Return " (min to max)" over several runs, and nothing for one run."""
        if len(values.get("values", [])) < 2:
            return ""
        return f" ({text(values['min'])} to {text(values['max'])})"

    seconds, efficiency = summary["seconds"], summary["efficiency"]
    flops_text = f"{summary['model_flops'] / 1e9:.4g} GFLOP run (planner: {summary['planned_flops'] / 1e9:.4g})"
    if summary.get("dense_flops", summary["model_flops"]) != summary["model_flops"]:
        flops_text += f"; {summary['dense_flops'] / 1e9:.4g} GFLOP with dense adapters"
    if len(seconds["values"]) > 1:
        seconds_text = (f"{seconds['median']:.1f} s (median of {len(seconds['values'])}; "
                        f"{seconds['min']:.1f} to {seconds['max']:.1f})")
    else:
        seconds_text = f"{seconds['median']:.2f} s (1 run)"
    rows = [
        ("grid", f"{len(config.ranks)} ranks {config.ranks[0]}..{config.ranks[-1]} x {len(config.scalings)} "
                 f"scalings x {config.seeds} seeds, width {config.width}, depth {config.depth}, "
                 f"batch {config.batch}, {config.steps} steps, {config.optimizer}"),
        ("machine", machine),
        ("device", f"{device}, {config.dtype}"),
        ("sweep FLOPs", flops_text),
        ("sweep seconds", seconds_text),
        ("achieved", rate(summary["achieved_flops_per_second"]["median"])),
        ("matmul rate", f"{rate(summary['matmul_rate']['median'])} on the sweep's products timed alone"
                        f"{spread(summary['matmul_rate'], rate)}; "
                        f"{rate(summary['gemm_rate']['median'])} on a (1024 x {config.width}) @ "
                        f"({config.width} x {config.width}) GEMM"),
        ("efficiency", f"{100 * efficiency['median']:.0f}% of the matmul rate"
                       f"{spread(efficiency, lambda value: f'{100 * value:.0f}%')}; "
                       f"{100 * summary['efficiency_of_gemm_rate']:.0f}% of the GEMM rate"),
    ]
    rows.append(("memory read", f"{summary['read_bandwidth']['median'] / 1e9:.1f} GB/s summing one layer's A "
                                f"of the largest group"))
    baseline = summary.get("baseline")
    if baseline is None:
        rows.append(("baseline", "not run (--skip-baseline)"))
    else:
        scope = "same grid" if baseline["subset"] is None else f"ranks {baseline['subset']} only"
        agreement = baseline["agreement"]
        verdict = "results agree" if agreement["agree"] else "RESULTS DIFFER"
        rows.append(("baseline seconds", f"{baseline['seconds']:.1f} s ({scope}, CPU; {verdict}, largest "
                                         f"relative difference {agreement['max_relative_difference']:.1e})"))
        rows.append(("speedup", f"{summary['speedup']:.1f}x (engine {baseline['engine_seconds']:.1f} s on the "
                                f"same {'grid' if baseline['subset'] is None else 'groups'})"))
    rows.append(("peak memory", f"{_format_bytes(summary['peak_bytes']['median'])} measured, "
                                f"{_format_bytes(summary['planned_peak_bytes'])} planned "
                                f"(measured / planned = {summary['peak_over_plan']:.2f})"))
    fit = summary["group_fit"]
    fits = {"all groups": fit}
    by_storage = summary.get("group_fits_by_storage", {})
    if len(by_storage) > 1:
        fits.update({f"{storage} groups": storage_fit for storage, storage_fit in by_storage.items()})
    for label, line in fits.items():
        if line["slope"] is not None:
            sign = "+" if line["slope"] >= 0 else "-"
            rows.append((f"group cost, {label}" if len(fits) > 1 else "group cost",
                         f"seconds = {line['intercept']:.3f} {sign} {1e3 * abs(line['slope']):.4f} ms x rank "
                         f"(R^2 = {line['r_squared']:.4f}, {line['points']} groups)"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]

    lines.append("")
    lines.append(f"{'rank':>6}  {'seconds':>8}  {'fit':>8}  storage")
    for group in summary["group_seconds"]:
        storage = group.get("storage", "dense")
        line = by_storage.get(storage, fit)
        predicted = "" if line["slope"] is None else f"{line['intercept'] + line['slope'] * group['rank']:8.3f}"
        lines.append(f"{group['rank']:>6}  {group['seconds']:8.3f}  {predicted:>8}  {storage}")
    return "\n".join(lines)


def _default_output() -> Path:
    return Path("runs") / f"benchmark-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def _engine_seconds_on(summary_runs: list[dict], ranks: list[int]) -> float:
    """Return the median over runs of the engine's seconds on the groups of ``ranks``."""
    selected_ranks = set(ranks)
    return statistics.median(
        sum(group["seconds"] for group in run["group_seconds"] if group["rank"] in selected_ranks) for run in summary_runs
    )


def _subset_arrays(arrays: dict[str, np.ndarray], config: SweepConfig, ranks: list[int]) -> dict[str, np.ndarray]:
    index = [config.ranks.index(rank) for rank in ranks]
    return {name: values[index] for name, values in arrays.items()}


def _parse_configs(parser: argparse.ArgumentParser, arguments: argparse.Namespace):
    """Return (config, baseline config or None), or exit with status 2 naming the invalid option."""
    from .plan import PlanError, make_plan
    from .sweep import resolve_device

    try:
        if arguments.repeats < 1:
            raise ConfigError(f"--repeats is {arguments.repeats}, but it must be at least 1")
        config = config_from_arguments(arguments)
        baseline_config = None
        if arguments.baseline_ranks is not None:
            baseline_config = config_from_arguments(arguments, ranks=arguments.baseline_ranks)
            missing = sorted(set(baseline_config.ranks) - set(config.ranks))
            if missing:
                raise ConfigError(
                    f"--baseline-ranks lists ranks {missing} that are not in --ranks; choose ranks from {config.ranks}"
                )
        elif not arguments.skip_baseline:
            baseline_config = config
        make_plan(config, resolve_device(config.device))
    except (ConfigError, GridError, PlanError) as error:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {error}\n")
    return config, baseline_config


def _measure(arguments: argparse.Namespace, config: SweepConfig, baseline_config: SweepConfig | None):
    """Run the engine's repeats and the baseline in worker processes; return (engine runs, baseline)."""
    engine_runs, engine_arrays, baseline = [], None, None
    with tempfile.TemporaryDirectory(prefix="stability-benchmark-") as scratch:
        scratch = Path(scratch)
        for repeat in range(arguments.repeats):
            if not arguments.quiet:
                print(f"engine run {repeat + 1} of {arguments.repeats}", file=sys.stderr)
            summary, arrays = _run_worker("engine", config, scratch / f"engine-{repeat}", arguments.quiet)
            engine_runs.append(summary)
            if engine_arrays is None:
                engine_arrays = arrays

            # The baseline runs between the engine's repeats, so both see the same machine load.
            if repeat == 0 and baseline_config is not None:
                if not arguments.quiet:
                    print("baseline run", file=sys.stderr)
                baseline, baseline_arrays = _run_worker("baseline", baseline_config, scratch / "baseline", arguments.quiet)
                baseline["subset"] = None if baseline_config is config else arguments.baseline_ranks
                baseline["ranks"] = baseline_config.ranks

    if baseline is not None:
        if baseline["subset"] is None:
            baseline["engine_seconds"] = statistics.median(run["seconds"] for run in engine_runs)
        else:
            engine_arrays = _subset_arrays(engine_arrays, config, baseline_config.ranks)
            baseline["engine_seconds"] = _engine_seconds_on(engine_runs, baseline_config.ranks)
        baseline["agreement"] = compare_results(engine_arrays, baseline_arrays, AGREEMENT_RTOL[config.dtype])
    return engine_runs, baseline


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if arguments.worker is not None:
        return _worker_main(arguments)

    config, baseline_config = _parse_configs(parser, arguments)
    output = arguments.out if arguments.out is not None else _default_output()
    started = datetime.now(timezone.utc)
    try:
        engine_runs, baseline = _measure(arguments, config, baseline_config)
    except RuntimeError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1

    summary = summarise(config, engine_runs, baseline)
    device_name = engine_runs[0]["device"]
    table = format_table(config, summary, _machine(), device_name)
    print(table)

    from .environment import environment_info

    record = {
        "schema_version": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "stability.benchmark", *(argv or sys.argv[1:])]),
        "environment": environment_info(device_name),
        "config": config.to_json(),
        "summary": summary,
        "engine_runs": engine_runs,
        "table": table,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, record)
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
