"""Growth-rate inhibition (GR) metrics: Hafner, Niepel, Chung & Sorger 2016, Nat Methods 13:521.

GR(c) = 2 ** (log2(x(c) / x0) / log2(x_ctrl / x0)) - 1, with x(c) the treated count, x_ctrl the
vehicle count of the same sample and x0 the count at the time of treatment. GR is 1 for no
effect, 0 for complete cytostasis and negative for cell killing (down to -1).
The GR curve GR(c) = GR_inf + (1 - GR_inf) / (1 + (c / GEC50) ** h) is the 4PL with its
zero-dose plateau fixed at 1, so it goes through the same fitter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from screenlib.doseresponse.fit import fit_curve
from screenlib.errors import InputError
from screenlib.settings import FitSettings

__all__ = ["gr_aoc", "gr_table", "gr_values", "fit_gr"]


def gr_values(n_cells, n_cells_t0, n_cells_control) -> np.ndarray:
    """GR value of every well (NaN where the controls did not grow or counts are missing).

    Examples
    --------
    >>> gr_values([400.0, 200.0, 100.0], 200.0, 400.0).tolist()
    [1.0, 0.0, -0.5]
    """
    x = np.asarray(n_cells, dtype=float)
    x0 = np.broadcast_to(np.asarray(n_cells_t0, dtype=float), x.shape)
    control = np.broadcast_to(np.asarray(n_cells_control, dtype=float), x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.log2(control / x0)
        ratio = np.log2(x / x0) / growth
        values = 2.0**ratio - 1.0
    valid = (x > 0) & (x0 > 0) & (control > x0) & np.isfinite(values)
    return np.where(valid, values, np.nan)


def gr_aoc(concentration_molar, gr) -> float:
    """Area over the GR curve from the observed means, normalised by the tested log range.

    Examples
    --------
    >>> gr_aoc([1e-9, 1e-8, 1e-7], [1.0, 0.5, 0.0])
    0.5
    """
    concentration = np.asarray(concentration_molar, dtype=float)
    gr = np.asarray(gr, dtype=float)
    keep = (concentration > 0) & np.isfinite(gr)
    if np.unique(concentration[keep]).size < 2:
        return float("nan")
    frame = pd.DataFrame({"x": np.log10(concentration[keep]), "gr": gr[keep]})
    means = frame.groupby("x")["gr"].mean()
    x = means.index.to_numpy(float)
    return float(np.trapezoid(1.0 - means.to_numpy(), x) / (x[-1] - x[0]))


def fit_gr(concentration_molar, gr, settings: FitSettings | None = None) -> dict:
    """Fit the GR curve and report GR50, GRmax, GR_AOC, GEC50, GRinf and the Hill slope.

    ``gr50_molar`` is NaN when GR never falls to 0.5 within the tested range; ``gr50_text`` says
    why (``"> 10 µM"``, ``"not reached"``, ``"inactive"``). GRmax is the fitted GR at the
    top tested dose.
    """
    settings = dataclasses.replace(settings or FitSettings(), fix_top=1.0, fix_bottom=None)
    concentration = np.asarray(concentration_molar, dtype=float)
    values = np.asarray(gr, dtype=float)
    fit = fit_curve(
        concentration,
        values,
        direction="decreasing",
        settings=settings,
        response_bounds=(-1.0, 1.0),
        absolute_level=0.5,
    )
    return {
        "gr50_molar": fit.absolute_ic50_molar,
        "gr50_text": fit.absolute_ic50_text,
        "gec50_molar": fit.ic50_molar,
        "gr_inf": fit.response_at_infinite_dose,
        "gr_max": fit.emax,
        "gr_aoc": gr_aoc(concentration, values),
        "gr_hill": fit.hill_slope,  # always positive
        "fit": fit,
    }


def _t0_counts(wells: pd.DataFrame, t0: pd.DataFrame | None) -> pd.Series:
    """Time-zero count for every well: its own column, else the sample's t0 median."""
    if "n_cells_t0" in wells.columns:
        return pd.to_numeric(wells["n_cells_t0"], errors="coerce")
    if t0 is None or "n_cells" not in t0.columns:
        raise InputError("GR metrics need a 'n_cells_t0' column or a time-zero table with n_cells")
    if "sample" in t0.columns:
        medians = t0.groupby("sample")["n_cells"].median()
        return wells["sample"].map(medians).astype(float)
    return pd.Series(float(t0["n_cells"].median()), index=wells.index)


def gr_table(wells: pd.DataFrame, settings=None, t0: pd.DataFrame | None = None) -> pd.DataFrame:
    """GR metrics per sample x compound (x timepoint) of a wells table with time-zero counts.

    Returns rows shaped like ``fit_table``'s (readout ``gr_value``) plus ``gr50_molar``,
    ``gr50_text``, ``gec50_molar``, ``gr_inf``, ``gr_max``, ``gr_aoc``, ``gr_hill``.
    """
    from screenlib.platemap._curves import _curve_groups

    fit_settings = getattr(settings, "fit", settings) or FitSettings()
    for column in ("sample", "concentration_molar", "n_cells"):
        if column not in wells.columns:
            raise InputError(f"GR metrics need the column '{column}' in the wells table")
    table = wells.copy()
    if "compound" not in table.columns:
        table["compound"] = ""
    if "timepoint" in table.columns and table["timepoint"].nunique(dropna=True) <= 1:
        table = table.drop(columns="timepoint")
    role = table["role"] if "role" in table.columns else pd.Series("sample", index=table.index)
    vehicle = (role == "negative_control") | (table["concentration_molar"] == 0)
    table["n_cells_t0"] = _t0_counts(table, t0).to_numpy()
    group = ["sample"] + (["timepoint"] if "timepoint" in table.columns else [])
    control = table[vehicle].groupby(group)["n_cells"].median().rename("n_cells_control")
    table = table.join(control, on=group)
    table["response"] = gr_values(table["n_cells"], table["n_cells_t0"], table["n_cells_control"])
    table["readout"] = "gr_value"
    rows = []
    for keys, curve in _curve_groups(table):
        metrics = fit_gr(curve["concentration_molar"], curve["response"], fit_settings)
        fit = metrics.pop("fit")
        row = {
            "sample": keys.get("sample", ""),
            "compound": keys["compound"],
            "readout": "gr_value",
        }
        if "timepoint" in keys:
            row["timepoint"] = keys["timepoint"]
        row.update(fit.to_row())
        row.update(metrics)
        if curve["response"].isna().all():
            row["notes"] = (row["notes"] + "; " if row["notes"] else "") + (
                "no GR values: controls did not grow past the time-zero count"
            )
        rows.append(row)
    return pd.DataFrame(rows)
