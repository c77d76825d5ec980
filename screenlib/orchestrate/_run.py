"""``run_plate``: prepare on the client, compute one Dask task per field, finalize from tables."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from screenlib import __version__
from screenlib.aggregate import aggregate_wells, flag_relative_focus, plate_qc
from screenlib.doseresponse import fit_wells
from screenlib.errors import InputError, SettingsError
from screenlib.gating import classify_cells, gates_are_manual, gates_to_dict, learn_gates
from screenlib.orchestrate._cluster import dashboard_link, dask_client
from screenlib.orchestrate._field_task import FieldJob, analyze_fields
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
from screenlib.plugins import load_stains
from screenlib.report import write_report
from screenlib.settings import AssaySettings
from screenlib.settings_template import settings_to_toml

logger = logging.getLogger(__name__)

# a task that kills this many workers in a row is given up (the scheduler's allowed-failures);
# a task that raises is retried this many times on another worker before it is recorded failed
TASK_RETRIES = 2
# futures kept in flight at once: enough to keep any cluster busy, small enough that the
# scheduler never holds a whole multi-plate graph
MAX_IN_FLIGHT = 4096
FIELDS_LEADING_COLUMNS = (
    "well", "field", "timepoint", "status", "error", "n_cells", "qc_pass", "qc_reason",
)  # fmt: skip


@dataclass
class RunSummary:
    """What a run did, for the console line and for scripts."""

    plate: str
    out_dir: Path
    n_fields: int
    n_fields_computed: int
    n_fields_reused: int
    n_fields_failed: int
    n_cells: int
    n_curves: int | None
    seconds: float
    failed_fields: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    dashboard: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary printed at the end of ``screenlib run``."""
        curves = "n/a" if self.n_curves is None else f"{self.n_curves}"
        minutes, seconds = divmod(self.seconds, 60)
        return (
            f"{self.plate}: {self.n_fields} fields ({self.n_fields_computed} analysed, "
            f"{self.n_fields_reused} reused, {self.n_fields_failed} failed), "
            f"{self.n_cells:,} cells, {curves} curves, {int(minutes)}m{seconds:04.1f}s"
        )


# --------------------------------------------------------------------------- prepare


def _is_zarr_plate(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zattrs").is_file()


def _open_or_ingest(
    plate: str | Path, out_dir: Path, manifest: dict[str, Any] | None, progress: bool
):
    """Open a Zarr plate, or ingest an export folder into ``out_dir/plate.zarr`` (once)."""
    from screenlib.store import open_plate

    source = Path(plate)
    if not source.exists():
        raise InputError(f"plate {source} does not exist: give a Zarr plate or an export folder")
    if _is_zarr_plate(source):
        return open_plate(source, mode="r+"), None
    target = out_dir / "plate.zarr"
    done = manifest or {}
    if target.exists() and done.get("ingested_from") == str(source.resolve()):
        return open_plate(target, mode="r+"), target
    if target.exists():  # an ingest that never finished (or of another export): redo it
        shutil.rmtree(target)
    from screenlib.ingest import ingest_export

    logger.info("ingesting %s into %s", source, target)
    ingest_export(source, target, progress=progress)
    return open_plate(target, mode="r+"), target


def resolve_channels(settings: AssaySettings, channel_names: list[str]) -> list[tuple[int, str]]:
    """(plate channel index, stain) per configured channel: by name first, else by index.

    Raises
    ------
    SettingsError
        When a configured channel matches no channel of the plate.
    """
    resolved = []
    for number, channel in enumerate(settings.channels):
        if channel.name is not None and channel.name in channel_names:
            resolved.append((channel_names.index(channel.name), channel.stain))
        elif channel.index is not None and 0 <= channel.index < len(channel_names):
            resolved.append((channel.index, channel.stain))
        else:
            raise SettingsError(
                f"settings: channels[{number}] (stain {channel.stain!r}, name {channel.name!r}, "
                f"index {channel.index!r}) matches no channel of the plate; its channels are "
                f"{channel_names} (indices 0..{len(channel_names) - 1}): fix 'name' or 'index'"
            )
    return resolved


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


def _estimate_channel_flatfield(plate_path: str, fields: list[tuple[str, int]], channel: int):
    """Worker side: the illumination profile of one channel from the sampled fields.

    The estimator reduces each field to a coarse grid as it arrives, so the sample streams
    through memory one field at a time.
    """
    from screenlib.analysis import estimate_flatfield

    profile = estimate_flatfield(_channel_planes(plate_path, fields, channel))
    return np.asarray(profile, dtype=np.float32).reshape(profile.shape[-2:])


# --------------------------------------------------------------------------- finalize


def concatenate_parts(parts_dir: Path, stems: list[str]) -> pd.DataFrame:
    """All finished fields' cell tables in plate order (well, field, timepoint, label)."""
    tables = [pq.read_table(parts_dir / f"{stem}.parquet") for stem in stems]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        return pd.DataFrame()
    cells = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    order = [c for c in ("well", "field", "timepoint", "label") if c in cells]
    return cells.sort_values(order, kind="stable").reset_index(drop=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    # through a file object: np.save would append ".npy" to a temporary name
    with open(path, "wb") as handle:
        np.save(handle, array)


def _write_csv(path: Path, table: pd.DataFrame) -> Path:
    return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def _check_gates_can_be_learned(
    platemap: pd.DataFrame, wells: list[str], settings: AssaySettings, source: Any
) -> None:
    """Stop before any image is analysed when no imaged vehicle well can train the gates."""
    imaged = platemap[platemap["well"].isin(wells)]
    if gates_are_manual(settings.gating) or (imaged["role"] == "negative_control").any():
        return
    name = source if not isinstance(source, pd.DataFrame) else "the plate map"
    raise InputError(
        f"{name}: no imaged well has role 'negative_control', so there are no vehicle cells to "
        "learn the Annexin V / PI gates from; mark the vehicle (e.g. DMSO) wells with role "
        "'negative_control' in the plate map, or give gating.annexin_gate, gating.pi_gate and "
        "gating.bleedthrough_annexin_to_pi in the assay settings"
    )


def plugin_marker_features(settings: AssaySettings) -> dict[str, str]:
    """``{stain: feature}`` of the assay's plugin marker stains, gated like Annexin V and PI."""
    stains = load_stains()
    features = {}
    for channel in settings.channels:
        stain = stains.get(channel.stain)
        if stain is not None and stain.role == "marker" and stain.name not in ("annexin_v", "pi"):
            features[stain.name] = stain.feature
    return features


def _finalize(
    out_dir: Path,
    plate,
    platemap: pd.DataFrame,
    settings: AssaySettings,
    cells: pd.DataFrame,
    fields: pd.DataFrame,
    run_info: dict[str, Any],
    summary: RunSummary,
    with_report: bool = True,
) -> None:
    """Gates, classes, wells, plate QC, fits and report, from the tables only."""
    outputs = summary.outputs
    fields = flag_relative_focus(fields, settings.qc)
    outputs["fields.csv"] = _write_csv(out_dir / "fields.csv", fields)
    gates = None
    if len(cells):
        # gates are learned from fields that pass QC: a blurred or saturated vehicle field
        # would move them for the whole plate
        passing = fields.loc[fields["qc_pass"].astype(bool), ["well", "field", "timepoint"]]
        learn_from = cells.merge(passing, on=["well", "field", "timepoint"])
        try:
            gates = learn_gates(
                learn_from if len(learn_from) else cells,
                platemap,
                settings.gating,
                marker_features=plugin_marker_features(settings),
            )
        except InputError:
            # keep the measurements: a rerun with manual gates only repeats finalize
            write_atomic(out_dir / "cells.parquet", lambda tmp: cells.to_parquet(tmp, index=False))
            raise
        cells = classify_cells(cells, gates, settings.gating)
    else:
        summary.skipped_steps.append("gating (no cells)")
    outputs["cells.parquet"] = write_atomic(
        out_dir / "cells.parquet", lambda tmp: cells.to_parquet(tmp, index=False)
    )

    wells = qc_table = fits = None
    if gates is not None:
        wells = aggregate_wells(cells, platemap, fields, settings)
        outputs["wells.csv"] = _write_csv(out_dir / "wells.csv", wells)
        # written once the wells are in: how apoptotic_fraction_mixture was found goes next
        # to the gates
        for timepoint, model in wells.attrs.get("annexin_mixture", {}).items():
            if timepoint in gates:
                gates[timepoint].details["fraction_mixture"] = model
        outputs["gates.json"] = write_json_atomic(out_dir / "gates.json", gates_to_dict(gates))
        qc_table = plate_qc(wells, platemap)
        outputs["plate_qc.csv"] = _write_csv(out_dir / "plate_qc.csv", qc_table)
        fits = fit_wells(wells, settings.fit)
        outputs["fits.csv"] = _write_csv(out_dir / "fits.csv", fits)
        summary.n_curves = len(fits)

    if with_report:
        outputs["report.html"] = write_report(
            out_dir,
            plate=plate,
            cells=cells,
            fields=fields,
            wells=wells,
            plate_qc=qc_table,
            gates=gates,
            fits=fits,
            settings=settings,
            run_info=run_info,
        )


# --------------------------------------------------------------------------- run


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
) -> RunSummary:
    """Analyse a plate end to end, resuming whatever an earlier run in ``out_dir`` finished.

    Parameters
    ----------
    plate
        An OME-Zarr plate, or a microscope export folder (ingested to ``out_dir/plate.zarr``).
    platemap
        Plate-map CSV (or the table ``read_platemap`` returns).
    out_dir
        Output folder: ``cells.parquet``, ``fields.csv``, ``wells.csv``, ``plate_qc.csv``,
        ``gates.json``, ``fits.csv``, ``report.html``, ``settings_used.toml``, ``run.json``
        and ``parts/`` (one Parquet part and completion marker per field).
    settings
        Assay settings (defaults when None).
    scheduler
        ``"tcp://host:port"`` of a running Dask scheduler; None uses ``DASK_SCHEDULER_ADDRESS``
        or starts a local cluster.
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

    Returns
    -------
    RunSummary
    """
    from screenlib.platemap import read_platemap

    started = time.perf_counter()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    settings = settings or AssaySettings()
    # absolute paths: workers of an external cluster run in other working directories
    out_dir = Path(out_dir).resolve()
    source = Path(getattr(plate, "path", plate)).resolve()  # an export folder or a plate
    if out_dir.is_relative_to(source):
        raise InputError(
            f"output folder {out_dir} lies inside the input {source}; choose an --out "
            "outside it (screenlib never writes into the raw data)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create output folder {out_dir}: {error.strerror}") from error
    parts_dir = out_dir / PARTS_DIRNAME
    parts_dir.mkdir(exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    previous = read_json(manifest_path)

    # ---- prepare (client only: every group, array and metadata before any worker writes)
    plate_obj, ingested = _open_or_ingest(plate, out_dir, previous, progress)
    platemap_table = platemap if isinstance(platemap, pd.DataFrame) else read_platemap(platemap)
    plate_path = str(Path(plate_obj.path).resolve())
    channel_names = list(plate_obj.channel_names)
    resolved = resolve_channels(settings, channel_names)
    pixel_size = (
        settings.pixel_size_um
        or plate_obj.pixel_size_um
        or settings.segmentation.default_pixel_size_um
    )
    field_ids = [(w, f) for w in plate_obj.wells for f in plate_obj.fields(w)]
    if not field_ids:
        raise InputError(f"plate {plate_obj.path} has no fields to analyse")
    missing = sorted(set(plate_obj.wells) - set(platemap_table["well"]))
    if missing:
        logger.warning("wells in the plate but not in the plate map: %s", ", ".join(missing))
    _check_gates_can_be_learned(platemap_table, plate_obj.wells, settings, platemap)
    timepoints = range(int(plate_obj.n_timepoints))
    context = {
        "stains": [s for _, s in resolved],
        "channel_indices": [i for i, _ in resolved],
        "pixel_size_um": pixel_size,
        # the plate's identity without its path, so a moved plate keeps its finished fields
        "plate": str(plate_obj.name),
        "channel_names": channel_names,
        "field_shape": list(plate_obj.shape),
        "dtype": str(plate_obj.dtype),
        "fields": [f"{w}/{f}" for w, f in field_ids],
        "screenlib": __version__,
        "analysis_code": analysis_code_digest(),
    }
    a_hash = analysis_hash(settings, context)
    stale = force or previous is None or previous.get("analysis_hash") != a_hash
    run_token = uuid.uuid4().hex
    manifest: dict[str, Any] = {
        "screenlib": __version__,
        "plate": str(plate_obj.path),
        "ingested_from": str(Path(plate).resolve()) if ingested else None,
        "analysis_hash": a_hash,
        "finalize_hash": finalize_hash(settings),
        "analysis_context": context,
        "status": "prepared",
        "n_fields": len(field_ids) * len(timepoints),
    }
    if stale:
        # parts of other settings would mix into cells.parquet; labels are rewritten below
        for old in parts_dir.iterdir():
            old.unlink()
        for name in ("flatfield.npy", "cells.parquet"):
            (out_dir / name).unlink(missing_ok=True)
    first_well = plate_obj.wells[0]
    if stale or "nuclei" not in plate_obj.label_names(first_well, plate_obj.fields(first_well)[0]):
        plate_obj.create_labels("nuclei")
    write_json_atomic(manifest_path, manifest)

    todo: list[FieldJob] = []
    reused: dict[str, dict[str, Any]] = {}
    with dask_client(scheduler, n_workers) if client is None else nullcontext(client) as dclient:
        summary = RunSummary(
            plate=str(plate_obj.name),
            out_dir=out_dir,
            n_fields=len(field_ids) * len(timepoints),
            n_fields_computed=0,
            n_fields_reused=0,
            n_fields_failed=0,
            n_cells=0,
            n_curves=None,
            seconds=0.0,
            dashboard=dashboard_link(dclient),
        )
        if summary.dashboard and progress:
            logger.info("Dask dashboard: %s", summary.dashboard)

        flatfield_path = None
        if settings.correction.flatfield:
            flatfield_path = out_dir / "flatfield.npy"
            if not flatfield_path.exists():
                sample = _sample_fields(field_ids, settings.correction.flatfield_max_fields)
                futures = [
                    dclient.submit(
                        _estimate_channel_flatfield,
                        plate_path,
                        sample,
                        index,
                        pure=False,
                        retries=TASK_RETRIES,
                    )
                    for index, _ in resolved
                ]
                profile = np.stack(dclient.gather(futures)).astype(np.float32)
                write_atomic(flatfield_path, lambda tmp: _save_npy(tmp, profile))

        for well, field_index in field_ids:
            for timepoint in timepoints:
                stem = field_stem(well, field_index, timepoint)
                marker = None if force else valid_marker(parts_dir, stem, a_hash)
                if marker is not None:
                    reused[stem] = marker
                    continue
                todo.append(
                    FieldJob(
                        plate_path=plate_path,
                        plate_name=str(plate_obj.name),
                        well=well,
                        field=field_index,
                        timepoint=timepoint,
                        channel_indices=tuple(i for i, _ in resolved),
                        stains=tuple(s for _, s in resolved),
                        pixel_size_um=float(pixel_size),
                        settings=settings,
                        flatfield_path=str(flatfield_path) if flatfield_path else None,
                        parts_dir=str(parts_dir),
                        analysis_hash=a_hash,
                        run_token=run_token,
                    )
                )
        manifest.update(status="computing", n_fields_reused=len(reused), n_fields_todo=len(todo))
        write_json_atomic(manifest_path, manifest)

        # ---- compute
        records = _compute(dclient, todo, fields_per_task, run_token, progress)

    # ---- finalize (tables only)
    all_records = [*reused.values(), *records]
    fields = pd.DataFrame(all_records)
    fields = fields.drop(columns=["analysis_hash", "marker_version", "part_bytes"], errors="ignore")
    # fresh and reused records list their keys in different orders: fix one order
    leading = [c for c in FIELDS_LEADING_COLUMNS if c in fields.columns]
    middle = sorted(set(fields.columns) - set(leading) - {"analysis_seconds"})
    fields = fields.reindex(columns=leading + middle + ["analysis_seconds"])
    fields = fields.sort_values(["well", "field", "timepoint"], kind="stable")
    fields = fields.reset_index(drop=True)
    done_stems = [
        field_stem(r["well"], r["field"], r["timepoint"])
        for r in fields.to_dict("records")
        if r["status"] == "done"
    ]
    cells = concatenate_parts(parts_dir, done_stems)
    failed = fields[fields["status"] != "done"]
    summary.n_fields_computed = len(records)
    summary.n_fields_reused = len(reused)
    summary.n_fields_failed = len(failed)
    summary.failed_fields = failed[["well", "field", "timepoint", "error"]].to_dict("records")
    summary.n_cells = len(cells)
    run_info = {
        "started": started_at,
        "image analysis time": f"{time.perf_counter() - started:.1f} s "
        f"({summary.n_fields_computed} fields analysed, {summary.n_fields_reused} reused)",
        "plate": str(plate_obj.path),
        "analysis_hash": a_hash,
        "n_fields": summary.n_fields,
        "n_fields_failed": summary.n_fields_failed,
        "n_cells": summary.n_cells,
    }
    if summary.n_cells == 0:
        summary.outputs["fields.csv"] = _write_csv(out_dir / "fields.csv", fields)
        raise InputError(
            f"no cell was found in any of the {summary.n_fields} fields of plate "
            f"{plate_obj.name} ({out_dir / 'fields.csv'} gives each field's QC): check that "
            "the settings' [[channels]] map the nuclear stain to the right channel and that "
            "the images are not blank"
        )
    _finalize(
        out_dir, plate_obj, platemap_table, settings, cells, fields, run_info, summary, report
    )
    for leftover in parts_dir.glob(".*.tmp"):  # from writers killed in an earlier run
        leftover.unlink(missing_ok=True)
    summary.outputs["settings_used.toml"] = write_atomic(
        out_dir / "settings_used.toml",
        lambda tmp: tmp.write_text(settings_to_toml(settings), encoding="utf-8"),
    )
    summary.seconds = time.perf_counter() - started
    manifest.update(
        status="finished",
        n_fields_computed=summary.n_fields_computed,
        n_fields_failed=summary.n_fields_failed,
        n_cells=summary.n_cells,
        skipped_steps=summary.skipped_steps,
        seconds=round(summary.seconds, 2),
    )
    write_json_atomic(manifest_path, manifest)
    return summary


def _compute(client, jobs: list[FieldJob], fields_per_task: int, run_token: str, progress: bool):
    """Run the field tasks with a bounded window of futures; one record per field."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    groups = [jobs[i : i + fields_per_task] for i in range(0, len(jobs), fields_per_task)]
    records: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(jobs),
        unit="field",
        desc="fields",
        disable=not progress or not jobs,
        smoothing=0.1,
    )

    def submit(batch: list[list[FieldJob]]) -> list:
        # one client.map call sends the whole batch to the scheduler in one message
        keys = [f"screenlib-field-{run_token[:8]}-{group[0].stem}" for group in batch]
        futures = client.map(analyze_fields, batch, key=keys, retries=TASK_RETRIES, pure=False)
        for future, group in zip(futures, batch, strict=True):
            future.jobs = group
        return futures

    window = as_completed(submit(groups[:MAX_IN_FLIGHT]))
    waiting = iter(groups[MAX_IN_FLIGHT:])
    for future in window:
        group = future.jobs
        try:
            records.extend(future.result())
        except Exception as error:  # noqa: BLE001 - KilledWorker, or a write that kept failing
            reason = f"{type(error).__name__}: {error}"
            for job in group:
                records.append(
                    {
                        "well": job.well,
                        "field": job.field,
                        "timepoint": job.timepoint,
                        "status": "failed",
                        "error": reason,
                        "n_cells": 0,
                        "qc_pass": False,
                        "qc_reason": f"analysis failed: {reason}",
                        "analysis_seconds": float("nan"),
                    }
                )
        future.release()
        bar.update(len(group))
        following = next(waiting, None)
        if following is not None:
            window.add(submit([following])[0])
    bar.close()
    return records
