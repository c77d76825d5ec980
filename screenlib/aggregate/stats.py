"""Small statistics used for wells and plate QC: Wilson interval, Z', robust Z', SSMD."""

from __future__ import annotations

import numpy as np
from scipy import stats

from screenlib.robust import robust_sd


def wilson_interval(
    successes: np.ndarray | int, trials: np.ndarray | int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (NaN where ``trials`` is 0).

    Parameters
    ----------
    successes, trials
        Counts (scalars or arrays of the same shape).
    confidence
        Two-sided confidence level.

    Returns
    -------
    (low, high)
        Arrays of interval bounds.

    Examples
    --------
    >>> low, high = wilson_interval(5, 10)
    >>> round(float(low), 4), round(float(high), 4)
    (0.2366, 0.7634)
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denominator = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def _clean(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def z_prime(positive: np.ndarray, negative: np.ndarray) -> float:
    """Z'-factor 1 - 3 (sd_p + sd_n) / |mean_p - mean_n| (Zhang et al. 1999; sample SDs).

    NaN with fewer than two values in a group or equal means.

    Examples
    --------
    >>> round(z_prime([0.8, 0.9, 1.0], [0.0, 0.1, 0.2]), 4)
    0.25
    """
    p, n = _clean(positive), _clean(negative)
    if p.size < 2 or n.size < 2:
        return float("nan")
    gap = abs(p.mean() - n.mean())
    if gap == 0:
        return float("nan")
    return float(1 - 3 * (p.std(ddof=1) + n.std(ddof=1)) / gap)


def robust_z_prime(positive: np.ndarray, negative: np.ndarray) -> float:
    """Z' with medians for means and 1.4826 x MAD for SDs (insensitive to outlier wells).

    Examples
    --------
    >>> round(robust_z_prime([0.8, 0.9, 1.0, 5.0], [0.0, 0.1, 0.2]), 4)
    -0.0465
    """
    p, n = _clean(positive), _clean(negative)
    if p.size < 2 or n.size < 2:
        return float("nan")
    gap = abs(np.median(p) - np.median(n))
    if gap == 0:
        return float("nan")

    return float(1 - 3 * (robust_sd(p) + robust_sd(n)) / gap)


def ssmd(positive: np.ndarray, negative: np.ndarray) -> float:
    """Strictly standardised mean difference (mean_p - mean_n) / sqrt(var_p + var_n) (Zhang 2007).

    Examples
    --------
    >>> round(ssmd([0.8, 0.9, 1.0], [0.0, 0.1, 0.2]), 4)
    5.6569
    """
    p, n = _clean(positive), _clean(negative)
    if p.size < 2 or n.size < 2:
        return float("nan")
    spread = np.sqrt(p.var(ddof=1) + n.var(ddof=1))
    difference = p.mean() - n.mean()
    if spread == 0:
        return float("nan") if difference == 0 else float(np.sign(difference) * np.inf)
    return float(difference / spread)
