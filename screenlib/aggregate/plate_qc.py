"""Plate-level assay quality: Z', robust Z', SSMD and an edge-effect check (``plate_qc.csv``).

Controls are taken from the plate map roles: ``positive_control`` versus ``negative_control``
(vehicle). The edge check compares wells of the outer ring (first/last row or column of the
plate format) with inner wells: vehicle wells directly, sample wells through their
deviation from the median of their replicate group (same sample, compound and
concentration), so that a dilution series laid out along the plate does not look like an
edge effect. A population is flagged when a two-sided Mann-Whitney test gives
p < ``alpha`` *and* the median shift exceeds ``min_shift_sd`` robust SDs of the inner wells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from screenlib.aggregate.stats import mann_whitney, robust_z_prime, ssmd, z_prime
from screenlib.errors import InputError
from screenlib.platemap import row_index
from screenlib.robust import robust_sd

READOUTS = ("apoptotic_fraction", "relative_cell_count")
_STANDARD_FORMATS = ((8, 12), (16, 24), (32, 48))


def plate_format(rows: list[str], columns: list[int]) -> tuple[int, int]:
    """Smallest standard plate (96/384/1536) holding the given rows and columns."""
    n_rows = max(row_index(r) for r in rows) + 1 if rows else 0
    n_columns = max(columns) if columns else 0
    for shape in _STANDARD_FORMATS:
        if n_rows <= shape[0] and n_columns <= shape[1]:
            return shape
    return n_rows, n_columns


def is_edge_well(rows: pd.Series, columns: pd.Series, shape: tuple[int, int]) -> np.ndarray:
    """True for wells on the outer ring of a plate of ``shape`` (rows, columns)."""
    row = np.array([row_index(r) for r in rows])
    column = np.asarray(columns, dtype=int)
    return (row == 0) | (row == shape[0] - 1) | (column == 1) | (column == shape[1])


def edge_effect(
    outer: np.ndarray, inner: np.ndarray, alpha: float = 0.05, min_shift_sd: float = 1.0
) -> dict[str, Any]:
    """Compare outer-ring with inner wells: median shift, its size in inner robust SDs, p-value.

    Examples
    --------
    >>> result = edge_effect(np.array([1.0, 1.1, 0.9, 1.2, 1.0, 1.1]),
    ...                      np.array([2.0, 2.1, 1.9, 2.2, 2.0, 2.1]))
    >>> bool(result["flag"])
    True
    """
    outer = np.asarray(outer, dtype=float)
    inner = np.asarray(inner, dtype=float)
    outer, inner = outer[np.isfinite(outer)], inner[np.isfinite(inner)]
    result: dict[str, Any] = {
        "n_outer": int(outer.size),
        "n_inner": int(inner.size),
        "shift": np.nan,
        "shift_sd": np.nan,
        "p_value": np.nan,
        "flag": False,
    }
    if outer.size < 3 or inner.size < 3:
        return result
    shift = float(np.median(outer) - np.median(inner))
    spread = robust_sd(inner)
    if not spread > 0:
        spread = float(np.std(inner, ddof=1)) or np.finfo(float).eps
    p_value = mann_whitney(outer, inner)[1]
    result.update(shift=shift, shift_sd=shift / spread, p_value=p_value)
    result["flag"] = bool(p_value < alpha and abs(shift / spread) >= min_shift_sd)
    return result


def _assay_quality(value: float) -> str:
    if not np.isfinite(value):
        return "not_computed"
    if value >= 0.5:
        return "excellent"
    if value > 0:
        return "screenable"
    return "poor"


def plate_qc(
    wells: pd.DataFrame,
    platemap: pd.DataFrame | None = None,
    *,
    readouts: tuple[str, ...] = READOUTS,
    alpha: float = 0.05,
    min_shift_sd: float = 1.0,
) -> pd.DataFrame:
    """One row per plate and timepoint with Z', robust Z', SSMD and the edge-effect check.

    Parameters
    ----------
    wells
        The table of :func:`~screenlib.aggregate.aggregate_wells`.
    platemap
        Plate map, used for roles missing from ``wells`` and for the plate format (outer
        ring); optional.
    readouts
        Per-well columns to assess; the first one also fills the unsuffixed ``z_prime``,
        ``robust_z_prime``, ``ssmd`` and ``assay_quality`` columns.
    alpha, min_shift_sd
        Edge-effect flag thresholds (Mann-Whitney p-value and median shift in robust SDs).

    Returns
    -------
    pandas.DataFrame
        Columns ``plate``, ``timepoint``, ``n_negative_wells``, ``n_positive_wells``, per
        readout ``<readout>_negative_mean`` / ``_sd`` / ``_median``, the positive ones,
        ``z_prime_<readout>``, ``robust_z_prime_<readout>``, ``ssmd_<readout>``, the edge
        columns ``edge_<population>_<readout>_{shift,shift_sd,p_value,flag}``,
        ``edge_effect_flag``, ``edge_effect_in`` and ``qc_flags``.

    Examples
    --------
    >>> wells = pd.DataFrame({"well": ["A01", "B01", "C01", "A12", "B12", "C12"],
    ...     "row": list("ABCABC"), "column": [1, 1, 1, 12, 12, 12], "timepoint": 0,
    ...     "role": ["negative_control"] * 3 + ["positive_control"] * 3,
    ...     "apoptotic_fraction": [0.0, 0.1, 0.2, 0.8, 0.9, 1.0],
    ...     "relative_cell_count": [1.0, 1.0, 1.0, 0.2, 0.2, 0.2]})
    >>> round(plate_qc(wells)["z_prime"].item(), 3)
    0.25
    """
    table = wells.copy()
    if "role" not in table.columns:
        if platemap is None or "role" not in platemap.columns:
            raise InputError("plate_qc needs a 'role' column in the wells table or the plate map")
        table = table.merge(platemap[["well", "role"]], on="well", how="left")
    if "timepoint" not in table.columns:
        table["timepoint"] = 0
    if "plate" not in table.columns:
        table["plate"] = ""
    if "row" not in table.columns or "column" not in table.columns:
        parsed = table["well"].astype(str).str.extract(r"^([A-Za-z]+)(\d+)$")
        table["row"], table["column"] = parsed[0], parsed[1].astype(int)
    source = platemap if platemap is not None and "row" in platemap.columns else table
    shape = plate_format(source["row"].astype(str).tolist(), source["column"].astype(int).tolist())
    table["_edge"] = is_edge_well(table["row"], table["column"], shape)
    group_keys = [c for c in ("sample", "compound", "concentration_molar") if c in table.columns]

    rows = []
    for (plate, tp), group in table.groupby(["plate", "timepoint"], sort=True):
        role = group["role"].astype(str)
        negative = group[role == "negative_control"]
        positive = group[role == "positive_control"]
        record: dict[str, Any] = {
            "plate": plate,
            "timepoint": int(tp),
            "plate_format": f"{shape[0]}x{shape[1]}",
            "n_negative_wells": int(len(negative)),
            "n_positive_wells": int(len(positive)),
        }
        flagged_in: list[str] = []
        for readout in readouts:
            if readout not in group.columns:
                continue
            neg = negative[readout].to_numpy(dtype=float)
            pos = positive[readout].to_numpy(dtype=float)
            neg, pos = neg[np.isfinite(neg)], pos[np.isfinite(pos)]
            for name, values in (("negative", neg), ("positive", pos)):
                record[f"{readout}_{name}_mean"] = float(values.mean()) if values.size else np.nan
                record[f"{readout}_{name}_sd"] = (
                    float(values.std(ddof=1)) if values.size > 1 else np.nan
                )
                record[f"{readout}_{name}_median"] = (
                    float(np.median(values)) if values.size else np.nan
                )
            record[f"z_prime_{readout}"] = z_prime(pos, neg)
            record[f"robust_z_prime_{readout}"] = robust_z_prime(pos, neg)
            record[f"ssmd_{readout}"] = ssmd(pos, neg)

            samples = group[(role == "sample").to_numpy()].copy()
            if group_keys and len(samples):
                samples["_residual"] = samples[readout] - samples.groupby(group_keys, dropna=False)[
                    readout
                ].transform("median")
                # "count" is the number of non-missing values, without a Python call per group
                replicated = samples.groupby(group_keys, dropna=False)[readout].transform("count")
                samples = samples[replicated >= 2]
            else:
                samples["_residual"] = np.nan
            populations = {
                "vehicle": (negative, readout),
                "sample": (samples, "_residual"),
            }
            for population, (subset, column) in populations.items():
                values = subset[column].to_numpy(dtype=float) if len(subset) else np.array([])
                edge = subset["_edge"].to_numpy(dtype=bool) if len(subset) else np.array([], bool)
                check = edge_effect(values[edge], values[~edge], alpha, min_shift_sd)
                for key in ("n_outer", "n_inner", "shift", "shift_sd", "p_value", "flag"):
                    record[f"edge_{population}_{readout}_{key}"] = check[key]
                if check["flag"]:
                    flagged_in.append(f"{population}:{readout}")
        first = readouts[0]
        for stat in ("z_prime", "robust_z_prime", "ssmd"):
            record[stat] = record.get(f"{stat}_{first}", np.nan)
        record["assay_quality"] = _assay_quality(record["z_prime"])
        record["edge_effect_flag"] = bool(flagged_in)
        record["edge_effect_in"] = ";".join(flagged_in)
        flags = []
        if not len(negative) or not len(positive):
            flags.append("missing_controls")
        if record["assay_quality"] == "poor":
            flags.append("z_prime_below_0")
        elif record["assay_quality"] == "screenable":
            flags.append("z_prime_below_0.5")
        if flagged_in:
            flags.append("edge_effect")
        record["qc_flags"] = ";".join(flags)
        rows.append(record)
    return pd.DataFrame(rows)
