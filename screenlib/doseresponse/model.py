"""The four-parameter logistic (Hill) model in log10 concentration.

Parameterised as drc's ``LL2.4`` / Prism's "log(inhibitor) vs response -- variable slope":

    f(x) = e0 + (e_inf - e0) / (1 + 10 ** (hill * (log_ic50 - x)))

with ``x = log10(concentration / M)``, ``e0`` the response at zero dose (the vehicle plateau),
``e_inf`` the response at infinite dose and ``hill > 0`` the steepness. The curve decreases when
``e_inf < e0`` (viability) and increases when ``e_inf > e0`` (apoptotic fraction). Prism's
``Top``/``Bottom`` are the larger/smaller plateau and its signed ``HillSlope`` is ``-hill`` for a
decreasing curve. Vehicle wells (concentration 0) sit exactly on ``e0``: they are handled by a
mask, never as ``log(0)``.
"""

from __future__ import annotations

import numpy as np

LN10 = float(np.log(10.0))

# parameter order used everywhere in the package
PARAMETER_NAMES = ("log_ic50", "hill", "e0", "e_inf")
LOG_IC50, HILL, E0, E_INF = range(4)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-z)), via tanh (no overflow, no error-state juggling)."""
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def logistic_fraction(log_conc: np.ndarray, log_ic50, hill) -> np.ndarray:
    """Fraction of the way from ``e0`` to ``e_inf`` at ``log_conc`` (``-inf`` gives 0).

    Examples
    --------
    >>> float(logistic_fraction(np.array(-7.0), -7.0, 1.0))
    0.5
    """
    log_conc = np.asarray(log_conc, dtype=float)
    with np.errstate(invalid="ignore"):
        z = np.asarray(hill) * (log_conc - np.asarray(log_ic50)) * LN10
    return np.where(np.isneginf(log_conc), 0.0, sigmoid(np.nan_to_num(z, nan=0.0)))


def four_parameter_logistic(
    log_conc: np.ndarray, log_ic50: float, hill: float, e0: float, e_inf: float
) -> np.ndarray:
    """Response of the 4PL at ``log_conc`` (log10 molar; ``-inf`` for vehicle).

    Examples
    --------
    >>> float(four_parameter_logistic(np.array(-np.inf), -7.0, 1.0, 100.0, 0.0))
    100.0
    >>> float(four_parameter_logistic(np.array(-7.0), -7.0, 1.0, 100.0, 0.0))
    50.0
    """
    return e0 + (e_inf - e0) * logistic_fraction(log_conc, log_ic50, hill)


def model_and_jacobian(
    theta: np.ndarray, log_conc: np.ndarray, is_vehicle: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Batched model values and analytic Jacobian.

    Parameters
    ----------
    theta
        ``(B, 4)`` parameter sets in ``PARAMETER_NAMES`` order.
    log_conc
        ``(N,)`` log10 concentrations, finite (vehicle rows hold any finite placeholder).
    is_vehicle
        ``(N,)`` bool, True for zero-dose rows.

    Returns
    -------
    values : ``(B, N)``
    jacobian : ``(B, N, 4)``
    """
    dosed = (~np.asarray(is_vehicle, bool)).astype(float)
    values, rows = model_and_jacobian_rows(theta, log_conc, dosed)
    return values, rows.transpose(0, 2, 1)


def model_and_jacobian_rows(
    theta: np.ndarray,
    log_conc: np.ndarray,
    dosed: np.ndarray | None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`model_and_jacobian` with the Jacobian as ``(B, 4, N)`` rows (the fitter's
    layout) and ``dosed`` a float mask (1 dosed, 0 vehicle; None when every point is dosed).

    ``out``, if given, is a ``(B, 4, N)`` array (or view) that receives the Jacobian rows.
    """
    log_ic50 = theta[:, LOG_IC50, None]
    hill = theta[:, HILL, None]
    e0 = theta[:, E0, None]
    span = theta[:, E_INF, None] - e0
    jacobian = np.empty((theta.shape[0], 4, log_conc.size)) if out is None else out
    # work on contiguous (B, N) temporaries and copy them into the Jacobian rows: ufuncs that
    # write through strided views are several times slower on arrays this small
    offset = log_conc - log_ic50
    # sigmoid(z) = 0.5 + 0.5 tanh(z / 2), as in :func:`sigmoid`; halving is exact in floating
    # point, so (0.5 hill ln10) offset equals 0.5 (hill ln10 offset) bit for bit
    g = offset * (hill * (0.5 * LN10))
    np.tanh(g, out=g)
    g *= 0.5
    g += 0.5
    if dosed is not None:
        g *= dosed
    one_minus_g = 1.0 - g
    slope = span * LN10 * g
    slope *= one_minus_g
    jacobian[:, LOG_IC50] = slope * -hill
    slope *= offset
    jacobian[:, HILL] = slope
    jacobian[:, E0] = one_minus_g
    jacobian[:, E_INF] = g
    values = span * g
    values += e0
    return values, jacobian


def inverse_log_concentration(level, log_ic50, hill, e0, e_inf):
    """log10 concentration where the curve reaches ``level`` (NaN when it never does).

    Examples
    --------
    >>> round(float(inverse_log_concentration(50.0, -7.0, 1.0, 100.0, 0.0)), 6)
    -7.0
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = (np.asarray(level, float) - e0) / (e_inf - e0)
        inside = (fraction > 0) & (fraction < 1)
        value = log_ic50 + np.log10(fraction / (1.0 - fraction)) / hill
    return np.where(inside, value, np.nan)


def integral_over_log_range(low: float, high: float, log_ic50, hill, e0, e_inf) -> float:
    """Area under the fitted curve between two log10 concentrations (response x decades)."""

    def antiderivative(x):
        # integral of 1 / (1 + 10**(h (L - x))) dx = log10(1 + 10**(h (x - L))) / h
        return np.logaddexp(0.0, hill * (x - log_ic50) * LN10) / (LN10 * hill)

    area_fraction = antiderivative(high) - antiderivative(low)
    return float(e0 * (high - low) + (e_inf - e0) * area_fraction)
