"""Write a run folder: results.json, the tidy metrics.csv and summary.md; format the printed table."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from scipy import stats

from .adapters import describe_storage, storage_by_rank
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


# Family-wise error rate of the per-rank agreement threshold in the summary.
COMPARISON_FAMILY_ALPHA = 0.01


def _comparison_summary(analysis: Analysis) -> dict:
    """Summarise, per metric, the largest |z| of measurement minus exact prediction and its threshold.

    Under SGD the step-1 metrics of all scaling rules at one rank, seed and layer are the
    same draw times a power of gamma, so their z-scores coincide. The threshold is
    therefore a Bonferroni-corrected two-sided Student-t quantile over the distinct
    (rank, layer) pairs, at a family-wise error rate of 1%.
    """
    summary = {}
    for comparison in analysis.comparisons:
        entry = summary.setdefault(
            comparison.metric,
            {"step": comparison.step, "statistic": comparison.statistic, "comparisons": 0, "max_abs_z": None,
             "seeds": comparison.seeds, "_pairs": set()},
        )
        entry["comparisons"] += 1
        entry["_pairs"].add((comparison.rank, comparison.layer))
        entry["seeds"] = min(entry["seeds"], comparison.seeds)
        if comparison.z is not None:
            current = entry["max_abs_z"]
            entry["max_abs_z"] = abs(comparison.z) if current is None else max(current, abs(comparison.z))
    for entry in summary.values():
        pairs = len(entry.pop("_pairs"))
        entry["distinct_comparisons"] = pairs
        threshold = None
        if entry["seeds"] >= 2:
            threshold = float(stats.t.ppf(1 - COMPARISON_FAMILY_ALPHA / (2 * pairs), entry["seeds"] - 1))
        entry["threshold"] = threshold
        entry["agrees"] = None if threshold is None or entry["max_abs_z"] is None else entry["max_abs_z"] <= threshold
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
        "adapter_storage": {str(rank): storage for rank, storage in storage_by_rank(config).items()},
        "timing": {
            "seconds": result.seconds,
            "model_flops": result.model_flops,
            "computed_flops": result.computed_flops,
            "resumed_groups": result.resumed_groups,
            "flops_per_second": result.computed_flops / result.seconds if result.seconds > 0 else None,
        },
    }


def _slope_text(fit) -> str:
    if fit is None or fit.slope is None:
        return "diverged" if fit is None or fit.excluded else "no slope"
    if fit.slope_ci is None:
        return _signed(fit.slope)
    return f"{_signed(fit.slope)} [{_signed(fit.slope_ci[0])},{_signed(fit.slope_ci[1])}]"


def _signed(value: float) -> str:
    """Format with a sign and two decimals, without printing -0.00."""
    text = f"{value:+.2f}"
    return "+0.00" if text == "-0.00" else text


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
                theory.append(_signed(fit.theory_slope))
            elif fit.exact_slope is not None:
                theory.append(f"{_signed(fit.exact_slope)} exact")
            else:
                theory.append("")
        theory.append("")
        rows.append(theory)

    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header] + rows]
    steps = ",".join(str(s) for s in config.fit_steps)
    lines.append(
        f"log-log slopes vs rank (95% CI over {config.seeds} seed{'s' if config.seeds != 1 else ''}), "
        f"coordinate metrics at step {steps}, |grad B| at initialisation; "
        f"theory: {theory_optimizer(config.optimizer)}, r -> infinity"
    )
    lines.append(
        "verdict: the activation's and the coherent input gradient's, when they agree; mixed when they do not"
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
    if early_bare and len(config.ranks) >= 2:  # with one rank there is no slope to explain
        if config.optimizer == "sgd":
            reason = "the exact finite-rank theory describes step 1 only, and the fit uses later steps"
        else:
            reason = f"no exact finite-rank theory exists for {config.optimizer}"
        lines.append(
            f"{', '.join(early_bare)}: the grid ends before this metric's crossover rank, and {reason}, "
            "so the slope has no theory to compare with"
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
        f"({len(config.ranks)} rank{'s' if len(config.ranks) != 1 else ''}). Adapter storage {describe_storage(config)}.",
        "",
        "## Slopes (layer average)",
        "",
        f"Coordinate metrics are fitted after step(s) {', '.join(map(str, config.fit_steps))}; "
        "`grad_norm_B` at initialisation. Slope: mean over seeds with its 95% Student-t interval. "
        "Theory: the r -> infinity slope; exact: the slope of the exact finite-rank prediction over the same ranks. "
        "Theory verdict: the verdict of the exact slope where it exists, else of the theory slope; `--check` "
        "fails when it differs from the measured verdict. Slope agrees: the reference slope lies within the "
        "interval widened by 0.05, the bias the fit ranks allow.",
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
                fit.theory_verdict or "",
                {True: "yes", False: "no", None: ""}[fit.agrees_with_theory],
            ]
        )
    text.append(
        _markdown_table(
            ["scaling", "beta", "metric", "slope [95% CI]", "theory", "exact", "fit ranks", "verdict",
             "theory verdict", "slope agrees"],
            rows,
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
            "At every rank, scaling and layer: z = (mean over seeds of measured minus predicted) / its standard "
            "error. Under SGD all scaling rules share one draw per rank, seed and layer, so their z-scores "
            "coincide; the threshold is the Bonferroni-corrected Student-t quantile over the distinct "
            "(rank, layer) pairs at a 1% family-wise error rate. With few seeds the standard error is itself "
            "noisy, and at small ranks the moments are heavy-tailed, so a strict test needs many seeds "
            "(the test suite uses 64).",
            "",
        ]
        text.append(
            _markdown_table(
                ["metric", "step", "statistic", "distinct comparisons", "seeds", "max |z|", "threshold", "within"],
                [
                    [
                        metric,
                        entry["step"],
                        entry["statistic"],
                        entry["distinct_comparisons"],
                        entry["seeds"],
                        "" if entry["max_abs_z"] is None else f"{entry['max_abs_z']:.2f}",
                        "" if entry["threshold"] is None else f"{entry['threshold']:.1f}",
                        {True: "yes", False: "no", None: ""}[entry["agrees"]],
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
    text += [
        "",
        _timing_sentence(result),
        "",
    ]
    return "\n".join(text)


def _timing_sentence(result: SweepResult) -> str:
    rate = result.computed_flops / result.seconds / 1e9 if result.seconds > 0 else float("nan")
    text = (
        f"Ran in {result.seconds:.1f} s on {result.device}: {result.computed_flops / 1e9:.1f} GFLOP of matrix "
        f"products, {rate:.1f} GFLOP/s."
    )
    if result.resumed_groups:
        text += (
            f" {result.resumed_groups} group(s) came from an earlier, interrupted run; the whole sweep is "
            f"{result.model_flops / 1e9:.1f} GFLOP."
        )
    return text


def write_run(folder: Path, result: SweepResult, theory: Theory, analysis: Analysis, figures: list[str]) -> None:
    """Write results.json, metrics.csv and summary.md into ``folder`` (each atomically)."""
    folder = Path(folder)
    atomic_write_text(folder / "metrics.csv", _csv_text(tidy_rows(result, theory)))
    atomic_write_text(folder / "summary.md", summary_markdown(result, analysis, figures))
    data = results_json(result, analysis)
    data["files"] = {"metrics": "metrics.csv", "summary": "summary.md", "figures": figures}
    atomic_write_json(folder / "results.json", data)
