"""Which cells the report counts and shows, and how their measurements are named for people.

The report shows the cells the numbers were computed from: whole cells (not debris) of fields
that passed image QC. ``cells.parquet`` marks every other object with an ``exclusion_reason``;
the field table's ``qc_pass`` is checked as well, so a table written before fields were marked
gives the same answer.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from screenlib.gating import is_counted
from screenlib.settings import AssaySettings

STAIN_LABELS = {"hoechst": "Hoechst", "annexin_v": "Annexin V", "pi": "PI"}
_REGION_LABELS = {"nucleus": "nucleus", "ring": "ring around the nucleus", "cell": "whole cell"}
_STATISTIC_LABELS = {
    "mean": "mean",
    "p90": "90th percentile",
    "integrated": "integrated",
    "max": "maximum",
    "median": "median",
}
_FEATURE = re.compile(r"^(?P<stain>[a-z0-9_]+?)_(?P<region>nucleus|ring|cell)_(?P<stat>[a-z0-9]+)$")


def feature_label(feature: str, *, two_lines: bool = False) -> str:
    """A measurement column as a person would name it (``two_lines``: for an axis label).

    Examples
    --------
    >>> feature_label("annexin_v_ring_p90")
    'Annexin V intensity (ring around the nucleus, 90th percentile)'
    >>> feature_label("pi_compensated")
    'PI intensity (nucleus mean, Annexin V bleed-through removed)'
    """
    separator = "\n" if two_lines else " "
    if feature == "pi_compensated":
        return f"PI intensity{separator}(nucleus mean, Annexin V bleed-through removed)"
    match = _FEATURE.match(feature)
    if match is None:
        return feature.replace("_", " ")
    stain = STAIN_LABELS.get(match["stain"], match["stain"].replace("_", " "))
    statistic = _STATISTIC_LABELS.get(match["stat"], match["stat"])
    return f"{stain} intensity{separator}({_REGION_LABELS[match['region']]}, {statistic})"


def failed_field_keys(fields: pd.DataFrame | None) -> set[tuple[str, int, int]]:
    """``(well, field, timepoint)`` of every field that failed image QC."""
    if fields is None or not len(fields) or "qc_pass" not in fields.columns:
        return set()
    passed = fields["qc_pass"].map(
        lambda v: str(v).strip().lower() in ("true", "1", "yes") if isinstance(v, str) else bool(v)
    )
    failed = fields[~passed.astype(bool)]
    timepoints = failed["timepoint"] if "timepoint" in failed else pd.Series(0, failed.index)
    return {
        (str(w), int(f), int(t))
        for w, f, t in zip(failed["well"], failed["field"], timepoints, strict=True)
    }


def in_failed_fields(cells: pd.DataFrame, fields: pd.DataFrame | None) -> np.ndarray:
    """True for cells of a field that failed image QC."""
    failed = failed_field_keys(fields)
    if not failed or not {"well", "field"} <= set(cells.columns):
        return np.zeros(len(cells), dtype=bool)
    timepoints = cells["timepoint"] if "timepoint" in cells else pd.Series(0, cells.index)
    keys = pd.MultiIndex.from_arrays(
        [cells["well"].astype(str), cells["field"].astype(int), timepoints.astype(int)]
    )
    return keys.isin(list(failed))


def counted_cells(
    cells: pd.DataFrame, fields: pd.DataFrame | None, settings: AssaySettings
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The cells behind the run's numbers, and how many objects were left out and why.

    Returns
    -------
    (pandas.DataFrame, dict)
        The counted cells, and ``{"objects", "failed_fields", "debris"}``: all objects, those
        in fields that failed QC (when ``qc.exclude_failed_fields``), and the remaining
        objects that are not whole cells (or carry another ``exclusion_reason``).
    """
    keep, failed = _counted_mask(cells, fields, settings)
    return cells[keep & ~failed], _left_out(keep, failed)


def _left_out(keep: np.ndarray, failed: np.ndarray) -> dict[str, int]:
    return {
        "objects": int(len(keep)),
        "failed_fields": int(failed.sum()),
        "debris": int((~keep & ~failed).sum()),
    }


def _counted_mask(cells, fields, settings) -> tuple[np.ndarray, np.ndarray]:
    """(whole cells without an exclusion reason, objects in fields that failed QC)."""
    keep = is_counted(cells)
    failed = np.zeros(len(cells), dtype=bool)
    if settings.qc.exclude_failed_fields:
        failed = in_failed_fields(cells, fields)
    return keep, failed


def report_objects(
    cells: pd.DataFrame,
    fields: pd.DataFrame | None,
    settings: AssaySettings,
    gallery_columns: list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """:func:`counted_cells` and the objects the cell gallery may show, the fields' QC looked
    up once: ``(counted cells, left out, gallery objects)``. The gallery's objects are the
    counted cells and the debris objects (``object_class`` ``debris``, for a row of their
    own), never from a field that failed image QC, with only ``gallery_columns`` (those there
    are; None: all)."""
    keep, failed = _counted_mask(cells, fields, settings)
    shown = keep.copy()
    if "object_class" in cells.columns:  # debris: not counted, but shown in a row of its own
        shown |= (cells["object_class"].astype(str) == "debris").to_numpy()
    shown &= ~failed
    columns = cells.columns
    if gallery_columns is not None:
        columns = [c for c in dict.fromkeys(gallery_columns) if c in cells.columns]
    return cells[keep & ~failed], _left_out(keep, failed), cells.loc[shown, columns]
