"""Object classes before quadrant classes, and stain drift: rules relative to the vehicle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from screenlib.aggregate import aggregate_wells
from screenlib.gating import classify_cells, classify_objects, learn_gates, object_scale
from screenlib.gating.drift import grouped_quantiles, negative_median, stain_scales
from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.settings import GatingSettings

APOPTOTIC = ("early_apoptotic", "late_apoptotic")


def _vehicle_table(rng: np.random.Generator, n: int = 200) -> pd.DataFrame:
    """Vehicle nuclei around 90 µm² and DNA 40000 (Hoechst integrated), Annexin V ~30."""
    area = rng.normal(90.0, 15.0, n)
    dna = rng.lognormal(np.log(40000.0), 0.2, n)
    return pd.DataFrame(
        {
            "well": "A01",
            "field": 0,
            "timepoint": 0,
            "label": np.arange(1, n + 1),
            "centroid_y": rng.uniform(0, 5000, n),
            "centroid_x": rng.uniform(0, 5000, n),
            "area_um2": area,
            "area_px": area / 0.25,
            "hoechst_nucleus_integrated": dna,
            "hoechst_nucleus_mean": dna / area,
            "solidity": rng.uniform(0.9, 0.98, n),
            "annexin_v_ring_p90": rng.lognormal(np.log(30.0), 0.3, n),
        }
    )


def _objects(rows: list[dict]) -> pd.DataFrame:
    base = {"well": "B02", "field": 0, "timepoint": 0, "solidity": 0.95}
    table = pd.DataFrame([{**base, **row} for row in rows])
    table["area_px"] = table["area_um2"] / 0.25
    table["hoechst_nucleus_mean"] = table["hoechst_nucleus_integrated"] / table["area_um2"]
    return table


def test_object_rules_follow_the_vehicle_scale():
    """Debris, a fragmented nucleus, a mitosis, a pyknotic cell and a clump, each by its rule;
    the same objects at twice the scale (another magnification) get the same classes."""
    rng = np.random.default_rng(0)
    vehicle = _vehicle_table(rng)
    objects = _objects(
        [
            # a small speck with little DNA: debris
            {"label": 1, "centroid_y": 10, "centroid_x": 10, "area_um2": 12.0,
             "hoechst_nucleus_integrated": 6000.0, "annexin_v_ring_p90": 400.0},
            # a large, dim object with hardly any DNA: debris whatever its size
            {"label": 2, "centroid_y": 300, "centroid_x": 300, "area_um2": 60.0,
             "hoechst_nucleus_integrated": 5000.0, "annexin_v_ring_p90": 200.0},
            # three pieces of one nucleus, within a nucleus diameter: one cell
            {"label": 3, "centroid_y": 600, "centroid_x": 600, "area_um2": 14.0,
             "hoechst_nucleus_integrated": 12000.0, "annexin_v_ring_p90": 300.0},
            {"label": 4, "centroid_y": 606, "centroid_x": 604, "area_um2": 12.0,
             "hoechst_nucleus_integrated": 11000.0, "annexin_v_ring_p90": 350.0},
            {"label": 5, "centroid_y": 603, "centroid_x": 611, "area_um2": 16.0,
             "hoechst_nucleus_integrated": 15000.0, "annexin_v_ring_p90": 320.0},
            # condensed chromatin, a replicated genome, Annexin V negative: a mitosis
            {"label": 6, "centroid_y": 900, "centroid_x": 900, "area_um2": 40.0,
             "hoechst_nucleus_integrated": 80000.0, "annexin_v_ring_p90": 30.0},
            # condensed, one genome, Annexin V positive: a pyknotic apoptotic cell
            {"label": 7, "centroid_y": 1200, "centroid_x": 1200, "area_um2": 40.0,
             "hoechst_nucleus_integrated": 40000.0, "annexin_v_ring_p90": 400.0},
            # two touching nuclei the segmentation did not split
            {"label": 8, "centroid_y": 1500, "centroid_x": 1500, "area_um2": 185.0,
             "hoechst_nucleus_integrated": 82000.0, "annexin_v_ring_p90": 30.0,
             "solidity": 0.8},
        ]
    )  # fmt: skip
    settings = GatingSettings()
    expected = ["debris", "debris", "fragment", "fragment", "fragmented", "mitotic", "cell", "cell"]
    for factor in (1.0, 2.0):
        table = pd.concat([vehicle, objects], ignore_index=True)
        table["area_um2"] *= factor
        table["hoechst_nucleus_integrated"] *= factor
        scale = object_scale(table, (table["well"] == "A01").to_numpy(), settings)
        result = classify_objects(table, {0: scale}, settings).iloc[len(vehicle) :]
        assert result["object_class"].astype(str).tolist() == expected
        assert result["fragment_of"].tolist() == [-1, -1, 5, 5, -1, -1, -1, -1]
        assert result["n_nuclei"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2]


def _with_debris(cells: pd.DataFrame, rng: np.random.Generator, per_cell: float) -> pd.DataFrame:
    """Add Annexin V bright, sub-nuclear, low-DNA objects (apoptotic bodies) to every well."""
    parts = [cells]
    for _well, group in cells.groupby("well"):
        n = int(per_cell * len(group))
        sample = group.sample(n, replace=True, random_state=int(rng.integers(1 << 30)))
        body = sample.assign(
            area_um2=rng.uniform(3.0, 0.25 * 90.0, n),
            annexin_v_ring_p90=400.0 * rng.lognormal(0.0, 0.3, n),
            true_class="debris",
        )
        for column in ("hoechst_nucleus_integrated", "hoechst_nucleus_mean"):
            if column in body:
                body[column] = sample[column].to_numpy() * rng.uniform(0.05, 0.2, n)
        body["centroid_y"] = rng.uniform(0, 1e5, n)
        body["centroid_x"] = rng.uniform(0, 1e5, n)
        parts.append(body)
    return pd.concat(parts, ignore_index=True)


def test_apoptotic_bodies_do_not_count_as_apoptotic_cells():
    """Annexin V bright debris (one object per five cells) biases the old fractions up; the
    object classes take it out and the count follows the cells, not the objects."""
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=150, seed=5)
    assert {"hoechst_nucleus_integrated", "area_um2"} <= set(cells.columns)
    whole = cells[cells["true_class"] != "debris"]
    truth = whole.assign(apo=whole["true_class"].isin(APOPTOTIC)).groupby("well")["apo"].mean()
    true_count = whole.groupby("well").size()
    messy = _with_debris(cells, np.random.default_rng(1), per_cell=0.2)
    errors = {}
    for name, table, settings in (
        ("clean", cells, GatingSettings(classify_objects=False, min_area_um2=1.0)),
        ("old", messy, GatingSettings(classify_objects=False, min_area_um2=1.0)),
        ("new", messy, GatingSettings(min_area_um2=1.0)),
    ):
        gates = learn_gates(table, platemap, settings)
        wells = aggregate_wells(classify_cells(table, gates, settings), platemap, None, settings)
        wells = wells.set_index("well")
        error = (wells["apoptotic_fraction"] - truth).dropna()
        count_error = (wells["n_cells"] / true_count - 1).dropna()
        errors[name] = (float(error.mean()), float(count_error.abs().median()))
    # the table's own small debris counts as cells without object classes (min_area 1 µm²)
    assert errors["old"][0] > errors["clean"][0] + 0.05 and errors["old"][1] > 0.15
    assert abs(errors["new"][0] - errors["clean"][0]) < 0.01
    assert errors["new"][1] < 0.02


def test_negative_median_ignores_the_positive_population():
    rng = np.random.default_rng(2)
    negatives = rng.lognormal(np.log(30.0), 0.3, 300)
    positives = rng.lognormal(np.log(300.0), 0.6, 700)
    values = np.concatenate([negatives, positives])
    below = values < 60.0
    assert negative_median(values, below) == pytest.approx(np.median(negatives), rel=0.08)


def test_stain_drift_scales_a_bright_well_back():
    """A well stained 30 % brighter reads as the vehicle after scaling; a well of mostly
    positive cells (whose negatives take in their neighbours' light) keeps the plate's scale."""
    rng = np.random.default_rng(3)
    units = np.repeat(["A01_f0", "B01_f0", "C05_f0", "D12_f0"], 400)
    positive = np.where(units == "D12_f0", rng.random(1600) < 0.8, rng.random(1600) < 0.05)
    values = np.where(
        positive, rng.lognormal(np.log(300), 0.5, 1600), rng.lognormal(np.log(30), 0.3, 1600)
    )
    values[units == "C05_f0"] *= 1.3
    values[(units == "D12_f0") & ~positive] *= 1.4
    vehicle = np.isin(units, ["A01_f0", "B01_f0"])
    scales = stain_scales(
        values, units, values < 80.0 * np.where(units == "C05_f0", 1.3, 1), vehicle
    )
    assert scales["C05_f0"] == pytest.approx(1.3, rel=0.06)
    assert scales["A01_f0"] == pytest.approx(1.0, rel=0.06)
    assert scales["D12_f0"] == 1.0


def test_well_with_more_stain_does_not_read_more_apoptotic():
    """End to end on a cell table: one well's Annexin V and PI gain 1.35x; without drift
    scaling it reads more apoptotic, with it it reads as its twin well."""
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, cells_per_well=300, seed=8)
    cells["field"] = 0
    bright = cells["well"] == "C03"
    for column in ("annexin_v_ring_p90", "annexin_v_ring_mean", "pi_nucleus_mean"):
        cells.loc[bright, column] *= 1.35
    whole = cells["true_class"] != "debris"
    truth = (
        cells[whole].assign(apo=cells["true_class"].isin(APOPTOTIC)).groupby("well")["apo"].mean()
    )
    result = {}
    for drift in (False, True):
        settings = GatingSettings(normalize_stain_drift=drift, classify_objects=False)
        classified = classify_cells(cells, learn_gates(cells, platemap, settings), settings)
        kept = classified[classified["cell_class"].astype(str) != "debris"]
        called = kept["cell_class"].astype(str).isin(APOPTOTIC).groupby(kept["well"]).mean()
        result[drift] = float(called["C03"] - truth["C03"])
    assert result[False] > 0.02
    assert abs(result[True]) < 0.6 * result[False]


def test_gates_record_object_scale_and_stain_scales():
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, seed=1)
    cells["field"] = 0
    gates = learn_gates(cells, platemap, GatingSettings())
    assert gates[0].object_scale["median_area_um2"] > 0
    assert set(gates[0].stain_scales["A01_f0"]) <= {"annexin", "pi"}
    manual = dataclasses.replace(GatingSettings(), classify_objects=False)
    assert learn_gates(cells, platemap, manual)[0].object_scale is None


def test_grouped_quantiles_equal_numpy_bit_for_bit():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 60, 5000)
    groups[groups == 7] = 8  # an empty group
    values = rng.lognormal(3.0, 0.8, groups.size)
    values[::11] = np.round(values[::11])  # ties
    q = rng.uniform(0, 1, 60)
    q[:4] = [0.0, 1.0, 0.5, 0.25]
    got = grouped_quantiles(values, groups, q)
    for g in range(60):
        own = values[groups == g]
        if own.size:
            assert got[g] == np.quantile(own, q[g])  # exactly, not approximately
        else:
            assert np.isnan(got[g])
    one = grouped_quantiles(np.array([5.0]), np.array([0]), np.array([0.7]))
    assert one[0] == 5.0
