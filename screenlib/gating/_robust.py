"""Robust one-dimensional statistics used to place gates on per-cell intensities.

Background-corrected intensities of negative cells sit near zero (noise, symmetric) for some
stains and far from zero (log-normal) for others. Gates are therefore placed on the generalised
logarithm ``asinh(x / c)``, which is linear near zero and logarithmic far from it; the
cofactor ``c`` is chosen per feature so that the central part of the vehicle population is
symmetric (quartile skewness near zero), preferring the most linear scale that achieves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from screenlib.robust import MAD_TO_SD, robust_sd  # noqa: F401 - re-exported


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


@dataclass(frozen=True)
class PositivePopulation:
    """Share, centre and spread (SD) of the positive population on the negative's glog scale."""

    weight: float
    center: float
    spread: float


#: start and largest share of the outlier component (see :func:`fit_mixture`)
_OUTLIER_START = 0.02
_OUTLIER_MAX = 0.2

#: cells this many negative spreads below the negative centre are failed measurements
_FAILED_K = 4.0


def _normal_logpdf(x: np.ndarray, center: np.ndarray | float, sd: float) -> np.ndarray:
    """``scipy.stats.norm.logpdf`` without its argument checks (called every EM step)."""
    z = (x - center) / sd
    return -0.5 * z * z - np.log(sd * np.sqrt(2 * np.pi))


# The normal density, the kernel density estimate and the Theil-Sen slope below give the same
# numbers as scipy.stats (the tests compare them bit for bit), without importing scipy.stats:
# that import alone takes about 1.3 s, most of a re-gating run's own work.
_SQRT_2PI = np.sqrt(2 * np.pi)
_LOG_SQRT_2PI = np.log(_SQRT_2PI)


def normal_pdf(x: np.ndarray, center: float, sd: float) -> np.ndarray:
    """Normal density at ``x`` (the same numbers as ``scipy.stats.norm.pdf``)."""
    z = (np.asarray(x, dtype=float) - center) / sd
    return np.exp(-(z**2) / 2.0) / _SQRT_2PI / sd


def normal_logpdf(x: np.ndarray, center: float, sd: float) -> np.ndarray:
    """Log normal density at ``x`` (the same numbers as ``scipy.stats.norm.logpdf``)."""
    z = (np.asarray(x, dtype=float) - center) / sd
    return -(z**2) / 2.0 - _LOG_SQRT_2PI - np.log(sd)


def gaussian_kde_1d(
    data: np.ndarray, bw_factor: float, points: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """Gaussian kernel density estimate of ``data`` at ``points``, as
    ``scipy.stats.gaussian_kde(data, bw_method=bw_factor)(points)`` computes it.

    The kernel's SD is ``bw_factor`` times the data's sample SD. Kernels are added in data
    order (as scipy's loop does), a block of ``chunk`` data points at a time; each point's
    estimate is its own sum, so evaluating some of the points gives the same numbers for them.
    """
    return _kde_evaluator(data, bw_factor, chunk)(points)


def _kde_evaluator(data: np.ndarray, bw_factor: float, chunk: int = 256):
    """:func:`gaussian_kde_1d` of ``data`` as a function of the points."""
    data = np.asarray(data, dtype=float)
    weights = np.ones(data.size) / data.size
    variance = float(np.cov(data[None], rowvar=True, bias=False, aweights=weights))
    kernel_sd = math.sqrt(variance) * bw_factor
    inverse = 1.0 / kernel_sd  # scipy whitens by the triangular solve, which multiplies
    scaled_data = data * inverse
    norm = math.pow(2 * math.pi, -0.5) / kernel_sd

    def evaluate(points: np.ndarray) -> np.ndarray:
        scaled_points = np.asarray(points, dtype=float) * inverse
        estimate = np.zeros(scaled_points.size)
        for start in range(0, data.size, chunk):
            terms = np.subtract(scaled_data[start : start + chunk, None], scaled_points[None])
            np.multiply(terms, terms, out=terms)
            terms *= -0.5
            np.exp(terms, out=terms)
            terms *= norm
            terms *= weights[start : start + chunk, None]
            terms[0] += estimate
            estimate = terms.sum(axis=0)  # down the rows: one after another, in data order
        return estimate

    return evaluate


def theil_sen_slope(y: np.ndarray, x: np.ndarray) -> float:
    """Median of the slopes between every pair of points with different ``x`` (Theil-Sen;
    ``scipy.stats.theilslopes(y, x).slope``); NaN when every ``x`` is the same."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    delta_x = x[:, None] - x
    with np.errstate(divide="ignore", invalid="ignore"):  # (the pairs left out)
        # dividing every pair and keeping the rising ones is one selection, not two
        slopes = ((y[:, None] - y) / delta_x)[delta_x > 0]
    return float(np.median(slopes, overwrite_input=True)) if slopes.size else float("nan")


@dataclass(frozen=True)
class MixtureFit:
    """A fitted two-population mixture: the positive component, every group's positive
    share and the shift of the negative centre for shifted cells (see :func:`fit_mixture`)."""

    positive: PositivePopulation
    shares: np.ndarray
    shift: float
    n_iterations: int


def fit_mixture(
    x: np.ndarray,
    negative: NegativePopulation,
    start: PositivePopulation,
    groups: np.ndarray | None = None,
    n_groups: int = 1,
    shifted: np.ndarray | None = None,
    max_iterations: int = 500,
    tolerance: float = 1e-6,
    ignore_below: float | None = None,
    outliers: bool = False,
) -> MixtureFit:
    """Expectation-maximisation of a mixture whose negative component is fixed.

    The one EM of the package: :func:`fit_positive_population` (gates) runs it with one
    group, :func:`screenlib.aggregate.mixture.fit_annexin_mixture` (per-well fractions) with
    two groups per well and PI-positive cells ``shifted``.

    Every cell is ``(1 - w_g) N(center + d * shifted, spread) + w_g N(m, t)`` on the glog
    scale, ``g`` its group. The negative centre and spread stay fixed; the positive centre
    ``m``, SD ``t`` (at least 0.25 negative spreads, so the component does not collapse on a
    few cells), the shares ``w_g`` and the shift ``d`` (0 <= d <= (m - center) / 2) are fitted.
    With ``outliers`` a third, flat component over the range of ``x`` (share ``e``, fitted)
    takes the objects that are neither population: light from a bright neighbour in a
    viable cell's ring, debris stuck to a cell, a failed measurement. Without it a Gaussian
    positive component stretches over them (on a rendered messy plate its SD grew from 0.7
    to 1.4-2.1 and its share from 0.33 to 0.46), claims the valley between the populations
    and drags the gate to its floor; on a clean plate ``e`` fits near 0 and the fit is the
    two-component one.
    Cells below ``ignore_below`` count as negative (failed measurements, see
    :func:`fit_positive_population`).
    """
    x = np.asarray(x, dtype=float)
    # one group: the share is spread to the cells by broadcasting (the same numbers)
    to_cells = (lambda v: v) if groups is None else (lambda v: v[groups])
    groups = np.zeros(x.size, dtype=np.int64) if groups is None else np.asarray(groups)
    necrotic = None if shifted is None else np.asarray(shifted, dtype=float)
    center, spread = negative.center, negative.spread
    sizes = np.bincount(groups, minlength=n_groups).astype(float)
    below = x < ignore_below if ignore_below is not None else np.zeros(x.size, dtype=bool)
    any_below = bool(below.any())
    shares = np.full(n_groups, start.weight)
    mean, sd, shift = start.center, start.spread, 0.0
    # the flat outlier component: density 1 / range of x, share fitted (0: two components)
    outlier_share = _OUTLIER_START if outliers and x.size else 0.0
    log_flat = -np.log(max(float(np.ptp(x)), 1e-12)) if x.size else 0.0
    # the negative component's density changes only with the shift of shifted cells
    log_negative = _normal_logpdf(x, center, spread) if necrotic is None else None
    density_shift = None
    from_center = x - center
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        if necrotic is not None and shift != density_shift:
            log_negative = _normal_logpdf(x, center + shift * necrotic, spread)
            density_shift = shift
        log_positive = _normal_logpdf(x, mean, sd)
        with np.errstate(divide="ignore"):
            kept = np.log1p(-outlier_share)
            # logs of the few group shares (and the inliers' share), then spread to the cells
            weighted = to_cells(kept + np.log(shares)) + log_positive
            evidence = np.logaddexp(weighted, to_cells(kept + np.log1p(-shares)) + log_negative)
            if outlier_share > 0:
                evidence = np.logaddexp(evidence, np.log(outlier_share) + log_flat)
                outlier = np.exp(np.log(outlier_share) + log_flat - evidence)
                outlier[below] = 0.0
            posterior = np.exp(weighted - evidence)
        if any_below:
            posterior[below] = 0.0
        total = float(posterior.sum())
        if not total > 0:
            break
        # (without outliers every cell is an inlier: the bincount of ones is the group size)
        inliers = (
            np.bincount(groups, 1.0 - outlier, minlength=n_groups) if outlier_share > 0 else sizes
        )
        new_shares = np.clip(
            np.bincount(groups, posterior, minlength=n_groups) / np.maximum(inliers, 1e-12),
            1e-9,
            1 - 1e-9,
        )
        if outlier_share > 0:
            outlier_share = float(np.clip(outlier.mean(), 1e-6, _OUTLIER_MAX))
        new_mean = float((posterior * x).sum() / total)
        new_sd = max(float(np.sqrt((posterior * (x - new_mean) ** 2).sum() / total)), 0.25 * spread)
        if necrotic is not None:
            shift = _necrotic_shift(posterior, necrotic, from_center, shift, new_mean - center)
        change = max(
            float(np.abs(new_shares - shares).max(initial=0.0)),
            abs(new_mean - mean) / spread,
            abs(new_sd - sd) / spread,
        )
        shares, mean, sd = new_shares, new_mean, new_sd
        if change < tolerance:
            break
    # the positive share of all cells (outliers included, as in the observed density)
    weight = float((shares * sizes).sum() / max(sizes.sum(), 1.0)) * (1.0 - outlier_share)
    return MixtureFit(PositivePopulation(weight, mean, sd), shares, shift, iteration)


def _necrotic_shift(
    posterior: np.ndarray, necrotic: np.ndarray, from_center: np.ndarray, shift: float, gap: float
) -> float:
    """The M-step of :func:`fit_mixture`'s shift: the negative-weighted mean distance of
    shifted cells from the negative centre, between 0 and half the ``gap`` to the positive
    centre (necrotic cells bind more Annexin V than viable ones, never as much as apoptotic);
    ``shift`` unchanged without negative weight on shifted cells."""
    negative_necrotic = (1 - posterior) * necrotic
    if necrotic_weight := float(negative_necrotic.sum()):
        shift = float((negative_necrotic * from_center).sum() / necrotic_weight)
        shift = float(np.clip(shift, 0.0, 0.5 * gap))
    return shift


#: a plain positive component more than this much wider than the one fitted beside an
#: outlier component has been stretched over objects of neither population
_STRETCHED = 1.25


def _fit_with_outlier_check(
    x: np.ndarray,
    negative: NegativePopulation,
    first: PositivePopulation,
    max_iterations: int,
    ignore_below: float | None = None,
) -> PositivePopulation:
    """The two-component fit, unless objects of neither population stretched it.

    The mixture is fitted twice, as is and with the flat outlier component of
    :func:`fit_mixture`. The plain fit stands unless its positive SD exceeds the other's by
    more than ``_STRETCHED`` (25 %): then objects between the populations (neighbour light,
    debris on cells) widened it, and the fit beside the outlier component is the positive
    population. On a clean plate both fits agree within a few per cent and nothing changes
    (the outlier component also takes a little of the positive population's real low tail,
    which would move the gate up); on a rendered messy plate the plain SD was 1.5-3x the
    other.
    """
    plain = fit_mixture(
        x, negative, first, max_iterations=max_iterations, ignore_below=ignore_below
    ).positive
    robust = fit_mixture(
        x, negative, first, max_iterations=max_iterations, ignore_below=ignore_below,
        outliers=True,
    ).positive  # fmt: skip
    return robust if plain.spread > _STRETCHED * robust.spread else plain


def fit_positive_population(
    transformed: np.ndarray,
    negative: NegativePopulation,
    max_cells: int = 20000,
    seed: int = 0,
    max_iterations: int = 200,
) -> PositivePopulation | None:
    """Fit the positive population of a two-component mixture whose negative part is fixed.

    All cells of the plate (vehicle, samples, controls) are modelled on the glog scale as
    ``(1 - w) N(center, spread) + w N(m, t)``: the negative component is the vehicle estimate
    (robust, so the vehicle's own few positive cells do not widen it) and only the positive
    component's share ``w``, centre ``m`` and SD ``t`` are fitted (:func:`fit_mixture`),
    started from the cells beyond ``center + 4 spread``. Anchoring the negative part keeps the
    fit stable when the positive population is small or skewed. A fit beside a flat outlier
    component replaces the plain one when the plain one was stretched over objects of neither
    population (:func:`_fit_with_outlier_check`).

    Returns None when there is no positive population to fit: fewer than 20 cells beyond
    ``center + 4 spread`` (or fewer than 100 cells), or a fitted centre less than 3 negative
    spreads above the negative centre (the "positives" are then the negative's own tail).
    """
    x = np.asarray(transformed, dtype=float)
    x = x[np.isfinite(x)]
    center, spread = negative.center, negative.spread
    start = x[x > center + 4.0 * spread]
    if start.size < 20 or x.size < 100:
        return None
    weight = start.size / x.size  # before subsampling: both counts from the same cells
    if x.size > max_cells:
        x = np.random.default_rng(seed).choice(x, max_cells, replace=False)
    first = PositivePopulation(weight, float(np.median(start)), max(robust_sd(start), spread))
    positive = _fit_with_outlier_check(x, negative, first, max_iterations)
    if positive.center < center + 3.0 * spread:
        # Far below the negative centre lie only failed measurements (a background
        # over-estimated next to a precipitate); a positive component stretched down to them
        # loses the positive population (on a rendered messy plate its centre fell below 3
        # spreads). Fit again with them counted as negative.
        positive = _fit_with_outlier_check(
            x, negative, first, max_iterations, ignore_below=center - _FAILED_K * spread
        )
    if positive.center < center + 3.0 * spread:
        return None
    return positive


def bayes_boundary(negative: NegativePopulation, positive: PositivePopulation) -> float:
    """The glog value between the two centres where a cell is as likely positive as negative.

    Above it the positive component's weighted density exceeds the negative's, so gating
    there misclassifies the fewest cells of the plate (the Bayes decision boundary of the
    fitted mixture).
    """
    grid = np.linspace(negative.center, positive.center, 4001)
    log_negative = np.log1p(-positive.weight) + normal_logpdf(
        grid, negative.center, negative.spread
    )
    log_positive = np.log(positive.weight) + normal_logpdf(grid, positive.center, positive.spread)
    above = log_positive >= log_negative
    return float(grid[np.argmax(above)]) if above.any() else float(positive.center)


#: grid points of :func:`positive_share_boundary` whose share is computed at a time
_SHARE_BLOCK = 64


def positive_share_boundary(
    transformed: np.ndarray,
    negative: NegativePopulation,
    positive: PositivePopulation,
    min_k: float = 2.0,
    max_cells: int = 20000,
    seed: int = 0,
) -> tuple[float, str]:
    """Lowest glog value where the positive population makes up half of the cells seen there.

    The share is the fitted positive component's density over the observed density of all
    cells (a Gaussian kernel estimate with Scott's bandwidth for the negative population),
    searched from ``min_k`` negative spreads above the negative centre up to the positive
    centre. Using the observed density rather than the fitted negative component counts the
    negatives' real upper tail (necrotic cells' faint Annexin V, light from touching
    neighbours), which a normal curve misses; the fitted positive component pins the gate
    where the valley floor is flat. Falls back to :func:`bayes_boundary` when the share never
    reaches one half.

    Returns
    -------
    tuple[float, str]
        The boundary (glog) and how it was found (``"positive share"`` or ``"model"``).
    """
    x = np.asarray(transformed, dtype=float)
    x = x[np.isfinite(x)]
    low = negative.center + min_k * negative.spread
    if not positive.center > low:
        return low, "model"
    if x.size > max_cells:
        x = np.random.default_rng(seed).choice(x, max_cells, replace=False)
    grid = np.linspace(low, positive.center, 801)
    # Scott's bandwidth for the negative population alone: the whole plate's spread would
    # smooth the valley between the populations full and push the boundary up.
    bandwidth = negative.spread * x.size ** (-1 / 5)
    observed_at = _kde_evaluator(x, bandwidth / max(float(np.std(x)), 1e-12))
    # the grid from below, a block at a time, up to the first point where the share is reached
    for start in range(0, grid.size, _SHARE_BLOCK):
        points = grid[start : start + _SHARE_BLOCK]
        share = positive.weight * normal_pdf(points, positive.center, positive.spread)
        share /= np.maximum(observed_at(points), np.finfo(float).tiny)
        reached = share >= 0.5
        if reached.any():
            return float(points[np.argmax(reached)]), "positive share"
    return max(bayes_boundary(negative, positive), low), "model"
