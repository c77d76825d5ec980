"""The short fits.csv core, the full table, one concentration format, positive controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from screenlib.doseresponse import (
    CORE_COLUMNS,
    fit_table,
    format_concentration,
    full_effect_levels,
    split_fit_columns,
)

DOSES = 1e-5 / 3.0 ** np.arange(9)


def _table(rng, ec50, with_control):
    conc = np.concatenate([np.repeat(DOSES, 2), np.zeros(4)])
    p = 0.05 + 0.8 / (1 + (ec50 / np.maximum(conc, 1e-30)) ** 1.3)
    total = np.full(conc.size, 300)
    table = pd.DataFrame(
        {"sample": "A", "compound": "x", "concentration_molar": conc,
         "n_positive": rng.binomial(total, p), "n_total": total,
         "role": np.where(conc > 0, "sample", "negative_control")}
    )  # fmt: skip
    if with_control:
        control = pd.DataFrame(
            {"sample": "A", "compound": "staurosporine", "concentration_molar": 1e-6,
             "n_positive": [255, 260, 250], "n_total": 300, "role": "positive_control"}
        )  # fmt: skip
        table = pd.concat([table, control], ignore_index=True)
    return table


def test_core_is_short_and_in_the_chosen_unit_full_keeps_everything():
    fits = fit_table(_table(np.random.default_rng(1), 4e-8, False))
    core, full = split_fit_columns(fits)
    assert list(core.columns) == [c for c in CORE_COLUMNS if c != "timepoint"]
    assert len(core.columns) <= 15 < len(full.columns)
    assert core.unit.iloc[0] == "nM"
    assert core.ic50.iloc[0] == pytest.approx(fits.ic50_molar.iloc[0] * 1e9)
    assert core.ic50_text.iloc[0] == format_concentration(fits.ic50_molar.iloc[0])
    assert full.equals(fits)
    core_um, _ = split_fit_columns(fits, unit="µM")
    assert core_um.ic50.iloc[0] == pytest.approx(core.ic50.iloc[0] / 1000)
    # one Hill convention: a single positive column
    assert "hill" not in full.columns and (full.hill_slope > 0).all()


def test_ic50_text_is_the_report_format_not_a_float():
    fits = fit_table(_table(np.random.default_rng(2), 6.3e-8, False))
    text = fits.ic50_text.iloc[0]
    assert text.endswith(" nM") and "e-" not in text
    assert format_concentration(6.309e-08) == "63.1 nM"


def test_positive_control_sets_the_full_effect_of_an_incomplete_curve():
    rng = np.random.default_rng(1)  # free fit: an in-range-looking curve with a low top
    with_control = _table(rng, 3e-5, True)
    assert full_effect_levels(with_control) == {("A",): pytest.approx(765 / 900)}
    bounded = fit_table(with_control).iloc[0]
    free = fit_table(with_control[with_control.role != "positive_control"]).iloc[0]
    assert "plateau_bounded" in bounded["flags"] and bounded["ic50_text"] == "> 10 µM"
    assert "plateau_bounded" not in free["flags"] and np.isnan(free["ic50_molar"])
    assert free["ic50_text"].startswith(">= ")  # without a control: a lower limit
