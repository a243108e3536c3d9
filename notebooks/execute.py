"""Execute the proof notebooks from a clean kernel and save them with their outputs.

``python notebooks/execute.py`` refreshes every notebook in this folder. Each one runs in
a fresh ``python3`` kernel with this folder as the working directory, which is what
Jupyter does when it opens the notebook. A notebook is saved only when every cell
succeeded, so a failed run leaves the stored file as it was.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOK_FOLDER = Path(__file__).resolve().parent
KERNEL_NAME = "python3"
CELL_TIMEOUT_SECONDS = 120
NOTEBOOK_TIMEOUT_SECONDS = 300

logger = logging.getLogger("notebooks.execute")


def notebook_paths(folder: Path = NOTEBOOK_FOLDER) -> list[Path]:
    """Return the notebooks of ``folder`` in name order (``01_...`` first)."""
    return sorted(folder.glob("[0-9]*.ipynb"))


def execute_notebook(
    notebook: nbformat.NotebookNode,
    *,
    working_directory: Path = NOTEBOOK_FOLDER,
    cell_timeout: float = CELL_TIMEOUT_SECONDS,
    notebook_timeout: float = NOTEBOOK_TIMEOUT_SECONDS,
    kernel_name: str = KERNEL_NAME,
) -> nbformat.NotebookNode:
    """Execute ``notebook`` in place in a fresh kernel and return it.

    Each cell may run for ``cell_timeout`` seconds, and all cells together (after the
    kernel has started) for ``notebook_timeout`` seconds. Raises
    ``nbclient.exceptions.CellExecutionError`` when a cell raises and ``CellTimeoutError``
    when a limit is reached.
    """
    deadline = None

    def remaining_time(cell) -> float:
        nonlocal deadline
        if deadline is None:
            deadline = time.monotonic() + notebook_timeout
        return max(1.0, min(cell_timeout, deadline - time.monotonic()))

    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps of an earlier run
    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        timeout_func=remaining_time,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(working_directory)}},
        record_timing=False,  # per-cell timestamps would change the stored file on every refresh
    )
    client.execute()
    return notebook


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python notebooks/execute.py",
        description=(
            "Execute the proof notebooks from a clean kernel and save each one in place with its outputs. "
            "A notebook whose execution fails is left unchanged."
        ),
        epilog="Exit status: 0 if every notebook ran, 1 if any failed, 2 for invalid arguments.",
    )
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="notebooks to execute (default: every numbered .ipynb file in notebooks/)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=CELL_TIMEOUT_SECONDS,
        help="seconds one cell may run (default: %(default)s)",
    )
    parser.add_argument(
        "--notebook-timeout",
        type=float,
        default=NOTEBOOK_TIMEOUT_SECONDS,
        help="seconds all cells of one notebook may run together, kernel start excluded (default: %(default)s)",
    )
    parser.add_argument(
        "--kernel",
        default=KERNEL_NAME,
        help="Jupyter kernel name (default: %(default)s, the Python environment running this script)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Execute the requested notebooks and return the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)

    for name, value in (("--cell-timeout", arguments.cell_timeout), ("--notebook-timeout", arguments.notebook_timeout)):
        if not value > 0:
            parser.error(f"{name} must be a positive number of seconds, got {value}")
    paths = arguments.notebooks or notebook_paths()
    if not paths:
        parser.error(f"no numbered notebooks found in {NOTEBOOK_FOLDER}")
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        parser.error(f"notebook not found: {', '.join(missing)}")

    failures = 0
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        started = time.perf_counter()
        try:
            execute_notebook(
                notebook,
                cell_timeout=arguments.cell_timeout,
                notebook_timeout=arguments.notebook_timeout,
                kernel_name=arguments.kernel,
            )
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            failures += 1
            logger.error(
                "%s: execution failed after %.1f s (limits: %g s per cell, %g s per notebook), file left unchanged:\n%s",
                path,
                time.perf_counter() - started,
                arguments.cell_timeout,
                arguments.notebook_timeout,
                error,
            )
            continue
        nbformat.write(notebook, path)
        logger.info("%s: executed in %.1f s and saved", path, time.perf_counter() - started)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
