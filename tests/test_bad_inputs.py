"""The bad-input battery: every bad input a user can hand screenlib, met the way a user meets it.

Each test is one row of ``docs/bad-inputs.md``. A bad input must end in one of two ways:

* the command stops with exit status 2 and one ``error:`` line naming the file / well / line /
  key and hinting the fix, or
* the run goes on and the problem is flagged in its outputs (``fields.csv``, ``wells.csv``,
  ``fits.csv``) — exit status 3 when fields could not be analysed.

Never a Python traceback, and never a changed input file: every command runs inside
:func:`inputs_unchanged`, which checksums the raw inputs before and after.

Commands run through ``screenlib.cli.main`` (the console entry point, with its error
handling) in this process, which is fast; ``screenlib run`` and a few others run as real
``python -m screenlib`` subprocesses. ``SCREENLIB_BAD_INPUTS_SUBPROCESS=1`` runs every command
as a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import EXPORT_WELLS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screenlib.cli import EXIT_INPUT_ERROR, EXIT_PARTIAL
from screenlib.doseresponse.units import UNIT_FACTORS
from screenlib.errors import InputError
from screenlib.platemap import parse_concentration, read_platemap
from screenlib.store import PlateLayout, create_plate, open_plate

ALL_SUBPROCESS = os.environ.get("SCREENLIB_BAD_INPUTS_SUBPROCESS") == "1"

# ----------------------------------------------------------------------------- helpers


@dataclass
class CliResult:
    """What a user sees: exit status, standard output and standard error."""

    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def screenlib(*args: object, subprocess_: bool = False, timeout: float = 300) -> CliResult:
    """Run ``screenlib ARGS`` as a user would (console entry point, error handling included)."""
    argv = [str(a) for a in args]
    if subprocess_ or ALL_SUBPROCESS:
        done = subprocess.run(
            [sys.executable, "-m", "screenlib", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)
    from screenlib.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_no_crash(result: CliResult) -> None:
    """No traceback and no 'internal error' (the entry point's last line of defence)."""
    assert "Traceback" not in result.stderr, result
    assert "internal error" not in result.stderr, result
    assert result.returncode in (0, EXIT_INPUT_ERROR, EXIT_PARTIAL), result


def assert_input_error(result: CliResult, *fragments: str) -> str:
    """Exit 2 with one ``error:`` line holding every fragment (file, well, line, fix)."""
    assert_no_crash(result)
    assert result.returncode == EXIT_INPUT_ERROR, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or line.startswith("Error:")]
    assert len(errors) == 1, result
    message = errors[0]
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    return message


def checksums(*roots: Path, skip_labels: bool = False) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders) by path; folders as ``"dir"``."""
    found: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if skip_labels and "labels" in path.relative_to(root).parts:
                continue
            if path.is_dir():
                found[str(path)] = "dir"
            else:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@contextlib.contextmanager
def inputs_unchanged(*roots: Path, skip_labels: bool = False):
    """Assert that no file under ``roots`` is changed, removed or added by the block.

    ``skip_labels``: a Zarr plate given to ``screenlib run`` receives its nuclei label images
    (``labels/``, by design of the store); its image data and metadata must not change.
    """
    before = checksums(*roots, skip_labels=skip_labels)
    assert before, f"nothing to checksum under {roots}"
    yield
    after = checksums(*roots, skip_labels=skip_labels)
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not changed, f"input files changed: {changed}"
    assert before.keys() == after.keys(), (
        f"input files removed {sorted(before.keys() - after.keys())}, "
        f"added {sorted(after.keys() - before.keys())}"
    )


def image_file(export: Path, well: str, field: int, channel: int) -> Path:
    """The ImageXpress file of one image of a simulated export (1-based s/w in the name)."""
    (path,) = export.glob(f"*_{well}_s{field + 1}_w{channel + 1}.tif")
    return path


# ----------------------------------------------------------------------------- fixtures

GOOD_PLATEMAP = """well,sample,compound,concentration,role
A01,SK-N-SH,DMSO,0 nM,vehicle
A02,SK-N-SH,milademetan,100 nM,sample
"""


@pytest.fixture(scope="session")
def cells_zarr(tmp_path_factory) -> Path:
    """A 2-well plate of rendered nuclei (96 x 96, ~15 cells per field) for short runs."""
    from screenlib.simulate import render_field

    folder = tmp_path_factory.mktemp("cells_zarr")
    layout = PlateLayout(
        name="CELLS",
        wells=EXPORT_WELLS,
        channel_names=["DAPI", "FITC", "Texas Red"],
        shape=(1, 3, 1, 96, 96),
        n_fields=1,
        pixel_size_um=0.65,
    )
    plate = create_plate(folder / "cells.zarr", layout)
    for number, well in enumerate(EXPORT_WELLS):
        rendered = render_field(np.random.default_rng([9, number]), shape=(96, 96), n_cells=15)
        plate.write_field(well, 0, rendered.channels)
    return folder / "cells.zarr"


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_with_platemap(tmp_path: Path, plate: Path, platemap_text: str) -> tuple[CliResult, Path]:
    """``screenlib run`` of a plate with the given plate map; checks inputs are unchanged."""
    platemap = write_text(tmp_path / "maps" / "platemap.csv", platemap_text)
    with inputs_unchanged(plate, platemap):
        result = screenlib(
            "--quiet", "run", plate, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1, "--no-report",
        )  # fmt: skip
    return result, platemap


# ============================================================================= raw images


def test_truncated_tiff(export, tmp_path):
    bad = image_file(export, "A02", 1, 1)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, bad.name, "truncated or corrupt", "export this image again")
    assert not (tmp_path / "p.zarr").exists()  # no half-written plate left behind


def test_truncated_tiff_given_to_run(export, tmp_path):
    # `run` on an export folder ingests it on the fly: the same error, from a subprocess
    bad = image_file(export, "A01", 1, 0)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size - 700])
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(export, platemap):
        result = screenlib(
            "--quiet", "run", export, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1, subprocess_=True,
        )  # fmt: skip
    assert_input_error(result, bad.name, "truncated or corrupt")


def test_corrupt_tiff(export, tmp_path):
    bad = image_file(export, "A01", 0, 2)
    bad.write_bytes(np.random.default_rng(1).bytes(5000))  # not a TIFF at all
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, bad.name, "unreadable tiff", "export this image again")


def test_zero_byte_tiff(export, tmp_path):
    bad = image_file(export, "A02", 0, 0)
    bad.write_bytes(b"")
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, bad.name, "zero-byte", "re-export it or remove it")


def test_wrong_shape(export, tmp_path):
    bad = image_file(export, "A02", 1, 2)
    tifffile.imwrite(bad, np.zeros((40, 48), np.uint16))
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(
        result, bad.name, "well A02 field 1 channel 2", "(40, 48)", "same shape and pixel type"
    )


def test_wrong_dtype(export, tmp_path):
    bad = image_file(export, "A02", 0, 1)
    tifffile.imwrite(bad, np.zeros((48, 48), np.float32))
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, bad.name, "well A02 field 0 channel 1", "float32", "uint16")


def test_missing_channel(export, tmp_path):
    image_file(export, "A02", 1, 2).unlink()
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(
        result, "1 image(s) missing", "well A02 field 1 channel 2", "_A02_s2_w3.tif",
        "--allow-missing",
    )  # fmt: skip


def test_missing_field(export, tmp_path):
    for channel in range(3):
        image_file(export, "A01", 1, channel).unlink()
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, "3 image(s) missing", "well A01 field 1 channel 0", "restore them")


def test_missing_well(export, tmp_path):
    # the .HTD side-car lists A02 as acquired: its images must be there
    for path in export.glob("*_A02_*.tif"):
        path.unlink()
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, "6 image(s) missing", "well A02 field 0 channel 0")


def test_duplicate_files_for_one_image(export, tmp_path):
    original = image_file(export, "A01", 0, 0)
    (export / "copy").mkdir()
    duplicate = export / "copy" / original.name  # e.g. a re-export saved beside the first
    shutil.copy(original, duplicate)
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    message = assert_input_error(result, "two images for well A01 field 0 channel 0", "remove one")
    assert str(original) in message and str(duplicate) in message  # both named


def test_duplicate_files_differing_in_case(export, tmp_path):
    original = image_file(export, "A02", 1, 1)
    twin = original.with_name(original.stem + ".TIF")
    shutil.copy(original, twin)
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    message = assert_input_error(result, "two images for well A02 field 1 channel 1", "remove one")
    assert original.name in message and twin.name in message


def test_empty_plate_no_images(tmp_path):
    empty = tmp_path / "export"
    empty.mkdir()
    (empty / "notes.txt").write_text("the microscope crashed\n")
    with inputs_unchanged(empty):
        result = screenlib("ingest", "--no-progress", empty, tmp_path / "p.zarr")
    assert_input_error(result, str(empty), "no .tif/.tiff images", "folder that holds")


def test_empty_plate_given_to_run(export_template, tmp_path):
    # only the .HTD side-car, no image: `run` ingests on the fly and must stop the same way
    export = tmp_path / "export"
    export.mkdir()
    for side_car in export_template.glob("*.HTD"):
        shutil.copy(side_car, export)
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(export, platemap):
        result = screenlib(
            "--quiet", "run", export, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1, subprocess_=True,
        )  # fmt: skip
    assert_input_error(result, "no .tif/.tiff images")


def test_images_of_unrecognised_names(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    tifffile.imwrite(export / "IMG_0001.tif", np.zeros((8, 8), np.uint16))
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, tmp_path / "p.zarr")
    assert_input_error(result, "IMG_0001.tif", "--pattern")


def test_ingest_output_not_writable(export, tmp_path):
    # tests run as root, for whom chmod changes nothing: a regular file where a folder must go
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder\n")
    with inputs_unchanged(export, blocker):
        result = screenlib("ingest", "--no-progress", export, blocker / "plate.zarr")
    assert_input_error(result, "cannot create plate", "plate.zarr", "choose a writable folder")


def test_ingest_refuses_to_overwrite(export, tmp_path):
    existing = tmp_path / "plate.zarr"
    existing.mkdir()
    keep = write_text(existing / "precious.txt", "results of last week\n")
    with inputs_unchanged(export, keep):
        result = screenlib("ingest", "--no-progress", export, existing)
    assert_input_error(result, "already exists", "overwrite")


def test_ingest_output_inside_export(export):
    with inputs_unchanged(export):
        result = screenlib("ingest", "--no-progress", export, export / "plate.zarr")
    assert_input_error(result, "inside the export", "elsewhere")


def test_allowed_missing_image_is_refused_when_read(export, tmp_path):
    # --allow-missing records the gap; the gap is still never read as a black image
    image_file(export, "A02", 1, 2).unlink()
    with inputs_unchanged(export):
        result = screenlib(
            "ingest", "--no-progress", "--allow-missing", export, tmp_path / "p.zarr"
        )
    assert_no_crash(result)
    assert result.returncode == 0 and "1 missing image(s)" in result.stdout, result
    plate = open_plate(tmp_path / "p.zarr")
    assert plate.read_field("A02", 0).shape[0] == 3
    with pytest.raises(InputError, match=r"well A02 field 1: .*recorded as missing at ingest"):
        plate.read_field("A02", 1)


# ============================================================================= `screenlib segment`


@pytest.mark.parametrize("damage", ["zero_byte", "truncated", "four_dimensional"])
def test_segment_bad_image(export, tmp_path, damage):
    image = image_file(export, "A01", 0, 0)
    if damage == "zero_byte":
        image.write_bytes(b"")
    elif damage == "truncated":
        image.write_bytes(image.read_bytes()[:3000])
    else:
        tifffile.imwrite(image, np.zeros((2, 3, 16, 16), np.uint16), photometric="minisblack")
    with inputs_unchanged(export):
        result = screenlib("segment", image, "--out", tmp_path / "labels.tif")
    assert_input_error(result, image.name)
    assert not (tmp_path / "labels.tif").exists()


def test_segment_output_not_writable(export, tmp_path):
    image = image_file(export, "A01", 0, 0)
    blocker = write_text(tmp_path / "results", "a file, not a folder\n")
    with inputs_unchanged(export, blocker):
        result = screenlib("segment", image, "--out", blocker / "labels.tif")
    assert_input_error(result, "labels.tif")


def test_init_on_empty_folder(tmp_path):
    empty = tmp_path / "export"
    empty.mkdir()
    result = screenlib("init", empty, "--out", tmp_path / "assay.toml")
    assert_input_error(result, str(empty), "no .tif/.tiff images")
    assert not (tmp_path / "assay.toml").exists()


def test_init_output_not_writable(export, tmp_path):
    blocker = write_text(tmp_path / "results", "a file, not a folder\n")
    with inputs_unchanged(export, blocker):
        result = screenlib("init", export, "--out", blocker / "assay.toml")
    assert_input_error(result, "assay.toml")


# ============================================================================= plate maps

PLATEMAP_HEADER = "well,sample,compound,concentration,role\n"


PLATEMAP_CASES = (
    (
        "malformed_well",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA-2,SK-N-SH,milademetan,100 nM,sample\n",
        ["line 3", "column 'well'", "malformed well 'A-2'", "like A1 or A01"],
    ),
    (
        "duplicate_well",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,m,1 nM,sample\nA2,SK-N-SH,m,1 nM,sample\n",
        ["line 4", "duplicate well A02", "first on line 3"],
    ),
    (
        "conflicting_concentrations_for_one_well",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,m,1 nM,sample\nA02,SK-N-SH,m,5 nM,sample\n",
        ["line 4", "duplicate well A02", "first on line 3"],
    ),
    (
        "unparseable_concentration",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,milademetan,ten uM,sample\n",
        ["line 3", "column 'concentration'", "cannot parse", "like '10 uM'"],
    ),
    (
        "unknown_unit",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,milademetan,10 uMol,sample\n",
        ["line 3", "unknown concentration unit 'uMol'", "nM"],
    ),
    (
        "number_without_unit",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,milademetan,100,sample\n",
        ["line 3", "no unit", "'unit' column"],
    ),
    (
        "negative_concentration",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,milademetan,-5 nM,sample\n",
        ["line 3", "column 'concentration'", "negative"],
    ),
    (
        "vehicle_with_a_dose",
        "A01,SK-N-SH,DMSO,10 nM,vehicle\nA02,SK-N-SH,milademetan,5 nM,sample\n",
        ["line 2", "vehicle well A01", "give it 0 or leave it empty"],
    ),
    (
        "unknown_role",
        "A01,SK-N-SH,DMSO,0 nM,control\nA02,SK-N-SH,milademetan,5 nM,sample\n",
        ["line 2", "column 'role'", "unknown role 'control'", "negative_control"],
    ),
    (
        "ragged_row",
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,5 nM,sample\n",
        ["line 3", "4 fields but the header has 5"],
    ),
)


@pytest.mark.parametrize(
    ("case", "body", "fragments"), PLATEMAP_CASES, ids=[case[0] for case in PLATEMAP_CASES]
)
def test_platemap_errors_stop_run(tiny_zarr, tmp_path, case, body, fragments):
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, PLATEMAP_HEADER + body)
    assert_input_error(result, str(platemap), *fragments)


def test_platemap_conflicting_units_for_one_well(tiny_zarr, tmp_path):
    text = (
        "well,sample,compound,concentration,unit,role\n"
        "A01,SK-N-SH,DMSO,0,nM,vehicle\nA02,SK-N-SH,milademetan,10 nM,uM,sample\n"
    )
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, text)
    assert_input_error(result, str(platemap), "line 3", "unit 'nM' but the unit column", "keep one")


def test_platemap_missing_role_column(tiny_zarr, tmp_path):
    # without roles, a compound at one dose may be a positive control: refused (docs/platemaps.md)
    text = "well,sample,compound,concentration\nA01,SK-N-SH,DMSO,0 nM\nA02,SK-N-SH,m,5 nM\n"
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, text)
    assert_input_error(result, str(platemap), "line 3", "no role column", "add a 'role' column")


def test_platemap_empty_file(tiny_zarr, tmp_path):
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, "")
    assert_input_error(result, str(platemap), "empty", "'well' and 'role'")


def test_platemap_header_only(tiny_zarr, tmp_path):
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, PLATEMAP_HEADER)
    assert_input_error(result, str(platemap), "no wells")


@pytest.mark.parametrize("kind", ["neither_utf8_nor_cp1252", "xlsx_workbook"])
def test_platemap_not_utf8(tiny_zarr, tmp_path, kind):
    # (UTF-16 "Unicode text" and Windows-1252 maps are read: tests/test_platemap_battery.py)
    platemap = tmp_path / "platemap.csv"
    text = PLATEMAP_HEADER + "A01,SK-N-SH,DMSO,0 µM,vehicle\n"
    if kind == "neither_utf8_nor_cp1252":  # 0x81 and 0x8d are undefined in Windows-1252
        platemap.write_bytes(text.encode("utf-8") + b"A02,\x81\x8d\xff,x,1 uM,sample\n")
    else:  # an Excel workbook saved under a .csv name (a zip archive)
        import zipfile

        with zipfile.ZipFile(platemap, "w") as workbook:
            workbook.writestr("xl/worksheets/sheet1.xml", "<worksheet>\u00b5</worksheet>" * 50)
    with inputs_unchanged(tiny_zarr, platemap):
        result = screenlib(
            "--quiet", "run", tiny_zarr, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1,
        )  # fmt: skip
    assert_input_error(result, str(platemap), "UTF-8", "save it as CSV")


@pytest.mark.parametrize(
    ("well", "fragment"), [("A60", "outside a 1536-well plate"), ("AH01", "rows A..AF")]
)
def test_platemap_unknown_well(tiny_zarr, tmp_path, well, fragment):
    # a well that exists on no plate (A60: 48 columns at most; AH: rows end at AF)
    text = PLATEMAP_HEADER + (
        "A01,SK-N-SH,DMSO,0 nM,vehicle\nA02,SK-N-SH,milademetan,5 nM,sample\n"
        f"{well},SK-N-SH,milademetan,50 nM,sample\n"
    )
    result, platemap = run_with_platemap(tmp_path, tiny_zarr, text)
    assert_input_error(result, str(platemap), "line 4", "column 'well'", well, fragment)


# ============================================================================= settings


def test_settings_unknown_key(tiny_zarr, tmp_path):
    settings_file = write_text(
        tmp_path / "assay.toml",
        textwrap.dedent(
            """\
            # assay settings
            [segmentation]
            nucleus_diameter_um = 10.0
            nucleus_diamter_um = 12.0
            """
        ),
    )
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap, settings_file):
        result = screenlib(
            "run", tiny_zarr, "--platemap", platemap, "--out", tmp_path / "out",
            "--settings", settings_file,
        )  # fmt: skip
    assert_input_error(result, str(settings_file), "nucleus_diamter_um", "line 4")


def test_settings_wrong_type(tmp_path):
    settings_file = write_text(tmp_path / "assay.toml", '[qc]\nmin_cells_per_field = "five"\n')
    table = write_text(tmp_path / "table.csv", "concentration_molar,response\n0,1\n1e-6,0.5\n")
    with inputs_unchanged(settings_file, table):
        result = screenlib(
            "fit", table, "--out", tmp_path / "fits.csv", "--settings", settings_file
        )
    assert_input_error(result, str(settings_file), "min_cells_per_field", "line 2")


def test_settings_not_toml(tmp_path):
    settings_file = write_text(tmp_path / "assay.toml", "[qc\nmin_cells_per_field = 5\n")
    table = write_text(tmp_path / "table.csv", "concentration_molar,response\n0,1\n1e-6,0.5\n")
    with inputs_unchanged(settings_file, table):
        result = screenlib(
            "fit", table, "--out", tmp_path / "fits.csv", "--settings", settings_file
        )
    assert_input_error(result, str(settings_file), "not valid TOML", "line 1")


# ============================================================================= Zarr plates


def _set_codec(plate: Path, codec: dict) -> Path:
    """Make the image array of A01 field 0 name another codec in its zarr.json."""
    meta_path = plate / "A" / "1" / "0" / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"] = [meta["codecs"][0], codec]
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta_path


@pytest.mark.parametrize(
    "codec",
    [
        {"name": "numcodecs.pickle", "configuration": {"protocol": 5}},  # runs code when read
        {"name": "my_lab_codec"},
    ],
    ids=["pickle", "unknown"],
)
def test_zarr_plate_with_refused_codec(tiny_zarr, tmp_path, codec):
    meta_path = _set_codec(tiny_zarr, codec)
    with pytest.raises(InputError, match=rf"refusing codec\(s\) \['{codec['name']}'\]"):
        open_plate(tiny_zarr)
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap):
        result = screenlib(
            "run", tiny_zarr, "--platemap", platemap, "--out", tmp_path / "out", "--workers", 1
        )
    assert_input_error(result, str(meta_path.parent), codec["name"], "refusing codec")


def test_zarr_plate_not_a_plate(tmp_path):
    folder = tmp_path / "not_a_plate.zarr"
    write_text(folder / "zarr.json", '{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(folder, platemap):
        result = screenlib(
            "run", folder, "--platemap", platemap, "--out", tmp_path / "out", "--workers", 1
        )
    assert_input_error(result, str(folder), "not an OME-Zarr plate", "screenlib ingest")


def test_zarr_plate_missing_chunk_refused_by_store(tiny_zarr):
    chunk = tiny_zarr / "A" / "2" / "0" / "0" / "c" / "0" / "1" / "0" / "0" / "0"
    chunk.unlink()
    plate = open_plate(tiny_zarr)
    assert plate.read_field("A01", 0).shape == (3, 32, 32)  # the others still read
    with pytest.raises(InputError) as error:
        plate.read_field("A02", 0)
    message = str(error.value)
    assert "well A02 field 0" in message and "channel 1 (FITC)" in message
    assert "A/2/0/0/c/0/1/0/0/0 is missing" in message and "ingest the export again" in message


def test_zarr_plate_damaged_chunk_refused_by_store(tiny_zarr):
    chunk = tiny_zarr / "A" / "1" / "0" / "0" / "c" / "0" / "2" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(InputError, match=r"well A01 field 0 timepoint 0: unreadable image data"):
        open_plate(tiny_zarr).read_field("A01", 0)


# ============================================================================= `run` on a plate
# with problems in some fields: one real run (LocalCluster, 1 worker) serves these tests.

RUN_WELLS = [f"A{column:02d}" for column in range(1, 13)]
EMPTY_WELL = "A04"  # cells never attached: both fields hold no nucleus
BLANK_FIELD = ("A06", 0)  # all-zero image (shutter closed / camera failure)
SATURATED_FIELD = ("A08", 0)  # half the field at the camera's maximum
MISSING_CHUNK_FIELD = ("A10", 0)  # one chunk file of the PI channel deleted
UNIMAGED_WELLS = ("B05", "B06")  # in the plate map, never imaged
HOSTILE_SAMPLE = "SK-N-SH<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def troubled_run(tmp_path_factory):
    """Simulate a 12-well plate, damage it as above, run `screenlib run` once (subprocess)."""
    pytest.importorskip("screenlib.analysis")
    from screenlib.simulate import example_plate_design, simulate_plate

    folder = tmp_path_factory.mktemp("troubled")
    design = example_plate_design(
        fields_per_well=2, field_shape=(128, 128), cells_per_field=45
    ).restricted_to(RUN_WELLS)
    simulated = simulate_plate(design, folder / "sim", "zarr", progress=False)
    plate_path = Path(simulated.images)
    plate = open_plate(plate_path, mode="r+")
    rng = np.random.default_rng(4)
    for field_index in range(2):
        # camera offset, read noise and a dim stain background: no cell, no debris
        background = (
            rng.normal(100.0, 4.0, (3, 128, 128)) + np.array([20.0, 8.0, 5.0])[:, None, None]
        )
        plate.write_field(EMPTY_WELL, field_index, np.clip(background, 0, None).astype(np.uint16))
    plate.write_field(*BLANK_FIELD, np.zeros((3, 128, 128), np.uint16))
    saturated = plate.read_field(*SATURATED_FIELD).copy()
    saturated[:, :64, :] = np.iinfo(np.uint16).max
    plate.write_field(*SATURATED_FIELD, saturated)
    well, field_index = MISSING_CHUNK_FIELD
    missing_chunk = plate_path / well[0] / str(int(well[1:])) / str(field_index) / "0"
    missing_chunk = missing_chunk / "c" / "0" / "2" / "0" / "0" / "0"
    missing_chunk.unlink()
    platemap = Path(simulated.platemap)
    text = platemap.read_text(encoding="utf-8") + "".join(
        f"{well},SK-N-SH,milademetan,5,nM,sample\n" for well in UNIMAGED_WELLS
    )
    # a sample name that is live HTML if the report does not escape it
    platemap.write_text(text.replace("SK-N-SH,", f"{HOSTILE_SAMPLE},"), encoding="utf-8")

    out = folder / "out"
    before = checksums(plate_path, platemap, skip_labels=True)
    result = screenlib(
        "run", plate_path, "--platemap", platemap, "--out", out, "--workers", 1,
        subprocess_=True, timeout=600,
    )  # fmt: skip
    after = checksums(plate_path, platemap, skip_labels=True)
    return {
        "result": result,
        "out": out,
        "before": before,
        "after": after,
        "missing_chunk": missing_chunk.relative_to(plate_path),
    }


def _fields(run) -> pd.DataFrame:
    return pd.read_csv(run["out"] / "fields.csv", keep_default_na=False)


def _wells(run) -> pd.DataFrame:
    return pd.read_csv(run["out"] / "wells.csv", keep_default_na=False).set_index("well")


def test_run_with_troubled_fields_finishes_without_traceback(troubled_run):
    result = troubled_run["result"]
    assert_no_crash(result)
    assert result.returncode == EXIT_PARTIAL, result  # finished, one field could not be used
    for name in ("cells.parquet", "fields.csv", "wells.csv", "plate_qc.csv", "fits.csv"):
        assert (troubled_run["out"] / name).is_file(), (name, str(result))


def test_run_leaves_input_plate_and_platemap_unchanged(troubled_run):
    before, after = troubled_run["before"], troubled_run["after"]
    assert before == after


def test_zarr_plate_missing_chunk_flags_the_field(troubled_run):
    result = troubled_run["result"]
    well, field_index = MISSING_CHUNK_FIELD
    assert f"field failed: {well} f{field_index} t0" in result.stderr, result
    assert str(troubled_run["missing_chunk"]) in result.stderr
    fields = _fields(troubled_run).set_index(["well", "field"])
    row = fields.loc[(well, field_index)]
    assert row["status"] == "failed" and str(row["qc_pass"]) == "False"
    assert str(troubled_run["missing_chunk"]) in row["error"]
    assert "fields_excluded" in _wells(troubled_run).loc[well, "qc_flags"]


def test_all_empty_well_is_flagged(troubled_run):
    fields = _fields(troubled_run)
    empty = fields[fields["well"] == EMPTY_WELL]
    assert len(empty) == 2 and (empty["qc_pass"].astype(str) == "False").all()
    assert empty["qc_reason"].str.contains("too few cells").all()
    flags = _wells(troubled_run).loc[EMPTY_WELL, "qc_flags"]
    assert "no_fields_used" in flags or "no_cells" in flags, flags


def test_blank_field_is_flagged(troubled_run):
    fields = _fields(troubled_run).set_index(["well", "field"])
    row = fields.loc[BLANK_FIELD]
    assert row["status"] == "done" and str(row["qc_pass"]) == "False", row
    assert row["qc_reason"], row
    assert "fields_excluded" in _wells(troubled_run).loc[BLANK_FIELD[0], "qc_flags"]


def test_saturated_field_is_flagged(troubled_run):
    fields = _fields(troubled_run).set_index(["well", "field"])
    row = fields.loc[SATURATED_FIELD]
    assert str(row["qc_pass"]) == "False" and "saturated" in row["qc_reason"], row
    assert float(row["saturated_fraction"]) >= 0.49
    assert "fields_excluded" in _wells(troubled_run).loc[SATURATED_FIELD[0], "qc_flags"]


@pytest.mark.parametrize("well", UNIMAGED_WELLS)
def test_platemap_well_not_imaged_is_flagged(troubled_run, well):
    flags = _wells(troubled_run).loc[well, "qc_flags"]
    assert "no_fields_used" in flags and "no_cells" in flags, flags


def test_report_escapes_platemap_strings(troubled_run):
    report = (troubled_run["out"] / "report.html").read_text(encoding="utf-8")
    assert "<img src=x onerror" not in report
    assert "SK-N-SH&lt;img src=x onerror=alert(1)&gt;" in report  # shown, as text
    for figure in (troubled_run["out"] / "figures").glob("*"):
        assert "<" not in figure.name and ">" not in figure.name, figure.name


def test_platemap_without_vehicle_wells(cells_zarr, tmp_path):
    # gates are learned from vehicle wells: without any (and no manual gates) the run stops
    # before a single field is analysed (on a real plate that saves hours)
    text = PLATEMAP_HEADER + "A01,S,m,1 nM,sample\nA02,S,m,10 nM,sample\n"
    platemap = write_text(tmp_path / "platemap.csv", text)
    plate = tmp_path / "cells.zarr"
    shutil.copytree(cells_zarr, plate)
    with inputs_unchanged(plate, platemap, skip_labels=True):
        result = screenlib(
            "--quiet", "run", plate, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1, "--no-report", subprocess_=True,
        )  # fmt: skip
    assert_input_error(result, "negative_control", "gating.annexin_gate", "platemap.csv")
    assert not list((tmp_path / "out").glob("parts/*.parquet")), "fields were analysed first"
    noise = [line for line in result.stderr.splitlines() if line.startswith("INFO")]
    assert not noise, f"--quiet, yet {len(noise)} INFO lines drown the error: {noise[:3]}"


def test_plate_without_any_cell(tiny_zarr, tmp_path):
    # noise only (or the wrong channel set as nuclear): the run must say so, not go quiet
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap, skip_labels=True):
        result = screenlib(
            "--quiet", "run", tiny_zarr, "--platemap", platemap, "--out", tmp_path / "out",
            "--workers", 1, "--no-report", subprocess_=True,
        )  # fmt: skip
    assert_no_crash(result)
    assert "module missing" not in result.stderr, result  # nothing is missing but cells
    if result.returncode == EXIT_INPUT_ERROR:
        assert_input_error(result, "no cell")
        # the message points at fields.csv, so it must be there with every field's QC
        fields = pd.read_csv(tmp_path / "out" / "fields.csv")
        assert len(fields) > 0 and (fields["n_cells"] == 0).all()
    else:
        wells = pd.read_csv(tmp_path / "out" / "wells.csv", keep_default_na=False)
        assert set(wells["well"]) == set(EXPORT_WELLS)
        assert wells["qc_flags"].str.contains("no_cells").all(), wells


def test_run_output_folder_not_writable(tiny_zarr, tmp_path):
    blocker = write_text(tmp_path / "results", "a file, not a folder\n")
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap, blocker):
        result = screenlib(
            "run", tiny_zarr, "--platemap", platemap, "--out", blocker / "run1", "--workers", 1
        )
    assert_input_error(result, "cannot create output folder", "run1", "Not a directory")


def test_run_output_inside_the_export(export, tmp_path):
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(export, platemap):  # not even an empty folder may appear in it
        result = screenlib(
            "--quiet", "run", export, "--platemap", platemap, "--out", export / "results",
            "--workers", 1,
        )  # fmt: skip
    assert_input_error(result, "inside", str(export))


def test_run_output_inside_the_zarr_plate(tiny_zarr, tmp_path):
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap):
        result = screenlib(
            "--quiet", "run", tiny_zarr, "--platemap", platemap, "--out", tiny_zarr / "results",
            "--workers", 1, "--no-report",
        )  # fmt: skip
    assert_input_error(result, "inside", str(tiny_zarr))


def test_run_output_is_a_file(tiny_zarr, tmp_path):
    blocker = write_text(tmp_path / "results", "a file, not a folder\n")
    platemap = write_text(tmp_path / "platemap.csv", GOOD_PLATEMAP)
    with inputs_unchanged(tiny_zarr, platemap, blocker):
        result = screenlib("run", tiny_zarr, "--platemap", platemap, "--out", blocker)
    assert_input_error(result, "results", "is a file")


# ============================================================================= `screenlib fit`

DOSES = [1e-9 * 3**k for k in range(8)]  # 1 nM .. 2.2 uM


def _curve_rows(sample: str, doses, responses) -> list[dict]:
    return [
        {"sample": sample, "compound": "milademetan", "concentration_molar": c, "response": r}
        for c, r in zip(doses, responses, strict=True)
    ]


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    """One `screenlib fit` of a table holding a good curve with NaNs and three bad curves."""
    folder = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(3)
    doses = [0.0] * 3 + [d for d in DOSES for _ in range(2)]
    good = [100 / (1 + c / 30e-9) + rng.normal(0, 2) for c in doses]
    rows = _curve_rows("good_with_nans", doses, good)
    rows[5]["response"] = math.nan  # a well lost in the plate reader
    rows[9]["concentration_molar"] = math.nan  # a dose not written down
    rows += _curve_rows("flat", doses, [100 + rng.normal(0, 2) for _ in doses])
    # incomplete: the response only starts to fall at the top doses (IC50 far above)
    rows += _curve_rows(
        "incomplete", doses, [100 / (1 + c / 2e-5) + rng.normal(0, 1) for c in doses]
    )
    single = [0.0] * 3 + [1e-6] * 6
    rows += _curve_rows("single_concentration", single, [100, 98, 101, 40, 42, 39, 41, 43, 38])
    table = folder / "table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    out = folder / "fits.csv"
    with inputs_unchanged(table):
        result = screenlib("fit", table, "--out", out)
    fits = pd.read_csv(out, keep_default_na=False) if out.exists() else None
    return {"result": result, "fits": fits, "table": table}


def _fit_row(fit_run, sample: str) -> pd.Series:
    assert_no_crash(fit_run["result"])
    assert fit_run["result"].returncode == 0, fit_run["result"]
    fits = fit_run["fits"]
    rows = fits[fits["sample"] == sample]
    assert len(rows) == 1, fits
    return rows.iloc[0]


def test_fit_table_with_nans_drops_rows_with_a_note(fit_run):
    row = _fit_row(fit_run, "good_with_nans")
    assert "missing values" in fit_run["result"].stdout and "dropped" in fit_run["result"].stdout
    # fits.csv is the short table: the IC50 in its unit column's unit
    assert float(row["ic50"]) * UNIT_FACTORS[row["unit"]] == pytest.approx(30e-9, rel=0.5)


def test_fit_flat_curve_is_flagged(fit_run):
    row = _fit_row(fit_run, "flat")
    assert "inactive" in row["flags"]
    assert row["ic50"] in ("", "nan") or not math.isfinite(float(row["ic50"]))


def test_fit_incomplete_curve_is_flagged(fit_run):
    row = _fit_row(fit_run, "incomplete")
    flags = set(row["flags"].split(";"))
    assert flags & {"ic50_above_range", "no_bottom_plateau", "inactive"}, row["flags"]


def test_fit_single_concentration_is_flagged(fit_run):
    row = _fit_row(fit_run, "single_concentration")
    assert "too_few_points" in row["flags"], row["flags"]
    assert row["ic50"] in ("", "nan") or not math.isfinite(float(row["ic50"]))


def test_fit_empty_table(tmp_path):
    table = write_text(tmp_path / "table.csv", "")
    with inputs_unchanged(table):
        result = screenlib("fit", table, "--out", tmp_path / "fits.csv")
    assert_input_error(result, str(table))


def test_fit_table_without_needed_columns(tmp_path):
    # 'dose' is the concentration (plate-map vocabulary), but a bare 1 has no unit
    table = write_text(tmp_path / "table.csv", "sample,dose,viability\nx,1,0.5\n")
    with inputs_unchanged(table):
        result = screenlib("fit", table, "--out", tmp_path / "fits.csv")
    assert_input_error(result, str(table), "line 2", "'dose'", "unit")
    table = write_text(tmp_path / "table.csv", "sample,viability\nx,0.5\n")
    with inputs_unchanged(table):
        result = screenlib("fit", table, "--out", tmp_path / "fits.csv")
    assert_input_error(result, str(table), "concentration")


def test_fit_concentration_with_units_in_a_molar_column(tmp_path):
    # text such as "10 nM" in concentration_molar must not be silently dropped
    table = write_text(
        tmp_path / "table.csv",
        "sample,compound,concentration_molar,response\n"
        + "".join(f"x,m,{c},{r}\n" for c, r in [(0, 100), ("10 nM", 80), (1e-7, 50), (1e-6, 10)]),
    )
    with inputs_unchanged(table):
        result = screenlib("fit", table, "--out", tmp_path / "fits.csv")
    # read with its unit (1e-8 M), not dropped and not misread as 10 M
    assert result.returncode == 0, result
    full = pd.read_parquet(tmp_path / "fits_full.parquet").iloc[0]
    assert full["n_concentrations"] == 3 and full["lowest_dose_molar"] == pytest.approx(1e-8)
    bad = write_text(
        tmp_path / "bad.csv", "sample,compound,concentration_molar,response\nx,m,ten nM,80\n"
    )
    with inputs_unchanged(bad):
        result = screenlib("fit", bad, "--out", tmp_path / "fits.csv")
    assert_input_error(result, str(bad), "concentration_molar", "ten nM")


def test_fit_output_not_writable(tmp_path):
    table = write_text(
        tmp_path / "table.csv",
        "concentration_molar,response\n" + "".join(f"{c},{100 / (1 + c / 1e-7)}\n" for c in DOSES),
    )
    blocker = write_text(tmp_path / "results", "a file, not a folder\n")
    with inputs_unchanged(table, blocker):
        result = screenlib("fit", table, "--out", blocker / "fits.csv")
    assert_input_error(result, "fits.csv")


# ============================================================================= atomic outputs


def _orchestrate_write_atomic(path: Path, write) -> Path:
    from screenlib.orchestrate._manifest import write_atomic

    return write_atomic(path, write)


def _io_utils_write_atomic(path: Path, write) -> Path:
    from screenlib.io_utils import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)
    return path


@pytest.mark.parametrize(
    "write_atomic",
    [_orchestrate_write_atomic, _io_utils_write_atomic],
    ids=["orchestrate", "io_utils"],
)
def test_atomic_write_failure_keeps_the_old_file(tmp_path, write_atomic):
    target = tmp_path / "wells.csv"
    target.write_text("old complete table\n")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("new but only half writ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old complete table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wells.csv"]  # no temporary left
    write_atomic(target, lambda tmp: tmp.write_text("new complete table\n"))
    assert target.read_text() == "new complete table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wells.csv"]


def test_io_utils_text_and_bytes(tmp_path):
    from screenlib.io_utils import atomic_write_bytes, atomic_write_text

    assert atomic_write_text(tmp_path / "a.csv", "well\nA01\n").read_text() == "well\nA01\n"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.bin"]


_KILL_MID_WRITE = """
import os, signal, sys
from pathlib import Path

def write(tmp):
    with open(tmp, "wb") as handle:
        for piece in range(12):
            handle.write(b"new" * 333_334)
            handle.flush()
            if piece == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # a crash, an OOM kill, a power cut

target = Path(sys.argv[2])
if sys.argv[1] == "orchestrate":
    from screenlib.orchestrate._manifest import write_atomic
    write_atomic(target, write)
else:
    from screenlib.io_utils import atomic_path
    with atomic_path(target) as tmp:
        write(tmp)
"""


@pytest.mark.parametrize("helper", ["orchestrate", "io_utils"])
def test_atomic_write_killed_mid_write_leaves_old_or_new(tmp_path, helper):
    """SIGKILL a process while it writes a 12 MB table: the file is the old one, never partial."""
    target = tmp_path / "cells.parquet"
    old = b"old" * 1000
    target.write_bytes(old)
    done = subprocess.run(
        [sys.executable, "-c", _KILL_MID_WRITE, helper, str(target)],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -9, done  # killed mid-write
    assert target.read_bytes() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != target.name]
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftovers), leftovers


# ============================================================================= safety


def test_local_cluster_listens_on_loopback_only():
    """A local run opens no port to the network (scheduler, workers, nannies, dashboard)."""
    psutil = pytest.importorskip("psutil")
    from screenlib.orchestrate import dask_client

    with dask_client(None, 1):
        me = psutil.Process()
        listening = []
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                listening += [
                    (process.pid, connection.laddr)
                    for connection in process.net_connections(kind="inet")
                    if connection.status == psutil.CONN_LISTEN
                ]
    assert listening, "found no listening socket at all: the check itself is broken"
    exposed = [(pid, addr) for pid, addr in listening if addr.ip not in ("127.0.0.1", "::1")]
    assert not exposed, f"listening beyond loopback: {exposed}"


# ============================================================================= property tests

_CSV_ALPHABET = st.sampled_from(list("AaBbHhPp0123456789 ,;\t\r\n\"'.-+eEuUmMnNµ%#"))
_HEADERS = [
    "well,role",
    "well,sample,compound,concentration,role",
    "well;compound;concentration;unit;role",
    "Well,Role,Concentration,Concentration_Unit",
    "well,role,role",
    "compound,concentration",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(st.sampled_from(_HEADERS), st.text(_CSV_ALPHABET, max_size=30)),
    body=st.lists(
        st.one_of(
            st.text(_CSV_ALPHABET, max_size=40),
            st.builds(
                lambda well, role, conc: f"{well},x,y,{conc},{role}",
                st.from_regex(r"[A-Pa-p]{1,2}0?[0-9]{1,3}", fullmatch=True),
                st.sampled_from(["sample", "vehicle", "DMSO", "pos", "empty", "", "weird"]),
                st.one_of(
                    st.from_regex(
                        r"-?[0-9]{0,4}\.?[0-9]{0,3}(e-?[0-9])? ?(uM|nM|M|pM|mM|x)?", fullmatch=True
                    ),  # fmt: skip
                    st.just(""),
                ),
            ),
        ),
        max_size=8,
    ),
)
def test_platemap_parser_on_arbitrary_csv(header, body):
    text = "\n".join([header, *body]) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "platemap.csv"
        path.write_text(text, encoding="utf-8")
        try:
            table = read_platemap(path)
        except InputError as error:
            assert str(path) in str(error) or "plate map" in str(error)
            return
    assert len(table) == len(set(table["well"])) > 0  # one row per well
    assert set(table["role"]) <= {"sample", "negative_control", "positive_control", "empty"}
    concentration = table["concentration_molar"].to_numpy(float)
    assert np.all(np.isnan(concentration) | (np.isfinite(concentration) & (concentration >= 0)))
    assert (table.loc[table["role"] == "negative_control", "concentration_molar"] == 0).all()


_UNIT_SCALE = {"M": 1.0, "mM": 1e-3, "uM": 1e-6, "µM": 1e-6, "nM": 1e-9, "pM": 1e-12}


@settings(max_examples=300, deadline=None)
@given(
    value=st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False),
    unit=st.sampled_from(sorted(_UNIT_SCALE)),
    space=st.sampled_from(["", " ", "  "]),
)
def test_unit_parser_agrees_between_text_and_unit_column(value, unit, space):
    in_text = parse_concentration(f"{value}{space}{unit}")
    in_column = parse_concentration(str(value), unit=unit)
    assert in_text == in_column
    assert in_text == pytest.approx(float(value) * _UNIT_SCALE[unit], rel=1e-12, abs=0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            st.sampled_from(["c1", "c2", ""]),
            st.one_of(st.sampled_from([0.0, 1e-9, 1e-8, 1e-7, 1e-6]), st.just(math.nan)),
            st.one_of(st.floats(-1e3, 1e3), st.just(math.nan), st.just(math.inf)),
        ),
        max_size=30,
    )
)
def test_fit_table_on_arbitrary_tables(rows):
    from screenlib.doseresponse.table import fit_table

    table = pd.DataFrame(rows, columns=["sample", "compound", "concentration_molar", "response"])
    try:
        fits = fit_table(table)
    except InputError:
        return
    dosed = table[table["concentration_molar"] > 0]
    curves = list(zip(fits["sample"], fits["compound"], strict=True)) if len(fits) else []
    assert len(curves) == len(set(curves))  # one row per curve
    assert set(curves) <= set(zip(table["sample"], table["compound"], strict=True))
    assert set(zip(dosed["sample"], dosed["compound"], strict=True)) <= set(curves)
    for row in fits.to_dict("records"):
        ic50 = row["ic50_molar"]
        if not (isinstance(ic50, float) and math.isfinite(ic50)):
            assert row["flags"], row
        else:
            assert ic50 > 0
