"""Fixtures shared by the bad-input battery and the no-silent-harm tests: tiny real plates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from screenlib.store import PlateLayout, create_plate

EXPORT_WELLS = ["A01", "A02"]


@pytest.fixture(scope="session")
def export_template(tmp_path_factory) -> Path:
    """A tiny ImageXpress export by the simulator: 2 wells x 2 fields x 3 channels, 48 x 48."""
    from screenlib.simulate import example_plate_design, simulate_plate

    design = example_plate_design(
        fields_per_well=2, field_shape=(48, 48), cells_per_field=6
    ).restricted_to(EXPORT_WELLS)
    folder = tmp_path_factory.mktemp("export_template")
    simulated = simulate_plate(design, folder / "sim", "imagexpress", progress=False)
    return Path(simulated.images)


@pytest.fixture
def export(export_template, tmp_path) -> Path:
    """A private copy of the tiny export, to damage."""
    target = tmp_path / "export"
    shutil.copytree(export_template, target)
    return target


@pytest.fixture(scope="session")
def tiny_zarr_template(tmp_path_factory) -> Path:
    """A tiny 2-well OME-Zarr plate (random pixels) for errors found before any analysis."""
    folder = tmp_path_factory.mktemp("tiny_zarr")
    layout = PlateLayout(
        name="TINY",
        wells=EXPORT_WELLS,
        channel_names=["DAPI", "FITC", "Texas Red"],
        shape=(1, 3, 1, 32, 32),
        n_fields=1,
        pixel_size_um=1.3,
    )
    plate = create_plate(folder / "tiny.zarr", layout)
    rng = np.random.default_rng(8)
    for well in EXPORT_WELLS:
        plate.write_field(well, 0, rng.integers(100, 4000, (3, 32, 32), dtype=np.uint16))
    return folder / "tiny.zarr"


@pytest.fixture
def tiny_zarr(tiny_zarr_template, tmp_path) -> Path:
    """A private copy of the tiny plate, to damage."""
    target = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_zarr_template, target)
    return target
