"""Values as the report shows them: table views, cell text, embedded images.

The templates only lay these out; every number is turned into text here, once. Escaping is the
template engine's job (autoescape), so nothing here returns markup.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and whether it is a number (right-aligned)."""

    text: str
    numeric: bool = False


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    flagged: bool = False


@dataclass(frozen=True)
class TableView:
    """A table ready for the ``table`` macro; ``more`` rows were left out (see the CSV)."""

    headers: list[str]
    rows: list[Row]
    more: int = 0
    row_headers: bool = False  # the first cell of each row is its name (a ``<th>``)


@dataclass(frozen=True)
class Image:
    """An embedded PNG figure with its alternative text, caption and CSS class.

    ``png`` is the PNG bytes, or an object whose ``png`` attribute holds them once the figure
    is drawn (a figure drawn in another process while the rest of the report is prepared).
    """

    png: Any
    alt: str
    caption: str = ""
    css_class: str = ""
    width: int | None = None  # CSS pixels; set for crops shown at their own size
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def src(self) -> str:
        """The ``data:`` URI the template embeds."""
        png = self.png if isinstance(self.png, bytes) else self.png.png
        return png_data_uri(png)


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI embedding PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: Any, alt: str, caption: str = "", css_class: str = "", **extra: Any) -> Image:
    """An :class:`Image` from PNG bytes (or a figure still being drawn, see :class:`Image`)."""
    return Image(png, alt, caption, css_class, extra.pop("width", None), extra)


def text(value: Any) -> str:
    """A table value as text, with NaN/None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_cell(value: Any) -> Cell:
    """Text for one table cell: thousands separators, 3-4 significant digits, NaN empty."""
    if value is None:
        return Cell("")
    if isinstance(value, bool | np.bool_):
        return Cell("yes" if value else "no")
    if isinstance(value, int | np.integer):
        return Cell(f"{int(value):,}", True)
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isnan(value):
            return Cell("", True)
        if value == 0:
            return Cell("0", True)
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return Cell(f"{value:.3g}", True)
        return Cell(f"{value:.4g}", True)
    return Cell(str(value))


def table_view(
    frame: pd.DataFrame,
    columns: Iterable[str] | None = None,
    headers: Mapping[str, str] | None = None,
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
    flagged: Iterable[bool] | None = None,
    max_rows: int = 2000,
) -> TableView:
    """A :class:`TableView` of a DataFrame; ``formatters`` map a column to value -> text."""
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    headers = headers or {}
    formatters = formatters or {}
    flags = list(flagged) if flagged is not None else [False] * len(frame)
    rows = []
    shown = frame.head(max_rows)
    # only the columns shown become records (a wells table has about a hundred)
    records = shown.loc[:, ~shown.columns.duplicated()][columns].to_dict("records")
    for number, record in enumerate(records):
        cells = [
            Cell(formatters[c](record[c])) if c in formatters else format_cell(record[c])
            for c in columns
        ]
        rows.append(Row(cells, bool(flags[number])))
    return TableView([str(headers.get(c, c)) for c in columns], rows, max(0, len(frame) - max_rows))


def key_value_view(items: Mapping[str, Any]) -> TableView:
    """A two-column table of names and values (the ``Run`` section's)."""
    rows = [Row([Cell(str(k)), Cell(format_cell(v).text)]) for k, v in items.items()]
    return TableView([], rows, row_headers=True)
