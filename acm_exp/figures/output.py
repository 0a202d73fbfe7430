"""Writing the figures' files: text and CSV, PNG + PDF with fixed settings, LaTeX tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# Matplotlib settings fixed here so that a user's matplotlibrc cannot change the output.
RC_PARAMS = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 150,
    "figure.dpi": 100,
    "pdf.fonttype": 42,
    "lines.markersize": 4,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None}


class MissingRuns(Exception):
    """The table lacks the runs a figure needs; the message says which."""


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def save_figure(figure: Any, stem: Path) -> tuple[Path, Path]:
    """PNG + PDF with the metadata that would differ between runs (dates, versions) left out."""
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    figure.savefig(png, format="png", metadata=PNG_METADATA)
    figure.savefig(pdf, format="pdf", metadata=PDF_METADATA)
    return png, pdf


def new_figure(ncols: int = 1, *, width: float = 4.0, height: float = 3.0) -> tuple[Any, list[Any]]:
    # The object API rather than pyplot: no global figure registry, no GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def to_latex(display: pd.DataFrame, text_columns: Sequence[str] = ("Model pair", "Method")) -> str:
    """LaTeX tabular: ``text_columns`` (leading) left-aligned, numbers right-aligned."""
    left = sum(c in text_columns for c in display.columns)
    column_format = "l" * left + "r" * (len(display.columns) - left)
    latex = display.to_latex(index=False, escape=True, column_format=column_format)
    # '<' in text mode prints as '¡' with LaTeX's default font encoding.
    return latex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace("<", "$<$")
