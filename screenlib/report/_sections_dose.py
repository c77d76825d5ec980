"""Dose-response, fits and GR sections: curves per sample and compound, and their tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from screenlib.errors import ScreenlibError
from screenlib.report import figures as fig
from screenlib.report._sections import READOUT_LABELS, FigureWriter, timepoints_of
from screenlib.report._view import finite, image, table_view, text

_FIT_COLUMN_CANDIDATES = {
    "readout": ("readout",),
    # the fitted transition even when the IC50 is not reported (outside the tested range)
    "log_ic50": ("log_ic50_fit", "log_ic50"),
    "hill": ("hill_slope",),  # always positive: the steepness (direction says which way)
    "e0": ("response_at_zero_dose",),
    "e_inf": ("response_at_infinite_dose",),
    "ic50": ("ic50_molar",),
    "ic50_low": ("ic50_ci_low_molar",),
    "ic50_high": ("ic50_ci_high_molar",),
    "ic50_text": ("ic50_text",),
    "flags": ("flags",),
}
GR_READOUT = "gr_value"
MIXTURE_READOUT = "apoptotic_fraction_mixture"


def fit_column(fits: pd.DataFrame, key: str) -> str | None:
    for candidate in _FIT_COLUMN_CANDIDATES[key]:
        if candidate in fits.columns:
            return candidate
    return None


def _fit_value(row: pd.Series, fits: pd.DataFrame, key: str) -> Any:
    column = fit_column(fits, key)
    return row[column] if column is not None else None


def _curve_functions(row: pd.Series, fits: pd.DataFrame):
    """(curve, band, ic50, interval) callables/values from one fits.csv row."""
    from screenlib.doseresponse.model import four_parameter_logistic

    params = [finite(_fit_value(row, fits, key)) for key in ("log_ic50", "hill", "e0", "e_inf")]
    ic50 = finite(_fit_value(row, fits, "ic50"))
    low = finite(_fit_value(row, fits, "ic50_low"))
    high = finite(_fit_value(row, fits, "ic50_high"))
    interval = (low, high) if low is not None and high is not None else None
    if any(p is None for p in params):
        return None, None, ic50, interval
    log_ic50, hill, e0, e_inf = params
    hill = abs(hill)

    def curve(x):
        return four_parameter_logistic(x, log_ic50, hill, e0, e_inf)

    band = None
    if interval is not None and interval[0] > 0 and interval[1] > 0:
        log_low, log_high = math.log10(interval[0]), math.log10(interval[1])

        def band(x):
            # the curve shifted across the IC50 interval: where the fit places the transition
            first = four_parameter_logistic(x, log_low, hill, e0, e_inf)
            second = four_parameter_logistic(x, log_high, hill, e0, e_inf)
            return np.minimum(first, second), np.maximum(first, second)

    return curve, band, ic50, interval


def _matching_fit(fits: pd.DataFrame, key: Mapping[str, Any], readout: str) -> pd.Series | None:
    mask = np.ones(len(fits), dtype=bool)
    for column in ("sample", "compound", "timepoint"):
        if column in key and column in fits.columns:
            mask &= (fits[column] == key[column]).to_numpy()
    readout_column = fit_column(fits, "readout")
    if readout_column is not None:
        mask &= (fits[readout_column] == readout).to_numpy()
    first = np.flatnonzero(mask)[:1]  # one row taken, not every matching row copied
    return fits.iloc[int(first[0])] if first.size else None


def _panel(points: pd.DataFrame, readout: str, fits, key) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "ylabel": READOUT_LABELS.get(readout, readout),
        "concentration_molar": pd.to_numeric(points["concentration_molar"]).to_numpy(),
        "response": pd.to_numeric(points[readout], errors="coerce").to_numpy(),
    }
    if "fraction" in readout:
        panel["ylim"] = (-0.02, 1.02)
    if readout == "apoptotic_fraction" and MIXTURE_READOUT in points.columns:
        # the better-calibrated estimate beside the count (see aggregate.mixture)
        panel["second_response"] = pd.to_numeric(points[MIXTURE_READOUT], errors="coerce")
        panel["second_label"] = "mixture-model fraction"
    fit_row = _matching_fit(fits, key, readout) if fits is not None and len(fits) else None
    if fit_row is not None:
        curve, band, ic50, interval = _curve_functions(fit_row, fits)
        # what the curve and band callables are drawn from (the figure's cache key)
        panel["fit_parameters"] = [
            finite(_fit_value(fit_row, fits, key)) for key in ("log_ic50", "hill", "e0", "e_inf")
        ]
        name = "EC50" if text(fit_row.get("direction")) == "increasing" else "IC50"
        panel.update(curve=curve, band=band, ic50_molar=ic50, ic50_interval_molar=interval,
                     band_label=f"{name} 95 % interval", ic50_name=name)  # fmt: skip
        ic50_text = text(_fit_value(fit_row, fits, "ic50_text"))
        panel["ic50_text"] = f"{name}: {ic50_text}" if ic50_text and ic50 is None else None
        flags = text(_fit_value(fit_row, fits, "flags"))
        panel["flags"] = f"flags: {flags.replace(';', ', ')}" if flags else None
    return panel


def _panel_data(panel: dict[str, Any]) -> dict[str, Any]:
    """A panel without its curve callables: they are drawn from ``fit_parameters``."""
    return {key: value for key, value in panel.items() if key not in ("curve", "band")}


def _treated_groups(wells: pd.DataFrame):
    treated = wells
    if "role" in wells.columns:
        treated = wells[wells["role"].isin(["sample", "positive_control"])]
    treated = treated[pd.to_numeric(treated["concentration_molar"], errors="coerce") > 0]
    treated = treated.dropna(subset=["compound"]) if "compound" in treated else treated
    keys = [k for k in ("sample", "compound", "timepoint") if k in treated.columns]
    for values, group in treated.groupby(keys, sort=True) if len(treated) else ():
        values = values if isinstance(values, tuple) else (values,)
        key = dict(zip(keys, values, strict=True))
        if group["concentration_molar"].nunique() < 2:
            continue  # one dose (e.g. a positive control) is no curve
        vehicle = wells[wells["role"] == "negative_control"] if "role" in wells else wells
        for column in ("sample", "timepoint"):
            if column in key and column in vehicle.columns:
                vehicle = vehicle[vehicle[column] == key[column]]
        yield key, pd.concat([group, vehicle])


def dose_response_section(
    wells: pd.DataFrame | None, fits: pd.DataFrame | None, writer: FigureWriter
) -> dict[str, Any]:
    empty = {"note": "", "figures": [], "have_fits": fits is not None and not fits.empty}
    if wells is None or wells.empty or "concentration_molar" not in wells.columns:
        return empty | {"note": "No per-well concentrations were given; no curves drawn."}
    readouts = [r for r in READOUT_LABELS if r in wells.columns and r != MIXTURE_READOUT]
    if empty["have_fits"] and fit_column(fits, "readout"):
        readouts = [r for r in pd.unique(fits[fit_column(fits, "readout")]) if r in wells.columns]
    several = len(timepoints_of(wells)) > 1
    figures = []
    # only the columns the curves read: a wells table has about a hundred, each group copies
    used = ("sample", "compound", "timepoint", "role", "concentration_molar", *readouts,
            MIXTURE_READOUT)  # fmt: skip
    for key, points in _treated_groups(wells[[c for c in dict.fromkeys(used) if c in wells]]):
        panels = [_panel(points, readout, fits, key) for readout in readouts]
        if not panels:
            continue
        name_parts = [text(key[k]) for k in ("sample", "compound") if k in key]
        title = " · ".join(name_parts)
        if "timepoint" in key and several:
            title += f" · timepoint {key['timepoint']}"
            name_parts.append(f"t{key['timepoint']}")
        png = writer.figure(
            "curve_" + "_".join(name_parts),
            lambda title=title, panels=panels: fig.dose_response_figure(title, panels),
            {"title": title, "panels": [_panel_data(panel) for panel in panels]},
            svg=True,  # the figure a user takes to a slide
        )
        figures.append(image(png, title, css_class="curve"))
    if not figures:
        return empty | {"note": "No dose-response groups to draw (no treated series)."}
    return empty | {"figures": figures}


def _molar_or_text(value: Any, fallback: Any) -> str:
    number = finite(value)
    return fig.format_molar(number) if number is not None else text(fallback)


def fits_section(fits: pd.DataFrame | None) -> dict[str, Any]:
    if fits is None or fits.empty:
        return {"note": "No dose-response fits were made (no fits table given).", "table": None}
    flags_column = fit_column(fits, "flags")
    flags = fits[flags_column].map(text) if flags_column else pd.Series("", index=fits.index)
    view = pd.DataFrame(index=fits.index)
    for column in ("sample", "compound", "readout", "timepoint", "direction"):
        if column in fits.columns:
            view[column] = fits[column]
    ic50, low, high = (fit_column(fits, k) for k in ("ic50", "ic50_low", "ic50_high"))
    ic50_text = fit_column(fits, "ic50_text")

    def interval_cell(row: pd.Series) -> str:
        bounds = [finite(row[c]) if c else None for c in (low, high, ic50)]
        if any(b is None for b in bounds):
            return ""
        return f"{fig.format_molar(bounds[0])} – {fig.format_molar(bounds[1])}"

    view["IC50 / EC50"] = fits.apply(
        lambda r: _molar_or_text(r[ic50] if ic50 else None, r[ic50_text] if ic50_text else ""),
        axis=1,
    )
    view["95 % interval"] = fits.apply(interval_cell, axis=1)
    if "absolute_ic50_molar" in fits.columns:
        view["absolute IC50"] = fits.apply(
            lambda r: _molar_or_text(r["absolute_ic50_molar"], r.get("absolute_ic50_text")), axis=1
        )
    for column, header in (("pic50", "pIC50"), ("hill_slope", "Hill slope"), ("bottom", "bottom"),
                           ("top", "top"), ("emax", "Emax"), ("n_points", "points"),
                           ("f_test_p_value", "p (vs flat)")):  # fmt: skip
        if column in fits.columns:
            view[header] = fits[column]
    for column in ("IC50 / EC50", "95 % interval", "absolute IC50"):
        if column in view:  # "43.3 nM – 101 nM" stays on one line
            view[column] = view[column].str.replace(" ", "\u00a0")
    view["flags"] = flags.str.replace(";", ", ")
    flagged = [bool(f.strip()) for f in flags]
    used = sorted({f for value in flags for f in value.split(";") if f})
    try:
        from screenlib.doseresponse import FLAGS
    except ImportError:  # a fits table from elsewhere: flags without their meaning
        FLAGS = {}
    return {
        "note": "",
        "n": len(fits),
        "n_flagged": sum(flagged),
        "table": table_view(view, flagged=flagged),
        "legend": [(flag, FLAGS.get(flag, "")) for flag in used],
    }


# --- GR metrics -------------------------------------------------------------------------------

_GR_COLUMNS = (
    ("sample", "sample"),
    ("compound", "compound"),
    ("timepoint", "timepoint"),
    ("GR50", "GR50"),
    ("gec50", "GEC50"),
    ("gr_max", "GRmax"),
    ("gr_inf", "GRinf"),
    ("gr_aoc", "GR AOC"),
    ("gr_hill", "Hill"),
    ("flags", "flags"),
)


def _gr_rows(wells: pd.DataFrame | None, fits: pd.DataFrame | None, settings) -> pd.DataFrame:
    """GR rows of the fits table, or computed here when only the wells carry t0 counts."""
    if fits is not None and "readout" in fits.columns:
        rows = fits[fits["readout"] == GR_READOUT]
        if len(rows):
            return rows
    if wells is None or "n_cells_t0" not in wells.columns:
        return pd.DataFrame()
    from screenlib.doseresponse.gr import gr_table

    try:
        return gr_table(wells, settings.fit)
    except ScreenlibError as error:
        return pd.DataFrame({"error": [str(error)]})


def gr_section(wells, fits, settings) -> dict[str, Any]:
    rows = _gr_rows(wells, fits, settings)
    if rows.empty:
        return {"note": "No counts at the time of treatment (time zero) were given, so no "
                "growth-rate (GR) metrics: add an n_cells_t0 column to the plate map, or "
                "image a time-zero plate.", "table": None}  # fmt: skip
    if "error" in rows.columns:
        return {"note": f"GR metrics could not be computed: {rows['error'].iloc[0]}",
                "table": None}  # fmt: skip
    view = pd.DataFrame(index=rows.index)
    for column in ("sample", "compound", "timepoint"):
        if column in rows.columns:
            view[column] = rows[column]
    view["GR50"] = [_molar_or_text(v, t) for v, t in
                    zip(rows.get("gr50_molar"), rows.get("gr50_text"), strict=True)]  # fmt: skip
    view["gec50"] = rows["gec50_molar"].map(lambda v: _molar_or_text(v, "n/a"))
    for column in ("gr_max", "gr_inf", "gr_aoc", "gr_hill"):
        view[column] = pd.to_numeric(rows[column], errors="coerce")
    view["flags"] = rows["flags"].map(text).str.replace(";", ", ") if "flags" in rows else ""
    return {"note": "", "table": table_view(view, headers=dict(_GR_COLUMNS))}
