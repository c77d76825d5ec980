"""Robust one-dimensional statistics shared by every layer (segmentation, gating, QC, fits).

One definition of the robust standard deviation lives here; analysis, gating, aggregate and
doseresponse import it rather than writing ``1.4826 * MAD`` again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SD", "robust_sd"]

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a normal population times this is its SD


def robust_sd(values: np.ndarray) -> float:
    """Standard deviation estimated as 1.4826 x median absolute deviation (NaN when empty).

    Non-finite values are left out.

    Examples
    --------
    >>> robust_sd(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    1.4826
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SD * _median(np.abs(values - _median(values))))


def _median(values: np.ndarray) -> float:
    """``np.median`` of finite values (the same number), without its overhead on small arrays
    (about ten times its cost for the ~30 residuals of a dose-response fit)."""
    n = values.size
    middle = n // 2
    if n % 2:
        return np.partition(values, middle)[middle]
    part = np.partition(values, (middle - 1, middle))
    return (part[middle - 1] + part[middle]) / 2
