"""Incomplete curves: no invented low top to place an EC50 inside the tested range (#18).

The case from a hidden plate: apoptotic counts still rising at the top dose (true EC50 3x
above it). A free 4PL places the top at ~0.2 and reports an EC50 of a few µM; the fit must
instead report a lower limit, or, with the positive control's response as the full effect,
"> top dose" with the plateau held at the control.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from screenlib.doseresponse import fit_curve

DOSES = 1e-5 / 3.0 ** np.arange(9)  # 9-point 3-fold dilution from 10 µM
CONC = np.concatenate([np.repeat(DOSES, 2), np.zeros(4)])
FULL_EFFECT = 0.85  # apoptotic fraction of the positive control


def _counts(seed, ec50=3e-5, top=FULL_EFFECT, bottom=0.05, hill=1.3, cells=250, rho=0.01):
    """Beta-binomial apoptotic counts (well-to-well overdispersion, as on real plates)."""
    rng = np.random.default_rng(seed)
    p = bottom + (top - bottom) / (1 + (ec50 / np.maximum(CONC, 1e-30)) ** hill)
    q = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1))
    n_total = rng.poisson(cells, CONC.size)
    return rng.binomial(n_total, q), n_total


# seeds on which the former fit reported an in-range EC50 (3-8 µM) with a top of 0.17-0.29
SEEDS_WITH_INVENTED_TOP = (17, 18, 20, 40, 57)


@pytest.mark.parametrize("seed", SEEDS_WITH_INVENTED_TOP)
def test_rising_curve_without_plateau_gives_a_lower_limit_not_a_number(seed):
    positive, total = _counts(seed)
    fit = fit_curve(CONC, n_positive=positive, n_total=total, direction="increasing")
    assert math.isnan(fit.ic50_molar) and math.isnan(fit.pic50)
    assert fit.ic50_text.startswith(">= "), fit.ic50_text
    assert "no_top_plateau" in fit.flags and not fit.confident


@pytest.mark.parametrize("seed", SEEDS_WITH_INVENTED_TOP)
def test_positive_control_bounds_the_top_and_the_ec50_is_above_the_top_dose(seed):
    positive, total = _counts(seed)
    fit = fit_curve(
        CONC, n_positive=positive, n_total=total, direction="increasing",
        max_response=FULL_EFFECT,
    )  # fmt: skip
    assert fit.ic50_text == "> 10 µM" and math.isnan(fit.ic50_molar)
    assert {"plateau_bounded", "ic50_above_range"} <= set(fit.flags)
    assert fit.top >= FULL_EFFECT - 1e-12
    assert any("full-effect response" in note for note in fit.notes)


def test_complete_curve_is_not_touched_by_the_reference():
    positive, total = _counts(3, ec50=1e-7)
    free = fit_curve(CONC, n_positive=positive, n_total=total, direction="increasing")
    bounded = fit_curve(
        CONC, n_positive=positive, n_total=total, direction="increasing",
        max_response=FULL_EFFECT,
    )  # fmt: skip
    assert free == bounded
    assert free.ic50_molar == pytest.approx(1e-7, rel=0.3) and "plateau_bounded" not in free.flags


def test_partial_efficacy_with_a_reached_plateau_keeps_its_own_top():
    # a compound that levels off at 0.35 (plateau reached mid-range) is not pulled to 0.85
    positive, total = _counts(5, ec50=1e-8, top=0.35, cells=2000, rho=0.001)
    fit = fit_curve(
        CONC, n_positive=positive, n_total=total, direction="increasing",
        max_response=FULL_EFFECT,
    )  # fmt: skip
    assert "plateau_bounded" not in fit.flags
    assert fit.top == pytest.approx(0.35, abs=0.03)
    assert fit.ic50_molar == pytest.approx(1e-8, rel=0.3)


def test_decreasing_viability_still_falling_at_the_top_dose():
    # viability falls to 75 % at the top dose; the positive control kills everything (0 %)
    rng = np.random.default_rng(11)
    y = 100 / (1 + CONC / 4e-5) + rng.normal(0, 4, CONC.size)
    free = fit_curve(CONC, y, direction="decreasing")
    assert math.isnan(free.ic50_molar) and not free.confident
    bounded = fit_curve(CONC, y, direction="decreasing", max_response=0.0)
    assert bounded.ic50_text == "> 10 µM" and bounded.bottom <= 0.0 + 1e-12
