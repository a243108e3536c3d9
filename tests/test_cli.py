"""The command line: bad input exits with status 2 and one line; a small run writes the contract."""

import json
import math
import subprocess
import sys

import pytest

from stability import simulate

SMALL_RUN = ["--ranks", "1..64", "--width", "64", "--steps", "4", "--seeds", "2", "--batch", "4", "--quiet"]


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--ranks", ""], "empty"),
        (["--ranks", "64..8"], "reversed"),
        (["--ranks", "0"], "below 1"),
        (["--ranks", "0..8"], "start above 0"),
        (["--scaling", "rs-lora"], "unknown scaling"),
        (["--optimizer", "lion"], "invalid choice"),
        (["--seeds", "-2"], "--seeds is -2"),
        (["--steps", "0"], "--steps is 0"),
        (["--width", "8", "--ranks", "1..16"], "--allow-rank-above-width"),
        (["--lr", "-1"], "--lr is -1"),
        (["--fit-steps", "5"], "fit step 5"),
        (["--device", "tpu"], "device"),
        (["--max-memory", "lots"], "invalid size"),
        (["--max-memory", "1MiB", "--ranks", "1..64", "--width", "64"], "budget"),
        (["--seeds", "two"], "invalid int value"),
        (["--alpha", "inf"], "finite"),
        (["--width", "0"], "--width is 0"),
        (["--weight-decay", "0.1"], "adamw only"),
        (["--lr", "nan"], "finite"),
        (["--optimizer", "adam", "--adapter-storage", "factored"], "--optimizer sgd"),
        (["--adapter-storage", "sparse"], "invalid choice"),
    ],
)
def test_bad_input_exits_with_one_line(arguments, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert fragment in error
    assert "Traceback" not in error


def test_cuda_request_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cpu" in capsys.readouterr().err


def test_help_lists_every_option():
    completed = subprocess.run(
        [sys.executable, "-m", "stability.simulate", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--ranks", "--scaling", "--alpha", "--optimizer", "--lr", "--steps", "--width", "--depth",
                   "--batch", "--seeds", "--init", "--activation", "--device", "--dtype", "--out",
                   "--no-figures", "--quiet", "--allow-rank-above-width", "--dry-run", "--check", "--adapter-storage"):
        assert option in completed.stdout
    assert "default: 1..4096" in completed.stdout


def test_dry_run_prints_plan(capsys):
    assert simulate.main(["--dry-run", "--ranks", "1..64", "--width", "64"]) == 0
    output = capsys.readouterr().out
    assert "memory" in output
    assert "997 MFLOP" in output  # the unit follows the size
    assert "expected time" in output
    # batch 8 x 40 steps = 320 factor rows: auto factors ranks of 160 and more, none of these.
    assert "adapter storage auto: dense at ranks 1..64" in output


def test_dry_run_notes_costly_storage(capsys):
    arguments = ["--dry-run", "--ranks", "1..64", "--width", "64", "--adapter-storage", "factored"]
    assert simulate.main(arguments) == 0
    assert "times the FLOPs of --adapter-storage auto" in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    assert simulate.main(SMALL_RUN + ["--out", str(folder)]) == 0
    return folder


def test_run_folder_contents(small_run):
    for name in ("results.json", "metrics.csv", "summary.md", "coordinate_check.png", "coordinate_check.svg",
                 "slopes.png", "learning_curves.png", "gradient_norms.png"):
        assert (small_run / name).is_file(), name
    assert not list(small_run.glob(".*.tmp"))


def test_results_json_schema(small_run):
    data = json.loads((small_run / "results.json").read_text())
    assert data["schema_version"] == 1
    for key in ("config", "environment", "ranks", "fits", "timing"):
        assert key in data
    assert data["ranks"] == [1, 2, 4, 8, 16, 32, 64]
    assert data["config"]["width"] == 64
    assert data["environment"]["versions"]["torch"]
    assert {"seconds", "model_flops", "flops_per_second"} <= set(data["timing"])
    assert data["timing"]["model_flops"] > 0
    fit_keys = {"scaling", "scaling_exponent", "metric", "layer", "slope", "slope_ci", "theory_slope",
                "rank_stable", "verdict"}
    metrics = set()
    for fit in data["fits"]:
        assert fit_keys <= set(fit)
        assert fit["layer"] == "all" or isinstance(fit["layer"], int)
        assert fit["verdict"] in ("rank-stable", "explodes", "collapses", "inconclusive", "diverged")
        assert fit["rank_stable"] == (fit["verdict"] == "rank-stable")
        metrics.add(fit["metric"])
    assert {"activation", "input_gradient", "input_gradient_rms", "grad_norm_B"} <= metrics


def test_run_records_adapter_storage(small_run):
    # batch 4 x 4 steps = 16 factor rows: auto factors ranks 8 and up.
    results = json.loads((small_run / "results.json").read_text())
    expected = {"1": "dense", "2": "dense", "4": "dense", "8": "factored", "16": "factored", "32": "factored",
                "64": "factored"}
    assert results["adapter_storage"] == expected
    summary = (small_run / "summary.md").read_text()
    assert "Adapter storage auto: dense at ranks 1..4, factored at ranks 8..64." in summary


def test_metrics_csv_is_tidy(small_run):
    lines = (small_run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "scaling,scaling_exponent,rank,seed,step,layer,metric,value"
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(row) == 8 for row in rows)
    names = {row[6] for row in rows}
    assert {"activation", "input_gradient", "input_gradient_rms", "grad_norm_A", "grad_norm_B", "loss",
            "activation_exact"} <= names
    # 7 ranks x 3 scalings x 2 seeds x 4 steps of loss
    assert sum(1 for row in rows if row[6] == "loss") == 7 * 3 * 2 * 4
    assert all(math.isfinite(float(row[7])) for row in rows if row[7])


def test_existing_results_are_not_overwritten(small_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(SMALL_RUN + ["--out", str(small_run)])
    assert exit_info.value.code == 2
    assert "--force" in capsys.readouterr().err


def test_single_rank_reports_no_slope(tmp_path, capsys):
    import warnings

    arguments = ["--ranks", "16", "--width", "16", "--steps", "3", "--seeds", "2", "--batch", "4",
                 "--no-figures", "--out", str(tmp_path / "run")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 in a fit would raise here
        assert simulate.main(arguments) == 0
    output = capsys.readouterr().out
    assert "no slope" in output
    assert "diverged" not in output
    assert "--ranks 64,128" in output
    assert "later steps" not in output  # the fit uses step 1, so that reason would be wrong
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {fit["verdict"] for fit in results["fits"]} == {"inconclusive"}
