"""Assemble ``report.html`` and ``figures/`` from a run's tables (and the plate, for crops).

Data are prepared in Python (``_sections*.py``), markup lives in ``templates/*.html.j2`` and the
styles in ``templates/report.css``. Jinja2 escapes every value (autoescape), so names from a
plate map or a vendor export are shown as text, never run as markup.
"""

from __future__ import annotations

import logging
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
from screenlib.report._cells import report_objects
from screenlib.report._figure_cache import FigureWriter
from screenlib.report.gallery import gallery_columns
from screenlib.settings import AssaySettings

log = logging.getLogger(__name__)

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


class _TemplateCodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja2's cache of compiled templates (a private folder in the temporary directory,
    one file per template, checked against the template's source on every load): a new
    process skips compiling the report's templates (about 0.08 s). A cache that cannot be
    written only costs that time."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as error:
            log.debug("compiled templates not cached: %s", error)


def _template_code_cache() -> jinja2.BytecodeCache | None:
    try:
        return _TemplateCodeCache()
    except (OSError, RuntimeError) as error:  # no private temporary folder to be had
        log.debug("compiled templates not cached: %s", error)
        return None


@cache
def template_environment() -> jinja2.Environment:
    """The report's Jinja2 environment: package templates, autoescape on, strict undefined."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("screenlib.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
        bytecode_cache=_template_code_cache(),
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
    previous_figures: str | Path | None = None,
    figure_processes: int | None = None,
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
    previous_figures
        The ``figures/`` folder of the report this one replaces (default: ``out_dir/figures``).
        Figures whose input data are unchanged are copied from it instead of drawn again
        (see :mod:`screenlib.report._figure_cache`); the Run section says which.
    figure_processes
        Processes that draw the figures (default: up to 2, one per core; 1: this process).
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
    folder = out_dir / "figures"
    writer = FigureWriter(
        folder, Path(previous_figures) if previous_figures else folder, figure_processes
    )
    geometry = getattr(plate, "geometry", None) if plate is not None else None
    if geometry is None:
        all_wells = list(wells["well"]) if wells is not None and "well" in wells else []
        geometry = fig.plate_geometry(all_wells or ["A01"])
    plate_name = _plate_name(plate, run_info, wells)
    counted, left_out, shown = (None, None, None)
    if cells is not None:
        counted, left_out, shown = report_objects(
            cells, fields, settings, gallery_columns(settings)
        )
    try:
        figure_parts = [
            ("plate-maps", "Plate maps", sections.plate_maps_section(wells, geometry, writer)),
            ("dose-response", "Dose-response",
             dose_sections.dose_response_section(wells, fits, writer)),
            ("gating", "Annexin V / PI gating",
             cell_sections.gating_section(counted, wells, gates, settings, writer)),
        ]  # fmt: skip
        writer.start()  # the figures are drawn while the rest is prepared
        page_sections = _page_sections(
            plate, cells, fields, wells, plate_qc, fits, settings, notes, platemap_summary,
            writer, (plate_name, geometry, counted, left_out, shown), dict(
                (sid, (heading, data)) for sid, heading, data in figure_parts),
        )  # fmt: skip
        added_sections = sections.extra_sections(experiment, extra, writer)
        writer.finish()
    finally:
        writer.close()
    log.info("report figures: %s", writer.summary())
    run_info = {**(run_info or {}), "report figures": writer.summary()}
    page_sections.append({"id": "run", "heading": "Run", "template": "sections/run.html.j2",
                          "data": sections.run_section(settings, run_info, plate)})  # fmt: skip
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


def _page_sections(
    plate, cells, fields, wells, plate_qc, fits, settings, notes, platemap_summary, writer,
    context, figure_parts,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every built-in section but Run, in page order (``figure_parts``: those already made)."""
    plate_name, geometry, counted, left_out, shown = context
    parts = [
        ("summary", "Summary", sections.summary_section(
            plate_name, wells, fields, left_out, None if counted is None else len(counted),
            plate_qc, fits, platemap_summary)),
        ("notes", "What the engine noticed", sections.notes_section(notes)),
        ("plate-maps", *figure_parts["plate-maps"]),
        ("dose-response", *figure_parts["dose-response"]),
        ("fits", "Fits", dose_sections.fits_section(fits)),
        ("gr", "Growth-rate (GR) metrics", dose_sections.gr_section(wells, fits, settings)),
        ("plate-qc", "Plate QC", cell_sections.plate_qc_section(plate_qc, fields, wells)),
        ("gating", *figure_parts["gating"]),
        ("gallery", "Cell gallery",
         cell_sections.gallery_section(plate, shown, settings, writer)),
    ]  # fmt: skip
    return [
        {"id": sid, "heading": heading, "data": data,
         "template": f"sections/{sid.replace('-', '_')}.html.j2"}
        for sid, heading, data in parts
    ]  # fmt: skip


__all__ = ["SECTION_IDS", "template_environment", "write_report"]
