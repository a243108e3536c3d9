"""Runs survive interruption, divergence and bad input: resume, determinism, clear errors."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stability import simulate

TINY = ["--ranks", "1..32", "--width", "32", "--steps", "5", "--seeds", "2", "--batch", "4", "--no-figures", "--quiet"]
# Fields that legitimately differ between two runs of the same command.
VOLATILE = ("timing", "environment")


def stable_results(folder: Path) -> dict:
    data = json.loads((folder / "results.json").read_text())
    for key in VOLATILE:
        data.pop(key)
    return data


def test_same_command_twice_is_identical(tmp_path):
    assert simulate.main(TINY + ["--out", str(tmp_path / "a")]) == 0
    assert simulate.main(TINY + ["--out", str(tmp_path / "b")]) == 0
    assert stable_results(tmp_path / "a") == stable_results(tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()


def test_interrupt_then_resume_matches_uninterrupted(tmp_path, monkeypatch, capsys):
    assert simulate.main(TINY + ["--out", str(tmp_path / "whole")]) == 0

    from stability import sweep

    real_run_group, calls = sweep.run_group, []

    def interrupted_run_group(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_group(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_group", interrupted_run_group)
    folder = tmp_path / "interrupted"
    assert simulate.main(TINY + ["--out", str(folder)]) == 130
    assert "--resume --out" in capsys.readouterr().err
    assert len(list((folder / "groups").glob("*.npz"))) == 2
    assert not (folder / "results.json").exists()

    monkeypatch.setattr(sweep, "run_group", real_run_group)
    assert simulate.main(["--resume", "--out", str(folder), "--quiet", "--no-figures"]) == 0
    assert stable_results(folder) == stable_results(tmp_path / "whole")
    timing = json.loads((folder / "results.json").read_text())["timing"]
    assert timing["resumed_groups"] == 2
    assert timing["computed_flops"] < timing["model_flops"]


def test_killed_run_resumes(tmp_path):
    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "stability.simulate", *TINY, "--ranks", "1..64", "--width", "64",
               "--steps", "30", "--out", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((folder / "groups").glob("*.npz"))) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "no group finished within two minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = len(list((folder / "groups").glob("*.npz")))
    assert saved >= 2

    resumed = subprocess.run([sys.executable, "-m", "stability.simulate", "--resume", "--out", str(folder),
                              "--quiet", "--no-figures"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    assert simulate.main(TINY + ["--ranks", "1..64", "--width", "64", "--steps", "30", "--out", str(whole)]) == 0
    assert stable_results(folder) == stable_results(whole)


def test_resume_rejects_changed_settings(tmp_path, capsys):
    assert simulate.main(TINY + ["--out", str(tmp_path)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(["--resume", "--out", str(tmp_path), "--ranks", "1..8"])
    assert exit_info.value.code == 2
    assert "drop --ranks" in capsys.readouterr().err


def test_resume_without_run(tmp_path, capsys):
    for extra in ([], ["--ranks", "1..8"]):
        with pytest.raises(SystemExit) as exit_info:
            simulate.main(["--resume", "--out", str(tmp_path), *extra])
        assert exit_info.value.code == 2
        assert "no run to resume" in capsys.readouterr().err


def test_force_removes_earlier_outputs(tmp_path):
    assert simulate.main(TINY[:-2] + ["--quiet", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "slopes.png").exists()
    assert simulate.main(TINY + ["--out", str(tmp_path), "--force"]) == 0
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "results.json").exists()


def test_figure_names_are_known_to_force(tmp_path):
    from stability.checkpoint import FIGURE_PATTERNS

    assert simulate.main(TINY[:-2] + ["--quiet", "--out", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "results.json").read_text())["files"]["figures"]
    assert figures
    for name in figures:
        assert any(Path(name).match(pattern) for pattern in FIGURE_PATTERNS), name


def test_output_files_have_the_umask_mode(tmp_path):
    assert simulate.main(TINY + ["--out", str(tmp_path)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp_path / "results.json", tmp_path / "metrics.csv", *tmp_path.glob("groups/*.npz")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(TINY + ["--out", str(blocker)])
    assert exit_info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_force_starts_over(tmp_path):
    assert simulate.main(TINY + ["--out", str(tmp_path)]) == 0
    assert simulate.main(TINY + ["--out", str(tmp_path), "--force", "--seeds", "1"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["config"]["seeds"] == 1


def test_unwritable_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(TINY + ["--out", str(blocker / "run")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--out" in error
    assert error.count("\n") == 1


def test_full_disk_keeps_groups(tmp_path, monkeypatch, capsys):
    from stability import report

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "metrics.csv"))

    monkeypatch.setattr(report, "atomic_write_text", no_space)
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(TINY + ["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error
    assert "--resume" in error
    assert list((tmp_path / "groups").glob("*.npz"))


def test_divergence_is_reported_and_excluded(tmp_path, caplog):
    folder = tmp_path / "diverging"
    assert simulate.main(TINY + ["--lr", "20", "--out", str(folder)]) == 0
    data = json.loads((folder / "results.json").read_text())
    assert data["divergence"], "lr 20 at width 32 should diverge somewhere"
    diverged = {(d["scaling"], d["rank"], d["seed"]) for d in data["divergence"] if d["step"] <= 1}
    for fit in data["fits"]:
        if fit["metric"] == "activation" and fit["layer"] == "all":
            excluded = {(fit["scaling"], e["rank"], e["seed"]) for e in fit["excluded"]}
            assert excluded == {key for key in diverged if key[0] == fit["scaling"]}
    assert "diverged at step" in (folder / "summary.md").read_text()
    assert any("diverged" in record.message for record in caplog.records)


def test_check_passes_when_resolved(tmp_path):
    resolved = ["--ranks", "16..256", "--width", "256", "--batch", "2", "--seeds", "8", "--steps", "2",
                "--coord-steps", "1", "--quiet", "--no-figures"]
    assert simulate.main(resolved + ["--check", "--out", str(tmp_path)]) == 0


def test_one_seed_gives_no_verdict(tmp_path, capsys):
    one_seed = ["--ranks", "16..256", "--width", "256", "--batch", "2", "--seeds", "1", "--steps", "2",
                "--coord-steps", "1", "--quiet", "--no-figures"]
    assert simulate.main(one_seed + ["--check", "--out", str(tmp_path)]) == 3
    fits = json.loads((tmp_path / "results.json").read_text())["fits"]
    assert {fit["verdict"] for fit in fits} == {"inconclusive"}
    assert all("--seeds 2" in fit["note"] for fit in fits)


def test_check_fails_when_unresolved(tmp_path, capsys):
    # Two seeds and ranks up to 32: the intervals are too wide to confirm a level slope.
    assert simulate.main(TINY + ["--check", "--out", str(tmp_path)]) == 3
    assert "check failed: rslora" in capsys.readouterr().err


OPTIONS = {
    "--ranks": st.sampled_from(["1..8", "2..16:x4", "1,3,5", "8..1", "0", "", "1..8:+0", "x", "4..32:+4"]),
    "--scaling": st.sampled_from(["lora", "rslora,0.25", "0..1:+0.5", "nope", "", "-1"]),
    "--width": st.integers(-2, 40).map(str),
    "--depth": st.integers(-1, 3).map(str),
    "--batch": st.integers(-1, 4).map(str),
    "--steps": st.integers(-1, 4).map(str),
    "--coord-steps": st.integers(-1, 3).map(str),
    "--fit-steps": st.sampled_from(["1", "1..2:+1", "0", "7", "a"]),
    "--seeds": st.integers(-1, 3).map(str),
    "--lr": st.sampled_from(["0.01", "-1", "0", "nan", "abc", "1e3"]),
    "--alpha": st.sampled_from(["1", "0", "-2", "16", "inf"]),
    "--optimizer": st.sampled_from(["sgd", "adam", "adamw", "signsgd", "lion"]),
    "--init": st.sampled_from(["uniform", "gaussian", "rademacher", "normal"]),
    "--activation": st.sampled_from(["relu", "tanh", "gelu", "linear", "swish"]),
    "--device": st.sampled_from(["auto", "cpu", "cuda", "cuda:3", "tpu", ""]),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--max-memory": st.sampled_from(["1KiB", "8GiB", "lots", "-1"]),
    "--stable-tol": st.sampled_from(["0.1", "0", "-1"]),
    "--task-scale": st.sampled_from(["0.5", "-1", "0"]),
}
FLAGS = ["--allow-rank-above-width", "--check", "--dry-run", "--bogus"]


@st.composite
def argument_lists(draw):
    arguments = []
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=6, unique=True)):
        arguments += [option, draw(OPTIONS[option])]
    arguments += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return arguments


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=argument_lists())
def test_random_arguments_run_or_exit_cleanly(arguments, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("fuzz")
    # Small defaults first; the drawn options come later and take precedence.
    base = ["--ranks", "1..8", "--width", "16", "--steps", "2", "--coord-steps", "1", "--seeds", "1", "--batch", "2", "--quiet",
            "--no-figures", "--out", str(folder)]
    try:
        code = simulate.main(base + arguments)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code in (0, 2, 3), (arguments, captured.err)
    if code == 2:
        assert captured.err.count("\n") == 1, captured.err
        assert "error:" in captured.err
