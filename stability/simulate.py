"""Command line: ``python -m stability.simulate --ranks 1..4096``.

Trains toy LoRA MLPs for every rank and scaling rule, fits how adapter activations and
gradients scale with rank, compares them with the exact theory from ``proofs``, and
writes a run folder (results.json, metrics.csv, summary.md, figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from datetime import datetime
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from .cli import EXIT_USAGE, HelpFormatter, OneLineErrorParser, add_sweep_arguments, parse_config
from .adapters import describe_storage
from .config import ConfigError, SweepConfig
from .grid import GridError
from .plan import PlanError, count_model_flops, format_bytes, make_plan, measure_matmul_rate

__all__ = ["build_parser", "main", "parse_config"]

logger = logging.getLogger("stability")

EXIT_CHECK_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m stability.simulate",
        description=(
            "Sweep LoRA adapter rank r and scaling gamma_r = alpha * r^-beta on a toy MLP, measure how adapter "
            "outputs and gradients scale with r, and compare with the exact theory (rsLoRA, arXiv 2312.03732)."
        ),
        formatter_class=HelpFormatter,
    )
    add_sweep_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None,
                     help="run folder (default: a new timestamped folder under runs/)")
    run.add_argument("--force", action="store_true", help="start over in a run folder that already contains a run")
    run.add_argument("--resume", action="store_true",
                     help="continue the interrupted run in --out, with its saved settings; finished groups are kept")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (memory, FLOPs, expected time) and exit without training")
    run.add_argument("--check", action="store_true",
                     help="exit with status 3 if a measured verdict disagrees with the theory for this optimizer")
    run.add_argument("--no-figures", action="store_true", help="skip the PNG and SVG figures")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no printed table")
    run.add_argument("--verbose", action="store_true", help="log progress details")
    return parser




def _format_slope(slope: float | None) -> str:
    return "none" if slope is None else f"{slope:+.2f}"


def _default_folder() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


# Options that --resume accepts; everything else comes from the folder's run.json.
_RESUME_OPTIONS = {"--resume", "--out", "--quiet", "--verbose", "--no-figures", "--check", "--max-memory"}
EXIT_INTERRUPTED = 130


def _explicit_options(argv: list[str]) -> set[str]:
    return {token.split("=", 1)[0] for token in argv if token.startswith("--")}


def _open_run(arguments, argv: list[str]):
    """Return (config, folder, store, plan, device) for a new or resumed run, or raise ConfigError."""
    from .checkpoint import RunStore
    from .sweep import resolve_device

    if arguments.resume:
        if arguments.out is None:
            raise ConfigError("--resume needs the run folder: pass --resume --out FOLDER")
        store = RunStore(arguments.out)
        config, chunk_sizes, saved_device = store.load()
        extra = sorted(_explicit_options(argv) - _RESUME_OPTIONS)
        if extra:
            raise ConfigError(
                f"--resume takes the settings saved in {arguments.out}/run.json, so {', '.join(extra)} cannot change "
                f"them; drop {extra[0]} or start a new run with --out NEW_FOLDER"
            )
        config.max_memory_bytes = arguments.max_memory
        device = resolve_device(config.device)
        if str(device) != saved_device:
            logger.warning("the run started on %s and resumes on %s; numbers may differ in the last digits",
                           saved_device, device)
        plan = make_plan(config, device)
        for rank, size in chunk_sizes.items():
            if size > plan.chunk_sizes.get(rank, 0):
                raise PlanError(
                    f"the run trained {size} configurations of rank {rank} together, but only "
                    f"{plan.chunk_sizes.get(rank, 0)} fit in the memory free now; free memory or raise --max-memory"
                )
        plan.chunk_sizes = chunk_sizes
        return config, arguments.out, store, plan, device

    config = parse_config(arguments)
    device = resolve_device(config.device)
    plan = make_plan(config, device)
    folder = arguments.out if arguments.out is not None else _default_folder()
    store = RunStore(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder; pass --out NEW_FOLDER")
    if (store.has_run() or (folder / "results.json").exists()) and not (arguments.force or arguments.dry_run):
        raise ConfigError(
            f"{folder} already contains a run; pass --resume --out {folder} to continue it, --force to start over, "
            f"or --out NEW_FOLDER"
        )
    return config, folder, store, plan, device


def _start_folder(store, config, plan, device) -> None:
    """Create the run folder and write run.json, so an unwritable folder fails before any work."""
    try:
        store.folder.mkdir(parents=True, exist_ok=True)
        store.start(config, plan.chunk_sizes, str(device))
    except OSError as error:
        raise ConfigError(
            f"cannot write to the run folder {store.folder}: {error.strerror}; pass --out to a writable folder"
        ) from None


def _format_flops(flops: float) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _dry_run_text(config: SweepConfig, plan, device) -> str:
    """Return the --dry-run report: plan, memory, adapter storage, FLOPs and expected time."""
    rate = measure_matmul_rate(config, device)
    seconds = plan.model_flops / rate
    expected = f"about {seconds:.0f} s" if seconds >= 1 else "under 1 s"
    lines = [
        f"plan: {len(config.ranks)} ranks x {len(config.scalings)} scalings x {config.seeds} seeds on {device}, "
        f"{plan.groups} groups",
        f"memory: about {format_bytes(plan.peak_bytes)} at peak (budget {format_bytes(plan.budget_bytes)})",
        f"adapter storage {describe_storage(config)}",
        f"model FLOPs: {_format_flops(plan.model_flops)}; measured matmul rate {rate / 1e9:.1f} GFLOP/s; "
        f"expected time {expected}",
    ]
    if config.adapter_storage != "auto":
        automatic = count_model_flops(dataclasses.replace(config, adapter_storage="auto"))
        if automatic < plan.model_flops:
            lines.append(
                f"note: --adapter-storage {config.adapter_storage} runs {plan.model_flops / automatic:.1f} times the "
                f"FLOPs of --adapter-storage auto ({_format_flops(automatic)}) on this grid"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def fail(message: str):
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    if arguments.resume and arguments.force:
        fail("--resume continues a run and --force starts it over; pass only one of them")
    try:
        config, folder, store, plan, device = _open_run(arguments, argv)
    except (ConfigError, GridError, PlanError) as error:
        fail(str(error))

    if arguments.dry_run:
        print(_dry_run_text(config, plan, device))
        return 0

    if not arguments.resume:
        try:
            _start_folder(store, config, plan, device)
        except ConfigError as error:
            fail(str(error))

    # Imported here so that --help and input errors return without loading sympy and matplotlib.
    from .analysis import analyse
    from .plots import draw_figures
    from .report import format_table, write_run
    from .sweep import run_sweep
    from .theory import compute_theory

    resume_hint = f"python -m stability.simulate --resume --out {folder}"
    try:
        with logging_redirect_tqdm():
            result = run_sweep(config, show_progress=not arguments.quiet, plan=plan, store=store)
        theory = compute_theory(config, result.probes)
        analysis = analyse(result, theory)
        figures = [] if arguments.no_figures else draw_figures(result, theory, analysis, folder)
        write_run(folder, result, theory, analysis, figures)
    except KeyboardInterrupt:
        saved = len(list(store.groups.glob("*.npz")))
        print(f"\ninterrupted: {saved} finished group(s) are saved in {store.groups}; continue with: {resume_hint}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        fail(f"cannot write {error.filename or folder}: {error.strerror}; finished groups are kept, "
             f"so free space and continue with: {resume_hint}")

    if not arguments.quiet:
        print(format_table(result, analysis))
        print(analysis.conclusion)
        print(f"results: {folder}/results.json, metrics.csv, summary.md ({result.seconds:.0f} s)")

    if arguments.check:
        return _check(analysis)
    return 0


def _check(analysis) -> int:
    """Return EXIT_CHECK_FAILED if a measured verdict differs from the theory's, after naming each."""
    disagreeing = [
        fit
        for fit in analysis.fits
        if fit.layer == "all" and fit.theory_verdict is not None and fit.verdict != fit.theory_verdict
    ]
    for fit in disagreeing:
        reference = fit.exact_slope if fit.exact_slope is not None else fit.theory_slope
        print(
            f"check failed: {fit.scaling} {fit.metric}: measured {fit.verdict} "
            f"(slope {_format_slope(fit.slope)}), theory {fit.theory_verdict} (slope {reference:+.2f})",
            file=sys.stderr,
        )
    return EXIT_CHECK_FAILED if disagreeing else 0


if __name__ == "__main__":
    sys.exit(main())
