"""Small statistics used for wells and plate QC: Wilson interval, Z', robust Z', SSMD, and the
two rank tests a run uses (Mann-Whitney, Spearman).

The rank tests and the normal quantile give the same numbers as ``scipy.stats`` (the tests
compare them), from ``scipy.special`` alone: importing ``scipy.stats`` takes about 1.3 s, more
than a re-gating run's own work on a 96-well plate.
"""

from __future__ import annotations

import numpy as np
from scipy import special

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
    z = normal_quantile(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denominator = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def normal_quantile(probability: float) -> float:
    """Standard normal quantile (``scipy.stats.norm.ppf``) of a probability in (0, 1)."""
    if not 0 < probability < 1:
        raise ValueError(f"probability must lie in (0, 1), not {probability}")
    return float(special.ndtri(probability))


def average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n of ``values``, ties given their mean rank, and the size of each tie group
    (``scipy.stats.rankdata``'s ``"average"`` method)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    counts = np.diff(np.append(starts, values.size))
    group_ranks = (starts + 1) + (counts.astype(float) - 1) / 2
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(group_ranks, counts)
    return ranks, counts


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of ``x`` and its two-sided p-value (``scipy.stats.mannwhitneyu``);
    NaN for an empty sample or a NaN.

    The p-value is the normal approximation with tie and continuity correction; when either
    sample has at most 8 values and there are no ties, scipy's exact distribution gives it
    (as ``mannwhitneyu``'s automatic choice does).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size == 0 or y.size == 0 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan"), float("nan")
    n1, n2 = x.size, y.size
    ranks, ties = average_ranks(np.concatenate([x, y]))
    u1 = float(np.sum(ranks[:n1])) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    if (n1 <= 8 or n2 <= 8) and not (ties > 1).any():
        from scipy import stats  # the exact distribution, for small samples only

        return u1, float(stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")[1])
    n = n1 + n2
    tie_term = float(np.sum(ties.astype(float) ** 3 - ties))
    sd = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2 - 0.5) / sd
    return u1, float(np.clip(2 * special.ndtr(-z), 0.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (Student's t with n - 2 degrees
    of freedom), as ``scipy.stats.spearmanr``; NaN for fewer than 2 pairs, a constant input or
    a NaN."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError("spearman needs two samples of the same length")
    if x.size <= 1 or (x == x[0]).all() or (y == y[0]).all():
        return float("nan"), float("nan")
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan"), float("nan")
    ranked = np.column_stack([average_ranks(x)[0], average_ranks(y)[0]])
    rho = np.corrcoef(ranked, rowvar=False)[1, 0]
    dof = x.size - 2
    with np.errstate(divide="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
    return float(rho), float(2 * special.stdtr(dof, -np.abs(t)))


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
