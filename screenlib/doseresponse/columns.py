"""The two fit tables: a short core for people (``fits.csv``) and the full one (``fits_full``).

The core holds what a screening scientist reads first, in the plate map's concentration unit:

==================  ==========================================================================
column              meaning
==================  ==========================================================================
sample, compound    the curve (plus ``timepoint`` when a plate has several)
readout             what was fitted (``apoptotic_fraction``, ``relative_cell_count`` ...)
ic50                relative IC50 / EC50 in ``unit`` (empty when not a number: see ic50_text)
ic50_ci_low/high    its 95 % profile-likelihood interval in ``unit``
unit                concentration unit of the three columns above (the map's, e.g. ``nM``)
ic50_text           the IC50 as text: ``63.1 nM``, ``> 10 µM``, ``>= 2.6 µM``, ``inactive``
pic50               -log10(IC50 / M)
hill_slope          steepness, always positive; ``direction`` says which way the curve goes
direction           ``increasing`` or ``decreasing``
top, bottom         the larger and the smaller fitted plateau (readout units)
flags               ``;``-separated quality flags (see ``screenlib.doseresponse.FLAGS``)
==================  ==========================================================================
"""

from __future__ import annotations

import pandas as pd

from screenlib.doseresponse.units import choose_unit, molar_to_unit

__all__ = ["CORE_COLUMNS", "split_fit_columns"]

CORE_COLUMNS = (
    "sample",
    "compound",
    "readout",
    "timepoint",
    "ic50",
    "ic50_ci_low",
    "ic50_ci_high",
    "unit",
    "ic50_text",
    "pic50",
    "hill_slope",
    "direction",
    "top",
    "bottom",
    "flags",
)


def _with_curve_identity(core: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """The columns that say which curve a row is (``plate``, the plate map's annotations and
    split columns, ``map_timepoint``) kept in the core beside ``sample`` and ``compound``:
    without them two curves split by a ``cell_line`` column would look the same."""
    from dataclasses import fields

    from screenlib.doseresponse.fit import CurveFit

    fitted = {f.name for f in fields(CurveFit)}
    first_fitted = next((i for i, c in enumerate(fits.columns) if c in fitted), len(fits.columns))
    identity = [
        c for c in fits.columns[:first_fitted] if c not in CORE_COLUMNS and c not in core.columns
    ]
    if "curve_split_by" in fits.columns:
        identity.append("curve_split_by")
    if not identity:
        return core
    leading = [c for c in ("plate",) if c in identity]
    rest = [c for c in identity if c not in leading]
    keys = [c for c in ("sample", "compound") if c in core.columns]
    after = [c for c in core.columns if c not in keys]
    return pd.concat([fits[leading], core[keys], fits[rest], core[after]], axis=1)


def split_fit_columns(
    fits: pd.DataFrame, unit: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(core, full)`` tables from ``fit_wells``/``fit_table`` output.

    Parameters
    ----------
    fits
        One row per curve with ``ic50_molar``, ``ic50_ci_low_molar``, ``ic50_ci_high_molar``
        and the other :class:`~screenlib.doseresponse.CurveFit` columns.
    unit
        Concentration unit of the core table (the plate map's, e.g. ``"nM"``); default: a
        ``unit`` column of ``fits`` if there is one, else the unit in which the middle of the
        tested doses lies between 1 and 1000 (``nM`` for 0.5 nM - 10 µM).

    Returns
    -------
    core
        :data:`CORE_COLUMNS` that exist (``timepoint`` only when present), in that order.
    full
        Every column of ``fits`` unchanged (molar values), for ``fits_full.parquet``.

    Examples
    --------
    >>> fits = pd.DataFrame({"sample": ["A"], "compound": ["x"], "readout": ["viability"],
    ...     "ic50_molar": [6.309e-8], "ic50_ci_low_molar": [4.3e-8],
    ...     "ic50_ci_high_molar": [1.0e-7], "lowest_dose_molar": [5e-10],
    ...     "top_dose_molar": [1e-5], "ic50_text": ["63.1 nM"]})
    >>> core, full = split_fit_columns(fits)
    >>> core[["ic50", "unit"]].round(1).values.tolist()
    [[63.1, 'nM']]
    """
    full = fits.copy()
    core = pd.DataFrame(index=fits.index)
    if fits.empty:
        return pd.DataFrame(columns=[c for c in CORE_COLUMNS if c != "timepoint"]), full
    if unit is None and "unit" in fits.columns and fits["unit"].notna().any():
        units = fits["unit"].fillna(fits["unit"].dropna().iloc[0]).astype(str)
    else:
        if unit is None:
            doses = [fits.get("lowest_dose_molar"), fits.get("top_dose_molar")]
            doses = [d for d in doses if d is not None]
            unit = choose_unit(pd.concat(doses)) if doses else "M"
        units = pd.Series(unit, index=fits.index)
    for column in CORE_COLUMNS:
        if column == "unit":
            core["unit"] = units
        elif column in ("ic50", "ic50_ci_low", "ic50_ci_high"):
            source = "ic50_molar" if column == "ic50" else f"{column}_molar"
            if source in fits.columns:
                molar = pd.to_numeric(fits[source], errors="coerce")
                core[column] = [
                    float(molar_to_unit(value, u)) for value, u in zip(molar, units, strict=True)
                ]
        elif column in fits.columns:
            core[column] = fits[column]
    core = _with_curve_identity(core, fits)
    # an interval only next to a reported IC50 (not beside '> 10 µM' or '>= 2.6 µM')
    if "ic50" in core.columns:
        for column in ("ic50_ci_low", "ic50_ci_high"):
            if column in core.columns:
                core.loc[core["ic50"].isna(), column] = float("nan")
    return core.reset_index(drop=True), full.reset_index(drop=True)
