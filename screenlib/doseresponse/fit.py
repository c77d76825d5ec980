"""Fit one dose-response curve: 4PL by bounded least squares or binomial likelihood.

The fit is built for speed and for honesty (the numerical core is in
:mod:`screenlib.doseresponse._solver`):

* **Starts** from a (log IC50, Hill) grid with exact plateaus, polished together by a batched
  Levenberg-Marquardt; ``starts_agreed`` records whether they reached one optimum.
* **Gaussian** (unweighted least squares, replicates as separate points) for continuous
  responses; **binomial** (Fisher scoring on counts, quasi-binomial dispersion) when
  ``n_positive`` and ``n_total`` are given.
* **Interval**: profile likelihood on log10 IC50 (F-calibrated threshold; quasi-binomial
  dispersion for counts), from the optimum out to the first threshold crossing on each side
  (open, i.e. infinite, when the searched range ends first); a log-scale Wald interval is the
  fallback when the profile cannot be computed.
* **Flags** rather than confident numbers when the data do not determine the curve.

One fit runs in stages, each a function below: set up the problem -> start values and polish
-> profile interval (refit when the profile finds a better optimum) -> tests and flags ->
derived values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.special import chdtrc, chdtri, fdtrc, fdtri, stdtrit

from screenlib.doseresponse._solver import (
    _crossing,
    _grid_starts,
    _grid_starts_at,
    _levenberg_marquardt,
    _Problem,
    _profile,
    inverse,
)
from screenlib.doseresponse.model import (
    E0,
    E_INF,
    HILL,
    LN10,
    LOG_IC50,
    integral_over_log_range,
    model_and_jacobian,
)
from screenlib.doseresponse.units import format_concentration
from screenlib.errors import InputError
from screenlib.robust import robust_sd
from screenlib.settings import FitSettings, check_fit_settings

__all__ = ["CurveFit", "fit_curve", "FLAGS"]


# every flag a fit can carry, with its meaning (written into the report's legend)
FLAGS = {
    "inactive": "no better than a flat line (F-test); IC50 not reported",
    "ic50_above_range": "IC50 above the top tested dose; reported as '> (top dose)'",
    "ic50_below_range": "IC50 below the lowest tested dose; reported as '< (lowest dose)'",
    "no_top_plateau": "the upper plateau is not reached within the tested doses; when it is the "
    "high-dose one and the interval runs past the top dose, the IC50 is reported as a lower "
    "limit ('>= ...')",
    "no_bottom_plateau": "the lower plateau is not reached within the tested doses (as for "
    "no_top_plateau)",
    "plateau_bounded": "the high-dose plateau was not reached; it was kept at or beyond the "
    "full-effect (positive control) response rather than fitted short of it",
    "hill_not_identified": "the Hill slope is at its bound or undetermined by the data",
    "outlier_wells": "one or more wells lie far from the curve (robust residuals)",
    "wide_interval": "the 95 % interval on IC50 spans more than one decade (or is open)",
    "starts_disagree": "the starting points converged to different optima",
    "wrong_direction": "the curve goes the opposite way to the expected direction",
    "too_few_points": "too few usable points or concentrations for a 4-parameter fit",
    "fit_failed": "the fit failed; see notes",
}


@dataclass(frozen=True)
class CurveFit:
    """Result of one dose-response fit. IC50 values are molar; logs are log10 molar.

    ``ic50_molar`` is the relative IC50 (inflection, halfway between the plateaus);
    ``ic50_text`` writes it for people (``"63.1 nM"``), or says why it is not a number:
    ``"> 10 µM"`` (above the top dose), ``"< 0.508 nM"`` (below the lowest), ``">= 4.2 µM"``
    (no high-dose plateau: only a lower limit), ``"inactive"``, ``"not determined"``.
    ``hill_slope`` is the steepness, always positive (drc's ``|b|``); the sign is in
    ``direction`` (Prism's signed HillSlope is ``-hill_slope`` for a decreasing curve).
    ``emax`` is the fitted response at the top tested dose; ``auc`` is the area under the
    fitted curve over the tested log10 range (response x decades).
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
        # the fitted transition (for drawing the curve), even where no IC50 is reported; the
        # other parameters are hill_slope, response_at_zero_dose and response_at_infinite_dose
        row["log_ic50_fit"] = self.parameters[LOG_IC50] if self.parameters else math.nan
        return row


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


def _power_of_ten(value: float) -> float:
    try:
        return 10.0**value
    except OverflowError:
        return math.inf


def _check_settings(settings: FitSettings, direction: str) -> None:
    """Raise ``SettingsError`` for fit settings that cannot work (``InputError`` for an
    unknown direction)."""
    check_fit_settings(settings)
    if direction not in ("auto", "decreasing", "increasing"):
        raise InputError(
            f"direction must be 'auto', 'decreasing' or 'increasing', not {direction!r}"
        )


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
    max_response: float | None = None,
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
    max_response
        The response of full effect, e.g. the positive control's (the most an active compound
        can do). Used only when the curve has not reached its high-dose plateau within the
        tested doses: the fit may then not stop short of it (it may go beyond), so that it
        cannot invent a small effect to place an IC50 inside the range (flag
        ``plateau_bounded``). Without it such a curve's IC50 is reported as a lower limit
        (``">= 4.2 µM"``) whenever its interval reaches past the top dose.

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
    _check_settings(settings, direction)
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
            direction=direction,
            settings=settings,
            bounds=response_bounds,
            absolute_level=absolute_level,
            max_response=max_response,
            notes=notes,
        )
    except Exception as error:  # noqa: BLE001 - a failed fit is a flagged row, not a crash
        return CurveFit(
            direction=direction,
            model="binomial" if binomial else "gaussian",
            n_points=int(usable.sum()),
            flags=("fit_failed",),
            notes=(*notes, f"fit failed: {type(error).__name__}: {error}"),
        )
    return _in_caller_rows(result, usable)


def _in_caller_rows(result: CurveFit, usable: np.ndarray) -> CurveFit:
    """``result`` with its outlier indices counted in the caller's rows, not the rows kept."""
    if not result.outlier_indices or usable.all():
        return result
    kept = np.flatnonzero(usable)
    return replace(result, outlier_indices=tuple(int(kept[i]) for i in result.outlier_indices))


# ---------------------------------------------------------------- stages of one fit
# fit_curve -> _fit: set up the problem -> start values and polish -> profile interval (with
# a refit when the profile finds a better optimum) -> tests and flags -> derived values.


@dataclass(frozen=True)
class _Curve:
    """The usable points of one curve, on the log10 dose scale the model works in."""

    y: np.ndarray
    weights: np.ndarray
    binomial: bool
    is_vehicle: np.ndarray
    log_conc: np.ndarray  # 0 placeholder for vehicle rows (masked, never log(0))
    log_low: float  # lowest and highest tested dose (log10 molar)
    log_high: float


@dataclass
class _Candidates:
    """Every polished start (rows) and which one is best; later refits append rows."""

    thetas: np.ndarray
    objectives: np.ndarray
    residuals: np.ndarray
    jacobians: np.ndarray
    converged: np.ndarray
    best_index: int


@dataclass(frozen=True)
class _Uncertainty:
    """Scale of the noise at the optimum: dispersion, profile threshold, Wald errors."""

    dispersion: float  # quasi-binomial dispersion (NaN for least squares)
    variance_scale: float
    overdispersed: bool  # the threshold and the F-test use the F (not chi-square) law
    pearson: float  # Pearson chi-square of a binomial fit (NaN for least squares)
    threshold: float  # rise of the objective that bounds the profile interval
    standard_errors: np.ndarray  # (4,) Wald errors, NaN for fixed parameters


@dataclass(frozen=True)
class _Solution:
    """The optimum, its uncertainty and the profile around it."""

    best: np.ndarray
    objective: float
    residual: np.ndarray
    uncertainty: _Uncertainty
    profile_grid: np.ndarray
    profile_excess: np.ndarray  # objective above the optimum at each profile point
    all_thetas: np.ndarray  # every start's end point, for the agreement check
    all_objectives: np.ndarray
    all_converged: np.ndarray
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Assessment:
    """Tests and flags of one fit."""

    flags: list[str]
    inactive: bool
    fitted_direction: str
    reported_direction: str
    p_value: float
    n_agree: int
    starts_agreed: bool
    outliers: np.ndarray
    high_dose_plateau_missing: bool  # the curve has not levelled off by the top dose


def _dose_summary(concentration: np.ndarray, binomial: bool, direction: str) -> dict:
    """The ``CurveFit`` fields that describe the doses (known before any fitting)."""
    is_vehicle = concentration == 0
    dosed = concentration[~is_vehicle]
    return dict(
        direction=direction,
        model="binomial" if binomial else "gaussian",
        n_points=int(concentration.size),
        n_concentrations=len(set(dosed.tolist())),
        n_vehicle=int(is_vehicle.sum()),
        lowest_dose_molar=float(dosed.min()) if dosed.size else math.nan,
        top_dose_molar=float(dosed.max()) if dosed.size else math.nan,
    )


def _too_few_points(base: dict, settings: FitSettings) -> str | None:
    """Why the points cannot fix a 4PL (None when they can)."""
    n_fixed = sum(v is not None for v in (settings.fix_top, settings.fix_bottom, settings.fix_hill))
    n_points, n_conc = base["n_points"], base["n_concentrations"]
    if n_conc < 3 or n_points < 6 - n_fixed or n_conc + (base["n_vehicle"] > 0) < 4 - n_fixed:
        return f"{n_points} point(s) at {n_conc} concentration(s) cannot fix a 4PL"
    return None


def _curve_on_log_scale(concentration, y, weights, binomial) -> _Curve:
    is_vehicle = concentration == 0
    log_conc = np.where(is_vehicle, 0.0, np.log10(np.where(is_vehicle, 1.0, concentration)))
    dosed_log_conc = log_conc[~is_vehicle]
    return _Curve(
        y=y,
        weights=weights,
        binomial=binomial,
        is_vehicle=is_vehicle,
        log_conc=log_conc,
        log_low=float(dosed_log_conc.min()),
        log_high=float(dosed_log_conc.max()),
    )


def _plateau_box(curve: _Curve, bounds) -> tuple[float, float]:
    """Box for both plateaus: ``bounds``, else (0, 1) for counts, else the data range widened
    by one range on each side."""
    if bounds is not None:
        return bounds
    if curve.binomial:
        return (0.0, 1.0)
    y_low, y_high = float(curve.y.min()), float(curve.y.max())
    spread = (y_high - y_low) or max(abs(y_high), 1.0)
    return (y_low - spread, y_high + spread)


def _trend_direction(curve: _Curve) -> str:
    """Direction from the data: weighted mean of the top dose quartile against the low end."""
    log_conc, is_vehicle, y, weights = curve.log_conc, curve.is_vehicle, curve.y, curve.weights
    quartile_low, quartile_high = np.quantile(log_conc[~is_vehicle], [0.25, 0.75])
    low_end = is_vehicle | (log_conc <= quartile_low)
    high_end = ~is_vehicle & (log_conc >= quartile_high)
    weighted_y = weights * y  # weighted means as np.average computes them
    trend = weighted_y[high_end].sum() / weights[high_end].sum() - (
        weighted_y[low_end].sum() / weights[low_end].sum()
    )
    return "increasing" if trend > 0 else "decreasing"


def _set_up_problem(
    curve: _Curve, direction: str, settings: FitSettings, box: tuple[float, float]
) -> _Problem:
    """Parameter bounds and fixed values (``fix_top``/``fix_bottom``/``fix_hill``) as a problem."""
    extrapolate = settings.extrapolation_decades
    lower = np.array([curve.log_low - extrapolate, settings.hill_min, box[0], box[0]])
    upper = np.array([curve.log_high + extrapolate, settings.hill_max, box[1], box[1]])
    # which way does it go? needed to map fixed top/bottom onto e0/e_inf
    expected = _trend_direction(curve) if direction == "auto" else direction
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
    return _Problem(
        curve.log_conc,
        curve.is_vehicle,
        curve.y,
        curve.weights,
        curve.binomial,
        lower,
        upper,
        free,
        fixed,
    )


def _start_and_polish(problem: _Problem, curve: _Curve, n_starts: int) -> _Candidates:
    """Grid starts, a short polish of all of them, then the best alone to full convergence."""
    free = problem.free
    starts = _grid_starts(problem, curve.log_low, curve.log_high, n_starts)
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
    return _Candidates(thetas, objectives, residuals, jacobians, converged, best_index)


def _uncertainty(
    problem: _Problem,
    residual: np.ndarray,
    jacobian: np.ndarray,
    objective: float,
    dof: int,
    level: float,
) -> _Uncertainty:
    """Dispersion, profile threshold and Wald standard errors (log scale) at the optimum."""
    if problem.binomial:
        pearson = float(residual @ residual)
        dispersion = max(pearson / dof, 1.0)
        variance_scale = dispersion
        overdispersed = pearson / dof > 1.0
    else:
        pearson = dispersion = math.nan
        variance_scale = objective / dof
        overdispersed = True
    if overdispersed:
        threshold = variance_scale * float(fdtri(1, dof, level))
    else:
        threshold = float(chdtri(1, 1 - level))
    standard_errors = np.full(4, math.nan)
    information = jacobian.T @ jacobian
    try:
        covariance = inverse(information)
    except np.linalg.LinAlgError:
        try:
            covariance = np.linalg.pinv(information)
        except np.linalg.LinAlgError:
            covariance = np.full(information.shape, np.nan)
    variances = variance_scale * np.diagonal(covariance)
    standard_errors[np.flatnonzero(problem.free)] = np.sqrt(np.maximum(variances, 0.0))
    return _Uncertainty(
        dispersion, variance_scale, overdispersed, pearson, threshold, standard_errors
    )


def _profile_scan(problem: _Problem, best: np.ndarray, objective: float, se: float, threshold):
    """Profile of the objective at log IC50 values around the optimum: ``(grid, excess)``.

    The grid holds decades (for loose fits) and multiples of the Wald error (where the
    threshold crossing should be), clipped to the searched range, whose ends it includes.
    """
    log_ic50 = float(best[LOG_IC50])
    offsets = [0.25, 0.5, 1.0, 2.0, 3.0]
    if math.isfinite(se) and se > 0:
        offsets += [se * k for k in (1.0, 1.5, 1.8, 2.1, 2.4, 3.0, 4.0)]
    low_bound, high_bound = float(problem.lower[LOG_IC50]), float(problem.upper[LOG_IC50])
    points = {
        min(max(log_ic50 + sign * o, low_bound), high_bound) for o in offsets for sign in (-1, 1)
    }
    points |= {low_bound, high_bound}
    points.discard(log_ic50)
    grid = np.array(sorted(points))
    try:
        excess = _profile(problem, best, grid, objective + 6 * threshold) - objective
    except (FloatingPointError, np.linalg.LinAlgError, ValueError):
        excess = np.full(grid.size, np.nan)
    return grid, excess


def _fit_with_profile(
    problem: _Problem,
    candidates: _Candidates,
    dof: int,
    settings: FitSettings,
    scale_y: float,
    notes: list[str],
) -> _Solution:
    """Uncertainty and profile at the best start; when the profile finds a lower objective
    than the starts did, refit from there and redo both (at most twice)."""
    c = candidates
    free = problem.free
    all_thetas, all_objectives, all_converged = c.thetas, c.objectives, c.converged.copy()
    all_converged[c.best_index] = True
    thetas, objectives, residuals, jacobians = c.thetas, c.objectives, c.residuals, c.jacobians
    best_index = c.best_index
    for attempt in range(3):
        best = thetas[best_index].copy()
        objective = float(objectives[best_index])
        residual = residuals[best_index]
        scale_obj = max(objective, scale_y)
        jacobian = jacobians[best_index][free].T
        uncertainty = _uncertainty(
            problem, residual, jacobian, objective, dof, settings.confidence_level
        )
        se = float(uncertainty.standard_errors[LOG_IC50])
        grid, excess = _profile_scan(problem, best, objective, se, uncertainty.threshold)
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
    return _Solution(
        best,
        objective,
        residual,
        uncertainty,
        grid,
        excess,
        all_thetas,
        all_objectives,
        all_converged,
        tuple(notes),
    )


def _interval(solution: _Solution, dof: int, level: float) -> tuple[float, float, str]:
    """``(low, high, method)`` of the log10 IC50 interval: the profile's threshold crossings,
    or a log-scale Wald interval when the profile could not be computed."""
    log_ic50 = float(solution.best[LOG_IC50])
    grid, excess = solution.profile_grid, solution.profile_excess
    threshold = solution.uncertainty.threshold
    if np.isfinite(excess).any():
        low = _crossing(log_ic50, grid, excess, threshold, -1)
        high = _crossing(log_ic50, grid, excess, threshold, +1)
        return low, high, "profile"
    se = float(solution.uncertainty.standard_errors[LOG_IC50])
    half = float(stdtrit(dof, 0.5 + level / 2)) * se
    return log_ic50 - half, log_ic50 + half, "wald (log scale)"


def _starts_agreement(solution: _Solution, scale_obj: float) -> tuple[int, bool, bool]:
    """``(n_agreeing, agreed, rival)``: how many starts reached the optimum, whether all that
    converged did (at least two), and whether a start far off in log IC50 fits about as well."""
    log_ic50 = float(solution.best[LOG_IC50])
    thetas, objectives = solution.all_thetas, solution.all_objectives
    near = objectives - solution.objective <= 1e-6 * scale_obj + 1e-12
    same = np.abs(thetas[:, LOG_IC50] - log_ic50) < 0.01
    n_agree = int((near & same).sum())
    # starts still descending when the short polish ended are neither for nor against
    agreed = bool(np.all((near & same) | ~solution.all_converged)) and n_agree >= 2
    rival = (objectives - solution.objective < solution.uncertainty.threshold) & (
        np.abs(thetas[:, LOG_IC50] - log_ic50) > 0.3
    )
    return n_agree, agreed, bool(rival.any())


def _f_test(problem: _Problem, solution: _Solution, dof: int, scale_y: float) -> float:
    """p-value of the 4PL against a flat line (extra sum of squares / deviance)."""
    objective, uncertainty = solution.objective, solution.uncertainty
    weights, y = problem.weights, problem.y
    if problem.binomial:
        p_flat = float(np.sum(weights * y) / np.sum(weights))
        flat_obj = float(problem.evaluate(np.array([[0.0, 1.0, p_flat, p_flat]]))[0][0])
    else:
        flat_obj = float(np.sum(weights * (y - problem.weighted_mean) ** 2))
    extra = int(problem.free.sum()) - 1
    gain = max(flat_obj - objective, 0.0)
    if flat_obj <= scale_y:
        return 1.0  # nothing varies
    if not uncertainty.overdispersed:
        return float(chdtrc(extra, gain))
    if objective <= scale_y:
        return 0.0  # a perfect fit of a varying response
    denominator = uncertainty.pearson / dof if problem.binomial else objective / dof
    return float(fdtrc(extra, dof, (gain / extra) / denominator))


def _plateau_flags(
    problem: _Problem, curve: _Curve, solution: _Solution, settings: FitSettings, direction: str
) -> tuple[list[str], bool]:
    """``no_top_plateau`` / ``no_bottom_plateau``, and whether the high-dose plateau is the
    one missing. A plateau is missing when the curve has not
    got there by the end of the tested range, or when the data leave it so loose that its 95 %
    range exceeds ``max_plateau_uncertainty`` of the span."""
    log_ic50, hill, e0, e_inf = solution.best.tolist()
    errors = solution.uncertainty.standard_errors
    g_low = _fraction_at(curve.log_low, log_ic50, hill)
    g_high = _fraction_at(curve.log_high, log_ic50, hill)
    reach = settings.plateau_fraction
    loose_limit = settings.max_plateau_uncertainty * abs(e_inf - e0) / 1.96
    high_dose_missing = problem.free[E_INF] and (g_high < reach or not errors[E_INF] <= loose_limit)
    zero_dose_missing = problem.free[E0] and (
        (not curve.is_vehicle.any() and g_low > 1 - reach) or not errors[E0] <= loose_limit
    )
    high_name, zero_name = (
        ("no_bottom_plateau", "no_top_plateau")
        if direction == "decreasing"
        else ("no_top_plateau", "no_bottom_plateau")
    )
    flags = [zero_name] * bool(zero_dose_missing) + [high_name] * bool(high_dose_missing)
    return flags, bool(high_dose_missing)


def _hill_flags(problem: _Problem, solution: _Solution, settings: FitSettings) -> list[str]:
    """``hill_not_identified``: at a bound, or its 95 % Wald range reaches a bound or zero."""
    if not problem.free[HILL]:
        return []
    hill = float(solution.best[HILL])
    hill_se = solution.uncertainty.standard_errors[HILL]
    at_bound = hill <= settings.hill_min * (1 + 1e-3) or hill >= settings.hill_max * (1 - 1e-3)
    hill_reach = 2.0 * hill_se
    loose = not (
        hill_se < hill
        and settings.hill_min < hill - hill_reach
        and hill + hill_reach < settings.hill_max
    )
    return ["hill_not_identified"] if at_bound or loose else []


def _outlier_rows(problem: _Problem, solution: _Solution, dof: int, outlier_z: float):
    """Rows far from the curve: robust residuals beyond ``outlier_z`` robust SDs.

    Pearson residuals for counts, plain residuals for continuous responses. The scale is the
    robust SD (MAD-based, robust to the outliers themselves), floored at 0.7 x the residual
    standard error so that an unluckily small MAD from ~30 points does not turn ordinary wells
    into outliers.
    """
    raw = solution.residual
    e0, e_inf = float(solution.best[E0]), float(solution.best[E_INF])
    floor = (
        1.0 if problem.binomial else 1e-3 * abs(e_inf - e0) + 1e-9 * (abs(e0) + abs(e_inf) + 1e-300)
    )
    robust_sigma = max(robust_sd(raw), floor, 0.7 * math.sqrt(float(raw @ raw) / dof))
    return np.flatnonzero(np.abs(raw) > outlier_z * robust_sigma)


def _assess(
    problem: _Problem,
    curve: _Curve,
    solution: _Solution,
    direction: str,
    settings: FitSettings,
    dof: int,
    scale_y: float,
    interval_width: float,
) -> _Assessment:
    """F-test, direction, agreement of the starts, plateaus, Hill slope, outliers, interval."""
    flags: list[str] = []
    p_value = _f_test(problem, solution, dof, scale_y)
    _, _, e0, e_inf = solution.best.tolist()
    fitted_direction = "increasing" if e_inf > e0 else "decreasing"
    inactive = not p_value <= settings.inactive_p_value or e_inf == e0
    if direction != "auto" and fitted_direction != direction and not inactive:
        flags.append("wrong_direction")
        inactive = True
    if inactive:
        flags.append("inactive")
    scale_obj = max(solution.objective, scale_y)
    n_agree, starts_agreed, rival = _starts_agreement(solution, scale_obj)
    if rival and not inactive:
        flags.append("starts_disagree")
    high_dose_plateau_missing = False
    if not inactive:
        plateau_flags, high_dose_plateau_missing = _plateau_flags(
            problem, curve, solution, settings, fitted_direction
        )
        flags += plateau_flags
        flags += _hill_flags(problem, solution, settings)
    outliers = _outlier_rows(problem, solution, dof, settings.outlier_z)
    if outliers.size:
        flags.append("outlier_wells")
    if not inactive and not (interval_width <= settings.max_interval_decades):
        flags.append("wide_interval")
    return _Assessment(
        flags=flags,
        inactive=inactive,
        fitted_direction=fitted_direction,
        reported_direction=direction if direction != "auto" else fitted_direction,
        p_value=p_value,
        n_agree=n_agree,
        starts_agreed=starts_agreed,
        outliers=outliers,
        high_dose_plateau_missing=high_dose_plateau_missing,
    )


def _reported_ic50(log_ic50: float, curve: _Curve, inactive: bool, lower_limit: float | None):
    """``(text, ic50_molar, log_ic50, range_flag)`` as reported: a number only inside the
    tested range, and only when the data bound it from above: with ``lower_limit`` (log10; the
    high-dose plateau is missing and the interval reaches past the top dose) the text gives
    that limit (``">= 4.2 µM"``, ``"not determined"`` when it is open too)."""
    if inactive:
        return "inactive", math.nan, math.nan, None
    if log_ic50 > curve.log_high:
        return (
            f"> {format_concentration(10.0**curve.log_high)}",
            math.nan,
            math.nan,
            ("ic50_above_range"),
        )
    if log_ic50 < curve.log_low:
        return (
            f"< {format_concentration(10.0**curve.log_low)}",
            math.nan,
            math.nan,
            ("ic50_below_range"),
        )
    if lower_limit is not None:
        text = (
            f">= {format_concentration(10.0**lower_limit)}"
            if lower_limit > -math.inf
            else ("not determined")
        )
        return text, math.nan, math.nan, None
    ic50 = 10.0**log_ic50
    return format_concentration(ic50), ic50, log_ic50, None


def _absolute_level(curve: _Curve, assessment: _Assessment, e0: float, box) -> float:
    """Default response level of the absolute IC50: half the vehicle response for decreasing
    curves, 0.5 for increasing fractions (NaN when neither applies)."""
    if "decreasing" in (assessment.fitted_direction, assessment.reported_direction):
        is_vehicle = curve.is_vehicle
        reference = (
            float(np.average(curve.y[is_vehicle], weights=curve.weights[is_vehicle]))
            if is_vehicle.any()
            else e0
        )
        return 0.5 * reference
    if curve.binomial or (box[0] >= 0 and box[1] <= 1):
        return 0.5
    return math.nan


def _absolute_ic50(level: float, parameters, curve: _Curve, inactive: bool):
    """``(text, molar)`` of the dose where the fitted curve crosses ``level``."""
    log_absolute = _inverse_at(level, *parameters)
    if inactive:
        return "inactive", math.nan
    if not np.isfinite(log_absolute):
        return "not reached", math.nan
    if log_absolute > curve.log_high:
        return f"> {format_concentration(10.0**curve.log_high)}", math.nan
    if log_absolute < curve.log_low:
        return f"< {format_concentration(10.0**curve.log_low)}", math.nan
    absolute = 10.0**log_absolute
    return format_concentration(absolute), absolute


def _derived_values(
    problem: _Problem,
    curve: _Curve,
    solution: _Solution,
    assessment: _Assessment,
    absolute_level: float | None,
    box,
    dof: int,
    interval: tuple[float, float, str],
    plateau_bounded: bool,
) -> tuple[dict, str | None]:
    """Reported and absolute IC50, Emax, AUC, RSS: the ``CurveFit`` fields that follow from
    the parameters; and the flag when the IC50 lies outside the tested range."""
    log_ic50, hill, e0, e_inf = solution.best.tolist()
    inactive = assessment.inactive
    # no upper bound from the data: the curve has not levelled off and the interval runs past
    # the top dose (a bounded plateau is the other remedy, see _bound_high_dose_plateau)
    open_above = (
        assessment.high_dose_plateau_missing
        and not plateau_bounded
        and not interval[1] <= curve.log_high
    )
    lower_limit = float(interval[0]) if open_above else None
    ic50_text, ic50, reported_log, range_flag = _reported_ic50(
        log_ic50, curve, inactive, lower_limit
    )
    if absolute_level is None:
        absolute_level = _absolute_level(curve, assessment, e0, box)
    absolute_text, absolute = _absolute_ic50(
        absolute_level, (log_ic50, hill, e0, e_inf), curve, inactive
    )
    log_low, log_high = curve.log_low, curve.log_high
    auc = integral_over_log_range(log_low, log_high, log_ic50, hill, e0, e_inf)
    span = log_high - log_low
    if curve.binomial:  # residual sum of squares of the fractions themselves
        rss = float(np.sum((_fitted_p(problem, solution.best) - curve.y) ** 2))
    else:
        rss = solution.objective
    values = dict(
        ic50_molar=ic50,
        ic50_text=ic50_text,
        log_ic50=reported_log,
        absolute_ic50_molar=absolute,
        absolute_ic50_text=absolute_text,
        absolute_level=float(absolute_level),
        emax=e0 + (e_inf - e0) * _fraction_at(log_high, log_ic50, hill),
        auc=auc,
        auc_normalized=auc / span if span > 0 else math.nan,
        rss=rss,
        residual_std_error=math.sqrt(rss / dof),
    )
    return values, range_flag


def _fit(
    concentration: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    binomial: bool,
    *,
    direction: str,
    settings: FitSettings,
    bounds: tuple[float, float] | None,
    absolute_level: float | None,
    max_response: float | None,
    notes: list[str],
) -> CurveFit:
    """Fit the usable points of one curve: the stages above, in order."""
    base = _dose_summary(concentration, binomial, direction)
    reason = _too_few_points(base, settings)
    if reason:
        return CurveFit(**base, flags=("too_few_points",), notes=(*notes, reason))
    curve = _curve_on_log_scale(concentration, y, weights, binomial)
    box = _plateau_box(curve, bounds)
    problem = _set_up_problem(curve, direction, settings, box)
    n_free = int(problem.free.sum())
    dof = base["n_points"] - n_free
    if dof < 1:
        reason = f"{base['n_points']} points for {n_free} free parameters"
        return CurveFit(**base, flags=("too_few_points",), notes=(*notes, reason))
    scale_y = 1e-12 * float((weights * y * y).sum()) + 1e-300
    fitted = _solve_and_assess(problem, curve, direction, settings, dof, scale_y, notes)
    extra_flags = []
    bounded = _bound_high_dose_plateau(problem, fitted, max_response)
    if bounded is not None:
        note = (
            "the high-dose plateau is not reached within the tested doses: it was kept at or "
            f"beyond the full-effect response {max_response:.4g}"
        )
        fitted = _solve_and_assess(
            bounded, curve, direction, settings, dof, scale_y, [*notes, note]
        )
        extra_flags.append("plateau_bounded")
    solution, interval, assessment = fitted
    derived, range_flag = _derived_values(
        problem,
        curve,
        solution,
        assessment,
        absolute_level,
        box,
        dof,
        interval,
        plateau_bounded=bool(extra_flags),
    )
    flags = assessment.flags + extra_flags + [range_flag] * bool(range_flag)
    return _assemble(base, solution, assessment, derived, flags, interval)


def _solve_and_assess(
    problem: _Problem,
    curve: _Curve,
    direction: str,
    settings: FitSettings,
    dof: int,
    scale_y: float,
    notes: list[str],
) -> tuple[_Solution, tuple[float, float, str], _Assessment]:
    """Starts, fit and profile, interval, tests and flags of one problem."""
    candidates = _start_and_polish(problem, curve, settings.n_starts)
    solution = _fit_with_profile(problem, candidates, dof, settings, scale_y, notes)
    interval = _interval(solution, dof, settings.confidence_level)
    width = interval[1] - interval[0]
    assessment = _assess(problem, curve, solution, direction, settings, dof, scale_y, width)
    return solution, interval, assessment


def _bound_high_dose_plateau(
    problem: _Problem, fitted: tuple, max_response: float | None
) -> _Problem | None:
    """The problem again with the high-dose plateau kept at or beyond ``max_response``, when
    the fit has not reached that plateau and stopped short of the full-effect response (None
    otherwise: nothing to bound)."""
    solution, _interval_, assessment = fitted
    if (
        max_response is None
        or not math.isfinite(max_response)
        or assessment.inactive
        or not assessment.high_dose_plateau_missing
        or not problem.free[E_INF]
    ):
        return None
    e0, e_inf = float(solution.best[E0]), float(solution.best[E_INF])
    increasing = e_inf > e0
    short = e_inf < max_response if increasing else e_inf > max_response
    if not short or (max_response > e0) != increasing:
        return None
    lower, upper = problem.lower.copy(), problem.upper.copy()
    # the plateau box widens to take the reference in (it may lie beyond the data's range)
    if increasing:
        upper[E_INF] = max(upper[E_INF], max_response)
        lower[E_INF] = max_response
    else:
        lower[E_INF] = min(lower[E_INF], max_response)
        upper[E_INF] = max_response
    return _Problem(
        problem.log_conc,
        problem.is_vehicle,
        problem.y,
        problem.weights,
        problem.binomial,
        lower,
        upper,
        problem.free,
        problem.fixed,
    )


def _assemble(
    base: dict,
    solution: _Solution,
    assessment: _Assessment,
    derived: dict,
    flags: list[str],
    interval: tuple[float, float, str],
) -> CurveFit:
    """The ``CurveFit`` of a completed fit."""
    ci_low, ci_high, ci_method = interval
    log_ic50, hill, e0, e_inf = solution.best.tolist()
    finite_ci = derived["log_ic50"] == derived["log_ic50"]
    uncertainty = solution.uncertainty
    return CurveFit(
        **{**base, "direction": assessment.reported_direction},
        **derived,
        log_ic50_ci_low=float(ci_low),
        log_ic50_ci_high=float(ci_high),
        ic50_ci_low_molar=_power_of_ten(ci_low),
        ic50_ci_high_molar=_power_of_ten(ci_high),
        ci_method=ci_method,
        pic50=-derived["log_ic50"],
        pic50_ci_low=-float(ci_high) if finite_ci else math.nan,
        pic50_ci_high=-float(ci_low) if finite_ci else math.nan,
        hill_slope=hill,
        top=max(e0, e_inf),
        bottom=min(e0, e_inf),
        response_at_zero_dose=e0,
        response_at_infinite_dose=e_inf,
        deviance=solution.objective if base["model"] == "binomial" else math.nan,
        dispersion=uncertainty.dispersion,
        f_test_p_value=assessment.p_value,
        confident=bool(finite_ci and not (set(flags) - {"outlier_wells"})),
        starts_agreed=assessment.starts_agreed,
        n_starts=len(solution.all_thetas),
        n_starts_agreeing=assessment.n_agree,
        n_outliers=int(assessment.outliers.size),
        flags=tuple(flags),
        notes=solution.notes,
        outlier_indices=tuple(int(i) for i in assessment.outliers),
        parameters=(log_ic50, hill, e0, e_inf),
        parameter_errors=tuple(float(v) for v in uncertainty.standard_errors),
    )
