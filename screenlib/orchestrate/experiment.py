"""Experiments bigger than one plate: each plate run on its own, then pooled.

Gating and plate QC stay per plate (each plate's own vehicle wells): every plate gets a
complete output set under ``OUT/plates/<plate>/``. The experiment then writes, in ``OUT``:
``wells.csv`` (every plate, with a ``plate`` column), ``fits.csv`` (one row per plate and
curve, and the pooled fit over plates with plate ``pooled``), ``experiment.csv`` (the
between-plate spread of pIC50 beside the pooled IC50) and ``report.html`` (the summary, with
links to each plate's report).

Plates are given as several paths with one plate map each, several paths sharing one plate
map (replicate plates of the same layout), one plate map with a ``plate`` column, or an
experiment file (CSV with columns ``plate`` and ``platemap``, paths relative to the file).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from screenlib import __version__
from screenlib.doseresponse.columns import split_fit_columns
from screenlib.doseresponse.replicates import replicate_fits, replicate_spread
from screenlib.errors import InputError
from screenlib.orchestrate._manifest import MANIFEST_NAME, write_json_atomic
from screenlib.orchestrate.execute import open_executor
from screenlib.orchestrate.outputs import OutputSet
from screenlib.orchestrate.run import RunSummary, claim_out_dir, run_plate
from screenlib.settings import AssaySettings

logger = logging.getLogger(__name__)

__all__ = ["ExperimentPlate", "ExperimentSummary", "read_experiment_file", "run_experiment"]


@dataclass(frozen=True)
class ExperimentPlate:
    """One plate of an experiment: its images, its plate map and its name in the outputs."""

    name: str
    plate: Path
    platemap: Path | pd.DataFrame


@dataclass
class ExperimentSummary:
    """What an experiment run did."""

    out_dir: Path
    plates: list[RunSummary]
    n_curves: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def n_fields_failed(self) -> int:
        """Failed fields over all plates."""
        return sum(p.n_fields_failed for p in self.plates)

    def line(self) -> str:
        """The one-line summary printed at the end of ``screenlib run``."""
        cells = sum(p.n_cells for p in self.plates)
        fields = sum(p.n_fields for p in self.plates)
        return (
            f"experiment of {len(self.plates)} plates: {fields} fields, {cells:,} cells, "
            f"{self.n_curves} pooled curves, {self.seconds:.1f} s"
        )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plate"


def read_experiment_file(path: str | Path) -> list[ExperimentPlate]:
    """Plates of an experiment file: a CSV with ``plate`` and ``platemap`` (and optionally
    ``name``) columns; relative paths are relative to the file.

    Raises
    ------
    InputError
        Naming the file and line of a missing column or path.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read experiment file {path}: {error}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    for column in ("plate", "platemap"):
        if column not in table:
            raise InputError(
                f"{path}: line 1: missing column '{column}'; an experiment file lists one "
                "plate per line with columns plate, platemap (and optionally name)"
            )
    plates = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        plate = (path.parent / row["plate"].strip()).resolve()
        platemap = (path.parent / row["platemap"].strip()).resolve()
        for what, target in (("plate", plate), ("platemap", platemap)):
            if not target.exists():
                raise InputError(f"{path}: line {line}: {what} {target} does not exist")
        name = row.get("name", "").strip() or plate.stem
        plates.append(ExperimentPlate(name, plate, platemap))
    if not plates:
        raise InputError(f"{path} lists no plate")
    return plates


def experiment_plates(
    plates: list[str | Path], platemaps: list[str | Path | pd.DataFrame]
) -> list[ExperimentPlate]:
    """Pair plates with plate maps: one map each, one map for all, or one map whose ``plate``
    column names each plate (by its folder name, without ``.zarr``)."""
    from screenlib.platemap import read_platemap

    paths = [Path(p) for p in plates]
    names = _unique_names([p.stem if p.suffix == ".zarr" else p.name for p in paths])
    if len(platemaps) == len(paths):
        return [ExperimentPlate(n, p, m) for n, p, m in zip(names, paths, platemaps, strict=True)]
    if len(platemaps) != 1:
        raise InputError(
            f"{len(paths)} plates but {len(platemaps)} plate maps: give one plate map per "
            "plate, one for all, or one with a 'plate' column"
        )
    table = platemaps[0]
    table = table if isinstance(table, pd.DataFrame) else read_platemap(table)
    if "plate" not in table or table["plate"].astype("string").fillna("").str.strip().eq("").all():
        return [ExperimentPlate(n, p, table) for n, p in zip(names, paths, strict=True)]
    by_plate = {str(k): part.drop(columns=["plate"]) for k, part in table.groupby("plate")}
    missing = [n for n in names if n not in by_plate]
    if missing:
        raise InputError(
            f"the plate map's 'plate' column names {sorted(by_plate)}, but the plates are "
            f"{names}; name each plate as its folder is named (missing: {missing})"
        )
    return [ExperimentPlate(n, p, by_plate[n]) for n, p in zip(names, paths, strict=True)]


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def run_experiment(
    plates: list[ExperimentPlate],
    out_dir: str | Path,
    settings: AssaySettings | None = None,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    report: bool = True,
) -> ExperimentSummary:
    """Run every plate (per-plate gating and QC), then pool the curves over plates.

    Returns
    -------
    ExperimentSummary
    """
    started = time.perf_counter()
    settings = settings or AssaySettings()
    out_dir = Path(out_dir).resolve()
    claim_out_dir(out_dir, [Path(plate.plate).resolve() for plate in plates], parts=False)
    write_json_atomic(
        out_dir / MANIFEST_NAME,
        {"screenlib": __version__, "experiment": [p.name for p in plates], "status": "running"},
    )
    summaries = []
    with open_executor(scheduler, n_workers) as executor:
        for plate in plates:
            logger.info("plate %s: %s", plate.name, plate.plate)
            summaries.append(
                run_plate(
                    plate.plate,
                    plate.platemap,
                    out_dir / "plates" / _safe_name(plate.name),
                    settings,
                    force=force,
                    progress=progress,
                    report=report,
                    executor=executor,
                )
            )
    notes = [
        f"plate {p.name}: {n}" for p, s in zip(plates, summaries, strict=True) for n in s.notes
    ]
    spread, written = _write_pooled(out_dir, plates, summaries, settings, notes, report)
    summary = ExperimentSummary(
        out_dir=out_dir,
        plates=summaries,
        n_curves=len(spread),
        seconds=time.perf_counter() - started,
        notes=notes,
        outputs=written,
    )
    write_json_atomic(
        out_dir / MANIFEST_NAME,
        {
            "screenlib": __version__,
            "experiment": [p.name for p in plates],
            "status": "finished",
            "notes": notes,
            "seconds": round(summary.seconds, 2),
        },
    )
    return summary


def _write_pooled(
    out_dir: Path,
    plates: list[ExperimentPlate],
    summaries: list[RunSummary],
    settings: AssaySettings,
    notes: list[str],
    report: bool,
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The experiment's own outputs, as one set: every plate's wells, the curves pooled over
    plates, their spread (``experiment.csv``) and the summary page."""
    wells = []
    for plate, summary in zip(plates, summaries, strict=True):
        table = pd.read_csv(summary.out_dir / "wells.csv", keep_default_na=False, na_values=[""])
        table["plate"] = plate.name
        wells.append(table)
    all_wells = pd.concat(wells, ignore_index=True)
    fits = replicate_fits(all_wells, settings, by="plate")
    spread = replicate_spread(fits, by="plate")
    with OutputSet(out_dir) as outputs:
        outputs.csv("wells.csv", all_wells)
        core, full = split_fit_columns(fits)
        if "plate" not in core:
            core.insert(0, "plate", fits["plate"])
        outputs.csv("fits.csv", core)
        outputs.parquet("fits_full.parquet", full)
        outputs.csv("experiment.csv", spread)
        if report:
            outputs.text("report.html", experiment_report(plates, summaries, spread, notes))
        written = outputs.commit({"experiment": [p.name for p in plates], "notes": notes})
    return spread, written


def experiment_report(
    plates: list[ExperimentPlate],
    summaries: list[RunSummary],
    spread: pd.DataFrame,
    notes: list[str],
) -> str:
    """A one-page HTML summary of the experiment, linking each plate's own report."""
    from screenlib.report._experiment import experiment_report_html

    rows = [
        {"name": plate.name, "link": f"plates/{_safe_name(plate.name)}/report.html",
         "n_fields": summary.n_fields, "n_fields_failed": summary.n_fields_failed,
         "n_cells": summary.n_cells}
        for plate, summary in zip(plates, summaries, strict=True)
    ]  # fmt: skip
    return experiment_report_html(rows, spread, notes)
