"""The data of each report section, prepared for its template (no markup here).

Each ``*_section`` function returns a plain dict that ``templates/sections/<id>.html.j2``
lays out. Figures are drawn and saved here (``figures/``) and handed over as embedded images.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import pandas as pd

import screenlib
from screenlib.report import figures as fig
from screenlib.report._figure_cache import FigureWriter, slug
from screenlib.report._view import (
    finite,
    image,
    key_value_view,
    table_view,
    text,
)

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

# well QC flags by what they mean for the well's numbers (see aggregate.wells._flags)
NO_DATA_FLAGS = frozenset({"no_fields_used", "empty_well"})
# a vehicle well left out of the reference (a seeding failure) is a technical failure
FAILED_FLAGS = frozenset(
    {"too_few_cells", "no_cells", "not_in_platemap", "vehicle_reference_excluded"}
)
CAVEAT_FLAGS = frozenset({"fields_excluded", "no_vehicle_reference", "vehicle_of_other_samples"})
EXPECTED_FLAGS = frozenset({"expected_cell_loss"})


def value_of(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of a gate object or a gates.json entry."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def timepoints_of(table: pd.DataFrame | None) -> list[int]:
    if table is None or "timepoint" not in table.columns or table.empty:
        return [0]
    return sorted(int(t) for t in pd.unique(table["timepoint"]))


def at_timepoint(table: pd.DataFrame, timepoint: int) -> pd.DataFrame:
    if "timepoint" not in table.columns:
        return table
    return table[table["timepoint"] == timepoint]


def flag_set(value: Any) -> set[str]:
    return {part for part in re.split(r"[;,]\s*", text(value)) if part}


# --- summary and notes ------------------------------------------------------------------------


def summary_section(
    plate_name: str,
    wells: pd.DataFrame | None,
    fields: pd.DataFrame | None,
    left_out: Mapping[str, int] | None,
    n_counted: int | None,
    plate_qc: pd.DataFrame | None,
    fits: pd.DataFrame | None,
    platemap_summary: str | None,
) -> dict[str, Any]:
    cards = []
    if wells is not None:
        cards.append({"value": f"{wells['well'].nunique():,}", "label": "wells analysed",
                      "css": ""})  # fmt: skip
    if fields is not None and len(fields):
        failed = int((~fields["qc_pass"].astype(bool)).sum()) if "qc_pass" in fields else 0
        cards.append({"value": f"{len(fields):,}", "label": f"fields ({failed} failed QC)",
                      "css": "warn" if failed else ""})  # fmt: skip
    cell_note = ""
    if n_counted is not None:
        cards.append({"value": f"{n_counted:,}", "label": "cells counted", "css": ""})
        if left_out and left_out["objects"] > n_counted:
            cell_note = (
                f"{left_out['objects']:,} objects were segmented; {n_counted:,} are counted. "
                f"Left out: {left_out['failed_fields']:,} in fields that failed image QC and "
                f"{left_out['debris']:,} that are not whole cells (debris: see "
                "exclusion_reason in cells.parquet)."
            )
    z_prime = qc_metric(plate_qc, "z_prime")
    if z_prime is not None:
        verdict, css = z_prime_verdict(z_prime)
        cards.append({"value": f"{z_prime:.2f}", "label": f"Z′ ({verdict})", "css": css})
    if fits is not None and len(fits):
        cards.append({"value": f"{n_determined(fits)} / {len(fits)}",
                      "label": "curves with an IC50/EC50", "css": ""})  # fmt: skip
    return {"plate_name": plate_name, "cards": cards, "cell_note": cell_note,
            "platemap_summary": text(platemap_summary)}  # fmt: skip


def z_prime_verdict(z_prime: float) -> tuple[str, str]:
    if z_prime >= 0.5:
        return "excellent", "good"
    if z_prime > 0:
        return "screenable", "warn"
    return "controls overlap", "bad"


def qc_metric(plate_qc: pd.DataFrame | None, column: str) -> float | None:
    if plate_qc is None or plate_qc.empty or column not in plate_qc.columns:
        return None
    values = pd.to_numeric(plate_qc[column], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else None


def notes_section(notes: Any) -> dict[str, Any]:
    if notes is None:
        items: list[str] = []
    elif isinstance(notes, str):
        items = [notes]
    else:
        items = [str(note) for note in notes]
    return {"notes": items}


# --- plate maps -------------------------------------------------------------------------------


def geometry_key(geometry) -> dict[str, Any]:
    """What a plate figure's layout depends on, for its cache key."""
    return {"rows": list(geometry.row_names), "columns": list(geometry.column_names)}


def well_qc_status(row: Mapping[str, Any]) -> str | None:
    """``"pass"``, ``"expected"``, ``"caveat"``, ``"failed"``, or None (no data) for a well."""
    flags = flag_set(row.get("qc_flags"))
    used = finite(row.get("n_fields_used"))
    if flags & NO_DATA_FLAGS or used == 0:
        return None
    if flags & FAILED_FLAGS:
        return "failed"
    if flags & CAVEAT_FLAGS:
        return "caveat"
    if flags & EXPECTED_FLAGS:
        return "expected"
    return "pass"


def well_qc_statuses(wells: pd.DataFrame) -> list[str | None]:
    """:func:`well_qc_status` of every row (only the columns it reads become records: a wells
    table has about a hundred)."""
    needed = [c for c in ("qc_flags", "n_fields_used") if c in wells.columns]
    return [well_qc_status(r) for r in wells[needed].to_dict("records")]


def _well_markers(wells: pd.DataFrame) -> dict[str, str]:
    if "role" not in wells.columns:
        return {}
    return {str(w): ROLE_MARKERS[r] for w, r in zip(wells["well"], wells["role"], strict=True)
            if r in ROLE_MARKERS}  # fmt: skip


def plate_maps_section(
    wells: pd.DataFrame | None, geometry, writer: FigureWriter
) -> dict[str, Any]:
    if wells is None or wells.empty:
        return {"note": "No per-well table was given; plate maps are not drawn.", "blocks": []}
    timepoints = timepoints_of(wells)
    blocks = []
    for timepoint in timepoints:
        at = at_timepoint(wells, timepoint)
        if "n_fields_used" in at.columns:
            # a well whose fields all failed QC has no count to show, not zero cells
            at = at.assign(n_cells=at["n_cells"].where(pd.to_numeric(at["n_fields_used"]) > 0))
        several = len(timepoints) > 1
        suffix = f" · timepoint {timepoint}" if several else ""
        name_suffix = f"_t{timepoint}" if several else ""
        figures = _headline_maps(at, geometry, writer, suffix, name_suffix)
        status = dict(zip(at["well"].astype(str), well_qc_statuses(at), strict=True))
        status = {well: state for well, state in status.items() if state is not None}
        title = "Well QC" + suffix
        png = writer.figure(
            f"plate_qc_flags{name_suffix}",
            lambda status=status, title=title: fig.qc_heatmap(status, geometry, title=title),
            {"status": status, "plate": geometry_key(geometry), "title": title},
        )
        figures.append(image(png, title, css_class="plate"))
        figures += _class_maps(at, geometry, writer, suffix, name_suffix)
        blocks.append({"heading": f"Timepoint {timepoint}" if several else "", "figures": figures})
    return {"note": "", "blocks": blocks}


def _headline_maps(at, geometry, writer, suffix, name_suffix) -> list:
    markers = _well_markers(at)
    headline = (
        ("n_cells", "Cells per well", "cells", "viridis", "count", None),
        ("apoptotic_fraction", "Apoptotic fraction (early + late)", "share of cells",
         "magma", "percent", 1.0),
        ("apoptotic_fraction_mixture", "Apoptotic fraction, mixture model", "share of cells",
         "magma", "percent", 1.0),
    )  # fmt: skip
    figures = []
    for column, title, label, cmap, value_format, vmax in headline:
        values = fig.fractions_to_series(at, column)
        if not values:
            continue
        options = {"title": title + suffix, "colorbar_label": label, "cmap": cmap, "vmin": 0.0,
                   "vmax": vmax, "value_format": value_format, "markers": markers}  # fmt: skip
        png = writer.figure(
            f"plate_{column}{name_suffix}",
            lambda values=values, options=options: fig.plate_heatmap(values, geometry, **options),
            {"values": values, "plate": geometry_key(geometry), **options},
        )
        figures.append(image(png, title + suffix, css_class="plate"))
    return figures


def _class_maps(at, geometry, writer, suffix, name_suffix) -> list:
    markers = _well_markers(at)
    panels = []
    for column, title, cmap in CLASS_HEATMAPS:
        values = fig.fractions_to_series(at, column)
        if values:
            panels.append(
                {"values": values, "title": title, "colorbar_label": "share of cells",
                 "cmap": cmap, "vmin": 0.0, "vmax": max(0.05, max(values.values())),
                 "value_format": "percent", "markers": markers, "annotate": False}
            )  # fmt: skip
    if not panels:
        return []
    title = "Cell classes per well" + suffix
    png = writer.figure(
        f"plate_class_fractions{name_suffix}",
        lambda: fig.plate_heatmap_panels(panels, geometry, title=title),
        {"panels": panels, "plate": geometry_key(geometry), "title": title},
    )
    return [image(png, title, css_class="plate-grid")]


# --- run metadata -----------------------------------------------------------------------------


def run_section(settings, run_info: Mapping[str, Any] | None, plate) -> dict[str, Any]:
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
    return {"info": key_value_view(info), "settings_toml": settings_to_toml(settings)}


def extra_sections(
    experiment: Any, extra: Mapping[str, Any], writer: FigureWriter | None = None
) -> list[dict[str, Any]]:
    """Sections the caller added (``experiment=`` and any other keyword), shown generically:
    a table, a key-value table, a list, text, or a matplotlib figure (saved by ``writer``)."""
    items = []
    if experiment is not None:
        items.append(("experiment", "Experiment", experiment))
    items += [(slug(k).lower(), k.replace("_", " ").capitalize(), v) for k, v in extra.items()]
    sections = []
    for section_id, heading, content in items:
        if content is None:
            continue
        section = {
            "id": section_id, "heading": heading, "text": "", "table": None, "entries": [],
            "figure": None,
        }  # fmt: skip
        if _is_matplotlib_figure(content) and writer is not None:
            section["figure"] = image(writer.save(content, section_id), heading)
        elif isinstance(content, pd.DataFrame):
            section["table"] = table_view(content)
        elif isinstance(content, Mapping):
            section["table"] = key_value_view(dict(content))
        elif isinstance(content, list | tuple):
            section["entries"] = [text(item) for item in content]
        else:
            section["text"] = text(content)
        sections.append(section)
    return sections


def _is_matplotlib_figure(content: Any) -> bool:
    # a Figure exists only once matplotlib.figure is imported; importing it just to compare
    # would cost a report that has none about 0.7 s
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and isinstance(content, figure_module.Figure)


def n_determined(fits: pd.DataFrame) -> int:
    if "ic50_molar" not in fits.columns:
        return 0
    return int(pd.to_numeric(fits["ic50_molar"], errors="coerce").notna().sum())


def describe_well(wells: pd.DataFrame | None, well: str) -> str:
    if wells is None:
        return well
    rows = wells[wells["well"] == well]
    if rows.empty:
        return well
    row = rows.iloc[0]
    bits = [well] + [text(row[c]) for c in ("sample", "compound") if c in row and text(row[c])]
    if "concentration_molar" in row:
        bits.append(fig.format_molar(finite(row["concentration_molar"]) or 0.0))
    return " · ".join(bits)


def gates_at(gates: Mapping[Any, Any] | None, timepoint: int) -> Any:
    if not gates:
        return None
    return gates.get(timepoint, gates.get(str(timepoint)))


def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
