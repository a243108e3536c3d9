"""Display and bookkeeping helpers shared by the proof notebooks.

The notebooks import this module from their own folder, which is the working directory
that Jupyter and ``notebooks/execute.py`` give them. When that folder is inside a checkout,
importing the module puts the repository root first on ``sys.path``, so the notebooks use
that checkout's ``proofs`` and ``stability`` packages whether or not they are installed.
A copy of the folder elsewhere uses the packages found on the normal path.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if (REPOSITORY_ROOT / "proofs").is_dir() and str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

import matplotlib.pyplot as plt  # noqa: E402
import sympy as sp  # noqa: E402
from IPython import get_ipython  # noqa: E402
from IPython.display import Markdown, display  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from sympy.printing.latex import LatexPrinter  # noqa: E402

from proofs.symbols import sigma2 as _SIGMA2  # noqa: E402
from proofs.vectors import CoordinateSum  # noqa: E402

CLAIMS_PREFIX = "VERIFIED-CLAIMS: "
"""Start of the line in which a notebook's last cell prints its checked claims as JSON."""

FIGURE_DPI = 80
"""Resolution of the inline PNG figures, kept low so the stored notebooks stay small."""

FIGURE_COLOURS = 256
"""Palette size of the stored PNG figures, enough for these line plots without visible banding."""

# Scalar symbols whose sympy names are not their mathematical notation.
_SYMBOL_LATEX = {
    "sigma2": r"\sigma^{2}",
    "mu4": r"\mu_{4}",
    "mu6": r"\mu_{6}",
    "kappa4": r"\kappa_{4}",
    "eta_A": r"\eta_{A}",
    "l1_v0": r"\lVert v_{0} \rVert_{1}",
    "s0": r"\operatorname{sign}(v_{0})",
}


def _vector_parts(name: str) -> tuple[str, str]:
    """Split a vector name such as ``x0`` into its letter part ``x`` and index ``0``."""
    match = re.fullmatch(r"([A-Za-z]+)(\d*)", name)
    if match is None:
        return name, ""
    return match.group(1), match.group(2)


def _vector_latex(name: str) -> str:
    if name in _SYMBOL_LATEX:
        return _SYMBOL_LATEX[name]
    letters, index = _vector_parts(name)
    return f"{letters}_{{{index}}}" if index else letters


def _coordinate_latex(name: str, index: str) -> str:
    """Return coordinate ``index`` of a vector: ``x_{0 j}`` for ``x0``, ``\\operatorname{sign}(v_0)_j``."""
    if name in _SYMBOL_LATEX:
        return rf"\left({_SYMBOL_LATEX[name]}\right)_{{{index}}}"
    letters, number = _vector_parts(name)
    return f"{letters}_{{{number} {index}}}" if number else f"{letters}_{{{index}}}"


class ProofLatexPrinter(LatexPrinter):
    """LaTeX printer for the atoms of :mod:`proofs`: inner products, coordinate sums and ``S``.

    ``(p.q)`` prints as ``(p \\cdot q)``, ``(p.p)`` as ``|p|^2``, longer coordinate sums as
    ``sum_j p_j q_j ...``, ``RowSum(p, x)`` as ``S(p, x)`` and ``Coordinate(p, j)`` as ``p_j``.
    """

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        if name.endswith("^T"):
            return _vector_latex(name[:-2]) + r"^{\top}"
        if name in _SYMBOL_LATEX:
            return _SYMBOL_LATEX[name]
        return super()._print_Symbol(expr, style=style)

    def _print_Vector(self, expr):
        return _vector_latex(expr.name)

    def _print_BasisVector(self, expr):
        return f"e_{{{self._print(expr.index)}}}"

    def _print_CoordinateSum(self, expr, exp=None):
        names = [vector.name for vector in expr.args]
        if len(names) == 2 and names[0] == names[1]:
            text = rf"\lVert {_vector_latex(names[0])} \rVert^{{2}}"
            return text if exp is None else rf"\left({text}\right)^{{{exp}}}"
        if len(names) == 2:
            text = rf"\left({_vector_latex(names[0])} \cdot {_vector_latex(names[1])}\right)"
            return text if exp is None else f"{text}^{{{exp}}}"
        factors = []
        for name in dict.fromkeys(names):
            count = names.count(name)
            coordinate = _coordinate_latex(name, "j")
            factors.append(coordinate if count == 1 else f"{coordinate}^{{{count}}}")
        text = r"\sum_{j} " + " ".join(factors)
        return text if exp is None else rf"\left({text}\right)^{{{exp}}}"

    def _print_RowSum(self, expr, exp=None):
        text = "S\\left(" + ", ".join(self._print(vector) for vector in expr.args) + "\\right)"
        return text if exp is None else f"{text}^{{{exp}}}"

    def _print_Coordinate(self, expr, exp=None):
        vector, index = expr.args
        text = _coordinate_latex(vector.name, self._print(index))
        return text if exp is None else f"{text}^{{{exp}}}"

    def _print_Pow(self, expr):
        base, exponent = expr.args
        # sigma2 and (p.p) are squares, so sigma2**(n/2) prints as sigma^n and (p.p)**(n/2) as |p|^n.
        doubled = 2 * exponent
        if not (doubled.is_Integer and doubled > 0):
            return super()._print_Pow(expr)
        power = "" if doubled == 1 else f"^{{{int(doubled)}}}"
        if isinstance(base, CoordinateSum) and len(base.args) == 2 and base.args[0] == base.args[1]:
            return rf"\lVert {_vector_latex(base.args[0].name)} \rVert{power}"
        if base == _SIGMA2:
            return rf"\sigma{power}"
        return super()._print_Pow(expr)


def latex(expr) -> str:
    """Return the LaTeX of a sympy expression, with the notation of :class:`ProofLatexPrinter`."""
    return ProofLatexPrinter().doprint(sp.sympify(expr))


def show(text: str) -> None:
    """Display Markdown text, which may contain ``$...$`` and ``$$...$$`` formulas."""
    display(Markdown(text))


def show_equation(left: str, expr, right: str = "") -> None:
    """Display ``left = expr right`` as a centred formula, with ``left`` and ``right`` given in LaTeX."""
    show(f"$$ {left} = {latex(expr)} {right} $$")


def show_equations(rows: list[tuple[str, object]]) -> None:
    """Display aligned formulas ``left = expr``, one per row."""
    body = r" \\ ".join(f"{left} &= {latex(expr)}" for left, expr in rows)
    show(rf"$$ \begin{{aligned}} {body} \end{{aligned}} $$")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """Return a Markdown table whose cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def compact_png(figure: Figure) -> str:
    """Render a figure as a palette PNG, base64-encoded, for the notebook's ``image/png`` output.

    On the figures of these notebooks the palette PNG measured about a quarter of the size of
    matplotlib's RGBA PNG, with no visible difference.
    """
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=FIGURE_DPI, bbox_inches="tight", facecolor="white")
    rendered.seek(0)
    palette = Image.open(rendered).convert("RGB").quantize(colors=FIGURE_COLOURS, method=Image.Quantize.FASTOCTREE)
    compressed = io.BytesIO()
    palette.save(compressed, format="png", optimize=True)
    return base64.b64encode(compressed.getvalue()).decode("ascii")


def configure_figures() -> None:
    """Set small figures with readable fonts, shown inline as palette PNGs (see :func:`compact_png`)."""
    shell = get_ipython()
    if shell is not None:
        # Activating the inline backend now makes it register its own PNG formatter and rc
        # settings before the lines below replace them, not at the first figure.
        shell.run_line_magic("matplotlib", "inline")
    plt.rcParams.update(
        {
            "figure.dpi": FIGURE_DPI,
            "savefig.dpi": FIGURE_DPI,
            "font.size": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8,
        }
    )
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, compact_png)


class ClaimLedger:
    """The claims a notebook checks, each recorded as verified or not where it is computed.

    :meth:`report` prints them as one JSON line (``CLAIMS_PREFIX`` first) and raises if any
    failed, so a notebook that no longer supports its text fails to execute.
    """

    def __init__(self) -> None:
        self.claims: dict[str, bool] = {}

    def verify(self, name: str, condition) -> None:
        """Record whether ``condition`` holds for the claim ``name``."""
        if name in self.claims:
            raise ValueError(f"claim {name!r} was already recorded. Give each claim its own name.")
        self.claims[name] = bool(condition)

    def report(self) -> None:
        """Print every claim as ``VERIFIED-CLAIMS: {json}``, then raise AssertionError if any failed."""
        print(CLAIMS_PREFIX + json.dumps(self.claims))
        failed = [name for name, verified in self.claims.items() if not verified]
        if failed:
            raise AssertionError(f"{len(failed)} claim(s) failed: {', '.join(failed)}")
