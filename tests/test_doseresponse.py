"""Dose-response fitting: model, accuracy against truth and scipy, interval coverage, flags,
binomial counts, tables, GR metrics, MTT plate-reader input and the `screenlib fit` command."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import curve_fit, lsq_linear

from screenlib.doseresponse import fit_curve
from screenlib.doseresponse._solver import _plateaus_for_grid, _Problem
from screenlib.doseresponse.gr import fit_gr, gr_aoc, gr_values
from screenlib.doseresponse.model import (
    four_parameter_logistic,
    integral_over_log_range,
    inverse_log_concentration,
    model_and_jacobian,
    model_and_jacobian_rows,
)
from screenlib.doseresponse.mtt import absorbance_to_viability, fit_mtt, read_absorbance
from screenlib.doseresponse.table import fit_table, fit_wells
from screenlib.errors import InputError, SettingsError
from screenlib.platemap import read_platemap
from screenlib.settings import FitSettings

# the seed's milademetan IC50s (nM), MTT at 72 h
SEED_IC50_NM = {"SK-N-SH": 21.9, "SH-SY5Y": 17.7, "IMR-32": 52.63, "IMR-5": 25.7, "LAN-5": 44.1}
# 10-point 3-fold dilutions from 10 uM, triplicates
DOSES = 1e-5 / 3.0 ** np.arange(10)
CONC = np.repeat(DOSES, 3)
LOG_CONC = np.log10(CONC)


def prism(x, log_ic50, hill, e0, e_inf):
    return e0 + (e_inf - e0) / (1 + 10 ** (hill * (log_ic50 - x)))


def viability(conc, ic50, hill=1.0, top=100.0, bottom=0.0):
    with np.errstate(divide="ignore"):
        return bottom + (top - bottom) / (1 + (np.asarray(conc) / ic50) ** hill)


# ---------------------------------------------------------------- model


def test_model_values_vehicle_and_inverse():
    x = np.array([-np.inf, -7.0, -6.0])
    y = four_parameter_logistic(x, -7.0, 1.0, 100.0, 0.0)
    assert y[0] == 100.0 and y[1] == pytest.approx(50.0) and y[2] == pytest.approx(100 / 11)
    level = four_parameter_logistic(np.array(-6.5), -7.2, 1.7, 90.0, 10.0)
    assert inverse_log_concentration(level, -7.2, 1.7, 90.0, 10.0) == pytest.approx(-6.5)
    assert math.isnan(inverse_log_concentration(5.0, -7.2, 1.7, 90.0, 10.0))  # never reached


def test_jacobian_matches_finite_differences():
    theta = np.array([[-7.3, 1.4, 95.0, 8.0], [-6.1, 0.6, 0.05, 0.7]])
    vehicle = np.zeros(LOG_CONC.size + 1, bool)
    vehicle[-1] = True
    x = np.append(LOG_CONC, 0.0)
    values, jacobian = model_and_jacobian(theta, x, vehicle)
    assert values[0, -1] == 95.0  # the vehicle row sits on e0
    for k in range(4):
        step = np.zeros_like(theta)
        step[:, k] = 1e-6
        numeric = (
            model_and_jacobian(theta + step, x, vehicle)[0]
            - model_and_jacobian(theta - step, x, vehicle)[0]
        ) / 2e-6
        np.testing.assert_allclose(jacobian[..., k], numeric, rtol=1e-5, atol=1e-6)


def test_jacobian_rows_written_in_place_match_the_public_model():
    theta = np.array([[-7.3, 1.4, 95.0, 8.0], [-6.1, 0.6, 0.05, 0.7], [-8.0, 3.0, 1.0, 1.0]])
    values, jacobian = model_and_jacobian(theta, LOG_CONC, np.zeros(LOG_CONC.size, bool))
    rows = np.full((3, 5, LOG_CONC.size), np.nan)  # the fitter's (Jacobian | residual) layout
    values_rows, _ = model_and_jacobian_rows(theta, LOG_CONC, None, out=rows[:, :4])
    np.testing.assert_array_equal(values_rows, values)
    np.testing.assert_array_equal(rows[:, :4], jacobian.transpose(0, 2, 1))
    assert np.isnan(rows[:, 4]).all()  # nothing written outside ``out``


def test_plateaus_from_distinct_doses_equal_bounded_least_squares_on_every_well():
    """The plateau solve sums replicate wells per dose; the answer is the per-well optimum."""
    rng = np.random.default_rng(21)
    conc = np.append(np.repeat(DOSES[:7], 3), [0.0, 0.0, 1e-6])  # replicates, vehicle, a 4th
    log_conc = np.log10(np.where(conc > 0, conc, 1.0))
    is_vehicle = conc == 0
    y = viability(conc, 3e-8, top=90, bottom=15) + rng.normal(0, 4, conc.size)
    weights = rng.uniform(0.5, 2.0, conc.size)
    log_ic50 = rng.uniform(-10.0, -4.0, 60)
    hill = np.exp(rng.uniform(np.log(0.1), np.log(10.0), 60))
    for box in ((-100.0, 200.0), (20.0, 80.0)):  # wide, and tight enough to press on edges
        lower = np.array([-12.0, 0.1, box[0], box[0]])
        upper = np.array([-2.0, 10.0, box[1], box[1]])
        problem = _Problem(
            log_conc, is_vehicle, y, weights, False, lower, upper, np.ones(4, bool), np.zeros(4)
        )
        e0, e_inf, cost = _plateaus_for_grid(problem, log_ic50, hill)
        on_edge = 0
        for k in range(log_ic50.size):
            g = np.where(is_vehicle, 0.0, 1 / (1 + 10 ** (hill[k] * (log_ic50[k] - log_conc))))
            design = np.column_stack([1 - g, g]) * np.sqrt(weights)[:, None]
            truth = lsq_linear(design, y * np.sqrt(weights), bounds=box, tol=1e-12)
            truth_cost = float(np.sum(weights * (y - truth.x @ [1 - g, g]) ** 2))
            assert cost[k] == pytest.approx(truth_cost, rel=1e-7, abs=1e-9)
            np.testing.assert_allclose([e0[k], e_inf[k]], truth.x, rtol=1e-5, atol=1e-5)
            on_edge += bool(np.isclose(truth.x[:, None], box).any())
        assert (on_edge > 10) == (box[0] > 0)  # only the tight box presses on its edges


def test_area_under_curve_matches_quadrature():
    args = (-7.4, 1.3, 100.0, 5.0)
    exact = quad(lambda x: prism(x, *args), -9.3, -5.0)[0]
    assert integral_over_log_range(-9.3, -5.0, *args) == pytest.approx(exact, rel=1e-9)


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize(
    "truth",
    [
        (-7.66, 1.0, 100.0, 0.0),
        (-7.3, 2.5, 95.0, 10.0),
        (-6.0, 0.7, 1.0, 0.2),
        (-8.5, 1.5, 0.02, 0.8),  # increasing (apoptotic fraction)
        (-7.0, 0.5, 100.0, 30.0),  # shallow, partial efficacy
    ],
)
def test_noiseless_curves_recover_parameters(truth):
    y = prism(LOG_CONC, *truth)
    conc = np.append(CONC, [0.0, 0.0])  # with vehicle wells
    y = np.append(y, [truth[2], truth[2]])
    fit = fit_curve(conc, y)
    np.testing.assert_allclose(fit.parameters, truth, rtol=1e-4, atol=1e-6)
    assert fit.starts_agreed
    assert fit.ic50_molar == pytest.approx(10 ** truth[0], rel=1e-4)
    assert fit.pic50 == pytest.approx(-truth[0], rel=1e-6)
    assert fit.hill_slope == pytest.approx(truth[1])  # one convention: always positive


def test_rss_never_worse_than_scipy_from_the_true_start():
    rng = np.random.default_rng(11)
    for repeat in range(25):
        truth = (rng.uniform(-8.5, -6.5), rng.uniform(0.6, 3.0), 100.0, rng.uniform(0, 30))
        y = prism(LOG_CONC, *truth) + rng.normal(0, 5, LOG_CONC.size)
        fit = fit_curve(CONC, y)
        try:
            params, _ = curve_fit(prism, LOG_CONC, y, p0=truth, maxfev=20000)
            rss_scipy = float(np.sum((prism(LOG_CONC, *params) - y) ** 2))
        except RuntimeError:
            continue
        assert fit.rss <= rss_scipy * (1 + 1e-7), repeat


def test_profile_interval_covers_seed_ic50s():
    """95 % profile interval on seed-like curves covers the true IC50 in >= 90 % of 200 repeats."""
    rng = np.random.default_rng(2025)
    truths = list(SEED_IC50_NM.values())
    covered = 0
    widths = []
    for repeat in range(200):
        ic50 = truths[repeat % len(truths)] * 1e-9
        y = viability(CONC, ic50) + rng.normal(0, 5, CONC.size)
        fit = fit_curve(CONC, y, direction="decreasing")
        assert fit.ci_method == "profile"
        covered += fit.log_ic50_ci_low <= math.log10(ic50) <= fit.log_ic50_ci_high
        widths.append(fit.log_ic50_ci_high - fit.log_ic50_ci_low)
        assert abs(fit.ic50_molar / ic50 - 1) < 0.5
    coverage = covered / 200
    assert 0.90 <= coverage <= 0.99, coverage
    assert np.median(widths) < 0.5  # well-determined curves give narrow intervals


def test_interval_is_asymmetric_on_the_linear_scale():
    rng = np.random.default_rng(5)
    y = viability(CONC, 44.1e-9) + rng.normal(0, 5, CONC.size)
    fit = fit_curve(CONC, y)
    assert fit.ic50_ci_low_molar < fit.ic50_molar < fit.ic50_ci_high_molar
    assert fit.pic50_ci_low == pytest.approx(-fit.log_ic50_ci_high)
    # symmetric in log, hence not in linear concentration
    assert not math.isclose(
        fit.ic50_molar - fit.ic50_ci_low_molar,
        fit.ic50_ci_high_molar - fit.ic50_molar,
        rel_tol=0.05,
    )


def test_relative_and_absolute_ic50_differ_with_partial_efficacy():
    # bottom at 40 % of vehicle: the absolute IC50 (50 % of vehicle) lies right of the inflection
    y = np.append(viability(CONC, 20e-9, top=100, bottom=40), [100.0] * 3)
    conc = np.append(CONC, [0.0] * 3)
    fit = fit_curve(conc, y)
    assert fit.ic50_molar == pytest.approx(20e-9, rel=1e-4)
    assert fit.absolute_level == pytest.approx(50.0)
    # 40 + 60 / (1 + c/IC50) = 50  ->  c = 5 IC50
    assert fit.absolute_ic50_molar == pytest.approx(100e-9, rel=1e-4)
    y_weak = np.append(viability(CONC, 20e-9, top=100, bottom=60), [100.0] * 3)
    weak = fit_curve(conc, y_weak)
    assert weak.absolute_ic50_text == "not reached" and math.isnan(weak.absolute_ic50_molar)


def test_fixed_top_and_bottom():
    rng = np.random.default_rng(8)
    y = viability(CONC, 30e-9, top=100, bottom=0) + rng.normal(0, 4, CONC.size)
    fixed = FitSettings(fix_top=100.0, fix_bottom=0.0)
    fit = fit_curve(CONC, y, settings=fixed)
    assert fit.top == 100.0 and fit.bottom == 0.0
    assert fit.ic50_molar == pytest.approx(30e-9, rel=0.15)
    # with an increasing curve "top" is the high-dose plateau
    up = fit_curve(CONC, 100 - y, settings=FitSettings(fix_top=100.0))
    assert up.top == 100.0 and up.direction == "increasing"


# ---------------------------------------------------------------- flags


def test_flag_inactive_for_a_flat_line():
    rng = np.random.default_rng(3)
    fit = fit_curve(CONC, 100 + rng.normal(0, 5, CONC.size))
    assert "inactive" in fit.flags
    assert fit.ic50_text == "inactive" and math.isnan(fit.ic50_molar)
    assert fit.f_test_p_value > 0.05
    constant = fit_curve(CONC, np.full(CONC.size, 0.7))
    assert constant.flags == ("inactive",)


def test_flag_ic50_above_the_top_dose_is_text_not_number():
    rng = np.random.default_rng(4)
    # bottom fixed at 0 (Prism's advice for incomplete curves); the IC50 is 3x the top dose
    y = viability(CONC, 3e-5) + rng.normal(0, 3, CONC.size)
    fit = fit_curve(CONC, y, settings=FitSettings(fix_bottom=0.0))
    assert "ic50_above_range" in fit.flags
    assert fit.ic50_text == "> 10 µM" and not fit.confident
    assert math.isnan(fit.ic50_molar) and math.isnan(fit.pic50)
    # with a free bottom, whatever the estimate, it is not a confident number
    free = fit_curve(CONC, y)
    assert "no_bottom_plateau" in free.flags and not free.confident
    # 30x above the top dose the curve is flat over the tested range
    assert "inactive" in fit_curve(CONC, viability(CONC, 3e-4) + rng.normal(0, 5, 30)).flags


def test_flag_ic50_below_the_lowest_dose():
    rng = np.random.default_rng(6)
    conc = np.append(CONC, [0.0] * 3)
    y = viability(conc, 1e-11) + rng.normal(0, 3, conc.size)
    fit = fit_curve(conc, y)
    assert "ic50_below_range" in fit.flags
    assert fit.ic50_text.startswith("< ") and math.isnan(fit.ic50_molar)


def test_flag_incomplete_curve_has_no_lower_plateau():
    rng = np.random.default_rng(7)
    conc = np.append(CONC, [0.0] * 3)
    y = viability(conc, 5e-6) + rng.normal(0, 3, conc.size)
    fit = fit_curve(conc, y)
    assert "no_bottom_plateau" in fit.flags and not fit.confident


def test_flag_hill_not_identified_for_a_step_between_two_doses():
    rng = np.random.default_rng(10)
    y = viability(CONC, 2e-8, hill=15) + rng.normal(0, 2, CONC.size)
    fit = fit_curve(CONC, y)
    assert "hill_not_identified" in fit.flags


def test_flag_one_outlier_well_and_names_it():
    rng = np.random.default_rng(12)
    y = viability(CONC, 2e-8) + rng.normal(0, 5, CONC.size)
    y[27] = 10.0  # a low-dose well reading as if killed
    fit = fit_curve(CONC, y)
    assert "outlier_wells" in fit.flags and fit.outlier_indices == (27,)
    clean = fit_curve(np.delete(CONC, 27), np.delete(y, 27))
    assert "outlier_wells" not in clean.flags


def test_no_false_outliers_on_clean_curves():
    rng = np.random.default_rng(13)
    flagged = 0
    for _ in range(40):
        y = viability(CONC, 2.5e-8) + rng.normal(0, 5, CONC.size)
        flagged += "outlier_wells" in fit_curve(CONC, y).flags
    assert flagged <= 1


def test_flag_wide_interval_with_few_noisy_points():
    rng = np.random.default_rng(14)
    doses = np.repeat(DOSES[::2], 2)
    y = viability(doses, 5e-8) + rng.normal(0, 15, doses.size)
    fit = fit_curve(doses, y)
    assert "wide_interval" in fit.flags or "inactive" in fit.flags
    assert not (fit.log_ic50_ci_high - fit.log_ic50_ci_low <= 1.0)


def test_flag_wrong_direction():
    rng = np.random.default_rng(15)
    y = 100 - viability(CONC, 2e-8) + rng.normal(0, 3, CONC.size)  # rises
    fit = fit_curve(CONC, y, direction="decreasing")
    assert "wrong_direction" in fit.flags and "inactive" in fit.flags


def test_flag_starts_disagree_on_two_equal_steps():
    # two equal steps with the Hill slope fixed steep: either step fits about equally well
    rng = np.random.default_rng(1)
    y = 100 - 50 / (1 + (1e-8 / CONC) ** 4) - 50 / (1 + (1e-6 / CONC) ** 4)
    y = y + rng.normal(0, 3, CONC.size)
    fit = fit_curve(CONC, y, settings=FitSettings(fix_hill=4.0))
    assert "starts_disagree" in fit.flags and not fit.starts_agreed
    assert fit.n_starts_agreeing < fit.n_starts and not fit.confident
    # free Hill slope: one shallow curve, and it is not reported as a confident number
    assert not fit_curve(CONC, y).confident


def test_flag_too_few_points_and_missing_values_are_notes():
    few = fit_curve([1e-6, 1e-7, 0.0], [10.0, 50.0, 100.0])
    assert few.flags == ("too_few_points",) and math.isnan(few.ic50_molar)
    y = viability(CONC, 2e-8)
    y[[0, 5]] = np.nan
    fit = fit_curve(CONC, y)
    assert any("dropped 2 row" in note for note in fit.notes)
    assert fit.n_points == CONC.size - 2 and not fit.flags


def test_vehicle_wells_are_the_zero_dose_plateau():
    rng = np.random.default_rng(16)
    y = viability(CONC, 1e-6, hill=1) * 0.6 + 40 + rng.normal(0, 2, CONC.size)
    conc = np.append(CONC, [0.0] * 6)
    y = np.append(y, 100 + rng.normal(0, 2, 6))
    fit = fit_curve(conc, y)
    assert fit.n_vehicle == 6
    assert fit.response_at_zero_dose == pytest.approx(100, abs=3)


def test_bad_shapes_raise_input_error():
    with pytest.raises(InputError, match="same length"):
        fit_curve([1e-6, 1e-7], [1.0])
    with pytest.raises(InputError, match="direction"):
        fit_curve(CONC, CONC, direction="up")


# ---------------------------------------------------------------- binomial


def test_binomial_counts_recover_ec50_with_honest_interval():
    rng = np.random.default_rng(17)
    truth = 25.7e-9
    covered = 0
    for _ in range(40):
        conc = np.append(CONC, [0.0] * 3)
        total = rng.integers(800, 2500, conc.size)
        # well-to-well variation on top of binomial sampling (overdispersion)
        p = 0.04 + 0.7 / (1 + truth / np.maximum(conc, 1e-30))
        p = np.clip(p * np.exp(rng.normal(0, 0.08, conc.size)), 0, 1)
        positive = rng.binomial(total, p)
        fit = fit_curve(conc, n_positive=positive, n_total=total, direction="increasing")
        assert fit.model == "binomial" and fit.dispersion >= 1
        assert fit.bottom >= 0 and fit.top <= 1
        covered += fit.log_ic50_ci_low <= math.log10(truth) <= fit.log_ic50_ci_high
    assert covered >= 34  # >= 85 % of 40


def test_binomial_absolute_ec50_is_dose_for_half_the_cells():
    conc = np.append(CONC, [0.0] * 3)
    total = np.full(conc.size, 100000)
    p = 0.0 + 0.8 / (1 + 1e-7 / np.maximum(conc, 1e-30))
    fit = fit_curve(conc, n_positive=np.round(total * p), n_total=total)
    assert fit.ic50_molar == pytest.approx(1e-7, rel=1e-3)
    # 0.8 / (1 + IC50 / c) = 0.5  ->  c = IC50 * 5 / 3
    assert fit.absolute_ic50_molar == pytest.approx(1e-7 * 5 / 3, rel=1e-3)


# ---------------------------------------------------------------- robustness


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.just(0.0),
                st.floats(1e-12, 1e-2),
                st.just(float("nan")),
                st.floats(-1.0, 0.0, exclude_max=True),
            ),
            st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.just(float("inf"))),
        ),
        min_size=0,
        max_size=40,
    )
)
def test_arbitrary_inputs_never_crash(points):
    conc = [c for c, _ in points]
    y = [v for _, v in points]
    fit = fit_curve(conc, y)
    if math.isfinite(fit.ic50_molar):
        assert fit.lowest_dose_molar <= fit.ic50_molar <= fit.top_dose_molar
        assert math.isfinite(fit.hill_slope) and math.isfinite(fit.rss)
    else:
        assert fit.flags, fit


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 2000), min_size=6, max_size=33),
    st.integers(1, 2000),
)
def test_arbitrary_counts_never_crash(positives, total):
    n = len(positives)
    conc = np.repeat(DOSES, 4)[:n]
    counts = np.minimum(np.array(positives), total)
    fit = fit_curve(conc, n_positive=counts, n_total=np.full(n, total))
    assert fit.model == "binomial"
    assert math.isfinite(fit.ic50_molar) or fit.flags


# ---------------------------------------------------------------- tables


def _wells(rng, ic50s=SEED_IC50_NM, t0=False):
    rows = []
    for sample, ic50_nm in ic50s.items():
        for conc in [0.0] * 6 + list(CONC):
            n_cells = max(int(3000 * viability(conc, ic50_nm * 1e-9, top=1, bottom=0.1)), 30)
            n_cells = rng.poisson(n_cells)
            p = 0.03 + 0.6 / (1 + ic50_nm * 1e-9 / max(conc, 1e-30))
            n_apoptotic = rng.binomial(n_cells, p)
            rows.append(
                {
                    "sample": sample,
                    "compound": "milademetan" if conc > 0 else "DMSO",
                    "concentration_molar": conc,
                    "role": "sample" if conc > 0 else "negative_control",
                    "n_cells": n_cells,
                    "n_apoptotic": n_apoptotic,
                    "apoptotic_fraction": n_apoptotic / n_cells,
                    "timepoint": 0,
                    "well": f"W{len(rows):03d}",
                    **({"n_cells_t0": 1000} if t0 else {}),
                }
            )
    wells = pd.DataFrame(rows)
    vehicle = wells[wells.role == "negative_control"].groupby("sample")["n_cells"].median()
    wells["relative_cell_count"] = wells["n_cells"] / wells["sample"].map(vehicle)
    return wells


def test_fit_wells_gives_one_row_per_sample_compound_readout():
    wells = _wells(np.random.default_rng(18))
    fits = fit_wells(wells, FitSettings())
    assert len(fits) == 2 * len(SEED_IC50_NM)
    assert set(fits.readout) == {"apoptotic_fraction", "relative_cell_count"}
    assert set(fits.compound) == {"milademetan"}  # DMSO wells are the vehicle, not a curve
    assert (fits.n_vehicle == 6).all()
    apoptosis = fits[fits.readout == "apoptotic_fraction"].set_index("sample")
    assert (apoptosis.model == "binomial").all() and (apoptosis.direction == "increasing").all()
    for sample, ic50_nm in SEED_IC50_NM.items():
        assert apoptosis.loc[sample, "ic50_molar"] * 1e9 == pytest.approx(ic50_nm, rel=0.15)
    counts = fits[fits.readout == "relative_cell_count"]
    assert (counts.direction == "decreasing").all()


def test_fit_table_with_counts_and_missing_columns():
    rng = np.random.default_rng(19)
    total = np.full(CONC.size, 1000)
    table = pd.DataFrame(
        {
            "concentration_molar": CONC,
            "n_positive": rng.binomial(total, 0.05 + 0.5 / (1 + 1e-7 / CONC)),
            "n_total": total,
        }
    )
    fits = fit_table(table, FitSettings())
    assert len(fits) == 1 and fits.model.iloc[0] == "binomial"
    with pytest.raises(InputError, match="response"):
        fit_table(table.drop(columns=["n_positive"]))
    with pytest.raises(InputError, match="concentration_molar"):
        fit_table(table.drop(columns=["concentration_molar"]))


def test_fit_table_names_outlier_wells():
    rng = np.random.default_rng(20)
    y = viability(CONC, 2e-8) + rng.normal(0, 4, CONC.size)
    y[28] = 5.0
    table = pd.DataFrame(
        {"sample": "A", "compound": "x", "concentration_molar": CONC, "response": y}
    )
    table["well"] = [f"B{i + 1:02d}" for i in range(len(table))]
    fits = fit_table(table)
    assert fits.outlier_wells.iloc[0] == "B29"


# ---------------------------------------------------------------- GR metrics


def test_gr_values_and_area_over_curve():
    assert gr_values([400.0, 200.0, 100.0], 200.0, 400.0).tolist() == [1.0, 0.0, -0.5]
    assert np.isnan(gr_values([100.0], 200.0, 150.0)).all()  # controls did not grow
    assert gr_aoc([1e-9, 1e-8, 1e-7], [1.0, 0.5, 0.0]) == pytest.approx(0.5)


def test_gr_fit_recovers_gr50_and_grmax():
    rng = np.random.default_rng(21)
    gr_inf, gec50, h = -0.3, 4e-8, 1.2
    conc = np.append(CONC, [0.0] * 3)
    gr = gr_inf + (1 - gr_inf) / (1 + (conc / gec50) ** h) + rng.normal(0, 0.02, conc.size)
    metrics = fit_gr(conc, gr)
    # GR = 0.5 where (1 - gr_inf) / (1 + (c/GEC50)^h) = 0.5 - gr_inf
    expected_gr50 = gec50 * ((1 - gr_inf) / (0.5 - gr_inf) - 1) ** (1 / h)
    assert metrics["gr50_molar"] == pytest.approx(expected_gr50, rel=0.1)
    assert metrics["gr_inf"] == pytest.approx(gr_inf, abs=0.05)
    assert metrics["gr_max"] == pytest.approx(gr_inf, abs=0.06)
    assert 0 < metrics["gr_aoc"] < 1.3


def test_fit_wells_adds_gr_rows_with_time_zero_counts():
    wells = _wells(np.random.default_rng(22), t0=True)
    fits = fit_wells(wells, FitSettings())
    gr = fits[fits.readout == "gr_value"]
    assert len(gr) == len(SEED_IC50_NM)
    assert gr.gr50_molar.notna().all() and (gr.gr_max < 0.5).all()


def test_gr_from_a_separate_time_zero_table_matches_the_column():
    wells = _wells(np.random.default_rng(26), t0=True)
    t0 = pd.DataFrame({"sample": list(SEED_IC50_NM), "n_cells": 1000})
    from_column = fit_wells(wells, FitSettings())
    from_table = fit_wells(wells.drop(columns="n_cells_t0"), FitSettings(), t0=t0)
    gr_column = from_column[from_column.readout == "gr_value"].reset_index(drop=True)
    gr_table = from_table[from_table.readout == "gr_value"].reset_index(drop=True)
    np.testing.assert_allclose(gr_table.gr50_molar, gr_column.gr50_molar)


def test_fit_wells_derives_relative_cell_count_from_counts():
    wells = _wells(np.random.default_rng(27))
    expected = fit_wells(wells, FitSettings())
    derived = fit_wells(wells.drop(columns="relative_cell_count"), FitSettings())
    np.testing.assert_allclose(derived.ic50_molar, expected.ic50_molar)
    with pytest.raises(InputError, match="fraction_viable"):
        fit_wells(wells, FitSettings(responses=("fraction_viable",)))


# ---------------------------------------------------------------- MTT plate reader


def _write_mtt_plate(tmp_path, rng, ic50=21.9e-9):
    """A 96-well MTT plate as a reader exports it, and its plate map."""
    rows = "ABCDEFGH"
    layout = ["well,role,sample,compound,concentration"]
    absorbance = np.full((8, 12), np.nan)
    blank_od, vehicle_od = 0.06, 1.25
    for r, row in enumerate(rows):
        for c in range(12):
            well = f"{row}{c + 1:02d}"
            if c == 0:
                role, conc = ("blank", 0.0) if r < 4 else ("vehicle", 0.0)
            elif c <= 10 and r < 6:
                role, conc = "sample", DOSES[10 - c]  # lowest dose in column 2
            else:
                role, conc = ("vehicle", 0.0) if r < 6 else ("empty", 0.0)
            compound = "milademetan" if role == "sample" else ""
            layout.append(f"{well},{role},SK-N-SH,{compound},{conc} M")
            od = blank_od if role in ("blank", "empty") else None
            if role == "vehicle":
                od = vehicle_od
            if role == "sample":
                od = blank_od + (vehicle_od - blank_od) * viability(conc, ic50) / 100
            absorbance[r, c] = od * (1 + rng.normal(0, 0.04))
    (tmp_path / "layout.csv").write_text("\n".join(layout) + "\n")
    lines = [
        "Software Version,3.11",
        "Plate Type,96",
        "Read: 570nm",
        "",
        "," + ",".join(str(c) for c in range(1, 13)),
    ]
    for r, row in enumerate(rows):
        lines.append(row + "," + ",".join(f"{v:.4f}" for v in absorbance[r]))
    lines += ["", "Results exported at 12:00"]
    (tmp_path / "plate.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "plate.csv", tmp_path / "layout.csv"


def test_mtt_grid_to_viability_to_ic50(tmp_path):
    plate, layout = _write_mtt_plate(tmp_path, np.random.default_rng(23))
    absorbance = read_absorbance(plate)
    assert len(absorbance) == 96 and absorbance.well.iloc[13] == "B02"
    viability_table = absorbance_to_viability(absorbance, read_platemap(layout))
    vehicle = viability_table[viability_table.role == "negative_control"]
    assert vehicle.response.mean() == pytest.approx(100.0, abs=1e-9)
    fits = fit_mtt(plate, layout)
    assert len(fits) == 1
    fit = fits.iloc[0]
    assert fit.readout == "viability_percent" and fit.direction == "decreasing"
    assert fit.ic50_molar * 1e9 == pytest.approx(21.9, rel=0.2)
    assert fit.log_ic50_ci_low < fit.log_ic50 < fit.log_ic50_ci_high
    assert fit.log_ic50_ci_high - fit.log_ic50_ci_low < 0.5 and fit.confident
    assert fit.absolute_level == pytest.approx(50.0, abs=3)


def test_mtt_long_form_and_errors(tmp_path):
    plate, layout = _write_mtt_plate(tmp_path, np.random.default_rng(24))
    grid = read_absorbance(plate)
    long_path = tmp_path / "long.csv"
    grid.assign(well=grid.well.str.replace(r"^([A-Z]+)0(\d)$", r"\1\2", regex=True)).rename(
        columns={"absorbance": "OD570"}
    ).to_csv(long_path, index=False)
    long = read_absorbance(long_path)
    pd.testing.assert_frame_equal(long, grid)
    no_blank = read_platemap(layout)
    no_blank = no_blank[no_blank.role != "empty"]
    with pytest.raises(InputError, match="blank"):
        absorbance_to_viability(grid, no_blank)
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n")
    with pytest.raises(InputError, match="plate grid"):
        read_absorbance(junk)


# ---------------------------------------------------------------- command line


def _run_cli(args, capsys):
    from screenlib.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_cli_fits_a_tidy_table_wells_and_mtt(tmp_path, capsys):
    rng = np.random.default_rng(25)
    table = pd.DataFrame(
        {
            "sample": "LAN-5",
            "compound": "milademetan",
            "concentration_molar": CONC,
            "response": viability(CONC, 44.1e-9) + rng.normal(0, 5, CONC.size),
        }
    )
    table.loc[3, "response"] = np.nan
    table.to_csv(tmp_path / "tidy.csv", index=False)
    from screenlib.cli import main

    main(["fit", str(tmp_path / "tidy.csv"), "--out", str(tmp_path / "fits.csv")])
    out = capsys.readouterr().out
    assert "1 curve(s) fitted" in out and "1 row(s)" in out
    fits = pd.read_csv(tmp_path / "fits.csv")  # the short table, IC50 in its unit
    assert fits.unit.iloc[0] == "nM" and fits.ic50.iloc[0] == pytest.approx(44.1, rel=0.3)

    _wells(rng).to_csv(tmp_path / "wells.csv", index=False)
    main(["fit", str(tmp_path / "wells.csv"), "--out", str(tmp_path / "wells_fits.csv")])
    assert len(pd.read_csv(tmp_path / "wells_fits.csv")) == 10

    plate, layout = _write_mtt_plate(tmp_path, rng)
    main(["fit", str(plate), "--mtt", "--layout", str(layout), "--out", str(tmp_path / "m.csv")])
    assert pd.read_csv(tmp_path / "m.csv").readout.iloc[0] == "viability_percent"


def test_cli_errors_name_the_missing_columns(tmp_path, capsys):
    pd.DataFrame({"dose": [1, 2], "value": [3, 4]}).to_csv(tmp_path / "bad.csv", index=False)
    code, text = _run_cli(
        ["fit", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv")], capsys
    )
    # 'dose' is read as the concentration (the plate-map vocabulary); a bare number has no unit
    assert code == 2 and "line 2" in text and "'dose'" in text and "no unit" in text
    pd.DataFrame({"value": [3, 4]}).to_csv(tmp_path / "bad.csv", index=False)
    code, text = _run_cli(
        ["fit", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2 and "concentration" in text and "value" in text, text
    code, text = _run_cli(
        ["fit", str(tmp_path / "bad.csv"), "--mtt", "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2 and "--layout" in text


def test_settings_fields_have_defaults_and_impossible_ones_are_refused():
    fit = FitSettings()
    assert fit.hill_min < fit.hill_max and 0 < fit.inactive_p_value < 1
    assert dataclasses.replace(fit, fix_hill=1.0).fix_hill == 1.0
    with pytest.raises(SettingsError, match="hill_min"):
        fit_curve(CONC, viability(CONC, 2e-8), settings=FitSettings(hill_min=5, hill_max=1))
    with pytest.raises(SettingsError, match="inactive_p_value"):
        fit_curve(CONC, viability(CONC, 2e-8), settings=FitSettings(inactive_p_value=2.0))
