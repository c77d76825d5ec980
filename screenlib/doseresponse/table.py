"""Fit every curve of a tidy table or of ``wells.csv``: one row per curve (``fits.csv``).

A curve is one sample x compound x readout (x timepoint when there are several). Vehicle rows
(concentration 0, or role ``negative_control``) of the same sample enter every compound's
curve as the zero-dose plateau; positive-control and empty wells are left out.
"""

from __future__ import annotations

import logging

import pandas as pd

from screenlib.doseresponse.controls import full_effect_levels
from screenlib.doseresponse.fit import fit_curve
from screenlib.errors import InputError
from screenlib.platemap._curves import (
    _curve_groups,
    _text,
    annotation_columns,
    curve_split_columns,
    plan_curves,
)
from screenlib.settings import FitSettings

__all__ = [
    "READOUT_DIRECTIONS",
    "annotation_columns",
    "curve_split_columns",
    "fit_table",
    "fit_wells",
    "plan_curves",
]

logger = logging.getLogger(__name__)

# which way a known readout moves with an active compound
READOUT_DIRECTIONS = {
    "apoptotic_fraction": "increasing",
    "apoptotic_fraction_mixture": "increasing",
    "fraction_early_apoptotic": "increasing",
    "fraction_late_apoptotic": "increasing",
    "fraction_necrotic": "increasing",
    "relative_cell_count": "decreasing",
    "fraction_viable": "decreasing",
    "viability_percent": "decreasing",
    "viability": "decreasing",
    "gr_value": "decreasing",
}
_FRACTION_READOUTS = {r for r in READOUT_DIRECTIONS if "fraction" in r}


def _fit_settings(settings) -> FitSettings:
    """Accept ``FitSettings``, ``AssaySettings`` (its ``fit`` section) or None."""
    if settings is None:
        return FitSettings()
    return getattr(settings, "fit", settings)


def _require(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)}; "
            f"it has: {', '.join(map(str, table.columns))}"
        )


def fit_table(
    table: pd.DataFrame,
    settings=None,
    *,
    direction: str | None = None,
    response_bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Fit one curve per sample x compound (x ``readout``, ``timepoint``) of a tidy table.

    Parameters
    ----------
    table
        Columns ``concentration_molar`` (0 for vehicle) and ``response`` or ``n_positive`` +
        ``n_total``; optional ``sample``, ``compound``, ``readout``, ``timepoint``, ``role``.
    settings
        ``FitSettings`` (or ``AssaySettings``; its ``fit`` section is used).
    direction
        Curve direction for every curve; default from the readout name, else ``"auto"``.
    response_bounds
        Box for the plateaus of every curve (default: see :func:`fit_curve`).

    Returns
    -------
    DataFrame
        One row per curve: the keys, ``readout`` and every :class:`CurveFit` field.

    Examples
    --------
    >>> import numpy as np
    >>> conc = np.repeat([0.0, *(1e-5 / 3.0 ** np.arange(10))], 3)
    >>> table = pd.DataFrame({"sample": "SK-N-SH", "compound": "milademetan",
    ...     "concentration_molar": conc, "response": 100 / (1 + conc / 21.9e-9)})
    >>> round(float(fit_table(table)["ic50_molar"].iloc[0]) * 1e9, 2)
    21.9
    """
    fit_settings = _fit_settings(settings)
    _require(table, ["concentration_molar"], "dose-response table")
    counts = "n_positive" in table.columns and "n_total" in table.columns
    if not counts:
        _require(table, ["response"], "dose-response table (or give n_positive and n_total)")
    table = table.copy()
    for column in ("sample", "compound"):
        if column not in table.columns:
            table[column] = ""
    table["concentration_molar"] = pd.to_numeric(table["concentration_molar"], errors="coerce")
    if "timepoint" in table.columns and table["timepoint"].nunique(dropna=True) <= 1:
        table = table.drop(columns="timepoint")
    split, labels = curve_split_columns(table)
    if split:
        logger.warning(
            "curves split by column(s) %s: they take several values among the wells of one "
            "sample x compound",
            ", ".join(split),
        )
    annotations = [c for c in annotation_columns(table) if c not in split]
    rows = []
    full_effect = full_effect_levels(table)  # positive controls: the plateau to aim for
    effect_keys = [c for c in ("sample", "readout", "timepoint") if c in table.columns]
    for keys, curve in _curve_groups(table, split):
        readout = str(keys.get("readout", "response"))
        max_response = full_effect.get(tuple(keys.get(c) for c in effect_keys))
        curve_direction = direction or READOUT_DIRECTIONS.get(readout, "auto")
        result = _fit_curve_rows(
            curve, counts, curve_direction, fit_settings, response_bounds, max_response
        )
        rows.append(_curve_row(keys, curve, result, annotations, split))
    result_table = pd.DataFrame(rows)
    if result_table.empty:
        columns = ["plate"] if "plate" in table.columns else []
        columns += ["sample", "compound", "readout"]
        columns += [c for c in ("timepoint", "map_timepoint") if c in table.columns]
        result_table = pd.DataFrame(columns=columns)
    else:
        if "outlier_wells" not in result_table:
            result_table["outlier_wells"] = ""
        result_table["outlier_wells"] = result_table["outlier_wells"].fillna("")
    if split:
        result_table["curve_split_by"] = ";".join(split)
    result_table.attrs["curve_group_columns"] = split
    result_table.attrs["point_label_columns"] = labels
    return result_table


def _fit_curve_rows(
    curve: pd.DataFrame, counts: bool, direction: str, settings, bounds, max_response=None
):
    concentration = curve["concentration_molar"].to_numpy(float)
    if counts:
        return fit_curve(
            concentration,
            n_positive=pd.to_numeric(curve["n_positive"], errors="coerce").to_numpy(float),
            n_total=pd.to_numeric(curve["n_total"], errors="coerce").to_numpy(float),
            direction=direction,
            settings=settings,
            response_bounds=bounds,
            max_response=max_response,
        )
    return fit_curve(
        concentration,
        pd.to_numeric(curve["response"], errors="coerce").to_numpy(float),
        direction=direction,
        settings=settings,
        response_bounds=bounds,
        max_response=max_response,
    )


def _curve_row(keys: dict, curve: pd.DataFrame, result, annotations, split) -> dict:
    """One ``fits.csv`` row: the curve's keys, the fit, and every other annotation column
    (its value, or its values joined by '; ' when they differ among the curve's wells)."""
    row = {"plate": keys["plate"]} if "plate" in keys else {}
    row.update(sample=keys.get("sample", ""), compound=keys["compound"])
    row["readout"] = str(keys.get("readout", "response"))
    row.update({k: keys[k] for k in ("timepoint", "map_timepoint") if k in keys})
    row.update({c: keys[c] for c in split})
    for column in annotations:
        values = [v for v in dict.fromkeys(_text(curve[column])) if v]
        row[column] = "; ".join(values) if len(values) <= 5 else f"({len(values)} values)"
    row.update(result.to_row())
    if "well" in curve.columns and result.outlier_indices:
        wells = curve["well"].astype(str).to_numpy()
        row["outlier_wells"] = ";".join(wells[list(result.outlier_indices)])
    return row


def _relative_cell_count(wells: pd.DataFrame) -> pd.Series:
    """Cell count relative to the median vehicle well of the same sample (and timepoint)."""
    role = wells["role"] if "role" in wells.columns else pd.Series("", index=wells.index)
    vehicle = (role == "negative_control") | (wells["concentration_molar"] == 0)
    keys = [c for c in ("sample", "timepoint") if c in wells.columns]
    counts = pd.to_numeric(wells["n_cells"], errors="coerce")
    if not keys:
        return counts / counts[vehicle].median()
    reference = counts[vehicle].groupby([wells.loc[vehicle, k] for k in keys]).median()
    index = pd.MultiIndex.from_frame(wells[keys]) if len(keys) > 1 else wells[keys[0]]
    return counts / reference.reindex(index).to_numpy()


def fit_wells(wells: pd.DataFrame, settings=None, t0: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fit ``wells.csv``: one row per sample x compound x readout (``fits.csv``).

    Curves are kept apart by ``plate`` and the plate map's ``map_timepoint`` too, and split by
    any plate-map column that varies among their wells (see :func:`curve_split_columns`;
    ``attrs["curve_group_columns"]`` and the ``curve_split_by`` column name them).

    Readouts are ``settings.fit.responses`` (default ``apoptotic_fraction`` -- on counts with a
    binomial likelihood when ``binomial_fractions`` -- and ``relative_cell_count``). When
    time-zero counts exist (a ``n_cells_t0`` column or the ``t0`` table) GR metrics are added as
    readout ``gr_value`` with ``gr50_molar``, ``gr_max`` and ``gr_aoc``. A missing
    ``relative_cell_count`` is computed from ``n_cells`` and the sample's median vehicle well.
    """
    fit_settings = _fit_settings(settings)
    _require(wells, ["sample", "compound", "concentration_molar"], "wells table")
    base_columns = [
        c
        for c in ("plate", "sample", "compound", "concentration_molar", "role", "well")
        + ("timepoint", "map_timepoint")
        if c in wells.columns
    ] + annotation_columns(wells)
    frames = []
    if "relative_cell_count" not in wells.columns and "n_cells" in wells.columns:
        wells = wells.assign(relative_cell_count=_relative_cell_count(wells))
    for readout in fit_settings.responses:
        if readout not in wells.columns:
            raise InputError(
                f"wells table lacks the readout column '{readout}' named in fit.responses; "
                f"available: {', '.join(map(str, wells.columns))}"
            )
        long = wells[base_columns].copy()
        long["readout"] = readout
        use_counts = (
            readout == "apoptotic_fraction"
            and fit_settings.binomial_fractions
            and {"n_apoptotic", "n_cells"} <= set(wells.columns)
        )
        bounds = (0.0, 1.0) if readout in _FRACTION_READOUTS else None
        if use_counts:
            long["n_positive"] = wells["n_apoptotic"]
            long["n_total"] = wells["n_cells"]
        else:
            long["response"] = wells[readout]
        frames.append(fit_table(long, fit_settings, response_bounds=bounds))
    has_t0 = t0 is not None or "n_cells_t0" in wells.columns
    if has_t0 and "n_cells" in wells.columns:
        from screenlib.doseresponse.gr import gr_table

        frames.append(gr_table(wells, fit_settings, t0=t0))
    split = frames[0].attrs.get("curve_group_columns", []) if frames else []
    labels = frames[0].attrs.get("point_label_columns", []) if frames else []
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["sample", "compound", "readout"])
    fits = pd.concat(frames, ignore_index=True)
    fits.attrs["curve_group_columns"] = split
    fits.attrs["point_label_columns"] = labels
    return fits
