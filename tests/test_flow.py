"""Flow-cytometry plates: FCS writing and reading, compensation, the scatter gate, and the
unchanged gating / aggregation / fits on simulated FCS plates with per-event truth."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("flowio")

import flowio  # noqa: E402

from screenlib.aggregate import aggregate_wells, plate_qc  # noqa: E402
from screenlib.doseresponse import fit_wells  # noqa: E402
from screenlib.errors import InputError, SettingsError  # noqa: E402
from screenlib.flow import (  # noqa: E402
    FlowSettings,
    flow_tables,
    is_flow_input,
    read_fcs,
    read_flow_plate,
    spillover_text,
    write_fcs,
)
from screenlib.gating import classify_cells, learn_gates  # noqa: E402
from screenlib.platemap import read_platemap  # noqa: E402
from screenlib.settings import AssaySettings  # noqa: E402
from screenlib.simulate import example_plate_design  # noqa: E402
from screenlib.simulate._flow import (  # noqa: E402
    FLOW_CHANNELS,
    FLOW_LABELS,
    FlowEventModel,
    simulate_flow_plate,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_plates" / "milademetan_flow"
ROWS_AB = [f"{r}{c:02d}" for r in "AB" for c in range(1, 13)]


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory):
    """Rows A and B of the example design, 3000 cells per vehicle well, per-well files."""
    design = example_plate_design().restricted_to(ROWS_AB)
    return simulate_flow_plate(design, tmp_path_factory.mktemp("flow") / "plate",
                               events_per_well=3000)  # fmt: skip


def _analyse(fcs, platemap_path, drop_scatter_gate=False):
    settings = AssaySettings()
    platemap = read_platemap(platemap_path)
    plate = read_flow_plate(fcs)
    cells, fields = flow_tables(plate, platemap, settings)
    if drop_scatter_gate:
        cells = cells.drop(columns="scatter_exclusion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, fields, settings)
    return plate, cells, fields, wells, gates, platemap, settings


def test_written_fcs_reads_back_with_flowio(tmp_path):
    """The writer's FCS 3.1 files (two data sets in one file) read with flowio itself."""
    rng = np.random.default_rng(0)
    first = rng.normal(1000, 100, (50, 3)).astype(np.float32)
    second = rng.normal(5, 1, (7, 3)).astype(np.float32)
    spill = spillover_text(["B", "C"], np.array([[1, 0.1], [0.02, 1]]))
    path = write_fcs(
        tmp_path / "two.fcs",
        [(first, {"$WELLID": "A01", "$SPILLOVER": spill}), (second, {"$WELLID": "B/2"})],
        ["A", "B", "C"],
        ["", "Annexin V", "PI"],
    )
    data_sets = flowio.read_multiple_data_sets(str(path))
    assert [d.version for d in data_sets] == ["3.1", "3.1"]
    assert data_sets[0].text["wellid"] == "A01" and data_sets[1].text["wellid"] == "B/2"
    assert data_sets[0].text["spillover"] == spill
    np.testing.assert_array_equal(data_sets[0].as_array(), first)
    np.testing.assert_array_equal(data_sets[1].as_array(), second)
    ours = read_fcs(path)
    assert ours[1].labels == ["", "Annexin V", "PI"]


def test_compensation_undoes_the_written_spillover(small_plate):
    raw = read_flow_plate(small_plate.fcs, compensation=False)
    compensated = read_flow_plate(small_plate.fcs)
    spill = FlowEventModel().spillover()
    fitc, pi = raw.channels.index("FITC-A"), raw.channels.index("PE-Texas Red-A")
    well = "A01"
    expected = raw.events[well][:, [fitc, pi]] @ np.linalg.inv(spill)
    np.testing.assert_allclose(compensated.events[well][:, [fitc, pi]], expected, rtol=1e-6)
    assert compensated.metadata[well]["compensation"] == "file keyword SPILLOVER"
    assert raw.metadata[well]["compensation"].startswith("none")
    # a matrix given by the user replaces the files' (here: no spillover at all)
    identity = pd.DataFrame(np.eye(2), index=["FITC-A", "PE-Texas Red-A"],
                            columns=["FITC-A", "PE-Texas Red-A"])  # fmt: skip
    given = read_flow_plate(small_plate.fcs, compensation=identity)
    np.testing.assert_array_equal(given.events[well], raw.events[well])
    assert given.metadata[well]["compensation"] == "given matrix"


def test_events_flow_through_the_unchanged_engine(small_plate):
    """read -> flow_tables -> learn_gates -> classify_cells -> aggregate_wells -> plate_qc ->
    fit_wells: fractions within 0.01 of the truth, debris and doublets left out."""
    plate, cells, fields, wells, gates, platemap, settings = _analyse(
        small_plate.fcs, small_plate.platemap
    )
    assert plate.roles["annexin"] == "FITC-A" and plate.roles["pi"] == "PE-Texas Red-A"
    assert not any("detector name" in w for w in plate.warnings)  # found by the $PnS labels
    truth = pd.read_parquet(small_plate.truth / "events.parquet")
    merged = cells.merge(truth, on=["well", "event"], validate="one_to_one")
    excluded = merged["true_class"].isin(["debris", "doublet"])
    called = merged["cell_class"].astype(str) == "debris"
    assert (called == excluded).mean() > 0.995
    assert set(merged.loc[called, "exclusion_reason"]) == {"debris", "doublet"}
    vehicle = merged["well"].isin(["A01", "B01"])
    assert gates[0].n_control_cells == int((vehicle & ~called).sum())

    true_wells = pd.read_csv(small_plate.truth / "wells.csv")
    both = wells.merge(true_wells, on="well", suffixes=("", "_true"))
    error = (both["apoptotic_fraction"] - both["apoptotic_fraction_true"]).abs()
    assert error.mean() <= 0.01, error.describe()
    per_field = fields.set_index("well")
    assert (
        both.set_index("well")["n_debris"] == per_field["n_debris"] + per_field["n_doublets"]
    ).all()
    assert list(fields["field"].unique()) == [0] and fields["qc_pass"].all()
    assert set(fields["well"]) == set(ROWS_AB)

    qc = plate_qc(wells, platemap)
    assert len(qc) > 0
    fits = fit_wells(wells, settings.fit)
    apoptosis = fits[fits["readout"] == "apoptotic_fraction"].set_index("sample")
    design = example_plate_design()
    for sample in ("SK-N-SH", "SH-SY5Y"):
        truth_ic50 = design.responses[sample].ic50_apoptosis_molar
        ratio = apoptosis.loc[sample, "ic50_molar"] / truth_ic50
        assert 1 / 1.15 <= ratio <= 1.15, (sample, ratio)


def test_without_the_scatter_gate_the_fractions_are_wrong(small_plate):
    """Debris binds Annexin V and takes up PI: left in, it biases the fractions."""
    *_, wells, _, _, _ = _analyse(small_plate.fcs, small_plate.platemap, drop_scatter_gate=True)
    true_wells = pd.read_csv(small_plate.truth / "wells.csv")
    both = wells.merge(true_wells, on="well", suffixes=("", "_true"))
    error = (both["apoptotic_fraction"] - both["apoptotic_fraction_true"]).abs()
    assert error.mean() > 0.01  # the target the gated plate meets (test above)


def test_single_file_with_a_data_set_per_well_reads_like_the_folder(small_plate, tmp_path):
    design = example_plate_design().restricted_to(ROWS_AB)
    single = simulate_flow_plate(design, tmp_path / "one", events_per_well=3000, single_file=True)
    assert single.fcs.is_file() and is_flow_input(single.fcs)
    one = read_flow_plate(single.fcs)
    folder = read_flow_plate(small_plate.fcs)
    assert one.wells == folder.wells == ROWS_AB
    for well in one.wells:
        np.testing.assert_array_equal(one.events[well], folder.events[well])
        assert one.metadata[well]["well_source"] == "keyword"
    assert one.name == folder.name == "MilademetanNB"


def test_is_flow_input(small_plate, tmp_path):
    assert is_flow_input(small_plate.fcs)
    assert is_flow_input(next(small_plate.fcs.iterdir()))
    (tmp_path / "plate.zarr").mkdir()
    (tmp_path / "tiffs").mkdir()
    (tmp_path / "tiffs" / "A01_w1.tif").write_bytes(b"II*\x00" + bytes(100))
    assert not is_flow_input(tmp_path / "plate.zarr")
    assert not is_flow_input(tmp_path / "tiffs")
    assert not is_flow_input(tmp_path / "tiffs" / "A01_w1.tif")


# --- bad input: one line naming the file -----------------------------------------------------


def _one_well(folder: Path, name: str, keywords=None, channels=FLOW_CHANNELS, n=200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    events = np.abs(np.random.default_rng(1).normal(1000, 200, (n, len(channels))))
    return write_fcs(folder / name, [(events, keywords or {})], channels, FLOW_LABELS)


def _message(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_bad_files_give_one_line_naming_the_file(tmp_path):
    folder = tmp_path / "notfcs"
    _one_well(folder, "P_A01.fcs")
    (folder / "P_A02.fcs").write_bytes(b"this is not a cytometry file")
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_A02.fcs" in _message(error) and "not an FCS file" in _message(error)

    folder = tmp_path / "truncated"
    good = _one_well(folder, "P_A01.fcs")
    data = good.read_bytes()
    (folder / "P_A02.fcs").write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_A02.fcs" in _message(error)

    folder = tmp_path / "twice"
    _one_well(folder, "x1.fcs", {"$WELLID": "A01"})
    _one_well(folder, "x2.fcs", {"$WELLID": "A1"})
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "well A01 already read" in _message(error) and "x2.fcs" in _message(error)

    folder = tmp_path / "conflict"
    _one_well(folder, "P_B03.fcs", {"$WELLID": "A01"})
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_B03.fcs" in _message(error) and "B03" in _message(error)

    folder = tmp_path / "nowell"
    _one_well(folder, "sample.fcs")
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "sample.fcs" in _message(error) and "no well" in _message(error)

    folder = tmp_path / "panels"
    _one_well(folder, "P_A01.fcs")
    other = ("FSC-A", "FSC-H", "SSC-A", "FITC-A", "APC-A", "Time")
    _one_well(folder, "P_A02.fcs", channels=other)
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_A02.fcs" in _message(error) and "differ" in _message(error)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no FCS files"):
        read_flow_plate(empty)


def test_bad_spillover_and_channel_settings(tmp_path):
    folder = tmp_path / "spill"
    _one_well(folder, "P_A01.fcs", {"$SPILLOVER": "2,FITC-A,APC-A,1,0.1,0,1"})
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_A01.fcs" in _message(error) and "APC-A" in _message(error)

    folder = tmp_path / "short"
    _one_well(folder, "P_A01.fcs", {"$SPILLOVER": "2,FITC-A,PE-Texas Red-A,1,0.1"})
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    assert "P_A01.fcs" in _message(error) and "SPILLOVER" in _message(error)

    folder = tmp_path / "ok"
    _one_well(folder, "P_A01.fcs")
    with pytest.raises(SettingsError) as error:
        read_flow_plate(folder, settings=FlowSettings(pi_channel="APC-A"))
    assert "flow.pi_channel" in _message(error) and "PE-Texas Red-A" in _message(error)
    with pytest.raises(SettingsError, match="unknown key"):
        FlowSettings.from_mapping({"annexin_chanel": "FITC-A"})
    assert FlowSettings.from_mapping({"debris_k": 5}).debris_k == 5.0


def test_no_vehicle_wells_is_refused(small_plate):
    platemap = read_platemap(small_plate.platemap)
    platemap["role"] = platemap["role"].replace("negative_control", "sample")
    with pytest.raises(InputError) as error:
        flow_tables(read_flow_plate(small_plate.fcs), platemap, AssaySettings())
    assert "negative_control" in _message(error)


# --- the simulate command and the committed example -----------------------------------------


def test_simulate_flow_command(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run(
        [sys.executable, "-m", "screenlib", "simulate", "--flow", str(out),
         "--wells", "C01-C04", "--events-per-well", "400"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in (out / "fcs").iterdir())
    assert files == [f"MilademetanNB_C0{i}.fcs" for i in range(1, 5)]
    data = flowio.FlowData(str(out / "fcs" / files[0]))
    assert data.text["wellid"] == "C01" and data.text["spillover"].startswith("2,FITC-A,")
    truth = pd.read_parquet(out / "truth" / "events.parquet")
    assert set(truth["true_class"].astype(str)) >= {"viable", "debris", "doublet"}
    refused = subprocess.run(
        [sys.executable, "-m", "screenlib", "simulate", "--flow", str(tmp_path / "x"),
         "--size", "64"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "--flow plates have no size" in refused.stderr


def test_committed_flow_example_is_the_simulator_output_and_gates_within_target(tmp_path):
    fresh = tmp_path / "example"
    subprocess.run(
        [sys.executable, "-m", "screenlib", "--quiet", "simulate", "--flow", "--example",
         str(fresh)],
        check=True,
    )  # fmt: skip
    committed = sorted(p.name for p in (EXAMPLE / "fcs").iterdir())
    assert committed == sorted(p.name for p in (fresh / "fcs").iterdir())
    for name in committed[::7]:
        assert (EXAMPLE / "fcs" / name).read_bytes() == (fresh / "fcs" / name).read_bytes()
    *_, wells, _, _, _ = _analyse(EXAMPLE / "fcs", EXAMPLE / "platemap.csv")
    truth = pd.read_csv(EXAMPLE / "truth" / "wells.csv")
    both = wells.merge(truth, on="well", suffixes=("", "_true"))
    error = (both["apoptotic_fraction"] - both["apoptotic_fraction_true"]).abs()
    assert error.mean() <= 0.01


def test_scatter_gate_figure_draws_the_limits(small_plate, tmp_path):
    from screenlib.flow.figures import scatter_gate_figure

    platemap = read_platemap(small_plate.platemap)
    cells, _ = flow_tables(read_flow_plate(small_plate.fcs), platemap, AssaySettings())
    gate = cells.attrs["scatter_gate"]
    figure = scatter_gate_figure(cells, gate, vehicle_wells=["A01", "B01"])
    left, right = figure.axes
    assert left.get_xscale() == "log" and right.get_ylabel() == "FSC-H"
    assert any(np.allclose(line.get_xdata(), gate["fsc"]["limit"]) for line in left.lines)
    figure.savefig(tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").stat().st_size > 10_000


def test_header_only_files_count_and_assay_settings_are_accepted(small_plate, tmp_path):
    """An FCS file without the .fcs suffix is found by its header; assay settings without a
    flow section read with the default flow settings."""
    folder = tmp_path / "nosuffix"
    folder.mkdir()
    source = small_plate.fcs / "MilademetanNB_A01.fcs"
    (folder / "MilademetanNB_A01.001").write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("FCS3.1 but a text file")
    assert is_flow_input(folder)
    plate = read_flow_plate(folder, settings=AssaySettings())
    assert plate.wells == ["A01"] and plate.settings == FlowSettings()


def test_the_unchanged_report_is_written_from_a_flow_plate(small_plate, tmp_path):
    """write_report takes the flow tables as they are (no plate images: no cell crops)."""
    from screenlib.report import write_report

    plate, cells, fields, wells, gates, platemap, settings = _analyse(
        small_plate.fcs, small_plate.platemap
    )
    report = write_report(
        tmp_path / "report", plate=None, cells=cells, fields=fields, wells=wells,
        plate_qc=plate_qc(wells, platemap), gates=gates, fits=fit_wells(wells, settings.fit),
        settings=settings, run_info={"input": "flow cytometry (FCS)", "plate": str(plate.path)},
    )  # fmt: skip
    html = report.read_text()
    assert "flow cytometry (FCS)" in html and "SK-N-SH" in html
    assert (tmp_path / "report" / "figures" / "gating_annexin_pi.png").stat().st_size > 10_000
