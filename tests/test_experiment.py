"""Experiments bigger than one plate: per-plate runs, pooled fits, between-plate spread.

The two-plate run renders two plates of the example design with different seeds and checks
every plate's IC50 and the pooled IC50 against the simulator's truth.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from screenlib.doseresponse.replicates import replicate_fits, replicate_spread
from screenlib.errors import InputError
from screenlib.orchestrate.experiment import experiment_plates, read_experiment_file
from screenlib.simulate._plate_design import MILADEMETAN_IC50_NM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_plates(tmp_path_factory) -> dict:
    from screenlib.simulate import example_plate_design, simulate_plate

    folder = tmp_path_factory.mktemp("experiment")
    plates = []
    for seed in (1, 2):
        design = example_plate_design(seed=seed, fields_per_well=1)
        simulated = simulate_plate(design, folder / f"sim{seed}", "zarr", progress=False)
        target = folder / f"plate{seed}.zarr"
        shutil.move(simulated.images, target)
        plates.append(target)
    return {"folder": folder, "plates": plates, "platemap": folder / "sim1" / "platemap.csv"}


@pytest.fixture(scope="module")
def experiment_run(two_plates) -> dict:
    from test_bad_inputs import screenlib

    out = two_plates["folder"] / "out"
    result = screenlib(
        "--quiet", "run", *two_plates["plates"], "--platemap", two_plates["platemap"],
        "--out", out, "--scheduler", "sync",
    )  # fmt: skip
    assert result.returncode == 0, result
    return {"out": out, "result": result}


def test_every_plate_gets_its_own_outputs(experiment_run):
    out = experiment_run["out"]
    for name in ("plate1", "plate2"):
        assert (out / "plates" / name / "report.html").is_file()
        assert (out / "plates" / name / "gates.json").is_file()  # gated on its own vehicle
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "plates/plate1/report.html" in report and "plates/plate2/report.html" in report
    wells = pd.read_csv(out / "wells.csv")
    assert sorted(wells["plate"].unique()) == ["plate1", "plate2"]
    assert len(wells) == 2 * 96


def test_per_plate_and_pooled_ic50_match_the_truth(experiment_run):
    fits = pd.read_parquet(experiment_run["out"] / "fits_full.parquet")
    fits = fits[fits["readout"] == "apoptotic_fraction"]
    assert sorted(fits["plate"].unique()) == ["plate1", "plate2", "pooled"]
    core = pd.read_csv(experiment_run["out"] / "fits.csv")
    assert list(core.columns[:3]) == ["plate", "sample", "compound"] and "ic50" in core
    for row in fits.itertuples():
        truth = MILADEMETAN_IC50_NM[row.sample] * 1e-9
        fold = row.ic50_molar / truth
        # one field per well (35-65 cells at the top doses): a single plate varies more
        limit = 1.4 if row.plate == "pooled" else 2.0
        assert 1 / limit < fold < limit, (row.plate, row.sample, fold)
    for sample, part in fits.groupby("sample"):
        per_plate = part[part["plate"] != "pooled"]
        pooled = part[part["plate"] == "pooled"].iloc[0]
        assert pooled["n_points"] == per_plate["n_points"].sum(), sample


def test_between_plate_spread(experiment_run):
    spread = pd.read_csv(experiment_run["out"] / "experiment.csv")
    fractions = spread[spread["readout"] == "apoptotic_fraction"]
    assert len(fractions) == len(MILADEMETAN_IC50_NM)
    assert (fractions["n_replicates"] == 2).all() and (fractions["n_with_ic50"] == 2).all()
    assert np.isfinite(fractions["pic50_sd"]).all() and (fractions["pic50_sd"] < 0.3).all()
    fits = pd.read_csv(experiment_run["out"] / "fits.csv")
    for row in fractions.itertuples():
        plates = fits[
            (fits["sample"] == row.sample)
            & (fits["readout"] == row.readout)
            & (fits["plate"] != "pooled")
        ]
        assert math.isclose(row.pic50_mean, plates["pic50"].mean(), rel_tol=1e-9)


def test_rerun_of_an_experiment_reuses_every_field(experiment_run, two_plates):
    from test_bad_inputs import screenlib

    again = screenlib(
        "--quiet", "run", *two_plates["plates"], "--platemap", two_plates["platemap"],
        "--out", experiment_run["out"], "--scheduler", "sync", "--no-report",
    )  # fmt: skip
    assert again.returncode == 0, again
    for name in ("plate1", "plate2"):
        manifest = pd.read_json(experiment_run["out"] / "plates" / name / "run.json", typ="series")
        assert manifest["n_fields_todo"] == 0


# ----------------------------------------------------------------------------- pairing


def test_experiment_file_pairs_plates_and_maps(two_plates, tmp_path):
    plate1, plate2 = two_plates["plates"]
    listing = tmp_path / "experiment.csv"
    listing.write_text(
        f"plate,platemap,name\n{plate1},{two_plates['platemap']},first\n"
        f"{plate2},{two_plates['platemap']},\n",
        encoding="utf-8",
    )
    members = read_experiment_file(listing)
    assert [m.name for m in members] == ["first", "plate2"]
    assert members[0].plate == plate1


def test_experiment_file_names_a_missing_plate(tmp_path):
    listing = tmp_path / "experiment.csv"
    listing.write_text("plate,platemap\nnowhere.zarr,map.csv\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2: plate .*nowhere.zarr does not exist"):
        read_experiment_file(listing)


def test_one_map_with_a_plate_column_is_split_by_plate(two_plates, tmp_path):
    from screenlib.platemap import read_platemap

    table = read_platemap(two_plates["platemap"])
    both = pd.concat([table.assign(plate="plate1"), table.assign(plate="plate2")])
    members = experiment_plates(two_plates["plates"], [both])
    assert [m.name for m in members] == ["plate1", "plate2"]
    assert all(len(m.platemap) == 96 and "plate" not in m.platemap for m in members)
    with pytest.raises(InputError, match="plate"):
        experiment_plates(two_plates["plates"], [both.assign(plate="other")])


# ----------------------------------------------------------------------------- replicates


def _replicate_wells(ic50s: dict[str, float], seed: int = 0) -> pd.DataFrame:
    """Two dose series on one plate (replicates a and b) sharing four vehicle wells."""
    rng = np.random.default_rng(seed)
    rows = [
        {"sample": "S", "compound": "x", "concentration_molar": 0.0, "role": "negative_control",
         "replicate": "", "n_cells": 400}
        for _ in range(4)
    ]  # fmt: skip
    for replicate in ic50s:
        for dose in 1e-6 / 3.0 ** np.arange(9):
            rows.append(
                {"sample": "S", "compound": "x", "concentration_molar": dose, "role": "sample",
                 "replicate": replicate, "n_cells": 400}
            )  # fmt: skip
    wells = pd.DataFrame(rows)
    share = pd.Series(0.05, index=wells.index)
    for replicate, ic50 in ic50s.items():
        mine = wells["replicate"] == replicate
        share[mine] = 0.05 + 0.8 / (1 + (ic50 / wells.loc[mine, "concentration_molar"]) ** 1.2)
    wells["n_apoptotic"] = rng.binomial(wells["n_cells"], share)
    wells["apoptotic_fraction"] = wells["n_apoptotic"] / wells["n_cells"]
    wells["relative_cell_count"] = 1.0
    wells["well"] = [f"W{i:02d}" for i in range(len(wells))]
    return wells


def test_replicate_fits_share_the_vehicle_and_give_the_spread():
    wells = _replicate_wells({"a": 1e-7, "b": 4e-7})
    fits = replicate_fits(wells, None, by="replicate")
    fits = fits[fits["readout"] == "apoptotic_fraction"].set_index("replicate")
    assert sorted(fits.index) == ["a", "b", "pooled"]
    assert fits.loc["a", "n_vehicle"] == fits.loc["b", "n_vehicle"] == 4
    assert 0.5e-7 < fits.loc["a", "ic50_molar"] < 2e-7
    assert 2e-7 < fits.loc["b", "ic50_molar"] < 8e-7
    assert (
        fits.loc["a", "ic50_molar"] < fits.loc["pooled", "ic50_molar"] < fits.loc["b", "ic50_molar"]
    )
    spread = replicate_spread(fits.reset_index(), by="replicate")
    row = spread[spread["readout"] == "apoptotic_fraction"].iloc[0]
    expected = np.std([fits.loc["a", "pic50"], fits.loc["b", "pic50"]], ddof=1)
    assert math.isclose(row["pic50_sd"], expected, rel_tol=1e-9)
    assert row["pic50_sd"] > 0.3  # the two replicates really differ (4-fold)


def test_replicate_column_gives_replicates_csv():
    from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
    from screenlib.orchestrate.finalize import finalize
    from screenlib.settings import AssaySettings

    platemap = example_platemap()
    cells = simulate_cell_table(platemap, seed=3)
    dosed = platemap["role"] == "sample"
    platemap = platemap.assign(replicate=np.where(dosed, ["a", "b"] * (len(platemap) // 2), ""))
    fields = (
        cells[["well", "field", "timepoint"]]
        .drop_duplicates()
        .assign(qc_pass=True, qc_reason="", status="done", n_cells=1)
    )
    results = finalize(cells, fields, platemap, AssaySettings())
    assert results.replicates is not None and len(results.replicates)
    assert (results.replicates["n_replicates"] == 2).all()
    assert any("replicate" in note for note in results.notes)
