"""The scatter gate: debris (FSC-A / SSC-A) and doublets (FSC-H / FSC-A), learned from the
plate's vehicle wells.

On log10 scatter the cells of a vehicle well form one peak; debris (fragments, apoptotic
bodies, noise) lies far below it and doublets (two cells passing together: area adds up,
height hardly) lie below the singlets' FSC-H / FSC-A ratio. Each limit is the mode of the
vehicle events minus ``k`` robust SDs, the SD measured on the *upper* side of the mode only,
where neither debris nor doublets lie. Pure functions: arrays in, gate and labels out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from screenlib.errors import InputError
from screenlib.robust import MAD_TO_SD

_MIN_EVENTS = 50
_BINS = 256

#: per-event values of ``scatter_exclusion``
SINGLET, DEBRIS, DOUBLET = "", "debris", "doublet"


@dataclass(frozen=True)
class ScatterLimit:
    """Events below ``limit`` (linear units of the quantity) are excluded."""

    quantity: str
    mode_log10: float
    robust_sd_log10: float
    k: float
    limit: float


@dataclass
class ScatterGate:
    """Debris limits on FSC-A and SSC-A and the doublet limit on FSC-H / FSC-A."""

    fsc: ScatterLimit | None
    ssc: ScatterLimit | None
    singlet_ratio: ScatterLimit | None
    n_vehicle_events: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for ``gates.json`` and the report)."""
        return asdict(self)


def _log10(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(values > 0, values, np.nan))


def mode_and_upper_sd(log_values: np.ndarray) -> tuple[float, float]:
    """Peak of a smoothed histogram and the robust SD of the values above it.

    Above the peak, ``|x - mode|`` of a normal population has median 0.6745 SD, i.e. MAD.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(5, 0.1, 5000), rng.normal(3, 0.3, 1000)])
    >>> mode, sd = mode_and_upper_sd(x)
    >>> round(float(mode), 1), round(float(sd), 1)
    (5.0, 0.1)
    """
    x = log_values[np.isfinite(log_values)]
    low, high = np.quantile(x, [0.001, 0.999])
    if not high > low:
        return float(np.median(x)), float("nan")
    counts, edges = np.histogram(x, bins=_BINS, range=(low, high))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    peak = int(np.argmax(smooth))
    mode = float(0.5 * (edges[peak] + edges[peak + 1]))
    above = x[x > mode] - mode
    sd = float(MAD_TO_SD * np.median(above)) if above.size >= 10 else float("nan")
    return mode, sd


def _limit(quantity: str, log_values: np.ndarray, k: float) -> ScatterLimit | None:
    finite = log_values[np.isfinite(log_values)]
    if finite.size < _MIN_EVENTS:
        return None
    mode, sd = mode_and_upper_sd(finite)
    if not sd > 0:
        return None
    return ScatterLimit(quantity, mode, sd, k, float(10 ** (mode - k * sd)))


def learn_scatter_gate(
    fsc_area: np.ndarray | None,
    ssc_area: np.ndarray | None,
    fsc_height: np.ndarray | None,
    vehicle: np.ndarray,
    *,
    debris_k: float = 6.0,
    doublet_k: float = 5.0,
) -> ScatterGate:
    """Learn debris and doublet limits from the vehicle events.

    Parameters
    ----------
    fsc_area, ssc_area, fsc_height
        Per-event scatter (linear); None where the plate lacks the channel (that part of the
        gate is then not applied, and ``details`` says so).
    vehicle
        Boolean mask of events from vehicle (``negative_control``) wells.
    debris_k, doublet_k
        Robust SDs below the mode (see :class:`~screenlib.flow.FlowSettings`).

    Returns
    -------
    ScatterGate
    """
    vehicle = np.asarray(vehicle, dtype=bool)
    n_vehicle = int(vehicle.sum())
    if n_vehicle < _MIN_EVENTS:
        raise InputError(
            f"only {n_vehicle} events in negative_control (vehicle) wells; at least "
            f"{_MIN_EVENTS} are needed to learn the scatter (debris/doublet) gate — mark the "
            "vehicle wells with role 'negative_control' in the plate map"
        )
    details: dict[str, Any] = {"scale": "log10", "not_applied": []}
    fsc = ssc = ratio = None
    if fsc_area is not None:
        fsc = _limit("FSC-A", _log10(fsc_area)[vehicle], debris_k)
    else:
        details["not_applied"].append("debris on FSC-A: no forward-scatter channel")
    if ssc_area is not None:
        ssc = _limit("SSC-A", _log10(ssc_area)[vehicle], debris_k)
    else:
        details["not_applied"].append("debris on SSC-A: no side-scatter channel")
    if fsc_area is not None and fsc_height is not None:
        kept = vehicle & _debris_mask(fsc, ssc, fsc_area, ssc_area, invert=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = _log10(fsc_height)[kept] - _log10(fsc_area)[kept]
        ratio = _limit("FSC-H/FSC-A", log_ratio, doublet_k)
    else:
        details["not_applied"].append("doublets: no FSC-H beside FSC-A")
    gate = ScatterGate(fsc, ssc, ratio, n_vehicle, details)
    labels = apply_scatter_gate(gate, fsc_area, ssc_area, fsc_height)[vehicle]
    details["vehicle_debris_fraction"] = float(np.mean(labels == DEBRIS))
    details["vehicle_doublet_fraction"] = float(np.mean(labels == DOUBLET))
    return gate


def _debris_mask(fsc, ssc, fsc_area, ssc_area, invert: bool = False) -> np.ndarray:
    n = len(fsc_area if fsc_area is not None else ssc_area)
    debris = np.zeros(n, dtype=bool)
    for limit, values in ((fsc, fsc_area), (ssc, ssc_area)):
        if limit is not None and values is not None:
            values = np.asarray(values, dtype=float)
            debris |= ~(values >= limit.limit)  # NaN and non-positive are debris too
    return ~debris if invert else debris


def apply_scatter_gate(
    gate: ScatterGate,
    fsc_area: np.ndarray | None,
    ssc_area: np.ndarray | None,
    fsc_height: np.ndarray | None,
) -> np.ndarray:
    """Per event ``""`` (a single cell), ``"debris"`` or ``"doublet"`` (debris wins)."""
    debris = _debris_mask(gate.fsc, gate.ssc, fsc_area, ssc_area)
    labels = np.full(len(debris), SINGLET, dtype=object)
    if gate.singlet_ratio is not None and fsc_height is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.asarray(fsc_height, dtype=float) / np.asarray(fsc_area, dtype=float)
        labels[~(ratio >= gate.singlet_ratio.limit)] = DOUBLET
    labels[debris] = DEBRIS
    return labels
