"""Orchestration on real Dask processes: local vs external cluster, a killed worker, resume.

Everything here is real: a small Zarr plate rendered by the simulator and written with the
store, `dask scheduler` / `dask worker` subprocesses on 127.0.0.1, SIGKILL, Parquet on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from screenlib.orchestrate import run as orchestrate_run
from screenlib.orchestrate import run_plate
from screenlib.settings import (
    AssaySettings,
    GatingSettings,
    SegmentationSettings,
    load_settings,
    settings_from_dict,
)
from screenlib.settings_template import settings_to_toml
from screenlib.simulate import render_field
from screenlib.store import PlateLayout, create_plate, open_plate

WELLS = [f"{row}{column:02d}" for row in "AB" for column in range(1, 7)]
N_FIELDS = 2
FIELD_SIZE = 256
N_TASKS = len(WELLS) * N_FIELDS


def _platemap_rows() -> list[dict]:
    rows = []
    for well in WELLS:
        column = int(well[1:])
        if column == 1:
            rows.append(dict(well=well, role="negative_control", concentration="0 nM"))
        elif column == 2:
            rows.append(dict(well=well, role="positive_control", concentration="10 uM"))
        else:
            rows.append(dict(well=well, role="sample", concentration=f"{10 ** (column - 3)} nM"))
    for row in rows:
        row.update(sample="SK-N-SH", compound="milademetan")
    return rows


def _apoptotic_share(well: str) -> float:
    column = int(well[1:])
    return {1: 0.05, 2: 0.7}.get(column, 0.05 + 0.12 * (column - 2))


@pytest.fixture(scope="session")
def plate_template(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-well x 2-field plate of 256 x 256 three-channel fields, and its plate map."""
    folder = tmp_path_factory.mktemp("plate_template")
    layout = PlateLayout(
        name="ORCH-TEST",
        wells=WELLS,
        channel_names=["w1", "w2", "w3"],
        shape=(1, 3, 1, FIELD_SIZE, FIELD_SIZE),
        n_fields=N_FIELDS,
        pixel_size_um=0.65,
    )
    plate = create_plate(folder / "plate.zarr", layout)
    for number, well in enumerate(WELLS):
        share = _apoptotic_share(well)
        for field_index in range(N_FIELDS):
            rendered = render_field(
                np.random.default_rng([7, number, field_index]),
                shape=(FIELD_SIZE, FIELD_SIZE),
                n_cells=40,
                class_fractions={
                    "viable": 1 - share,
                    "early_apoptotic": share / 2,
                    "late_apoptotic": share / 2,
                    "necrotic": 0.0,
                },
            )
            plate.write_field(well, field_index, rendered.channels)
    platemap = folder / "platemap.csv"
    pd.DataFrame(_platemap_rows()).to_csv(platemap, index=False)
    return folder / "plate.zarr", platemap


@pytest.fixture
def plate_copy(plate_template, tmp_path) -> tuple[Path, Path]:
    """A private copy of the template plate (runs write labels into it)."""
    plate, platemap = plate_template
    shutil.copytree(plate, tmp_path / "plate.zarr")
    return tmp_path / "plate.zarr", platemap


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ExternalCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, torn down on close."""

    def __init__(self, folder: Path, n_workers: int = 2) -> None:
        self.folder = folder
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler = self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            "scheduler",
        )
        self.workers = [self.add_worker(number) for number in range(n_workers)]
        self.wait_for_workers(n_workers)

    def _spawn(self, arguments: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_" + arguments[0], *arguments[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def add_worker(self, number: int) -> subprocess.Popen:
        # no nanny: the process we SIGKILL is the worker itself, not a nanny that respawns it
        return self._spawn(
            [
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--death-timeout",
                "30",
                "--memory-limit",
                "2GiB",
            ],
            f"worker{number}",
        )

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s")

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        client = self.client()
        try:
            client.wait_for_workers(n, timeout=timeout)
        finally:
            client.close()

    def close(self) -> None:
        # workers hold nothing worth a graceful shutdown; the scheduler then stops at once
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self.scheduler.terminate()
        try:
            self.scheduler.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.scheduler.kill()
            self.scheduler.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = ExternalCluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def reference(plate_template, tmp_path_factory) -> dict:
    """One run on the default local cluster (2 worker processes): the results to match."""
    plate, platemap = plate_template
    folder = tmp_path_factory.mktemp("reference")
    shutil.copytree(plate, folder / "plate.zarr")
    summary = run_plate(
        folder / "plate.zarr",
        platemap,
        folder / "out",
        AssaySettings(),
        n_workers=2,
        progress=False,
    )
    return {"summary": summary, "out": folder / "out", "plate": folder / "plate.zarr"}


def test_a_zarr_inputs_gallery_comes_from_the_labels_in_the_output_folder(reference):
    """A Zarr input is only read, so its labels live in OUT/labels.zarr: the report's cell
    gallery reads them, and keys its reused mosaics by them, there (not in the input)."""
    text = (reference["out"] / "report.html").read_text(encoding="utf-8")
    assert "could not be read" not in text
    assert sorted((reference["out"] / "figures").glob("gallery_*.png"))
    assert 'alt="viable cell' in text


def _first_field(plate: Path) -> tuple[str, int]:
    opened = open_plate(plate)
    return opened.wells[0], opened.fields(opened.wells[0])[0]


def _results(out_dir: Path, plate: Path) -> dict:
    """The outputs a run must reproduce exactly (timings dropped)."""
    cells = pd.read_parquet(out_dir / "cells.parquet")
    fields = pd.read_csv(out_dir / "fields.csv").drop(columns=["analysis_seconds"])
    # a Zarr input is only read: the labels go to the output folder
    assert not open_plate(plate).label_names(*_first_field(plate))
    opened = open_plate(out_dir / "labels.zarr")
    labels = {(w, f): opened.read_labels(w, f) for w in opened.wells for f in opened.fields(w)}
    tables = {}
    for name in ("wells.csv", "plate_qc.csv", "fits.csv"):
        if (out_dir / name).exists():
            tables[name] = pd.read_csv(out_dir / name)
    return {"cells": cells, "fields": fields, "labels": labels, "tables": tables}


def _assert_same_results(got: dict, expected: dict) -> None:
    pd.testing.assert_frame_equal(got["cells"], expected["cells"])
    pd.testing.assert_frame_equal(got["fields"], expected["fields"])
    assert got["labels"].keys() == expected["labels"].keys()
    for key, labels in expected["labels"].items():
        np.testing.assert_array_equal(got["labels"][key], labels, err_msg=str(key))
    assert got["tables"].keys() == expected["tables"].keys()
    for name, table in expected["tables"].items():
        pd.testing.assert_frame_equal(got["tables"][name], table, obj=name)


def _markers(out_dir: Path) -> dict[str, int]:
    """Finished fields' completion markers -> modification time (ns)."""
    found = {}
    for marker in (out_dir / "parts").glob("*.json"):
        data = json.loads(marker.read_text())
        if data.get("status") == "done":
            found[marker.stem] = marker.stat().st_mtime_ns
    return found


def _wait_for_markers(out_dir: Path, at_least: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(list((out_dir / "parts").glob("*.json"))) if (out_dir / "parts").exists() else 0
        if count >= at_least:
            return count
        time.sleep(0.005)
    raise AssertionError(f"fewer than {at_least} fields finished in {timeout} s")


def test_reference_run_is_complete(reference):
    summary = reference["summary"]
    cells = pd.read_parquet(reference["out"] / "cells.parquet")
    fields = pd.read_csv(reference["out"] / "fields.csv")
    assert summary.n_fields == N_TASKS and summary.n_fields_computed == N_TASKS
    assert summary.n_fields_failed == 0 and (fields["status"] == "done").all()
    assert len(fields) == N_TASKS
    # every field contributes cells; ids are unique and carry their field
    # the summary counts the cells that enter the fractions (not debris, not QC-failed fields)
    assert summary.n_cells == int((cells["exclusion_reason"] == "").sum()) > 20 * N_TASKS
    assert cells["cell_id"].is_unique
    assert set(cells["well"]) == set(WELLS)
    first = cells.iloc[0]
    assert first["cell_id"] == f"{first['well']}_f{first['field']}_t0_{first['label']}"
    assert {"plate", "row", "column", "field", "timepoint"} <= set(cells.columns)
    # labels were written for every field and match the cell counts
    plate = open_plate(reference["out"] / "labels.zarr")
    for well in WELLS:
        for field_index in range(N_FIELDS):
            labels = plate.read_labels(well, field_index)
            n_cells = ((cells["well"] == well) & (cells["field"] == field_index)).sum()
            assert len(np.unique(labels[labels > 0])) == n_cells
    assert (reference["out"] / "report.html").stat().st_size > 0
    run = json.loads((reference["out"] / "run.json").read_text())
    assert run["status"] == "finished" and run["n_fields_computed"] == N_TASKS
    # the settings used are the defaults plus what the run measured (the nucleus scale), so
    # --settings settings_used.toml repeats the analysis exactly
    used = load_settings(reference["out"] / "settings_used.toml")
    measured = run["nucleus_scale"]["diameter_px"]
    assert measured > 0 and used.segmentation.nucleus_diameter_px == measured
    expected = AssaySettings()
    segmentation = dataclasses.replace(expected.segmentation, nucleus_diameter_px=measured)
    assert used == dataclasses.replace(expected, segmentation=segmentation)


def test_external_cluster_gives_identical_results(reference, cluster, plate_copy, tmp_path):
    plate, platemap = plate_copy
    summary = run_plate(
        plate, platemap, tmp_path / "out", AssaySettings(), scheduler=cluster.address,
        progress=False, report=False,
    )  # fmt: skip
    assert summary.n_fields_computed == N_TASKS and summary.n_fields_failed == 0
    _assert_same_results(
        _results(tmp_path / "out", plate), _results(reference["out"], reference["plate"])
    )


def test_killed_worker_run_completes_identically(reference, plate_copy, tmp_path):
    plate, platemap = plate_copy
    own_cluster = ExternalCluster(tmp_path)
    try:
        victim = own_cluster.workers[0]
        killed_at: list[int] = []

        def kill_when_a_quarter_is_done() -> None:
            killed_at.append(_wait_for_markers(tmp_path / "out", N_TASKS // 4))
            os.kill(victim.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_a_quarter_is_done, daemon=True)
        killer.start()
        summary = run_plate(
            plate, platemap, tmp_path / "out", AssaySettings(), scheduler=own_cluster.address,
            progress=False, report=False,
        )  # fmt: skip
        killer.join(timeout=30)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert killed_at and killed_at[0] < N_TASKS, "the worker was killed after the run"
        assert summary.n_fields_failed == 0 and summary.n_fields_computed == N_TASKS
        _assert_same_results(
            _results(tmp_path / "out", plate), _results(reference["out"], reference["plate"])
        )
    finally:
        own_cluster.close()


RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from screenlib.orchestrate import run_plate
    run_plate(sys.argv[1], sys.argv[2], sys.argv[3], n_workers=2, progress=False, report=False)
    """
)


def test_interrupted_run_resumes_only_missing_fields(reference, cluster, plate_copy, tmp_path):
    plate, platemap = plate_copy
    out_dir = tmp_path / "out"
    # a whole local run (client, scheduler and worker processes) killed mid-plate
    runner = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(plate), str(platemap), str(out_dir)],
        start_new_session=True,
    )
    try:
        _wait_for_markers(out_dir, N_TASKS // 3)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    before = _markers(out_dir)
    assert 0 < len(before) < N_TASKS, f"{len(before)} fields done when interrupted"
    assert not (out_dir / "cells.parquet").exists()

    summary = run_plate(
        plate,
        platemap,
        out_dir,
        AssaySettings(),
        scheduler=cluster.address,
        progress=False,
        report=False,
    )
    after = _markers(out_dir)
    assert summary.n_fields_reused == len(before)
    assert summary.n_fields_computed == N_TASKS - len(before)
    assert {stem: after[stem] for stem in before} == before, "a finished field was redone"
    assert len(after) == N_TASKS
    results = _results(out_dir, plate)
    assert results["cells"]["cell_id"].is_unique
    _assert_same_results(results, _results(reference["out"], reference["plate"]))
    assert not list((out_dir / "parts").glob(".*.tmp")), "temporary files left behind"


def test_settings_changes_invalidate_only_what_they_affect(
    reference, cluster, plate_copy, tmp_path
):
    plate, platemap = plate_copy
    out_dir = tmp_path / "out"
    first = run_plate(plate, platemap, out_dir, AssaySettings(), scheduler=cluster.address,
                      progress=False, report=False)  # fmt: skip
    assert first.n_fields_computed == N_TASKS
    # gating-only change: finalize again, no field recomputed
    gating_only = AssaySettings(gating=GatingSettings(k_mad=3.0))
    second = run_plate(plate, platemap, out_dir, gating_only, scheduler=cluster.address,
                       progress=False, report=False)  # fmt: skip
    assert second.n_fields_computed == 0 and second.n_fields_reused == N_TASKS
    used = load_settings(out_dir / "settings_used.toml")
    assert used.gating == gating_only.gating  # the new gating; the measured scale besides
    # a segmentation change invalidates every part
    segmentation = AssaySettings(segmentation=SegmentationSettings(smoothing_sigma_um=1.0))
    third = run_plate(plate, platemap, out_dir, segmentation, scheduler=cluster.address,
                      progress=False, report=False)  # fmt: skip
    assert third.n_fields_computed == N_TASKS and third.n_fields_reused == 0
    # force recomputes everything even when nothing changed
    fourth = run_plate(plate, platemap, out_dir, segmentation, scheduler=cluster.address,
                       force=True, progress=False, report=False)  # fmt: skip
    assert fourth.n_fields_computed == N_TASKS
    assert pd.read_parquet(out_dir / "cells.parquet")["cell_id"].is_unique


def _corrupt_one_chunk(plate: Path, well: str, field_index: int) -> None:
    row, column = well[0], int(well[1:])
    chunks = sorted((plate / row / str(column) / str(field_index) / "0" / "c").rglob("*"))
    chunk = [c for c in chunks if c.is_file()][0]
    chunk.write_bytes(b"not a blosc frame" * 4)


def test_cli_records_a_bad_field_and_exits_3(reference, cluster, plate_copy, tmp_path):
    from screenlib.cli import EXIT_PARTIAL, main

    plate, platemap = plate_copy
    _corrupt_one_chunk(plate, "A03", 1)
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["-q", "run", str(plate), "--platemap", str(platemap), "--out", str(out_dir),
              "--scheduler", cluster.address, "--no-report"])  # fmt: skip
    assert exited.value.code == EXIT_PARTIAL
    fields = pd.read_csv(out_dir / "fields.csv", keep_default_na=False)
    bad = fields[(fields["well"] == "A03") & (fields["field"] == 1)].iloc[0]
    assert bad["status"] == "failed" and bad["error"] and not bool(bad["qc_pass"])
    assert "analysis failed" in bad["qc_reason"]
    assert (fields["status"] == "done").sum() == N_TASKS - 1
    # the other fields' cells are all there (the flat-field sample lost one field, so
    # intensities may differ slightly from the reference, but not the fields or labels)
    cells = pd.read_parquet(out_dir / "cells.parquet")
    assert cells["cell_id"].is_unique
    per_field = cells.groupby(["well", "field"]).size()
    assert ("A03", 1) not in per_field.index and len(per_field) == N_TASKS - 1


def test_settings_toml_round_trips():
    settings = AssaySettings(
        pixel_size_um=0.5, gating=GatingSettings(annexin_gate=120.0, method="mixture")
    )
    text = settings_to_toml(settings)
    assert "[gating]" in text
    assert settings_from_dict(tomllib.loads(text)) == settings


def test_export_folder_is_ingested_once(cluster, tmp_path):
    import tifffile

    export = tmp_path / "export"
    export.mkdir()
    wells = ["A01", "A02", "B01", "B02"]
    for number, well in enumerate(wells):
        for site in (1, 2):
            share = 0.7 if well == "B02" else 0.05  # B02: the positive control
            rendered = render_field(
                np.random.default_rng([3, number, site]), shape=(128, 128), n_cells=40,
                class_fractions={"viable": 1 - share, "early_apoptotic": share / 2,
                                 "late_apoptotic": share / 2, "necrotic": 0.0},
            )  # fmt: skip
            for channel, plane in enumerate(rendered.channels, start=1):
                tifffile.imwrite(export / f"EXP1_{well}_s{site}_w{channel}.tif", plane)
    platemap = tmp_path / "platemap.csv"
    pd.DataFrame(
        {
            "well": wells,
            "role": ["negative_control", "sample", "negative_control", "positive_control"],
            "concentration": ["0 nM", "100 nM", "0 nM", "1 uM"],
            "sample": "SK-N-SH",
            "compound": "milademetan",
        }
    ).to_csv(platemap, index=False)
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    out_dir = tmp_path / "out"
    first = run_plate(export, platemap, out_dir, scheduler=cluster.address, progress=False,
                      report=False)  # fmt: skip
    assert first.n_fields == 8 and first.n_fields_computed == 8 and first.n_fields_failed == 0
    ingested = out_dir / "plate.zarr"
    assert sorted(open_plate(ingested).wells) == wells
    stamp = (ingested / "zarr.json").stat().st_mtime_ns
    second = run_plate(export, platemap, out_dir, scheduler=cluster.address, progress=False,
                       report=False)  # fmt: skip
    assert second.n_fields_reused == 8 and second.n_fields_computed == 0
    assert (ingested / "zarr.json").stat().st_mtime_ns == stamp, "the export was ingested again"
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before, "raw input modified"


def test_workers_get_screenlib_malloc_settings(cluster, monkeypatch):
    """Local workers start with WORKER_ENVIRONMENT even when an earlier Dask nanny left Dask's
    own value in os.environ; workers of an existing cluster are tuned by the task itself."""
    from distributed import Client

    from screenlib.orchestrate._cluster import (
        WORKER_ENVIRONMENT,
        local_cluster,
        tune_worker_malloc,
    )

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask nanny leaves behind
    for variable in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(variable, raising=False)
    with local_cluster(1, dashboard_address=None) as local, Client(local) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRONMENT})
        assert list(seen.values()) == [WORKER_ENVIRONMENT]
        assert list(client.run(tune_worker_malloc).values()) == [False]  # set at start
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # the client process is untouched
    assert "MALLOC_ARENA_MAX" not in os.environ
    # `dask worker` processes started without them get the thresholds from the first task
    external = cluster.client()
    try:
        tuned = external.run(tune_worker_malloc)
    finally:
        external.close()
    assert len(tuned) == 2 and all(tuned.values()) == sys.platform.startswith("linux")


def test_nucleus_scale_is_measured_again_by_other_analysis_code(plate_copy, tmp_path, monkeypatch):
    plate, platemap = plate_copy
    out = tmp_path / "out"

    def scale_key() -> str:
        return json.loads((out / "run.json").read_text())["nucleus_scale"]["key"]

    options = {"scheduler": "sync", "progress": False, "report": False}
    run_plate(plate, platemap, out, AssaySettings(), **options)
    first = scale_key()
    assert run_plate(plate, platemap, out, AssaySettings(), **options).n_fields_computed == 0
    assert scale_key() == first  # same pixels, same code: the measured scale is reused
    monkeypatch.setattr(orchestrate_run, "analysis_code_digest", lambda: "other analysis code")
    again = run_plate(plate, platemap, out, AssaySettings(), **options)
    assert again.n_fields_computed == N_TASKS and scale_key() != first
