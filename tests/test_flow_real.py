"""Real FCS files from PyPI packages (see tests/data/fcs/README.md): FCS 2.0, 3.0 and 3.1 from
four instruments read, and a real 24-well dose-response plate gates sensibly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

pytest.importorskip("flowio")

from screenlib.aggregate import aggregate_wells  # noqa: E402
from screenlib.doseresponse import fit_wells  # noqa: E402
from screenlib.errors import InputError, SettingsError  # noqa: E402
from screenlib.flow import FlowSettings, flow_tables, read_fcs, read_flow_plate  # noqa: E402
from screenlib.gating import classify_cells, learn_gates  # noqa: E402
from screenlib.settings import AssaySettings  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "fcs"
YEAST = DATA / "yeast_ip_plate"
INSTRUMENTS = DATA / "instruments"
# isopentyladenine, uM (cytoflow's "Yeast Dose Response" notebook)
YEAST_IP_UM = {
    "B01": 5.0, "B02": 3.75, "B03": 2.8125, "B04": 2.109, "B05": 1.582, "B06": 1.1865,
    "B07": 0.8899, "B08": 0.6674, "B09": 0.5, "B10": 0.3754, "B11": 0.2816, "B12": 0.2112,
    "C01": 0.1584, "C02": 0.1188, "C03": 0.0892, "C04": 0.0668, "C05": 0.05, "C06": 0.0376,
    "C07": 0.0282, "C08": 0.0211, "C09": 0.0159,
}  # fmt: skip
VEHICLE = ("C07", "C08", "C09")  # the lowest doses stand in for uninduced wells


def _yeast_platemap() -> pd.DataFrame:
    rows = []
    for well, dose in YEAST_IP_UM.items():
        vehicle = well in VEHICLE
        rows.append(
            {
                "well": well,
                "row": well[0],
                "column": int(well[1:]),
                "sample": "yeast GFP reporter",
                "compound": "isopentyladenine",
                "concentration_molar": 0.0 if vehicle else dose * 1e-6,
                "role": "negative_control" if vehicle else "sample",
            }
        )
    return pd.DataFrame(rows)


def test_real_yeast_plate_reads():
    plate = read_flow_plate(YEAST)
    assert len(plate.wells) == 24 and plate.wells[0] == "B01" and plate.wells[-1] == "C12"
    assert {len(e) for e in plate.events.values()} == {1000}
    assert plate.roles == {
        "annexin": "FITC-A",
        "pi": "PerCP-Cy5-5-A",
        "fsc_area": "FSC-A",
        "ssc_area": "SSC-A",
        "fsc_height": "FSC-H",
    }
    meta = plate.metadata["B01"]
    assert meta["fcs_version"] == "3.0" and meta["well_source"] == "keyword"
    assert meta["compensation"] == "file keyword SPILL"
    # neither channel carries a stain label: the guess is said out loud
    assert any("annexin channel taken as FITC-A" in w for w in plate.warnings)
    assert plate.name == "yeast_ip_plate"


def test_real_yeast_plate_gates_into_a_dose_response():
    """GFP (FITC) positive fraction, gated from the lowest-dose wells, rises with IP dose
    into a fitted EC50 inside the tested range; the scatter gate removes few events."""
    platemap = _yeast_platemap()
    settings = AssaySettings()
    plate = read_flow_plate(YEAST)
    cells, fields = flow_tables(plate, platemap, settings)
    gate = cells.attrs["scatter_gate"]
    assert gate["details"]["vehicle_debris_fraction"] < 0.02
    assert gate["details"]["vehicle_doublet_fraction"] < 0.05
    assert 0.0 < fields["excluded_fraction"].max() < 0.06
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, fields, settings)
    dosed = wells[wells["role"] == "sample"]
    rho = stats.spearmanr(dosed["concentration_molar"], dosed["apoptotic_fraction"]).statistic
    assert rho > 0.8
    vehicle = wells[wells["role"] == "negative_control"]["apoptotic_fraction"]
    assert vehicle.max() < 0.05
    assert dosed[dosed["concentration_molar"] >= 1e-6]["apoptotic_fraction"].min() > 0.9
    fits = fit_wells(wells[wells["well"].isin(YEAST_IP_UM)], settings.fit)
    fit = fits[fits["readout"] == "apoptotic_fraction"].iloc[0]
    assert 0.0159e-6 < fit["ic50_molar"] < 5e-6
    assert 0.03e-6 < fit["ic50_molar"] < 0.2e-6  # the fractions cross one half near 0.07 uM


def test_fcs_2_0_with_the_well_in_the_file_name():
    plate = read_flow_plate(
        INSTRUMENTS / "EY_2013-07-19_PBS_FCS_2.0_Custom_Without_Add_Well_A1.001.fcs",
        settings=FlowSettings(annexin_channel="V2-A", pi_channel="Y2-A"),
    )
    assert plate.wells == ["A01"]
    meta = plate.metadata["A01"]
    assert meta["fcs_version"] == "2.0" and meta["n_events"] == 10000
    assert meta["well_source"] == "file name" and meta["compensation"] == "none"
    assert any("no spillover matrix" in w for w in plate.warnings)


def test_fcs_3_1_with_the_common_end_offset_bug_is_read_with_a_warning():
    path = INSTRUMENTS / "EY_2013-07-19_PBS_FCS_3.1_Well_A1.001.fcs"
    (data_set,) = read_fcs(path)
    assert data_set.version == "3.1" and data_set.events.shape == (10000, 19)
    assert any("$ENDDATA" in w for w in data_set.warnings)
    settings = FlowSettings(annexin_channel="FL2-A", pi_channel="FL4-A")
    # its $SPILLOVER lists six channels but no values: refused, with the way out
    with pytest.raises(InputError) as error:
        read_flow_plate(path, settings=settings)
    assert "SPILLOVER" in str(error.value) and "compensation=False" in str(error.value)
    plate = read_flow_plate(path, settings=settings, compensation=False)
    assert any("$ENDDATA" in w for w in plate.warnings)
    assert plate.metadata["A01"]["compensation"] == "none (switched off)"


def test_fcs_2_0_log_amplified_integers_are_decoded():
    """FACSCalibur: 10-bit channel numbers on 4-decade log amplifiers become 1..10^4."""
    plate = read_flow_plate(INSTRUMENTS / "Sample_Well_A02.fcs")
    assert plate.wells == ["A02"]  # from the BDPMWELL keyword
    assert plate.roles["annexin"] == "FL1-H" and plate.roles["pi"] == "FL3-H"
    assert plate.roles["fsc_area"] == "FSC-H" and plate.roles["fsc_height"] is None
    assert any("no doublet gate" in w for w in plate.warnings)
    fl1 = plate.events["A02"][:, plate.channels.index("FL1-H")]
    assert 1.0 <= fl1.min() and fl1.max() <= 10_000.0
    assert np.log10(fl1.max() / fl1.min()) > 2  # decoded to a log-spread linear scale


def test_corrupted_real_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputError) as error:
        read_flow_plate(INSTRUMENTS / "corrupted.fcs")
    message = str(error.value)
    assert "corrupted.fcs" in message and "\n" not in message


def test_real_panel_without_annexin_or_pi_asks_for_the_channels():
    with pytest.raises(SettingsError) as error:
        read_flow_plate(
            INSTRUMENTS / "EY_2013-07-19_PBS_FCS_2.0_Custom_Without_Add_Well_A1.001.fcs"
        )
    message = str(error.value)
    assert "no channel found for pi" in message and "flow.pi_channel" in message
    assert "Y2-A" in message and "\n" not in message


def test_real_spill_matrix_is_applied():
    """A BD file's 4 x 4 $SPILL (FITC into AmCyan 16 %) compensates its channels."""
    path = INSTRUMENTS / "FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs"
    (data_set,) = read_fcs(path)
    parts = data_set.keywords["spill"].split(",")
    names = parts[1:5]
    matrix = np.array(parts[5:], dtype=float).reshape(4, 4)
    assert names == ["FITC-A", "PerCP-Cy5-5-A", "AmCyan-A", "PE-Texas Red-A"]
    assert matrix[0, 2] == pytest.approx(0.16)
    plate = read_flow_plate(path)
    assert plate.wells == ["A01"] and plate.roles["annexin"] == "FITC-A"
    assert plate.roles["pi"] == "PE-Texas Red-A"
    assert plate.metadata["A01"]["compensation"] == "file keyword SPILL"
    columns = [data_set.channels.index(n) for n in names]
    expected = data_set.events[:, columns] @ np.linalg.inv(matrix)
    np.testing.assert_allclose(plate.events["A01"][:, columns], expected, rtol=1e-9)
    untouched = [i for i in range(len(data_set.channels)) if i not in columns]
    np.testing.assert_array_equal(plate.events["A01"][:, untouched], data_set.events[:, untouched])
    raw = read_flow_plate(path, compensation=False).events["A01"]
    assert not np.allclose(raw[:, columns[2]], plate.events["A01"][:, columns[2]])


def test_real_files_of_two_panels_are_refused_as_one_plate(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for source in (YEAST / "Yeast_B1_B01.fcs",
                   INSTRUMENTS / "FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs"):  # fmt: skip
        (folder / source.name).write_bytes(source.read_bytes())
    with pytest.raises(InputError) as error:
        read_flow_plate(folder)
    message = str(error.value)
    assert "differ" in message and "one plate, one panel" in message and "\n" not in message
