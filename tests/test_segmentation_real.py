"""Nuclei segmentation on real annotated images, the nucleus scale, and one pixel-size order.

The real images (tests/data/nuclei, sources and licences in tests/data/README.md) were made
and annotated by others, at pixel sizes the kernel is not told.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from screenlib.analysis import analyze_field, match_labels
from screenlib.analysis.metrics import (
    average_precision,
    matched_ious,
    without_edge_objects,
)
from screenlib.analysis.scale import estimate_nucleus_scale, resolve_pixel_size
from screenlib.ingest.conventions import ExportInfo, imagexpress_tiff_description
from screenlib.plugins import get_stain, get_stains
from screenlib.settings import AssaySettings, SegmentationSettings
from screenlib.simulate import render_bright_among_dim, render_field

DATA = Path(__file__).parent / "data" / "nuclei"
NAMES = sorted(path.name.removesuffix("_labels.tif") for path in DATA.glob("*_labels.tif"))
HOECHST = get_stain("hoechst")
#: sources whose reference masks leave out nuclei cut by the image edge (the Cell Tracking
#: Challenge's): scored without edge-touching objects on either side
NO_EDGE_NUCLEI = ("ctc",)


def real(name: str) -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(DATA / f"{name}.tif"), tifffile.imread(DATA / f"{name}_labels.tif")


def segment(image: np.ndarray, settings: AssaySettings | None = None) -> np.ndarray:
    """The kernel on one nuclear image, pixel size unknown (as the real images come)."""
    result = analyze_field(
        image[None], stains=[HOECHST], pixel_size_um=None, settings=settings or AssaySettings()
    )
    return result.labels


@pytest.fixture(scope="module")
def real_scores() -> dict[str, tuple]:
    scores = {}
    for name in NAMES:
        image, truth = real(name)
        labels = segment(image)
        if name.startswith(NO_EDGE_NUCLEI):
            truth, labels = without_edge_objects(truth), without_edge_objects(labels)
        scores[name] = (
            match_labels(truth, labels),
            average_precision(truth, labels),
            matched_ious(truth, labels),
        )
    return scores


def source(name: str) -> str:
    return name.split("_")[0]


def test_real_images_from_three_sources_are_bundled():
    assert len(NAMES) >= 10
    assert {source(name) for name in NAMES} == {"ctc", "dsb2018", "mnfinder"}


def test_real_images_are_segmented_at_unknown_scale(real_scores):
    # the previous kernel (0.65 µm and a 10 µm nucleus assumed) scored mean F1 0.47 and
    # mAP 0.23 here, with 3-10x too many objects on four images; a plain scikit-image
    # pipeline 0.68 / 0.40 (benchmarks/accuracy_real.py). With a fixed neck ratio for splits
    # (touching pairs merged, 20 of 125 nuclei on the BBBC038 image) it was 0.882, worst 0.743
    f1 = {name: score[0].f1 for name, score in real_scores.items()}
    mean_ap = np.mean([score[1] for score in real_scores.values()])
    assert np.mean(list(f1.values())) >= 0.90, f1
    # the worst, HeLa confocal 40x (20 nuclei), annotates micronuclei beside their nucleus as
    # nuclei of their own; the kernel joins small pieces close together (the fragments of one
    # apoptotic nucleus count once)
    assert min(f1.values()) >= 0.78, f1
    assert mean_ap >= 0.55, mean_ap


def test_every_real_source_is_segmented(real_scores):
    # generality across sources (labs, microscopes, stains): no source's mean falls far behind
    by_source: dict[str, list] = {}
    for name, score in real_scores.items():
        by_source.setdefault(source(name), []).append(score)
    for name, scores in by_source.items():
        assert np.mean([score[0].f1 for score in scores]) >= 0.90, name  # the targets
        assert np.mean([score[1] for score in scores]) >= 0.55, name


def test_touching_pairs_of_small_nuclei_are_split(real_scores):
    # BBBC038: with split seeds from the core above 30 % of the local peak, 17 of 125 nuclei
    # stayed merged in touching pairs (F1 0.862, count -8.8 %); from the half-maximum core 10,
    # and textured nuclei whose core that cuts stay whole when their outline has no waist
    match = real_scores["dsb2018_stardist_img2d"][0]
    assert match.f1 >= 0.90, match
    assert real_scores["dsb2018_stardist_img2d"][1] >= 0.55
    assert match.count_error <= 0.05, match


def test_dim_nuclei_among_bright_ones_are_found(real_scores):
    # Cell Tracking Challenge HeLa (H2B-GFP): low-expressing cells' nuclei at a fifth of the
    # typical level were dropped as faint cytoplasm (F1 0.905, count -12 %)
    matches = [score[0] for name, score in real_scores.items() if source(name) == "ctc"]
    assert np.mean([match.f1 for match in matches]) >= 0.93, matches
    assert max(match.count_error for match in matches) <= 0.08, matches


def test_real_outlines_match_the_annotations(real_scores):
    ious = np.concatenate([score[2] for score in real_scores.values()])
    assert np.median(ious) >= 0.85


def test_no_real_image_is_cut_into_pieces(real_scores):
    # large textured nuclei (confocal 40x) came out 2-10x over-counted before
    for name, (match, _, _) in real_scores.items():
        assert match.n_predicted <= 1.3 * match.n_true, (name, match)


def test_bright_condensed_nuclei_among_dim_ones_are_counted(real_scores):
    # RPE-1: 82 nuclei, six of them over 3x the median brightness
    match = real_scores["mnfinder_rpe1_20220526_1"][0]
    assert match.count_error <= 0.10, match


@pytest.mark.parametrize("pixel_size_um", [0.3, 0.65, 1.3, 2.0])
def test_nucleus_scale_is_measured_at_any_pixel_size(pixel_size_um):
    shape = (768, 768) if pixel_size_um < 0.5 else (512, 512)
    field = render_field(
        np.random.default_rng(1),
        shape=shape,
        pixel_size_um=pixel_size_um,
        n_cells=70 if pixel_size_um < 0.5 else min(400, int(150 * (pixel_size_um / 0.65) ** 2)),
        touching_fraction=0.3,  # clumps
    )
    true_px = 10.5 / pixel_size_um  # the renderer's mean nucleus diameter
    scale = estimate_nucleus_scale([field.channels[0]])
    assert scale.diameter_px == pytest.approx(true_px, rel=0.2), scale
    assert scale.n_objects >= 20


def test_nucleus_scale_ignores_a_few_very_bright_nuclei():
    field = render_bright_among_dim(np.random.default_rng(3))
    scale = estimate_nucleus_scale([field.channels[0]])
    assert scale.diameter_px == pytest.approx(10.5 / field.pixel_size_um, rel=0.2), scale


def test_nucleus_scale_needs_nuclei():
    with pytest.raises(ValueError, match="no nucleus"):
        estimate_nucleus_scale([np.full((64, 64), 100, np.uint16)])


@pytest.mark.parametrize("pixel_size_um", [0.3, 2.0])
def test_simulated_fields_at_hidden_pixel_sizes(pixel_size_um):
    shape = (768, 768) if pixel_size_um < 0.5 else (512, 512)
    field = render_field(
        np.random.default_rng(7),
        shape=shape,
        pixel_size_um=pixel_size_um,
        n_cells=70 if pixel_size_um < 0.5 else 400,
        touching_fraction=0.2,
    )
    result = analyze_field(
        field.channels,
        stains=get_stains(field.stains),
        pixel_size_um=None,
        settings=AssaySettings(),
    )
    assert match_labels(field.labels, result.labels).f1 >= 0.9
    assert result.cells["area_um2"].isna().all()  # no µm without a pixel size
    assert (result.cells["area_px"] > 0).all()


def test_settings_diameter_wins_over_the_measured_one():
    field = render_field(np.random.default_rng(2), shape=(256, 256), n_cells=40)
    settings = AssaySettings(segmentation=SegmentationSettings(nucleus_diameter_px=20.0))
    result = analyze_field(
        field.channels,
        stains=get_stains(field.stains),
        pixel_size_um=0.65,
        settings=settings,
        nucleus_diameter_px=5.0,
    )
    assert result.qc["nucleus_diameter_px"] == 20.0
    by_um = AssaySettings(segmentation=SegmentationSettings(nucleus_diameter_um=13.0))
    result = analyze_field(
        field.channels, stains=get_stains(field.stains), pixel_size_um=1.3, settings=by_um
    )
    assert result.qc["nucleus_diameter_px"] == pytest.approx(10.0)


def test_pixel_size_is_resolved_in_one_order():
    assert resolve_pixel_size(0.5, 1.3) == (0.5, "settings")
    assert resolve_pixel_size(None, 1.3) == (1.3, "recorded with the image")
    value, source = resolve_pixel_size(None, None)
    assert value is None and "unknown" in source
    with pytest.raises(ValueError, match="positive"):
        resolve_pixel_size(-1.0, None)


def test_segment_command_agrees_with_the_kernel_and_reads_metaseries(tmp_path):
    from screenlib.cli import cli

    field = render_field(
        np.random.default_rng(21), shape=(384, 384), pixel_size_um=1.3, n_cells=150
    )
    image = tmp_path / "A01_s1_w1.tif"
    nuclear = field.channels[0]
    tifffile.imwrite(
        image,
        nuclear,
        description=imagexpress_tiff_description(
            ExportInfo(
                plate="P1",
                wells=["A01"],
                n_fields=1,
                channel_names=["DAPI"],
                image_shape=nuclear.shape,
                pixel_size_um=1.3,
            ),
            channel=0,
        ),
        software="MetaSeries",
        metadata=None,
    )
    out, overlay = tmp_path / "labels.tif", tmp_path / "outlines.png"
    result = CliRunner().invoke(
        cli, ["segment", str(image), "--out", str(out), "--overlay", str(overlay)]
    )
    assert result.exit_code == 0, result.output
    assert "pixel size 1.3 µm: recorded with the image" in result.output
    labels = tifffile.imread(out)
    kernel = analyze_field(
        nuclear[None], stains=[HOECHST], pixel_size_um=1.3, settings=AssaySettings()
    )
    np.testing.assert_array_equal(labels, kernel.labels)
    assert match_labels(field.labels, labels).f1 >= 0.9

    from matplotlib.image import imread

    drawn = imread(overlay)[..., :3]
    magenta = (drawn[..., 0] > 0.9) & (drawn[..., 1] < 0.1) & (drawn[..., 2] > 0.9)
    assert magenta.sum() > 10 * int(labels.max())  # every nucleus outlined
