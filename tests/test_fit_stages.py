"""Each stage of one fit on its own: set-up, starts and polish, profile interval, tests and
flags, derived values (screenlib/doseresponse/fit.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from screenlib.doseresponse import fit as stages
from screenlib.doseresponse.model import E0, E_INF, HILL, LOG_IC50
from screenlib.settings import FitSettings

CONC = np.concatenate([np.repeat(1e-5 / 3.0 ** np.arange(10), 3), np.zeros(3)])


def _curve(y, binomial=False, weights=None):
    weights = np.ones_like(y) if weights is None else weights
    return stages._curve_on_log_scale(CONC, y, weights, binomial)


def _truth(log_ic50=-7.5, hill=1.2, e0=100.0, e_inf=5.0):
    log_conc = np.log10(np.where(CONC > 0, CONC, 1.0))
    g = np.where(CONC > 0, 1 / (1 + 10 ** (hill * (log_ic50 - log_conc))), 0.0)
    return e0 + (e_inf - e0) * g


def _solved(y, settings=None, direction="decreasing"):
    settings = settings or FitSettings()
    curve = _curve(y)
    problem = stages._set_up_problem(curve, direction, settings, stages._plateau_box(curve, None))
    dof = len(y) - int(problem.free.sum())
    scale_y = 1e-12 * float((y * y).sum()) + 1e-300
    candidates = stages._start_and_polish(problem, curve, settings.n_starts)
    solution = stages._fit_with_profile(problem, candidates, dof, settings, scale_y, [])
    return curve, problem, solution, dof, scale_y


def test_set_up_maps_fixed_top_and_bottom_by_direction_and_widens_the_box():
    curve = _curve(_truth())
    assert stages._trend_direction(curve) == "decreasing"
    box = stages._plateau_box(curve, None)
    assert box[0] < 5.0 and box[1] > 100.0  # the data range widened on both sides
    settings = FitSettings(fix_top=100.0, fix_bottom=0.0, fix_hill=-1.0)
    problem = stages._set_up_problem(curve, "decreasing", settings, box)
    assert problem.free.tolist() == [True, False, False, False]
    assert problem.fixed[E0] == 100.0 and problem.fixed[E_INF] == 0.0
    assert problem.fixed[HILL] == 1.0  # the magnitude: one sign convention
    increasing = stages._set_up_problem(curve, "increasing", settings, box)
    assert increasing.fixed[E_INF] == 100.0 and increasing.fixed[E0] == 0.0


def test_starts_and_polish_reach_the_true_optimum_on_noiseless_data():
    curve, problem, solution, _, _ = _solved(_truth())
    assert solution.best[LOG_IC50] == pytest.approx(-7.5, abs=1e-6)
    assert solution.best[HILL] == pytest.approx(1.2, rel=1e-6)
    assert solution.objective < 1e-12
    assert len(solution.all_thetas) >= 2


def test_profile_interval_brackets_the_optimum_and_wald_is_the_fallback():
    y = _truth() + np.random.default_rng(1).normal(0, 4, CONC.size)
    _, _, solution, dof, _ = _solved(y)
    low, high, method = stages._interval(solution, dof, 0.95)
    assert method == "profile" and low < solution.best[LOG_IC50] < high < low + 1
    broken = stages._Solution(
        **{**solution.__dict__, "profile_excess": np.full(solution.profile_grid.size, np.nan)}
    )
    low_w, high_w, method_w = stages._interval(broken, dof, 0.95)
    assert method_w == "wald (log scale)"
    assert (low_w + high_w) / 2 == pytest.approx(solution.best[LOG_IC50])


def test_tests_and_flags_flat_line_is_inactive_and_a_wild_well_is_an_outlier():
    rng = np.random.default_rng(2)
    flat = 100 + rng.normal(0, 3, CONC.size)
    curve, problem, solution, dof, scale_y = _solved(flat)
    interval = stages._interval(solution, dof, 0.95)
    assessment = stages._assess(
        problem, curve, solution, "decreasing", FitSettings(), dof, scale_y,
        interval[1] - interval[0],
    )  # fmt: skip
    assert assessment.inactive and assessment.flags[:1] == ["inactive"]
    assert assessment.p_value > 0.05
    y = _truth() + rng.normal(0, 2, CONC.size)
    y[7] += 60
    curve, problem, solution, dof, _ = _solved(y)
    assert stages._outlier_rows(problem, solution, dof, 5.0).tolist() == [7]


def test_derived_values_texts_and_ranges():
    curve = _curve(_truth())
    assert stages._reported_ic50(-7.2, curve, False, None)[:2] == ("63.1 nM", 10**-7.2)
    assert stages._reported_ic50(-4.0, curve, False, None)[0] == "> 10 µM"
    assert stages._reported_ic50(-4.0, curve, False, None)[3] == "ic50_above_range"
    assert stages._reported_ic50(-7.2, curve, False, -6.5)[:2][0] == ">= 316 nM"
    assert math.isnan(stages._reported_ic50(-7.2, curve, False, -6.5)[1])
    assert stages._reported_ic50(-7.2, curve, False, -math.inf)[0] == "not determined"
    assert stages._reported_ic50(-7.2, curve, True, None)[0] == "inactive"
