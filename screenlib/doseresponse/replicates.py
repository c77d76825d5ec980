"""Replicate curves: one fit per replicate (plate, or replicate wells), a pooled fit, and the
spread between replicates.

A screen repeats a dose series on several plates, or several times on one plate. Each
replicate gets its own curve; the pooled curve fits all their wells together; the spread is
the mean and standard deviation of the replicates' pIC50 (the scale on which IC50s vary
symmetrically), with the number of replicates that gave a finite IC50.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from screenlib.doseresponse.table import fit_wells

__all__ = ["CURVE_KEYS", "replicate_fits", "replicate_spread"]

CURVE_KEYS = ("sample", "compound", "readout", "timepoint")
POOLED = "pooled"


def replicate_fits(wells: pd.DataFrame, settings=None, by: str = "plate") -> pd.DataFrame:
    """Fits per replicate and pooled over replicates, one table with a ``by`` column.

    Parameters
    ----------
    wells
        Wells of every replicate (``wells.csv`` rows), with the column ``by``; wells where it
        is blank (typically the vehicle) belong to every replicate. Relative cell counts must
        already be normalised within each replicate (each plate's own vehicle).
    settings
        Assay or fit settings, as :func:`fit_wells` takes them.
    by
        The replicate column (``"plate"`` or ``"replicate"``).

    Returns
    -------
    DataFrame
        :func:`fit_wells` rows with ``by`` set to each replicate's value, then the pooled
        rows with ``by`` = ``"pooled"``.
    """
    frames = []
    label = wells[by].astype("string").fillna("").str.strip()
    shared = label == ""  # vehicle and control wells that serve every replicate
    for value in sorted(set(label[~shared])):
        part = wells[(label == value) | shared]
        fits = fit_wells(part.drop(columns=[by]), settings)
        fits.insert(0, by, value)
        frames.append(fits)
    pooled_wells = wells.copy()
    if "well" in pooled_wells:  # wells of several plates share names: keep them apart
        pooled_wells["well"] = pooled_wells[by].astype(str) + ":" + pooled_wells["well"].astype(str)
    pooled_wells = pooled_wells.drop_duplicates()
    pooled = fit_wells(pooled_wells.drop(columns=[by]), settings)
    pooled.insert(0, by, POOLED)
    frames.append(pooled)
    return pd.concat(frames, ignore_index=True)


def replicate_spread(fits: pd.DataFrame, by: str = "plate") -> pd.DataFrame:
    """Between-replicate spread of pIC50 per curve, beside the pooled fit's IC50.

    Parameters
    ----------
    fits
        The output of :func:`replicate_fits`.
    by
        Its replicate column.

    Returns
    -------
    DataFrame
        One row per curve: ``n_replicates``, ``n_with_ic50``, ``pic50_mean``, ``pic50_sd``
        (NaN with fewer than two finite values), ``ic50_geomean_molar``, the pooled fit's
        ``pooled_ic50_molar``, ``pooled_pic50`` and ``pooled_flags``.

    Examples
    --------
    >>> fits = pd.DataFrame({"plate": ["P1", "P2", "pooled"], "sample": "A", "compound": "x",
    ...                      "readout": "r", "pic50": [7.0, 7.2, 7.1],
    ...                      "ic50_molar": [1e-7, 10**-7.2, 10**-7.1], "flags": ""})
    >>> row = replicate_spread(fits).iloc[0]
    >>> [round(float(row[k]), 3) for k in ("pic50_mean", "pic50_sd", "n_with_ic50")]
    [7.1, 0.141, 2.0]
    """
    keys = [k for k in CURVE_KEYS if k in fits.columns]
    pooled = fits[fits[by] == POOLED].set_index(keys)
    rows = []
    for curve, part in fits[fits[by] != POOLED].groupby(keys, sort=True, dropna=False):
        curve = curve if isinstance(curve, tuple) else (curve,)
        pic50 = pd.to_numeric(part["pic50"], errors="coerce").to_numpy(dtype=float)
        finite = pic50[np.isfinite(pic50)]
        row = dict(zip(keys, curve, strict=True))
        row.update(
            n_replicates=len(part),
            n_with_ic50=len(finite),
            pic50_mean=float(finite.mean()) if len(finite) else np.nan,
            pic50_sd=float(finite.std(ddof=1)) if len(finite) > 1 else np.nan,
            ic50_geomean_molar=float(10 ** -finite.mean()) if len(finite) else np.nan,
        )
        match = pooled.loc[[curve]] if curve in pooled.index else None
        if match is not None and len(match):
            first = match.iloc[0]
            row.update(
                pooled_ic50_molar=float(first.get("ic50_molar", np.nan)),
                pooled_pic50=float(first.get("pic50", np.nan)),
                pooled_flags=str(first.get("flags", "") or ""),
            )
        rows.append(row)
    return pd.DataFrame(rows)
