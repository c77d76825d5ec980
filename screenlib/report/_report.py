"""Assemble ``report.html`` and ``figures/`` from a run's tables (and the plate, for crops).

Data are prepared in Python (``_sections*.py``), markup lives in ``templates/*.html.j2`` and the
styles in ``templates/report.css``. Jinja2 escapes every value (autoescape), so names from a
plate map or a vendor export are shown as text, never run as markup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

import screenlib
from screenlib.io_utils import atomic_write_text
from screenlib.report import _sections as sections
from screenlib.report import _sections_cells as cell_sections
from screenlib.report import _sections_dose as dose_sections
from screenlib.report import figures as fig
from screenlib.report._cells import counted_cells
from screenlib.settings import AssaySettings

SECTION_IDS = (
    "summary",
    "notes",
    "plate-maps",
    "dose-response",
    "fits",
    "gr",
    "plate-qc",
    "gating",
    "gallery",
    "run",
)


@cache
def template_environment() -> jinja2.Environment:
    """The report's Jinja2 environment: package templates, autoescape on, strict undefined."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("screenlib.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def _plate_name(plate, run_info: Mapping[str, Any] | None, wells: pd.DataFrame | None) -> str:
    name = getattr(plate, "name", None) if plate is not None else None
    if name:
        return str(name)
    if (run_info or {}).get("plate"):
        return str(run_info["plate"])
    if wells is not None and "plate" in wells and len(wells):
        return str(wells["plate"].iloc[0])
    return "plate"


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
    notes: list[str] | None = None,
    platemap_summary: str | None = None,
    experiment: Any = None,
    **extra: Any,
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
        ``fits.csv``); any may be None, its section then says so. Cells of fields that
        failed QC (``fields.qc_pass`` False, or any ``exclusion_reason``) are left out of
        counts, plots and crops.
    gates
        ``{timepoint: Gates}`` (or the parsed ``gates.json``).
    settings
        The assay settings used.
    run_info
        Anything worth recording: input paths, timing, scheduler, … (shown as a table).
    notes
        Warnings the run raised, shown under "What the engine noticed".
    platemap_summary
        A short text describing the plate map (shown in the summary).
    experiment
        A multi-plate summary (DataFrame, mapping, list or text), shown in its own section.
    **extra
        Further sections by name, each a DataFrame, mapping, list, text or matplotlib Figure.

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or AssaySettings()
    writer = sections.FigureWriter(out_dir / "figures")
    writer.remove_stale()
    geometry = getattr(plate, "geometry", None) if plate is not None else None
    if geometry is None:
        all_wells = list(wells["well"]) if wells is not None and "well" in wells else []
        geometry = fig.plate_geometry(all_wells or ["A01"])
    plate_name = _plate_name(plate, run_info, wells)
    counted, left_out = (None, None)
    if cells is not None:
        counted, left_out = counted_cells(cells, fields, settings)
    parts = [
        ("summary", "Summary", sections.summary_section(
            plate_name, wells, fields, left_out, None if counted is None else len(counted),
            plate_qc, fits, platemap_summary)),
        ("notes", "What the engine noticed", sections.notes_section(notes)),
        ("plate-maps", "Plate maps", sections.plate_maps_section(wells, geometry, writer)),
        ("dose-response", "Dose-response",
         dose_sections.dose_response_section(wells, fits, writer)),
        ("fits", "Fits", dose_sections.fits_section(fits)),
        ("gr", "Growth-rate (GR) metrics", dose_sections.gr_section(wells, fits, settings)),
        ("plate-qc", "Plate QC", cell_sections.plate_qc_section(plate_qc, fields, wells)),
        ("gating", "Annexin V / PI gating",
         cell_sections.gating_section(counted, wells, gates, settings, writer)),
        ("gallery", "Cell gallery",
         cell_sections.gallery_section(plate, counted, settings, writer)),
        ("run", "Run", sections.run_section(settings, run_info, plate)),
    ]  # fmt: skip
    page_sections = [
        {"id": sid, "heading": heading, "data": data,
         "template": f"sections/{sid.replace('-', '_')}.html.j2"}
        for sid, heading, data in parts
    ]  # fmt: skip
    added_sections = sections.extra_sections(experiment, extra, writer)
    for position, added in enumerate(added_sections, start=1):
        template = "sections/extra.html.j2"
        page_sections.insert(
            position,
            {"id": added["id"], "heading": added["heading"], "data": added, "template": template},
        )
    elapsed = time.perf_counter() - started
    document = (
        template_environment()
        .get_template("report.html.j2")
        .render(
            title=f"Apoptosis screen report — {plate_name}",
            subtitle=f"screenlib {screenlib.__version__} · {time.strftime('%Y-%m-%d %H:%M')} · "
            f"report built in {elapsed:.1f} s",
            sections=page_sections,
        )
    )
    return atomic_write_text(out_dir / "report.html", document)  # never half a report


__all__ = ["SECTION_IDS", "template_environment", "write_report"]
