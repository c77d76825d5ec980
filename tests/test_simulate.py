"""Synthetic fields and plates: the truth matches the pixels, the design and the file names."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import expand_labels

from screenlib.errors import InputError
from screenlib.ingest.conventions import parse_relpath
from screenlib.platemap import read_platemap
from screenlib.simulate import (
    CELL_CLASSES,
    PlateDesign,
    SampleResponse,
    WellDesign,
    example_plate_design,
    expected_well_response,
    hill_effect,
    render_bright_among_dim,
    render_field,
    simulate_plate,
)
from screenlib.store import open_plate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_plates" / "milademetan_nb"


@pytest.fixture(scope="module")
def field():
    """A 512 x 512 field with a treated-like class mix (enough of every class)."""
    return render_field(
        np.random.default_rng(7),
        n_cells=160,
        class_fractions={
            "viable": 0.4,
            "early_apoptotic": 0.2,
            "late_apoptotic": 0.25,
            "necrotic": 0.15,
        },
    )


# --- one field -------------------------------------------------------------------------------


def test_field_arrays_and_truth_table_match_the_label_image(field):
    assert field.channels.shape == (3, 512, 512) and field.channels.dtype == np.uint16
    assert field.labels.dtype == np.int32
    cells = field.cells
    assert len(cells) == 160
    assert list(cells["label"]) == list(range(1, 161))
    assert set(np.unique(field.labels)) == set(range(0, 161))
    area = np.bincount(field.labels.ravel())[1:]
    np.testing.assert_array_equal(cells["area_px"].to_numpy(), area)
    centroids = np.array(ndimage.center_of_mass(field.labels > 0, field.labels, range(1, 161)))
    np.testing.assert_allclose(cells[["centroid_y", "centroid_x"]].to_numpy(), centroids)
    assert set(cells["cell_class"]) == set(CELL_CLASSES)
    # viable nuclei are 8-14 µm across (area of a disc; G2 nuclei up to ~1.3x)
    viable = cells[(cells["cell_class"] == "viable") & ~cells["touches_border"]]
    diameter_um = 2 * np.sqrt(viable["area_px"] / np.pi) * field.pixel_size_um
    assert 8.5 <= diameter_um.median() <= 13.0
    assert diameter_um.quantile(0.05) >= 6.5 and diameter_um.quantile(0.95) <= 16.0


def test_touching_flag_is_true_contact_and_at_least_15_percent():
    for seed in range(3):
        simulated = render_field(np.random.default_rng(seed), n_cells=150)
        labels = simulated.labels
        # independent check: a nucleus touches when its 3x3 dilation meets another label
        expected = []
        padded = np.pad(labels, 2)
        for label, box in enumerate(ndimage.find_objects(padded), start=1):
            box = tuple(slice(b.start - 1, b.stop + 1) for b in box)
            grown = ndimage.binary_dilation(padded[box] == label, np.ones((3, 3), bool))
            neighbours = set(np.unique(padded[box][grown])) - {0, label}
            expected.append(bool(neighbours))
        np.testing.assert_array_equal(simulated.cells["touching"].to_numpy(), expected)
        assert simulated.cells["touching"].mean() >= 0.15


def test_fragmented_nuclei_are_several_pieces_under_one_label(field):
    fragmented = field.cells[field.cells["fragmented"]]
    assert len(fragmented) >= 5
    pieces = [ndimage.label(field.labels == label)[1] for label in fragmented["label"]]
    assert np.mean(np.array(pieces) >= 2) >= 0.6
    assert not field.cells.loc[field.cells["cell_class"] == "viable", "fragmented"].any()


def _nucleus_means(simulated, channel):
    image = simulated.channels[channel].astype(float) - 100.0
    index = simulated.cells["label"].to_numpy()
    return np.asarray(ndimage.mean(image, simulated.labels, index))


def test_pyknotic_nuclei_are_small_and_bright(field):
    cells = field.cells.assign(hoechst=_nucleus_means(field, 0))
    inner = cells[~cells["touches_border"]]
    pyknotic = inner[inner["pyknotic"]]
    viable = inner[inner["cell_class"] == "viable"]
    assert len(pyknotic) >= 10
    area_ratio = pyknotic["area_px"].median() / viable["area_px"].median()
    brightness_ratio = pyknotic["hoechst"].median() / viable["hoechst"].median()
    assert 0.4 <= area_ratio <= 0.85
    assert 1.8 <= brightness_ratio <= 4.5


def test_markers_separate_classes_with_realistic_overlap(field):
    cells = field.cells.assign(pi=_nucleus_means(field, 2))
    ring = expand_labels(field.labels, 4) * (field.labels == 0)
    annexin = field.channels[1].astype(float) - 100.0
    index = cells["label"].to_numpy()
    cells["annexin_ring_p90"] = ndimage.labeled_comprehension(
        annexin, ring, index, lambda v: np.percentile(v, 90), float, np.nan
    )
    medians = cells.groupby("cell_class")[["pi", "annexin_ring_p90"]].median()
    assert medians.loc["late_apoptotic", "pi"] > 10 * medians.loc["viable", "pi"]
    assert medians.loc["necrotic", "pi"] > 10 * medians.loc["early_apoptotic", "pi"]
    assert (
        medians.loc["early_apoptotic", "annexin_ring_p90"]
        > 3 * medians.loc["viable", "annexin_ring_p90"]
    )
    assert (
        medians.loc["late_apoptotic", "annexin_ring_p90"]
        > 3 * medians.loc["necrotic", "annexin_ring_p90"]
    )
    # the true Annexin levels overlap: the best single threshold misclassifies some cells
    big = render_field(np.random.default_rng(11), shape=(1024, 1024), n_cells=600,
                       class_fractions={"viable": 0.5, "early_apoptotic": 0.5})  # fmt: skip
    level = np.log(big.cells["annexin_v_level"].to_numpy())
    positive = big.cells["cell_class"].to_numpy() == "early_apoptotic"
    errors = [np.mean((level > cut) != positive) for cut in np.linspace(2, 8, 241)]
    assert 0.002 <= min(errors) <= 0.10


def test_camera_offset_noise_and_vignetting():
    simulated = render_field(
        np.random.default_rng(3), shape=(256, 256), n_cells=0, stains=("hoechst",)
    )
    image = simulated.channels[0].astype(float)
    assert len(simulated.cells) == 0 and simulated.labels.max() == 0
    # offset 100 + background 40 * illumination; shot + read noise
    centre = image[100:130, 115:145]
    corner = image[-16:, :16]  # the corner farthest from the illumination centre
    assert 130 <= centre.mean() <= 150
    assert 6.0 <= centre.std() <= 9.0  # sqrt(40 + 4^2) ~ 7.5
    falloff = 1 - (corner.mean() - 100) / (centre.mean() - 100)
    assert 0.27 <= falloff <= 0.42
    assert simulated.illumination.max() == pytest.approx(1.0, abs=0.01)


def test_bleed_through_puts_annexin_into_pi():
    kwargs = {"shape": (256, 256), "n_cells": 40, "class_counts": {"early_apoptotic": 40}}
    with_bleed = render_field(np.random.default_rng(5), **kwargs)
    without = render_field(np.random.default_rng(5), bleed_through={}, **kwargs)
    ring = (expand_labels(with_bleed.labels, 4) > 0) & (with_bleed.labels == 0)
    extra = with_bleed.channels[2][ring].mean() - without.channels[2][ring].mean()
    annexin = with_bleed.channels[1][ring].mean() - 100
    assert 0.02 <= extra / annexin <= 0.08


def test_same_seed_same_field_and_different_seed_different_field():
    a = render_field(np.random.default_rng(42), shape=(128, 128), n_cells=20)
    b = render_field(np.random.default_rng(42), shape=(128, 128), n_cells=20)
    c = render_field(np.random.default_rng(43), shape=(128, 128), n_cells=20)
    np.testing.assert_array_equal(a.channels, b.channels)
    np.testing.assert_array_equal(a.labels, b.labels)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert not np.array_equal(a.channels, c.channels)


def _sharpness(image: np.ndarray) -> float:
    return float(ndimage.laplace(image.astype(float)).var())


def test_defocus_and_z_stack_blur():
    kwargs = {"shape": (192, 192), "n_cells": 30, "stains": ("hoechst",)}
    sharp = render_field(np.random.default_rng(1), **kwargs)
    blurred = render_field(np.random.default_rng(1), defocus_sigma_px=3.0, **kwargs)
    assert _sharpness(blurred.channels[0]) < 0.5 * _sharpness(sharp.channels[0])
    stack = render_field(np.random.default_rng(1), z_planes=3, **kwargs)
    assert stack.z_stack.shape == (3, 1, 192, 192)
    np.testing.assert_array_equal(stack.channels, stack.z_stack[1])
    focus = [_sharpness(plane[0]) for plane in stack.z_stack]
    assert focus[1] > 1.5 * max(focus[0], focus[2])


def test_bright_among_dim_defeats_a_global_otsu():
    simulated = render_bright_among_dim(np.random.default_rng(0))
    assert len(simulated.cells) == 57
    hoechst = simulated.channels[0].astype(float)
    found = set(np.unique(simulated.labels[hoechst > threshold_otsu(hoechst)])) - {0}
    assert len(found) <= 10
    bright = set(simulated.cells.loc[simulated.cells["pyknotic"], "label"])
    assert len(bright) == 6 and bright <= found


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="caspase9"):
        render_field(np.random.default_rng(0), stains=("hoechst", "caspase9"))
    with pytest.raises(InputError, match="apoptotic_late"):
        render_field(np.random.default_rng(0), class_fractions={"apoptotic_late": 1.0})


# --- plate design ----------------------------------------------------------------------------


def test_hill_curves_of_the_design():
    assert hill_effect(0.0, 1e-8, 1.0) == 0.0
    assert float(hill_effect(1e-8, 1e-8, 1.3)) == pytest.approx(0.5)
    design = example_plate_design()
    by_well = {spec.well: spec for spec in design.wells}
    vehicle, count = expected_well_response(design, by_well["A01"])
    assert count == 1.0 and sum(vehicle.values()) == pytest.approx(1.0)
    previous = None
    for column in range(11, 1, -1):  # rising dose
        fractions, count = expected_well_response(design, by_well[f"A{column:02d}"])
        apoptotic = fractions["early_apoptotic"] + fractions["late_apoptotic"]
        if previous is not None:
            assert apoptotic > previous[0] and count < previous[1]
        previous = (apoptotic, count)
    # at the IC50 the apoptotic fraction is half-way between vehicle and top
    response = design.responses["SK-N-SH"]
    at_ic50 = WellDesign("A02", "SK-N-SH", "milademetan", response.ic50_apoptosis_molar)
    fractions, _ = expected_well_response(design, at_ic50)
    a0 = vehicle["early_apoptotic"] + vehicle["late_apoptotic"]
    middle = (a0 + response.max_apoptotic_fraction) / 2
    assert fractions["early_apoptotic"] + fractions["late_apoptotic"] == pytest.approx(middle)


def test_design_rejects_bad_wells():
    responses = {"L1": SampleResponse(1e-8, 1e-8)}
    with pytest.raises(InputError, match="A01"):
        PlateDesign("P1", [WellDesign("A1", "L1", "x", 1e-8), WellDesign("A01", "L1", "x", 1e-9)],
                    responses)  # fmt: skip
    with pytest.raises(InputError, match="L2"):
        PlateDesign("P1", [WellDesign("A1", "L2", "x", 1e-8)], responses)


def _small_design(**overrides) -> PlateDesign:
    design = example_plate_design(
        field_shape=(96, 96), cells_per_field=12, fields_per_well=2, **overrides
    )
    return design.restricted_to(["A01", "A03", "B12"])


@pytest.mark.parametrize("layout", ["imagexpress", "operetta", "cellvoyager"])
def test_export_file_names_parse_back(tmp_path, layout):
    design = _small_design(timepoints=2, z_planes=2)
    result = simulate_plate(design, tmp_path / "out", layout, progress=False)
    files = [p for p in result.images.rglob("*.tif*")]
    keys = {parse_relpath(layout, p.relative_to(result.images).as_posix()) for p in files}
    expected = {
        (well, f, c, t, z)
        for well in ("A01", "A03", "B12")
        for f in range(2)
        for c in range(3)
        for t in range(2)
        for z in range(2)
    }
    assert {(k.well, k.field, k.channel, k.timepoint, k.z) for k in keys} == expected
    assert result.n_images == len(files) == len(expected)
    image = tifffile.imread(files[0])
    assert image.dtype == np.uint16 and image.shape == (96, 96)


def test_plate_truth_is_consistent_and_matches_the_zarr_layout(tmp_path):
    design = _small_design()
    export = simulate_plate(design, tmp_path / "tiff", "imagexpress", progress=False)
    zarr_run = simulate_plate(design, tmp_path / "zarr", "zarr", progress=False)
    plate = open_plate(zarr_run.images)
    assert plate.wells == ["A01", "A03", "B12"] and plate.pixel_size_um == 1.3
    pixels = tifffile.imread(export.images / "MilademetanNB_A03_s2_w3.tif")
    np.testing.assert_array_equal(plate.read_field("A03", 1)[2], pixels)

    cells = pd.read_parquet(export.truth / "cells.parquet")
    for column in ("well", "field", "timepoint", "label", "cell_class", "centroid_y",
                   "centroid_x", "area_px", "touching"):  # fmt: skip
        assert column in cells.columns
    for (well, field_index), group in cells.groupby(["well", "field"]):
        labels = tifffile.imread(export.truth / "labels" / f"{well}_f{field_index}_t0.tif")
        assert labels.dtype == np.int32
        area = np.bincount(labels.ravel(), minlength=len(group) + 1)[1:]
        np.testing.assert_array_equal(group["area_px"].to_numpy(), area)
    wells = pd.read_csv(export.truth / "wells.csv")
    counts = cells.groupby("well").size()
    np.testing.assert_array_equal(wells.set_index("well")["n_cells"], counts[wells["well"]])
    platemap = read_platemap(export.platemap)
    merged = platemap.merge(wells, on="well", suffixes=("", "_truth"))
    np.testing.assert_allclose(merged["concentration_molar"], merged["concentration_molar_truth"],
                               rtol=1e-5)  # fmt: skip
    assert list(platemap["role"]) == ["negative_control", "sample", "positive_control"]
    saved = json.loads((export.truth / "design.json").read_text())
    assert PlateDesign.from_json(saved["design"]) == design


def test_per_well_fractions_follow_the_design_within_binomial_noise(tmp_path):
    design = example_plate_design(field_shape=(128, 128), cells_per_field=30, fields_per_well=2)
    design = design.restricted_to([f"D{c:02d}" for c in range(1, 13)])
    result = simulate_plate(design, tmp_path / "plate", "zarr", progress=False)
    wells = pd.read_csv(result.truth / "wells.csv")
    p = wells["expected_apoptotic_fraction"]
    z = (wells["apoptotic_fraction"] - p) / np.sqrt(p * (1 - p) / wells["n_cells"])
    assert z.abs().max() < 4.0
    assert abs(z.mean()) < 1.5  # 12 wells: the mean z has sd ~0.3
    # cell counts fall with dose: vehicle well vs the three top doses
    top = wells.loc[wells["well"].isin(["D02", "D03", "D04"]), "n_cells"].mean()
    assert top < 0.6 * wells.loc[wells["well"] == "D01", "n_cells"].item()


def test_same_seed_same_files(tmp_path):
    design = _small_design()
    digests = []
    for name in ("a", "b"):
        result = simulate_plate(design, tmp_path / name, "cellvoyager", progress=False)
        digests.append(
            {
                p.relative_to(result.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(result.root.rglob("*"))
                if p.is_file() and p.suffix != ".parquet"
            }
        )
    assert digests[0] == digests[1]


# --- the CLI and the committed example ---------------------------------------------------------


def _screenlib(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "screenlib", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_writes_a_small_plate_and_refuses_mixed_example_options(tmp_path):
    out = tmp_path / "cli"
    done = _screenlib("-q", "simulate", str(out), "--layout", "operetta", "--wells", "C01-C03",
                      "--fields", "1", "--size", "64", "--cells-per-field", "6")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(list((out / "export" / "Images").glob("*.tiff"))) == 3 * 3
    assert (out / "export" / "Images" / "Index.idx.xml").is_file()
    assert len(pd.read_csv(out / "truth" / "wells.csv")) == 3
    refused = _screenlib("simulate", str(tmp_path / "x"), "--example", "--size", "64")
    assert refused.returncode == 2 and "--example" in refused.stderr


def test_committed_example_plate_is_small_complete_and_reproducible(tmp_path):
    files = [p for p in EXAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 1024**2
    design = example_plate_design()
    saved = json.loads((EXAMPLE / "truth" / "design.json").read_text())
    assert saved["layout"] == "imagexpress"
    assert PlateDesign.from_json(saved["design"]) == design, "regenerate: see its README"
    assert len(list((EXAMPLE / "export").glob("MilademetanNB_*_s*_w*.tif"))) == 96 * 2 * 3
    platemap = read_platemap(EXAMPLE / "platemap.csv", 96)
    assert len(platemap) == 96
    assert set(platemap.loc[platemap["role"] == "sample", "sample"]) == {
        "SK-N-SH", "SH-SY5Y", "IMR-32", "IMR-5", "LAN-5"}  # fmt: skip
    wells = pd.read_csv(EXAMPLE / "truth" / "wells.csv")
    assert wells.loc[wells["role"] == "negative_control", "n_cells"].min() >= 100
    # two wells rendered again give the committed truth and images. Exact on this machine;
    # the bounds allow for last-bit differences of vectorised maths on another CPU, and
    # still fail for any change of the generator (positions, classes or intensities).
    subset = design.restricted_to(["A01", "C07"])
    again = simulate_plate(subset, tmp_path / "again", "imagexpress", compression="zlib",
                           progress=False)  # fmt: skip
    for name in ("MilademetanNB_A01_s1_w1.tif", "MilademetanNB_C07_s2_w3.tif"):
        fresh_image = tifffile.imread(again.images / name).astype(float)
        committed_image = tifffile.imread(EXAMPLE / "export" / name).astype(float)
        assert np.corrcoef(fresh_image.ravel(), committed_image.ravel())[0, 1] > 0.97
        assert abs(fresh_image.mean() - committed_image.mean()) < 1.0
    for name in ("A01_f0_t0.tif", "C07_f1_t0.tif"):
        fresh_labels = tifffile.imread(again.truth / "labels" / name)
        committed_labels = tifffile.imread(EXAMPLE / "truth" / "labels" / name)
        assert np.mean(fresh_labels == committed_labels) > 0.999
    committed = pd.read_parquet(EXAMPLE / "truth" / "cells.parquet")
    committed = committed[committed["well"].isin(["A01", "C07"])].reset_index(drop=True)
    fresh = pd.read_parquet(again.truth / "cells.parquet")
    key = ["well", "field", "timepoint", "label", "cell_class", "fragmented", "pyknotic"]
    pd.testing.assert_frame_equal(committed[key], fresh[key])
    assert (committed["area_px"] - fresh["area_px"]).abs().max() <= 3


# --- confounders -----------------------------------------------------------------------------


def test_each_confounder_switches_on_alone_and_survives_the_design_json():
    from screenlib.simulate import CONFOUNDERS, Confounders, messy_plate_design

    assert Confounders().active() == []
    assert Confounders.messy().active() == list(CONFOUNDERS)
    for name in CONFOUNDERS:
        assert Confounders.only(name).active() == [name]
    design = messy_plate_design(geometry=384, fields_per_well=1)
    assert len(design.wells) == 384 and design.confounders == Confounders.messy()
    assert PlateDesign.from_json(design.to_json()) == design
    with pytest.raises(ValueError, match="unknown confounder"):
        Confounders.only("dust")


def test_field_with_debris_and_clumps_has_per_object_truth():
    field = render_field(
        np.random.default_rng(3),
        shape=(256, 256),
        n_cells=60,
        debris_objects_per_cell=0.3,
        clump_fraction=0.3,
        stain_gain={"annexin_v": 1.5},
        fibre=True,
        hot_pixels=[(1, 5, 7, 60000)],
    )
    cells = field.cells
    debris = cells["object_class"] == "debris"
    assert debris.sum() >= 8 and (cells.loc[debris, "cell_class"] == "debris").all()
    assert set(cells.loc[~debris, "cell_class"]) <= set(CELL_CLASSES)
    # debris is sub-nuclear or dim: smaller than the cells' median or far dimmer
    small = cells.loc[debris, "area_px"] < cells.loc[~debris, "area_px"].median()
    dim = cells.loc[debris, "hoechst_level"] < 0.3 * cells.loc[~debris, "hoechst_level"].median()
    assert (small | dim).all()
    clumped = cells[cells["clump"] >= 0]
    sizes = clumped.groupby("clump").size()  # a member that found no room is left out
    assert sizes.max() <= 6 and sizes.median() >= 3
    assert clumped["touching"].mean() > 0.8
    assert field.channels[1, 5, 7] >= 60000


def test_messy_plate_truth_counts_cells_not_objects(tmp_path):
    from screenlib.simulate import messy_plate_design

    design = messy_plate_design(fields_per_well=1, field_shape=(128, 128), cells_per_field=40)
    design = design.restricted_to(["A01", "F01", "A03"])
    result = simulate_plate(design, tmp_path / "messy", "zarr", progress=False)
    cells = pd.read_parquet(result.truth / "cells.parquet")
    wells = pd.read_csv(result.truth / "wells.csv")
    fields = pd.read_csv(result.truth / "fields.csv")
    assert (cells["object_class"] == "debris").any()
    whole = cells[cells["object_class"] != "debris"]
    expected = whole.groupby(["well", "timepoint"]).size()
    assert wells.set_index(["well", "timepoint"])["n_cells"].sort_index().tolist() == (
        expected.sort_index().tolist()
    )
    assert wells["n_debris_objects"].sum() == int((cells["object_class"] == "debris").sum())
    # gains differ per well and timepoint; Annexin V grows at the second timepoint
    assert fields["gain_annexin_v"].nunique() == len(fields)
    # one of the two vehicle wells failed to seed
    vehicle = fields[fields["well"].isin(["A01", "F01"])].groupby("well")["seeding_density"].first()
    assert sorted(vehicle.tolist()) == [pytest.approx(0.15), 1.0]


def test_count_error_compares_with_the_true_cells_of_the_fields_that_passed_qc():
    from screenlib.simulate.evaluate import passing_field_count_errors

    truth_cells = pd.DataFrame(
        {
            "well": ["A01"] * 103 + ["A02"] * 40,
            "field": [0] * 50 + [1] * 53 + [0] * 40,
            "timepoint": 0,
            "object_class": ["cell"] * 50 + ["cell"] * 50 + ["debris"] * 3 + ["cell"] * 40,
        }
    )
    fields = pd.DataFrame(
        {"well": ["A01", "A01", "A02"], "field": [0, 1, 0], "timepoint": 0,
         "qc_pass": [True, False, True]}
    )  # fmt: skip
    wells = pd.DataFrame({"well": ["A01", "A02"], "timepoint": 0, "n_nuclei": [49, 42]})
    errors = passing_field_count_errors(wells, fields, truth_cells)
    row = errors.set_index("timepoint").loc[0]
    # A01: 49 of the 50 cells of its passing field (-2 %), not of all 100; A02: +5 %
    assert row["count_error_passing_median"] == pytest.approx((0.02 + 0.05) / 2)
    assert row["count_bias_passing_median"] == pytest.approx((-0.02 + 0.05) / 2)
