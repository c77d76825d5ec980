"""Plate-level field QC: calls that need every field of the plate, made from fields.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd

from screenlib.settings import QCSettings


def flag_relative_focus(fields: pd.DataFrame, settings: QCSettings) -> pd.DataFrame:
    """Fail fields much less sharp than the plate's typical field.

    The focus score's scale depends on optics, pixel size and stain, so an absolute threshold
    rarely transfers between assays; a field scoring below ``settings.min_relative_focus``
    times the median of the plate's analysed fields (per timepoint) is out of focus on any
    instrument. A defocused field smears the thin Annexin V ring into the background and
    undercounts apoptotic cells.

    Parameters
    ----------
    fields
        Per-field table with ``focus_score``, ``qc_pass``, ``qc_reason`` (and ``timepoint``).
    settings
        ``min_relative_focus`` (0 disables the check).

    Returns
    -------
    DataFrame
        A copy with ``relative_focus`` added and ``qc_pass`` / ``qc_reason`` updated.

    Examples
    --------
    >>> table = pd.DataFrame({"focus_score": [0.6, 0.58, 0.62, 0.15], "qc_pass": True,
    ...                       "qc_reason": ""})
    >>> flag_relative_focus(table, QCSettings())["qc_pass"].tolist()
    [True, True, True, False]
    """
    table = fields.copy()
    if "focus_score" not in table or table.empty:
        return table
    scores = pd.to_numeric(table["focus_score"], errors="coerce")
    group = table["timepoint"] if "timepoint" in table else pd.Series(0, index=table.index)
    # the plate's typical sharpness, from fields that have nuclei to judge
    with_cells = scores.where(scores > 0)
    median = with_cells.groupby(group).transform("median")
    table["relative_focus"] = scores / median
    if settings.min_relative_focus <= 0:
        return table
    blurred = (table["relative_focus"] < settings.min_relative_focus) & (scores > 0)
    blurred &= np.isfinite(table["relative_focus"])
    reason = (
        "out of focus (focus_score "
        + scores.map("{:.3g}".format)
        + f" < {settings.min_relative_focus:g} x plate median)"
    )
    previous = table["qc_reason"].fillna("").astype(str)
    table.loc[blurred, "qc_reason"] = np.where(
        previous[blurred] != "", previous[blurred] + "; " + reason[blurred], reason[blurred]
    )
    table.loc[blurred, "qc_pass"] = False
    return table
