"""Stain drift: each field's Annexin V and PI scaled to the vehicle by its own negative cells.

Dispensing, evaporation and time move the amount of stain per well and per timepoint: a well
with 20 % more Annexin V moves its negative population 20 % closer to a gate learned on the
vehicle wells and reads more apoptotic. Every well carries negative cells (viable ones, and
in a treated well the Annexin V negative remainder), and their intensity is the well's own
gain: the well's feature is divided by ``median(well's negatives) / median(vehicle
negatives)`` of the same timepoint before gating. Negatives are the cells below the
vehicle-learned gate (:func:`~screenlib.gating._robust.estimate_negative`), which leaves
the positive population out whatever its share.

A well with few negative cells measures its gain poorly; the log ratio is shrunk towards 0
with weight ``n / (n + prior_cells)``. A well where the negatives are not the majority
keeps the plate's scale (full weight from 80 % negatives down to none at 50 %): there the
negative cells sit next to bright apoptotic membranes, whose light enters their ring, so
their intensity measures the neighbours as much as the gain (on rendered positive-control
wells, 70 % apoptotic, the viable cells' ring p90 reads 1.4x the vehicle's at equal gain).
The gain matters most where negatives dominate anyway: there false positives from the
negative population's upper tail make up the bias.
"""

from __future__ import annotations

import numpy as np

from screenlib.robust import robust_sd

#: the log gain ratio of a well with this many negatives is halved (shrunk towards no drift)
PRIOR_CELLS = 20.0
#: a well with fewer negative cells than this share keeps the plate's scale; the correction
#: grows to full weight at this share + 0.3
MIN_NEGATIVE_SHARE = 0.5
#: a well's factor stays within these bounds (beyond them the stain, not the gain, failed)
FACTOR_BOUNDS = (0.5, 2.0)


def stain_scales(
    values: np.ndarray,
    wells: np.ndarray,
    negative: np.ndarray,
    vehicle: np.ndarray,
    prior_cells: float = PRIOR_CELLS,
) -> dict[str, float]:
    """Per-well factor to divide a feature by, from each well's own negative cells.

    Parameters
    ----------
    values
        Feature of every cell (linear units, one plate and timepoint).
    wells
        Well of every cell.
    negative
        Cells taken as negative (below the vehicle-learned gate).
    vehicle
        Cells of vehicle wells.
    prior_cells
        Shrinkage of the log ratio: weight ``n / (n + prior_cells)`` for ``n`` negatives.

    Returns
    -------
    dict
        ``{well: factor}``; empty when the vehicle negatives' median is not positive (a
        feature at the noise floor has no gain to measure).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> wells = np.repeat(["A01", "A02"], 500)
    >>> values = rng.lognormal(np.log(30), 0.3, 1000) * np.where(wells == "A02", 1.25, 1.0)
    >>> scales = stain_scales(values, wells, np.ones(1000, bool), wells == "A01")
    >>> round(scales["A01"], 2), round(scales["A02"], 2)
    (1.0, 1.22)
    """
    values = np.asarray(values, dtype=float)
    wells = np.asarray(wells).astype(str)
    finite = np.isfinite(values)
    negative = np.asarray(negative, dtype=bool)
    vehicle = np.asarray(vehicle, dtype=bool) & finite
    if vehicle.sum() < 20:
        return {}
    reference = negative_median(values[vehicle], negative[vehicle])
    spread = robust_sd(values[vehicle & negative])
    if not (reference > 0 and reference > spread):
        return {}
    units, unit = np.unique(wells, return_inverse=True)
    medians, n_negatives, n_own = negative_medians(
        values[finite], unit[finite], negative[finite], units.size
    )
    scales: dict[str, float] = {}
    for k, well in enumerate(units.tolist()):
        median, n_negative = medians[k], int(n_negatives[k])
        if not median > 0:
            scales[well] = 1.0
            continue
        # in a well dominated by positive cells the negatives sit next to bright membranes
        # and their ring takes in that light: their intensity is not the well's gain
        share = n_negative / max(int(n_own[k]), 1)
        weight = (
            n_negative
            / (n_negative + prior_cells)
            * float(np.clip((share - MIN_NEGATIVE_SHARE) / 0.3, 0.0, 1.0))
        )
        factor = float(np.exp(weight * np.log(median / reference)))
        scales[well] = float(np.clip(factor, *FACTOR_BOUNDS))
    return scales


def grouped_quantiles(values: np.ndarray, groups: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The ``q[g]`` quantile of the values of each group ``g`` (NaN for an empty group), equal
    bit for bit to ``np.quantile(values[groups == g], q[g])`` (linear interpolation).

    One sort for all groups instead of a mask and a quantile per group (a 384-well plate has
    over 700 fields per timepoint).
    """
    q = np.asarray(q, dtype=np.float64)
    order = np.lexsort((values, groups))
    ordered = values[order].astype(np.float64)
    counts = np.bincount(groups, minlength=q.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    result = np.full(q.size, np.nan)
    present = counts > 0
    n, start, fraction = counts[present], starts[present], q[present]
    # numpy's "linear" method: index (n - 1) q, neighbours floor and floor + 1 (the last
    # value from n - 1 on), then lerp(a, b, t) = a + (b - a) t, or b - (b - a)(1 - t) for
    # t >= 0.5
    virtual = (n - 1) * fraction
    below = np.floor(virtual)
    last = virtual >= n - 1
    lower = np.where(last, n - 1, below).astype(np.int64)
    upper = np.where(last, n - 1, below + 1).astype(np.int64)
    gamma = virtual - np.where(last, -1.0, below)
    a, b = ordered[start + lower], ordered[start + upper]
    difference = b - a
    value = a + difference * gamma
    high = gamma >= 0.5
    value[high] = (b - difference * (1 - gamma))[high]
    result[present] = value
    return result


def negative_median(values: np.ndarray, negative: np.ndarray) -> float:
    """Median of the negative population as the ``p / 2`` quantile of all values, ``p`` the
    negative share.

    The negatives are the lower part of the values; their median is the ``p / 2`` quantile
    whatever the positives do, while a median of the cells below a gate would also take in
    the positive population's low tail (which a well with many positive cells has plenty of).
    """
    values = np.asarray(values, dtype=float)
    groups = np.zeros(values.size, dtype=np.int64)
    return float(negative_medians(values, groups, np.asarray(negative, dtype=bool), 1)[0][0])


def negative_medians(
    values: np.ndarray, groups: np.ndarray, negative: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`negative_median` of each group ``0..n_groups-1`` (NaN without negatives), from
    one sort; with each group's number of negatives and of values."""
    n_values = np.bincount(groups, minlength=n_groups)
    n_negatives = np.bincount(groups[negative], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = n_negatives / n_values  # as np.mean of each group's negative flags
    medians = np.full(n_groups, np.nan)
    counted = n_negatives > 0
    medians[counted] = grouped_quantiles(values, groups, 0.5 * shares)[counted]
    return medians, n_negatives, n_values


def drift_units(cells) -> np.ndarray:
    """The unit each cell's drift factor belongs to: ``"<well>_f<field>"``.

    A field rather than a whole well: besides the stain, focus moves a thin membrane signal
    (a field 1.8 px out of focus read its ring p90 at 0.3x on a rendered plate and still
    passed focus QC), and that differs from field to field.
    """
    if "well" not in cells.columns:
        return np.full(len(cells), "", dtype=object)
    field = cells["field"].astype(str) if "field" in cells.columns else "0"
    return (cells["well"].astype(str) + "_f" + field).to_numpy(dtype=object)


def scale_per_cell(wells: np.ndarray, scales: dict[str, float]) -> np.ndarray:
    """The factor of every cell's well (1 for wells without one)."""
    wells = np.asarray(wells).astype(str)
    if not scales:
        return np.ones(wells.size)
    names, inverse = np.unique(wells, return_inverse=True)
    return np.array([scales.get(name, 1.0) for name in names], dtype=float)[inverse]
