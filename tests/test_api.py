"""The notebook API: analyze_plate, open_run, the tables, a curve and a plate heatmap; and the
worked example in docs/examples/, executed as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import screenlib
from screenlib.errors import InputError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory) -> tuple[Path, Path]:
    from screenlib.simulate import example_plate_design, simulate_plate

    design = example_plate_design(seed=5, fields_per_well=1, field_shape=(128, 128))
    folder = tmp_path_factory.mktemp("api")
    simulated = simulate_plate(design, folder / "sim", "zarr", progress=False)
    return Path(simulated.images), Path(simulated.platemap)


@pytest.fixture(scope="module")
def walkthrough(small_plate, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("walk") / "out"
    done = subprocess.run(
        [sys.executable, ROOT / "docs" / "examples" / "notebook_walkthrough.py",
         *small_plate, out],
        capture_output=True, text=True, timeout=900, cwd=tmp_path_factory.getbasetemp(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_walkthrough_runs_and_saves_its_figures(walkthrough):
    assert (walkthrough / "walkthrough_curve.png").stat().st_size > 10_000
    assert (walkthrough / "walkthrough_heatmap.png").stat().st_size > 10_000


def test_open_run_gives_the_tables_of_the_folder(walkthrough):
    run = screenlib.open_run(walkthrough)
    pd.testing.assert_frame_equal(
        run.wells, pd.read_csv(walkthrough / "wells.csv", keep_default_na=False, na_values=[""])
    )
    assert len(run.cells) >= len(run.cells[run.cells["exclusion_reason"].fillna("") == ""])
    assert set(run.gates) and run.settings.gating.method
    assert isinstance(run.notes, list)
    curve = run.curve("SK-N-SH", "milademetan", "apoptotic_fraction")
    assert curve["ic50_molar"] > 0


def test_open_run_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(InputError, match="no finished screenlib run"):
        screenlib.open_run(tmp_path)


def test_unknown_curve_names_what_was_fitted(walkthrough):
    with pytest.raises(InputError, match="fitted"):
        screenlib.open_run(walkthrough).plot_curve("HeLa", "milademetan")
