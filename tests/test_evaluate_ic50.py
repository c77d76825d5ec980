"""The IC50 reference of the accuracy benchmarks: the design IC50 and the IC50 of the
realised truth fractions (what a perfect image analysis would report)."""

import numpy as np
import pandas as pd
import pytest

from screenlib.simulate import example_plate_design
from screenlib.simulate._plate_design import expected_well_response
from screenlib.simulate.evaluate import ic50_fold_errors, truth_fit_ic50s


def _truth_wells(n_cells: int, seed: int | None) -> pd.DataFrame:
    """Truth wells of the example design's first row, two timepoints; realised counts drawn
    binomially around the design (``seed`` None: the expected counts themselves)."""
    design = example_plate_design(timepoints=2)
    rng = np.random.default_rng(seed)
    rows = []
    for spec in design.wells:
        if not spec.well.startswith("A"):
            continue
        response = design.responses[spec.sample]
        for timepoint in (0, 1):
            fractions, _ = expected_well_response(design, spec, timepoint)
            expected = fractions["early_apoptotic"] + fractions["late_apoptotic"]
            n_apoptotic = (
                round(expected * n_cells) if seed is None else rng.binomial(n_cells, expected)
            )
            rows.append(
                {"well": spec.well, "timepoint": timepoint, "sample": spec.sample,
                 "role": spec.role, "concentration_molar": spec.concentration_molar,
                 "n_cells": n_cells, "n_apoptotic": n_apoptotic,
                 "ic50_apoptosis_molar": response.ic50_apoptosis_molar}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_fitting_the_expected_fractions_gives_back_the_design_ic50_at_each_timepoint():
    truth = _truth_wells(100_000, seed=None)
    fitted = truth_fit_ic50s(truth)
    design = truth["ic50_apoptosis_molar"].iloc[0]
    # the 24 h curve is half built up: same midpoint, half the amplitude
    assert fitted.loc[("SK-N-SH", 0)] == pytest.approx(design, rel=0.05)
    assert fitted.loc[("SK-N-SH", 1)] == pytest.approx(design, rel=0.05)


def test_fold_errors_against_the_design_and_against_the_realised_truth():
    truth = _truth_wells(60, seed=3)  # a few dozen cells per well, as on the benchmark plates
    fitted = truth_fit_ic50s(truth)
    fits = pd.DataFrame(
        {"sample": "SK-N-SH", "readout": "apoptotic_fraction", "timepoint": [0, 1],
         "ic50_molar": [2 * fitted.loc[("SK-N-SH", 0)], fitted.loc[("SK-N-SH", 1)]]}
    )  # fmt: skip
    folds = ic50_fold_errors(fits, truth, "apoptotic_fraction", fitted)
    np.testing.assert_allclose(folds["fold_vs_truth_fit"], [2.0, 1.0])
    design = truth["ic50_apoptosis_molar"].iloc[0]
    np.testing.assert_allclose(
        folds["fold"], np.maximum(fits["ic50_molar"] / design, design / fits["ic50_molar"])
    )
    assert "fold_vs_truth_fit" not in ic50_fold_errors(fits, truth, "apoptotic_fraction")
