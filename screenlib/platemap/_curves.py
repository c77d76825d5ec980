"""Which wells make one dose-response curve: grouping read from the plate map's columns.

A curve is one plate x sample x compound (x readout, timepoint); a plate-map column that
varies among the wells of one such curve splits it (never pooled silently), while columns
that only label points (a dilution step, notes) do not. Vehicle wells join every curve of
their sample. The dose-response layer fits these groups; the plate-map preview lists them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from screenlib.platemap._reader import KNOWN_COLUMNS
from screenlib.platemap._vocabulary import ANNOTATION_HEADERS, compact, is_output_column

__all__ = ["annotation_columns", "curve_split_columns", "plan_curves"]

# curves never pool across these; annotation columns that vary within a curve split it too
_OUTER_KEYS = ("plate", "sample", "readout", "timepoint", "map_timepoint")
_NOT_ANNOTATIONS = frozenset(KNOWN_COLUMNS) | {"readout", "response", "n_positive", "n_total"}


def _text(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def annotation_columns(table: pd.DataFrame) -> list[str]:
    """Columns carried from the plate map (or a tidy table) that are not known fields.

    Known fields (:data:`screenlib.platemap.KNOWN_COLUMNS`, ``readout``, ``response``,
    ``n_positive``, ``n_total``) and output names (``n_cells``, ``fraction_*``, ...; see
    :func:`screenlib.platemap.is_output_column`) are left out: a plate map's column of such a
    name is renamed on the way in.
    """
    return [
        c
        for c in table.columns
        if isinstance(c, str)
        and c not in _NOT_ANNOTATIONS
        and not c.startswith("_")
        and not is_output_column(c.lower())
    ]


def _vehicle_and_dosed(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    role = table["role"] if "role" in table.columns else pd.Series("sample", index=table.index)
    concentration = pd.to_numeric(table["concentration_molar"], errors="coerce")
    is_vehicle = (role == "negative_control") | ((concentration == 0) & (role == "sample"))
    return is_vehicle, (role == "sample") & ~is_vehicle


def curve_split_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Annotation columns that would otherwise pool different wells into one curve.

    A column splits the curves when, among the dosed wells of one sample x compound
    (x readout, timepoint, plate), at least two of its values each span two or more doses: it
    groups wells into curves (a cell line, a lot, a seeding density). A column whose values
    sit on single doses (a dilution step, a source-plate well, a measurement) or mark a few
    wells of one curve labels points, not curves. Free-text notes (``note``, ``comment``...)
    never split.

    Returns
    -------
    (split, point_labels)
        Column names that split curves, and varying columns left as point labels.
    """
    candidates = [
        c for c in annotation_columns(table) if compact(c.removeprefix("map_")) not in
        ANNOTATION_HEADERS
    ]  # fmt: skip
    if not candidates:
        return [], []
    _, is_dosed = _vehicle_and_dosed(table)
    dosed = table[is_dosed]
    keys = [c for c in (*_OUTER_KEYS, "compound") if c in table.columns]
    split, labels = [], []
    for column in candidates:
        values = _text(dosed[column])
        frame = pd.DataFrame({"value": values, "dose": dosed["concentration_molar"]})
        grouped = frame.groupby([dosed[k] for k in keys], dropna=False) if keys else [(0, frame)]
        varies = spans = False
        for _, part in grouped:
            if part["value"].nunique() > 1:
                varies = True
                spans = spans or int((part.groupby("value")["dose"].nunique() > 1).sum()) >= 2
        if varies and spans:
            split.append(column)
        elif varies:
            labels.append(column)
    return split, labels


def _curve_groups(table: pd.DataFrame, split: list[str] | None = None):
    """Yield ``(keys, curve_rows)`` per sample x compound (x readout, timepoint, plate and the
    ``split`` columns) with the vehicle rows that belong to it.

    Vehicles of the same sample (and readout, timepoint, plate) join the curve of every
    compound when their own compound is not a dosed one; with split columns they join the
    curve with their value, or every curve when their value is no dosed well's.
    """
    split = split or []
    is_vehicle, is_sample = (s.to_numpy(dtype=bool) for s in _vehicle_and_dosed(table))
    compound = table["compound"].fillna("").astype(str).to_numpy(dtype=object)
    values = {c: _text(table[c]).to_numpy(dtype=object) for c in split}
    outer = [c for c in _OUTER_KEYS if c in table.columns]
    rows = pd.Series(np.arange(len(table)), index=table.index)  # row positions, grouped
    grouped = (
        rows.groupby([table[c] for c in outer], dropna=False, sort=True) if outer else [((), rows)]
    )
    for outer_keys, part in grouped:
        outer_keys = outer_keys if isinstance(outer_keys, tuple) else (outer_keys,)
        positions = part.to_numpy()
        vehicles = positions[is_vehicle[positions]]
        dosed = positions[is_sample[positions]]
        labels = [compound[dosed], *(values[c][dosed] for c in split)]
        members: dict[tuple, list[int]] = {}
        for position, label in zip(dosed, zip(*labels, strict=True), strict=True):
            members.setdefault(label, []).append(position)
        dosed_values = [set(column) for column in labels]
        for inner_keys in sorted(members):  # (the order of a sorted groupby: all are text)
            keys = dict(zip(outer, outer_keys, strict=True))
            keys["compound"] = inner_keys[0]
            keys.update(zip(split, inner_keys[1:], strict=True))
            own = _own_vehicles(vehicles, inner_keys, [compound, *values.values()], dosed_values)
            yield keys, table.iloc[np.concatenate([members[inner_keys], vehicles[own]])]


def _own_vehicles(vehicles, inner_keys, labels, dosed_values) -> np.ndarray:
    """Which ``vehicles`` (row positions) join the curve of ``inner_keys``: per key (the
    compound, then each split column's value), those of its value or of no dosed well's."""
    own = np.ones(vehicles.size, dtype=bool)
    for column, value, dosed in zip(labels, inner_keys, dosed_values, strict=True):
        own &= _matches_or_foreign(column[vehicles], value, dosed)
    return own


def _matches_or_foreign(labels: np.ndarray, value, dosed_values: set) -> np.ndarray:
    return np.array([v == value or v not in dosed_values for v in labels], dtype=bool)


def plan_curves(table: pd.DataFrame) -> pd.DataFrame:
    """The curves a plate map defines, before any image is analysed: one row per curve.

    Columns: the curve's keys (``plate``, ``sample``, ``compound``, ``map_timepoint`` and any
    split column), ``n_doses``, ``wells_per_dose`` (``"2"`` or ``"1-3"``), ``n_vehicle``,
    ``lowest_dose_molar`` and ``top_dose_molar``. ``attrs`` carry ``curve_group_columns`` and
    ``point_label_columns`` as :func:`curve_split_columns` found them.
    """
    table = table.copy()
    for column in ("sample", "compound"):
        if column not in table.columns:
            table[column] = ""
    table["concentration_molar"] = pd.to_numeric(table["concentration_molar"], errors="coerce")
    split, labels = curve_split_columns(table)
    _, is_dosed = _vehicle_and_dosed(table)
    rows = []
    for keys, curve in _curve_groups(table, split):
        dosed = curve[is_dosed.loc[curve.index]]["concentration_molar"]
        per_dose = dosed.value_counts()
        low, high = (int(per_dose.min()), int(per_dose.max())) if len(per_dose) else (0, 0)
        row = {k: v for k, v in keys.items() if k != "timepoint"}
        row.update(
            n_doses=int(dosed.nunique()),
            wells_per_dose=str(low) if low == high else f"{low}-{high}",
            n_vehicle=int(len(curve) - len(dosed)),
            lowest_dose_molar=float(dosed.min()) if len(dosed) else float("nan"),
            top_dose_molar=float(dosed.max()) if len(dosed) else float("nan"),
        )
        rows.append(row)
    plan = pd.DataFrame(rows)
    plan.attrs["curve_group_columns"] = split
    plan.attrs["point_label_columns"] = labels
    return plan
