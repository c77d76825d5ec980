"""The HTML report of a simulated plate: sections, figures, escaping, and a real browser.

The run's tables come from the gating layer's cell simulator (learned gates, real
classification), per-well aggregation, real dose-response fits and a real Zarr plate (rendered
fields with their label images) for the cell gallery.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from screenlib.aggregate import aggregate_wells, plate_qc
from screenlib.doseresponse.table import fit_wells
from screenlib.gating import classify_cells, learn_gates
from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.report import SECTION_IDS, write_report
from screenlib.settings import AssaySettings
from screenlib.simulate import render_field
from screenlib.store import PlateLayout, create_plate

EVIL = "<script>alert(1)</script>"
CLASSES = ("viable", "early_apoptotic", "late_apoptotic", "necrotic")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
GALLERY_WELLS = {
    "A01": None,
    "B11": {"viable": 8, "early_apoptotic": 12, "late_apoptotic": 12, "necrotic": 6},
}


def _gallery_plate(path: Path, settings: AssaySettings):
    """A real two-well Zarr plate whose label images match the cells table rows we add."""
    rng = np.random.default_rng(3)
    layout = PlateLayout(
        name="sim <b>plate</b>",
        wells=list(GALLERY_WELLS),
        channel_names=["Hoechst 33342", "Annexin V-FITC", "PI"],
        shape=(1, 3, 1, 192, 192),
        n_fields=1,
        pixel_size_um=0.65,
    )
    plate = create_plate(path, layout)
    plate.create_labels()
    rows = []
    for well, counts in GALLERY_WELLS.items():
        field = render_field(rng, shape=(192, 192), n_cells=25, class_counts=counts)
        plate.write_field(well, 0, field.channels[None, :, None])
        plate.write_labels(well, 0, field.labels)
        truth = field.cells
        rows.append(
            pd.DataFrame(
                {
                    "plate": "sim",
                    "well": well,
                    "field": 0,
                    "timepoint": 0,
                    "label": truth["label"],
                    "centroid_y": truth["centroid_y"],
                    "centroid_x": truth["centroid_x"],
                    "touches_border": truth["touches_border"],
                    "cell_class": truth["cell_class"],
                    "annexin_v_ring_p90": truth["annexin_v_level"],
                    "pi_nucleus_mean": truth["pi_level"],
                }
            )
        )
    return plate, pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Write the report of a simulated 96-well plate once; yield its folder and inputs."""
    out = tmp_path_factory.mktemp("report")
    settings = AssaySettings()
    platemap = example_platemap()
    platemap.loc[platemap["compound"] == "cmpd-1", "compound"] = f"cmpd-1 {EVIL}"
    platemap.loc[platemap["sample"] == "U2OS", "sample"] = f"U2OS {EVIL}"
    cells = simulate_cell_table(platemap, cells_per_well=120, seed=1)
    gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    plate, gallery_cells = _gallery_plate(out / "plate.zarr", settings)
    # the gallery wells' cells replace the simulated ones (their labels exist in the plate)
    cells = pd.concat(
        [cells[~cells["well"].isin(list(GALLERY_WELLS))], gallery_cells], ignore_index=True
    )
    fields = cells.groupby(["well", "field", "timepoint"]).size().rename("n_cells").reset_index()
    fields["focus_score"] = 1.0
    fields["qc_pass"] = True
    fields["qc_reason"] = ""
    fields.loc[0, ["qc_pass", "qc_reason"]] = [False, f"out of focus {EVIL}"]
    wells = aggregate_wells(cells, platemap, fields, settings)
    fits = fit_wells(wells, settings.fit)
    qc = plate_qc(wells, platemap)
    run_info = {"input": f"/data/export {EVIL}", "elapsed_s": 12.5, "n_workers": 2}
    path = write_report(
        out / "run",
        plate=plate,
        cells=cells,
        fields=fields,
        wells=wells,
        plate_qc=qc,
        gates=gates,
        fits=fits,
        settings=settings,
        run_info=run_info,
    )
    return {"path": path, "out": out / "run", "fits": fits, "wells": wells}


def test_report_is_self_contained_with_every_section(report):
    text = report["path"].read_text(encoding="utf-8")
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in text
    # nothing is fetched from elsewhere: no external scripts, styles or images
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<link" not in text.lower()
    # the gallery shows crops of every class (from the two-well plate)
    for name in ("viable", "early apoptotic", "late apoptotic", "necrotic"):
        assert re.search(rf'alt="{name} cell', text), name
    assert text.count("data:image/png;base64,") >= 8 + 2 + 4


def test_untrusted_text_is_escaped(report):
    text = report["path"].read_text(encoding="utf-8")
    assert EVIL not in text
    assert html.escape(EVIL) in text
    assert "sim &lt;b&gt;plate&lt;/b&gt;" in text  # the plate name from the store


def test_figures_are_written_as_png_and_the_curves_also_as_svg(report):
    folder = report["out"] / "figures"
    pngs = {p.stem for p in folder.glob("*.png")}
    svgs = {p.stem for p in folder.glob("*.svg")}
    for stem in (
        "plate_n_cells",
        "plate_apoptotic_fraction",
        "plate_class_fractions",
        "plate_qc_flags",
        "gating_annexin_pi",
    ):
        assert stem in pngs, stem
    curves = [s for s in svgs if s.startswith("curve_")]
    assert len(curves) == 2  # two cell lines x one compound
    assert svgs == set(curves)  # the figures taken to slides; the maps are pictures (PNG)
    for stem in curves + ["plate_n_cells"]:
        png = (folder / f"{stem}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    for stem in curves:
        svg = (folder / f"{stem}.svg").read_text()
        assert "<svg" in svg and len(svg) > 10_000
        assert ">concentration</text>" in svg  # text as text: editable on a slide
    for cell_class in CLASSES:
        assert (folder / f"gallery_{cell_class}.png").stat().st_size > 1000
    # file names from plate-map text are made safe
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in folder.iterdir())


def test_fits_table_lists_every_curve_with_flags(report):
    text = report["path"].read_text(encoding="utf-8")
    fits_html = text.split('<section id="fits">')[1].split("</section>")[0]
    assert fits_html.count("<tr") == len(report["fits"]) + 1
    for flags in report["fits"]["flags"].fillna(""):
        for flag in filter(None, flags.split(";")):
            assert flag in fits_html


def test_report_without_plate_or_fits_says_so(tmp_path):
    wells = pd.DataFrame(
        {
            "well": ["A01", "P24"],
            "n_cells": [100, 80],
            "apoptotic_fraction": [0.1, 0.5],
            "qc_flags": ["", "too_few_cells"],
        }
    )
    path = write_report(tmp_path, wells=wells)
    text = path.read_text(encoding="utf-8")
    assert "No plate was given" in text
    assert "No dose-response fits were made" in text
    # A01 and P24 need a 384-well plate; its figure was drawn
    assert (tmp_path / "figures" / "plate_n_cells.png").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _console_messages(stderr: str) -> list[str]:
    """Page console output in Chromium's log (``INFO:CONSOLE:<line>] "message", source: ...``);
    the report has no scripts, so any console message at all is an error."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_report_in_headless_chromium(report, tmp_path):
    # the console check sees a broken page (guards against a change of Chromium's log format)
    broken = tmp_path / "broken.html"
    broken.write_text("<p>x</p><script>console.error('boom'); notDefined();</script>")
    probe = _run_chromium(["--dump-dom", broken.as_uri()], tmp_path / "profile-probe")
    assert any("boom" in line for line in _console_messages(probe.stderr)), probe.stderr[-2000:]

    url = report["path"].resolve().as_uri()
    dom = _run_chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_messages(dom.stderr)
    for section in SECTION_IDS:
        assert f'id="{section}"' in dom.stdout
    # the plate-map text is shown as text: escaped in the DOM, no script element was created
    assert html.escape(EVIL, quote=False) in dom.stdout
    assert "<script" not in dom.stdout.lower()

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    shot = _run_chromium(
        [f"--screenshot={screenshot}", "--window-size=1400,4000", "--hide-scrollbars", url],
        tmp_path / "profile-shot",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert not _console_messages(shot.stderr)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_report_of_a_time_course_has_maps_and_curves_per_timepoint(tmp_path):
    settings = AssaySettings()
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=60, timepoints=(0, 1), seed=2)
    gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, None, settings)
    fits = fit_wells(wells, settings.fit)
    path = write_report(tmp_path, cells=cells, wells=wells, gates=gates, fits=fits)
    stems = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    for timepoint in (0, 1):
        assert f"plate_apoptotic_fraction_t{timepoint}" in stems
        assert f"plate_class_fractions_t{timepoint}" in stems
    assert {"curve_HeLa_cmpd-1_t0", "curve_HeLa_cmpd-1_t1"} <= stems
    text = path.read_text(encoding="utf-8")
    assert "<h3>Timepoint 1</h3>" in text
