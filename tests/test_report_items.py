"""The report's second-week fixes: templates, QC-excluded cells, well QC map, GR, mixture
fraction, readable axes, gallery crops and print layout.

Each test builds real tables (simulated cells classified with learned gates, real per-well
aggregation and fits, a real Zarr plate for the crops) and reads what ``write_report`` wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from test_report import CLASSES, GALLERY_WELLS, _chromium, _gallery_plate, _run_chromium

from screenlib.aggregate import aggregate_wells, plate_qc
from screenlib.doseresponse.table import fit_wells
from screenlib.gating import classify_cells, learn_gates
from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.report import write_report
from screenlib.settings import AssaySettings

REPO = Path(__file__).resolve().parent.parent
FAILED_FIELD = ("B11", 0, 0)  # the gallery plate's mixed-class field, failed by image QC
VEHICLE_FAILED_FIELD = ("C01", 1, 0)  # a vehicle field: the gates must not see it


def _section(text: str, section_id: str) -> str:
    return text.split(f'<section id="{section_id}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A simulated plate with two fields that failed QC, finalized as the engine does."""
    out = tmp_path_factory.mktemp("items")
    settings = AssaySettings()
    platemap = example_platemap()
    # A01 holds the gallery plate's cells, not simulated vehicle cells: not a vehicle well here
    platemap.loc[platemap["well"] == "A01", ["compound", "role"]] = ["reference", "sample"]
    cells = simulate_cell_table(platemap, cells_per_well=120, seed=4)
    fields = cells.groupby(["well", "field", "timepoint"]).size().rename("n_cells").reset_index()
    fields["qc_pass"] = True
    fields["qc_reason"] = ""
    fields["hot_pixels"] = 0
    fields.loc[[0, 5], "hot_pixels"] = [3, 2]  # replaced by the analysis: said in the report
    for key in (FAILED_FIELD, VEHICLE_FAILED_FIELD):
        at = (fields["well"] == key[0]) & (fields["field"] == key[1])
        fields.loc[at & (fields["timepoint"] == key[2]), ["qc_pass", "qc_reason"]] = [
            False, "out of focus"]  # fmt: skip
    # as finalize does: gates only from fields that passed QC
    passing = fields.loc[fields["qc_pass"], ["well", "field", "timepoint"]]
    gates = learn_gates(cells.merge(passing), platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    # the gallery wells' cells replace the simulated ones (their labels exist in the plate)
    plate, gallery_cells = _gallery_plate(out / "plate.zarr", settings)
    cells = pd.concat(
        [cells[~cells["well"].isin(list(GALLERY_WELLS))], gallery_cells], ignore_index=True
    )
    fields = fields[~fields["well"].isin(list(GALLERY_WELLS)) | (fields["field"] == 0)]
    wells = aggregate_wells(cells, platemap, fields, settings)
    wells["n_cells_t0"] = 40  # counts at the time of treatment: GR metrics
    fits = fit_wells(wells, settings.fit)
    path = write_report(
        out / "run", plate=plate, cells=cells, fields=fields, wells=wells,
        plate_qc=plate_qc(wells, platemap), gates=gates, fits=fits, settings=settings,
        run_info={"n_workers": 1},
    )  # fmt: skip
    return {"path": path, "text": path.read_text(encoding="utf-8"), "cells": cells,
            "wells": wells, "gates": gates, "fits": fits, "out": out / "run"}  # fmt: skip


# --- #21: templates ---------------------------------------------------------------------------


def test_markup_lives_in_package_templates_and_the_css_in_its_own_file(run):
    templates = resources.files("screenlib.report") / "templates"
    assert (templates / "report.html.j2").is_file() and (templates / "report.css").is_file()
    css = (templates / "report.css").read_text(encoding="utf-8")
    assert css.strip() and css.split("{")[0].strip() in run["text"]  # the CSS is inlined
    python = "".join(p.read_text() for p in (REPO / "screenlib" / "report").glob("*.py"))
    assert "<section" not in python and "<table" not in python and "<style" not in python


def _has_build_backend() -> bool:
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


@pytest.mark.slow
def test_a_built_wheel_ships_the_templates(tmp_path):
    # what `pip install .` (not editable) installs: the templates must be in the wheel
    # built from a copy of what the wheel is made of: nothing is written into the checkout,
    # and the build does not walk virtualenvs or example plates
    source = tmp_path / "source"
    shutil.copytree(REPO / "screenlib", source / "screenlib",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
               "-w", str(tmp_path)]  # fmt: skip
    if _has_build_backend():  # build offline with what is installed
        command.append("--no-build-isolation")
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("screenlib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("report.html.j2", "macros.html.j2", "report.css",
                 "sections/summary.html.j2", "sections/gallery.html.j2"):  # fmt: skip
        assert f"screenlib/report/templates/{name}" in names, name


def test_the_lead_can_add_notes_summary_and_sections_all_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    wells = pd.DataFrame({"well": ["A01", "A02"], "n_cells": [100, 80],
                          "apoptotic_fraction": [0.1, 0.5], "qc_flags": ["", ""]})  # fmt: skip
    path = write_report(
        tmp_path, wells=wells, notes=[f"gate moved {evil}"], platemap_summary=f"map {evil}",
        experiment=pd.DataFrame({"plate": [f"P1 {evil}"], "z_prime": [0.6]}),
        operator_notes=[f"checked {evil}"],
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert evil not in text
    noticed = _section(text, "notes")
    assert f"gate moved {html.escape(evil)}" in noticed
    assert f"map {html.escape(evil)}" in _section(text, "summary")
    assert f"P1 {html.escape(evil)}" in _section(text, "experiment")
    assert f"checked {html.escape(evil)}" in _section(text, "operator_notes")


# --- #20 item 2: QC-excluded cells ------------------------------------------------------------


def test_counted_cells_are_those_behind_the_wells_table(run):
    summary = _section(run["text"], "summary")
    counted = int(run["wells"]["n_cells"].sum())
    assert re.search(rf'<div class="value ">{counted:,}</div>\s*<div class="label">cells counted',
                     summary), summary  # fmt: skip
    # a cell marked by finalize (exclusion_reason) is left out even if its field row says pass
    from screenlib.report._cells import counted_cells

    cells = run["cells"].copy()
    cells.loc[cells.index[:5], "exclusion_reason"] = "field_failed_qc"
    kept, left_out = counted_cells(cells, None, AssaySettings())
    assert len(kept) == int((cells["exclusion_reason"].fillna("") == "").sum())
    assert left_out["objects"] == len(cells)


def test_gating_plot_shows_the_cells_the_gates_were_learned_from(run):
    gating = _section(run["text"], "gating")
    learned = int(run["gates"][0].n_control_cells)
    caption = re.search(r"Vehicle \(\d+ wells\): n = ([\d,]+)", gating)
    assert caption is not None, gating[:3000]
    assert int(caption.group(1).replace(",", "")) == learned


def test_gating_caption_names_the_cells_the_gates_came_from_when_fewer(run, tmp_path):
    """Mitotic figures are counted but kept out of gate learning: the caption says so."""
    gates = {key: dataclasses.replace(gate, n_control_cells=gate.n_control_cells - 6)
             for key, gate in run["gates"].items()}  # fmt: skip
    path = write_report(tmp_path, cells=run["cells"], wells=run["wells"], gates=gates,
                        fits=run["fits"], settings=AssaySettings())  # fmt: skip
    gating = _section(path.read_text(encoding="utf-8"), "gating")
    learned = int(gates[0].n_control_cells)
    assert f"the gates were learned from {learned:,} of them" in gating


def test_gallery_shows_no_cell_of_a_failed_field(run):
    gallery = _section(run["text"], "gallery")
    well, field, timepoint = FAILED_FIELD
    assert f"{well} f{field} t{timepoint} #" not in gallery
    assert re.search(r'alt="viable cell A01 f0 t0 #', gallery)  # the passing field is shown


def test_the_report_says_how_many_hot_pixels_were_replaced(run):
    plate_qc = " ".join(_section(run["text"], "plate-qc").split())
    said = r"5 hot pixel\(s\) \(lone bright pixels: sensor defects\) in 2 of (\d+) fields"
    match = re.search(said, plate_qc)
    assert match and int(match.group(1)) > 2, plate_qc[:2000]


# --- #20 item 3: well QC ----------------------------------------------------------------------


def test_few_cells_at_cytotoxic_doses_is_expected_but_an_outlier_is_not():
    settings = AssaySettings()
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=60, seed=5)
    outlier = "B03"  # 2 nM, where the series has lost no cells
    in_outlier = np.flatnonzero(cells["well"] == outlier)
    cells = cells.drop(index=cells.index[in_outlier[: int(0.8 * in_outlier.size)]])
    gates = learn_gates(cells, platemap, settings.gating)
    wells = aggregate_wells(classify_cells(cells, gates, settings.gating), platemap, None,
                            settings).set_index("well")  # fmt: skip
    few = wells[wells["n_cells"] < settings.gating.min_cells_per_well]
    assert outlier in few.index and "too_few_cells" in wells.loc[outlier, "qc_flags"]
    top_doses = few[(few["role"] == "sample") & (few["concentration_molar"] > 1e-6)]
    positive = few[few["role"] == "positive_control"]
    assert len(top_doses) >= 4 and len(positive) >= 2  # the simulation kills at top doses
    for well in [*top_doses.index, *positive.index]:
        flags = wells.loc[well, "qc_flags"]
        assert "expected_cell_loss" in flags and "too_few_cells" not in flags, (well, flags)


def _pixels_of(png: Path, color: str) -> int:
    rgb = imread(png)[..., :3]
    target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int((np.abs(rgb - target).max(axis=-1) < 0.02).sum())


def test_wells_without_data_are_grey_and_expected_loss_is_not_red(tmp_path):
    wells = example_platemap()
    wells["n_cells"] = 120
    wells["n_fields_used"] = 2
    wells["qc_flags"] = ""
    wells.loc[wells["well"].isin(["B05", "G05"]), ["n_cells", "n_fields_used", "qc_flags"]] = [
        0, 0, "no_fields_used;no_cells"]  # fmt: skip
    wells.loc[wells["role"] == "positive_control", ["n_cells", "qc_flags"]] = [
        20, "expected_cell_loss"]  # fmt: skip
    write_report(tmp_path, wells=wells)
    png = tmp_path / "figures" / "plate_qc_flags.png"
    well_area = 40 * 40  # a 96-well map's well is about 66 x 66 px at 120 dpi
    assert _pixels_of(png, "#d9d9d9") > 2 * well_area  # the legend's grey
    from screenlib.report.figures import QC_STATES

    failed = dict((s, c) for s, c, _ in QC_STATES)["failed"]
    assert _pixels_of(png, failed) < well_area  # the legend's swatch only


# --- #20 item 8: what the report shows --------------------------------------------------------


def test_gr_metrics_are_reported_when_time_zero_counts_exist(run):
    gr = _section(run["text"], "gr")
    assert "GR50" in gr and "GRmax" in gr and "GR AOC" in gr
    rows = run["fits"][run["fits"]["readout"] == "gr_value"]
    assert len(rows) >= 2
    assert gr.count("<tr") == len(rows) + 1


def test_mixture_model_fraction_is_shown(run):
    assert (run["out"] / "figures" / "plate_apoptotic_fraction_mixture.png").exists()
    assert "mixture model" in _section(run["text"], "dose-response")
    assert "Apoptotic fraction, mixture model" in _section(run["text"], "plate-maps")


def test_gating_axes_and_tables_name_measurements_readably(run):
    gating = _section(run["text"], "gating")
    assert "Annexin V intensity (ring around the nucleus, 90th percentile)" in gating
    assert "annexin_v_ring_p90" not in gating
    from screenlib.report._cells import feature_label

    assert feature_label("pi_nucleus_mean", two_lines=True) == "PI intensity\n(nucleus, mean)"


def test_gallery_crops_are_sharp_centred_and_filled(run):
    gallery = _section(run["text"], "gallery")
    crops = re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]*width="(\d+)"', gallery)
    assert len(crops) >= 6

    for data, shown in crops:
        picture = imread(io.BytesIO(base64.b64decode(data)))[..., :3]
        side = picture.shape[0]
        assert picture.shape[1] == side == int(shown)  # shown 1:1, never rescaled
        assert side >= 160
        # no zero padding: a crop that ran over the field edge has all-black rows or columns
        dark = picture.max(axis=-1) == 0
        assert not dark.all(axis=1).any() and not dark.all(axis=0).any()
        # zoomed by whole pixels without smoothing: the zoom's blocks are mostly one colour
        zoom = max((z for z in range(2, 17) if side % z == 0 and _flat_blocks(picture, z) > 0.7),
                   default=1)  # fmt: skip
        assert zoom >= 2
        # the cell fills the crop rather than a corner of it (plate pixels: 0.65 µm)
        nucleus_px = 10.0 / 0.65  # a typical 10 µm nucleus (the settings leave it to the scale)
        assert side / zoom <= 3.2 * nucleus_px


def _flat_blocks(picture: np.ndarray, zoom: int) -> float:
    n = picture.shape[0] // zoom
    blocks = picture.reshape(n, zoom, n, zoom, 3)
    return float(((blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max(axis=-1) == 0).mean())


def test_print_stylesheet_and_full_width_curves(run):
    text = run["text"]
    print_rules = text.split("@media print")[1]
    assert re.search(r"nav\s*\{\s*display:\s*none", print_rules)
    assert re.search(r"figure\.curve img[^{]*\{[^}]*width:\s*100%", text)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_report_prints_to_pdf(run, tmp_path):
    pdf = tmp_path / "report.pdf"
    printed = _run_chromium(
        ["--no-pdf-header-footer", f"--print-to-pdf={pdf}", run["path"].resolve().as_uri()],
        tmp_path / "profile",
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 100_000
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
        assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= 4


# --- figures reused when their data are unchanged; drawn in other processes ------------------


def _report_inputs(seed: int = 6) -> dict:
    settings = AssaySettings()
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=60, seed=seed)
    gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, None, settings)
    fits = fit_wells(wells, settings.fit)
    return {"cells": cells, "wells": wells, "gates": gates, "fits": fits, "settings": settings}


def _figure_line(text: str) -> str:
    return re.search(r"report figures</th><td>([^<]*)<", text).group(1)


def test_unchanged_figures_are_reused_and_changed_ones_drawn_again(tmp_path):
    from screenlib.report._figure_cache import INDEX_NAME

    inputs = _report_inputs()
    first = tmp_path / "first"
    write_report(first, **inputs, figure_processes=1)
    figures = first / "figures"
    assert (figures / INDEX_NAME).is_file()
    drawn = {p.name: p.read_bytes() for p in figures.glob("*.png")}

    # the same data again, written elsewhere with the first folder as the previous report
    same = tmp_path / "same"
    text = write_report(same, **inputs, previous_figures=figures).read_text(encoding="utf-8")
    assert "0 drawn" in _figure_line(text)
    assert {p.name: p.read_bytes() for p in (same / "figures").glob("*.png")} == drawn

    # a gating-like change: the apoptotic fractions move, the cell counts do not
    wells = inputs["wells"].copy()
    wells["apoptotic_fraction"] = (wells["apoptotic_fraction"] * 0.8).round(6)
    changed = tmp_path / "changed"
    text = write_report(changed, **(inputs | {"wells": wells}), previous_figures=figures)
    text = text.read_text(encoding="utf-8")
    line = _figure_line(text)
    reused = set(line.split(": ", 1)[1].split(", ")) if "reused" in line else set()
    assert "plate_n_cells" in reused and "plate_qc_flags" in reused
    assert "plate_apoptotic_fraction" not in reused
    assert not any(name.startswith("curve_") for name in reused)  # the curves show the fraction
    new = (changed / "figures" / "plate_apoptotic_fraction.png").read_bytes()
    assert new != drawn["plate_apoptotic_fraction.png"]  # never the stale picture
    assert (changed / "figures" / "plate_n_cells.png").read_bytes() == drawn["plate_n_cells.png"]


def test_a_figure_edited_by_hand_is_drawn_again_not_reused(tmp_path):
    inputs = _report_inputs()
    write_report(tmp_path, **inputs, figure_processes=1)
    edited = tmp_path / "figures" / "plate_n_cells.png"
    original = edited.read_bytes()
    edited.write_bytes(original[:-100])  # someone's (or a disk's) change to the file
    (tmp_path / "figures" / "plate_qc_flags.png").unlink()
    text = write_report(tmp_path, **inputs, figure_processes=1).read_text(encoding="utf-8")
    line = _figure_line(text)
    assert line.startswith("2 drawn")
    assert "plate_n_cells" not in line.split(": ", 1)[1] and "plate_qc_flags" not in line
    assert edited.read_bytes() == original


def test_figures_drawn_in_two_processes_equal_those_drawn_in_one(tmp_path):
    inputs = _report_inputs(seed=7)
    write_report(tmp_path / "one", **inputs, figure_processes=1)
    text = write_report(tmp_path / "two", **inputs, figure_processes=2).read_text(encoding="utf-8")
    if sys.platform.startswith("linux"):
        assert "(2 processes)" in _figure_line(text)
    one = sorted((tmp_path / "one" / "figures").glob("*.png"))
    assert len(one) >= 8
    for path in one:
        assert np.array_equal(imread(path), imread(tmp_path / "two" / "figures" / path.name))
    svgs = {p.name for p in (tmp_path / "two" / "figures").glob("*.svg")}
    assert svgs == {p.name for p in (tmp_path / "one" / "figures").glob("*.svg")}
    assert svgs and all(name.startswith("curve_") for name in svgs)  # curves go to slides


def test_figure_keys_follow_every_input_value():
    from screenlib.report._figure_cache import input_key

    base = {"values": {"A01": 0.25, "B02": 0.5}, "title": "x", "array": np.arange(3.0)}
    assert input_key("plate", base) == input_key("plate", dict(base))
    for changed in (
        base | {"values": {"A01": 0.25, "B02": 0.5000001}},
        base | {"title": "y"},
        base | {"array": np.arange(3.0) + 1e-12},
        base | {"extra": None},
    ):
        assert input_key("plate", changed) != input_key("plate", base)
    assert input_key("curve", base) != input_key("plate", base)
    with pytest.raises(TypeError):
        input_key("plate", {"curve": lambda x: x})  # a callable cannot key a figure


# --- gallery rows of mitotic figures and debris -----------------------------------------------


def test_gallery_has_rows_for_mitotic_figures_and_debris(tmp_path):
    settings = AssaySettings()
    plate, cells = _gallery_plate(tmp_path / "plate.zarr", settings)
    cells["object_class"] = "cell"
    cells["exclusion_reason"] = ""
    b11 = cells[(cells["well"] == "B11") & ~cells["touches_border"]]
    # the six most central objects: no crop of theirs is cut by the field's border
    central = ((b11["centroid_y"] - 96) ** 2 + (b11["centroid_x"] - 96) ** 2).sort_values()
    mitotic, debris = central.index[:3], central.index[3:6]
    cells.loc[mitotic, "object_class"] = "mitotic"
    cells.loc[debris, ["object_class", "cell_class", "exclusion_reason"]] = [
        "debris", "debris", "not_a_nucleus"]  # fmt: skip
    fields = cells.groupby(["well", "field", "timepoint"]).size().rename("n_cells").reset_index()
    fields["qc_pass"] = True
    text = write_report(tmp_path / "out", plate=plate, cells=cells, fields=fields,
                        settings=settings).read_text(encoding="utf-8")  # fmt: skip
    gallery = _section(text, "gallery")
    assert gallery.count('alt="mitotic cell') == 3
    assert gallery.count('alt="debris object') == 3
    shown = re.findall(r'alt="(?:mitotic cell|debris object) B11 f0 t0 #(\d+)', gallery)
    assert sorted(map(int, shown)) == sorted(cells.loc[mitotic.append(debris), "label"])
    for name in ("mitotic", "debris"):
        assert (tmp_path / "out" / "figures" / f"gallery_{name}.png").is_file()

    # debris of a field that failed image QC is never shown
    fields["qc_pass"] = False
    fields.loc[fields["well"] == "A01", "qc_pass"] = True
    text = write_report(tmp_path / "failed", plate=plate, cells=cells, fields=fields,
                        settings=settings).read_text(encoding="utf-8")  # fmt: skip
    gallery = _section(text, "gallery")
    assert 'alt="debris object' not in gallery and "No debris on this plate." in gallery


def test_gallery_of_a_table_without_object_classes_claims_no_object_rows(tmp_path):
    settings = AssaySettings()
    plate, cells = _gallery_plate(tmp_path / "plate.zarr", settings)
    text = write_report(tmp_path / "out", plate=plate, cells=cells, settings=settings)
    gallery = _section(text.read_text(encoding="utf-8"), "gallery")
    # no object_class column: nothing is known about mitotic figures or debris, so no rows
    assert "No debris" not in gallery and "No mitotic" not in gallery
    assert re.search(r'alt="viable cell', gallery)


def test_gallery_crops_come_from_reused_mosaics_until_the_plate_or_the_choice_changes(
    tmp_path,
):
    settings = AssaySettings()
    plate, cells = _gallery_plate(tmp_path / "plate.zarr", settings)
    reads = []
    read_field = plate.read_field
    plate.read_field = lambda *a, **k: reads.append(a) or read_field(*a, **k)

    def gallery_of(name: str, table: pd.DataFrame, previous: Path | None = None):
        path = write_report(tmp_path / name, plate=plate, cells=table, settings=settings,
                            figure_processes=1, previous_figures=previous)  # fmt: skip
        text = path.read_text(encoding="utf-8")
        line = _figure_line(text)
        reused = set(line.split(": ", 1)[1].split(", ")) if "reused" in line else set()
        return _section(text, "gallery"), {n for n in reused if n.startswith("gallery_")}

    first, _ = gallery_of("first", cells)
    assert reads and first.count("data:image/png") >= 20
    previous = tmp_path / "first" / "figures"

    # the same objects shown (e.g. a gating change elsewhere): no pixel is read again, and
    # the crops cut out of the reused mosaics are the same images
    reads.clear()
    again, reused = gallery_of("again", cells, previous)
    assert not reads and reused == {f"gallery_{c}" for c in CLASSES}
    assert again == first

    # another class for a shown cell: other objects are shown, the crops are read again
    shown = int(re.search(r'alt="viable cell B11 f0 t0 #(\d+)', first).group(1))
    moved = cells.copy()
    moved.loc[(moved["well"] == "B11") & (moved["label"] == shown), "cell_class"] = "necrotic"
    regated, reused = gallery_of("regated", moved, previous)
    assert reads and not reused
    assert f"viable cell B11 f0 t0 #{shown} " not in regated and regated != first

    # the same objects, but one field's label image rewritten: read again, not reused
    labels = plate.read_labels("B11", 0)
    labels[labels == shown] = 0
    plate.write_labels("B11", 0, labels)
    reads.clear()
    relabelled, reused = gallery_of("relabelled", cells, previous)
    assert reads and not reused
    assert relabelled != first


# --- the experiment page from its template ----------------------------------------------------


def test_experiment_page_is_built_from_its_template_and_escapes_names():
    from screenlib.report._experiment import experiment_report_html

    plates = [
        {"name": f"plate {EVIL_NAME}", "link": "plates/p1/report.html", "n_fields": 4,
         "n_fields_failed": 1, "n_cells": 12345},
        {"name": "plate2", "link": "plates/plate2/report.html", "n_fields": 4,
         "n_fields_failed": 0, "n_cells": 999},
    ]  # fmt: skip
    spread = pd.DataFrame({
        "sample": ["HeLa"], "compound": [f"drug {EVIL_NAME}"], "readout": ["apoptotic_fraction"],
        "n_with_ic50": [2], "n_replicates": [2], "pic50_mean": [6.5], "pic50_sd": [0.12],
        "pooled_ic50_molar": [3.2e-7], "pooled_flags": ["wide_interval"],
    })  # fmt: skip
    page = experiment_report_html(plates, spread, [f"plate1: {EVIL_NAME}"])
    assert EVIL_NAME not in page and html.escape(EVIL_NAME) in page
    assert 'href="plates/p1/report.html"' in page and "12,345" in page
    assert "6.50 ± 0.12" in page and "320 nM" in page and "wide_interval" in page
    template = resources.files("screenlib.report") / "templates" / "experiment.html.j2"
    assert template.is_file()
    source = (REPO / "screenlib" / "orchestrate" / "experiment.py").read_text(encoding="utf-8")
    assert "<table" not in source and "<html" not in source  # markup lives in the template


EVIL_NAME = "<script>alert(2)</script>"
