"""Write a run folder: results.json, the tidy metrics.csv and summary.md; format the printed table."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .analysis import Analysis
from .environment import environment_info
from .files import atomic_write_json, atomic_write_text
from .metrics import COORDINATE_METRICS
from .sweep import SweepResult
from .theory import Theory, theory_optimizer

__all__ = ["CSV_COLUMNS", "SCHEMA_VERSION", "format_table", "results_json", "tidy_rows", "write_run"]

SCHEMA_VERSION = 1
CSV_COLUMNS = ("scaling", "scaling_exponent", "rank", "seed", "step", "layer", "metric", "value")
# Metrics in the printed table, in order, with their column titles.
TABLE_METRICS = (
    ("activation", "activation"),
    ("input_gradient", "input grad"),
    ("input_gradient_rms", "input grad RMS"),
    ("grad_norm_B", "|grad B| init"),
)


def tidy_rows(result: SweepResult, theory: Theory):
    """Yield one row per scaling, rank, seed, step, layer and metric (CSV_COLUMNS order).

    Exact predictions appear as metric ``<name>_exact`` at the step they describe.
    """
    config = result.config
    for i, rank in enumerate(config.ranks):
        for j, rule in enumerate(config.scalings):
            head = (rule.name, float(rule.exponent), rank)
            for s, seed in enumerate(config.seed_list):
                for name in COORDINATE_METRICS:
                    values = result.coordinate[name][i, j, s]  # (steps, L)
                    for step in range(values.shape[0]):
                        for layer in range(config.depth):
                            yield head + (seed, step, layer, name, values[step, layer])
                for name, array in (("grad_norm_A", result.grad_norm_A), ("grad_norm_B", result.grad_norm_B)):
                    values = array[i, j, s]
                    for step in range(config.steps):
                        for layer in range(config.depth):
                            yield head + (seed, step, layer, name, values[step, layer])
                for step in range(config.steps):
                    yield head + (seed, step, "all", "loss", result.loss[i, j, s, step])
                for name, predicted in theory.predicted.items():
                    for layer in range(config.depth):
                        yield head + (seed, theory.steps[name], layer, f"{name}_exact", predicted[i, j, s, layer])


def _csv_text(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        value = row[-1]
        writer.writerow(row[:-1] + ("" if not np.isfinite(value) else repr(float(value)),))
    return buffer.getvalue()


def _comparison_summary(analysis: Analysis) -> dict:
    """Largest |z| of measurement minus exact prediction, per metric, over ranks, scalings and layers."""
    summary = {}
    for comparison in analysis.comparisons:
        entry = summary.setdefault(
            comparison.metric,
            {"step": comparison.step, "statistic": comparison.statistic, "comparisons": 0, "max_abs_z": None},
        )
        entry["comparisons"] += 1
        if comparison.z is not None:
            current = entry["max_abs_z"]
            entry["max_abs_z"] = abs(comparison.z) if current is None else max(current, abs(comparison.z))
    return summary


def results_json(result: SweepResult, analysis: Analysis) -> dict:
    config = result.config
    divergence = [
        {
            "scaling": config.scalings[j].name,
            "scaling_exponent": float(config.scalings[j].exponent),
            "rank": config.ranks[i],
            "seed": config.seed_list[s],
            "step": int(result.diverged_at[i, j, s]),
        }
        for i, j, s in zip(*np.nonzero(result.diverged_at >= 0))
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_json(),
        "environment": environment_info(result.device),
        "ranks": list(config.ranks),
        "scalings": [{"name": r.name, "scaling_exponent": float(r.exponent)} for r in config.scalings],
        "theory_optimizer": theory_optimizer(config.optimizer),
        "fit_steps": list(config.fit_steps),
        "fit_ranks": analysis.fit_ranks,
        "fits": analysis.fits_json(),
        "step_slopes": analysis.step_slopes,
        "stable_rules": analysis.stable_rules,
        "conclusion": analysis.conclusion,
        "theory_comparison": {
            "summary": _comparison_summary(analysis),
            "rows": [vars(c) for c in analysis.comparisons],
        },
        "divergence": divergence,
        "timing": {
            "seconds": result.seconds,
            "model_flops": result.model_flops,
            "flops_per_second": result.model_flops / result.seconds if result.seconds > 0 else None,
        },
    }


def _slope_text(fit) -> str:
    if fit is None or fit.slope is None:
        return "diverged"
    if fit.slope_ci is None:
        return f"{fit.slope:+.2f}"
    return f"{fit.slope:+.2f} [{fit.slope_ci[0]:+.2f},{fit.slope_ci[1]:+.2f}]"


def _fits_by_key(analysis: Analysis) -> dict:
    return {(fit.scaling, fit.metric): fit for fit in analysis.fits if fit.layer == "all"}


def format_table(result: SweepResult, analysis: Analysis) -> str:
    """Format the printed summary: slopes (95% CI over seeds) per scaling rule, theory, verdict."""
    config = result.config
    fits = _fits_by_key(analysis)
    header = ["scaling", "beta"] + [title for _, title in TABLE_METRICS] + ["verdict"]
    rows = []
    for rule in config.scalings:
        row = [rule.name, f"{float(rule.exponent):g}"]
        row += [_slope_text(fits.get((rule.name, metric))) for metric, _ in TABLE_METRICS]
        verdicts = {fits[(rule.name, m)].verdict for m in ("activation", "input_gradient") if (rule.name, m) in fits}
        row.append(verdicts.pop() if len(verdicts) == 1 else "mixed")
        rows.append(row)
        theory = ["  theory", ""]
        for metric, _ in TABLE_METRICS:
            fit = fits.get((rule.name, metric))
            if fit is None:
                theory.append("")
            elif fit.asymptotic and fit.theory_slope is not None:
                theory.append(f"{fit.theory_slope:+.2f}")
            elif fit.exact_slope is not None:
                theory.append(f"{fit.exact_slope:+.2f} exact")
            else:
                theory.append("")
        theory.append("")
        rows.append(theory)

    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header] + rows]
    steps = ",".join(str(s) for s in config.fit_steps)
    lines.append(
        f"log-log slopes vs rank (95% CI over {config.seeds} seeds), coordinate metrics at step {steps}, "
        f"|grad B| at initialisation; theory: {theory_optimizer(config.optimizer)}, r -> infinity"
    )
    lines += _divergence_lines(result)
    early_exact = sorted(
        {title for metric, title in TABLE_METRICS for fit in fits.values()
         if fit.metric == metric and not fit.asymptotic and fit.exact_slope is not None}
    )
    early_bare = sorted(
        {title for metric, title in TABLE_METRICS for fit in fits.values()
         if fit.metric == metric and not fit.asymptotic and fit.exact_slope is None}
    )
    if early_exact:
        lines.append(
            f"{', '.join(early_exact)}: the grid ends before this metric's crossover rank, so the slope is compared "
            "with the exact finite-rank prediction over the fitted ranks (marked exact)"
        )
    if early_bare:
        lines.append(
            f"{', '.join(early_bare)}: the grid ends before this metric's crossover rank, and no exact finite-rank "
            f"theory exists for {config.optimizer}, so the slope has no theory to compare with"
        )
    return "\n".join(lines)


def _divergence_lines(result: SweepResult) -> list[str]:
    """List, per scaling rule with diverged configurations, how many diverged, at which ranks and first step."""
    config = result.config
    lines = []
    for j, rule in enumerate(config.scalings):
        steps = result.diverged_at[:, j, :]  # (R, S)
        if not (steps >= 0).any():
            continue
        ranks = [config.ranks[i] for i in range(len(config.ranks)) if (steps[i] >= 0).any()]
        lines.append(
            f"{rule.name}: {int((steps >= 0).sum())} configuration(s) diverged (ranks {', '.join(map(str, ranks))}), "
            f"first at step {int(steps[steps >= 0].min())}; measurements from that step on are left out"
        )
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(result: SweepResult, analysis: Analysis, figures: list[str]) -> str:
    config = result.config
    text = [
        "# Rank sweep summary",
        "",
        analysis.conclusion,
        "",
        f"Optimizer {config.optimizer} (lr {config.learning_rate:g}), width {config.width}, depth {config.depth}, "
        f"batch {config.batch}, {config.seeds} seeds, {config.steps} steps, init {config.init}, "
        f"activation {config.activation}, alpha {config.alpha:g}, ranks {config.ranks[0]}..{config.ranks[-1]} "
        f"({len(config.ranks)} ranks).",
        "",
        "## Slopes (layer average)",
        "",
        f"Coordinate metrics are fitted after step(s) {', '.join(map(str, config.fit_steps))}; "
        "`grad_norm_B` at initialisation. Slope: mean over seeds with its 95% Student-t interval. "
        "Theory: the r -> infinity slope; exact: the slope of the exact finite-rank prediction over the same ranks.",
        "",
    ]
    rows = []
    for fit in analysis.fits:
        if fit.layer != "all":
            continue
        rows.append(
            [
                fit.scaling,
                f"{fit.scaling_exponent:g}",
                fit.metric,
                _slope_text(fit),
                "" if fit.theory_slope is None else f"{fit.theory_slope:+.2f}",
                "" if fit.exact_slope is None else f"{fit.exact_slope:+.2f}",
                f"{fit.fit_ranks[0]}..{fit.fit_ranks[-1]}" + ("" if fit.asymptotic else " (pre-asymptotic)"),
                fit.verdict,
                {True: "yes", False: "no", None: ""}[fit.agrees_with_theory],
            ]
        )
    text.append(
        _markdown_table(
            ["scaling", "beta", "metric", "slope [95% CI]", "theory", "exact", "fit ranks", "verdict", "agrees"], rows
        )
    )

    if analysis.step_slopes and result.config.coord_steps > 1:
        text += [
            "",
            "## Slopes by step",
            "",
            "Each coordinate step fitted on its own over the same ranks. Only step(s) "
            f"{', '.join(map(str, result.config.fit_steps))} enter the verdicts; the exact theory describes step 1.",
            "",
        ]
        steps = sorted({row["step"] for row in analysis.step_slopes})
        table = {}
        for row in analysis.step_slopes:
            key = (row["scaling"], row["metric"])
            table.setdefault(key, {})[row["step"]] = "" if row["slope"] is None else f"{row['slope']:+.2f}"
        text.append(
            _markdown_table(
                ["scaling", "metric"] + [f"step {step}" for step in steps],
                [[name, metric] + [values.get(step, "") for step in steps] for (name, metric), values in table.items()],
            )
        )

    comparison = _comparison_summary(analysis)
    if comparison:
        text += [
            "",
            "## Exact finite-rank prediction vs measurement",
            "",
            "At every rank, scaling and layer: z = (mean over seeds of measured minus predicted) / its standard error.",
            "",
        ]
        text.append(
            _markdown_table(
                ["metric", "step", "statistic", "comparisons", "max |z|"],
                [
                    [
                        metric,
                        entry["step"],
                        entry["statistic"],
                        entry["comparisons"],
                        "" if entry["max_abs_z"] is None else f"{entry['max_abs_z']:.2f}",
                    ]
                    for metric, entry in comparison.items()
                ],
            )
        )

    diverged = int((result.diverged_at >= 0).sum())
    if diverged:
        text += ["", "## Divergence", ""]
        for i, j, s in zip(*np.nonzero(result.diverged_at >= 0)):
            text.append(
                f"- {config.scalings[j].name} rank {config.ranks[i]} seed {config.seed_list[s]}: "
                f"diverged at step {int(result.diverged_at[i, j, s])}"
            )
    if figures:
        text += ["", "## Figures", ""] + [f"![{Path(name).stem}]({name})" for name in figures if name.endswith(".png")]
    flops_rate = result.model_flops / result.seconds / 1e9 if result.seconds > 0 else float("nan")
    text += [
        "",
        f"Ran in {result.seconds:.1f} s on {result.device}: {result.model_flops / 1e9:.1f} GFLOP of matrix "
        f"products, {flops_rate:.1f} GFLOP/s.",
        "",
    ]
    return "\n".join(text)


def write_run(folder: Path, result: SweepResult, theory: Theory, analysis: Analysis, figures: list[str]) -> None:
    """Write results.json, metrics.csv and summary.md into ``folder`` (each atomically)."""
    folder = Path(folder)
    atomic_write_text(folder / "metrics.csv", _csv_text(tidy_rows(result, theory)))
    atomic_write_text(folder / "summary.md", summary_markdown(result, analysis, figures))
    data = results_json(result, analysis)
    data["files"] = {"metrics": "metrics.csv", "summary": "summary.md", "figures": figures}
    atomic_write_json(folder / "results.json", data)
