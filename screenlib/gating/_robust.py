"""Robust one-dimensional statistics used to place gates on per-cell intensities.

Background-corrected intensities of negative cells sit near zero (noise, symmetric) for some
stains and far from zero (log-normal) for others. Gates are therefore placed on the generalised
logarithm ``asinh(x / c)``, which is linear near zero and logarithmic far from it; the
cofactor ``c`` is chosen per feature so that the central part of the vehicle population is
symmetric (quartile skewness near zero), preferring the most linear scale that achieves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a normal population times this is its SD


def robust_sd(values: np.ndarray) -> float:
    """Standard deviation estimated as 1.4826 x median absolute deviation (NaN when empty)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


def quartile_skewness(values: np.ndarray) -> float:
    """Bowley skewness (q75 + q25 - 2 q50) / (q75 - q25); robust to a few % outliers."""
    q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    spread = q75 - q25
    if not spread > 0:
        return 0.0
    return float((q75 + q25 - 2.0 * q50) / spread)


@dataclass(frozen=True)
class GlogScale:
    """The scale ``asinh(x / cofactor)`` (``cofactor`` None means linear, ``x`` as is)."""

    cofactor: float | None

    def forward(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.cofactor is None:
            return values
        return np.arcsinh(values / self.cofactor)

    def inverse(self, values: np.ndarray | float) -> np.ndarray | float:
        if self.cofactor is None:
            return values
        return self.cofactor * np.sinh(values)


def choose_scale(values: np.ndarray, tolerance: float = 0.03) -> GlogScale:
    """Pick the glog cofactor that makes the bulk of ``values`` symmetric.

    Candidates run from strongly logarithmic to linear; among those whose quartile skewness
    is within ``tolerance`` of the best, the most linear one wins (a log scale stretches
    near-zero noise and would put the gate far out).

    Parameters
    ----------
    values
        Intensities of (mostly) negative cells, e.g. from vehicle wells.
    tolerance
        Allowed excess of absolute quartile skewness over the best candidate.

    Returns
    -------
    GlogScale
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 20:
        return GlogScale(None)
    q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    reference = max(q75 - q25, abs(q50), 1e-12)
    # Below the noise scale (robust SD of the lower half, untouched by positive cells) a log
    # scale only stretches noise, and sinh would throw the gate far out: no cofactor below it.
    noise_sd = max((q50 - q25) / 0.6745, 1e-12)
    candidates: list[float | None] = [None] + [
        float(reference * factor)
        for factor in 2.0 ** np.arange(6, -9, -1)
        if reference * factor >= noise_sd
    ]
    skews = [abs(quartile_skewness(GlogScale(c).forward(values))) for c in candidates]
    best = min(skews)
    for cofactor, skew in zip(candidates, skews, strict=True):
        if skew <= best + tolerance:
            return GlogScale(cofactor)
    return GlogScale(None)  # unreachable; keeps type checkers content


@dataclass(frozen=True)
class NegativePopulation:
    """Location and spread of the negative population on its glog scale."""

    scale: GlogScale
    center: float
    spread: float
    n_cells: int

    def gate(self, k: float) -> float:
        """Intensity (linear units) ``k`` robust SDs above the centre, on the glog scale."""
        return float(self.scale.inverse(self.center + k * self.spread))


def estimate_negative(values: np.ndarray) -> NegativePopulation:
    """Median and 1.4826 x MAD of (mostly negative) control cells on a symmetric glog scale."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    scale = choose_scale(values)
    transformed = scale.forward(values)
    center = float(np.median(transformed))
    spread = robust_sd(transformed)
    if not spread > 0:
        spread = float(np.std(transformed)) or 1e-12
    return NegativePopulation(scale=scale, center=center, spread=spread, n_cells=int(values.size))


def density_valley(
    transformed: np.ndarray,
    negative: NegativePopulation,
    k_max: float,
    max_cells: int = 20000,
    seed: int = 0,
) -> tuple[float | None, dict[str, float]]:
    """Lowest point of the cells' density between the negative centre and the positive mode.

    The density of all cells (negative and positive populations together) is a Gaussian
    kernel estimate on the glog scale (bandwidth 3/4 of Scott's rule, so the valley is not
    smoothed away). The positive mode is the highest density beyond ``center + k_max *
    spread``; the valley is searched between ``center + 2 spread`` and that mode and kept
    within ``[center + 2 spread, center + k_max spread]``. Unlike a Gaussian mixture it
    does not assume a shape for the heavy upper tail that viable cells show in images (light
    from touching apoptotic neighbours). Returns ``(None, info)`` when there is no positive
    population to find.
    """
    x = np.asarray(transformed, dtype=float)
    x = x[np.isfinite(x)]
    low = negative.center + 2.0 * negative.spread
    high = negative.center + k_max * negative.spread
    n_beyond = int((x > high).sum())
    info: dict[str, float] = {"n_cells_beyond_k_mad": float(n_beyond)}
    if n_beyond < 20 or x.size < 100:
        return None, info
    if x.size > max_cells:
        x = np.random.default_rng(seed).choice(x, max_cells, replace=False)
    top = float(np.quantile(x, 0.999))
    if not top > high:
        return None, info
    grid = np.linspace(negative.center, top, 512)
    kde = stats.gaussian_kde(x, bw_method=0.75 * x.size ** (-1 / 5))
    density = kde(grid)
    beyond = grid > high
    positive_mode = float(grid[beyond][np.argmax(density[beyond])])
    between = (grid >= low) & (grid <= positive_mode)
    if not between.any():
        return None, info
    # The valley floor is often flat: take the middle of its low part (density within 10 % of
    # the rise to the positive mode), which is steadier than the single lowest grid point.
    floor_density = density[between]
    near_floor = floor_density <= floor_density.min() + 0.1 * (
        floor_density.max() - floor_density.min()
    )
    valley = float(np.median(grid[between][near_floor]))
    info.update(positive_mode_glog=positive_mode, valley_glog=valley)
    return float(np.clip(valley, low, high)), info
