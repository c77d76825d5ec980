"""Fit one dose-response curve: 4PL by bounded least squares or binomial likelihood.

The fit is built for speed and for honesty:

* **Starts** come from a vectorised grid over (log IC50, Hill slope) on which the two plateaus
  are solved exactly (they enter the model linearly: variable projection with box bounds; the
  sums run over distinct doses, replicate wells pooled).
  The best distinct grid points are then polished together by a batched Levenberg-Marquardt
  with the analytic Jacobian, and ``starts_agreed`` records whether they reached one optimum.
* **Gaussian** (unweighted least squares, replicates as separate points) for continuous
  responses; **binomial** (Fisher scoring on counts, quasi-binomial dispersion) when
  ``n_positive`` and ``n_total`` are given.
* **Interval**: profile likelihood on log10 IC50 (F-calibrated threshold; quasi-binomial
  dispersion for counts). For least squares the profile is exact variable projection over a
  Hill grid refined by successive parabolas, vectorised over all profile points; for counts
  one batched fit. The interval runs from the optimum out to the first threshold crossing on
  each side (open, i.e. infinite, when the searched range ends first); a log-scale Wald
  interval is the fallback when the profile cannot be computed.
* **Flags** rather than confident numbers when the data do not determine the curve.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.special import chdtrc, chdtri, fdtrc, fdtri, stdtrit, xlogy

from screenlib.doseresponse.model import (
    E0,
    E_INF,
    HILL,
    LN10,
    LOG_IC50,
    integral_over_log_range,
    model_and_jacobian,
    model_and_jacobian_rows,
)
from screenlib.errors import InputError, SettingsError
from screenlib.settings import FitSettings

__all__ = ["CurveFit", "fit_curve", "FLAGS"]

try:  # the gufuncs behind np.linalg.solve / inv, without their per-call wrapper overhead
    from numpy.linalg._umath_linalg import inv as _raw_inv
    from numpy.linalg._umath_linalg import solve1 as _raw_solve1
except ImportError:  # pragma: no cover - other numpy layouts
    _raw_inv = np.linalg.inv

    def _raw_solve1(system, rhs):
        return np.linalg.solve(system, rhs[..., None])[..., 0]


def _solve_gufunc(system, rhs):
    solution = _raw_solve1(system, rhs)
    if not np.isfinite(solution).all():
        raise np.linalg.LinAlgError("singular system")
    return solution


def _inverse(matrix):
    with np.errstate(all="ignore"):
        inverse = _raw_inv(matrix)
    if not np.isfinite(inverse).all():
        raise np.linalg.LinAlgError("singular matrix")
    return inverse


# every flag a fit can carry, with its meaning (written into the report's legend)
FLAGS = {
    "inactive": "no better than a flat line (F-test); IC50 not reported",
    "ic50_above_range": "IC50 above the top tested dose; reported as '> top dose'",
    "ic50_below_range": "IC50 below the lowest tested dose; reported as '< lowest dose'",
    "no_top_plateau": "the upper plateau is not reached within the tested doses",
    "no_bottom_plateau": "the lower plateau is not reached within the tested doses",
    "hill_not_identified": "the Hill slope is at its bound or undetermined by the data",
    "outlier_wells": "one or more wells lie far from the curve (robust residuals)",
    "wide_interval": "the 95 % interval on IC50 spans more than one decade (or is open)",
    "starts_disagree": "the starting points converged to different optima",
    "wrong_direction": "the curve goes the opposite way to the expected direction",
    "too_few_points": "too few usable points or concentrations for a 4-parameter fit",
    "fit_failed": "the fit failed; see notes",
}

_BINOMIAL_EPS = 1e-9
_TINY = 1e-300  # keeps a denominator off zero
_HILL_GRID = np.array([0.3, 0.55, 1.0, 1.8, 3.3, 6.0])


@dataclass(frozen=True)
class CurveFit:
    """Result of one dose-response fit. IC50 values are molar; logs are log10 molar.

    ``ic50_molar`` is the relative IC50 (inflection, halfway between the plateaus) and is NaN
    whenever ``ic50_text`` says why it is not a number (``"> top dose"``, ``"< lowest dose"``,
    ``"inactive"``, ``"not determined"``). ``hill_slope`` follows Prism: negative for a
    decreasing curve. ``emax`` is the fitted response at the top tested dose; ``auc`` is the
    area under the fitted curve over the tested log10 range (response x decades).
    """

    direction: str = "decreasing"
    model: str = "gaussian"
    ic50_molar: float = math.nan
    ic50_text: str = "not determined"
    log_ic50: float = math.nan
    log_ic50_ci_low: float = math.nan
    log_ic50_ci_high: float = math.nan
    ic50_ci_low_molar: float = math.nan
    ic50_ci_high_molar: float = math.nan
    ci_method: str = ""
    pic50: float = math.nan
    pic50_ci_low: float = math.nan
    pic50_ci_high: float = math.nan
    absolute_ic50_molar: float = math.nan
    absolute_ic50_text: str = "not determined"
    absolute_level: float = math.nan
    hill_slope: float = math.nan
    top: float = math.nan
    bottom: float = math.nan
    response_at_zero_dose: float = math.nan
    response_at_infinite_dose: float = math.nan
    emax: float = math.nan
    auc: float = math.nan
    auc_normalized: float = math.nan
    n_points: int = 0
    n_concentrations: int = 0
    n_vehicle: int = 0
    lowest_dose_molar: float = math.nan
    top_dose_molar: float = math.nan
    rss: float = math.nan
    residual_std_error: float = math.nan
    deviance: float = math.nan
    dispersion: float = math.nan
    f_test_p_value: float = math.nan
    confident: bool = False  # a reportable IC50 with no flag that questions it
    # starts_agreed: every start that converged reached the best optimum (at least two did)
    starts_agreed: bool = False
    n_starts: int = 0
    n_starts_agreeing: int = 0
    n_outliers: int = 0
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    outlier_indices: tuple[int, ...] = field(default=(), repr=False)
    # fitted parameters in model order (log_ic50, hill, e0, e_inf), for plotting
    parameters: tuple[float, ...] = field(default=(), repr=False)
    # their Wald standard errors (NaN for fixed parameters)
    parameter_errors: tuple[float, ...] = field(default=(), repr=False)

    def to_row(self) -> dict:
        """A flat dict for one row of ``fits.csv`` (flags and notes joined by ``;``)."""
        row = asdict(self)
        row["flags"] = ";".join(self.flags)
        row["notes"] = "; ".join(self.notes)
        row["outlier_indices"] = ";".join(str(i) for i in self.outlier_indices)
        row.pop("parameters")
        row.pop("parameter_errors")
        # the model's own parameters (for drawing the curve), even where no IC50 is reported
        fitted = self.parameters or (math.nan,) * 4
        row["log_ic50_fit"], row["hill"], row["e0"], row["e_inf"] = fitted
        return row

    @property
    def log_ic50_estimate(self) -> float:
        """The fitted log10 IC50 even when it is not reported (outside range, inactive)."""
        return self.parameters[LOG_IC50] if self.parameters else math.nan


@functools.lru_cache(maxsize=32)
def _hill_grid(hill_min: float, hill_max: float) -> np.ndarray:
    """The start grid of Hill slopes inside the bounds (read-only, cached per bounds)."""
    grid = np.array(sorted(set(np.clip(_HILL_GRID, hill_min, hill_max).tolist())))
    grid.flags.writeable = False
    return grid


class _Problem:
    """Data and constraints of one fit, with batched objective/residual/Jacobian.

    Replicate wells share a concentration, so the plateau solves (:func:`_plateau_fit`) work on
    the distinct dosed concentrations with summed weights: the same sums with a third of the
    logistic evaluations for triplicates.
    """

    def __init__(self, log_conc, is_vehicle, y, weights, binomial, lower, upper, free, fixed):
        self.log_conc = log_conc
        self.is_vehicle = is_vehicle
        self.y = y
        self.weights = weights
        self.unit_weights = bool((weights == 1.0).all())
        self.sqrt_weights = None if self.unit_weights else np.sqrt(weights)
        # multiplying by a mask of ones changes nothing: skip it when there are no vehicle rows
        has_vehicle = bool(is_vehicle.any())
        self.dosed_float = (~is_vehicle).astype(float) if has_vehicle else None
        self.binomial = binomial
        self.lower = lower
        self.upper = upper
        self.free = free
        self.fixed = fixed  # values used where ``free`` is False
        weighted_y = weights * y
        # distinct dosed concentrations, their summed weights and weighted responses (sums in
        # the rows' own order within each concentration: a stable sort)
        rows = np.column_stack([log_conc, weights, weighted_y])
        if has_vehicle:
            rows = rows[~is_vehicle]
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        first = np.flatnonzero(np.concatenate([[True], rows[1:, 0] != rows[:-1, 0]]))
        self.unique_log_conc = rows[first, 0]
        self.unique_weights_wy = np.add.reduceat(rows[:, 1:], first, axis=0)
        self.unique_weights = self.unique_weights_wy[:, 0].copy()
        self.total_weight = float(weights.sum())
        self.total_wy = float(weighted_y.sum())
        self.total_wyy = float((weighted_y * y).sum())
        self.weighted_mean = self.total_wy / self.total_weight
        # the plateau box: (lowest e0, highest e0, lowest e_inf, highest e_inf)
        self.plateau_edges = np.array([lower[E0], upper[E0], lower[E_INF], upper[E_INF]])
        if free[HILL]:
            self.hill_grid = _hill_grid(float(lower[HILL]), float(upper[HILL]))
        else:
            self.hill_grid = np.array([fixed[HILL]])
        if binomial:
            total = weighted_y
            self._saturated = xlogy(total, y) + xlogy(weights - total, 1 - y)

    def evaluate(self, theta):
        """Objective ``(B,)`` and the working Jacobian and residuals as one ``(B, 5, N)`` array.

        Rows 0-3 of the second result are the Jacobian (``PARAMETER_NAMES`` order), row 4 the
        residuals, so that one matrix product gives both the Gauss-Newton matrix and gradient.
        """
        augmented = np.empty((theta.shape[0], 5, self.log_conc.size))
        values, _ = model_and_jacobian_rows(
            theta, self.log_conc, self.dosed_float, out=augmented[:, :4]
        )
        if not self.binomial:
            values -= self.y  # the residuals
            augmented[:, 4] = values
            if self.unit_weights:
                return np.einsum("bn,bn->b", values, values), augmented
            augmented *= self.sqrt_weights
            residual = augmented[:, 4]
            return np.einsum("bn,bn->b", residual, residual), augmented
        p = np.clip(values, _BINOMIAL_EPS, 1 - _BINOMIAL_EPS)
        scale = np.sqrt(self.weights / (p * (1 - p)))
        augmented[:, 4] = (p - self.y) * scale
        augmented[:, :4] *= scale[:, None, :]
        total = self.weights * self.y
        loglik = xlogy(total, p) + xlogy(self.weights - total, 1 - p)
        deviance = 2 * (self._saturated - loglik).sum(axis=1)
        return deviance, augmented


def _solve(system, rhs):
    """Least-squares solve of small systems ``(B, P, P) x = (B, P)`` (the singular fallback)."""
    return (
        np.linalg.lstsq(system[0], rhs[0], rcond=None)[0][None]
        if len(rhs) == 1
        else (
            np.stack(
                [np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(system, rhs, strict=True)]
            )
        )
    )


def _levenberg_marquardt(problem: _Problem, theta, free, max_iter=100, rtol=1e-10, state=None):
    """Batched, box-bounded Levenberg-Marquardt; ``free`` is ``(4,)`` bool (fixed stay put).

    Stops an element when the Gauss-Newton model predicts a relative gain below ``rtol``.
    ``state`` may pass ``(objective, residual, jacobian)`` already known at ``theta`` (inside
    the box, fixed rows zeroed), as returned by an earlier call, to skip the first evaluation.
    Returns ``theta, objective, residual, jacobian, converged`` (residual ``(B, N)`` and
    Jacobian ``(B, 4, N)`` are views of one array).
    """
    lower, upper = problem.lower, problem.upper
    free_weight = free.astype(float)
    fixed_weight = 1.0 - free_weight
    # zero the Jacobian rows of fixed parameters, keep the residual row; with every parameter
    # free and none at a bound the masks are all ones (and zeros): multiplying or adding them
    # changes nothing, so it is skipped
    all_free = bool(free.all())
    row_weight = None if all_free else np.append(free_weight, 1.0)[:, None]
    if state is None:
        theta = np.minimum(np.maximum(theta, lower), upper)
        objective, augmented = problem.evaluate(theta)
        if row_weight is not None:
            augmented *= row_weight
    else:
        theta = theta.copy()
        objective = state[0].copy()
        augmented = np.concatenate([state[2], state[1][:, None]], axis=1)
    damping = np.full(theta.shape[0], 1e-2)
    done = ~np.isfinite(objective)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _iteration in range(max_iter):
            # [J; r] [J; r]^T holds the Gauss-Newton matrix J J^T and the gradient J r
            normal = np.matmul(augmented, augmented.transpose(0, 2, 1))
            hessian = normal[:, :4, :4]
            gradient = normal[:, :4, 4].copy()
            at_lower = theta <= lower
            at_bound = at_lower | (theta >= upper)
            if at_bound.any():
                # parameters held at a bound by the gradient are pinned for this step (active set)
                blocked = at_bound & (at_lower == (gradient > 0))
                moving = free_weight * ~blocked
                gradient *= moving
                hessian *= moving[:, :, None] * moving[:, None, :]
                not_moving = 1.0 - moving
                all_moving = False
            else:
                moving, not_moving, all_moving = free_weight, fixed_weight, all_free
            diagonal = hessian.diagonal(axis1=1, axis2=2)
            system = hessian.copy()
            added = damping[:, None] * np.maximum(diagonal, 1e-12 * diagonal.max() + 1e-300)
            if not all_moving:
                added += not_moving
            system.reshape(-1, 16)[:, ::5] += added
            # the step solves system @ step = -gradient; ``descent`` is minus the step (the
            # solution for +gradient, exactly: negation commutes with every rounding)
            try:
                descent = _solve_gufunc(system, gradient)
            except (np.linalg.LinAlgError, TypeError, FloatingPointError):
                descent = _solve(system, gradient)
            if not all_moving:
                descent *= moving
            # gain the linearised model expects from this step is between -g.step and twice it
            predicted = (gradient * descent).sum(axis=1)
            done |= predicted <= rtol * objective + 1e-300
            if done.all():
                break
            proposal = np.minimum(np.maximum(theta - descent, lower), upper)
            new_objective, new_augmented = problem.evaluate(proposal)
            better = (new_objective <= objective) & ~done
            if row_weight is not None:
                new_augmented *= row_weight
            if better.all():
                theta, objective, augmented = proposal, new_objective, new_augmented
            elif better.any():
                np.copyto(theta, proposal, where=better[:, None])
                np.copyto(objective, new_objective, where=better)
                np.copyto(augmented, new_augmented, where=better[:, None, None])
            damping *= np.where(better, 0.2, 3.0)
            done |= damping > 1e14
    return theta, objective, augmented[:, 4], augmented[:, :4], done


def _fractions(problem: _Problem, log_ic50, hill):
    """Logistic fractions at the distinct dosed concentrations for each (log_ic50, hill) pair.

    ``log_ic50`` and ``hill`` broadcast against each other; the result has their broadcast
    shape plus a last axis over ``problem.unique_log_conc``.
    """
    offset = problem.unique_log_conc - np.asarray(log_ic50)[..., None]
    # sigmoid(z) = 0.5 + 0.5 tanh(z / 2), as in :func:`sigmoid` (the halving folded in, exactly)
    g = offset * (np.asarray(hill)[..., None] * (0.5 * LN10))
    np.tanh(g, out=g)
    g *= 0.5
    g += 0.5
    return g


def _plateaus_for_grid(problem: _Problem, log_ic50, hill):
    """Exact box-constrained least-squares plateaus for each (log_ic50, hill) pair.

    Returns ``(e0, e_inf, objective)`` in the broadcast shape of ``log_ic50`` and ``hill``. For
    the binomial model the count-weighted least squares objective is used (a good start, not
    the deviance).
    """
    g = _fractions(problem, log_ic50, hill)
    return _plateau_fit(problem, g.reshape(-1, g.shape[-1]), g.shape[:-1])


def _plateau_fit(problem: _Problem, g, shape):
    """Plateaus and objective for logistic fractions ``g`` ``(M, K)`` at the distinct doses.

    The plateaus enter the model linearly, so each row is a 2x2 box-bounded least squares
    problem on weighted sums (vehicle rows have ``g = 0`` and enter through the totals only).
    ``g`` is overwritten. Results are reshaped to ``shape``.
    """
    sums = g @ problem.unique_weights_wy
    g_w, b1 = sums[:, 0], sums[:, 1]
    g *= g
    s11 = g @ problem.unique_weights
    s01 = g_w - s11
    s00 = problem.total_weight - 2 * g_w + s11
    b0 = problem.total_wy - b1
    lo0, hi0 = problem.lower[E0], problem.upper[E0]
    lo1, hi1 = problem.lower[E_INF], problem.upper[E_INF]
    free0, free1 = problem.free[E0], problem.free[E_INF]
    if not (free0 and free1):
        # one or both plateaus fixed: the free one (if any) is a clipped 1-D solve
        a = np.full_like(s00, problem.fixed[E0])
        b = np.full_like(s00, problem.fixed[E_INF])
        if free1:
            b = _clipped_solve(b1 - a * s01, s11, lo1, hi1)
        elif free0:
            a = _clipped_solve(b0 - b * s01, s00, lo0, hi0)
        cost = _quadratic_cost(problem, a, b, b0, b1, s00, s01, s11)
        return a.reshape(shape), b.reshape(shape), cost.reshape(shape)
    s00_s11 = s00 * s11
    det = s00_s11 - s01 * s01
    solvable = det > 1e-12 * (s00_s11 + _TINY)
    a = b0 * s11 - b1 * s01
    b = b1 * s00 - b0 * s01
    if solvable.all():
        a /= det
        b /= det
        # at the solution of the normal equations the quadratic reduces to yy - a b0 - b b1
        cost = problem.total_wyy - a * b0
        cost -= b * b1
    else:
        # where the logistic is flat over the data (det ~ 0) the model is a constant: both
        # plateaus at the weighted mean is then an optimum
        a = np.divide(a, det, out=np.full_like(det, problem.weighted_mean), where=solvable)
        b = np.divide(b, det, out=np.full_like(det, problem.weighted_mean), where=solvable)
        cost = _quadratic_cost(problem, a, b, b0, b1, s00, s01, s11)
    # the usual case: every optimum inside the box (a NaN fails these tests and goes on)
    if lo0 <= a.min() and a.max() <= hi0 and lo1 <= b.min() and b.max() <= hi1:
        return a.reshape(shape), b.reshape(shape), cost.reshape(shape)
    outside = np.flatnonzero(~((a >= lo0) & (a <= hi0) & (b >= lo1) & (b <= hi1)))
    if outside.size:
        # there the optimum lies on an edge of the box: best point on each of the four edges
        sums = b0[outside], b1[outside], s00[outside], s01[outside], s11[outside]
        a[outside], b[outside], cost[outside] = _edge_optimum(problem, *sums)
    return a.reshape(shape), b.reshape(shape), cost.reshape(shape)


def _clipped_solve(numerator, denominator, low, high):
    """``numerator / denominator`` clipped to ``[low, high]`` (a 1-D bounded least squares)."""
    return np.minimum(np.maximum(numerator / (denominator + _TINY), low), high)


def _quadratic_cost(problem: _Problem, a, b, b0, b1, s00, s01, s11):
    """Weighted residual sum of squares of plateaus ``(a, b)`` from the sufficient sums."""
    yy = problem.total_wyy
    return yy - 2 * a * b0 - 2 * b * b1 + a * a * s00 + 2 * a * b * s01 + b * b * s11


def _edge_optimum(problem: _Problem, b0, b1, s00, s01, s11):
    """Best plateaus on the boundary of the box: ``(a, b, cost)`` for each row.

    Candidates: ``a`` at either bound with the best ``b`` for it, and ``b`` at either bound
    with the best ``a`` (rows 0-3 of a ``(4, M)`` stack).
    """
    a_all = np.empty((4, b0.size))
    b_all = np.empty((4, b0.size))
    a_all[:2] = problem.plateau_edges[:2, None]
    b_all[2:] = problem.plateau_edges[2:, None]
    lo0, hi0 = problem.plateau_edges[:2]
    lo1, hi1 = problem.plateau_edges[2:]
    b_all[:2] = _clipped_solve(b1 - a_all[:2] * s01, s11, lo1, hi1)
    a_all[2:] = _clipped_solve(b0 - b_all[2:] * s01, s00, lo0, hi0)
    costs = _quadratic_cost(problem, a_all, b_all, b0, b1, s00, s01, s11)
    pick = np.argmin(costs, axis=0), np.arange(b0.size)
    return a_all[pick], b_all[pick], costs[pick]


def _grid_starts(problem: _Problem, log_low, log_high, n_starts):
    """Starting points: local minima of a (log IC50, Hill) grid with exact plateaus.

    The best grid point comes first; further local minima (other basins) follow, and the
    remaining starts are moderate perturbations of the best (a check that its basin is stable).
    """
    lower, upper = problem.lower, problem.upper
    n_log = min(max(math.ceil((log_high - log_low + 2) / 0.25), 12), 40)
    log_grid = _linspace(
        max(log_low - 1, float(lower[LOG_IC50])), min(log_high + 1, float(upper[LOG_IC50])), n_log
    )
    hill_grid = problem.hill_grid
    # surface over (log IC50, Hill): rows are log IC50 values, columns Hill slopes
    e0, e_inf, surface = _plateaus_for_grid(problem, log_grid[:, None], hill_grid)
    cost = surface.ravel()
    surface = np.where(np.isfinite(surface), surface, np.inf)
    # local minima over the four grid neighbours
    is_minimum = np.isfinite(surface)
    is_minimum[1:] &= surface[1:] <= surface[:-1]
    is_minimum[:-1] &= surface[:-1] <= surface[1:]
    is_minimum[:, 1:] &= surface[:, 1:] <= surface[:, :-1]
    is_minimum[:, :-1] &= surface[:, :-1] <= surface[:, 1:]
    minima = np.flatnonzero(is_minimum)
    minima = minima[np.argsort(cost[minima], kind="stable")][:n_starts]
    if minima.size == 0:
        minima = np.array([int(np.argmin(surface))])
    row, column = np.divmod(minima, hill_grid.size)
    starts = np.column_stack(
        [log_grid[row], hill_grid[column], e0.ravel()[minima], e_inf.ravel()[minima]]
    )
    n_extra = min(n_starts - len(starts), len(_PERTURBATIONS))
    if n_extra > 0:
        # moderate perturbations of the best, with exact plateaus there: starts on the valley floor
        shift, factor = _PERTURBATIONS[:n_extra].T
        extra = np.tile(starts[0], (n_extra, 1))
        extra[:, LOG_IC50] += shift
        extra[:, HILL] *= factor
        extra = np.minimum(np.maximum(extra, lower), upper)
        extra[:, E0], extra[:, E_INF], _ = _plateaus_for_grid(
            problem, extra[:, LOG_IC50], extra[:, HILL]
        )
        starts = np.vstack([starts, extra])
    starts = np.minimum(np.maximum(starts, lower), upper)
    return np.where(problem.free, starts, problem.fixed)


# (shift in log IC50, factor on the Hill slope) of the perturbed starts, in order of use
_PERTURBATIONS = np.array([(0.3, 1.0), (-0.3, 1.0), (0.0, 1.6), (0.0, 1 / 1.6), (0.3, 1.6)])


def _grid_starts_at(problem: _Problem, log_ic50: float):
    """One start at a given log IC50: the best Hill slope of the grid with exact plateaus."""
    hills = problem.hill_grid
    e0, e_inf, cost = _plateaus_for_grid(problem, np.full(hills.size, log_ic50), hills)
    k = int(np.argmin(cost))
    start = np.array([[log_ic50, hills[k], e0[k], e_inf[k]]])
    return np.where(problem.free, start, problem.fixed)


def _profile_gaussian(
    problem: _Problem, best, log_values, n_hill=10, n_refine=3, refine_below=np.inf
):
    """Least-squares profile at fixed log IC50 values, vectorised over all of them.

    The plateaus are exact for each (log IC50, Hill) pair (variable projection); the Hill slope
    is found by a coarse grid in log Hill, then refined by successive parabolic interpolation
    on the bracketing triple -- only where the coarse value is below ``refine_below`` (rows far
    beyond the interval's threshold need no precision).
    """
    if not problem.free[HILL]:
        return _plateaus_for_grid(problem, log_values, problem.fixed[HILL])[2]
    grid = _linspace(float(np.log(problem.lower[HILL])), float(np.log(problem.upper[HILL])), n_hill)
    cost = _plateaus_for_grid(problem, log_values[:, None], np.exp(grid))[2]
    coarse = cost.min(axis=1)
    rows = np.flatnonzero(coarse < refine_below)
    if rows.size == 0:
        return coarse
    cost = cost[rows]
    k = np.minimum(np.maximum(np.argmin(cost, axis=1), 1), n_hill - 2)
    index = np.arange(rows.size)
    a, b, c = grid[k - 1], grid[k], grid[k + 1]
    fa, fb, fc = cost[index, k - 1], cost[index, k], cost[index, k + 1]
    best_value = coarse[rows]
    refined_logs = log_values[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(n_refine):
            # vertex of the parabola through the bracketing triple
            b_minus_a, b_minus_c = b - a, b - c
            p = b_minus_a * (fb - fc)
            q = b_minus_c * (fb - fa)
            v = b - 0.5 * (b_minus_a * p - b_minus_c * q) / (p - q)
            # (a NaN or infinite vertex fails a < v < c: the brackets are finite grid points)
            usable = (v > a) & (v < c) & (np.abs(v - b) > 1e-9)
            if not usable.all():  # bisect the larger side instead
                midpoint = np.where(b - a > c - b, 0.5 * (a + b), 0.5 * (b + c))
                v = np.where(usable, v, midpoint)
            fv = _plateaus_for_grid(problem, refined_logs, np.exp(v))[2]
            best_value = np.minimum(best_value, fv)
            better = fv < fb
            # new triple: the lower of (b, v) in the middle, its neighbours around it; the
            # other of the two replaces a (v left of b and worse, or right of b and better)
            # or c (the two remaining cases), so a stays where ``v < b`` equals ``better``
            keep_a = (v < b) == better
            other, f_other = np.where(better, b, v), np.where(better, fb, fv)
            a, fa = np.where(keep_a, a, other), np.where(keep_a, fa, f_other)
            c, fc = np.where(keep_a, other, c), np.where(keep_a, f_other, fc)
            b, fb = np.where(better, v, b), np.where(better, fv, fb)
    coarse[rows] = best_value
    return coarse


def _profile(problem: _Problem, best, log_values, refine_below=np.inf):
    """Profile objective at fixed log IC50 values (one batched fit over the other parameters)."""
    if not problem.binomial:
        return _profile_gaussian(problem, best, log_values, refine_below=refine_below)
    n = log_values.size
    hill_grid = problem.hill_grid if problem.free[HILL] else np.array([best[HILL]])
    e0, e_inf, cost = _plateaus_for_grid(problem, log_values[:, None], hill_grid)
    column = np.argmin(cost, axis=1)
    pick = np.arange(n), column
    starts = np.column_stack([log_values, hill_grid[column], e0[pick], e_inf[pick]])
    # also try the optimum's own shape, shifted: whichever start ends lower wins
    shifted = np.tile(best, (n, 1))
    shifted[:, LOG_IC50] = log_values
    starts = np.vstack([starts, shifted])
    starts = np.where(problem.free, starts, problem.fixed)
    starts[:, LOG_IC50] = np.concatenate([log_values, log_values])
    free = problem.free.copy()
    free[LOG_IC50] = False
    objective = _levenberg_marquardt(problem, starts, free, max_iter=25, rtol=1e-8)[1]
    objective = np.where(np.isfinite(objective), objective, np.inf).reshape(2, n).min(axis=0)
    return np.where(np.isfinite(objective), objective, np.nan)


def _linspace(start: float, stop: float, num: int) -> np.ndarray:
    """``np.linspace(start, stop, num)`` for scalars and ``num >= 2`` (same values), faster."""
    values = np.arange(num, dtype=float)
    values *= (stop - start) / (num - 1)
    values += start
    values[-1] = stop
    return values


def _fraction_at(log_conc: float, log_ic50: float, hill: float) -> float:
    """Scalar logistic fraction (how far from e0 towards e_inf) at one log concentration."""
    return 0.5 + 0.5 * math.tanh(0.5 * hill * (log_conc - log_ic50) * LN10)


def _inverse_at(level: float, log_ic50: float, hill: float, e0: float, e_inf: float) -> float:
    """Scalar log10 concentration where the curve crosses ``level`` (NaN when it never does)."""
    if not (math.isfinite(level) and e_inf != e0):
        return math.nan
    fraction = (level - e0) / (e_inf - e0)
    if not 0.0 < fraction < 1.0:
        return math.nan
    return log_ic50 + math.log10(fraction / (1.0 - fraction)) / hill


def _fitted_p(problem: _Problem, theta) -> np.ndarray:
    """Model values at the data for one parameter set."""
    return model_and_jacobian(theta[None, :], problem.log_conc, problem.is_vehicle)[0][0]


def _median(values: np.ndarray) -> float:
    """Median of a 1-D array, as ``np.median`` (NaN if any value is NaN), without its overhead."""
    ordered = np.sort(values)
    n = ordered.size
    if n == 0 or math.isnan(ordered[-1]):
        return math.nan
    middle = n // 2
    if n % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _power_of_ten(value: float) -> float:
    try:
        return 10.0**value
    except OverflowError:
        return math.inf


def _crossing(centre, values, excess, threshold, side):
    """First crossing of ``threshold`` moving away from ``centre`` on one side (log10 units)."""
    if side > 0:
        mask = values > centre
        xs, ys = values[mask], excess[mask]
    else:
        mask = values < centre
        xs, ys = values[mask][::-1], excess[mask][::-1]
    previous_x, previous_root = centre, 0.0
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if not math.isfinite(y):
            continue
        root = math.sqrt(max(y, 0.0))
        if y >= threshold:
            # the signed root of the profile is close to linear in log IC50
            target = math.sqrt(threshold)
            t = (target - previous_root) / (root - previous_root) if root > previous_root else 1.0
            return previous_x + t * (x - previous_x)
        previous_x, previous_root = x, root
    return side * math.inf


def _check_settings(settings: FitSettings) -> None:
    """Raise ``SettingsError`` for fit settings that cannot work."""
    problems = []
    if not 0 < settings.hill_min < settings.hill_max:
        problems.append("'fit.hill_min' must be positive and below 'fit.hill_max'")
    if not 0 < settings.inactive_p_value < 1:
        problems.append("'fit.inactive_p_value' must lie between 0 and 1")
    if not 0 < settings.confidence_level < 1:
        problems.append("'fit.confidence_level' must lie between 0 and 1")
    if not 0.5 < settings.plateau_fraction < 1:
        problems.append("'fit.plateau_fraction' must lie between 0.5 and 1")
    for name in ("outlier_z", "max_interval_decades", "max_plateau_uncertainty", "n_starts"):
        if not getattr(settings, name) > 0:
            problems.append(f"'fit.{name}' must be positive")
    if not settings.extrapolation_decades >= 0:
        problems.append("'fit.extrapolation_decades' must not be negative")
    if settings.fix_hill is not None and not settings.fix_hill != 0:
        problems.append("'fit.fix_hill' must not be 0")
    if problems:
        raise SettingsError("; ".join(problems))


def _clean_inputs(concentration_molar, response, n_positive, n_total):
    """Arrays of usable rows and notes on what was dropped."""
    concentration = np.asarray(concentration_molar, dtype=float).ravel()
    notes = []
    if n_positive is not None or n_total is not None:
        if n_positive is None or n_total is None:
            raise InputError("binomial fit needs both n_positive and n_total")
        positive = np.asarray(n_positive, dtype=float).ravel()
        total = np.asarray(n_total, dtype=float).ravel()
        if not (positive.size == total.size == concentration.size):
            raise InputError(
                f"n_positive ({positive.size}), n_total ({total.size}) and concentrations "
                f"({concentration.size}) must have the same length"
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            y = positive / total
        usable = np.isfinite(concentration) & np.isfinite(y) & (total > 0)
        usable &= (positive >= 0) & (positive <= total)
        weights = np.where(usable, total, 0.0)
    else:
        y = np.asarray(response, dtype=float).ravel()
        if y.size != concentration.size:
            raise InputError(
                f"response ({y.size}) and concentrations ({concentration.size}) must have the "
                "same length"
            )
        usable = np.isfinite(concentration) & np.isfinite(y)
        weights = np.ones_like(y)
    missing = int((~usable).sum())
    if missing:
        notes.append(f"dropped {missing} row(s) with missing or invalid values")
    negative = usable & (concentration < 0)
    if negative.any():
        notes.append(f"dropped {int(negative.sum())} row(s) with negative concentration")
        usable &= ~negative
    return concentration, y, weights, usable, notes


def fit_curve(
    concentration_molar,
    response=None,
    *,
    n_positive=None,
    n_total=None,
    direction: str = "auto",
    settings: FitSettings | None = None,
    response_bounds: tuple[float, float] | None = None,
    absolute_level: float | None = None,
) -> CurveFit:
    """Fit a 4PL dose-response curve and report IC50, its interval and quality flags.

    Parameters
    ----------
    concentration_molar
        Concentration of every point (replicate wells as separate points); 0 for vehicle.
    response
        Response of every point (e.g. viability, relative cell count). Omit when giving counts.
    n_positive, n_total
        Counts per point (e.g. apoptotic and total cells): fitted with a binomial likelihood.
    direction
        ``"decreasing"``, ``"increasing"`` or ``"auto"`` (from the fit).
    settings
        :class:`~screenlib.settings.FitSettings` (starts, fixed plateaus, thresholds).
    response_bounds
        Box for both plateaus; default ``(0, 1)`` for counts, otherwise the data range widened
        by one range on each side.
    absolute_level
        Response level of the absolute IC50; default half the vehicle response for decreasing
        curves and 0.5 for increasing fractions.

    Returns
    -------
    CurveFit
        Never raises for bad data: a failed fit is a row with the ``fit_failed`` flag.

    Examples
    --------
    >>> conc = np.repeat(1e-5 / 3.0 ** np.arange(10), 3)
    >>> y = 100 / (1 + conc / 2e-8)
    >>> fit = fit_curve(conc, y, direction="decreasing")
    >>> round(fit.ic50_molar * 1e9, 3), fit.flags
    (20.0, ())
    """
    settings = settings or FitSettings()
    _check_settings(settings)
    if direction not in ("auto", "decreasing", "increasing"):
        raise InputError(
            f"direction must be 'auto', 'decreasing' or 'increasing', not {direction!r}"
        )
    concentration, y, weights, usable, notes = _clean_inputs(
        concentration_molar, response, n_positive, n_total
    )
    binomial = n_positive is not None
    try:
        result = _fit(
            concentration[usable],
            y[usable],
            weights[usable],
            binomial,
            direction,
            settings,
            response_bounds,
            absolute_level,
            notes,
        )
    except Exception as error:  # noqa: BLE001 - a failed fit is a flagged row, not a crash
        return CurveFit(
            direction=direction,
            model="binomial" if binomial else "gaussian",
            n_points=int(usable.sum()),
            flags=("fit_failed",),
            notes=(*notes, f"fit failed: {type(error).__name__}: {error}"),
        )
    # outlier indices refer to the caller's rows, not to the rows kept
    if not result.outlier_indices or usable.all():
        return result
    kept = np.flatnonzero(usable)
    return replace(result, outlier_indices=tuple(int(kept[i]) for i in result.outlier_indices))


def _fit(concentration, y, weights, binomial, direction, settings, bounds, absolute_level, notes):
    model = "binomial" if binomial else "gaussian"
    is_vehicle = concentration == 0
    dosed = concentration[~is_vehicle]
    n_points = int(y.size)
    n_conc = len(set(dosed.tolist()))
    base = dict(
        direction=direction,
        model=model,
        n_points=n_points,
        n_concentrations=n_conc,
        n_vehicle=int(is_vehicle.sum()),
        lowest_dose_molar=float(dosed.min()) if dosed.size else math.nan,
        top_dose_molar=float(dosed.max()) if dosed.size else math.nan,
    )
    n_fixed = sum(v is not None for v in (settings.fix_top, settings.fix_bottom, settings.fix_hill))
    if n_conc < 3 or n_points < 6 - n_fixed or n_conc + (base["n_vehicle"] > 0) < 4 - n_fixed:
        notes = [*notes, f"{n_points} point(s) at {n_conc} concentration(s) cannot fix a 4PL"]
        return CurveFit(**base, flags=("too_few_points",), notes=tuple(notes))

    log_conc = np.where(is_vehicle, 0.0, np.log10(np.where(is_vehicle, 1.0, concentration)))
    dosed_log_conc = log_conc[~is_vehicle]
    log_low, log_high = float(dosed_log_conc.min()), float(dosed_log_conc.max())

    # plateau box
    if bounds is None:
        if binomial:
            bounds = (0.0, 1.0)
        else:
            y_low, y_high = float(y.min()), float(y.max())
            spread = (y_high - y_low) or max(abs(y_high), 1.0)
            bounds = (y_low - spread, y_high + spread)
    extrapolate = settings.extrapolation_decades
    lower = np.array([log_low - extrapolate, settings.hill_min, bounds[0], bounds[0]])
    upper = np.array([log_high + extrapolate, settings.hill_max, bounds[1], bounds[1]])

    # which way does it go? needed to map fixed top/bottom onto e0/e_inf
    if direction == "auto":
        quartile_low, quartile_high = np.quantile(log_conc[~is_vehicle], [0.25, 0.75])
        low_end = is_vehicle | (log_conc <= quartile_low)
        high_end = ~is_vehicle & (log_conc >= quartile_high)
        weighted_y = weights * y  # weighted means as np.average computes them
        trend = weighted_y[high_end].sum() / weights[high_end].sum() - (
            weighted_y[low_end].sum() / weights[low_end].sum()
        )
        expected = "increasing" if trend > 0 else "decreasing"
    else:
        expected = direction
    free = np.ones(4, bool)
    fixed = np.zeros(4)
    top_index, bottom_index = (E0, E_INF) if expected == "decreasing" else (E_INF, E0)
    for index, value in ((top_index, settings.fix_top), (bottom_index, settings.fix_bottom)):
        if value is not None:
            free[index] = False
            fixed[index] = value
            lower[index] = min(lower[index], value)
            upper[index] = max(upper[index], value)
    if settings.fix_hill is not None:
        free[HILL] = False
        fixed[HILL] = abs(settings.fix_hill)
        lower[HILL] = min(lower[HILL], fixed[HILL])
        upper[HILL] = max(upper[HILL], fixed[HILL])

    problem = _Problem(log_conc, is_vehicle, y, weights, binomial, lower, upper, free, fixed)
    n_free = int(free.sum())
    dof = n_points - n_free
    if dof < 1:
        notes = [*notes, f"{n_points} points for {n_free} free parameters"]
        return CurveFit(**base, flags=("too_few_points",), notes=tuple(notes))

    flags: list[str] = []
    level = settings.confidence_level
    scale_y = 1e-12 * float((weights * y * y).sum()) + 1e-300
    starts = _grid_starts(problem, log_low, log_high, settings.n_starts)
    # all starts get a short polish; the best then goes on alone to full convergence
    thetas, objectives, residuals, jacobians, converged = _levenberg_marquardt(
        problem, starts, free, max_iter=6
    )
    if np.isfinite(objectives).all():
        best_index = int(np.argmin(objectives))
    else:
        best_index = int(np.nanargmin(np.where(np.isfinite(objectives), objectives, np.nan)))
    if not converged[best_index]:
        # continue from where the short polish left the best start
        best_slice = slice(best_index, best_index + 1)
        polished = _levenberg_marquardt(
            problem,
            thetas[best_slice],
            free,
            state=(objectives[best_slice], residuals[best_slice], jacobians[best_slice]),
        )
        for array, value in zip((thetas, objectives, residuals, jacobians), polished, strict=False):
            array[best_index] = value[0]
    all_thetas, all_objectives, all_converged = thetas, objectives, converged.copy()
    all_converged[best_index] = True
    for attempt in range(3):
        best = thetas[best_index].copy()
        objective = float(objectives[best_index])
        residual = residuals[best_index]
        jacobian = jacobians[best_index][free].T
        scale_obj = max(objective, scale_y)

        # dispersion and the profile threshold
        if binomial:
            pearson = float(residual @ residual)
            dispersion = max(pearson / dof, 1.0)
            variance_scale = dispersion
            overdispersed = pearson / dof > 1.0
        else:
            dispersion = math.nan
            variance_scale = objective / dof
            overdispersed = True
        if overdispersed:
            threshold = variance_scale * float(fdtri(1, dof, level))
        else:
            threshold = float(chdtri(1, 1 - level))

        # Wald standard errors (log scale): profile grid spacing and fallback interval
        standard_errors = np.full(4, math.nan)
        information = jacobian.T @ jacobian
        try:
            covariance = _inverse(information)
        except np.linalg.LinAlgError:
            try:
                covariance = np.linalg.pinv(information)
            except np.linalg.LinAlgError:
                covariance = np.full(information.shape, np.nan)
        variances = variance_scale * np.diagonal(covariance)
        standard_errors[np.flatnonzero(free)] = np.sqrt(np.maximum(variances, 0.0))

        # profile-likelihood interval on log IC50
        log_ic50 = float(best[LOG_IC50])
        se = float(standard_errors[LOG_IC50])
        # decades for loose fits, multiples of the Wald error where the crossing should be
        offsets = [0.25, 0.5, 1.0, 2.0, 3.0]
        if math.isfinite(se) and se > 0:
            offsets += [se * k for k in (1.0, 1.5, 1.8, 2.1, 2.4, 3.0, 4.0)]
        low_bound, high_bound = float(lower[LOG_IC50]), float(upper[LOG_IC50])
        points = {
            min(max(log_ic50 + sign * o, low_bound), high_bound)
            for o in offsets
            for sign in (-1, 1)
        }
        points |= {low_bound, high_bound}
        points.discard(log_ic50)
        grid = np.array(sorted(points))
        try:
            excess = _profile(problem, best, grid, objective + 6 * threshold) - objective
        except (FloatingPointError, np.linalg.LinAlgError, ValueError):
            excess = np.full(grid.size, np.nan)
        finite_excess = np.where(np.isfinite(excess), excess, np.inf)
        lowest = int(np.argmin(finite_excess)) if np.isfinite(finite_excess).any() else -1
        if attempt == 2 or lowest < 0 or excess[lowest] >= -1e-6 * scale_obj - 1e-12:
            break
        # the profile found a better optimum than the starts: polish from there and redo
        restart = _grid_starts_at(problem, grid[lowest])
        new = _levenberg_marquardt(problem, restart, free)[:4]
        if not float(new[1][0]) < objective:
            break
        note = "the profile found a better optimum than the starts; refitted"
        notes = notes if note in notes else [*notes, note]
        thetas, objectives, residuals, jacobians = new
        best_index = 0
        all_thetas = np.vstack([all_thetas, thetas])
        all_objectives = np.concatenate([all_objectives, objectives])
        all_converged = np.concatenate([all_converged, [True]])

    # did the starts agree? (a start far off in log IC50 that fits about as well is ambiguity)
    near = all_objectives - objective <= 1e-6 * scale_obj + 1e-12
    same = np.abs(all_thetas[:, LOG_IC50] - log_ic50) < 0.01
    n_agree = int((near & same).sum())
    # starts still descending when the short polish ended are neither for nor against
    starts_agreed = bool(np.all((near & same) | ~all_converged)) and n_agree >= 2
    rival = (all_objectives - objective < threshold) & (
        np.abs(all_thetas[:, LOG_IC50] - log_ic50) > 0.3
    )
    thetas = all_thetas

    ci_method = "profile"
    if np.isfinite(excess).any():
        ci_low = _crossing(log_ic50, grid, excess, threshold, -1)
        ci_high = _crossing(log_ic50, grid, excess, threshold, +1)
    else:
        ci_method = "wald (log scale)"
        half = float(stdtrit(dof, 0.5 + level / 2)) * se
        ci_low, ci_high = log_ic50 - half, log_ic50 + half

    # flat model and F-test
    if binomial:
        p_flat = float(np.sum(weights * y) / np.sum(weights))
        flat_obj = float(problem.evaluate(np.array([[0.0, 1.0, p_flat, p_flat]]))[0][0])
    else:
        mean = problem.weighted_mean
        flat_obj = float(np.sum(weights * (y - mean) ** 2))
    extra = n_free - 1
    gain = max(flat_obj - objective, 0.0)
    if flat_obj <= scale_y:
        p_value = 1.0  # nothing varies
    elif not overdispersed:
        p_value = float(chdtrc(extra, gain))
    elif objective <= scale_y:
        p_value = 0.0  # a perfect fit of a varying response
    else:
        denominator = pearson / dof if binomial else objective / dof
        p_value = float(fdtrc(extra, dof, (gain / extra) / denominator))
    log_ic50, hill, e0, e_inf = best.tolist()
    fitted_direction = "increasing" if e_inf > e0 else "decreasing"
    inactive = not p_value <= settings.inactive_p_value or e_inf == e0
    if direction != "auto" and fitted_direction != direction and not inactive:
        flags.append("wrong_direction")
        inactive = True
    if inactive:
        flags.append("inactive")
    reported_direction = direction if direction != "auto" else fitted_direction
    if rival.any() and not inactive:
        flags.append("starts_disagree")

    # plateaus reached?
    g_low = _fraction_at(log_low, log_ic50, hill)
    g_high = _fraction_at(log_high, log_ic50, hill)
    reach = settings.plateau_fraction
    # a plateau is missing when the curve has not got there by the end of the tested range,
    # or when the data leave it so loose that its 95 % range exceeds a fifth of the span
    span_abs = abs(e_inf - e0)
    loose_limit = settings.max_plateau_uncertainty * span_abs / 1.96
    high_dose_missing = free[E_INF] and (
        g_high < reach or not standard_errors[E_INF] <= loose_limit
    )
    zero_dose_missing = free[E0] and (
        (not is_vehicle.any() and g_low > 1 - reach) or not standard_errors[E0] <= loose_limit
    )
    if not inactive:
        high_name, zero_name = (
            ("no_bottom_plateau", "no_top_plateau")
            if fitted_direction == "decreasing"
            else ("no_top_plateau", "no_bottom_plateau")
        )
        if zero_dose_missing:
            flags.append(zero_name)
        if high_dose_missing:
            flags.append(high_name)
    hill_se = standard_errors[HILL]
    at_bound = free[HILL] and (
        hill <= settings.hill_min * (1 + 1e-3) or hill >= settings.hill_max * (1 - 1e-3)
    )
    # undetermined: at a bound, or its 95 % Wald range reaches a bound or zero
    hill_reach = 2.0 * hill_se
    loose = free[HILL] and not (
        hill_se < hill
        and settings.hill_min < hill - hill_reach
        and hill + hill_reach < settings.hill_max
    )
    if not inactive and (at_bound or loose):
        flags.append("hill_not_identified")

    # outlier wells from robust residuals
    # Pearson residuals for counts, plain residuals for continuous responses. The scale is the
    # MAD (robust to the outliers themselves), floored at 0.7 x the residual standard error so
    # that an unluckily small MAD from ~30 points does not turn ordinary wells into outliers.
    raw = residual
    robust_sigma = 1.4826 * _median(np.abs(raw - _median(raw)))
    floor = 1.0 if binomial else 1e-3 * abs(e_inf - e0) + 1e-9 * (abs(e0) + abs(e_inf) + 1e-300)
    robust_sigma = max(robust_sigma, floor, 0.7 * math.sqrt(float(raw @ raw) / dof))
    outliers = np.flatnonzero(np.abs(raw) > settings.outlier_z * robust_sigma)
    if outliers.size:
        flags.append("outlier_wells")

    # reported IC50
    width = ci_high - ci_low
    if not inactive and not (width <= settings.max_interval_decades):
        flags.append("wide_interval")
    if inactive:
        ic50_text = "inactive"
        ic50 = math.nan
        reported_log = math.nan
    elif log_ic50 > log_high:
        flags.append("ic50_above_range")
        ic50_text, ic50, reported_log = "> top dose", math.nan, math.nan
    elif log_ic50 < log_low:
        flags.append("ic50_below_range")
        ic50_text, ic50, reported_log = "< lowest dose", math.nan, math.nan
    else:
        ic50 = 10.0**log_ic50
        ic50_text = f"{ic50:.4g}"
        reported_log = log_ic50

    # absolute IC50
    if absolute_level is None:
        if fitted_direction == "decreasing" or reported_direction == "decreasing":
            reference = (
                float(np.average(y[is_vehicle], weights=weights[is_vehicle]))
                if is_vehicle.any()
                else e0
            )
            absolute_level = 0.5 * reference
        elif binomial or (bounds[0] >= 0 and bounds[1] <= 1):
            absolute_level = 0.5
        else:
            absolute_level = math.nan
    log_absolute = _inverse_at(absolute_level, log_ic50, hill, e0, e_inf)
    if inactive:
        absolute_text, absolute = "inactive", math.nan
    elif not np.isfinite(log_absolute):
        absolute_text, absolute = "not reached", math.nan
    elif log_absolute > log_high:
        absolute_text, absolute = "> top dose", math.nan
    elif log_absolute < log_low:
        absolute_text, absolute = "< lowest dose", math.nan
    else:
        absolute = 10.0**log_absolute
        absolute_text = f"{absolute:.4g}"

    auc = integral_over_log_range(log_low, log_high, log_ic50, hill, e0, e_inf)
    span = log_high - log_low
    emax = e0 + (e_inf - e0) * g_high
    if binomial:  # residual sum of squares of the fractions themselves
        rss = float(np.sum((_fitted_p(problem, best) - y) ** 2))
    else:
        rss = objective
    finite_ci = reported_log == reported_log
    confident = finite_ci and not (set(flags) - {"outlier_wells"})
    return CurveFit(
        **{**base, "direction": reported_direction},
        ic50_molar=ic50,
        ic50_text=ic50_text,
        log_ic50=reported_log,
        log_ic50_ci_low=float(ci_low),
        log_ic50_ci_high=float(ci_high),
        ic50_ci_low_molar=_power_of_ten(ci_low),
        ic50_ci_high_molar=_power_of_ten(ci_high),
        ci_method=ci_method,
        pic50=-reported_log,
        pic50_ci_low=-float(ci_high) if finite_ci else math.nan,
        pic50_ci_high=-float(ci_low) if finite_ci else math.nan,
        absolute_ic50_molar=absolute,
        absolute_ic50_text=absolute_text,
        absolute_level=float(absolute_level),
        hill_slope=hill if fitted_direction == "increasing" else -hill,
        top=max(e0, e_inf),
        bottom=min(e0, e_inf),
        response_at_zero_dose=e0,
        response_at_infinite_dose=e_inf,
        emax=emax,
        auc=auc,
        auc_normalized=auc / span if span > 0 else math.nan,
        rss=rss,
        residual_std_error=math.sqrt(rss / dof),
        deviance=objective if binomial else math.nan,
        dispersion=dispersion,
        f_test_p_value=p_value,
        confident=bool(confident),
        starts_agreed=bool(starts_agreed),
        n_starts=len(thetas),
        n_starts_agreeing=n_agree,
        n_outliers=int(outliers.size),
        flags=tuple(flags),
        notes=tuple(notes),
        outlier_indices=tuple(int(i) for i in outliers),
        parameters=(log_ic50, hill, e0, e_inf),
        parameter_errors=tuple(float(v) for v in standard_errors),
    )
