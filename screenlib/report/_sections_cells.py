"""Plate QC, gating and gallery sections: the sections that look at fields and cells."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from screenlib.errors import ScreenlibError
from screenlib.report import figures as fig
from screenlib.report._cells import feature_label
from screenlib.report._sections import (
    READOUT_LABELS,
    FigureWriter,
    at_timepoint,
    describe_well,
    flag_set,
    gates_at,
    timepoints_of,
    value_of,
    well_qc_statuses,
)
from screenlib.report._view import finite, image, table_view, text
from screenlib.report.gallery import (
    GALLERY_CLASSES,
    GALLERY_ROWS,
    CellCrop,
    crops_from_mosaics,
    draw_crops,
    gallery_mosaic,
    gallery_source_key,
    plan_gallery,
    png_bytes,
)

log = logging.getLogger(__name__)

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
_WELL_COLUMNS = ("well", "timepoint", "sample", "compound", "concentration_molar", "role",
                 "n_cells", "relative_cell_count", "n_fields_used", "qc_flags")  # fmt: skip
_WELL_HEADERS = {"concentration_molar": "concentration", "n_cells": "cells",
                 "relative_cell_count": "cells vs vehicle", "n_fields_used": "fields used",
                 "qc_flags": "flags"}  # fmt: skip


def _per_readout_rows(plate_qc: pd.DataFrame) -> list[dict[str, Any]]:
    readouts = [c[len("z_prime_") :] for c in plate_qc.columns if c.startswith("z_prime_")]
    rows = []
    for record in plate_qc.to_dict("records"):
        for readout in readouts:

            def mean_sd(role: str, readout: str = readout, record=record) -> str:
                mean = finite(record.get(f"{readout}_{role}_mean"))
                sd = finite(record.get(f"{readout}_{role}_sd"))
                return "" if mean is None else f"{mean:.3g} ± {sd or 0:.2g}"

            def edge(group: str, readout: str = readout, record=record) -> str:
                p_value = finite(record.get(f"edge_{group}_{readout}_p_value"))
                if p_value is None:
                    return "not testable"
                flag = str(record.get(f"edge_{group}_{readout}_flag")).lower() in ("true", "1")
                return f"{'FLAGGED' if flag else 'ok'} (p = {p_value:.2g})"

            rows.append({
                "timepoint": record.get("timepoint"),
                "read-out": READOUT_LABELS.get(readout, readout),
                "vehicle (mean ± SD)": mean_sd("negative"),
                "positive control (mean ± SD)": mean_sd("positive"),
                "Z′": finite(record.get(f"z_prime_{readout}")),
                "robust Z′": finite(record.get(f"robust_z_prime_{readout}")),
                "SSMD": finite(record.get(f"ssmd_{readout}")),
                "edge effect, vehicle wells": edge("vehicle"),
                "edge effect, sample wells": edge("sample"),
            })  # fmt: skip
    return rows


def _well_tables(wells: pd.DataFrame | None) -> dict[str, Any]:
    """Wells that failed or need a look, and those whose few cells are the expected biology."""
    if wells is None or "qc_flags" not in wells.columns:
        return {"failed": None, "expected": None, "n_failed": 0, "n_expected": 0}
    status = pd.Series(well_qc_statuses(wells), index=wells.index)
    wells = wells[[c for c in _WELL_COLUMNS if c in wells.columns]]  # not all hundred copied
    has_flags = wells["qc_flags"].map(lambda v: bool(flag_set(v)))
    flagged = wells[status.isin(["failed", "caveat"]) | (status.isna() & has_flags)]
    expected = wells[status == "expected"]
    formatters = {"concentration_molar": lambda v: fig.format_molar(finite(v) or 0.0)}

    def view(frame: pd.DataFrame):
        if frame.empty:
            return None
        return table_view(frame, columns=_WELL_COLUMNS, formatters=formatters,
                          headers=_WELL_HEADERS)  # fmt: skip

    return {"failed": view(flagged), "expected": view(expected),
            "n_failed": len(flagged), "n_expected": len(expected)}  # fmt: skip


def plate_qc_section(plate_qc, fields, wells) -> dict[str, Any]:
    section: dict[str, Any] = {"note": "", "headline": None, "per_readout": None, "all": None}
    if plate_qc is None or plate_qc.empty:
        section["note"] = "No plate QC table was given."
    else:
        headline = [(c, label) for c, label in _QC_HEADLINE if c in plate_qc.columns]
        if headline:
            section["headline"] = table_view(plate_qc[[c for c, _ in headline]],
                                             headers=dict(headline))  # fmt: skip
        rows = _per_readout_rows(plate_qc)
        section["per_readout"] = table_view(pd.DataFrame(rows)) if rows else None
        transposed = plate_qc.T.reset_index()
        transposed.columns = ["statistic", *[str(i) for i in range(len(plate_qc))]]
        section["all"] = table_view(transposed)
    section["fields"] = None
    if fields is not None and len(fields) and "qc_pass" in fields.columns:
        failed = fields[~fields["qc_pass"].astype(bool)]
        columns = ("well", "field", "timepoint", "qc_reason", "n_cells", "focus_score",
                   "saturated_fraction")  # fmt: skip
        section["fields"] = {
            "n_failed": len(failed),
            "n": len(fields),
            "table": table_view(failed, columns=columns, headers={
                "qc_reason": "why", "n_cells": "objects", "focus_score": "focus score",
                "saturated_fraction": "saturated share"})
            if len(failed) else None,
            "hot_pixels": _hot_pixels(fields),
        }  # fmt: skip
    section["wells"] = _well_tables(wells)
    return section


def _hot_pixels(fields: pd.DataFrame) -> dict[str, int] | None:
    """How many hot pixels the analysis replaced, and in how many fields (None: none)."""
    if "hot_pixels" not in fields.columns:
        return None
    counts = pd.to_numeric(fields["hot_pixels"], errors="coerce").fillna(0)
    if counts.sum() <= 0:
        return None
    return {"n": int(counts.sum()), "n_fields": int((counts > 0).sum())}


# --- gating -----------------------------------------------------------------------------------


def _pick_treated_well(wells: pd.DataFrame | None, timepoint: int) -> str | None:
    """The treated well whose apoptotic fraction is closest to one half (all quadrants shown)."""
    if wells is None or wells.empty or "apoptotic_fraction" not in wells.columns:
        return None
    at = at_timepoint(wells, timepoint)
    if "role" in at.columns:
        at = at[at["role"] == "sample"]
    if "n_cells" in at.columns:
        at = at[pd.to_numeric(at["n_cells"], errors="coerce") >= 50]
    fractions = pd.to_numeric(at["apoptotic_fraction"], errors="coerce")
    if fractions.notna().sum() == 0:
        return None
    return str(at.loc[(fractions - 0.5).abs().idxmin(), "well"])


def _populations(at: pd.DataFrame, wells, timepoint, features) -> list[dict[str, Any]]:
    annexin_feature, pi_feature, gate = features
    bleed = finite(value_of(gate, "bleedthrough_annexin_to_pi")) or 0.0

    def population(selection: pd.DataFrame, title: str) -> dict:
        annexin = selection[annexin_feature].to_numpy(dtype=float)
        if "pi_compensated" in selection.columns:  # what classify_cells gated on
            pi = selection["pi_compensated"].to_numpy(dtype=float)
        else:
            leaking = value_of(gate, "bleedthrough_feature") or annexin_feature
            leak = selection[leaking].to_numpy(dtype=float) if leaking in selection else annexin
            pi = selection[pi_feature].to_numpy(dtype=float) - bleed * np.nan_to_num(leak)
        classes = selection["cell_class"].to_numpy() if "cell_class" in selection else None
        return {"title": title, "annexin": annexin, "pi": pi, "classes": classes}

    roles = wells if wells is not None and "role" in wells.columns else None
    populations = []
    for role, name in (("negative_control", "Vehicle"), ("positive_control", "Positive control")):
        members = sorted(set(roles.loc[roles["role"] == role, "well"])) if roles is not None else []
        if members:
            populations.append(population(at[at["well"].isin(members)],
                                          f"{name} ({len(members)} wells)"))  # fmt: skip
    treated_well = _pick_treated_well(wells, timepoint)
    if treated_well is not None:
        populations.append(population(at[at["well"] == treated_well],
                                      describe_well(wells, treated_well)))  # fmt: skip
    return populations or [population(at, "All cells")]


def gating_section(cells, wells, gates, settings, writer: FigureWriter) -> dict[str, Any]:
    """Quadrant plots of the counted cells (QC-passing fields: those the gates came from)."""
    section: dict[str, Any] = {"note": "", "figure": None, "gates": None, "warnings": [],
                               "mixture": []}  # fmt: skip
    if cells is None or cells.empty:
        return section | {"note": "No per-cell table was given; no Annexin V / PI plots."}
    timepoint = timepoints_of(cells)[-1]
    gate = gates_at(gates, timepoint)
    annexin_feature = value_of(gate, "annexin_feature") or settings.gating.annexin_feature
    pi_feature = value_of(gate, "pi_feature") or settings.gating.pi_feature
    missing = [c for c in (annexin_feature, pi_feature, "well") if c not in cells.columns]
    if missing:
        return section | {"note": f"The per-cell table lacks {', '.join(missing)}; no plots."}
    # only the columns the plots read: each selection below would copy about a hundred
    leaking = value_of(gate, "bleedthrough_feature")
    used = (annexin_feature, pi_feature, "pi_compensated", leaking, "cell_class", "well",
            "timepoint")  # fmt: skip
    at = at_timepoint(cells[[c for c in dict.fromkeys(used) if c in cells.columns]], timepoint)
    if "cell_class" in at.columns:
        at = at[at["cell_class"].isin(GALLERY_CLASSES)]
    populations = _populations(at, wells, timepoint, (annexin_feature, pi_feature, gate))
    bleed = finite(value_of(gate, "bleedthrough_annexin_to_pi")) or 0.0
    compensated = bleed and pi_feature == "pi_nucleus_mean"
    pi_label = feature_label("pi_compensated" if compensated else pi_feature, two_lines=True)
    options = {
        "annexin_gate": finite(value_of(gate, "annexin_gate")),
        "pi_gate": finite(value_of(gate, "pi_gate")),
        "annexin_label": feature_label(annexin_feature, two_lines=True),
        "pi_label": pi_label,
    }
    png = writer.figure(
        "gating_annexin_pi",
        lambda: fig.quadrant_figure(populations, **options),
        {"populations": populations, **options},
    )
    shown = [(p["title"], int((np.isfinite(p["annexin"]) & np.isfinite(p["pi"])).sum()))
             for p in populations]  # fmt: skip
    parts = [f"{title}: n = {n:,} cells" for title, n in shown]
    learned = finite(value_of(gate, "n_control_cells"))
    if shown and shown[0][0].startswith("Vehicle") and learned and int(learned) != shown[0][1]:
        parts[0] += (f" (the gates were learned from {int(learned):,} of them: mitotic figures "
                     "and cells without every measurement are left out)")  # fmt: skip
    caption = "; ".join(parts)
    section["figure"] = image(png, "Annexin V versus PI with quadrant gates", caption=caption,
                              css_class="wide")  # fmt: skip
    if not gates:
        return section | {"note": "No gates were given; quadrant shares come from the classes."}
    rows = []
    for key, item in sorted(gates.items(), key=lambda kv: int(kv[0])):
        rows.append({
            "timepoint": int(key),
            "Annexin V feature": feature_label(text(value_of(item, "annexin_feature"))),
            "Annexin V gate": finite(value_of(item, "annexin_gate")),
            "PI feature": feature_label(text(value_of(item, "pi_feature"))),
            "PI gate": finite(value_of(item, "pi_gate")),
            "bleed-through Annexin→PI": finite(value_of(item, "bleedthrough_annexin_to_pi")),
            "method": value_of(item, "method"),
            "vehicle cells": value_of(item, "n_control_cells"),
        })  # fmt: skip
        details = value_of(item, "details") or {}
        if isinstance(details, Mapping):
            section["warnings"] += [str(w) for w in details.get("warnings", [])]
    section["gates"] = table_view(pd.DataFrame(rows))
    section["mixture"] = _mixture_summary(gates)
    return section


def _mixture_summary(gates) -> list[str]:
    lines = []
    for key, item in sorted(gates.items(), key=lambda kv: int(kv[0])):
        details = value_of(item, "details") or {}
        model = details.get("fraction_mixture") if isinstance(details, Mapping) else None
        if isinstance(model, Mapping) and "unavailable" in model:
            lines.append(f"timepoint {key}: mixture model not fitted ({model['unavailable']})")
    return lines


# --- gallery ----------------------------------------------------------------------------------


GALLERY_ROW_LABELS = {
    **{name: (fig.CLASS_LABELS[name], fig.CLASS_COLORS[name]) for name in GALLERY_CLASSES},
    "mitotic": ("mitotic", "#3182bd"),
    "debris": ("debris", "#969696"),
}
GALLERY_ROW_NOTES = {
    "mitotic": "Condensed chromatin with a replicated genome, Annexin V negative: alive and "
    "counted as a cell (in n_mitotic), but kept out of gate learning.",
    "debris": "Objects too small and with too little DNA for a nucleus (object_class debris): "
    "not counted as cells and in no fraction.",
}


def gallery_section(plate, cells, settings, writer: FigureWriter) -> dict[str, Any]:
    """Example crops of counted cells per class, and of mitotic and debris objects when the
    table has an ``object_class`` column (never from a field that failed QC)."""
    if plate is None:
        return {"note": "No plate was given, so no cell crops are shown.", "classes": []}
    if cells is None or cells.empty or "cell_class" not in cells.columns:
        return {"note": "No classified cells were given, so no cell crops are shown.",
                "classes": []}  # fmt: skip
    try:
        crops = _gallery_crops(plate, cells, settings, writer)
    except (ScreenlibError, KeyError, OSError, ValueError) as error:  # missing labels/field
        log.warning("cell gallery skipped: %s", error)
        return {"note": f"Cell crops could not be read from the plate: {error}", "classes": []}
    classes = []
    rows = GALLERY_ROWS if "object_class" in cells.columns else GALLERY_CLASSES
    for cell_class in rows:
        of_class = [c for c in crops if c.cell_class == cell_class]
        label, color = GALLERY_ROW_LABELS[cell_class]
        items = []
        for crop in of_class:
            caption = (f"{crop.well} f{crop.field} t{crop.timepoint} #{crop.label} · "
                       f"AnnV {crop.annexin:.3g} · PI {crop.pi:.3g}")  # fmt: skip
            noun = "object" if cell_class == "debris" else "cell"
            items.append(image(crop.png, f"{label} {noun} {caption}", caption=caption,
                               width=crop.size_px))  # fmt: skip
        none = (
            "No debris on this plate."
            if cell_class == "debris"
            else (f"No {label} cells on this plate.")
        )
        classes.append({"label": label, "color": color, "crops": items, "none": none,
                        "about": GALLERY_ROW_NOTES.get(cell_class, "")})  # fmt: skip
    return {"note": "", "classes": classes}


def _gallery_crops(plate, cells, settings, writer: FigureWriter) -> list[CellCrop]:
    """The gallery's crops, and its mosaics (``gallery_<row>.png``) written or reused.

    The mosaics' cache key is what their pixels are drawn from (:func:`gallery_source_key`:
    the chosen objects, the crop geometry, fingerprints of the fields' stored images and
    labels), known before any pixel is read. When every mosaic is reused (a gating change
    that shows the same objects), the crops are cut back out of them instead of read from
    the plate; the pixels are the same.
    """
    plan = plan_gallery(plate, cells, settings)
    source = gallery_source_key(plate, plan)
    present = [c for c in GALLERY_ROWS if (plan.examples["gallery_class"] == c).any()]
    drawn: list[CellCrop] = []

    def crops_of(cell_class: str) -> list[CellCrop]:
        if not drawn:
            drawn.extend(draw_crops(plate, plan))
        return [crop for crop in drawn if crop.cell_class == cell_class]

    if source is None:  # no fingerprints: read the crops, key the mosaics by their pixels
        for cell_class in present:
            of_class = crops_of(cell_class)
            writer.image(f"gallery_{cell_class}", _mosaic_writer(of_class),
                         [crop.png for crop in of_class])  # fmt: skip
        return drawn
    files = {
        cell_class: writer.image(
            f"gallery_{cell_class}",
            lambda path, cell_class=cell_class: _mosaic_writer(crops_of(cell_class))(path),
            {"source": source, "row": cell_class},
        )
        for cell_class in present
    }
    if drawn:
        return drawn
    mosaics = {}
    for cell_class in present:
        with Image.open(files[cell_class]) as mosaic:
            mosaics[cell_class] = np.asarray(mosaic.convert("RGB"))
    return crops_from_mosaics(plan, mosaics)


def _mosaic_writer(crops: list[CellCrop]):
    return lambda path: path.write_bytes(png_bytes(gallery_mosaic(crops)))
