"""Everyday mishaps that once gave a wrong answer, lost a file or printed a traceback.

Each test is one case of ``docs/bad-inputs.md`` ("No silent harm"); each failed on the code
before the fix. They use real files, real processes and real signals: an export whose image
is replaced between two runs, a user's folder where the output should go, a real file-size
limit that makes a write fail, a real SIGINT to a real process group.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import EXPORT_WELLS
from test_bad_inputs import (
    GOOD_PLATEMAP,
    assert_input_error,
    assert_no_crash,
    checksums,
    image_file,
    inputs_unchanged,
    screenlib,
    write_text,
)

from screenlib.store import PlateLayout, create_plate, open_plate

# gates given by hand: these plates are too small to learn gates from their vehicle wells
MANUAL_GATES = """
[gating]
annexin_gate = 200.0
pi_gate = 200.0
bleedthrough_annexin_to_pi = 0.0
"""


@pytest.fixture
def settings_file(tmp_path) -> Path:
    return write_text(tmp_path / "assay.toml", MANUAL_GATES)


@pytest.fixture(scope="module")
def cells_plate_template(tmp_path_factory) -> Path:
    """A 2-well plate of rendered nuclei (128 x 128, 2 fields of ~30 cells per well)."""
    from screenlib.simulate import render_field

    folder = tmp_path_factory.mktemp("cells_plate")
    layout = PlateLayout(
        name="CELLS",
        wells=EXPORT_WELLS,
        channel_names=["DAPI", "FITC", "Texas Red"],
        shape=(1, 3, 1, 128, 128),
        n_fields=2,
        pixel_size_um=0.65,
    )
    plate = create_plate(folder / "cells.zarr", layout)
    for number, well in enumerate(EXPORT_WELLS):
        for field_index in range(2):
            rendered = render_field(
                np.random.default_rng([11, number, field_index]), shape=(128, 128), n_cells=30
            )
            plate.write_field(well, field_index, rendered.channels)
    return folder / "cells.zarr"


@pytest.fixture
def cells_plate(cells_plate_template, tmp_path) -> Path:
    target = tmp_path / "cells.zarr"
    shutil.copytree(cells_plate_template, target)
    return target


def run(plate: Path, out: Path, settings: Path, platemap_text: str = GOOD_PLATEMAP, *extra):
    platemap = write_text(out.parent / f"{out.name}_map.csv", platemap_text)
    return screenlib(
        "--quiet", "run", plate, "--platemap", platemap, "--out", out, "--settings", settings,
        "--scheduler", "sync", *extra,
    )  # fmt: skip


# ----------------------------------------------------------------------------- 1. data loss


def test_output_folder_with_users_files_is_refused(export, tmp_path, settings_file):
    out = tmp_path / "out"
    (out / "plate.zarr").mkdir(parents=True)
    write_text(out / "plate.zarr" / "my_notes.txt", "three weeks of annotations")
    write_text(out / "thesis.docx", "chapter 3")
    with inputs_unchanged(out):
        result = run(export, out, settings_file)
    assert_input_error(result, str(out), "did not write")


def test_foreign_plate_in_an_engine_folder_is_not_replaced(
    export, tiny_zarr, tmp_path, settings_file
):
    out = tmp_path / "out"
    assert_no_crash(run(tiny_zarr, out, settings_file, GOOD_PLATEMAP, "--no-report"))
    shutil.copytree(tiny_zarr, out / "plate.zarr")  # the user parks another plate there
    with inputs_unchanged(out / "plate.zarr"):
        result = run(export, out, settings_file, GOOD_PLATEMAP, "--overwrite")
    assert_input_error(result, "plate.zarr", "not made by")


def test_another_input_into_a_results_folder_needs_overwrite(
    cells_plate, tiny_zarr, tmp_path, settings_file
):
    out = tmp_path / "out"
    assert run(cells_plate, out, settings_file, GOOD_PLATEMAP, "--no-report").returncode == 0
    before = checksums(out / "wells.csv", out / "fits.csv")
    result = run(tiny_zarr, out, settings_file, GOOD_PLATEMAP, "--no-report")
    assert_input_error(result, "results of another input", "--overwrite")
    assert checksums(out / "wells.csv", out / "fits.csv") == before
    moved = tmp_path / "moved.zarr"
    shutil.copytree(cells_plate, moved)  # the same plate, moved: its fields are reused
    again = run(moved, out, settings_file, GOOD_PLATEMAP, "--no-report", "--overwrite")
    assert again.returncode == 0, again
    assert json.loads((out / "run.json").read_text())["n_fields_todo"] == 0


def test_second_run_into_a_busy_folder_stops(cells_plate, tmp_path, settings_file):
    import fcntl

    out = tmp_path / "out"
    assert run(cells_plate, out, settings_file, GOOD_PLATEMAP, "--no-report").returncode == 0
    with open(out / ".screenlib.lock", "a+") as held:  # a run going on in another terminal
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run(cells_plate, out, settings_file, GOOD_PLATEMAP, "--no-report")
    assert_input_error(result, "another screenlib run", str(out))


# ----------------------------------------------------------------------------- 2. stale results


def _replace_image(export: Path, well: str, field: int, channel: int) -> None:
    path = image_file(export, well, field, channel)
    pixels = tifffile.imread(path)
    tifffile.imwrite(path, np.ascontiguousarray(np.flip(pixels, axis=1)))


def test_changed_export_is_ingested_again_and_its_field_recomputed(export, tmp_path, settings_file):
    # without a flat-field profile (estimated from every field of so small a plate, so one
    # changed image changes it and with it every field's analysis)
    settings = write_text(
        tmp_path / "flat.toml", MANUAL_GATES + "[correction]\nflatfield = false\n"
    )
    first = run(export, tmp_path / "out", settings)
    assert first.returncode == 0, first
    _replace_image(export, "A02", 1, 0)  # a re-acquired field
    second = run(export, tmp_path / "out", settings)
    assert second.returncode == 0, second
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    notes = " ".join(manifest["notes"])
    assert "export" in notes and "changed" in notes and "A02_f1_t0" in notes, notes
    assert manifest["n_fields_todo"] == 1  # only the changed field; the others are reused
    fresh = run(export, tmp_path / "fresh", settings)
    assert fresh.returncode == 0, fresh
    got = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    want = pd.read_parquet(tmp_path / "fresh" / "cells.parquet")
    pd.testing.assert_frame_equal(got, want)


def test_rerun_after_deleting_the_ingested_plate_gives_the_same_results(
    export, tmp_path, settings_file
):
    assert run(export, tmp_path / "out", settings_file).returncode == 0
    before = pd.read_csv(tmp_path / "out" / "wells.csv")
    shutil.rmtree(tmp_path / "out" / "plate.zarr")
    again = run(export, tmp_path / "out", settings_file)
    assert again.returncode == 0, again
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "wells.csv"), before)


# ----------------------------------------------------------------------------- 4. blank channels


@pytest.mark.parametrize("fill", [0, 700])
def test_blank_marker_channel_fails_field_qc(cells_plate, tmp_path, settings_file, fill):
    plate = open_plate(cells_plate, mode="r+")
    for field_index in range(2):
        pixels = plate.read_field("A02", field_index).copy()
        pixels[1] = fill  # the Annexin V channel: all zero, or one constant value
        plate.write_field("A02", field_index, pixels)
    result = run(cells_plate, tmp_path / "out", settings_file)
    assert_no_crash(result)
    fields = pd.read_csv(tmp_path / "out" / "fields.csv", keep_default_na=False)
    blank = fields[fields["well"] == "A02"]
    assert not blank["qc_pass"].any()
    assert blank["qc_reason"].str.contains("annexin_v channel is blank").all()
    wells = pd.read_csv(tmp_path / "out" / "wells.csv", keep_default_na=False).set_index("well")
    assert "no_fields_used" in wells.loc["A02", "qc_flags"]
    assert fields.loc[fields["well"] == "A01", "qc_pass"].all()


def test_nan_marker_channel_fails_field_qc(tmp_path, settings_file):
    from screenlib.simulate import render_field

    layout = PlateLayout(
        name="FLOAT", wells=EXPORT_WELLS, channel_names=["DAPI", "FITC", "Texas Red"],
        shape=(1, 3, 1, 128, 128), dtype="float32", n_fields=1, pixel_size_um=0.65,
    )  # fmt: skip
    plate = create_plate(tmp_path / "float.zarr", layout)
    for number, well in enumerate(EXPORT_WELLS):
        pixels = render_field(np.random.default_rng(number), shape=(128, 128), n_cells=30)
        pixels = pixels.channels.astype(np.float32)
        if well == "A02":
            pixels[2] = np.nan  # PI lost
        plate.write_field(well, 0, pixels)
    result = run(tmp_path / "float.zarr", tmp_path / "out", settings_file)
    assert_no_crash(result)
    fields = pd.read_csv(tmp_path / "out" / "fields.csv", keep_default_na=False)
    row = fields.set_index("well").loc["A02"]
    assert not row["qc_pass"] and "pi channel is all NaN" in row["qc_reason"]


# ----------------------------------------------------------------------------- 5. channel names


def test_channel_name_matching_nothing_is_an_error(cells_plate, tmp_path):
    settings = write_text(
        tmp_path / "assay.toml",
        MANUAL_GATES
        + """
[[channels]]
stain = "hoechst"
name = "Hoechst 33342"
index = 0
[[channels]]
stain = "annexin_v"
name = "FITC"
index = 2
[[channels]]
stain = "pi"
name = "PI"
index = 1
""",
    )
    result = run(cells_plate, tmp_path / "out", settings)
    assert_input_error(result, "Hoechst 33342", "DAPI", "index_wins")
    assert not (tmp_path / "out" / "wells.csv").exists()


def test_index_wins_when_asked(cells_plate, tmp_path):
    settings = write_text(
        tmp_path / "assay.toml",
        MANUAL_GATES
        + """
[[channels]]
stain = "hoechst"
name = "Hoechst 33342"
index = 0
index_wins = true
[[channels]]
stain = "annexin_v"
index = 1
[[channels]]
stain = "pi"
index = 2
""",
    )
    assert (
        run(cells_plate, tmp_path / "out", settings, GOOD_PLATEMAP, "--no-report").returncode == 0
    )


# ----------------------------------------------------------------------------- 6. formulas


def test_formula_like_names_are_neutralised_in_csv(cells_plate, tmp_path, settings_file):
    hostile = '=HYPERLINK("http://x","y")'
    text = GOOD_PLATEMAP.replace("SK-N-SH", f'"{hostile.replace(chr(34), chr(34) * 2)}"')
    result = run(cells_plate, tmp_path / "out", settings_file, text, "--no-report")
    assert result.returncode == 0, result
    wells = pd.read_csv(tmp_path / "out" / "wells.csv", keep_default_na=False)
    assert set(wells["sample"]) == {"'" + hostile}
    for name in ("wells.csv", "fits.csv", "fields.csv", "plate_qc.csv"):
        for line in (tmp_path / "out" / name).read_text(encoding="utf-8").splitlines():
            assert not any(cell.startswith(("=", "@")) for cell in line.split(",")), line
    # the Parquet table keeps the name as written (programs read it, not spreadsheets)
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    assert "sample" not in cells or set(cells["sample"]) <= {hostile}


# ----------------------------------------------------------------------------- 7. one set


def _limited(limit_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_failed_write_leaves_the_previous_output_set_whole(cells_plate, tmp_path, settings_file):
    out = tmp_path / "out"
    assert run(cells_plate, out, settings_file).returncode == 0
    before = checksums(out)
    regate = write_text(tmp_path / "regate.toml", MANUAL_GATES.replace("200.0", "300.0", 1))
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    # a real file-size limit: the parts are reused, and cells.parquet (the largest table)
    # cannot be written
    size = (out / "cells.parquet").stat().st_size
    done = subprocess.run(
        [sys.executable, "-m", "screenlib", "--quiet", "run", cells_plate, "--platemap",
         platemap, "--out", out, "--settings", regate, "--scheduler", "sync"],
        capture_output=True, text=True, preexec_fn=_limited(size // 2), timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cells.parquet" in done.stderr and "unchanged" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    after = checksums(out)
    changed = {k for k in before if before[k] != after.get(k)}
    # only the resume bookkeeping moved; every output of the set is as it was
    assert changed <= {str(out / "run.json")}, changed
    assert not list(out.glob(".staging-*"))


def test_stale_report_is_removed_when_not_rewritten(cells_plate, tmp_path, settings_file):
    out = tmp_path / "out"
    assert run(cells_plate, out, settings_file).returncode == 0
    assert (out / "report.html").exists()
    assert run(cells_plate, out, settings_file, GOOD_PLATEMAP, "--no-report").returncode == 0
    assert not (out / "report.html").exists()
    listed = {e["name"] for e in json.loads((out / "outputs.json").read_text())["files"]}
    assert {"wells.csv", "fits.csv", "settings_used.toml"} <= listed


# ----------------------------------------------------------------------------- 8. Ctrl-C


def test_ctrl_c_stops_quietly_and_a_rerun_resumes(tmp_path):
    example = Path(__file__).parents[1] / "example_plates" / "milademetan_nb"
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "screenlib", "run", example / "export", "--platemap",
        example / "platemap.csv", "--out", out, "--workers", "1",
    ]  # fmt: skip

    def default_sigint() -> None:  # as a terminal's shell starts a command
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "parts").glob("*.json"))) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr.lower() and "resume" in stderr.lower(), stderr
    # after the last progress bar only the one interrupt line may follow
    after = stderr.split("field/s]")[-1]
    said = [line for line in after.splitlines() if line.strip()]
    assert len(said) <= 2, stderr


# ----------------------------------------------------------------------------- 9. smaller ones


def test_appledouble_files_are_not_duplicates(export, tmp_path, settings_file):
    for image in list(export.glob("*.tif")):
        (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)
    result = run(export, tmp_path / "out", settings_file, GOOD_PLATEMAP, "--no-report")
    assert result.returncode == 0, result


def test_platemap_well_outside_the_plate_is_left_out_and_said(cells_plate, tmp_path, settings_file):
    text = GOOD_PLATEMAP + "AA01,SK-N-SH,milademetan,10 nM,sample\n"
    result = run(cells_plate, tmp_path / "out", settings_file, text, "--no-report")
    assert result.returncode == 0, result
    notes = " ".join(json.loads((tmp_path / "out" / "run.json").read_text())["notes"])
    assert "AA01" in notes and "96-well" in notes, notes
    wells = pd.read_csv(tmp_path / "out" / "wells.csv")
    assert "AA01" not in set(wells["well"])  # the plate stays a 96-well plate for its QC


def test_sample_names_differing_in_case_are_an_error(cells_plate, tmp_path, settings_file):
    text = GOOD_PLATEMAP.replace("A02,SK-N-SH", "A02,sk-n-sh")
    assert_input_error(
        run(cells_plate, tmp_path / "out", settings_file, text), "'SK-N-SH'", "'sk-n-sh'"
    )


def test_sample_well_at_zero_is_said(cells_plate, tmp_path, settings_file):
    text = GOOD_PLATEMAP + "B01,SK-N-SH,milademetan,0 nM,sample\n"
    result = run(cells_plate, tmp_path / "out", settings_file, text, "--no-report")
    assert result.returncode == 0, result
    notes = " ".join(json.loads((tmp_path / "out" / "run.json").read_text())["notes"])
    assert "concentration 0" in notes and "B01" in notes, notes


def test_unreachable_scheduler_is_named(cells_plate, tmp_path, settings_file):
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    started = time.monotonic()
    result = screenlib(
        "run", cells_plate, "--platemap", platemap, "--out", tmp_path / "out", "--settings",
        settings_file, "--scheduler", "tcp://127.0.0.1:9", timeout=120,
    )  # fmt: skip
    message = assert_input_error(result, "Dask scheduler", "127.0.0.1:9")
    assert "disk" not in message
    assert time.monotonic() - started < 25  # a refused connection is not retried for 30 s


def test_flipped_chunk_bytes_fail_the_field_by_checksum(cells_plate, tmp_path, settings_file):
    chunk = cells_plate / "A" / "2" / "0" / "0" / "c" / "0" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    result = run(cells_plate, tmp_path / "out", settings_file, GOOD_PLATEMAP, "--no-report")
    assert result.returncode == 3, result  # finished, one field failed
    fields = pd.read_csv(tmp_path / "out" / "fields.csv", keep_default_na=False)
    failed = fields[fields["status"] == "failed"]
    assert list(failed["well"]) == ["A02"] and list(failed["field"]) == [0]
    assert "checksum" in failed["error"].iloc[0]
    assert ".py:" not in failed["error"].iloc[0]  # no source locations in user messages


def test_excel_workbook_has_the_tables_and_no_live_formula(cells_plate, tmp_path, settings_file):
    import openpyxl

    text = GOOD_PLATEMAP.replace("SK-N-SH", "=1+1")
    result = run(cells_plate, tmp_path / "out", settings_file, text, "--no-report", "--excel")
    assert result.returncode == 0, result
    book = openpyxl.load_workbook(tmp_path / "out" / "results.xlsx")
    assert {"wells", "fits", "plate QC"} <= set(book.sheetnames)
    wells = pd.read_excel(tmp_path / "out" / "results.xlsx", sheet_name="wells")
    pd.testing.assert_series_equal(
        wells["n_cells"], pd.read_csv(tmp_path / "out" / "wells.csv")["n_cells"]
    )
    for row in book["wells"].iter_rows():
        for cell in row:
            assert cell.data_type != "f", cell.value  # text, never a formula


def test_unknown_pixel_size_measures_the_scale_and_keeps_the_cells(tmp_path, settings_file):
    """A plate without a pixel size: sizes follow the measured nuclei, µm columns stay empty,
    and the debris rule works relative to the plate (it once called every cell debris)."""
    from screenlib.simulate import render_field

    layout = PlateLayout(
        name="NOPIX", wells=EXPORT_WELLS, channel_names=["DAPI", "FITC", "Texas Red"],
        shape=(1, 3, 1, 160, 160), n_fields=2, pixel_size_um=None,
    )  # fmt: skip
    plate = create_plate(tmp_path / "nopix.zarr", layout)
    truth = 0
    for number, well in enumerate(EXPORT_WELLS):
        for field_index in range(2):
            rng = np.random.default_rng([9, number, field_index])
            rendered = render_field(rng, shape=(160, 160), n_cells=30)
            plate.write_field(well, field_index, rendered.channels)
            truth += int(rendered.labels.max())
    result = run(tmp_path / "nopix.zarr", tmp_path / "out", settings_file, GOOD_PLATEMAP)
    assert result.returncode == 0, result
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    counted = cells[cells["exclusion_reason"] == ""]
    assert cells["area_um2"].isna().all()
    assert 0.8 * truth <= len(counted) <= 1.1 * truth, (len(counted), truth)
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["nucleus_scale"]["diameter_px"] > 0
    used = (tmp_path / "out" / "settings_used.toml").read_text(encoding="utf-8")
    assert "nucleus_diameter_px" in used
    assert "nucleus scale" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
