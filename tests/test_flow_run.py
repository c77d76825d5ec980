"""`screenlib run` on an FCS plate: the input kind is detected and the same outputs follow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_bad_inputs import assert_input_error, screenlib

pytest.importorskip("flowio")
EXAMPLE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_flow"


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flow") / "out"
    result = screenlib(
        "-q", "run", EXAMPLE / "fcs", "--platemap", EXAMPLE / "platemap.csv", "--out", out
    )
    assert result.returncode == 0, result
    assert "96 wells (FCS)" in result.stdout
    return out


def test_flow_plate_gives_the_image_outputs(flow_run):
    for name in ("cells.parquet", "fields.csv", "wells.csv", "plate_qc.csv", "gates.json",
                 "fits.csv", "fits_full.parquet", "report.html", "outputs.json"):  # fmt: skip
        assert (flow_run / name).stat().st_size > 0, name
    manifest = json.loads((flow_run / "run.json").read_text())
    assert manifest["input"].startswith("flow cytometry")
    assert not (flow_run / "parts").exists()
    report = (flow_run / "report.html").read_text(encoding="utf-8")
    assert "flow cytometry (FCS files)" in report and "Scatter gate" in report


def test_flow_fractions_and_ec50_match_the_truth(flow_run):
    wells = pd.read_csv(flow_run / "wells.csv").set_index("well")
    truth = pd.read_csv(EXAMPLE / "truth" / "wells.csv").set_index("well")
    error = (wells["apoptotic_fraction"] - truth["apoptotic_fraction"]).abs()
    assert error.mean() <= 0.01, error.describe()
    fits = pd.read_parquet(flow_run / "fits_full.parquet")
    fits = fits[fits["readout"] == "apoptotic_fraction"].set_index("sample")
    dosed = truth[truth["role"] == "sample"]
    for sample, expected in dosed.groupby("sample")["ic50_apoptosis_molar"].first().items():
        assert 1 / 1.15 < fits.loc[sample, "ic50_molar"] / expected < 1.15, sample


def test_flow_run_without_vehicle_wells_stops(tmp_path):
    text = (EXAMPLE / "platemap.csv").read_text(encoding="utf-8")
    platemap = tmp_path / "map.csv"
    platemap.write_text(text.replace("negative_control", "sample"), encoding="utf-8")
    result = screenlib("run", EXAMPLE / "fcs", "--platemap", platemap, "--out", tmp_path / "o")
    assert_input_error(result, "negative_control")
