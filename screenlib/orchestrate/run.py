"""``run_plate``: plan -> execute -> finalize -> write, resuming what an earlier run finished.

The steps, each in its own module: :mod:`plan` checks settings and plate map and resolves every
name; :mod:`execute` maps the field task over an executor (synchronous or Dask);
:mod:`finalize` turns tables into gates, wells, QC and fits; :mod:`outputs` writes them as one
set. This module holds what ties them to an output folder: which folder is the engine's, the
plate ingested into it, the flat-field profile, and which finished fields still match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from screenlib import __version__
from screenlib.doseresponse.columns import split_fit_columns
from screenlib.errors import InputError
from screenlib.gating import gates_to_dict
from screenlib.io_utils import file_sha256
from screenlib.orchestrate._field_task import FieldJob
from screenlib.orchestrate._manifest import (
    MANIFEST_NAME,
    PARTS_DIRNAME,
    analysis_code_digest,
    analysis_hash,
    field_stem,
    finalize_hash,
    read_json,
    valid_marker,
    write_atomic,
    write_json_atomic,
)
from screenlib.orchestrate.execute import execute_fields, gather, open_executor
from screenlib.orchestrate.finalize import Results, finalize
from screenlib.orchestrate.outputs import OutputSet, neutralize_formulas
from screenlib.orchestrate.plan import PlatePlan, RunPlan, check_settings, plan_plate
from screenlib.settings import AssaySettings

logger = logging.getLogger(__name__)

FIELDS_LEADING_COLUMNS = (
    "well", "field", "timepoint", "status", "error", "n_cells", "qc_pass", "qc_reason",
)  # fmt: skip
INGESTED_PLATE = "plate.zarr"
LABELS_PLATE = "labels.zarr"
LOCK_NAME = ".screenlib.lock"
CELLS_CACHE = ".cells.parquet"  # in parts/: every finished part, concatenated
CELLS_CACHE_KEY = b"screenlib.parts_digest"


@dataclass
class RunSummary:
    """What a run did, for the console line and for scripts."""

    plate: str
    out_dir: Path
    n_fields: int
    unit: str = "fields"  # what n_fields counts: image fields, or the wells of an FCS plate
    n_fields_computed: int = 0
    n_fields_reused: int = 0
    n_fields_failed: int = 0
    n_fields_changed: int = 0
    n_cells: int = 0
    n_curves: int | None = None
    seconds: float = 0.0
    failed_fields: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dashboard: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary printed at the end of ``screenlib run``."""
        curves = "n/a" if self.n_curves is None else f"{self.n_curves}"
        minutes, seconds = divmod(self.seconds, 60)
        return (
            f"{self.plate}: {self.n_fields} {self.unit} ({self.n_fields_computed} analysed, "
            f"{self.n_fields_reused} reused, {self.n_fields_failed} failed), "
            f"{self.n_cells:,} cells, {curves} curves, {int(minutes)}m{seconds:04.1f}s"
        )


# --------------------------------------------------------------------------- output folder


def claim_out_dir(out_dir: Path, sources: list[Path], *, parts: bool = True) -> dict | None:
    """Create or reuse ``out_dir``; return the previous run's manifest (None: first run).

    A folder is the engine's when it is new, empty, or holds a screenlib ``run.json``; any
    other folder is refused, since a run rewrites and removes files of its own there.
    """
    for source in sources:
        if out_dir.is_relative_to(source):
            raise InputError(
                f"output folder {out_dir} lies inside the input {source}; choose an --out "
                "outside it (screenlib never writes into the raw data)"
            )
        if source.is_relative_to(out_dir):
            raise InputError(
                f"the input {source} lies inside the output folder {out_dir}; choose another --out"
            )
    previous = read_json(out_dir / MANIFEST_NAME)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out {out_dir} is a file; give a folder")
        others = sorted(p.name for p in out_dir.iterdir())
        if others and not (previous and "screenlib" in previous):
            raise InputError(
                f"output folder {out_dir} already holds files screenlib did not write "
                f"({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}); choose a new "
                "or empty folder (screenlib never deletes what it did not write)"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if parts:
            (out_dir / PARTS_DIRNAME).mkdir(exist_ok=True)
        if previous is None:  # the folder is the engine's from now on
            write_json_atomic(out_dir / MANIFEST_NAME, {"screenlib": __version__})
    except OSError as error:
        raise InputError(f"cannot create output folder {out_dir}: {error.strerror}") from error
    return previous


def export_fingerprint(source: Path) -> str:
    """Names, sizes and modification times of every file of an export (a changed, added or
    removed image changes it)."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            relative = os.path.relpath(os.path.join(folder, name), source)
            digest.update(f"{relative}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:20]


def _is_zarr_plate(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zattrs").is_file()


def open_or_ingest(
    source: Path, out_dir: Path, previous: dict[str, Any] | None, progress: bool
) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """Open a Zarr plate read-only, or ingest an export into ``out_dir/plate.zarr``.

    Returns the plate, the ingest record for ``run.json`` (None for a Zarr input) and notes.
    The ingested plate is reused while the export's files are unchanged; a changed export is
    ingested again into a staging folder and swapped in. A ``plate.zarr`` that this folder's
    runs did not make is never replaced.
    """
    from screenlib.store import open_plate

    if not source.exists():
        raise InputError(f"plate {source} does not exist: give a Zarr plate or an export folder")
    if _is_zarr_plate(source):
        return open_plate(source, mode="r"), None, []
    target = out_dir / INGESTED_PLATE
    record = (previous or {}).get("ingest") or {}
    fingerprint = export_fingerprint(source)
    ours = record.get("plate") == INGESTED_PLATE
    if target.exists() and not ours:
        raise InputError(
            f"{target} exists but was not made by a screenlib run into {out_dir}; move it "
            "away or choose another --out (screenlib never deletes what it did not write)"
        )
    notes = []
    if (
        target.exists()
        and record.get("source") == str(source)
        and (record.get("fingerprint") == fingerprint)
    ):
        return open_plate(target, mode="r+"), record, notes
    if target.exists():
        notes.append(
            f"the export {source} changed since {target.name} was made from it; ingested again "
            "(fields whose pixels are unchanged keep their results)"
        )
    for leftover in out_dir.glob(f".{INGESTED_PLATE}.*.partial"):  # a killed ingest of ours
        shutil.rmtree(leftover, ignore_errors=True)
    from screenlib.ingest import ingest_export

    staging = out_dir / f".{INGESTED_PLATE}.{uuid.uuid4().hex[:12]}.partial"
    logger.info("ingesting %s into %s", source, target)
    try:
        ingest_export(source, staging, progress=progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = out_dir / f".{INGESTED_PLATE}.{uuid.uuid4().hex[:12]}.partial"
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
    record = {"plate": INGESTED_PLATE, "source": str(source), "fingerprint": fingerprint}
    return open_plate(target, mode="r+"), record, notes


def labels_plate(plate, out_dir: Path, *, into_input: bool, fresh: bool):
    """The plate the nucleus labels are written to: the ingested plate (the engine's own),
    the input plate when asked (``--write-labels``), else ``out_dir/labels.zarr``."""
    from screenlib.store import PlateLayout, create_plate, open_plate

    if into_input or Path(plate.path).parent == out_dir:
        target = open_plate(plate.path, mode="r+") if plate.mode == "r" else plate
    else:
        path = out_dir / LABELS_PLATE
        if fresh or not path.exists():
            layout = PlateLayout(
                name=plate.name,
                wells=plate.wells,
                channel_names=["nuclei"],
                shape=(plate.shape[0], 1, 1, *plate.shape[3:]),
                dtype="int32",
                n_fields=max(len(plate.fields(w)) for w in plate.wells),
                pixel_size_um=plate.pixel_size_um,
                geometry=plate.geometry,
            )
            create_plate(path, layout, overwrite=path.exists())
            fresh = True
        target = open_plate(path, mode="r+")
    first = plate.wells[0]
    if fresh or "nuclei" not in target.label_names(first, plate.fields(first)[0]):
        target.create_labels("nuclei")
    return target


class PlateWithLabels:
    """A plate whose label images live in another (labels) plate: what the report reads."""

    def __init__(self, plate, labels) -> None:
        self._plate = plate
        self._labels = labels

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plate, name)

    def read_labels(self, *args, **kwargs) -> np.ndarray:
        """Label image of one field, from the labels plate."""
        return self._labels.read_labels(*args, **kwargs)

    def labels_fingerprint(self, *args, **kwargs) -> str:
        """Fingerprint of one field's label image, in the labels plate (where it is read)."""
        return self._labels.labels_fingerprint(*args, **kwargs)


# --------------------------------------------------------------------------- flat field


def _sample_fields(field_ids: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """``n`` fields spread evenly over the plate (deterministic, so reruns agree)."""
    if len(field_ids) <= n:
        return list(field_ids)
    picks = np.linspace(0, len(field_ids) - 1, n).round().astype(int)
    return [field_ids[i] for i in sorted(set(picks.tolist()))]


def _channel_planes(plate_path: str, fields: list[tuple[str, int]], channel: int):
    """Worker side: one channel of each sampled field, ``(1, Y, X)``, read one at a time."""
    from screenlib.store import open_plate

    plate = open_plate(plate_path)
    n_read = 0
    for well, field_index in fields:
        try:
            plane = plate.read_field(well, field_index)[channel][None]
        except Exception as error:  # noqa: BLE001 - a bad field is left out of the sample
            logger.warning("flat-field sample: skipping %s/%s: %s", well, field_index, error)
            continue
        n_read += 1
        yield plane
    if not n_read:
        raise InputError(f"{plate_path}: none of the {len(fields)} flat-field sample fields reads")


def _estimate_channel_flatfield(task: tuple[str, list[tuple[str, int]], int]) -> np.ndarray:
    """Worker side: the illumination profile of one channel from the sampled fields.

    The estimator reduces each field to a coarse grid as it arrives, so the sample streams
    through memory one field at a time.
    """
    from screenlib.analysis import estimate_flatfield

    plate_path, fields, channel = task
    profile = estimate_flatfield(_channel_planes(plate_path, fields, channel))
    return np.asarray(profile, dtype=np.float32).reshape(profile.shape[-2:])


def _save_npy(path: Path, array: np.ndarray) -> None:
    # through a file object: np.save would append ".npy" to a temporary name
    with open(path, "wb") as handle:
        np.save(handle, array)


def flatfield_profile(
    executor, plan: PlatePlan, fingerprints: dict, settings: AssaySettings, previous: dict | None
) -> tuple[Path | None, str]:
    """The plate's flat-field profile file and its digest (computed once per pixels)."""
    if not settings.correction.flatfield:
        return None, ""
    sample = _sample_fields(plan.field_ids, settings.correction.flatfield_max_fields)
    key = hashlib.sha256(
        repr(
            (
                plan.channels,
                settings.correction,
                [fingerprints[(w, f, 0)] for w, f in sample],
            )
        ).encode()
    ).hexdigest()[:20]
    path = plan.out_dir / "flatfield.npy"
    if (previous or {}).get("flatfield_key") != key or not path.exists():
        tasks = [(str(plan.plate_path), sample, index) for index, _ in plan.channels]
        profiles = gather(executor, _estimate_channel_flatfield, tasks, f"flatfield-{key[:8]}")
        profile = np.stack(profiles).astype(np.float32)
        write_atomic(path, lambda tmp: _save_npy(tmp, profile))
    digest = file_sha256(path)[:20]
    return path, f"{key}:{digest}"


def _nuclear_planes(task: tuple[str, list[tuple[str, int]], int]):
    """Worker side: the nuclear channel of each sampled field, read one at a time."""
    plate_path, fields, channel = task
    for plane in _channel_planes(plate_path, fields, channel):
        yield plane[0]


def _estimate_scale(task: tuple[str, list[tuple[str, int]], int]):
    """Worker side: the plate's nucleus scale from the sampled fields' nuclear channel."""
    from screenlib.analysis.scale import estimate_nucleus_scale

    try:
        return estimate_nucleus_scale(_nuclear_planes(task))
    except ValueError as error:  # no nucleus anywhere in the sample: each field measures
        return str(error)


def nucleus_scale(
    executor, plan: PlatePlan, fingerprints: dict, settings: AssaySettings, previous: dict | None
) -> dict[str, Any]:
    """The plate's nucleus diameter in pixels, measured once from a sample of fields (about
    4 % of them, 3 to 24): ``{"diameter_px", "text", "key"}``; ``diameter_px`` is None when
    the settings give the size (the kernel takes it from them)."""
    from screenlib.plugins import load_stains

    segmentation = settings.segmentation
    if segmentation.nucleus_diameter_px is not None:
        return {"diameter_px": None, "text": f"{segmentation.nucleus_diameter_px:g} px (settings)"}
    if segmentation.nucleus_diameter_um is not None and plan.pixel_size_um:
        diameter = segmentation.nucleus_diameter_um / plan.pixel_size_um
        text = f"{diameter:.1f} px ({segmentation.nucleus_diameter_um:g} µm, settings)"
        return {"diameter_px": None, "text": text}
    stains = load_stains()
    nuclear = next(i for i, name in plan.channels if stains[name].role == "nuclear")
    n_sample = int(np.clip(round(0.04 * len(plan.field_ids)), 3, 24))
    sample = _sample_fields(plan.field_ids, n_sample)
    # the sampled fields' pixels and the code that measures them: other code measures again
    sampled = [fingerprints[(w, f, 0)] for w, f in sample]
    key = hashlib.sha256(repr((nuclear, sampled, analysis_code_digest())).encode()).hexdigest()[:20]
    cached = (previous or {}).get("nucleus_scale") or {}
    if cached.get("key") == key:
        return cached
    task = (str(plan.plate_path), sample, nuclear)
    (scale,) = gather(executor, _estimate_scale, [task], f"scale-{key[:8]}")
    if isinstance(scale, str):
        text = f"not measured ({scale}); each field measures its own"
        return {"diameter_px": None, "text": text, "key": key}
    text = (
        f"{scale.diameter_px:.1f} px, measured on {scale.n_objects} nuclei in {len(sample)} fields"
    )
    return {"diameter_px": float(scale.diameter_px), "text": text, "key": key}


# --------------------------------------------------------------------------- field jobs


def field_jobs(
    plan: PlatePlan,
    fingerprints: dict[tuple[str, int, int], str],
    settings: AssaySettings,
    a_hash: str,
    *,
    flatfield_path: Path | None,
    labels_path: str,
    recompute: bool,
    run_token: str,
    nucleus_diameter_px: float | None = None,
) -> tuple[list[FieldJob], dict[str, dict[str, Any]], list[str]]:
    """The fields still to analyse, the finished ones to reuse, and those whose pixels changed
    since they were analysed."""
    parts_dir = plan.out_dir / PARTS_DIRNAME
    todo: list[FieldJob] = []
    reused: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    for well, field_index in plan.field_ids:
        for timepoint in range(plan.n_timepoints):
            stem = field_stem(well, field_index, timepoint)
            fingerprint = fingerprints[(well, field_index, timepoint)]
            old = read_json(parts_dir / f"{stem}.json")
            part = parts_dir / f"{stem}.parquet"
            marker = None if recompute else valid_marker(old, part, a_hash, fingerprint)
            if marker is not None:
                reused[stem] = marker
                continue
            if (
                old
                and old.get("analysis_hash") == a_hash
                and old.get("fingerprint")
                not in (
                    None,
                    fingerprint,
                )
            ):
                changed.append(stem)
            todo.append(
                FieldJob(
                    plate_path=str(plan.plate_path),
                    plate_name=plan.name,
                    well=well,
                    field=field_index,
                    timepoint=timepoint,
                    channel_indices=tuple(i for i, _ in plan.channels),
                    stains=tuple(s for _, s in plan.channels),
                    pixel_size_um=plan.pixel_size_um,
                    settings=settings,
                    flatfield_path=str(flatfield_path) if flatfield_path else None,
                    parts_dir=str(parts_dir),
                    analysis_hash=a_hash,
                    run_token=run_token,
                    fingerprint=fingerprint,
                    labels_path=labels_path,
                    nucleus_diameter_px=nucleus_diameter_px,
                )
            )
    return todo, reused, changed


def fields_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per field in plate order, with a fixed column order."""
    fields = pd.DataFrame(records)
    drop = ["analysis_hash", "marker_version", "part_bytes", "fingerprint"]
    fields = fields.drop(columns=drop, errors="ignore")
    # fresh and reused records list their keys in different orders: fix one order
    leading = [c for c in FIELDS_LEADING_COLUMNS if c in fields.columns]
    middle = sorted(set(fields.columns) - set(leading) - {"analysis_seconds"})
    fields = fields.reindex(columns=leading + middle + ["analysis_seconds"])
    fields = fields.sort_values(["well", "field", "timepoint"], kind="stable")
    return fields.reset_index(drop=True)


def _read_part(path: Path, data: bytes) -> pa.Table:
    try:  # ParquetFile.read: half the cost of read_table's dataset layer on small files
        return pq.ParquetFile(pa.BufferReader(data)).read()
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"the finished field's table {path} cannot be read ({error}); delete it (and its "
            f"{path.with_suffix('.json').name}) or run again with --recompute"
        ) from None


def _part_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(
            f"the finished field's table {path} cannot be read ({error.strerror}); run again "
            "with --recompute"
        ) from None


def _parts_digest(stems: list[str], contents: list[bytes]) -> str:
    """Digest of every part's name and bytes, in order: what the concatenated table is of
    (and of the Arrow version that read them)."""
    digest = hashlib.sha256(f"pyarrow {pa.__version__};".encode())
    for stem, data in zip(stems, contents, strict=True):
        digest.update(f"{stem}:{len(data)};".encode())
        digest.update(data)
    return digest.hexdigest()


def _cached_cells(path: Path, key: str) -> pa.Table | None:
    """The concatenated parts saved by an earlier run, when they were made of the same bytes."""
    try:
        parquet = pq.ParquetFile(path)
        if (parquet.schema_arrow.metadata or {}).get(CELLS_CACHE_KEY) != key.encode():
            return None
        table = parquet.read()
    except (OSError, pa.ArrowException):
        return None  # none yet, or damaged: the parts are read again
    metadata = dict(table.schema.metadata)
    del metadata[CELLS_CACHE_KEY]
    return table.replace_schema_metadata(metadata)


def _save_cells(path: Path, key: str, table: pa.Table) -> None:
    """Keep the concatenated parts for the next run (a gating change reads one file, not one
    per field); not saved is only slower."""
    metadata = {**(table.schema.metadata or {}), CELLS_CACHE_KEY: key.encode()}
    try:
        write_atomic(path, lambda tmp: pq.write_table(table.replace_schema_metadata(metadata), tmp))
    except OSError as error:
        logger.info("the concatenated cell table was not kept (%s)", error)


def concatenate_parts(parts_dir: Path, stems: list[str]) -> pd.DataFrame:
    """All finished fields' cell tables in plate order (well, field, timepoint, label).

    The concatenation is kept in ``parts_dir`` under the digest of every part's bytes and
    reused while the parts are byte for byte the same (reading the bytes and hashing them
    costs far less than parsing one Parquet file per field).
    """
    paths = [parts_dir / f"{stem}.parquet" for stem in stems]
    contents = [_part_bytes(path) for path in paths]
    if not contents:
        return pd.DataFrame()
    key = _parts_digest(stems, contents)
    table = _cached_cells(parts_dir / CELLS_CACHE, key)
    if table is None:
        tables = [_read_part(path, data) for path, data in zip(paths, contents, strict=True)]
        tables = [t for t in tables if t.num_rows] or tables[:1]
        table = pa.concat_tables(tables, promote_options="permissive")
        _save_cells(parts_dir / CELLS_CACHE, key, table)
    cells = table.to_pandas()
    order = [c for c in ("well", "field", "timepoint", "label") if c in cells]
    return cells.sort_values(order, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- run


def _load_platemap(platemap) -> tuple[pd.DataFrame, str]:
    from screenlib.platemap import read_platemap

    if isinstance(platemap, pd.DataFrame):
        return platemap, "the plate map"
    return read_platemap(platemap), str(platemap)


def _analysis_context(plan: PlatePlan, plate, flatfield_key: str) -> dict[str, Any]:
    """Run facts that change a field's analysis (channel names only through the resolved
    indices: renaming a channel in the settings does not discard finished fields)."""
    return {
        "channels": [[index, stain] for index, stain in plan.channels],
        "pixel_size_um": plan.pixel_size_um,
        "field_shape": list(plate.shape),
        "dtype": str(plate.dtype),
        "flatfield": flatfield_key,
        "screenlib": __version__,
        "analysis_code": analysis_code_digest(),
    }


def plan_run(
    plate: str | Path,
    platemap: str | Path | pd.DataFrame,
    out_dir: str | Path,
    settings: AssaySettings | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[RunPlan, Any, dict[str, Any]]:
    """Check everything and resolve every name of a one-plate run, before any field is read.

    ``overwrite`` lets a run replace the results of another plate in ``out_dir``. Returns
    the plan, the opened plate and the ``run.json`` manifest to write.
    """
    settings = settings or AssaySettings()
    check_settings(settings)
    platemap_table, platemap_source = _load_platemap(platemap)
    out_dir, source, previous = _claim(out_dir, plate, overwrite)
    plate_obj, ingest, notes = open_or_ingest(source, out_dir, previous, progress)
    plan_notes = list(notes)
    plate_plan = plan_plate(
        plate_obj,
        source=source,
        ingested=ingest is not None,
        platemap=platemap_table,
        platemap_source=platemap_source,
        settings=settings,
        out_dir=out_dir,
        notes=plan_notes,
    )
    plan = RunPlan(plates=[plate_plan], settings=settings, out_dir=out_dir, notes=plan_notes)
    manifest = {
        "screenlib": __version__,
        "source": str(source),
        "plate": str(plate_obj.path),
        "ingest": ingest,
        "finalize_hash": finalize_hash(settings),
        "status": "planned",
        "previous": previous,
    }
    return plan, plate_obj, manifest


def run_plate(
    plate: str | Path,
    platemap: str | Path | pd.DataFrame,
    out_dir: str | Path,
    settings: AssaySettings | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    *,
    fields_per_task: int = 1,
    client=None,
    report: bool = True,
    write_labels: bool = False,
    executor=None,
    overwrite: bool = False,
    excel: bool = False,
) -> RunSummary:
    """Analyse a plate end to end, resuming whatever an earlier run in ``out_dir`` finished.

    Parameters
    ----------
    plate
        An OME-Zarr plate (read only), or a microscope export folder (ingested to
        ``out_dir/plate.zarr``, again whenever the export's files change).
    platemap
        Plate-map file (or the table ``read_platemap`` returns).
    out_dir
        Output folder (new, empty, or one of an earlier run): ``cells.parquet``,
        ``fields.csv``, ``wells.csv``, ``plate_qc.csv``, ``gates.json``, ``fits.csv``,
        ``report.html``, ``settings_used.toml``, ``outputs.json`` (the set), ``run.json``
        and ``parts/`` (one Parquet part and completion marker per field).
    settings
        Assay settings (defaults when None).
    scheduler
        ``"sync"`` (this process, no Dask), ``"tcp://host:port"`` of a running Dask
        scheduler, or None: ``DASK_SCHEDULER_ADDRESS`` or a local cluster.
    n_workers
        Local cluster size (default one worker process per core).
    force
        Recompute every field even when a finished, matching part exists.
    progress
        Show a progress bar (fields done / total, rate, ETA).
    fields_per_task
        Fields analysed per Dask task (1: one task per field; see benchmarks/bench_dask.py).
    client
        An existing ``distributed.Client`` to use instead of ``scheduler``.
    report
        Write ``report.html`` (False skips it, e.g. when re-gating in a loop).
    write_labels
        Write the nucleus labels into a Zarr input plate (default: ``out_dir/labels.zarr``).
    executor
        An open executor (:func:`open_executor`) to use instead of opening one (several
        plates of an experiment share one cluster).
    overwrite
        Replace the results of another input in ``out_dir`` (refused otherwise).
    excel
        Also write ``results.xlsx`` (wells, fits, plate QC; one sheet each).

    Returns
    -------
    RunSummary
    """
    if _is_flow(plate):
        return _run_flow(plate, platemap, out_dir, settings, overwrite, report, excel)
    plan, plate_obj, manifest = plan_run(plate, platemap, out_dir, settings, progress, overwrite)
    with output_lock(plan.out_dir):
        return _run_planned(
            plan, plate_obj, manifest, scheduler, n_workers, client, executor, force, progress,
            fields_per_task, report, write_labels, excel,
        )  # fmt: skip


@dataclass
class _Computed:
    """What the compute step leaves for finalize."""

    records: list[dict[str, Any]]
    reused: dict[str, dict[str, Any]]
    changed: list[str]
    analysis_hash: str
    labels: Any


def _is_flow(plate) -> bool:
    from screenlib.flow import is_flow_input

    path = Path(getattr(plate, "path", plate))
    return path.exists() and not _is_zarr_plate(path) and is_flow_input(path)


def _claim(
    out_dir, plate, overwrite: bool, parts: bool = True
) -> tuple[Path, Path, dict[str, Any] | None]:
    """Resolved output folder and source, and the previous run's manifest (checked)."""
    out_dir = Path(out_dir).resolve()  # absolute: workers may run in other folders
    source = Path(getattr(plate, "path", plate)).resolve()
    previous = claim_out_dir(out_dir, [source], parts=parts)
    earlier = (previous or {}).get("source")
    if earlier and earlier != str(source) and not overwrite:
        raise InputError(
            f"{out_dir} holds the results of another input ({earlier}); choose another --out, "
            "or pass --overwrite to replace them (fields whose pixels are unchanged are kept)"
        )
    return out_dir, source, previous


def _run_flow(plate, platemap, out_dir, settings, overwrite, report, excel) -> RunSummary:
    """A plate of FCS files (see :mod:`screenlib.orchestrate.flow_run`)."""
    from screenlib.orchestrate.flow_run import run_flow_plate

    settings = settings or AssaySettings()
    platemap_table, platemap_source = _load_platemap(platemap)
    out_dir, source, previous = _claim(out_dir, plate, overwrite, parts=False)
    with output_lock(out_dir):
        return run_flow_plate(
            source, platemap_table, platemap_source, out_dir, settings,
            previous=previous, report=report, excel=excel,
        )  # fmt: skip


def _run_planned(
    plan: RunPlan, plate_obj, manifest, scheduler, n_workers, client, executor, force,
    progress, fields_per_task, report, write_labels, excel,
) -> RunSummary:  # fmt: skip
    """The rest of :func:`run_plate`, once planned, under the folder's lock."""
    started = time.perf_counter()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    previous = manifest.pop("previous") or {}
    plate_plan = plan.plates[0]
    logger.info("%s", plate_plan.platemap_summary)
    for note in plan.notes:
        logger.warning("%s", note)
    # the plate-map reader logged its own warnings; they go to run.json and the report too
    plan.notes.extend(plate_plan.platemap.attrs.get("platemap_notes", {}).get("warnings", []))
    summary = RunSummary(plate=plate_plan.name, out_dir=plan.out_dir, n_fields=plate_plan.n_fields)
    write_json_atomic(plan.out_dir / MANIFEST_NAME, {**previous, **manifest, "status": "preparing"})
    opened = nullcontext(executor) if executor else open_executor(scheduler, n_workers, client)
    with opened as executor:
        computed = _compute(
            plan, plate_obj, manifest, previous, executor,
            force=force, progress=progress, fields_per_task=fields_per_task,
            write_labels=write_labels,
        )  # fmt: skip
        summary.dashboard = executor.dashboard  # a local cluster starts with the first task
    results = _finalize_tables(plan, computed, summary)
    run_info = {
        "started": started_at,
        "image analysis time": f"{time.perf_counter() - started:.1f} s "
        f"({summary.n_fields_computed} fields analysed, {summary.n_fields_reused} reused)",
        "plate": str(plate_obj.path),
        "analysis_hash": computed.analysis_hash,
        "pixel size": (
            f"{plate_plan.pixel_size_um:g} µm ({plate_plan.pixel_size_source})"
            if plate_plan.pixel_size_um
            else f"unknown ({plate_plan.pixel_size_source}): sizes in pixels, µm columns empty"
        ),
        "nucleus scale": (plate_plan.nucleus_scale or {}).get("text", ""),
        "n_fields": summary.n_fields,
        "n_fields_failed": summary.n_fields_failed,
        "n_cells": summary.n_cells,
    }
    shown = PlateWithLabels(plate_obj, computed.labels)
    summary.outputs = write_results(results, plan, shown, run_info, report=report, excel=excel)
    summary.seconds = time.perf_counter() - started
    manifest.update(
        status="finished",
        n_fields_computed=summary.n_fields_computed,
        n_fields_failed=summary.n_fields_failed,
        n_cells=summary.n_cells,
        notes=plan.notes,
        seconds=round(summary.seconds, 2),
    )
    write_json_atomic(plan.out_dir / MANIFEST_NAME, manifest)
    return summary


def _compute(
    plan: RunPlan, plate_obj, manifest, previous, executor, *, force, progress,
    fields_per_task, write_labels,
) -> _Computed:  # fmt: skip
    """Flat field, resume decisions and the field tasks of the run's plate."""
    settings, plate_plan = plan.settings, plan.plates[0]
    run_token = uuid.uuid4().hex
    # one pass over the stored chunks: the resume decisions and the sample keys all use them
    fingerprints = {
        (well, field, timepoint): plate_obj.field_fingerprint(well, field, timepoint)
        for well, field in plate_plan.field_ids
        for timepoint in range(plate_plan.n_timepoints)
    }
    flatfield_path, flatfield_key = flatfield_profile(
        executor, plate_plan, fingerprints, settings, previous
    )
    scale = nucleus_scale(executor, plate_plan, fingerprints, settings, previous)
    logger.info("nucleus scale: %s", scale["text"])
    manifest["nucleus_scale"] = plate_plan.nucleus_scale = scale
    diameter_px = scale["diameter_px"]
    context = _analysis_context(plate_plan, plate_obj, flatfield_key)
    context["nucleus_diameter_px"] = diameter_px
    a_hash = analysis_hash(settings, context)
    stale = force or previous.get("analysis_hash") != a_hash
    if previous.get("analysis_hash") not in (None, a_hash) and not force:
        plan.notes.append(
            "settings, analysis code or the flat-field profile changed since the last run "
            "in this folder: every field is analysed again"
        )
    labels = labels_plate(plate_obj, plan.out_dir, into_input=write_labels, fresh=stale)
    todo, reused, changed = field_jobs(
        plate_plan,
        fingerprints,
        settings,
        a_hash,
        flatfield_path=flatfield_path,
        labels_path=str(Path(labels.path).resolve()),
        recompute=force,
        run_token=run_token,
        nucleus_diameter_px=diameter_px,
    )
    if changed:
        plan.notes.append(
            f"{len(changed)} field(s) changed since they were analysed and were analysed "
            f"again: {', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}"
        )
        logger.warning("%s", plan.notes[-1])
    manifest.update(
        analysis_hash=a_hash,
        flatfield_key=flatfield_key.split(":")[0],
        status="computing",
        n_fields=plate_plan.n_fields,
        n_fields_reused=len(reused),
        n_fields_todo=len(todo),
    )
    write_json_atomic(plan.out_dir / MANIFEST_NAME, manifest)
    records = execute_fields(
        executor, todo, fields_per_task=fields_per_task, progress=progress, run_token=run_token
    )
    return _Computed(records, reused, changed, a_hash, labels)


def _finalize_tables(plan: RunPlan, computed: _Computed, summary: RunSummary) -> Results:
    """Collect the finished fields' tables and finalize them; fill the summary's counts."""
    from screenlib.plugins import load_stains

    plate_plan, parts_dir = plan.plates[0], plan.out_dir / PARTS_DIRNAME
    _remove_other_parts(parts_dir, plate_plan)
    fields = fields_table([*computed.reused.values(), *computed.records])
    done = fields.loc[fields["status"] == "done"]
    stems = [field_stem(*key) for key in done[["well", "field", "timepoint"]].to_numpy()]
    cells = concatenate_parts(parts_dir, stems)
    failed = fields[fields["status"] != "done"]
    summary.n_fields_computed = len(computed.records)
    summary.n_fields_reused = len(computed.reused)
    summary.n_fields_failed, summary.n_fields_changed = len(failed), len(computed.changed)
    summary.failed_fields = failed[["well", "field", "timepoint", "error"]].to_dict("records")
    if len(cells) == 0:
        # not an output set: the one table that says why each field has no cell
        write_atomic(
            plan.out_dir / "fields.csv",
            lambda tmp: neutralize_formulas(fields).to_csv(tmp, index=False),
        )
        raise InputError(
            f"no cell was found in any of the {summary.n_fields} fields of plate "
            f"{plate_plan.name} ({summary.n_fields_failed} failed; first error: "
            f"{failed['error'].iloc[0] if len(failed) else 'none'}): check that the settings' "
            "[[channels]] map the nuclear stain to the right channel and that the images are "
            "not blank"
        )
    results = finalize(cells, fields, plate_plan.platemap, plan.settings, load_stains())
    if results.n_cells_analysed == 0:
        reasons = results.cells["exclusion_reason"].value_counts().head(3).to_dict()
        raise InputError(
            f"all {len(cells)} objects of plate {plate_plan.name} were excluded "
            f"({', '.join(f'{k}: {v}' for k, v in reasons.items())}); no fraction can be "
            "computed: check the settings' size limits and the field QC in fields.csv"
        )
    plan.notes.extend(results.notes)
    summary.n_cells = results.n_cells_analysed
    summary.n_curves = None if results.fits is None else len(results.fits)
    summary.notes = list(plan.notes)
    return results


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for a run: a second run into the same folder (another
    terminal, a double click) stops at once instead of mixing its files with this one's."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks to take
        yield
        return
    with open(out_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another screenlib run is writing into {out_dir}; wait for it to finish or "
                "choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_other_parts(parts_dir: Path, plan: PlatePlan) -> None:
    """Parts of fields the plate no longer has, and temporary files of killed writers."""
    wanted = {field_stem(w, f, t) for w, f in plan.field_ids for t in range(plan.n_timepoints)}
    for path in parts_dir.iterdir():
        stem = path.name.split(".")[0]
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif path.suffix in (".json", ".parquet") and stem not in wanted:
            if path.name != CELLS_CACHE:
                path.unlink(missing_ok=True)


def settings_used(plan: RunPlan) -> AssaySettings:
    """The run's settings with what it measured written in (the plate's nucleus scale), so
    ``--settings settings_used.toml`` repeats the analysis exactly."""
    measured = (plan.plates[0].nucleus_scale or {}).get("diameter_px")
    if measured is None:
        return plan.settings
    segmentation = dataclasses.replace(
        plan.settings.segmentation, nucleus_diameter_px=float(measured)
    )
    return dataclasses.replace(plan.settings, segmentation=segmentation)


def platemap_unit(platemap: pd.DataFrame) -> str | None:
    """The concentration unit the plate map's dosed wells are written in (None: not known)."""
    for column in ("concentration_unit", "unit"):
        if column in platemap and "role" in platemap:
            units = platemap.loc[platemap["role"] == "sample", column].dropna().astype(str)
            units = units[units.str.strip() != ""]
            if len(units):
                return str(units.mode().iloc[0])
    return None


def write_results(
    results: Results,
    plan: RunPlan,
    plate,
    run_info: dict[str, Any],
    *,
    report: bool = True,
    excel: bool = False,
    extra_sections: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Every output of the run, written as one set (see :mod:`outputs`)."""
    from screenlib.settings_template import settings_to_toml

    out_dir = plan.out_dir
    with OutputSet(out_dir) as outputs:
        outputs.csv("fields.csv", results.fields)
        outputs.parquet("cells.parquet", results.cells)
        outputs.csv("wells.csv", results.wells)
        outputs.json("gates.json", gates_to_dict(results.gates))
        outputs.csv("plate_qc.csv", results.plate_qc)
        core, full = split_fit_columns(results.fits, platemap_unit(plan.plates[0].platemap))
        outputs.csv("fits.csv", core)
        outputs.parquet("fits_full.parquet", full)
        if results.replicates is not None:
            outputs.csv("replicates.csv", results.replicates)
        outputs.text("settings_used.toml", settings_to_toml(settings_used(plan)))
        if excel:
            sheets = {"wells": results.wells, "fits": core, "plate QC": results.plate_qc}
            outputs.excel("results.xlsx", {**sheets, "replicates": results.replicates})
        if report:
            from screenlib.report import write_report  # matplotlib and all: only when drawn

            outputs.write(
                "report.html",
                lambda _path: write_report(
                    outputs.staging,
                    plate=plate,
                    cells=results.cells,
                    fields=results.fields,
                    wells=results.wells,
                    plate_qc=results.plate_qc,
                    gates=results.gates,
                    fits=results.fits,
                    settings=plan.settings,
                    run_info=run_info,
                    notes=plan.notes,
                    platemap_summary=plan.plates[0].platemap_summary,
                    previous_figures=out_dir / "figures",  # unchanged figures are reused
                    **(extra_sections or {}),
                ),
            )
        return outputs.commit({"plate": run_info.get("plate"), "notes": plan.notes})
