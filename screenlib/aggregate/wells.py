"""Per-well (and per-timepoint) summaries of classified cells: the table ``wells.csv``.

Fractions are over the cells of the well (debris excluded) in fields that passed image QC.
``relative_cell_count`` is cells per used field divided by the median of the vehicle
(``negative_control``) wells of the same sample and timepoint, so excluded fields do not
look like cell loss.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from screenlib.aggregate.mixture import MIN_VEHICLE_CELLS, MIXTURE_COLUMNS, mixture_fractions
from screenlib.aggregate.stats import wilson_interval
from screenlib.errors import InputError
from screenlib.gating.classify import CELL_CLASSES, DEBRIS
from screenlib.gating.gates import _roles
from screenlib.settings import AssaySettings, GatingSettings

_INTENSITY = re.compile(r"^[a-z0-9_]+_(nucleus|ring|cell)_(mean|p90)$")
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
    excluded = table[~table["qc_pass"]] if exclude_failed else table.iloc[0:0]
    excluded_keys = {
        (str(w), int(f), int(t))
        for w, f, t in zip(excluded["well"], excluded["field"], excluded["timepoint"], strict=True)
    }
    rows = []
    for (well, tp), group in table.groupby(_KEYS):
        failed = group[~group["qc_pass"]] if exclude_failed else group.iloc[0:0]
        reasons = sorted(
            {part for text in failed["qc_reason"] for part in re.split(r"[;,]\s*", text) if part}
        )
        rows.append(
            {
                "well": well,
                "timepoint": int(tp),
                "n_fields_used": int(len(group) - len(failed)),
                "n_fields_excluded": int(len(failed)),
                "fields_excluded_reasons": ";".join(reasons),
            }
        )
    return pd.DataFrame(rows, columns=[*_KEYS, "n_fields_used", "n_fields_excluded",
                                       "fields_excluded_reasons"]), excluded_keys  # fmt: skip


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
        ``vehicle_of_other_samples`` (relative count against all vehicle wells).

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
        keys = list(zip(cells["well"], cells["field"].astype(int), cells["timepoint"], strict=True))
        cells = cells[[key not in excluded_keys for key in keys]]

    # Every (well, timepoint) that the plate map, the fields or the cells know of.
    timepoints = sorted(
        set(cells["timepoint"].tolist())
        | (set(field_summary["timepoint"].astype(int).tolist()) if len(field_summary) else set())
    ) or [0]
    plate_wells = [] if platemap is None else platemap["well"].astype(str).tolist()
    data_wells = sorted(set(cells["well"]) | set(field_summary["well"].astype(str)))
    all_wells = plate_wells + [w for w in data_wells if w not in set(plate_wells)]
    frame = pd.DataFrame([(w, t) for t in timepoints for w in all_wells], columns=_KEYS)

    classes = cells["cell_class"].astype(str)
    counts = (
        pd.crosstab([cells["well"], cells["timepoint"]], classes)
        .reindex(columns=[*CELL_CLASSES, DEBRIS], fill_value=0)
        .add_prefix("n_")
        .reset_index()
    )
    frame = frame.merge(counts, on=_KEYS, how="left")
    frame = frame.merge(_object_counts(cells), on=_KEYS, how="left")
    count_columns = [f"n_{c}" for c in (*CELL_CLASSES, DEBRIS, *_OBJECT_COUNTS, "fragment")]
    frame[count_columns] = frame[count_columns].fillna(0).astype(int)
    # the further pieces of a fragmented nucleus are part of a counted cell, not debris
    frame[f"n_{DEBRIS}"] -= frame.pop("n_fragment")
    frame["n_cells"] = frame[[f"n_{c}" for c in CELL_CLASSES]].sum(axis=1)
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
    frame["qc_flags"] = [
        _flags(
            row, gating.min_cells_per_well, platemap is not None and row["well"] not in plate_wells
        )
        for row in frame.to_dict("records")
    ]
    if "plate" in cells.columns and cells["plate"].nunique() == 1:
        frame.insert(0, "plate", cells["plate"].iloc[0])

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


def _object_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """``n_mitotic``, ``n_fragmented`` (cells) and ``n_fragment`` (further pieces) per well."""
    names = [*_OBJECT_COUNTS, "fragment"]
    if "object_class" not in cells.columns:
        table = cells[_KEYS].drop_duplicates()
        return table.assign(**{f"n_{name}": 0 for name in names})
    classes = cells["object_class"].astype(str)
    cell_rows = cells["cell_class"].astype(str) != DEBRIS
    counted = classes.where(cell_rows | (classes == "fragment"), "")
    return (
        pd.crosstab([cells["well"], cells["timepoint"]], counted)
        .reindex(columns=names, fill_value=0)
        .add_prefix("n_")
        .reset_index()
    )


def _relative_cell_count(frame: pd.DataFrame) -> None:
    """Cells per used field, relative to the vehicle median of the same sample and timepoint."""
    used = frame["n_fields_used"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["cells_per_field"] = np.where(used > 0, frame["n_cells"] / used, np.nan)
    role = frame["role"].astype(str)
    sample = frame["sample"].fillna("").astype(str) if "sample" in frame else ""
    vehicle = (role == "negative_control") & (used > 0)
    reference = np.full(len(frame), np.nan)
    fallback = np.zeros(len(frame), dtype=bool)
    for tp in frame["timepoint"].unique():
        at_tp = (frame["timepoint"] == tp).to_numpy()
        pooled = frame.loc[vehicle & at_tp, "cells_per_field"].median()
        for name in pd.unique(sample[at_tp]):
            here = at_tp & (sample == name).to_numpy()
            own = frame.loc[vehicle & here, "cells_per_field"]
            if len(own):
                reference[here] = own.median()
            else:
                reference[here] = pooled
                fallback[here] = np.isfinite(pooled)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["relative_cell_count"] = np.where(
            reference > 0, frame["cells_per_field"] / reference, np.nan
        )
    frame["_vehicle_fallback"] = fallback
    frame["_no_vehicle"] = ~np.isfinite(reference)


def _flags(row: dict[str, Any], min_cells: int, not_in_platemap: bool) -> str:
    flags = []
    if not_in_platemap:
        flags.append("not_in_platemap")
    if str(row.get("role")) == "empty":
        flags.append("empty_well")
    if row["n_fields_used"] == 0:
        flags.append("no_fields_used")
    if row["n_cells"] == 0:
        flags.append("no_cells")
    elif row["n_cells"] < min_cells:
        flags.append("too_few_cells")
    if row["n_fields_excluded"] > 0:
        flags.append("fields_excluded")
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
    ]
    positives = [c for c in frame.columns if c.startswith(("n_", "fraction_")) and c.endswith(
        "_positive")]  # fmt: skip
    means = [c for c in frame.columns if c.startswith("mean_")]
    tail = ["n_fields_used", "n_fields_excluded", "fields_excluded_reasons", "qc_flags"]
    ordered = [*head, *map_columns, *counts, *fractions, *apoptotic, *positives, *means, *tail]
    seen: set[str] = set()
    return [c for c in ordered if c in frame.columns and not (c in seen or seen.add(c))]
