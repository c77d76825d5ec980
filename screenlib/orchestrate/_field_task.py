"""The compute phase: what one Dask task does for one field (runs on a worker).

Each task reads its field from the Zarr plate, runs the pure per-field analysis, writes its
label image (only its own chunk), its per-cell table as a Parquet part and, last, its completion
marker. A failure of the image data (unreadable chunk, analysis error) is caught and recorded in
the marker and the returned record, so one bad field never stops a plate.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from screenlib.orchestrate._cluster import tune_worker_malloc
from screenlib.orchestrate._manifest import (
    MARKER_VERSION,
    field_stem,
    write_atomic,
    write_json_atomic,
)
from screenlib.platemap import split_well
from screenlib.settings import AssaySettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldJob:
    """Everything a worker needs to analyse one field (small; pickled into the task)."""

    plate_path: str
    plate_name: str
    well: str
    field: int
    timepoint: int
    channel_indices: tuple[int, ...]
    stains: tuple[str, ...]
    pixel_size_um: float | None
    settings: AssaySettings
    flatfield_path: str | None
    parts_dir: str
    analysis_hash: str
    run_token: str
    fingerprint: str = ""  # of the stored pixels this field's result is computed from
    labels_path: str = ""  # the plate the label image goes to (default: plate_path)
    nucleus_diameter_px: float | None = None  # the plate's measured nucleus scale

    @property
    def stem(self) -> str:
        return field_stem(self.well, self.field, self.timepoint)

    @property
    def plate_key(self) -> str:
        """Unique over the plates of a run (task names)."""
        return f"{self.plate_name}-{self.stem}"


@functools.lru_cache(maxsize=4)
def _open_plate(path: str, run_token: str, mode: str = "r"):  # noqa: ARG001 - token: one run
    from screenlib.store import open_plate

    return open_plate(path, mode=mode)


@functools.lru_cache(maxsize=8)
def _stains(names: tuple[str, ...]) -> list:
    """The worker's stain objects for the job's names (entry points read once per process)."""
    from screenlib.plugins import get_stains

    return get_stains(names)


def _segmenter(settings: AssaySettings):
    from screenlib.plugins import resolve_segmenter

    return resolve_segmenter(settings.segmentation)


@functools.lru_cache(maxsize=2)
def _load_flatfield(path: str, run_token: str) -> np.ndarray:  # noqa: ARG001
    return np.load(path)


def add_identifiers(cells: pd.DataFrame, job: FieldJob) -> pd.DataFrame:
    """Prefix a field's cell table with plate/well/field identifiers and a unique ``cell_id``."""
    row, column = split_well(job.well)
    labels = cells["label"].to_numpy() if "label" in cells else np.arange(1, len(cells) + 1)
    identifiers = pd.DataFrame(
        {
            "plate": pd.Series([job.plate_name] * len(cells), dtype=object),
            "well": pd.Series([job.well] * len(cells), dtype=object),
            "row": pd.Series([row] * len(cells), dtype=object),
            "column": np.full(len(cells), column, dtype=np.int64),
            "field": np.full(len(cells), job.field, dtype=np.int64),
            "timepoint": np.full(len(cells), job.timepoint, dtype=np.int64),
            "cell_id": pd.Series([f"{job.stem}_{int(label)}" for label in labels], dtype=object),
        }
    )
    rest = cells.drop(columns=[c for c in identifiers.columns if c in cells.columns])
    return pd.concat([identifiers, rest.reset_index(drop=True)], axis=1)


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _select_channels(channels: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """The configured channels in order; the array itself (no copy) when that is all of it."""
    if indices == tuple(range(channels.shape[0])):
        return channels
    return channels[list(indices)]


def analyze_one_field(job: FieldJob, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Analyse one field and persist its outputs; return its record for ``fields.csv``.

    The record has ``well``, ``field``, ``timepoint``, ``status`` (``"done"`` or ``"failed"``),
    ``n_cells``, ``error``, ``analysis_seconds`` and the analysis QC dict's keys. When
    ``timings`` is given, the wall-clock seconds of each step are stored in it (``read``,
    ``flatfield``, ``kernel``, ``identifiers``, ``labels``, ``table``, ``marker``; for
    benchmarks/bench_dask.py).
    """
    started = time.perf_counter()
    clock = _StepClock(timings)
    record: dict[str, Any] = {
        "well": job.well,
        "field": job.field,
        "timepoint": job.timepoint,
        "status": "done",
        "error": "",
    }
    plate = _open_plate(job.plate_path, job.run_token)  # a plate that cannot open stops the run
    try:
        labels, cells, qc = _compute_field(job, plate, clock)
    except Exception as error:  # noqa: BLE001 - a data fault is recorded, the plate goes on
        # the user sees what failed; where in the code is for --verbose and bug reports
        where = traceback.extract_tb(error.__traceback__)[-1]
        logger.debug("%s failed at %s:%s", job.stem, Path(where.filename).name, where.lineno)
        record.update(
            status="failed",
            error=f"{type(error).__name__}: {error}",
            n_cells=0,
            qc_pass=False,
            qc_reason=f"analysis failed: {type(error).__name__}: {error}",
        )
        record["analysis_seconds"] = round(time.perf_counter() - started, 3)
        write_json_atomic(Path(job.parts_dir) / f"{job.stem}.json", {**record, **_marker(job)})
        return record
    record.update(qc)
    record["n_cells"] = len(cells)
    _persist_field(job, labels, cells, record, started, clock)
    return record


def _compute_field(
    job: FieldJob, plate: Any, clock: _StepClock
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Read, correct, segment and measure one field: its labels, cell table and QC dict."""
    from screenlib.analysis import analyze_field
    from screenlib.analysis.qc import channel_problems

    channels = plate.read_field(job.well, job.field, timepoint=job.timepoint)
    channels = _select_channels(channels, job.channel_indices)
    problems = channel_problems(channels, job.stains)
    clock.lap("read")
    flatfield = None
    if job.flatfield_path is not None:
        flatfield = _load_flatfield(job.flatfield_path, job.run_token)
    clock.lap("flatfield")
    result = analyze_field(
        channels,
        stains=_stains(job.stains),
        segmenter=_segmenter(job.settings),
        pixel_size_um=job.pixel_size_um,
        settings=job.settings,
        flatfield=flatfield,
        nucleus_diameter_px=job.nucleus_diameter_px,
    )
    del channels  # the raw field is not needed any more: free it before the writes
    clock.lap("kernel")
    labels = np.asarray(result.labels, dtype=np.int32)
    cells = add_identifiers(result.cells, job)
    qc = {key: _json_safe(value) for key, value in dict(result.qc).items()}
    if problems:  # a blank or NaN marker channel would read as "no positive cells"
        reasons = [r for r in (qc.get("qc_reason", ""), *problems) if r]
        qc.update(qc_pass=False, qc_reason="; ".join(reasons))
    clock.lap("identifiers")
    return labels, cells, qc


def _persist_field(
    job: FieldJob,
    labels: np.ndarray,
    cells: pd.DataFrame,
    record: dict[str, Any],
    started: float,
    clock: _StepClock,
) -> None:
    """Labels first, then the table, then the marker: the marker is the proof of both."""
    labels_plate = _open_plate(job.labels_path or job.plate_path, job.run_token, "r+")
    labels_plate.write_labels(job.well, job.field, labels, timepoint=job.timepoint)
    del labels
    clock.lap("labels")
    parts_dir = Path(job.parts_dir)
    table = pa.Table.from_pandas(cells, preserve_index=False)
    part = write_atomic(parts_dir / f"{job.stem}.parquet", lambda tmp: pq.write_table(table, tmp))
    clock.lap("table")
    record["analysis_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(
        parts_dir / f"{job.stem}.json",
        {**record, **_marker(job), "part_bytes": part.stat().st_size},
    )
    clock.lap("marker")


def _marker(job: FieldJob) -> dict[str, Any]:
    """What a field's marker records besides its ``fields.csv`` row: what it was computed from."""
    return {
        "analysis_hash": job.analysis_hash,
        "marker_version": MARKER_VERSION,
        "fingerprint": job.fingerprint,
    }


class _StepClock:
    """Adds the seconds since the previous lap to ``timings[step]`` (nothing when None)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[step] = self.timings.get(step, 0.0) + now - self.last
        self.last = now


def analyze_fields(jobs: list[FieldJob]) -> list[dict[str, Any]]:
    """The Dask task: analyse one or more fields (one per field by default, or one task per
    well); one record per field."""
    tune_worker_malloc()
    return [analyze_one_field(job) for job in jobs]
