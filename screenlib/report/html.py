"""Small HTML builders for the report; every piece of text passes through ``escape``.

The report is one self-contained file: inline CSS, images as base64 ``data:`` URIs, no
JavaScript, so it opens offline and can be mailed as an attachment.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; line-height: 1.4; }
header { background: #143d59; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; }
nav { background: #e8eef3; padding: 8px 32px; position: sticky; top: 0; z-index: 1;
      border-bottom: 1px solid #cdd7e0; }
nav a { margin-right: 16px; color: #143d59; text-decoration: none; font-weight: 600; }
main { padding: 8px 32px 48px 32px; max-width: 1500px; }
section { background: white; border: 1px solid #e0e0e0; border-radius: 6px; padding: 12px 20px;
          margin: 16px 0; }
h2 { color: #143d59; border-bottom: 2px solid #e8eef3; padding-bottom: 4px; }
h3 { margin-bottom: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: white; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px;
        min-width: 140px; }
.card .value { font-size: 22px; font-weight: 700; color: #143d59; }
.card .label { font-size: 12px; color: #555; }
.good { color: #1a7f37 !important; } .warn { color: #b35900 !important; }
.bad { color: #c62828 !important; }
img { max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
.figures figure { margin: 0; max-width: 100%; }
.figures img { max-width: 100%; height: auto; }
figure.plate img { width: 600px; }
figure.plate-grid img { width: 1000px; }
figure.curve img { width: 760px; }
figcaption { font-size: 12px; color: #555; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fff4e5; }
.gallery-row { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 14px; }
.gallery-row figure { margin: 0; text-align: center; }
.gallery-row img { width: 144px; height: 144px; image-rendering: pixelated;
                   border: 1px solid #999; background: black; }
.note { background: #fff8e1; border-left: 4px solid #f2b01e; padding: 6px 12px; margin: 8px 0; }
details { margin: 8px 0; } summary { cursor: pointer; color: #143d59; font-weight: 600; }
pre { background: #f5f5f5; padding: 10px; overflow-x: auto; font-size: 12px; }
.legend-swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
                 vertical-align: middle; }
"""


def escape(value: Any) -> str:
    """Any value as HTML-safe text (quotes escaped too)."""
    return html.escape("" if value is None else str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI embedding PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, caption: str | None = None, css_class: str = "") -> str:
    """A ``<figure>`` with an embedded PNG and an optional caption."""
    parts = [f'<figure class="{escape(css_class)}">']
    parts.append(f'<img src="{png_data_uri(png)}" alt="{escape(alt)}">')
    if caption:
        parts.append(f"<figcaption>{escape(caption)}</figcaption>")
    parts.append("</figure>")
    return "".join(parts)


def format_cell(value: Any) -> tuple[str, bool]:
    """Text for one table cell, and whether it is numeric (right-aligned)."""
    if value is None:
        return "", False
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), False
    if isinstance(value, int | np.integer):
        return f"{int(value):,}", True
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isnan(value):
            return "", True
        if value == 0:
            return "0", True
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3g}", True
        return f"{value:.4g}", True
    return str(value), False


def table(
    frame: pd.DataFrame,
    columns: Iterable[str] | None = None,
    headers: Mapping[str, str] | None = None,
    formatters: Mapping[str, Any] | None = None,
    flagged: Iterable[bool] | None = None,
    max_rows: int = 2000,
) -> str:
    """An HTML table of a DataFrame; every cell and header is escaped.

    ``formatters`` maps a column to a function value -> text; ``flagged`` highlights rows.
    """
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    headers = headers or {}
    formatters = formatters or {}
    flags = list(flagged) if flagged is not None else [False] * len(frame)
    out = ["<table><thead><tr>"]
    out += [f"<th>{escape(headers.get(c, c))}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row_number, (_, row) in enumerate(frame.head(max_rows).iterrows()):
        css = ' class="flagged"' if flags[row_number] else ""
        out.append(f"<tr{css}>")
        for column in columns:
            value = row[column]
            if column in formatters:
                text, numeric = formatters[column](value), False
            else:
                text, numeric = format_cell(value)
            cell_class = ' class="num"' if numeric else ""
            out.append(f"<td{cell_class}>{escape(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if len(frame) > max_rows:
        out.append(f"<p>{len(frame) - max_rows} more rows are in the CSV file.</p>")
    return "".join(out)


def key_value_table(items: Mapping[str, Any]) -> str:
    """A two-column table of names and values (escaped)."""
    rows = "".join(
        f"<tr><th>{escape(key)}</th><td>{escape(format_cell(value)[0])}</td></tr>"
        for key, value in items.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def card(value: str, label: str, css_class: str = "") -> str:
    """A summary card (big value, small label)."""
    return (
        f'<div class="card"><div class="value {escape(css_class)}">{escape(value)}</div>'
        f'<div class="label">{escape(label)}</div></div>'
    )


def note(text: str) -> str:
    """A highlighted note paragraph (escaped)."""
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(id, heading, inner_html)``."""
    nav = "".join(f'<a href="#{escape(sid)}">{escape(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(
        f'<section id="{escape(sid)}"><h2>{escape(heading)}</h2>{inner}</section>'
        for sid, heading, inner in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
