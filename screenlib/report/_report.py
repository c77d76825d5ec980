"""Assemble ``report.html`` and ``figures/`` from a run's tables (and the plate, for crops)."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import screenlib
from screenlib.errors import ScreenlibError
from screenlib.io_utils import atomic_write_text
from screenlib.report import figures as fig
from screenlib.report import html as h
from screenlib.report.gallery import GALLERY_CLASSES, cell_gallery, gallery_mosaic
from screenlib.settings import AssaySettings

log = logging.getLogger(__name__)

CLASS_HEATMAPS = (
    ("fraction_viable", "Viable fraction", "Greens"),
    ("fraction_early_apoptotic", "Early apoptotic fraction (Annexin V+ / PI-)", "Oranges"),
    ("fraction_late_apoptotic", "Late apoptotic fraction (Annexin V+ / PI+)", "Oranges"),
    ("fraction_necrotic", "Necrotic fraction (Annexin V- / PI+)", "Reds"),
)
READOUT_LABELS = {
    "apoptotic_fraction": "apoptotic fraction (early + late)",
    "apoptotic_fraction_mixture": "apoptotic fraction (mixture model)",
    "relative_cell_count": "cell count relative to vehicle",
}
ROLE_MARKERS = {"negative_control": "N", "positive_control": "P", "empty": "E"}
FIGURE_PREFIXES = ("plate_", "curve_", "gating_", "gallery_")
SECTION_IDS = (
    "summary",
    "plate-maps",
    "dose-response",
    "fits",
    "plate-qc",
    "gating",
    "gallery",
    "run",
)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_.")
    return slug[:60] or "x"


class _FigureWriter:
    """Saves figures under ``figures/`` with unique names and keeps their PNG bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def save(self, figure: Figure, name: str) -> bytes:
        stem = _slug(name)
        candidate, number = stem, 2
        while candidate in self.used:
            candidate, number = f"{stem}_{number}", number + 1
        self.used.add(candidate)
        return fig.save_figure(figure, self.folder / candidate)


def _value(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of a gate object or a gates.json entry."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    """A table value as text, with NaN/None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _timepoints(table: pd.DataFrame | None) -> list[int]:
    if table is None or "timepoint" not in table.columns or table.empty:
        return [0]
    return sorted(int(t) for t in pd.unique(table["timepoint"]))


def _at_timepoint(table: pd.DataFrame, timepoint: int) -> pd.DataFrame:
    if "timepoint" not in table.columns:
        return table
    return table[table["timepoint"] == timepoint]


# ---------------------------------------------------------------------------------------------
# sections


def _summary_section(
    plate_name: str,
    wells: pd.DataFrame | None,
    fields: pd.DataFrame | None,
    cells: pd.DataFrame | None,
    plate_qc: pd.DataFrame | None,
    fits: pd.DataFrame | None,
) -> str:
    cards = []
    if wells is not None:
        cards.append(h.card(f"{wells['well'].nunique():,}", "wells analysed"))
    if fields is not None and len(fields):
        failed = int((~fields["qc_pass"].astype(bool)).sum()) if "qc_pass" in fields else 0
        cards.append(
            h.card(f"{len(fields):,}", f"fields ({failed} failed QC)", "warn" if failed else "")
        )
    if cells is not None:
        n_cells = (
            int((cells["cell_class"] != "debris").sum()) if "cell_class" in cells else len(cells)
        )
        cards.append(h.card(f"{n_cells:,}", "cells classified"))
    z_prime = _qc_metric(plate_qc, ("z_prime", "z_factor"), exclude="robust")
    if z_prime is not None:
        verdict, css = _z_prime_verdict(z_prime)
        cards.append(h.card(f"{z_prime:.2f}", f"Z′ ({verdict})", css))
    if fits is not None and len(fits):
        n_ic50 = _n_determined(fits)
        cards.append(h.card(f"{n_ic50} / {len(fits)}", "curves with an IC50/EC50"))
    intro = (
        f"<p>Plate <b>{h.escape(plate_name)}</b>. Start with the Z′ card (assay window between "
        "vehicle and positive-control wells): above 0.5 the plate separates controls well. "
        "Then check the plate maps for wells flagged by QC or edge patterns, and the "
        "dose-response curves; the gallery shows what each cell class looks like.</p>"
    )
    return intro + f'<div class="cards">{"".join(cards)}</div>'


def _z_prime_verdict(z_prime: float) -> tuple[str, str]:
    if z_prime >= 0.5:
        return "excellent", "good"
    if z_prime > 0:
        return "screenable", "warn"
    return "controls overlap", "bad"


def _qc_metric(
    plate_qc: pd.DataFrame | None, names: tuple[str, ...], exclude: str = ""
) -> float | None:
    if plate_qc is None or plate_qc.empty:
        return None
    for column in plate_qc.columns:
        lowered = column.lower()
        if any(name in lowered for name in names) and not (exclude and exclude in lowered):
            values = pd.to_numeric(plate_qc[column], errors="coerce").dropna()
            if len(values):
                return float(values.iloc[0])
    if "metric" in plate_qc.columns and "value" in plate_qc.columns:
        for _, row in plate_qc.iterrows():
            lowered = str(row["metric"]).lower()
            if any(name in lowered for name in names) and not (exclude and exclude in lowered):
                return _finite(row["value"])
    return None


def _well_markers(wells: pd.DataFrame) -> dict[str, str]:
    if "role" not in wells.columns:
        return {}
    return {
        str(w): ROLE_MARKERS[r]
        for w, r in zip(wells["well"], wells["role"], strict=True)
        if r in ROLE_MARKERS
    }


def _qc_status(wells: pd.DataFrame) -> dict[str, str]:
    status = {}
    flags = wells["qc_flags"] if "qc_flags" in wells.columns else pd.Series("", index=wells.index)
    for well, flag in zip(wells["well"], flags, strict=True):
        status[str(well)] = "flagged" if _text(flag).strip() else "pass"
    return status


def _plate_maps_section(wells: pd.DataFrame | None, geometry, writer: _FigureWriter) -> str:
    if wells is None or wells.empty:
        return h.note("No per-well table was given; plate maps are not drawn.")
    parts = [
        "<p>One square per well, laid out as on the plate (rows A, B, …; columns 1, 2, …). "
        "Corner letters mark control wells: N = vehicle (negative control), P = positive "
        "control, E = empty. Light grey: no data. Numbers inside the wells of 96-well plates "
        "are cell counts or percentages.</p>"
    ]
    timepoints = _timepoints(wells)
    for timepoint in timepoints:
        at = _at_timepoint(wells, timepoint)
        if "n_fields_used" in at.columns:
            # a well whose fields all failed QC has no count to show, not zero cells
            at = at.assign(n_cells=at["n_cells"].where(pd.to_numeric(at["n_fields_used"]) > 0))
        suffix = f" · timepoint {timepoint}" if len(timepoints) > 1 else ""
        name_suffix = f"_t{timepoint}" if len(timepoints) > 1 else ""
        markers = _well_markers(at)
        if len(timepoints) > 1:
            parts.append(f"<h3>Timepoint {timepoint}</h3>")
        figures_html = []
        # the two headline maps carry numbers in the wells; the class maps colour only
        headline = (
            ("n_cells", "Cells per well", "cells", "viridis", "count", None),
            ("apoptotic_fraction", "Apoptotic fraction (early + late)", "share of cells",
             "magma", "percent", 1.0),
        )  # fmt: skip
        for column, title, label, cmap, value_format, vmax in headline:
            values = fig.fractions_to_series(at, column)
            if not values:
                continue
            figure = fig.plate_heatmap(
                values, geometry, title=title + suffix, colorbar_label=label, cmap=cmap,
                vmin=0.0, vmax=vmax, value_format=value_format, markers=markers,
            )  # fmt: skip
            png = writer.save(figure, f"plate_{column}{name_suffix}")
            figures_html.append(h.image(png, title + suffix, css_class="plate"))
        panels = []
        for column, title, cmap in CLASS_HEATMAPS:
            values = fig.fractions_to_series(at, column)
            if values:
                panels.append(
                    {"values": values, "title": title, "colorbar_label": "share of cells",
                     "cmap": cmap, "vmin": 0.0, "vmax": max(0.05, max(values.values())),
                     "value_format": "percent", "markers": markers, "annotate": False}
                )  # fmt: skip
        if panels:
            figure = fig.plate_heatmap_panels(
                panels, geometry, title="Cell classes per well" + suffix
            )
            png = writer.save(figure, f"plate_class_fractions{name_suffix}")
            figures_html.append(
                h.image(png, "Cell classes per well" + suffix, css_class="plate-grid")
            )
        figure = fig.qc_heatmap(_qc_status(at), geometry, title="Well QC flags" + suffix)
        png = writer.save(figure, f"plate_qc_flags{name_suffix}")
        figures_html.append(h.image(png, "Well QC flags" + suffix, css_class="plate"))
        parts.append(f'<div class="figures">{"".join(figures_html)}</div>')
    return "".join(parts)


# --- dose-response --------------------------------------------------------------------------

_FIT_COLUMN_CANDIDATES = {
    "readout": ("readout",),
    # the fitted transition even when the IC50 is not reported (outside the tested range)
    "log_ic50": ("log_ic50_fit", "fitted_log_ic50", "log_ic50"),
    "hill": ("hill", "hill_slope"),  # the model's hill is positive; Prism's slope is signed
    "e0": ("e0", "response_at_zero_dose"),
    "e_inf": ("e_inf", "response_at_infinite_dose"),
    "ic50": ("ic50_molar",),
    "ic50_low": ("ic50_ci_low_molar",),
    "ic50_high": ("ic50_ci_high_molar",),
    "ic50_text": ("ic50_text",),
    "flags": ("flags",),
}


def _fit_column(fits: pd.DataFrame, key: str) -> str | None:
    for candidate in _FIT_COLUMN_CANDIDATES[key]:
        if candidate in fits.columns:
            return candidate
    return None


def _fit_value(row: pd.Series, fits: pd.DataFrame, key: str) -> Any:
    column = _fit_column(fits, key)
    return row[column] if column is not None else None


def _n_determined(fits: pd.DataFrame) -> int:
    column = _fit_column(fits, "ic50")
    if column is None:
        return 0
    return int(pd.to_numeric(fits[column], errors="coerce").notna().sum())


def _curve_functions(row: pd.Series, fits: pd.DataFrame):
    """(curve, band, ic50, interval) callables/values from one fits.csv row."""
    from screenlib.doseresponse.model import four_parameter_logistic

    params = [_finite(_fit_value(row, fits, key)) for key in ("log_ic50", "hill", "e0", "e_inf")]
    ic50 = _finite(_fit_value(row, fits, "ic50"))
    low = _finite(_fit_value(row, fits, "ic50_low"))
    high = _finite(_fit_value(row, fits, "ic50_high"))
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


def _dose_response_section(
    wells: pd.DataFrame | None, fits: pd.DataFrame | None, writer: _FigureWriter
) -> str:
    if wells is None or wells.empty or "concentration_molar" not in wells.columns:
        return h.note("No per-well concentrations were given; no dose-response curves drawn.")
    have_fits = fits is not None and not fits.empty
    readouts = [r for r in READOUT_LABELS if r in wells.columns]
    if have_fits and _fit_column(fits, "readout"):
        readouts = [r for r in pd.unique(fits[_fit_column(fits, "readout")]) if r in wells.columns]
    treated = wells
    if "role" in wells.columns:
        treated = wells[wells["role"].isin(["sample", "positive_control"])]
    treated = treated[pd.to_numeric(treated["concentration_molar"], errors="coerce") > 0]
    treated = treated.dropna(subset=["compound"]) if "compound" in treated else treated
    if treated.empty:
        return h.note("No treated wells (concentration > 0) on this plate.")
    group_keys = [k for k in ("sample", "compound", "timepoint") if k in treated.columns]
    parts = [
        "<p>Points: replicate wells (vehicle wells on the left). Line: four-parameter "
        "logistic fit. Shaded: the fitted curve moved across the 95 % interval of its IC50 "
        "(where the fit places the transition). Red: IC50/EC50 with its interval. Curves "
        "flagged by the fit say so in the box.</p>",
        '<div class="figures">',
    ]
    n_figures = 0
    for key_values, group in treated.groupby(group_keys, sort=True):
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        key = dict(zip(group_keys, key_values, strict=True))
        if group["concentration_molar"].nunique() < 2:
            continue  # one dose (e.g. a positive control) is no curve
        vehicle = wells
        if "role" in wells.columns:
            vehicle = wells[wells["role"] == "negative_control"]
        for column in ("sample", "timepoint"):
            if column in key and column in vehicle.columns:
                vehicle = vehicle[vehicle[column] == key[column]]
        panels = []
        for readout in readouts:
            points = pd.concat([group, vehicle])
            panel: dict[str, Any] = {
                "ylabel": READOUT_LABELS.get(readout, readout),
                "concentration_molar": pd.to_numeric(points["concentration_molar"]).to_numpy(),
                "response": pd.to_numeric(points[readout], errors="coerce").to_numpy(),
            }
            if "fraction" in readout:
                panel["ylim"] = (-0.02, 1.02)
            fit_row = _matching_fit(fits, key, readout) if have_fits else None
            if fit_row is not None:
                curve, band, ic50, interval = _curve_functions(fit_row, fits)
                name = "EC50" if _text(fit_row.get("direction")) == "increasing" else "IC50"
                panel.update(
                    curve=curve,
                    band=band,
                    ic50_molar=ic50,
                    ic50_interval_molar=interval,
                    band_label=f"{name} 95 % interval",
                    ic50_name=name,
                )
                text = _text(_fit_value(fit_row, fits, "ic50_text"))
                panel["ic50_text"] = f"{name}: {text}" if text and ic50 is None else None
                flags = _text(_fit_value(fit_row, fits, "flags"))
                panel["flags"] = f"flags: {flags.replace(';', ', ')}" if flags else None
            panels.append(panel)
        if not panels:
            continue
        title = " · ".join(_text(key.get(k)) for k in ("sample", "compound") if k in key)
        if "timepoint" in key and len(_timepoints(wells)) > 1:
            title += f" · timepoint {key['timepoint']}"
        figure = fig.dose_response_figure(title, panels)
        name_parts = [_text(key[k]) for k in ("sample", "compound") if k in key]
        if "timepoint" in key and len(_timepoints(wells)) > 1:
            name_parts.append(f"t{key['timepoint']}")
        png = writer.save(figure, "curve_" + "_".join(name_parts))
        parts.append(h.image(png, title, css_class="curve"))
        n_figures += 1
    parts.append("</div>")
    if not have_fits:
        parts.insert(0, h.note("No fits were given; points only."))
    return "".join(parts) if n_figures else h.note("No dose-response groups to draw.")


def _matching_fit(fits: pd.DataFrame, key: Mapping[str, Any], readout: str) -> pd.Series | None:
    mask = np.ones(len(fits), dtype=bool)
    for column in ("sample", "compound", "timepoint"):
        if column in key and column in fits.columns:
            mask &= (fits[column] == key[column]).to_numpy()
    readout_column = _fit_column(fits, "readout")
    if readout_column is not None:
        mask &= (fits[readout_column] == readout).to_numpy()
    matched = fits[mask]
    return matched.iloc[0] if len(matched) else None


def _fits_section(fits: pd.DataFrame | None) -> str:
    if fits is None or fits.empty:
        return h.note("No dose-response fits were made (no fits table given).")
    flags_column = _fit_column(fits, "flags")
    flagged = (
        [bool(_text(v).strip()) for v in fits[flags_column]]
        if flags_column
        else [False] * len(fits)
    )
    view = pd.DataFrame(index=fits.index)
    for column in ("sample", "compound", "readout", "timepoint", "direction"):
        if column in fits.columns:
            view[column] = fits[column]
    ic50_column, text_column = _fit_column(fits, "ic50"), _fit_column(fits, "ic50_text")
    low_column, high_column = _fit_column(fits, "ic50_low"), _fit_column(fits, "ic50_high")

    def ic50_cell(row: pd.Series) -> str:
        value = _finite(row[ic50_column]) if ic50_column else None
        if value is not None:
            return fig.format_molar(value)
        return _text(row[text_column]) if text_column else ""

    def interval_cell(row: pd.Series) -> str:
        low = _finite(row[low_column]) if low_column else None
        high = _finite(row[high_column]) if high_column else None
        if low is None or high is None or _finite(row[ic50_column]) is None:
            return ""
        return f"{fig.format_molar(low)} – {fig.format_molar(high)}"

    view["IC50 / EC50"] = fits.apply(ic50_cell, axis=1)
    view["95 % interval"] = fits.apply(interval_cell, axis=1)
    if "absolute_ic50_molar" in fits.columns:
        view["absolute IC50"] = fits.apply(
            lambda r: (
                fig.format_molar(_finite(r["absolute_ic50_molar"]))
                if _finite(r["absolute_ic50_molar"]) is not None
                else _text(r.get("absolute_ic50_text"))
            ),
            axis=1,
        )
    for column, header in (
        ("pic50", "pIC50"),
        ("hill_slope", "Hill slope"),
        ("bottom", "bottom"),
        ("top", "top"),
        ("emax", "Emax"),
        ("n_points", "points"),
        ("f_test_p_value", "p (vs flat)"),
    ):
        if column in fits.columns:
            view[header] = fits[column]
    if flags_column:
        view["flags"] = fits[flags_column].map(lambda v: _text(v).replace(";", ", "))
    n_flagged = sum(flagged)
    intro = (
        f"<p>{len(fits)} curves; {n_flagged} carry flags (highlighted). IC50s outside the tested "
        "range are given as text (\u201c&gt; top dose\u201d), not as numbers. Every column is "
        "in <code>fits.csv</code>.</p>"
    )
    legend = ""
    try:
        from screenlib.doseresponse import FLAGS

        used = (
            sorted({f for v in fits[flags_column] for f in _text(v).split(";") if f})
            if (flags_column)
            else []
        )
        if used:
            legend = (
                "<ul>"
                + "".join(
                    f"<li><b>{h.escape(f)}</b>: {h.escape(FLAGS.get(f, ''))}</li>" for f in used
                )
                + "</ul>"
            )
    except ImportError:
        pass
    return (
        intro + '<div style="overflow-x:auto">' + h.table(view, flagged=flagged) + "</div>" + legend
    )


_QC_HEADLINE = (
    ("plate", "plate"),
    ("timepoint", "timepoint"),
    ("z_prime", "Z′"),
    ("robust_z_prime", "robust Z′"),
    ("ssmd", "SSMD"),
    ("assay_quality", "assay quality"),
    ("n_negative_wells", "vehicle wells"),
    ("n_positive_wells", "positive-control wells"),
    ("edge_effect_flag", "edge effect"),
    ("edge_effect_in", "edge effect in"),
    ("qc_flags", "flags"),
)


def _plate_qc_tables(plate_qc: pd.DataFrame) -> str:
    """Headline statistics, one row per read-out, and every column behind a disclosure."""
    headline = [(c, label) for c, label in _QC_HEADLINE if c in plate_qc.columns]
    parts = []
    if headline:
        view = plate_qc[[c for c, _ in headline]]
        parts.append(h.table(view, headers=dict(headline)))
    readouts = [c[len("z_prime_") :] for c in plate_qc.columns if c.startswith("z_prime_")]
    rows = []
    for _, qc_row in plate_qc.iterrows():
        for readout in readouts:

            def get(name: str, row: pd.Series = qc_row) -> Any:
                return row.get(name)

            def mean_sd(role: str, readout: str = readout) -> str:
                mean = _finite(get(f"{readout}_{role}_mean"))
                sd = _finite(get(f"{readout}_{role}_sd"))
                return "" if mean is None else f"{mean:.3g} ± {sd or 0:.2g}"

            def edge(group: str, readout: str = readout) -> str:
                flag = get(f"edge_{group}_{readout}_flag")
                p_value = _finite(get(f"edge_{group}_{readout}_p_value"))
                if p_value is None:
                    return "not testable"
                verdict = "FLAGGED" if str(flag).lower() in ("true", "1") else "ok"
                return f"{verdict} (p = {p_value:.2g})"

            rows.append(
                {
                    "timepoint": get("timepoint"),
                    "read-out": READOUT_LABELS.get(readout, readout),
                    "vehicle (mean ± SD)": mean_sd("negative"),
                    "positive control (mean ± SD)": mean_sd("positive"),
                    "Z′": _finite(get(f"z_prime_{readout}")),
                    "robust Z′": _finite(get(f"robust_z_prime_{readout}")),
                    "SSMD": _finite(get(f"ssmd_{readout}")),
                    "edge effect, vehicle wells": edge("vehicle"),
                    "edge effect, sample wells": edge("sample"),
                }
            )
    if rows:
        parts.append("<h3>Per read-out</h3>" + h.table(pd.DataFrame(rows)))
    parts.append(
        "<details><summary>All plate QC statistics</summary>"
        + h.table(
            plate_qc.T.reset_index().set_axis(
                ["statistic", *[str(i) for i in range(len(plate_qc))]], axis=1
            )
        )
        + "</details>"
    )
    return "".join(parts)


def _plate_qc_section(
    plate_qc: pd.DataFrame | None, fields: pd.DataFrame | None, wells: pd.DataFrame | None
) -> str:
    parts = []
    if plate_qc is None or plate_qc.empty:
        parts.append(h.note("No plate QC table was given."))
    else:
        parts.append(
            "<p>Z′ = 1 − 3(σ<sub>pos</sub> + σ<sub>neg</sub>)/|μ<sub>pos</sub> − μ<sub>neg</sub>| "
            "on the apoptotic fraction of positive-control vs vehicle wells (&gt; 0.5 excellent, "
            "&gt; 0 screenable); robust Z′ uses medians and MADs; SSMD is the control difference "
            "in units of its standard deviation. The edge-effect check compares outer with "
            "inner wells.</p>"
        )
        parts.append(_plate_qc_tables(plate_qc))
    if fields is not None and len(fields) and "qc_pass" in fields.columns:
        failed = fields[~fields["qc_pass"].astype(bool)]
        parts.append(f"<h3>Excluded fields ({len(failed)} of {len(fields)})</h3>")
        if failed.empty:
            parts.append("<p>Every field passed image QC.</p>")
        else:
            columns = [
                c
                for c in (
                    "well",
                    "field",
                    "timepoint",
                    "qc_reason",
                    "n_cells",
                    "focus_score",
                    "saturated_fraction",
                )
                if c in failed.columns
            ]
            parts.append(h.table(failed, columns=columns, headers={"qc_reason": "why"}))
    if wells is not None and "qc_flags" in wells.columns:
        flagged = wells[wells["qc_flags"].map(lambda v: bool(_text(v).strip()))]
        parts.append(f"<h3>Flagged wells ({len(flagged)})</h3>")
        if flagged.empty:
            parts.append("<p>No well was flagged.</p>")
        else:
            columns = [
                c
                for c in (
                    "well",
                    "timepoint",
                    "sample",
                    "compound",
                    "role",
                    "n_cells",
                    "n_fields_used",
                    "qc_flags",
                )
                if c in flagged.columns
            ]
            table_html = h.table(flagged, columns=columns)
            if len(flagged) > 12:
                table_html = (
                    f"<details><summary>Show the {len(flagged)} flagged wells</summary>"
                    f"{table_html}</details>"
                )
            parts.append(table_html)
    return "".join(parts)


# --- gating ---------------------------------------------------------------------------------


def _pick_treated_well(
    wells: pd.DataFrame | None, timepoint: int, roles: tuple[str, ...] = ("sample",)
) -> str | None:
    """The treated well whose apoptotic fraction is closest to one half (all quadrants shown)."""
    if wells is None or wells.empty or "apoptotic_fraction" not in wells.columns:
        return None
    at = _at_timepoint(wells, timepoint)
    if "role" in at.columns:
        at = at[at["role"].isin(list(roles))]
    if "n_cells" in at.columns:
        at = at[pd.to_numeric(at["n_cells"], errors="coerce") >= 50]
    fractions = pd.to_numeric(at["apoptotic_fraction"], errors="coerce")
    if fractions.notna().sum() == 0:
        return None
    return str(at.loc[(fractions - 0.5).abs().idxmin(), "well"])


def _gating_section(
    cells: pd.DataFrame | None,
    wells: pd.DataFrame | None,
    gates: Mapping[Any, Any] | None,
    settings: AssaySettings,
    writer: _FigureWriter,
) -> str:
    if cells is None or cells.empty:
        return h.note("No per-cell table was given; the Annexin V / PI plots are not drawn.")
    gates = gates or {}
    timepoint = _timepoints(cells)[-1]
    gate = gates.get(timepoint, gates.get(str(timepoint))) if gates else None
    annexin_feature = _value(gate, "annexin_feature") or settings.gating.annexin_feature
    pi_feature = _value(gate, "pi_feature") or settings.gating.pi_feature
    missing = [c for c in (annexin_feature, pi_feature, "well") if c not in cells.columns]
    if missing:
        return h.note(f"The per-cell table lacks {', '.join(missing)}; no quadrant plots.")
    bleed = _finite(_value(gate, "bleedthrough_annexin_to_pi")) or 0.0
    at = _at_timepoint(cells, timepoint)
    if "cell_class" in at.columns:
        at = at[at["cell_class"].isin(GALLERY_CLASSES)]
    vehicle_wells: list[str] = []
    if wells is not None and "role" in wells.columns:
        vehicle_wells = sorted(set(wells.loc[wells["role"] == "negative_control", "well"]))

    def population(selection: pd.DataFrame, title: str) -> dict:
        annexin = selection[annexin_feature].to_numpy(dtype=float)
        if "pi_compensated" in selection.columns:  # what classify_cells gated on
            pi = selection["pi_compensated"].to_numpy(dtype=float)
        else:
            leaking = _value(gate, "bleedthrough_feature") or annexin_feature
            leak = selection[leaking].to_numpy(dtype=float) if leaking in selection else annexin
            pi = selection[pi_feature].to_numpy(dtype=float) - bleed * np.nan_to_num(leak)
        classes = selection["cell_class"].to_numpy() if "cell_class" in selection else None
        return {"title": title, "annexin": annexin, "pi": pi, "classes": classes}

    populations = []
    if vehicle_wells:
        populations.append(
            population(at[at["well"].isin(vehicle_wells)], f"Vehicle ({len(vehicle_wells)} wells)")
        )
    positive_wells: list[str] = []
    if wells is not None and "role" in wells.columns:
        positive_wells = sorted(set(wells.loc[wells["role"] == "positive_control", "well"]))
    if positive_wells:
        populations.append(
            population(
                at[at["well"].isin(positive_wells)],
                f"Positive control ({len(positive_wells)} wells)",
            )
        )
    treated_well = _pick_treated_well(wells, timepoint, roles=("sample",))
    if treated_well is not None:
        description = _describe_well(wells, treated_well)
        populations.append(population(at[at["well"] == treated_well], description))
    if not populations:
        populations.append(population(at, "All cells"))
    annexin_gate = _finite(_value(gate, "annexin_gate"))
    pi_gate = _finite(_value(gate, "pi_gate"))
    pi_label = f"PI: {pi_feature}" + (" (compensated for Annexin bleed-through)" if bleed else "")
    figure = fig.quadrant_figure(
        populations,
        annexin_gate=annexin_gate,
        pi_gate=pi_gate,
        annexin_label=f"Annexin V: {annexin_feature}",
        pi_label=pi_label,
    )
    png = writer.save(figure, "gating_annexin_pi")
    parts = [
        "<p>Each dot is one cell (colour: local density, as in a flow cytometry pseudocolour "
        "plot); axes are arcsinh-scaled (linear near zero, logarithmic above). Lines: the "
        "gates; corner labels: the share of cells in each class. Gates are learned from the "
        "vehicle wells unless set in the assay settings.</p>",
        h.image(png, "Annexin V versus PI with quadrant gates"),
    ]
    if gates:
        rows = []
        for key, item in sorted(gates.items(), key=lambda kv: int(kv[0])):
            rows.append(
                {
                    "timepoint": int(key),
                    "annexin feature": _value(item, "annexin_feature"),
                    "Annexin V gate": _finite(_value(item, "annexin_gate")),
                    "PI feature": _value(item, "pi_feature"),
                    "PI gate": _finite(_value(item, "pi_gate")),
                    "bleed-through Annexin→PI": _finite(_value(item, "bleedthrough_annexin_to_pi")),
                    "method": _value(item, "method"),
                    "vehicle cells": _value(item, "n_control_cells"),
                }
            )
        parts.append("<h3>Gates</h3>" + h.table(pd.DataFrame(rows)))
        warnings_found = []
        for item in gates.values():
            details = _value(item, "details") or {}
            for warning in details.get("warnings", []) if isinstance(details, Mapping) else []:
                warnings_found.append(str(warning))
        for warning in warnings_found:
            parts.append(h.note(warning))
    else:
        parts.append(h.note("No gates were given; quadrant shares come from the cell classes."))
    return "".join(parts)


def _describe_well(wells: pd.DataFrame | None, well: str) -> str:
    if wells is None:
        return well
    rows = wells[wells["well"] == well]
    if rows.empty:
        return well
    row = rows.iloc[0]
    bits = [well]
    for column in ("sample", "compound"):
        if column in row and _text(row[column]):
            bits.append(_text(row[column]))
    if "concentration_molar" in row:
        bits.append(fig.format_molar(_finite(row["concentration_molar"]) or 0.0))
    return " · ".join(bits)


# --- gallery --------------------------------------------------------------------------------


def _gallery_section(
    plate, cells: pd.DataFrame | None, settings: AssaySettings, writer: _FigureWriter
) -> str:
    if plate is None:
        return h.note("No plate was given, so no cell crops are shown.")
    if cells is None or cells.empty or "cell_class" not in cells.columns:
        return h.note("No classified cells were given, so no cell crops are shown.")
    try:
        crops = cell_gallery(plate, cells, settings)
    except (ScreenlibError, KeyError, OSError, ValueError) as error:  # missing labels/field
        log.warning("cell gallery skipped: %s", error)
        return h.note(f"Cell crops could not be read from the plate: {error}")
    parts = [
        "<p>Example cells of each class from real wells: Hoechst (nuclei) blue, Annexin V "
        "green, PI red; the white line is the segmented nucleus the numbers belong to. All "
        "crops share one brightness scale per stain. A viable cell is a blue nucleus without a "
        "green rim; early apoptotic: green rim, no red; late apoptotic: green rim and red "
        "nucleus; necrotic: red nucleus without a rim.</p>"
    ]
    for cell_class in GALLERY_CLASSES:
        of_class = [c for c in crops if c.cell_class == cell_class]
        label = fig.CLASS_LABELS[cell_class]
        parts.append(
            f'<h3><span class="legend-swatch" style="background:{fig.CLASS_COLORS[cell_class]}">'
            f"</span>{h.escape(label)} ({len(of_class)} shown)</h3>"
        )
        if not of_class:
            parts.append(f"<p>No {h.escape(label)} cells on this plate.</p>")
            continue
        mosaic = gallery_mosaic(of_class)
        if mosaic is not None:
            from matplotlib.image import imsave

            writer.folder.mkdir(parents=True, exist_ok=True)
            imsave(writer.folder / f"gallery_{cell_class}.png", mosaic)
        items = []
        for crop in of_class:
            caption = (
                f"{crop.well} f{crop.field} t{crop.timepoint} #{crop.label} · "
                f"AnnV {crop.annexin:.3g} · PI {crop.pi:.3g}"
            )
            items.append(h.image(crop.png, f"{label} cell {caption}", caption=caption))
        parts.append(f'<div class="gallery-row">{"".join(items)}</div>')
    return "".join(parts)


# --- run metadata ---------------------------------------------------------------------------


def _run_section(settings: AssaySettings, run_info: Mapping[str, Any] | None, plate) -> str:
    from screenlib.settings_template import settings_to_toml

    info: dict[str, Any] = {"screenlib version": screenlib.__version__}
    if plate is not None:
        info["plate"] = str(getattr(plate, "path", ""))
        info["channels"] = ", ".join(map(str, getattr(plate, "channel_names", [])))
        info["pixel size (µm)"] = getattr(plate, "pixel_size_um", None)
    for key, value in (run_info or {}).items():
        if isinstance(value, Mapping | list | tuple):
            value = json.dumps(value, default=str)
        info[str(key)] = value
    return (
        h.key_value_table(info)
        + "<h3>Assay settings used</h3>"
        + f"<pre>{h.escape(settings_to_toml(settings))}</pre>"
    )


# ---------------------------------------------------------------------------------------------


def write_report(
    out_dir: str | Path,
    *,
    plate=None,
    cells: pd.DataFrame | None = None,
    fields: pd.DataFrame | None = None,
    wells: pd.DataFrame | None = None,
    plate_qc: pd.DataFrame | None = None,
    gates: Mapping[Any, Any] | None = None,
    fits: pd.DataFrame | None = None,
    settings: AssaySettings | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.html`` (one self-contained file) and ``figures/*.png|svg``.

    Parameters
    ----------
    out_dir
        Output folder (created if needed).
    plate
        The open plate (``screenlib.store.Plate``) for the cell gallery; None skips it.
    cells, fields, wells, plate_qc, fits
        The run's tables (``cells.parquet``, ``fields.csv``, ``wells.csv``, ``plate_qc.csv``,
        ``fits.csv``); any may be None, its section then says so.
    gates
        ``{timepoint: Gates}`` (or the parsed ``gates.json``).
    settings
        The assay settings used.
    run_info
        Anything worth recording: input paths, timing, scheduler, … (shown as a table).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or AssaySettings()
    writer = _FigureWriter(out_dir / "figures")
    if writer.folder.is_dir():  # figures of an earlier report of this folder would linger
        for stale in writer.folder.iterdir():
            if stale.suffix in (".png", ".svg") and stale.name.startswith(FIGURE_PREFIXES):
                stale.unlink()
    all_wells = list(wells["well"]) if wells is not None and "well" in wells else []
    geometry = getattr(plate, "geometry", None) if plate is not None else None
    if geometry is None:
        geometry = fig.plate_geometry(all_wells or ["A01"])
    plate_name = (
        getattr(plate, "name", None)
        or (run_info or {}).get("plate")
        or (
            str(wells["plate"].iloc[0])
            if wells is not None and "plate" in wells and len(wells)
            else "plate"
        )
    )
    sections = [
        ("summary", "Summary", _summary_section(plate_name, wells, fields, cells, plate_qc, fits)),
        ("plate-maps", "Plate maps", _plate_maps_section(wells, geometry, writer)),
        ("dose-response", "Dose-response", _dose_response_section(wells, fits, writer)),
        ("fits", "Fits", _fits_section(fits)),
        ("plate-qc", "Plate QC", _plate_qc_section(plate_qc, fields, wells)),
        ("gating", "Annexin V / PI gating", _gating_section(cells, wells, gates, settings, writer)),
        ("gallery", "Cell gallery", _gallery_section(plate, cells, settings, writer)),
        ("run", "Run", _run_section(settings, run_info, plate)),
    ]
    elapsed = time.perf_counter() - started
    subtitle = (
        f"screenlib {screenlib.__version__} · {time.strftime('%Y-%m-%d %H:%M')} · "
        f"report built in {elapsed:.1f} s"
    )
    document = h.page(f"Apoptosis screen report — {plate_name}", subtitle, sections)
    path = out_dir / "report.html"
    return atomic_write_text(path, document)  # a reader never sees half a report


__all__ = ["write_report", "SECTION_IDS"]
