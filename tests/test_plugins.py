"""Stain and segmenter plugins: built-ins, a real installable plugin package, broken plugins."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from screenlib.analysis import analyze_field, match_labels
from screenlib.errors import InputError
from screenlib.plugins import (
    Stain,
    get_stains,
    load_segmenters,
    load_stains,
    plugin_failures,
    resolve_segmenter,
)
from screenlib.settings import AssaySettings, ChannelSettings, GatingSettings, SegmentationSettings
from screenlib.simulate import render_field

ROOT = Path(__file__).resolve().parents[1]
CASPASE_PACKAGE = ROOT / "plugins" / "screenlib-caspase37"
SCREENLIB = [sys.executable, "-m", "screenlib"]


def fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """Install a minimal distribution (metadata + entry points) into the directory ``site``."""
    dist_info = site / f"{name}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A directory on sys.path (and PYTHONPATH for subprocesses) for throw-away plugins."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    yield site
    monkeypatch.undo()
    load_stains(refresh=True)
    load_segmenters(refresh=True)


def test_builtin_plugins_are_registered():
    stains = load_stains(refresh=True)
    assert {"hoechst", "annexin_v", "pi"} <= set(stains)
    assert stains["hoechst"].role == "nuclear"
    # the stains' call features are the ones gating uses by default
    gating = GatingSettings()
    assert (stains["annexin_v"].region, stains["annexin_v"].feature) == (
        "ring",
        gating.annexin_feature,
    )
    assert (stains["pi"].region, stains["pi"].feature) == ("nucleus", gating.pi_feature)
    assert "classical" in load_segmenters(refresh=True)
    assert not plugin_failures()


def test_stain_declaration_is_validated():
    with pytest.raises(ValueError, match="region"):
        Stain("tmrm", "marker", "mitochondria", "tmrm_mitochondria_mean")
    with pytest.raises(ValueError, match="feature"):
        Stain("tmrm", "marker", "cell", "tmrm_nucleus_mean")


def test_broken_plugins_are_reported_by_name_and_skipped(plugin_site):
    (plugin_site / "half_done_plugin.py").write_text("NOT_A_STAIN = 42\n")
    fake_distribution(
        plugin_site,
        "broken-stains",
        """
        [screenlib.stains]
        missing_module = no_such_module_anywhere:STAIN
        wrong_type = half_done_plugin:NOT_A_STAIN
        [screenlib.segmenters]
        crashing = no_such_segmenter_module:segment
        """,
    )
    stains = load_stains(refresh=True)
    assert {"hoechst", "annexin_v", "pi"} <= set(stains)  # the host still works
    failures = {failure.name: failure for failure in plugin_failures()}
    assert set(failures) == {"missing_module", "wrong_type", "crashing"}
    assert "No module named 'no_such_module_anywhere'" in failures["missing_module"].reason
    assert "not a screenlib.plugins.Stain" in failures["wrong_type"].reason
    assert failures["crashing"].distribution == "broken-stains"
    listing = subprocess.run([*SCREENLIB, "plugins"], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert "hoechst" in listing.stdout and "Broken plugins" in listing.stdout
    assert "missing_module" in listing.stdout and "wrong_type" in listing.stdout
    # the kernel still runs with the built-in stains
    field = render_field(np.random.default_rng(0), shape=(256, 256), n_cells=30)
    result = analyze_field(
        field.channels,
        stains=get_stains(field.stains),
        pixel_size_um=0.65,
        settings=AssaySettings(),
    )
    assert result.qc["n_cells"] > 20


def test_a_segmenter_plugin_replaces_the_classical_one(plugin_site):
    (plugin_site / "threshold_segmenter.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from scipy import ndimage as ndi

            def segment(nuclear_image, pixel_size_um, settings):
                '''Label connected pixels above the image mean (a toy segmenter).'''
                assert nuclear_image.dtype == np.float32 and pixel_size_um > 0
                smooth = ndi.gaussian_filter(nuclear_image, 1.0)
                threshold = 0.5 * (np.median(smooth) + np.percentile(smooth, 99))
                return ndi.label(smooth > threshold)[0] * 7
            """
        )
    )
    fake_distribution(
        plugin_site,
        "toy-segmenter",
        """
        [screenlib.segmenters]
        toy_threshold = threshold_segmenter:segment
        """,
    )
    assert "toy_threshold" in load_segmenters(refresh=True)
    field = render_field(
        np.random.default_rng(1), shape=(256, 256), n_cells=30, touching_fraction=0
    )
    settings = AssaySettings(segmentation=SegmentationSettings(segmenter="toy_threshold"))
    with pytest.raises(InputError, match="toy_threshold"):  # named, but not passed: no fallback
        analyze_field(
            field.channels, stains=get_stains(field.stains), pixel_size_um=0.65, settings=settings
        )
    result = analyze_field(
        field.channels,
        stains=get_stains(field.stains),
        pixel_size_um=0.65,
        settings=settings,
        segmenter=resolve_segmenter(settings.segmentation),
    )
    # gaps in the plugin's labels (x7) are renumbered; measurements run at full resolution
    assert result.labels.max() == len(result.cells) > 15
    np.testing.assert_array_equal(result.cells["area_px"], np.bincount(result.labels.ravel())[1:])
    assert match_labels(field.labels, result.labels).f1 > 0.7


@pytest.fixture(scope="module")
def caspase_plugin_installed(tmp_path_factory):
    """pip-install the example plugin package into a folder of its own on this process's path
    (and PYTHONPATH, for subprocesses and Dask workers), so the environment and any test
    running beside this one never see it."""
    # build from a copy, so the build leaves nothing behind in the source tree
    source = tmp_path_factory.mktemp("plugin") / CASPASE_PACKAGE.name
    shutil.copytree(CASPASE_PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path_factory.mktemp("plugin_site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site]
    # offline and fast when the environment can build wheels (setuptools >= 70.1 or wheel);
    # otherwise pip builds the package in an isolated environment
    install = subprocess.run(
        [*command, "--no-build-isolation", str(source)], capture_output=True, text=True
    )
    if install.returncode != 0 and "bdist_wheel" in install.stderr:
        install = subprocess.run([*command, str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
        patch.setenv("PYTHONPATH", python_path)
        yield
    load_stains(refresh=True)


def test_caspase_plugin_package_installs_and_is_listed(caspase_plugin_installed):
    listing = subprocess.run([*SCREENLIB, "plugins"], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if "caspase37" in line)
    assert "region=nucleus" in line and "caspase37_nucleus_mean" in line
    stains = load_stains(refresh=True)
    assert stains["caspase37"].role == "marker"


def test_caspase_plugin_stain_is_measured_on_a_four_channel_field(caspase_plugin_installed):
    load_stains(refresh=True)
    stain_names = ("hoechst", "annexin_v", "pi", "caspase37")
    fractions = {"viable": 0.6, "early_apoptotic": 0.2, "late_apoptotic": 0.15, "necrotic": 0.05}
    field = render_field(
        np.random.default_rng(4), shape=(384, 384), n_cells=100, stains=stain_names,
        class_fractions=fractions,
    )  # fmt: skip
    settings = AssaySettings(
        channels=tuple(ChannelSettings(stain=name, index=i) for i, name in enumerate(stain_names))
    )
    result = analyze_field(
        field.channels, stains=get_stains(stain_names), pixel_size_um=0.65, settings=settings
    )
    cells = result.cells
    assert {"caspase37_nucleus_mean", "caspase37_nucleus_integrated", "caspase37_nucleus_p90",
            "background_caspase37"} <= set(cells.columns) | set(result.qc)  # fmt: skip
    # caspase-positive (early + late apoptotic) nuclei are brighter than the others
    truth = field.labels.ravel()
    overlap = pd.crosstab(result.labels.ravel()[truth > 0], truth[truth > 0])
    best_truth = overlap.idxmax(axis=1).drop(index=0, errors="ignore")
    classes = field.cells.set_index("label").loc[best_truth.to_numpy(), "cell_class"].to_numpy()
    positive = np.isin(classes, ["early_apoptotic", "late_apoptotic"])
    caspase = cells.set_index("label").loc[best_truth.index, "caspase37_nucleus_mean"].to_numpy()
    assert np.median(caspase[positive]) > 5 * np.median(caspase[~positive])


def test_caspase_plugin_call_reaches_cells_and_wells_in_a_full_run(
    caspase_plugin_installed, tmp_path
):
    """A plugin marker stain is measured, gated from vehicle wells and aggregated per well."""
    from screenlib.orchestrate import run_plate
    from screenlib.simulate import example_plate_design, simulate_plate

    load_stains(refresh=True)
    stain_names = ("hoechst", "annexin_v", "pi", "caspase37")
    design = dataclasses.replace(
        example_plate_design(),
        channel_names=("DAPI", "FITC", "Texas Red", "Cy5"),
        stains=stain_names,
        defocus_probability=0.0,
    ).restricted_to(["A01", "B01", "A02", "A03", "A12", "B12"])
    simulate_plate(design, tmp_path / "sim", layout="zarr", progress=False)
    settings = AssaySettings(
        channels=tuple(ChannelSettings(stain=name, index=i) for i, name in enumerate(stain_names))
    )
    plate_path = next((tmp_path / "sim").glob("*.zarr"))
    run_plate(
        plate_path,
        tmp_path / "sim" / "platemap.csv",
        tmp_path / "out",
        settings,
        n_workers=1,
        progress=False,
        report=False,
    )
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    wells = pd.read_csv(tmp_path / "out" / "wells.csv").set_index("well")
    assert "caspase37_positive" in cells
    apoptotic = cells["cell_class"].isin(["early_apoptotic", "late_apoptotic"])
    # caspase activity and Annexin V exposure agree on most cells
    assert (cells["caspase37_positive"] == apoptotic).mean() > 0.85
    caspase_fraction = [c for c in wells.columns if "caspase37" in c and "fraction" in c]
    assert caspase_fraction, list(wells.columns)
    assert wells.loc["A12", caspase_fraction[0]] > wells.loc["A01", caspase_fraction[0]] + 0.3
