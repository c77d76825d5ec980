"""The summary page of a multi-plate experiment (``OUT/report.html``), from its template.

Data are prepared here; the markup is ``templates/experiment.html.j2`` (autoescaped, like the
plate report).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

import screenlib
from screenlib.report._view import Cell, Row, TableView, text

_CURVE_HEADERS = ["sample", "compound", "readout", "plates with IC50", "pIC50 mean ± SD",
                  "pooled IC50", "pooled flags"]  # fmt: skip


def _format_molar(value: Any) -> str:
    from screenlib.doseresponse.units import format_concentration

    try:
        return format_concentration(float(value))
    except (TypeError, ValueError):
        return "n/a"


def _curve_rows(spread: pd.DataFrame) -> list[Row]:
    rows = []
    for record in spread.to_dict("records"):
        mean, sd = record.get("pic50_mean"), record.get("pic50_sd")
        pic50 = "" if pd.isna(mean) else f"{mean:.2f}" + (f" ± {sd:.2f}" if pd.notna(sd) else "")
        cells = [Cell(text(record.get(key))) for key in ("sample", "compound", "readout")]
        cells += [
            Cell(f"{record['n_with_ic50']} / {record['n_replicates']}", True),
            Cell(pic50, True),
            Cell(_format_molar(record.get("pooled_ic50_molar")), True),
            Cell(text(record.get("pooled_flags")).replace(";", ", ")),
        ]
        rows.append(Row(cells, flagged=bool(text(record.get("pooled_flags")))))
    return rows


def experiment_report_html(
    plates: Sequence[dict[str, Any]], spread: pd.DataFrame, notes: Sequence[str]
) -> str:
    """The experiment's summary page.

    Parameters
    ----------
    plates
        One dict per plate: ``name``, ``link`` (relative path of its ``report.html``),
        ``n_fields``, ``n_fields_failed``, ``n_cells``.
    spread
        The between-plate table (``experiment.csv``: sample, compound, readout, n_with_ic50,
        n_replicates, pic50_mean, pic50_sd, pooled_ic50_molar, pooled_flags).
    notes
        What the engine noticed, one line each.
    """
    from screenlib.report._report import template_environment

    shown = [{**plate, "n_cells": f"{int(plate['n_cells']):,}"} for plate in plates]
    return (
        template_environment()
        .get_template("experiment.html.j2")
        .render(
            title=f"Experiment: {len(plates)} plates",
            subtitle=f"screenlib {screenlib.__version__}",
            plates=shown,
            curves=TableView(_CURVE_HEADERS, _curve_rows(spread)),
            notes=[str(note) for note in notes],
        )
    )
