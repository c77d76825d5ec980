"""The numerical core of the 4PL fit: the problem, its exact plateaus, starts, the optimiser
and the profile.

* **Starts** come from a vectorised grid over (log IC50, Hill slope) on which the two plateaus
  are solved exactly (they enter the model linearly: variable projection with box bounds; the
  sums run over distinct doses, replicate wells pooled).
  The best distinct grid points are then polished together by a batched Levenberg-Marquardt
  with the analytic Jacobian.
* **Gaussian** (unweighted least squares, replicates as separate points) for continuous
  responses; **binomial** (Fisher scoring on counts) when counts are given.
* **Profile** of the objective at fixed log10 IC50 values: for least squares exact variable
  projection over a Hill grid refined by successive parabolas, vectorised over all profile
  points; for counts one batched fit.

Everything here works on arrays; :mod:`screenlib.doseresponse.fit` turns it into a reported fit.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.linalg.lapack import dgesv
from scipy.special import xlogy

from screenlib.doseresponse.model import (
    E0,
    E_INF,
    HILL,
    LN10,
    LOG_IC50,
    model_and_jacobian_rows,
)

_BINOMIAL_EPS = 1e-9
_TINY = 1e-300  # keeps a denominator off zero
_HILL_GRID = np.array([0.3, 0.55, 1.0, 1.8, 3.3, 6.0])
# up to this many systems are solved one by one with LAPACK's gesv (a few microseconds each);
# larger batches go through np.linalg.solve, whose fixed per-call cost is then spread thin.
# Both run the same LAPACK routine, so the solutions are the same to the last bit.
_LOOP_BATCH = 6
_IDENTITIES = {n: np.eye(n) for n in range(1, 5)}  # at most four free parameters


def _solve_batch(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``(B, P, P) x = (B, P)`` by LU with partial pivoting; LinAlgError if any is singular
    or gives a non-finite solution."""
    if len(rhs) <= _LOOP_BATCH:
        solution = np.empty_like(rhs)
        for index in range(len(rhs)):
            solution[index], info = dgesv(system[index], rhs[index])[2:]
            if info != 0:
                raise np.linalg.LinAlgError("singular system")
    else:
        with np.errstate(all="ignore"):
            solution = np.linalg.solve(system, rhs[..., None])[..., 0]
    if not np.isfinite(solution).all():
        raise np.linalg.LinAlgError("singular system")
    return solution


def inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of one small square matrix; LinAlgError when singular or not finite."""
    inverse_matrix, info = dgesv(matrix, _IDENTITIES[len(matrix)])[2:]
    if info != 0 or not np.isfinite(inverse_matrix).all():
        raise np.linalg.LinAlgError("singular matrix")
    return inverse_matrix


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
        rows = np.stack([log_conc, weights, weighted_y], axis=1)
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
    # zero the Jacobian rows of fixed parameters, keep the residual row; with every parameter
    # free and none at a bound the masks are all ones (and zeros): multiplying or adding them
    # changes nothing, so it is skipped
    free_weight = free.astype(float)
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
            gradient, descent = _damped_step(
                augmented, theta, lower, upper, free_weight, all_free, damping, ~done
            )
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


def _damped_step(augmented, theta, lower, upper, free_weight, all_free, damping, active):
    """Gradient and damped Gauss-Newton step (``descent``: minus the step) for each element.

    Only ``active`` elements get a step (the others are converged: their step is zero).

    ``augmented`` stacks the Jacobian rows and the residual row, so that one matrix product
    gives both the Gauss-Newton matrix J J^T and the gradient J r. Parameters held at a bound
    by the gradient, and fixed ones (``free_weight`` 0), do not move (active set).
    """
    normal = np.matmul(augmented, augmented.transpose(0, 2, 1))
    hessian = normal[:, :4, :4]
    gradient = normal[:, :4, 4].copy()
    at_lower = theta <= lower
    at_bound = at_lower | (theta >= upper)
    if at_bound.any():
        blocked = at_bound & (at_lower == (gradient > 0))
        moving = free_weight * ~blocked
        gradient *= moving
        hessian *= moving[:, :, None] * moving[:, None, :]
        all_moving = False
    else:
        moving, all_moving = free_weight, all_free
    diagonal = hessian.diagonal(axis1=1, axis2=2)
    system = hessian.copy()
    added = damping[:, None] * np.maximum(diagonal, 1e-12 * diagonal.max() + 1e-300)
    if not all_moving:
        added += 1.0 - moving  # keeps the rows of parameters that do not move regular
    system.reshape(-1, 16)[:, ::5] += added
    # the step solves system @ step = -gradient; ``descent`` is minus the step (the solution
    # for +gradient, exactly: negation commutes with every rounding)
    if active.all():
        descent = _solve_or_least_squares(system, gradient)
    else:
        descent = np.zeros_like(gradient)
        rows = np.flatnonzero(active)
        descent[rows] = _solve_or_least_squares(system[rows], gradient[rows])
    if not all_moving:
        descent *= moving
    return gradient, descent


def _solve_or_least_squares(system, rhs):
    try:
        return _solve_batch(system, rhs)
    except (np.linalg.LinAlgError, TypeError, FloatingPointError):
        return _solve(system, rhs)


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
    starts = np.stack(
        [log_grid[row], hill_grid[column], e0.ravel()[minima], e_inf.ravel()[minima]], axis=1
    )
    n_extra = min(n_starts - len(starts), len(_PERTURBATIONS))
    if n_extra > 0:
        # moderate perturbations of the best, with exact plateaus there: starts on the valley floor
        shift, factor = _PERTURBATIONS[:n_extra].T
        extra = np.repeat(starts[:1], n_extra, axis=0)
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
    starts = np.stack([log_values, hill_grid[column], e0[pick], e_inf[pick]], axis=1)
    # also try the optimum's own shape, shifted: whichever start ends lower wins
    shifted = np.repeat(best[None], n, axis=0)
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
