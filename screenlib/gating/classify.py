"""Per-cell classes from quadrant gates: viable, early/late apoptotic, necrotic, debris.

Annexin V-/PI- viable; Annexin V+/PI- early apoptotic; Annexin V+/PI+ late apoptotic
(secondary necrotic); Annexin V-/PI+ necrotic. Objects that are not whole cells are called
``debris`` with an ``exclusion_reason``:

* ``small_area``: ``area_um2 < gating.min_area_um2`` (fragments, apoptotic bodies), except
  the piece standing for a fragmented nucleus;
* ``not_a_nucleus``: object class ``debris`` (too small and too little DNA for a nucleus at
  the plate's vehicle scale, :mod:`screenlib.gating.objects`);
* ``fragment``: a further piece of a fragmented nucleus (the nucleus is counted once);
* ``no_nuclear_signal``: nuclear-stain integrated intensity <= 0 (not a nucleus);
* ``missing_measurement``: a gating feature is NaN;
* ``touches_border``: nucleus cut by the field border (only with
  ``gating.exclude_border_cells``);
* ``debris`` / ``doublet``: flow events outside the scatter gate (column
  ``scatter_exclusion``, written by :func:`screenlib.flow.flow_tables`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from screenlib.errors import InputError
from screenlib.gating.drift import drift_units, scale_per_cell
from screenlib.gating.gates import Gates, _require_columns, too_small
from screenlib.gating.objects import ObjectScale, classify_objects
from screenlib.robust import robust_sd
from screenlib.settings import GatingSettings

CELL_CLASSES = ("viable", "early_apoptotic", "late_apoptotic", "necrotic")
DEBRIS = "debris"


def classify_cells(
    cells: pd.DataFrame, gates: Mapping[int, Gates], settings: GatingSettings
) -> pd.DataFrame:
    """Add ``annexin_positive``, ``pi_positive``, ``cell_class`` and ``exclusion_reason``.

    Parameters
    ----------
    cells
        Per-cell table (``timepoint``, ``area_um2`` and the gated features).
    gates
        Gates per timepoint, from :func:`~screenlib.gating.learn_gates` or manual.
    settings
        Gating settings (debris rules).

    Returns
    -------
    pandas.DataFrame
        A copy of ``cells`` with the new columns, plus ``pi_compensated`` and one
        ``<stain>_positive`` column per marker gate.

    Examples
    --------
    >>> import pandas as pd
    >>> from screenlib.gating.gates import Gates
    >>> g = {0: Gates(0, "annexin_v_ring_p90", "pi_nucleus_mean", 100.0, 50.0, 0.0, "manual", 0)}
    >>> cells = pd.DataFrame({"timepoint": [0, 0, 0], "area_um2": [80.0, 80.0, 3.0],
    ...                       "annexin_v_ring_p90": [20.0, 300.0, 20.0],
    ...                       "pi_nucleus_mean": [5.0, 400.0, 5.0]})
    >>> classify_cells(cells, g, GatingSettings())["cell_class"].tolist()
    ['viable', 'late_apoptotic', 'debris']
    """
    out = cells.copy()
    timepoint = (
        out["timepoint"].to_numpy(dtype=int)
        if "timepoint" in out.columns
        else np.zeros(len(out), dtype=int)
    )
    missing = sorted(set(timepoint.tolist()) - set(gates))
    if missing:
        raise InputError(
            f"no gates for timepoint(s) {missing}; gates exist for {sorted(gates)} — learn gates "
            "on the same per-cell table (learn_gates) or give manual gates for every timepoint"
        )
    annexin_positive = np.zeros(len(out), dtype=bool)
    pi_positive = np.zeros(len(out), dtype=bool)
    pi_compensated = np.full(len(out), np.nan)
    annexin_normalized = np.full(len(out), np.nan)
    wells = drift_units(out)
    scales = {
        tp: ObjectScale(**{k: np.inf if v is None else v for k, v in gate.object_scale.items()})
        for tp, gate in gates.items()
        if gate.object_scale
    }
    object_class = (
        classify_objects(out, scales, settings)
        if scales and settings.classify_objects
        else out.assign(object_class="cell", fragment_of=-1)
    )
    markers: dict[str, np.ndarray] = {}
    missing_measurement = np.zeros(len(out), dtype=bool)
    for tp in sorted(set(timepoint.tolist())):
        gate = gates[tp]
        columns = [gate.annexin_feature, gate.pi_feature]
        if gate.bleedthrough_annexin_to_pi:
            columns.append(gate.bleedthrough_feature)
        _require_columns(out, columns, "per-cell table")
        here = timepoint == tp
        drift = {
            stain: scale_per_cell(
                wells[here],
                {w: f[stain] for w, f in gate.stain_scales.items() if stain in f},
            )
            for stain in ("annexin", "pi")
        }
        annexin = out.loc[here, gate.annexin_feature].to_numpy(dtype=float) / drift["annexin"]
        pi = out.loc[here, gate.pi_feature].to_numpy(dtype=float)
        compensated = pi.copy()
        if gate.bleedthrough_annexin_to_pi:
            leaking = np.nan_to_num(out.loc[here, gate.bleedthrough_feature].to_numpy(dtype=float))
            compensated -= gate.bleedthrough_annexin_to_pi * leaking
        compensated /= drift["pi"]
        pi_compensated[here] = compensated
        annexin_normalized[here] = annexin
        annexin = _group_maximum(annexin, object_class.loc[here])
        annexin_positive[here] = annexin > gate.annexin_gate
        pi_positive[here] = compensated > gate.pi_gate
        missing_measurement[here] = ~(np.isfinite(annexin) & np.isfinite(pi))
        for stain, marker in gate.marker_gates.items():
            _require_columns(out, [marker["feature"]], "per-cell table")
            values = out.loc[here, marker["feature"]].to_numpy(dtype=float)
            markers.setdefault(stain, np.zeros(len(out), dtype=bool))[here] = (
                values > marker["gate"]
            )

    cell_class = np.select(
        [
            annexin_positive & pi_positive,
            annexin_positive,
            pi_positive,
        ],
        ["late_apoptotic", "early_apoptotic", "necrotic"],
        default="viable",
    ).astype(object)
    reason = np.full(len(out), "", dtype=object)
    # Later rules win, so the most basic reason (size) is the one reported.
    if settings.exclude_border_cells and "touches_border" in out.columns:
        reason[out["touches_border"].fillna(False).to_numpy(dtype=bool)] = "touches_border"
    reason[missing_measurement] = "missing_measurement"
    nuclear = [c for c in ("hoechst_nucleus_integrated",) if c in out.columns]
    if nuclear:
        reason[~(out[nuclear[0]].to_numpy(dtype=float) > 0)] = "no_nuclear_signal"
    objects = object_class["object_class"].astype(str).to_numpy()
    reason[objects == "debris"] = "not_a_nucleus"
    reason[objects == "fragment"] = "fragment"
    reason[too_small(out, settings) & (objects != "fragmented")] = "small_area"
    if "scatter_exclusion" in out.columns:  # flow events: "debris" or "doublet" by scatter
        scatter = out["scatter_exclusion"].fillna("").astype(str).to_numpy(dtype=object)
        reason[scatter != ""] = scatter[scatter != ""]
    cell_class[reason != ""] = DEBRIS

    out["object_class"] = object_class["object_class"]
    out["fragment_of"] = object_class["fragment_of"].to_numpy()
    out["n_nuclei"] = np.where(
        cell_class == DEBRIS, 0, object_class.get("n_nuclei", pd.Series(1, index=out.index))
    ).astype(np.int64)
    out["annexin_normalized"] = annexin_normalized
    out["pi_compensated"] = pi_compensated
    out["annexin_positive"] = annexin_positive
    out["pi_positive"] = pi_positive
    for stain, positive in markers.items():
        out[f"{stain}_positive"] = positive
    out["cell_class"] = pd.Categorical(cell_class, categories=[*CELL_CLASSES, DEBRIS])
    out["exclusion_reason"] = reason
    return out


def _group_maximum(annexin: np.ndarray, objects: pd.DataFrame) -> np.ndarray:
    """Annexin V of a fragmented nucleus' standing piece: the highest of all its pieces.

    The membrane of a karyorrhectic cell surrounds all its pieces; the ring of each piece
    sees only the part of it nearest to that piece.
    """
    pieces = objects["fragment_of"].to_numpy() >= 0
    if not pieces.any() or "label" not in objects.columns:
        return annexin
    keys = [c for c in ("well", "field") if c in objects.columns]
    lead = np.where(pieces, objects["fragment_of"].to_numpy(), objects["label"].to_numpy())
    table = objects[keys].assign(_lead=lead, _annexin=annexin)
    highest = table.groupby([*keys, "_lead"])["_annexin"].transform("max").to_numpy()
    standing = (objects["object_class"].astype(str) == "fragmented").to_numpy()
    return np.where(standing, highest, annexin)


def feature_separation(values: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """How well one feature separates truly positive from truly negative cells.

    Parameters
    ----------
    values
        Per-cell feature (e.g. ``annexin_v_ring_mean`` or ``annexin_v_ring_p90``).
    positive
        Boolean truth per cell (e.g. Annexin V positive = early or late apoptotic).

    Returns
    -------
    dict
        ``auc``: probability that a positive cell has the larger value (Mann-Whitney);
        ``robust_d``: difference of medians of ``log(max(x, floor))`` over the root sum of
        squared robust SDs (1.4826 x MAD); ``best_accuracy``: accuracy of the best single
        threshold.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    >>> feature_separation(x, x > 5)["auc"]
    1.0
    """
    values = np.asarray(values, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    keep = np.isfinite(values)
    values, positive = values[keep], positive[keep]
    pos, neg = values[positive], values[~positive]
    if pos.size == 0 or neg.size == 0:
        return {"auc": float("nan"), "robust_d": float("nan"), "best_accuracy": float("nan")}
    from scipy import stats  # here: a run never ranks features, and the import takes 1.3 s

    u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    auc = float(u / (pos.size * neg.size))
    floor = max(np.quantile(values, 0.01), 1e-3 * np.quantile(np.abs(values), 0.99), 1e-12)
    log_pos, log_neg = np.log(np.maximum(pos, floor)), np.log(np.maximum(neg, floor))

    denominator = np.hypot(robust_sd(log_pos), robust_sd(log_neg))
    robust_d = (
        float((np.median(log_pos) - np.median(log_neg)) / denominator)
        if denominator
        else float("inf")
    )
    order = np.argsort(values)
    sorted_positive = positive[order]
    # Threshold after position i: negatives at or below, positives above.
    negatives_below = np.concatenate([[0], np.cumsum(~sorted_positive)])
    positives_above = pos.size - np.concatenate([[0], np.cumsum(sorted_positive)])
    best_accuracy = float(np.max(negatives_below + positives_above) / values.size)
    return {"auc": auc, "robust_d": robust_d, "best_accuracy": best_accuracy}


def compare_annexin_features(
    cells: pd.DataFrame,
    truth_column: str = "true_class",
    features: tuple[str, ...] = ("annexin_v_ring_mean", "annexin_v_ring_p90"),
) -> pd.DataFrame:
    """Separation of truly Annexin-positive (early + late apoptotic) cells per feature.

    Returns one row per feature with :func:`feature_separation`'s measures, best first (AUC).
    """
    _require_columns(cells, [truth_column, *features], "per-cell table with truth")
    truth = cells[truth_column].astype(str)
    keep = truth.isin(CELL_CLASSES).to_numpy()
    positive = truth.isin(["early_apoptotic", "late_apoptotic"]).to_numpy()[keep]
    rows = []
    for feature in features:
        measures = feature_separation(cells[feature].to_numpy(dtype=float)[keep], positive)
        rows.append({"feature": feature, "n_cells": int(keep.sum()), **measures})
    return pd.DataFrame(rows).sort_values("auc", ascending=False, ignore_index=True)


def is_counted(cells: pd.DataFrame) -> np.ndarray:
    """True for the objects behind a run's cell counts and fractions.

    The one definition used by the tables, the report and the command line: a counted cell
    has no ``exclusion_reason`` (it is not debris, not a further piece of a fragmented
    nucleus, and not in a field left out by image QC). A table without the column (before
    classification) counts every object.
    """
    if "exclusion_reason" not in cells.columns:
        return np.ones(len(cells), dtype=bool)
    reason = cells["exclusion_reason"].fillna("").astype(str).str.strip()
    return np.array(reason == "", dtype=bool)  # a writable copy: callers combine masks in place
