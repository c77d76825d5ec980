"""Quadrant gates on Annexin V and PI, learned per timepoint from the plate's own controls.

Vehicle (``negative_control``) wells are mostly viable but carry a few percent of apoptotic
and necrotic cells of their own, so a plain upper percentile of their intensities would cut
into the positive populations. The negative population is instead described robustly: on a
glog scale chosen to make its bulk symmetric, the gate sits ``k_mad`` robust standard
deviations (1.4826 x MAD) above the median (``method="robust"``), or, as a flow cytometrist
places a quadrant between two populations, where a cell is as likely to belong to the positive
population as not (``method="mixture"``): all cells of the plate are modelled on that scale as
a two-component mixture whose negative component is the vehicle estimate; the positive one
(share, centre, spread) is fitted, and the gate is the lowest value where that positive
population makes up half of the observed density of the plate's cells, never below 2 robust
SDs. The fitted component keeps the gate from wandering along a flat, shallow density valley
when the populations overlap; the observed density counts the negatives' real upper tail.
Objects of neither population (a viable cell lit by a bright neighbour, debris stuck to a
cell) would stretch a Gaussian positive component over the valley and drag the gate to its
floor; the positive component is therefore also fitted beside a flat outlier component, and
that fit replaces the plain one when the plain one is over 25 % wider
(:func:`~screenlib.gating._robust.fit_positive_population`).
Without a positive population separate from the vehicle cells the robust gate is used.
Positive-control wells check the result. Manual gates override.

PI is compensated for FITC (Annexin V) bleed-through before gating:
``pi_compensated = pi - b * annexin`` where ``annexin`` is ``gating.bleedthrough_feature``
(the ring mean by default: like the PI nucleus mean it averages the Annexin signal over a
region rather than picking its brightest pixels); ``b`` is the robust (Theil-Sen) slope of PI
on that feature among PI-negative cells of the whole plate (bleed-through is a property of the
optics, so one ``b`` serves all timepoints), unless given in the settings.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from screenlib.errors import InputError, SettingsError
from screenlib.gating._robust import (
    NegativePopulation,
    estimate_negative,
    fit_positive_population,
    positive_share_boundary,
    theil_sen_slope,
)
from screenlib.gating.drift import drift_units, scale_per_cell, stain_scales
from screenlib.gating.objects import GATED, ObjectScale, classify_objects, object_scale
from screenlib.settings import GatingSettings

_MIN_CONTROL_CELLS = 50
_BLEED_SAMPLE = 1500
_BLEED_ITERATIONS = 6
# A mixture gate never sits closer to the vehicle median than this many robust SDs (about
# 2 % of a normal negative population lies beyond it).
_MIXTURE_MIN_K = 2.0
# Stain drift is read off the cells below this many robust SDs above the vehicle median: the
# bulk of the negatives, few of the positives' low tail (the quadrant gate sits higher).
_NEGATIVE_K = 2.0


@dataclass
class Gates:
    """Gates of one plate and timepoint, in the units of the per-cell features.

    Attributes
    ----------
    timepoint
        0-based timepoint the gates belong to.
    annexin_feature, pi_feature
        Per-cell columns the gates apply to.
    annexin_gate
        Cells with ``annexin_feature > annexin_gate`` are Annexin V positive.
    pi_gate
        Cells with compensated PI ``pi_feature - bleedthrough * bleedthrough_feature >
        pi_gate`` are PI positive.
    bleedthrough_annexin_to_pi
        Fraction of ``bleedthrough_feature`` that appears in the PI feature.
    method
        How the gates were found, e.g. ``"robust"``, ``"mixture"``, ``"manual"``,
        ``"annexin: manual, pi: robust"``.
    n_control_cells
        Vehicle cells the gates were learned from.
    marker_gates
        Extra plugin stains: ``{stain: {"feature": column, "gate": value}}``.
    object_scale
        The vehicle nuclei's scale the object classes derive from
        (:class:`~screenlib.gating.objects.ObjectScale` as a dict; None: every object is a
        cell).
    stain_scales
        Per well, the factor its Annexin V (``"annexin"``) and PI (``"pi"``) features are
        divided by before gating: the well's own negative population's median over the
        vehicle's (:func:`~screenlib.gating.drift.stain_scales`).
    details
        How the gates were found (scales, centres, spreads, checks, warnings); JSON-safe.
    """

    timepoint: int
    annexin_feature: str
    pi_feature: str
    annexin_gate: float
    pi_gate: float
    bleedthrough_annexin_to_pi: float
    method: str
    n_control_cells: int
    bleedthrough_feature: str = "annexin_v_ring_mean"
    marker_gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    object_scale: dict[str, float] | None = None
    stain_scales: dict[str, dict[str, float]] = field(default_factory=dict)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def gates_to_dict(gates: Mapping[int, Gates]) -> dict[str, Any]:
    """A JSON-serialisable mapping ``{"<timepoint>": {...gate fields...}}`` (NaN becomes null).

    Examples
    --------
    >>> import json
    >>> g = Gates(0, "annexin_v_ring_p90", "pi_nucleus_mean", 350.0, 60.0, 0.05, "manual", 0)
    >>> json.loads(json.dumps(gates_to_dict({0: g})))["0"]["annexin_gate"]
    350.0
    """
    return {str(tp): _json_safe(dataclasses.asdict(g)) for tp, g in sorted(gates.items())}


def gates_from_dict(data: Mapping[str, Any]) -> dict[int, Gates]:
    """Inverse of :func:`gates_to_dict` (for re-gating from a saved ``gates.json``)."""
    result = {}
    for key, item in data.items():
        values = dict(item)
        for name in ("annexin_gate", "pi_gate", "bleedthrough_annexin_to_pi"):
            if values.get(name) is None:
                values[name] = float("nan")
        result[int(key)] = Gates(**values)
    return result


def _require_columns(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, table.columns))}"
            " — set gating.annexin_feature, gating.pi_feature and gating.bleedthrough_feature"
            " to columns of the per-cell table"
        )


# area of a typical 10 µm interphase nucleus, for the debris rule when the pixel size is unknown
TYPICAL_NUCLEUS_AREA_UM2 = float(np.pi / 4 * 10.0**2)


def too_small(cells: pd.DataFrame, settings: GatingSettings) -> np.ndarray:
    """Objects below ``settings.min_area_um2``: fragments and apoptotic bodies, not cells.

    With an unknown pixel size (``area_um2`` empty) the same rule is applied relative to the
    plate: below ``min_area_um2`` / 78.5 µm² (a typical nucleus) of the median object's
    ``area_px``, instead of calling every object small (or none).
    """
    small = np.zeros(len(cells), dtype=bool)
    area = cells["area_um2"].to_numpy(dtype=float) if "area_um2" in cells else None
    if area is not None:
        small |= area < settings.min_area_um2
    unknown = np.ones(len(cells), bool) if area is None else ~np.isfinite(area)
    if unknown.any() and "area_px" in cells:
        pixels = cells["area_px"].to_numpy(dtype=float)
        typical = np.nanmedian(pixels[unknown]) if np.isfinite(pixels[unknown]).any() else 0.0
        limit = settings.min_area_um2 / TYPICAL_NUCLEUS_AREA_UM2 * typical
        small |= unknown & (pixels < limit)
    return small


def usable_cells(cells: pd.DataFrame, settings: GatingSettings) -> np.ndarray:
    """Boolean mask of cells that are not debris by area or scatter (and have finite
    features)."""
    mask = np.ones(len(cells), dtype=bool)
    if "scatter_exclusion" in cells.columns:  # flow events: debris / doublets by scatter
        mask &= cells["scatter_exclusion"].fillna("").to_numpy(dtype=object) == ""
    mask &= ~too_small(cells, settings)
    for column in (settings.annexin_feature, settings.pi_feature):
        mask &= np.isfinite(cells[column].to_numpy(dtype=float))
    return mask


def _roles(cells: pd.DataFrame, platemap: pd.DataFrame | None) -> np.ndarray:
    if platemap is None or len(platemap) == 0:
        return np.full(len(cells), "sample", dtype=object)
    _require_columns(platemap, ["well", "role"], "plate map")
    role_of = dict(zip(platemap["well"].astype(str), platemap["role"].astype(str), strict=True))
    # look up each distinct well once (a flow plate has a million rows and 96 wells)
    codes, wells = pd.factorize(cells["well"].astype(str))
    roles = np.array([role_of.get(well, "unknown") for well in wells] + ["unknown"], dtype=object)
    return roles[codes]  # code -1 (a missing well) takes the last entry, "unknown"


def estimate_bleedthrough(
    annexin: np.ndarray, pi: np.ndarray, pi_negative: np.ndarray, seed: int = 0
) -> float:
    """Robust (Theil-Sen) slope of PI on Annexin among PI-negative cells, at least 0.

    Parameters
    ----------
    annexin, pi
        Per-cell feature values (linear, background-corrected).
    pi_negative
        Boolean mask of cells taken as PI negative.
    seed
        Seed of the subsample (at most 1500 cells) the slope is fitted on.

    Returns
    -------
    float
        The bleed-through coefficient; NaN when fewer than 20 cells qualify.
    """
    x = np.asarray(annexin, dtype=float)[pi_negative]
    y = np.asarray(pi, dtype=float)[pi_negative]
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 20 or np.ptp(x) <= 0:
        return float("nan")
    if x.size > _BLEED_SAMPLE:
        # Sample evenly over annexin ranks so the few bright (early apoptotic) cells that give
        # the slope its leverage are kept.
        order = np.argsort(x)
        rng = np.random.default_rng(seed)
        picks = np.unique(
            np.concatenate(
                [
                    order[np.linspace(0, x.size - 1, _BLEED_SAMPLE // 2).astype(int)],
                    rng.choice(x.size, _BLEED_SAMPLE // 2, replace=False),
                ]
            )
        )
        x, y = x[picks], y[picks]
    slope = theil_sen_slope(y, x)
    return float(max(slope, 0.0))


def _learned_gate(
    values_negative: np.ndarray,
    values_all: np.ndarray,
    settings: GatingSettings,
) -> tuple[float, str, dict[str, Any], NegativePopulation]:
    negative = estimate_negative(values_negative)
    robust_gate = negative.gate(settings.k_mad)
    info: dict[str, Any] = {
        "scale": "linear"
        if negative.scale.cofactor is None
        else f"asinh(x / {negative.scale.cofactor:.6g})",
        "cofactor": negative.scale.cofactor,
        "negative_median": float(negative.scale.inverse(negative.center)),
        "negative_center_glog": negative.center,
        "negative_robust_sd_glog": negative.spread,
        "k_mad": settings.k_mad,
        "robust_gate": robust_gate,
    }
    if settings.method == "mixture":
        transformed = negative.scale.forward(values_all)
        positive = fit_positive_population(transformed, negative)
        if positive is not None:
            boundary, rule = positive_share_boundary(
                transformed, negative, positive, min_k=_MIXTURE_MIN_K
            )
            info["mixture"] = {
                "positive_weight": positive.weight,
                "positive_center_glog": positive.center,
                "positive_sd_glog": positive.spread,
                "positive_median": float(negative.scale.inverse(positive.center)),
                "boundary_rule": rule,
                "boundary_glog": boundary,
                "boundary_k": (boundary - negative.center) / negative.spread,
            }
            return float(negative.scale.inverse(boundary)), "mixture", info, negative
        info["mixture_fallback"] = (
            "no positive population separate from the vehicle cells; robust gate used"
        )
    return robust_gate, "robust", info, negative


def gates_are_manual(settings: GatingSettings) -> bool:
    """Whether the settings fix both gates and the bleed-through, so no vehicle cells are
    needed to learn anything."""
    return (
        settings.annexin_gate is not None
        and settings.pi_gate is not None
        and settings.bleedthrough_annexin_to_pi is not None
    )


def learn_gates(
    cells: pd.DataFrame,
    platemap: pd.DataFrame | None,
    settings: GatingSettings,
    marker_features: Mapping[str, str] | None = None,
) -> dict[int, Gates]:
    """Learn Annexin V / PI quadrant gates per timepoint from the vehicle wells of one plate.

    Parameters
    ----------
    cells
        Per-cell table of one plate (``well``, ``timepoint``, ``area_um2`` and the gating
        features named in ``settings``).
    platemap
        Plate map with ``well`` and ``role``; ``negative_control`` wells train the gates,
        ``positive_control`` wells check them.
    settings
        Gating settings: features, method, ``k_mad``, manual gates, bleed-through.
    marker_features
        Extra plugin stains to gate the same way, ``{stain: feature column}``.

    Returns
    -------
    dict[int, Gates]
        Gates per timepoint present in ``cells``.

    Examples
    --------
    >>> from screenlib.gating.synthetic_cells import simulate_cell_table, example_platemap
    >>> platemap = example_platemap()
    >>> cells = simulate_cell_table(platemap, seed=1)
    >>> gates = learn_gates(cells, platemap, GatingSettings())
    >>> sorted(gates), gates[0].method
    ([0], 'mixture')
    """
    marker_features = dict(marker_features or {})
    _require_columns(
        cells,
        [
            "well",
            settings.annexin_feature,
            settings.pi_feature,
            settings.bleedthrough_feature,
            *marker_features.values(),
        ],
        "per-cell table",
    )
    if settings.method not in ("robust", "mixture"):
        raise SettingsError(f"gating.method must be 'robust' or 'mixture', got {settings.method!r}")
    if "plate" in cells.columns and cells["plate"].nunique() > 1:
        raise InputError(
            "learn_gates got cells of several plates "
            f"({', '.join(map(str, cells['plate'].unique()[:5]))}); gates are learned per plate — "
            "call it once per plate"
        )
    timepoint = (
        cells["timepoint"].to_numpy(dtype=int)
        if "timepoint" in cells.columns
        else np.zeros(len(cells), dtype=int)
    )
    roles = _roles(cells, platemap)
    timepoints = sorted(set(timepoint.tolist())) or [0]
    scales = learn_object_scales(cells, roles, settings) if settings.classify_objects else {}
    usable = usable_cells(cells, settings)
    if scales:
        objects = classify_objects(cells, scales, settings)["object_class"].astype(str)
        usable &= objects.isin(GATED).to_numpy()
    annexin = cells[settings.annexin_feature].to_numpy(dtype=float)
    pi = cells[settings.pi_feature].to_numpy(dtype=float)
    leaking = np.nan_to_num(cells[settings.bleedthrough_feature].to_numpy(dtype=float))
    wells = drift_units(cells)
    negative_mask = usable & (roles == "negative_control")
    positive_mask = usable & (roles == "positive_control")
    manual_annexin = settings.annexin_gate is not None
    manual_pi = settings.pi_gate is not None
    fully_manual = gates_are_manual(settings)

    # Vehicle cells per timepoint; a timepoint without vehicle cells borrows all timepoints'.
    training: dict[int, np.ndarray] = {}
    borrowed: set[int] = set()
    for tp in timepoints:
        mask = negative_mask & (timepoint == tp)
        if mask.sum() < _MIN_CONTROL_CELLS:
            mask = negative_mask
            borrowed.add(tp)
        training[tp] = mask
    if negative_mask.sum() < _MIN_CONTROL_CELLS and not fully_manual:
        raise InputError(
            f"only {int(negative_mask.sum())} usable cells in negative_control (vehicle) wells; "
            f"at least {_MIN_CONTROL_CELLS} are needed to learn gates — mark the vehicle wells "
            "with role 'negative_control' in the plate map, or give gating.annexin_gate, "
            "gating.pi_gate and gating.bleedthrough_annexin_to_pi in the assay settings"
        )

    # Annexin gates first: they do not depend on the PI compensation. With drift
    # normalisation every well is first scaled by its own negative cells.
    annexin_scales: dict[int, dict[str, float]] = {}
    if settings.normalize_stain_drift and not manual_annexin:
        # the gain is read off viable cells: necrotic cells bind some Annexin V and their
        # share grows with the treatment
        pi_negative = _below_vehicle_gate(pi, timepoint, timepoints, training, settings)
        annexin, annexin_scales = _normalized(
            annexin, wells, timepoint, timepoints, usable & pi_negative, training, settings
        )
    annexin_gates: dict[int, tuple[float, str, dict[str, Any]]] = {}
    for tp in timepoints:
        if manual_annexin:
            annexin_gates[tp] = (float(settings.annexin_gate), "manual", {})
        else:
            here = usable & (timepoint == tp)
            gate, how, info, _ = _learned_gate(annexin[training[tp]], annexin[here], settings)
            annexin_gates[tp] = (gate, how, info)

    def loose_pi_negative(bleed: float) -> np.ndarray:
        """Cells below twice the PI gate's distance from the vehicle median (no truncation
        of the negative population's noise, which would bias the slope)."""
        selected = np.zeros(len(cells), dtype=bool)
        for tp in timepoints:
            here = usable & (timepoint == tp)
            compensated = pi - bleed * leaking
            median = float(np.median(compensated[training[tp]]))
            gate = (
                float(settings.pi_gate)
                if manual_pi
                else estimate_negative(compensated[training[tp]]).gate(settings.k_mad)
            )
            selected |= here & (compensated <= median + 2.0 * max(gate - median, 0.0))
        return selected

    annexin_positive = np.zeros(len(cells), dtype=bool)
    for tp in timepoints:
        annexin_positive |= (timepoint == tp) & (annexin > annexin_gates[tp][0])

    bleed_info: dict[str, Any] = {}
    if settings.bleedthrough_annexin_to_pi is not None:
        bleed = float(settings.bleedthrough_annexin_to_pi)
        bleed_info["source"] = "settings"
    else:
        # Early apoptotic cells (Annexin+/PI-) give the slope its leverage; among Annexin-
        # cells the leaking feature is mostly noise and would attenuate a fitted slope. The
        # first pass allows up to 100 % bleed-through so those cells are not cut away.
        bleed = 1.0
        history: list[float] = []
        basis = "Annexin-positive, PI-negative cells"
        last_pass = (None, np.nan)  # cells and slope: the same cells give the same slope
        for _ in range(_BLEED_ITERATIONS):
            pi_negative = loose_pi_negative(bleed)
            chosen = pi_negative & annexin_positive
            if chosen.sum() < 30:
                chosen = pi_negative
                basis = "PI-negative cells (too few Annexin-positive ones)"
            same_cells = last_pass[0] is not None and np.array_equal(chosen, last_pass[0])
            estimate = last_pass[1] if same_cells else estimate_bleedthrough(leaking, pi, chosen)
            last_pass = (chosen, estimate)
            if not np.isfinite(estimate):
                estimate = 0.0
                basis = "too few PI-negative cells; no compensation"
                history.append(estimate)
                bleed = estimate
                break
            history.append(estimate)
            converged = abs(estimate - bleed) < 1e-3 * max(abs(estimate), 1e-3)
            bleed = estimate
            if converged:
                break
        bleed_info = {
            "source": f"estimated: Theil-Sen slope of {settings.pi_feature} on "
            f"{settings.bleedthrough_feature} among {basis}",
            "iterations": history,
            "n_cells": int(chosen.sum()),
        }

    compensated = pi - bleed * leaking
    pi_scales: dict[int, dict[str, float]] = {}
    if settings.normalize_stain_drift and not manual_pi:
        annexin_negative = _below_vehicle_gate(annexin, timepoint, timepoints, training, settings)
        compensated, pi_scales = _normalized(
            compensated, wells, timepoint, timepoints, usable & annexin_negative, training,
            settings,
        )  # fmt: skip
    gates: dict[int, Gates] = {}
    for tp in timepoints:
        here = usable & (timepoint == tp)
        train = training[tp]
        details: dict[str, Any] = {
            "n_usable_cells": int(here.sum()),
            "bleedthrough": bleed_info,
            "warnings": [],
        }
        if tp in borrowed:
            details["warnings"].append(
                f"timepoint {tp} has fewer than {_MIN_CONTROL_CELLS} vehicle cells; "
                "gates learned from the vehicle cells of all timepoints"
            )
        methods = {}
        annexin_gate, methods["annexin"], annexin_info = annexin_gates[tp]
        if annexin_info:
            details["annexin"] = annexin_info
        if manual_pi:
            pi_gate = float(settings.pi_gate)
            methods["pi"] = "manual"
        else:
            pi_gate, methods["pi"], details["pi"], _ = _learned_gate(
                compensated[train], compensated[here], settings
            )
        marker_gates = {}
        for stain, feature in marker_features.items():
            values = cells[feature].to_numpy(dtype=float)
            finite = np.isfinite(values)
            gate, how, info, _ = _learned_gate(
                values[train & finite], values[here & finite], settings
            )
            marker_gates[stain] = {"feature": feature, "gate": gate, "method": how, "details": info}

        method = (
            methods["annexin"]
            if methods["annexin"] == methods["pi"]
            else f"annexin: {methods['annexin']}, pi: {methods['pi']}"
        )
        details["controls"] = _check_controls(
            annexin, compensated, annexin_gate, pi_gate,
            negative_mask & (timepoint == tp), positive_mask & (timepoint == tp), settings,
        )  # fmt: skip
        details["warnings"].extend(details["controls"].pop("warnings"))
        for message in details["warnings"]:
            warnings.warn(f"gating, timepoint {tp}: {message}", stacklevel=2)
        gates[tp] = Gates(
            timepoint=int(tp),
            annexin_feature=settings.annexin_feature,
            pi_feature=settings.pi_feature,
            annexin_gate=float(annexin_gate),
            pi_gate=float(pi_gate),
            bleedthrough_annexin_to_pi=float(bleed),
            bleedthrough_feature=settings.bleedthrough_feature,
            method=method,
            n_control_cells=int(train.sum()),
            marker_gates=marker_gates,
            details=_json_safe(details),
            object_scale=_json_safe(scales[tp].to_dict()) if scales.get(tp) else None,
            stain_scales=_stain_scale_table(annexin_scales.get(tp, {}), pi_scales.get(tp, {})),
        )
    return gates


def learn_object_scales(
    cells: pd.DataFrame, roles: np.ndarray, settings: GatingSettings
) -> dict[int, ObjectScale | None]:
    """The vehicle nuclei's scale per timepoint (a timepoint with too few vehicle objects
    borrows the scale of all timepoints' vehicle objects)."""
    timepoint = (
        cells["timepoint"].to_numpy(dtype=int)
        if "timepoint" in cells.columns
        else np.zeros(len(cells), dtype=int)
    )
    vehicle = roles == "negative_control"
    pooled = None
    scales: dict[int, ObjectScale | None] = {}
    for tp in sorted(set(timepoint.tolist())):
        scale = object_scale(cells, vehicle & (timepoint == tp), settings)
        if scale is None:
            pooled = pooled or object_scale(cells, vehicle, settings)
            scale = pooled
        scales[int(tp)] = scale
    return {tp: scale for tp, scale in scales.items() if scale is not None}


def _normalized(
    values: np.ndarray,
    wells: np.ndarray,
    timepoint: np.ndarray,
    timepoints: list[int],
    usable: np.ndarray,
    training: dict[int, np.ndarray],
    settings: GatingSettings,
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """``values`` divided by each well's drift factor, and the factors per timepoint."""
    result = values.copy()
    factors: dict[int, dict[str, float]] = {}
    for tp in timepoints:
        here = usable & (timepoint == tp) & np.isfinite(values)
        train = training[tp] & np.isfinite(values)
        if train.sum() < _MIN_CONTROL_CELLS:
            continue
        gate = estimate_negative(values[train]).gate(_NEGATIVE_K)
        negative = here & (values <= gate)
        factors[tp] = stain_scales(values[here], wells[here], negative[here], train[here])
        at_tp = timepoint == tp
        result[at_tp] = values[at_tp] / scale_per_cell(wells[at_tp], factors[tp])
    return result, factors


def _below_vehicle_gate(
    values: np.ndarray,
    timepoint: np.ndarray,
    timepoints: list[int],
    training: dict[int, np.ndarray],
    settings: GatingSettings,
) -> np.ndarray:
    """Cells below the robust gate of the vehicle cells of their timepoint."""
    below = np.zeros(values.size, dtype=bool)
    for tp in timepoints:
        train = training[tp] & np.isfinite(values)
        if train.sum() < _MIN_CONTROL_CELLS:
            continue
        gate = estimate_negative(values[train]).gate(_NEGATIVE_K)
        below |= (timepoint == tp) & (values <= gate)
    return below


def _stain_scale_table(
    annexin: Mapping[str, float], pi: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, scales in (("annexin", annexin), ("pi", pi)):
        for well, factor in scales.items():
            table.setdefault(well, {})[name] = float(factor)
    return table


def _check_controls(
    annexin: np.ndarray,
    pi_compensated: np.ndarray,
    annexin_gate: float,
    pi_gate: float,
    negative: np.ndarray,
    positive: np.ndarray,
    settings: GatingSettings,
) -> dict[str, Any]:
    """Positive fractions in vehicle and positive-control cells; warnings on poor separation."""
    result: dict[str, Any] = {"warnings": []}
    for name, mask in (("negative_control", negative), ("positive_control", positive)):
        n = int(mask.sum())
        result[f"{name}_n_cells"] = n
        if n == 0:
            continue
        annexin_positive = annexin[mask] > annexin_gate
        pi_positive = pi_compensated[mask] > pi_gate
        result[f"{name}_annexin_positive_fraction"] = float(annexin_positive.mean())
        result[f"{name}_pi_positive_fraction"] = float(pi_positive.mean())
        result[f"{name}_apoptotic_fraction"] = float(annexin_positive.mean())
    if result["positive_control_n_cells"] == 0:
        result["warnings"].append("no positive-control cells; the gates could not be checked")
        return result
    if result["negative_control_n_cells"] == 0:
        return result
    separation = (
        result["positive_control_apoptotic_fraction"]
        - result["negative_control_apoptotic_fraction"]
    )
    result["apoptotic_fraction_separation"] = separation
    if separation < settings.min_control_separation:
        result["warnings"].append(
            "poor separation: apoptotic fraction "
            f"{result['positive_control_apoptotic_fraction']:.3f} in positive controls vs "
            f"{result['negative_control_apoptotic_fraction']:.3f} in vehicle"
            f" (difference below gating.min_control_separation = {settings.min_control_separation})"
        )
    return result
