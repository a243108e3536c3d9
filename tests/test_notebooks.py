"""The proof notebooks: they execute from a clean kernel, and their stored outputs are current.

Each notebook ends by printing ``VERIFIED-CLAIMS: {json}``, the claims it checked, and raises if
one failed. The slow tests execute a copy of the notebook folder in a temporary directory and
require that line to equal the one stored in the committed notebook, so a notebook whose code
changed without ``python notebooks/execute.py`` being run again fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_FOLDER = REPOSITORY_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_FOLDER.glob("[0-9]*.ipynb"))
CLAIMS_PREFIX = "VERIFIED-CLAIMS: "
CELL_TIMEOUT_SECONDS = 120
NOTEBOOK_TIMEOUT_SECONDS = 120
REFRESH_COMMAND = "python notebooks/execute.py"


def load_execute_script():
    """Import notebooks/execute.py, which is a script rather than part of a package."""
    spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_FOLDER / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def claims_lines(notebook: nbformat.NotebookNode) -> list[str]:
    """Return every ``VERIFIED-CLAIMS`` line printed by the notebook's code cells."""
    lines = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += [line for line in output.get("text", "").splitlines() if line.startswith(CLAIMS_PREFIX)]
    return lines


def error_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """Return ``ename: evalue`` of every error output stored in the notebook."""
    return [
        f"{output.get('ename')}: {output.get('evalue')}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def test_notebooks_found():
    names = [path.name for path in NOTEBOOKS]
    assert names == [
        "01_one_step.ipynb",
        "02_trajectory.ipynb",
        "03_theory_vs_simulation.ipynb",
        "04_beyond_the_theorem.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_stored_notebook_has_verified_claims(path):
    notebook = nbformat.read(path, as_version=4)
    lines = claims_lines(notebook)

    assert error_outputs(notebook) == [], f"{path.name} stores error outputs; run {REFRESH_COMMAND}"
    assert len(lines) == 1, f"{path.name} stores {len(lines)} {CLAIMS_PREFIX.strip()} lines, expected 1; run {REFRESH_COMMAND}"
    claims = json.loads(lines[0][len(CLAIMS_PREFIX) :])
    assert claims, f"{path.name} checks no claims"
    failed = [name for name, verified in claims.items() if verified is not True]
    assert failed == [], f"{path.name} stores failed claims: {failed}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_stored_notebook_uses_python3_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_execute_script_rejects_missing_notebook(capsys):
    execute = load_execute_script()

    with pytest.raises(SystemExit) as raised:
        execute.main(["no_such_notebook.ipynb"])

    assert raised.value.code == 2
    assert "notebook not found: no_such_notebook.ipynb" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes_with_stored_claims(path, tmp_path, monkeypatch):
    execute = load_execute_script()
    stored_lines = claims_lines(nbformat.read(path, as_version=4))
    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    # The copy is outside the checkout, so the kernel finds proofs and stability through PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(copy / path.name, as_version=4)

    started = time.perf_counter()
    execute.execute_notebook(
        notebook,
        working_directory=copy,
        cell_timeout=CELL_TIMEOUT_SECONDS,
        notebook_timeout=NOTEBOOK_TIMEOUT_SECONDS,
    )
    seconds = time.perf_counter() - started
    nbformat.write(notebook, copy / path.name)  # kept in tmp_path for inspection

    executed_lines = claims_lines(notebook)
    assert len(executed_lines) == 1, f"{path.name} printed {len(executed_lines)} {CLAIMS_PREFIX.strip()} lines, expected 1"
    assert executed_lines == stored_lines, (
        f"{path.name}: the claims of a fresh run differ from the stored ones; run {REFRESH_COMMAND} "
        f"and commit the result"
    )
    assert seconds < NOTEBOOK_TIMEOUT_SECONDS
