"""The report's figures as files: plate maps drawn as pixels show each well's value in its
colour, label and tick; a re-gated report redraws exactly the figures whose picture changed.

The maps are read back pixel by pixel; the re-gating test runs real gates learned twice from
simulated cells (two MAD multipliers) through aggregation, fits and ``write_report``.
"""

from __future__ import annotations

import dataclasses
import io
import re

import matplotlib
import matplotlib.ticker
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from screenlib.aggregate import aggregate_wells
from screenlib.doseresponse.table import fit_wells
from screenlib.gating import classify_cells, learn_gates
from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.platemap import PlateGeometry
from screenlib.report import write_report
from screenlib.report.colormaps import NAMES, colormap_rgb
from screenlib.report.plate_figures import (
    NO_DATA_COLOR,
    NO_VALUE_COLOR,
    QC_STATES,
    axis_ticks,
    grid_rgb,
    plate_heatmap,
    plate_heatmap_panels,
    qc_heatmap,
    tick_labels,
)
from screenlib.settings import AssaySettings

PLATE_96 = PlateGeometry.from_size(96)


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def _random_values(geometry: PlateGeometry, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"{row}{column}": float(rng.uniform(0, 1))
            for row in geometry.row_names for column in geometry.column_names}  # fmt: skip


@pytest.mark.parametrize("size", [96, 384, 1536])
def test_each_well_is_drawn_in_the_colour_of_its_value(size):
    geometry = PlateGeometry.from_size(size)
    values = _random_values(geometry)
    missing = f"{geometry.row_names[1]}{geometry.column_names[2]}"
    del values[missing]
    markers = {f"{row}{geometry.column_names[0]}": "N" for row in geometry.row_names}
    image = plate_heatmap(values, geometry, title="t", colorbar_label="share", cmap="magma",
                          vmin=0.0, vmax=1.0, value_format="percent", markers=markers)  # fmt: skip
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    drawn = grid_rgb(image, geometry).astype(int)
    colormap = matplotlib.colormaps["magma"]
    for (row, column), _ in np.ndenumerate(drawn[..., 0]):
        well = f"{geometry.row_names[row]}{geometry.column_names[column]}"
        expected = (_hex(NO_VALUE_COLOR) if well == missing
                    else np.round(np.array(colormap(values[well])[:3]) * 255))  # fmt: skip
        assert np.abs(drawn[row, column] - expected).max() <= 1, well
    # a PNG of it reads back the same pixels (lossless)
    buffer = io.BytesIO()
    image.save(buffer, "png")
    assert np.array_equal(np.asarray(Image.open(buffer).convert("RGB")), np.asarray(image))


def test_values_are_written_in_the_wells_of_a_96_well_map_in_a_contrasting_colour():
    dark, light = {"A01": 0.0}, {"A01": 1.0}  # magma: black at 0, pale yellow at 1
    for values, ink in ((dark, 255), (light, 0)):
        image = plate_heatmap(values, PLATE_96, title="t", colorbar_label="c", cmap="magma",
                              vmin=0.0, vmax=1.0, value_format="percent")  # fmt: skip
        pixels = np.asarray(image).astype(int)
        cell = 0.55 * 120  # the well A01, well inside its white border lines
        x0, y0 = round(0.45 * 120), round(0.62 * 120)
        well = pixels[y0 + 5 : y0 + round(cell) - 5, x0 + 5 : x0 + round(cell) - 5]
        text_like = (np.abs(well - ink).max(axis=-1) < 60).sum()
        assert text_like > 8  # the number's glyphs, white on black or black on pale yellow
    blank = plate_heatmap(light, PLATE_96, title="t", colorbar_label="c", cmap="magma",
                          vmin=0.0, vmax=1.0, annotate=False)  # fmt: skip
    pixels = np.asarray(blank).astype(int)
    well = pixels[y0 + 5 : y0 + round(cell) - 5, x0 + 5 : x0 + round(cell) - 5]
    assert (np.abs(well - 0).max(axis=-1) < 60).sum() == 0  # no value written


def test_colour_bar_ticks_are_those_matplotlib_would_place():
    height_in = 8 * 0.55 + 1  # a 96-well map's bar (8 wells high) with room around it
    for vmin, vmax in ((0.0, 1.0), (0.0, 0.19), (0.0, 150.0), (0.3, 0.47), (-2.0, 3.0)):
        figure = Figure(figsize=(2, height_in), dpi=120)
        axes = figure.add_axes((0.2, 0.5 / height_in, 0.1, 1 - 1 / height_in))
        colorbar = figure.colorbar(axes.imshow([[vmin, vmax]], vmin=vmin, vmax=vmax), cax=axes)
        FigureCanvasAgg(figure).draw()
        expected = [t for t in colorbar.get_ticks() if vmin - 1e-9 <= t <= vmax + 1e-9]
        bar_px = axes.get_window_extent().height
        assert np.allclose(axis_ticks(vmin, vmax, bar_px), expected), (vmin, vmax)


def test_axis_ticks_match_matplotlibs_locator_over_many_ranges():
    """The tick rule written without matplotlib places the ticks its MaxNLocator places, for
    ranges of every magnitude, sign and length (1 to 9 intervals)."""
    rng = np.random.default_rng(7)
    ranges = [(0.0, 1.0), (0.0, 0.19), (-2.0, 3.0), (0.0, 0.0009128)]
    for _ in range(400):
        scale = 10.0 ** rng.integers(-4, 5)
        low = rng.uniform(-1, 1) * scale * rng.choice([0, 1])
        ranges.append((low, low + rng.uniform(0.01, 10) * scale))
    for vmin, vmax in ranges:
        for n_bins in range(1, 10):
            length_px = n_bins * 20 * 120 / 72 + 1  # one interval per 20 points
            locator = matplotlib.ticker.MaxNLocator(nbins=n_bins, steps=[1, 2, 2.5, 5, 10])
            expected = locator.tick_values(vmin, vmax)
            span = vmax - vmin
            expected = expected[(expected >= vmin - 1e-9 * span) & (expected <= vmax + 1e-9 * span)]
            ticks = axis_ticks(vmin, vmax, length_px)
            assert len(ticks) == len(expected), (vmin, vmax, n_bins, ticks, expected)
            assert np.allclose(ticks, expected, rtol=1e-9, atol=1e-12 * span), (vmin, vmax, n_bins)


def test_axis_ticks_of_a_single_value_or_an_inverted_range():
    """A panel given one value as its range gets one tick on it (matplotlib's locator repeats
    it), and an inverted range the ticks of the upright one, where the rule alone would fail
    on the logarithm of a zero or negative span."""
    locator = matplotlib.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    assert axis_ticks(0.3, 0.3, 300).tolist() == [0.3]
    assert np.allclose(locator.tick_values(0.3, 0.3), 0.3)
    assert axis_ticks(1.0, 0.0, 600).tolist() == axis_ticks(0.0, 1.0, 600).tolist()
    assert axis_ticks(float("nan"), 1.0, 600).size == 0


def test_stored_colour_maps_are_matplotlibs():
    """The report's colour tables (drawn without matplotlib) give the colours matplotlib's
    colour maps give, level for level, and other names are taken from matplotlib."""
    values = np.concatenate([np.linspace(0.0, 1.0, 5001), [-0.5, 1.5]])
    for name in NAMES:
        expected = np.round(matplotlib.colormaps[name](np.clip(values, 0, 1))[:, :3] * 255)
        assert np.array_equal(colormap_rgb(name, values), expected), name
    expected = np.round(matplotlib.colormaps["cividis"](values[:-2])[:, :3] * 255)
    assert np.array_equal(colormap_rgb("cividis", values[:-2]), expected)
    assert colormap_rgb("magma", np.array([np.nan])).tolist() == [[0, 0, 0]]


def test_tick_labels_carry_the_decimals_the_ticks_need():
    assert tick_labels(np.array([0.0, 0.2, 0.4]), "percent") == ["0 %", "20 %", "40 %"]
    assert tick_labels(np.array([0.0, 0.025, 0.05]), "percent") == ["0.0 %", "2.5 %", "5.0 %"]
    assert tick_labels(np.array([0.0, 0.5, 1.0]), "number") == ["0.0", "0.5", "1.0"]
    assert tick_labels(np.array([0.0, 40.0, 80.0]), "count") == ["0", "40", "80"]


def test_qc_map_draws_each_state_in_its_legend_colour_and_no_data_grey():
    states = [state for state, _, _ in QC_STATES]
    status = {f"{row}{column}": states[(i + j) % len(states)]
              for i, row in enumerate(PLATE_96.row_names)
              for j, column in enumerate(PLATE_96.column_names) if (i, j) != (0, 0)}  # fmt: skip
    image = qc_heatmap(status, PLATE_96)
    drawn = grid_rgb(image, PLATE_96, legend_width_in=2.6).astype(int)
    colors = {state: _hex(color) for state, color, _ in QC_STATES}
    assert np.array_equal(drawn[0, 0], _hex(NO_DATA_COLOR))  # A01 has no state
    for well, state in status.items():
        row, column = PLATE_96.row_names.index(well[0]), int(well[1:]) - 1
        assert np.array_equal(drawn[row, column], colors[state]), well
    # the legend's swatches: each state's colour also appears right of the plate
    legend = np.asarray(image).astype(int)[:, round((0.45 + 12 * 0.55) * 120) + 5 :]
    for color in [*colors.values(), _hex(NO_DATA_COLOR)]:
        assert (np.abs(legend - color).max(axis=-1) == 0).sum() > 100


def test_panels_each_keep_their_own_colour_scale():
    values = _random_values(PLATE_96, seed=3)
    panels = [{"values": values, "title": name, "colorbar_label": "share", "cmap": cmap,
               "vmin": 0.0, "vmax": 1.0, "value_format": "percent", "annotate": False}
              for name, cmap in (("a", "Greens"), ("b", "Reds"), ("c", "Blues"))]  # fmt: skip
    image = plate_heatmap_panels(panels, PLATE_96, title="Cell classes")
    well = f"C{PLATE_96.column_names[4]}"
    for panel, cmap in enumerate(("Greens", "Reds", "Blues")):
        drawn = grid_rgb(image, PLATE_96, n_panels=3, panels_per_row=2, panel=panel)
        expected = np.round(np.array(matplotlib.colormaps[cmap](values[well])[:3]) * 255)
        assert np.abs(drawn[2, 4].astype(int) - expected).max() <= 1, cmap
    assert image.width > 2 * image.height * 0.75  # two panels side by side, two rows


# --- re-gating: the figures drawn again are exactly those whose picture changed --------------


def _inputs(k_mad: float) -> dict:
    settings = AssaySettings()
    gating = dataclasses.replace(settings.gating, method="robust", k_mad=k_mad)
    settings = dataclasses.replace(settings, gating=gating)
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=60, seed=11)
    gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, None, settings)
    fits = fit_wells(wells, settings.fit)
    return {"cells": cells, "wells": wells, "gates": gates, "fits": fits, "settings": settings}


def _pngs(folder) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in folder.glob("*.png")}


def test_a_gating_change_redraws_the_changed_figures_and_reuses_the_rest_unchanged(tmp_path):
    first = tmp_path / "first"
    write_report(first, **_inputs(k_mad=4.0), figure_processes=1)
    regated_inputs = _inputs(k_mad=3.0)
    regated = tmp_path / "regated"
    text = write_report(regated, **regated_inputs, previous_figures=first / "figures")
    line = re.search(r"report figures</th><td>([^<]*)<", text.read_text(encoding="utf-8"))[1]
    reused = set(line.split(": ", 1)[1].split(", ")) if "reused" in line else set()
    fresh = tmp_path / "fresh"  # the same re-gated data, every figure drawn
    write_report(fresh, **regated_inputs, figure_processes=1)

    before, after, drawn_anew = (_pngs(f / "figures") for f in (first, regated, fresh))
    assert after.keys() == drawn_anew.keys()
    for name in after:  # what the re-gated report shows is what a fresh drawing shows
        assert np.array_equal(after[name], drawn_anew[name]), name
    assert reused and "plate_n_cells" in reused  # a gating change leaves the counts alone
    for name in reused:  # a reused file is the previous one, byte for byte
        assert (regated / "figures" / f"{name}.png").read_bytes() == (
            first / "figures" / f"{name}.png").read_bytes()  # fmt: skip
    redrawn = set(after) - reused
    assert {"plate_apoptotic_fraction", "plate_class_fractions", "gating_annexin_pi"} <= redrawn
    assert any(name.startswith("curve_") for name in redrawn)
    for name in redrawn:  # drawn again because its picture changed
        assert before[name].shape != after[name].shape or not np.array_equal(
            before[name], after[name]), name  # fmt: skip


# --- gallery: the mosaic is made of the very pixels each crop's PNG holds ------------------


def test_gallery_mosaic_tiles_are_the_crops_pixels(tmp_path):
    from test_report import _gallery_plate

    from screenlib.report.gallery import cell_gallery, choose_example_cells, gallery_mosaic

    settings = AssaySettings()
    plate, cells = _gallery_plate(tmp_path / "plate.zarr", settings)
    crops = cell_gallery(plate, cells, settings)
    assert len({crop.cell_class for crop in crops}) >= 3
    for crop in crops:  # the PNG embedded in the report holds exactly the kept pixels
        decoded = np.asarray(Image.open(io.BytesIO(crop.png)).convert("RGB"))
        assert crop.pixels.dtype == np.uint8 and np.array_equal(decoded, crop.pixels)
    from_pixels = gallery_mosaic(crops)
    from_png = gallery_mosaic([dataclasses.replace(crop, pixels=None) for crop in crops])
    assert from_pixels.dtype == np.uint8 and np.array_equal(from_pixels, from_png)
    # the chooser never picks an object touching the border, and is the same on every run
    chosen = choose_example_cells(cells, per_class=3)
    assert not chosen["touches_border"].any()
    assert chosen.equals(choose_example_cells(cells, per_class=3))
    assert (chosen["gallery_class"] == chosen["cell_class"].astype(str)).all()


# --- curves and gating plot: drawn as shapes, the PNG and the SVG show the same figure ------


def _curve_panel(ic50: float = 1e-7, with_interval: bool = True) -> dict:
    from screenlib.doseresponse.model import four_parameter_logistic

    doses = np.repeat(10.0 ** np.arange(-10, -4.5, 0.5), 2)
    log_ic50 = float(np.log10(ic50))

    def curve(x):
        return four_parameter_logistic(x, log_ic50, 1.2, 0.05, 0.85)

    rng = np.random.default_rng(3)
    response = curve(np.log10(doses)) + rng.normal(0, 0.03, doses.size)
    return {"ylabel": "apoptotic fraction", "ylim": (-0.02, 1.02), "curve": curve,
            "concentration_molar": np.concatenate([[0.0, 0.0], doses]),
            "response": np.concatenate([[0.04, 0.06], response]), "ic50_molar": ic50,
            "ic50_interval_molar": (ic50 / 2, ic50 * 2) if with_interval else None}  # fmt: skip


def _svg_shapes(svg: str):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    return root, ns


def test_curve_figure_png_and_svg_place_the_ic50_on_the_fitted_curve(tmp_path):
    """The IC50 marker sits where the dashed IC50 line crosses the fitted curve, in the SVG's
    coordinates and in the PNG's pixels alike; text stays text; both files are written."""
    from screenlib.report.figures import (
        CURVE_COLOR,
        IC50_COLOR,
        dose_response_figure,
        format_molar,
        save_figure,
    )

    panels = [_curve_panel(), _curve_panel(3e-6, with_interval=False)]
    png_bytes = save_figure(dose_response_figure("HeLa · drug", panels), tmp_path / "curve_x")
    assert (tmp_path / "curve_x.png").read_bytes() == png_bytes
    png = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB")).astype(int)
    assert png.shape == (540, round(5.2 * 2 * 120), 3)
    svg = (tmp_path / "curve_x.svg").read_text(encoding="utf-8")
    root, ns = _svg_shapes(svg)
    assert root.get("width") == f"{5.2 * 2 * 72:.2f}pt"
    texts = [t.text for t in root.iter(f"{ns}text")]
    for label in ("concentration", "vehicle", "1 nM", "10 µM", "apoptotic fraction",
                  f"IC50 {format_molar(1e-7)}", f"IC50 {format_molar(3e-6)}", "4PL fit",
                  "HeLa · drug", "0.0", "1.0"):  # fmt: skip
        assert label in texts, label
    curves = [p for p in root.iter(f"{ns}polyline")  # the fits (the legend's line: 2 points)
              if p.get("stroke") == CURVE_COLOR and len(p.get("points").split()) > 2]  # fmt: skip
    dashed = [p for p in root.iter(f"{ns}polyline")
              if p.get("stroke") == IC50_COLOR and p.get("stroke-dasharray")]  # fmt: skip
    marks = [
        c
        for g in root.iter(f"{ns}g")
        if g.get("fill") == IC50_COLOR
        for c in g.iter(f"{ns}circle")
        if float(c.get("cy")) < 0.8 * 540
    ]  # not the legend's
    assert len(curves) == len(dashed) == len(marks) == 2
    for curve, line, mark in zip(curves, dashed, marks, strict=True):
        points = np.array([p.split(",") for p in curve.get("points").split()], dtype=float)
        line_x = float(line.get("points").split()[0].split(",")[0])
        x, y = float(mark.get("cx")), float(mark.get("cy"))
        assert abs(x - line_x) < 0.01
        assert abs(y - np.interp(x, points[:, 0], points[:, 1])) < 0.5  # on the curve
        assert np.abs(png[round(y), round(x)] - _hex(IC50_COLOR)).max() < 40  # and in the PNG
        on_curve = []
        for px, py in points[::10]:  # the PNG draws the curve where the SVG does
            patch = png[round(py) - 1 : round(py) + 2, round(px) - 1 : round(px) + 2]
            on_curve.append(np.abs(patch - _hex(CURVE_COLOR)).max(axis=-1).min() < 60)
        assert np.mean(on_curve) > 0.8  # (a replicate's marker may cover the odd point)


def test_gating_plot_draws_cells_in_their_quadrant():
    """Cells all Annexin V positive and PI negative are drawn right of the Annexin V gate
    line and below the PI gate line, and only there."""
    from screenlib.report.figures import quadrant_figure

    rng = np.random.default_rng(1)
    annexin, pi = rng.uniform(300, 900, 400), rng.uniform(1, 20, 400)
    figure = quadrant_figure(
        [{"title": "Vehicle", "annexin": annexin, "pi": pi}], annexin_gate=100.0,
        pi_gate=60.0, annexin_label="Annexin V", pi_label="PI",
    )  # fmt: skip
    pixels = np.asarray(Image.open(io.BytesIO(figure.png())).convert("RGB")).astype(int)
    assert pixels.shape == (600, round(4.6 * 120), 3)
    top, bottom = round(0.1 * 600), round(0.84 * 600)  # the panel's frame
    inner = pixels[top + 50 : bottom - 50]  # between the quadrant labels in its corners
    dark = inner.max(axis=-1) < 60
    gate_x = int(np.argmax(dark.mean(axis=0)))  # the dark column crossing the whole panel
    assert dark[:, gate_x].mean() > 0.95
    rows = (pixels[top:bottom].max(axis=-1) < 60).mean(axis=1)
    gate_y = top + 1 + int(np.argmax(rows[1:-1]))  # the dark row (not the frame's edges)
    coloured = (inner.max(axis=-1) - inner.min(axis=-1)) > 100  # the jet-coloured points
    ys, xs = np.nonzero(coloured)
    assert xs.size > 500
    assert xs.min() > gate_x and ys.min() + top + 50 > gate_y


def test_inner_boundaries_are_scikit_images():
    from skimage.segmentation import find_boundaries

    from screenlib.report.gallery import inner_boundaries

    rng = np.random.default_rng(0)
    for number in range(60):
        labels = rng.integers(0, 4, size=(int(rng.integers(1, 25)), int(rng.integers(1, 25))))
        if number % 2:
            labels = np.kron(labels, np.ones((3, 3), dtype=labels.dtype))
        for image in (labels, labels == 1):
            assert np.array_equal(inner_boundaries(image), find_boundaries(image, mode="inner"))


def test_a_callers_matplotlib_figure_becomes_a_section_with_its_files(tmp_path):
    """Sections added by the caller may still be matplotlib figures (saved as PNG and SVG)."""
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [0, 1])
    text = write_report(tmp_path, my_plot=figure).read_text(encoding="utf-8")
    assert '<section id="my_plot">' in text
    section = text.split('<section id="my_plot">')[1].split("</section>")[0]
    assert "data:image/png;base64," in section
    assert (tmp_path / "figures" / "my_plot.png").read_bytes().startswith(b"\x89PNG")
    assert "<svg" in (tmp_path / "figures" / "my_plot.svg").read_text(encoding="utf-8")
