"""Per-well (and per-timepoint) summaries of classified cells: the table ``wells.csv``.

Fractions are over the cells of the well (debris excluded) in fields that passed image QC.
``relative_cell_count`` (:func:`relative_cell_count`) is cells per used field divided by
the median of the vehicle (``negative_control``) wells of the same sample and timepoint, so
excluded fields do not look like cell loss.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from screenlib.aggregate.mixture import MIN_VEHICLE_CELLS, MIXTURE_COLUMNS, mixture_fractions
from screenlib.aggregate.stats import spearman, wilson_interval
from screenlib.errors import InputError
from screenlib.gating.classify import CELL_CLASSES, DEBRIS
from screenlib.gating.gates import _roles
from screenlib.settings import AssaySettings, GatingSettings

_INTENSITY = re.compile(r"^[a-z0-9_]+_(nucleus|ring|cell)_(mean|p90)$")
logger = logging.getLogger(__name__)
_KEYS = ["well", "timepoint"]
#: object classes counted per well besides the quadrant classes (screenlib.gating.objects)
_OBJECT_COUNTS = ("mitotic", "fragmented")


def _row_sort_key(row: str) -> tuple[int, str]:
    return (len(str(row)), str(row))


def _settings_parts(settings: AssaySettings | GatingSettings | None) -> tuple[GatingSettings, bool]:
    if settings is None:
        return GatingSettings(), True
    if isinstance(settings, GatingSettings):
        return settings, True
    return settings.gating, settings.qc.exclude_failed_fields


def _field_summary(
    fields: pd.DataFrame | None, cells: pd.DataFrame, exclude_failed: bool
) -> tuple[pd.DataFrame, set[tuple[str, int, int]]]:
    """Per (well, timepoint): fields used / excluded and why; and the excluded field keys."""
    if fields is None or len(fields) == 0:
        used = cells.groupby(_KEYS)["field"].nunique().rename("n_fields_used").reset_index()
        used["n_fields_excluded"] = 0
        used["fields_excluded_reasons"] = ""
        return used, set()
    missing = [c for c in ("well", "field") if c not in fields.columns]
    if missing:
        raise InputError(f"field table lacks column(s) {', '.join(missing)}")
    table = fields.copy()
    if "timepoint" not in table.columns:
        table["timepoint"] = 0
    if "qc_pass" not in table.columns:
        table["qc_pass"] = True
    table["qc_pass"] = table["qc_pass"].map(
        lambda v: str(v).strip().lower() in ("true", "1", "yes") if isinstance(v, str) else bool(v)
    )
    if "qc_reason" not in table.columns:
        table["qc_reason"] = ""
    table["qc_reason"] = table["qc_reason"].fillna("").astype(str)
    table["failed"] = ~table["qc_pass"] if exclude_failed else False
    excluded = table[table["failed"]]
    excluded_keys = {
        (str(w), int(f), int(t))
        for w, f, t in zip(excluded["well"], excluded["field"], excluded["timepoint"], strict=True)
    }
    summary = table.groupby(_KEYS).agg(
        n_fields=("field", "size"), n_fields_excluded=("failed", "sum")
    )
    summary["n_fields_excluded"] = summary["n_fields_excluded"].astype(int)
    summary["n_fields_used"] = summary.pop("n_fields") - summary["n_fields_excluded"]
    # the reasons are joined only where fields failed (few), not per well
    reasons = {
        key: ";".join(
            sorted({part for text in group for part in re.split(r"[;,]\s*", text) if part})
        )
        for key, group in excluded.groupby(_KEYS)["qc_reason"]
    }
    summary["fields_excluded_reasons"] = [reasons.get(key, "") for key in summary.index]
    summary = summary.reset_index()
    summary["timepoint"] = summary["timepoint"].astype(int)
    columns = [*_KEYS, "n_fields_used", "n_fields_excluded", "fields_excluded_reasons"]
    return summary[columns], excluded_keys


def aggregate_wells(
    cells: pd.DataFrame,
    platemap: pd.DataFrame | None,
    fields: pd.DataFrame | None = None,
    settings: AssaySettings | GatingSettings | None = None,
) -> pd.DataFrame:
    """Summarise classified cells per well and timepoint (the ``wells.csv`` table).

    Parameters
    ----------
    cells
        Per-cell table after :func:`~screenlib.gating.classify_cells` (``well``, ``field``,
        ``timepoint``, ``cell_class``, ``*_positive``, intensity columns).
    platemap
        Plate map (``well``, ``row``, ``column``, ``sample``, ``compound``,
        ``concentration_molar``, ``role`` and any extra columns). Every well it names gets a
        row, with ``n_cells`` 0 when it holds no cells.
    fields
        Per-field QC table (``well``, ``field``, ``timepoint``, ``qc_pass``, ``qc_reason``);
        cells of failed fields are left out when ``qc.exclude_failed_fields``.
    settings
        Assay settings (or just the gating section): ``gating.min_cells_per_well``.

    Returns
    -------
    pandas.DataFrame
        One row per well and timepoint; see ``docs/architecture.md``. ``qc_flags`` holds
        ``;``-separated flags: ``empty_well``, ``no_cells``, ``too_few_cells``,
        ``fields_excluded``, ``no_fields_used``, ``not_in_platemap``, ``no_vehicle_reference``,
        ``vehicle_of_other_samples`` (relative count against all vehicle wells),
        ``vehicle_reference_excluded`` (a vehicle well with under half the median vehicle
        well's cells per field, left out of the relative-count references) and
        ``expected_cell_loss`` (few cells where the biology predicts them: a positive control,
        or a dose on a dose-dependent loss of cells; informational, not a failure).

    Examples
    --------
    >>> from screenlib.gating.synthetic_cells import simulate_cell_table, example_platemap
    >>> from screenlib.gating import learn_gates, classify_cells
    >>> platemap = example_platemap()
    >>> cells = simulate_cell_table(platemap, seed=1)
    >>> cells = classify_cells(cells, learn_gates(cells, platemap, GatingSettings()),
    ...                        GatingSettings())
    >>> wells = aggregate_wells(cells, platemap)
    >>> len(wells), wells.loc[wells.well == "H12", "n_cells"].item()
    (96, 0)
    """
    gating, exclude_failed = _settings_parts(settings)
    missing = [c for c in ("well", "cell_class") if c not in cells.columns]
    if missing:
        raise InputError(
            f"per-cell table lacks {', '.join(missing)}; classify the cells first "
            "(screenlib.gating.classify_cells)"
        )
    cells = cells.copy()
    if "timepoint" not in cells.columns:
        cells["timepoint"] = 0
    if "field" not in cells.columns:
        cells["field"] = 0
    cells["well"] = cells["well"].astype(str)
    cells["timepoint"] = cells["timepoint"].astype(int)

    field_summary, excluded_keys = _field_summary(fields, cells, exclude_failed)
    if excluded_keys:
        keys = pd.MultiIndex.from_arrays(
            [cells["well"], cells["field"].astype(int), cells["timepoint"]]
        )
        cells = cells[~keys.isin(list(excluded_keys))]

    # Every (well, timepoint) that the plate map, the fields or the cells know of.
    timepoints = sorted(
        set(cells["timepoint"].tolist())
        | (set(field_summary["timepoint"].astype(int).tolist()) if len(field_summary) else set())
    ) or [0]
    plate_wells = [] if platemap is None else platemap["well"].astype(str).tolist()
    data_wells = sorted(set(cells["well"].unique()) | set(field_summary["well"].astype(str)))
    all_wells = plate_wells + [w for w in data_wells if w not in set(plate_wells)]
    frame = pd.DataFrame([(w, t) for t in timepoints for w in all_wells], columns=_KEYS)

    classes = cells["cell_class"].astype(str)
    counts = _sum_per_well(cells, _label_counts(classes, [*CELL_CLASSES, DEBRIS]))
    frame = frame.merge(counts, on=_KEYS, how="left")
    frame = frame.merge(_object_counts(cells), on=_KEYS, how="left")
    count_columns = [
        f"n_{c}" for c in (*CELL_CLASSES, DEBRIS, *_OBJECT_COUNTS, "fragment", "unsplit_nuclei")
    ]
    frame[count_columns] = frame[count_columns].fillna(0).astype(int)
    # the further pieces of a fragmented nucleus are part of a counted cell, not debris
    frame[f"n_{DEBRIS}"] -= frame.pop("n_fragment")
    frame["n_cells"] = frame[[f"n_{c}" for c in CELL_CLASSES]].sum(axis=1)
    # an object standing for several touching nuclei the segmentation did not split has one
    # class call; its nuclei count in n_nuclei (and the relative cell count), not in n_cells
    frame["n_nuclei"] = frame["n_cells"] + frame.pop("n_unsplit_nuclei")
    n = frame["n_cells"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in CELL_CLASSES:
            frame[f"fraction_{name}"] = np.where(n > 0, frame[f"n_{name}"] / n, np.nan)
        n_objects = n + frame[f"n_{DEBRIS}"].to_numpy(dtype=float)
        frame[f"fraction_{DEBRIS}"] = np.where(
            n_objects > 0, frame[f"n_{DEBRIS}"] / n_objects, np.nan
        )
    frame["n_apoptotic"] = frame["n_early_apoptotic"] + frame["n_late_apoptotic"]
    frame["apoptotic_fraction"] = np.where(n > 0, frame["n_apoptotic"] / np.maximum(n, 1), np.nan)
    low, high = wilson_interval(frame["n_apoptotic"].to_numpy(), n)
    frame["apoptotic_fraction_ci_low"] = low
    frame["apoptotic_fraction_ci_high"] = high

    # Positive calls of single stains (annexin_positive, pi_positive, plugin markers).
    whole = cells[classes != DEBRIS]
    positive_columns = [
        c for c in cells.columns if c.endswith("_positive") and cells[c].dtype == bool
    ]
    if positive_columns:
        positives = whole.groupby(_KEYS)[positive_columns].sum().reset_index()
        positives.columns = [*_KEYS, *(f"n_{c}" for c in positive_columns)]
        frame = frame.merge(positives, on=_KEYS, how="left")
        for column in positive_columns:
            frame[f"n_{column}"] = frame[f"n_{column}"].fillna(0).astype(int)
            frame[f"fraction_{column}"] = np.where(
                n > 0, frame[f"n_{column}"] / np.maximum(n, 1), np.nan
            )

    annexin_column = (
        "annexin_normalized" if "annexin_normalized" in whole.columns else gating.annexin_feature
    )
    mixture, models = _mixture_table(whole, platemap, annexin_column)
    frame = frame.merge(mixture, on=_KEYS, how="left")

    intensity_columns = [c for c in cells.columns if _INTENSITY.match(c) or c == "pi_compensated"]
    if intensity_columns:
        means = whole.groupby(_KEYS)[intensity_columns].mean().reset_index()
        means.columns = [*_KEYS, *(f"mean_{c}" for c in intensity_columns)]
        frame = frame.merge(means, on=_KEYS, how="left")

    frame = frame.merge(field_summary, on=_KEYS, how="left")
    frame["n_fields_used"] = frame["n_fields_used"].fillna(0).astype(int)
    frame["n_fields_excluded"] = frame["n_fields_excluded"].fillna(0).astype(int)
    frame["fields_excluded_reasons"] = frame["fields_excluded_reasons"].fillna("")

    if platemap is not None:
        map_columns = [c for c in platemap.columns if c not in ("timepoint",)]
        frame = frame.merge(platemap[map_columns].astype({"well": str}), on="well", how="left")
    else:
        frame["role"] = "sample"
        frame["sample"] = ""
    if "row" not in frame.columns or frame["row"].isna().any():
        parsed = frame["well"].str.extract(r"^([A-Za-z]+)(\d+)$")
        frame["row"] = frame.get("row", pd.Series(index=frame.index, dtype=object)).fillna(
            parsed[0]
        )
        frame["column"] = frame.get("column", pd.Series(index=frame.index, dtype=float)).fillna(
            parsed[1].astype(float)
        )
    frame["column"] = frame["column"].astype(int)

    _relative_cell_count(frame)
    frame["_expected_loss"] = _expected_cell_loss(frame)
    frame["qc_flags"] = [
        _flags(
            row, gating.min_cells_per_well, platemap is not None and row["well"] not in plate_wells
        )
        for row in frame.to_dict("records")
    ]
    if "plate" in cells.columns and cells["plate"].nunique() == 1 and "plate" not in frame:
        frame.insert(0, "plate", cells["plate"].iloc[0])  # (a plate map's own plate column wins)

    frame["_row_key"] = frame["row"].map(_row_sort_key)
    frame = frame.sort_values(["timepoint", "_row_key", "column"], ignore_index=True).drop(
        columns="_row_key"
    )
    frame = frame[_ordered_columns(frame, platemap)]
    frame.attrs["annexin_mixture"] = models
    return frame


def _mixture_table(
    cells: pd.DataFrame, platemap: pd.DataFrame | None, annexin_feature: str
) -> tuple[pd.DataFrame, dict[int, dict[str, Any]]]:
    """``MIXTURE_COLUMNS`` per (well, timepoint) and, per timepoint, the fitted model.

    The model needs vehicle wells (plate-map role ``negative_control``) and the Annexin V
    feature; without them the columns are NaN and the model entry says why.
    """
    columns = [*_KEYS, *MIXTURE_COLUMNS]
    if annexin_feature not in cells.columns or platemap is None or "role" not in platemap:
        reason = (
            f"no column {annexin_feature!r} in the per-cell table"
            if annexin_feature not in cells.columns
            else "no plate map roles: the vehicle (negative_control) wells are unknown"
        )
        models = {int(t): {"unavailable": reason} for t in cells["timepoint"].unique()}
        return pd.DataFrame(columns=columns), models
    parts, models = [], {}
    for timepoint, group in cells.groupby("timepoint"):
        pi_positive = (
            group["pi_positive"].to_numpy(dtype=bool)
            if "pi_positive" in group
            else np.zeros(len(group), dtype=bool)
        )
        table, model = mixture_fractions(
            group[annexin_feature].to_numpy(dtype=float),
            pi_positive,
            group["well"].to_numpy(),
            _roles(group, platemap) == "negative_control",
        )
        parts.append(table.assign(timepoint=int(timepoint)))
        models[int(timepoint)] = (
            model.summary()
            if model is not None
            else {
                "unavailable": f"fewer than {MIN_VEHICLE_CELLS} vehicle cells or no Annexin V "
                "positive population separate from them"
            }
        )
    if not parts:
        return pd.DataFrame(columns=columns), models
    return pd.concat(parts, ignore_index=True)[columns], models


def _label_counts(labels: pd.Series, names: list[str]) -> dict[str, np.ndarray]:
    """``n_<name>``: 1 for the rows whose label is ``name``, else 0 (to sum per well)."""
    labels = labels.to_numpy()
    return {f"n_{name}": (labels == name).astype(np.int64) for name in names}


def _sum_per_well(cells: pd.DataFrame, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The sums of per-cell ``columns`` per (well, timepoint) that holds cells."""
    keys = [cells[key].to_numpy() for key in _KEYS]
    return pd.DataFrame(columns).groupby(keys).sum().rename_axis(_KEYS).reset_index()


def _object_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """``n_mitotic``, ``n_fragmented`` (cells) and ``n_fragment`` (further pieces) per well,
    and ``n_unsplit_nuclei`` (the further nuclei of unsplit clumps)."""
    names = [*_OBJECT_COUNTS, "fragment"]
    cell_rows = (cells["cell_class"].astype(str) != DEBRIS).to_numpy()
    extra = (
        np.where(cell_rows, np.maximum(cells["n_nuclei"].to_numpy(dtype=float) - 1, 0), 0)
        if "n_nuclei" in cells.columns
        else np.zeros(len(cells))
    )
    if "object_class" not in cells.columns:
        unsplit = _sum_per_well(cells, {"n_unsplit_nuclei": extra})
        return unsplit.assign(**{f"n_{name}": 0 for name in names})
    classes = cells["object_class"].astype(str)
    counted = classes.where(cell_rows | (classes == "fragment"), "")
    return _sum_per_well(cells, {**_label_counts(counted, names), "n_unsplit_nuclei": extra})


#: a vehicle well with fewer cells per field than this share of the timepoint's median
#: vehicle well failed to seed and is left out of every relative-count reference
SEEDING_FAILURE = 0.5


def relative_cell_count(wells: pd.DataFrame) -> pd.Series:
    """The relative cell count of every well: THE definition the package uses.

    Cells per used field (``n_nuclei / n_fields_used``: the cells of the well counting each
    nucleus of an unsplit clump, :mod:`screenlib.gating.objects`; ``n_cells`` without an
    ``n_nuclei`` column, and the count alone when the table has no ``n_fields_used``)
    divided by the median of the vehicle wells (role ``negative_control``, or concentration
    0 without roles) of the same sample and timepoint;
    a sample without vehicle wells of its own is compared with all vehicle wells of the
    timepoint. A vehicle well with fewer than ``SEEDING_FAILURE`` (half) the cells per field
    of the timepoint's median vehicle well failed to seed and is left out of the references
    (with two vehicle wells per sample one such well would otherwise halve the reference).

    Parameters
    ----------
    wells
        One row per well (and timepoint): ``n_cells``, ``role`` or ``concentration_molar``,
        optional ``n_fields_used``, ``sample`` and ``timepoint``.

    Returns
    -------
    pandas.Series
        Aligned with ``wells``; NaN without a usable reference.

    Examples
    --------
    >>> wells = pd.DataFrame({"sample": ["a"] * 4, "n_cells": [100, 96, 10, 50],
    ...                       "role": ["negative_control"] * 3 + ["sample"]})
    >>> relative_cell_count(wells).round(2).tolist()
    [1.02, 0.98, 0.1, 0.51]
    """
    return _count_references(wells)["relative_cell_count"]


def _count_references(wells: pd.DataFrame) -> pd.DataFrame:
    """Cells per field, relative count, and how each well's reference was found."""
    counted = "n_nuclei" if "n_nuclei" in wells.columns else "n_cells"
    n_cells = pd.to_numeric(wells[counted], errors="coerce").to_numpy(dtype=float)
    used = (
        pd.to_numeric(wells["n_fields_used"], errors="coerce").to_numpy(dtype=float)
        if "n_fields_used" in wells.columns
        else np.ones(len(wells))
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        per_field = np.where(used > 0, n_cells / used, np.nan)
    if "role" in wells.columns:
        vehicle = (wells["role"].astype(str) == "negative_control").to_numpy()
    else:
        vehicle = (pd.to_numeric(wells["concentration_molar"], errors="coerce") == 0).to_numpy()
    vehicle = vehicle & np.isfinite(per_field)
    sample = (
        wells["sample"].fillna("").astype(str).to_numpy()
        if "sample" in wells.columns
        else np.full(len(wells), "")
    )
    timepoint = (
        wells["timepoint"].to_numpy() if "timepoint" in wells.columns else np.zeros(len(wells))
    )
    reference = np.full(len(wells), np.nan)
    fallback = np.zeros(len(wells), dtype=bool)
    excluded = np.zeros(len(wells), dtype=bool)
    for tp in pd.unique(timepoint):
        at_tp = timepoint == tp
        typical = np.nanmedian(per_field[vehicle & at_tp]) if (vehicle & at_tp).any() else np.nan
        excluded |= vehicle & at_tp & (per_field < SEEDING_FAILURE * typical)
        kept = vehicle & at_tp & ~excluded
        pooled = np.median(per_field[kept]) if kept.any() else np.nan
        for name in pd.unique(sample[at_tp]):
            here = at_tp & (sample == name)
            own = per_field[kept & here]
            reference[here] = np.median(own) if own.size else pooled
            fallback[here] = not own.size and np.isfinite(pooled)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(reference > 0, per_field / reference, np.nan)
    return pd.DataFrame(
        {
            "cells_per_field": per_field,
            "relative_cell_count": relative,
            "vehicle_reference_excluded": excluded,
            "_vehicle_fallback": fallback,
            "_no_vehicle": ~np.isfinite(reference),
        },
        index=wells.index,
    )


def _relative_cell_count(frame: pd.DataFrame) -> None:
    """Cells per used field, relative to the vehicle median of the same sample and timepoint."""
    references = _count_references(frame)
    for column in references.columns:
        frame[column] = references[column]
    for row in frame.loc[frame["vehicle_reference_excluded"], ["well", "timepoint"]].itertuples():
        message = (
            f"vehicle well {row.well} (timepoint {row.timepoint}) has under "
            f"{SEEDING_FAILURE:.0%} of the median vehicle well's cells per field (seeding "
            "failure?): left out of the relative-cell-count reference "
            "(wells.csv vehicle_reference_excluded)"
        )
        logger.warning(message)
        warnings.warn(message, stacklevel=3)


def _decreasing_fit(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-increasing fit (pool adjacent violators), in input order."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([float(value), float(weight), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            mean_b, weight_b, length_b = blocks.pop()
            mean_a, weight_a, length_a = blocks[-1]
            total = weight_a + weight_b
            pooled = (mean_a * weight_a + mean_b * weight_b) / total
            blocks[-1] = [pooled, total, length_a + length_b]
    return np.concatenate([np.full(int(length), mean) for mean, _, length in blocks])


def _expected_cell_loss(frame: pd.DataFrame, alpha: float = 0.05) -> np.ndarray:
    """True where few cells is the expected biology rather than a technical failure.

    A positive control kills cells by design. A sample well is expected to be sparse when its
    dilution series loses cells with dose (Spearman correlation of ``relative_cell_count``
    with log dose, vehicle wells of the sample at the low end, negative with p < ``alpha``)
    and the well holds at least half of what the series' monotone (non-increasing) dose curve
    predicts at its dose. A sparse well off that curve (a bubble, a pipetting miss) or in a
    series without dose-dependent loss stays a technical ``too_few_cells``.
    """
    role = frame["role"].astype(str).to_numpy()
    imaged = frame["n_fields_used"].to_numpy() > 0
    expected = (role == "positive_control") & imaged
    if not {"sample", "compound", "concentration_molar"} <= set(frame.columns):
        return expected
    relative = frame["relative_cell_count"].to_numpy(dtype=float)
    concentration = pd.to_numeric(frame["concentration_molar"], errors="coerce").to_numpy()
    usable = imaged & np.isfinite(relative)
    treated = usable & (role == "sample") & (concentration > 0)
    vehicle = usable & (role == "negative_control")
    sample = frame["sample"].fillna("").astype(str).to_numpy()
    timepoint = frame["timepoint"].to_numpy()
    series_keys = frame.loc[treated, ["sample", "compound", "timepoint"]].drop_duplicates()
    for name, compound, tp in series_keys.itertuples(index=False):
        doses = treated & (sample == str(name)) & (frame["compound"] == compound).to_numpy()
        doses &= timepoint == tp
        controls = vehicle & (sample == str(name)) & (timepoint == tp)
        log_dose = np.log10(concentration[doses])
        x = np.concatenate([np.full(controls.sum(), log_dose.min() - 1.0), log_dose])
        y = np.concatenate([relative[controls], relative[doses]])
        if np.unique(x).size < 3:
            continue
        rho, p_value = spearman(x, y)
        if not (rho < 0 and p_value < alpha):
            continue
        levels, inverse = np.unique(x, return_inverse=True)
        medians = np.array([np.median(y[inverse == i]) for i in range(levels.size)])
        weights = np.bincount(inverse).astype(float)
        curve = dict(zip(levels, _decreasing_fit(medians, weights), strict=True))
        predicted = np.array([curve[v] for v in log_dose])
        expected[np.flatnonzero(doses)] |= relative[doses] >= 0.5 * predicted
    return expected


def _flags(row: dict[str, Any], min_cells: int, not_in_platemap: bool) -> str:
    flags = []
    if not_in_platemap:
        flags.append("not_in_platemap")
    if str(row.get("role")) == "empty":
        flags.append("empty_well")
    if row["n_fields_used"] == 0:
        flags.append("no_fields_used")
    if row["n_cells"] < min_cells and row.get("_expected_loss", False):
        flags.append("expected_cell_loss")  # the biology, not the assay: shown, not failed
    elif row["n_cells"] == 0:
        flags.append("no_cells")
    elif row["n_cells"] < min_cells:
        flags.append("too_few_cells")
    if row["n_fields_excluded"] > 0:
        flags.append("fields_excluded")
    if row.get("vehicle_reference_excluded", False):
        flags.append("vehicle_reference_excluded")  # a seeding failure: not a count reference
    if row["_no_vehicle"] and str(row.get("role")) != "empty":
        flags.append("no_vehicle_reference")
    elif row["_vehicle_fallback"]:
        flags.append("vehicle_of_other_samples")
    return ";".join(flags)


def _ordered_columns(frame: pd.DataFrame, platemap: pd.DataFrame | None) -> list[str]:
    head = [c for c in ("plate", "well", "row", "column", "timepoint") if c in frame.columns]
    map_columns = (
        [c for c in platemap.columns if c not in (*head, "timepoint")]
        if platemap is not None
        else [c for c in ("sample", "role") if c in frame.columns]
    )
    counts = [
        "n_cells",
        "n_nuclei",
        *(f"n_{c}" for c in CELL_CLASSES),
        f"n_{DEBRIS}",
        *(f"n_{c}" for c in _OBJECT_COUNTS),
    ]
    fractions = [*(f"fraction_{c}" for c in CELL_CLASSES), f"fraction_{DEBRIS}"]
    apoptotic = [
        "n_apoptotic",
        "apoptotic_fraction",
        "apoptotic_fraction_ci_low",
        "apoptotic_fraction_ci_high",
        *MIXTURE_COLUMNS,
        "cells_per_field",
        "relative_cell_count",
        "vehicle_reference_excluded",
    ]
    positives = [c for c in frame.columns if c.startswith(("n_", "fraction_")) and c.endswith(
        "_positive")]  # fmt: skip
    means = [c for c in frame.columns if c.startswith("mean_")]
    tail = ["n_fields_used", "n_fields_excluded", "fields_excluded_reasons", "qc_flags"]
    ordered = [*head, *map_columns, *counts, *fractions, *apoptotic, *positives, *means, *tail]
    seen: set[str] = set()
    return [c for c in ordered if c in frame.columns and not (c in seen or seen.add(c))]
