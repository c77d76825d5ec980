"""Per-well aggregation and plate QC: hand-computed statistics and simulated plates with truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from screenlib.aggregate import (
    aggregate_wells,
    edge_effect,
    plate_format,
    plate_qc,
    robust_z_prime,
    ssmd,
    wilson_interval,
    z_prime,
)
from screenlib.errors import InputError
from screenlib.gating import classify_cells, learn_gates
from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.settings import AssaySettings, GatingSettings


@pytest.fixture(scope="module")
def platemap() -> pd.DataFrame:
    return example_platemap()


@pytest.fixture(scope="module")
def classified(platemap) -> pd.DataFrame:
    cells = simulate_cell_table(platemap, cells_per_well=300, timepoints=(0, 1), seed=21)
    settings = GatingSettings(annexin_feature="annexin_v_ring_p90", method="robust", k_mad=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gates = learn_gates(cells, platemap, settings)
    return classify_cells(cells, gates, settings)


def _fields_table(cells: pd.DataFrame, n_fields: int = 4) -> pd.DataFrame:
    keys = cells[["well", "timepoint"]].drop_duplicates()
    rows = [
        {"well": w, "field": f, "timepoint": t, "qc_pass": True, "qc_reason": ""}
        for w, t in keys.itertuples(index=False)
        for f in range(n_fields)
    ]
    return pd.DataFrame(rows)


# --- statistics against hand computation -------------------------------------------------


def test_wilson_interval_known_values():
    low, high = wilson_interval(np.array([5, 0, 10, 0]), np.array([10, 10, 10, 0]))
    # Hand: z = 1.959964; for 5/10 centre 0.5, half-width 0.2634; for 0/10 upper bound
    # z^2/n / (1 + z^2/n) = 0.38415 / 1.38415 = 0.27753.
    np.testing.assert_allclose(low[:3], [0.23659, 0.0, 0.72247], atol=1e-4)
    np.testing.assert_allclose(high[:3], [0.76341, 0.27753, 1.0], atol=1e-4)
    assert np.isnan(low[3]) and np.isnan(high[3])
    # 81 of 263 (Newcombe 1998 example set): 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert float(low) == pytest.approx(0.2553, abs=5e-4)
    assert float(high) == pytest.approx(0.3662, abs=5e-4)


# Fixed control table. By hand (sample SDs):
#   positive 0.60 0.70 0.65 0.75: mean 0.675, SD sqrt(0.0125 / 3) = 0.064550
#   negative 0.05 0.10 0.08 0.07: mean 0.075, SD sqrt(0.0013 / 3) = 0.020817
#   Z' = 1 - 3 (0.064550 + 0.020817) / 0.6 = 0.573167
#   robust: medians 0.675, 0.075; MADs 0.05, 0.015 -> SDs 0.07413, 0.022239
#   robust Z' = 1 - 3 (0.07413 + 0.022239) / 0.6 = 0.518155
#   SSMD = 0.6 / sqrt(0.0125 / 3 + 0.0013 / 3) = 8.846517
POSITIVE = [0.60, 0.70, 0.65, 0.75]
NEGATIVE = [0.05, 0.10, 0.08, 0.07]


def test_z_prime_robust_z_prime_and_ssmd_match_hand_computation():
    assert z_prime(POSITIVE, NEGATIVE) == pytest.approx(0.573167, abs=1e-5)
    assert robust_z_prime(POSITIVE, NEGATIVE) == pytest.approx(0.518155, abs=1e-5)
    assert ssmd(POSITIVE, NEGATIVE) == pytest.approx(8.846517, abs=1e-5)
    assert ssmd(NEGATIVE, POSITIVE) == pytest.approx(-8.846517, abs=1e-5)
    assert np.isnan(z_prime([0.5], NEGATIVE))


def test_plate_qc_z_prime_on_a_fixed_wells_table():
    wells = pd.DataFrame(
        {
            "plate": "P1",
            "well": ["A01", "B01", "C01", "D01", "A12", "B12", "C12", "D12", "B05"],
            "row": list("ABCDABCDB"),
            "column": [1, 1, 1, 1, 12, 12, 12, 12, 5],
            "timepoint": 0,
            "role": ["negative_control"] * 4 + ["positive_control"] * 4 + ["sample"],
            "apoptotic_fraction": [*NEGATIVE, *POSITIVE, 0.3],
            "relative_cell_count": [1.0, 1.1, 0.9, 1.0, 0.3, 0.35, 0.25, 0.3, 0.8],
        }
    )
    qc = plate_qc(wells)
    assert len(qc) == 1
    row = qc.iloc[0]
    assert row["z_prime"] == pytest.approx(0.573167, abs=1e-5)
    assert row["robust_z_prime"] == pytest.approx(0.518155, abs=1e-5)
    assert row["ssmd"] == pytest.approx(8.846517, abs=1e-5)
    assert row["assay_quality"] == "excellent"
    # Relative cell count: positive 0.3 +- 0.040825, negative 1.0 +- 0.081650 (sample SDs)
    # Z' = 1 - 3 (0.040825 + 0.081650) / 0.7 = 0.475107
    assert row["z_prime_relative_cell_count"] == pytest.approx(0.475107, abs=1e-5)
    assert row["ssmd_relative_cell_count"] < 0
    assert row["n_negative_wells"] == 4 and row["n_positive_wells"] == 4
    assert "z_prime_below_0.5" not in row["qc_flags"]


def test_robust_z_prime_resists_an_outlier_well():
    with_outlier = [*POSITIVE, 0.05]  # one failed positive-control well
    assert z_prime(with_outlier, NEGATIVE) < 0.0
    assert robust_z_prime(with_outlier, NEGATIVE) > 0.3


# --- edge effect -------------------------------------------------------------------------


def _vehicle_plate(edge_shift: float, seed: int = 0) -> pd.DataFrame:
    """Vehicle wells all over a 96-well plate; edge wells shifted by ``edge_shift``."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in "ABCDEFGH":
        for c in range(1, 13):
            edge = r in "AH" or c in (1, 12)
            rows.append(
                {
                    "well": f"{r}{c:02d}",
                    "row": r,
                    "column": c,
                    "timepoint": 0,
                    "role": "negative_control",
                    "apoptotic_fraction": 0.05 + rng.normal(0, 0.01),
                    "relative_cell_count": 1 + rng.normal(0, 0.05) + (edge_shift if edge else 0),
                }
            )
    return pd.DataFrame(rows)


def test_edge_effect_flag():
    evaporated = plate_qc(_vehicle_plate(edge_shift=-0.2)).iloc[0]
    assert evaporated["edge_vehicle_relative_cell_count_flag"]
    assert evaporated["edge_effect_flag"]
    assert "vehicle:relative_cell_count" in evaporated["edge_effect_in"]
    assert evaporated["edge_vehicle_relative_cell_count_n_outer"] == 36
    assert evaporated["edge_vehicle_relative_cell_count_n_inner"] == 60
    assert evaporated["edge_vehicle_relative_cell_count_shift"] == pytest.approx(-0.2, abs=0.04)
    even = plate_qc(_vehicle_plate(edge_shift=0.0)).iloc[0]
    assert not even["edge_effect_flag"]
    assert even["assay_quality"] == "not_computed"
    assert "missing_controls" in even["qc_flags"]


def test_edge_effect_function_and_plate_format():
    assert edge_effect(np.array([1.0, 1.0]), np.array([2.0, 2.0, 2.0]))["flag"] is False
    # Significant but tiny shifts are not flagged (min_shift_sd).
    rng = np.random.default_rng(3)
    inner = rng.normal(0, 1, 400)
    assert not edge_effect(inner[:200] + 0.3, inner[200:])["flag"]
    assert plate_format(["A", "H"], [1, 12]) == (8, 12)
    assert plate_format(["A", "P"], [1, 5]) == (16, 24)
    assert plate_format(["AF"], [48]) == (32, 48)


def test_sample_edge_effect_uses_replicate_groups(classified, platemap):
    # Remove 40 % of the cells of edge wells (rows A and H in this layout): replicate groups
    # run down the columns, so edge replicates fall below their group median.
    rng = np.random.default_rng(0)
    edge = classified["row"].isin(["A", "H"])
    dropped = classified[~(edge & (rng.random(len(classified)) < 0.4))]
    qc = plate_qc(aggregate_wells(dropped, platemap), platemap)
    assert qc["edge_sample_relative_cell_count_flag"].all()
    clean = plate_qc(aggregate_wells(classified, platemap), platemap)
    assert not clean["edge_sample_relative_cell_count_flag"].any()


# --- wells table -------------------------------------------------------------------------


def test_wells_table_counts_fractions_and_accuracy(classified, platemap):
    wells = aggregate_wells(classified, platemap, _fields_table(classified), AssaySettings())
    assert len(wells) == 96 * 2
    assert set(wells["timepoint"]) == {0, 1}
    for column in (
        "plate", "well", "row", "column", "timepoint", "sample", "compound",
        "concentration_molar", "role", "n_cells", "n_viable", "n_early_apoptotic",
        "n_late_apoptotic", "n_necrotic", "n_debris", "fraction_viable", "n_apoptotic",
        "apoptotic_fraction", "apoptotic_fraction_ci_low", "apoptotic_fraction_ci_high",
        "relative_cell_count", "mean_annexin_v_ring_p90", "mean_pi_nucleus_mean",
        "n_fields_used", "n_fields_excluded", "qc_flags", "fraction_annexin_positive",
    ):  # fmt: skip
        assert column in wells.columns, column
    # Counts against a direct count of the cell table.
    a05 = classified[(classified["well"] == "A05") & (classified["timepoint"] == 1)]
    row = wells[(wells["well"] == "A05") & (wells["timepoint"] == 1)].iloc[0]
    classes = a05["cell_class"].astype(str)
    assert row["n_cells"] == (classes != "debris").sum()
    assert row["n_apoptotic"] == classes.isin(["early_apoptotic", "late_apoptotic"]).sum()
    assert row["apoptotic_fraction"] == pytest.approx(row["n_apoptotic"] / row["n_cells"])
    assert row["apoptotic_fraction_ci_low"] < row["apoptotic_fraction"]
    assert row["apoptotic_fraction"] < row["apoptotic_fraction_ci_high"]
    fractions = wells[[f"fraction_{c}" for c in ("viable", "early_apoptotic",
                                                "late_apoptotic", "necrotic")]]  # fmt: skip
    np.testing.assert_allclose(fractions.dropna().sum(axis=1), 1.0)

    # Accuracy of the per-well apoptotic fraction against the simulated truth.
    truth = (
        classified[classified["true_class"] != "debris"]
        .assign(apo=lambda t: t["true_class"].isin(["early_apoptotic", "late_apoptotic"]))
        .groupby(["well", "timepoint"])["apo"]
        .mean()
        .rename("true_fraction")
        .reset_index()
    )
    merged = wells.merge(truth, on=["well", "timepoint"])
    mae = float((merged["apoptotic_fraction"] - merged["true_fraction"]).abs().mean())
    print(f"per-well apoptotic fraction MAE {mae:.4f} over {len(merged)} wells x timepoints")
    assert mae <= 0.02

    # Dose lowers the relative cell count; vehicle wells sit around 1.
    vehicle = wells[wells["role"] == "negative_control"]
    assert (
        vehicle.groupby(["sample", "timepoint"])["relative_cell_count"].median().tolist()
        == [pytest.approx(1.0)] * 4
    )
    positive = wells[wells["role"] == "positive_control"]
    assert positive["relative_cell_count"].max() < 0.8


def test_empty_and_cell_free_wells_appear_flagged(classified, platemap):
    cells = classified[classified["well"] != "B07"]  # a well whose cells all got lost
    wells = aggregate_wells(cells, platemap, None, GatingSettings())
    empty = wells[(wells["well"] == "H12") & (wells["timepoint"] == 0)].iloc[0]
    assert empty["n_cells"] == 0
    assert np.isnan(empty["apoptotic_fraction"]) and np.isnan(empty["fraction_viable"])
    assert "empty_well" in empty["qc_flags"] and "no_cells" in empty["qc_flags"]
    lost = wells[(wells["well"] == "B07") & (wells["timepoint"] == 1)].iloc[0]
    assert lost["n_cells"] == 0 and "no_cells" in lost["qc_flags"]
    assert np.isnan(lost["apoptotic_fraction_ci_low"])


def test_failed_fields_are_excluded_and_reported(classified, platemap):
    fields = _fields_table(classified)
    failed = (fields["well"] == "C03") & (fields["field"] == 2)
    fields.loc[failed, "qc_pass"] = False
    fields.loc[failed, "qc_reason"] = "out_of_focus"
    wells = aggregate_wells(classified, platemap, fields, AssaySettings())
    row = wells[(wells["well"] == "C03") & (wells["timepoint"] == 0)].iloc[0]
    in_c03 = classified[(classified["well"] == "C03") & (classified["timepoint"] == 0)]
    kept = in_c03[(in_c03["field"] != 2) & (in_c03["cell_class"] != "debris")]
    assert row["n_cells"] == len(kept)
    assert row["n_fields_used"] == 3 and row["n_fields_excluded"] == 1
    assert row["fields_excluded_reasons"] == "out_of_focus"
    assert "fields_excluded" in row["qc_flags"]
    # Cells per used field, so losing a field does not look like cell loss.
    assert row["cells_per_field"] == pytest.approx(len(kept) / 3)


def test_too_few_cells_and_missing_vehicle_flags(classified, platemap):
    sparse = classified[~((classified["well"] == "D06") & (classified["label"] > 10))]
    wells = aggregate_wells(sparse, platemap, None, GatingSettings(min_cells_per_well=50))
    d06 = wells[wells["well"] == "D06"]
    assert d06["qc_flags"].str.contains("too_few_cells").all()
    # A sample without vehicle wells of its own is referenced to all vehicle wells, flagged.
    other = platemap.copy()
    other.loc[other["well"] == "C05", "sample"] = "MCF7"
    wells = aggregate_wells(classified, other, None, GatingSettings())
    c05 = wells[wells["well"] == "C05"].iloc[0]
    assert "vehicle_of_other_samples" in c05["qc_flags"]
    assert np.isfinite(c05["relative_cell_count"])


def test_seeding_failure_vehicle_well_is_flagged_in_qc_flags(classified, platemap):
    """A vehicle well left out of the count reference says so in its own qc_flags."""
    vehicle = platemap.loc[platemap["role"] == "negative_control", "well"].tolist()
    failed = vehicle[0]
    in_failed = (classified["well"] == failed).to_numpy()
    dropped = in_failed & (np.cumsum(in_failed) % 10 != 0)  # 10 % of its cells seeded
    sparse = classified[~dropped]
    with pytest.warns(UserWarning, match="seeding failure"):
        wells = aggregate_wells(sparse, platemap, None, GatingSettings(min_cells_per_well=5))
    flagged = wells.loc[wells["qc_flags"].str.contains("vehicle_reference_excluded"), "well"]
    assert set(flagged) == {failed}
    assert wells.loc[wells["well"] == failed, "vehicle_reference_excluded"].all()
    assert not wells.loc[wells["well"] != failed, "vehicle_reference_excluded"].any()


def test_unclassified_cells_are_an_input_error(platemap):
    with pytest.raises(InputError, match="classify_cells"):
        aggregate_wells(pd.DataFrame({"well": ["A01"]}), platemap, None, GatingSettings())


def test_plate_qc_on_a_simulated_plate(classified, platemap):
    wells = aggregate_wells(classified, platemap, _fields_table(classified), AssaySettings())
    qc = plate_qc(wells, platemap)
    assert qc["timepoint"].tolist() == [0, 1]
    assert (qc["plate"] == "sim").all()
    assert (qc["n_positive_wells"] == 4).all() and (qc["n_negative_wells"] == 11).all()
    # Staurosporine raises the apoptotic fraction well above vehicle: a usable window.
    assert (qc["ssmd"] > 3).all()
    assert np.isfinite(qc["robust_z_prime"]).all()
    assert (qc["ssmd_relative_cell_count"] < 0).all()


def test_relative_cell_count_leaves_a_seeding_failure_out_of_the_reference():
    """Two vehicle wells per sample: one that failed to seed would halve the reference."""
    import warnings

    from screenlib.aggregate import relative_cell_count
    from screenlib.aggregate.wells import _count_references

    wells = pd.DataFrame(
        {
            "sample": ["a", "a", "a", "b", "b", "b"],
            "role": ["negative_control", "negative_control", "sample"] * 2,
            "n_cells": [200, 24, 100, 180, 220, 100],
            "n_fields_used": [2, 2, 2, 2, 2, 2],
            "timepoint": 0,
        }
    )
    relative = relative_cell_count(wells)
    assert relative.round(3).tolist() == [1.0, 0.12, 0.5, 0.9, 1.1, 0.5]
    assert _count_references(wells)["vehicle_reference_excluded"].tolist() == [
        False, True, False, False, False, False
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert relative_cell_count(wells.iloc[3:]).round(3).tolist() == [0.9, 1.1, 0.5]
