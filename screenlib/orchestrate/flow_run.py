"""``run_plate`` for flow-cytometry plates: FCS events become the same cells table, then the
same finalize and outputs as an image plate.

A plate-based cytometer writes one FCS file per well (or one file with a data set per well).
There are no fields to analyse: the events are read, compensated and scatter-gated
(:mod:`screenlib.flow`), each well becomes one pseudo-field, and gating, wells, plate QC, fits
and the report run unchanged.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from screenlib import __version__
from screenlib.errors import InputError
from screenlib.orchestrate._manifest import MANIFEST_NAME, write_json_atomic
from screenlib.orchestrate.finalize import finalize
from screenlib.orchestrate.plan import PlatePlan, RunPlan, check_gates_can_be_learned
from screenlib.settings import AssaySettings, validate_settings

logger = logging.getLogger(__name__)

__all__ = ["INPUT_KIND", "run_flow_plate"]

INPUT_KIND = "flow cytometry (FCS files)"


def run_flow_plate(
    source: Path,
    platemap: pd.DataFrame,
    platemap_source: str,
    out_dir: Path,
    settings: AssaySettings,
    *,
    previous: dict[str, Any] | None,
    report: bool = True,
    excel: bool = False,
):
    """Read, gate and report an FCS plate into ``out_dir`` (claimed and locked by the caller).

    Returns
    -------
    screenlib.orchestrate.RunSummary
    """
    from screenlib.flow import flow_tables, read_flow_plate
    from screenlib.orchestrate.run import RunSummary, write_results

    started = time.perf_counter()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    validate_settings(settings)
    plate = read_flow_plate(source, settings=settings)
    check_gates_can_be_learned(platemap, list(plate.wells), settings, platemap_source)
    cells, fields = flow_tables(plate, platemap, settings)
    notes = list(dict.fromkeys([*plate.warnings, *cells.attrs.get("flow_warnings", [])]))
    plan = RunPlan(
        plates=[_plate_plan(plate, source, platemap, platemap_source, out_dir)],
        settings=settings,
        out_dir=out_dir,
        notes=notes,
    )
    for note in notes:
        logger.warning("%s", note)
    if not len(cells):
        raise InputError(f"{source}: no event in any well; check the FCS files")
    results = finalize(cells, fields, platemap, settings)
    plan.notes.extend(results.notes)
    summary = RunSummary(
        plate=str(plate.name), out_dir=out_dir, n_fields=len(fields), unit="wells (FCS)"
    )
    summary.n_fields_computed = len(fields)
    summary.n_fields_failed = int((fields["status"] != "done").sum())
    summary.n_cells = results.n_cells_analysed
    summary.n_curves = None if results.fits is None else len(results.fits)
    summary.notes = list(plan.notes)
    run_info = {
        "started": started_at,
        "input": INPUT_KIND,
        "plate": str(source),
        "n_wells": len(plate.wells),
        "n_events": int(sum(len(e) for e in plate.events.values())),
        "scatter_gate": cells.attrs.get("scatter_gate"),
        "n_cells": summary.n_cells,
    }
    scatter = _scatter_figure(cells, platemap) if report else None
    summary.outputs = write_results(
        results, plan, None, run_info, report=report, excel=excel,
        extra_sections={"input": INPUT_KIND, "scatter_gate_(debris_and_doublets)": scatter},
    )  # fmt: skip
    summary.seconds = time.perf_counter() - started
    write_json_atomic(
        out_dir / MANIFEST_NAME,
        {
            **(previous or {}),
            "screenlib": __version__,
            "source": str(source),
            "input": INPUT_KIND,
            "status": "finished",
            "n_cells": summary.n_cells,
            "notes": plan.notes,
            "seconds": round(summary.seconds, 2),
        },
    )
    return summary


def _scatter_figure(cells: pd.DataFrame, platemap: pd.DataFrame):
    """FSC-A/SSC-A and FSC-A/FSC-H of the vehicle wells with the learned limits."""
    from screenlib.flow.figures import scatter_gate_figure

    gate = cells.attrs.get("scatter_gate")
    if not gate:
        return None
    vehicle = list(platemap.loc[platemap["role"] == "negative_control", "well"])
    return scatter_gate_figure(cells, gate, vehicle_wells=vehicle or None)


def _plate_plan(plate, source, platemap, platemap_source, out_dir) -> PlatePlan:
    return PlatePlan(
        name=str(plate.name),
        source=source,
        plate_path=source,
        ingested=False,
        platemap=platemap,
        platemap_source=platemap_source,
        channel_names=list(plate.channels),
        channels=[],
        pixel_size_um=None,
        pixel_size_source="flow cytometry: no images",
        field_ids=[(well, 0) for well in plate.wells],
        n_timepoints=1,
        out_dir=out_dir,
    )
