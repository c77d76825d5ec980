"""The full-effect response of a curve from the plate's positive-control wells.

A positive control (e.g. staurosporine) shows what the readout looks like when the cells
respond completely: that is the plateau an incomplete curve is heading for (see
``fit_curve(max_response=...)``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["full_effect_levels"]


def full_effect_levels(table: pd.DataFrame) -> dict[tuple, float]:
    """Median positive-control response per ``(sample, readout, timepoint)`` key.

    The key holds the values of whichever of those columns the table has, in that order.
    Counts (``n_positive``/``n_total``) give the pooled fraction. Empty when the table has no
    ``role`` column or no positive-control rows.

    Examples
    --------
    >>> t = pd.DataFrame({"sample": ["A"] * 4, "role": ["positive_control"] * 3 + ["sample"],
    ...     "response": [0.8, 0.9, 0.7, 0.1]})
    >>> full_effect_levels(t)
    {('A',): 0.8}
    """
    if "role" not in table.columns:
        return {}
    controls = table[table["role"] == "positive_control"]
    if controls.empty:
        return {}
    keys = [c for c in ("sample", "readout", "timepoint") if c in table.columns]
    levels = {}
    groups = controls.groupby(keys, dropna=False, sort=False) if keys else [((), controls)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        if {"n_positive", "n_total"} <= set(part.columns):
            positive = pd.to_numeric(part["n_positive"], errors="coerce").sum()
            total = pd.to_numeric(part["n_total"], errors="coerce").sum()
            level = positive / total if total > 0 else np.nan
        else:
            level = pd.to_numeric(part.get("response"), errors="coerce").median()
        if np.isfinite(level):
            levels[key] = float(level)
    return levels
