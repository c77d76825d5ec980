"""Simulated per-cell tables with known classes, for testing and tuning gating and aggregation.

Each cell gets a true class; its measurements come from a small per-pixel model rather than
being drawn directly, so that ring mean and ring p90 differ the way they do in images:

* Annexin V binds a thin membrane line occupying a fraction (Beta-distributed, ~30 %) of the
  ring pixels; the ring also holds pixel noise and a per-cell background error. Viable and
  necrotic cells carry a faint basal binding, apoptotic cells a bright one (log-normal, with
  wide spread so that classes overlap).
* PI nucleus mean: autofluorescence and noise near zero for PI-negative cells, log-normal for
  PI-positive ones, plus FITC bleed-through ``bleedthrough * membrane intensity``.
* Vehicle wells hold a few % apoptotic and necrotic cells; dose raises apoptosis and lowers
  the cell count; small debris objects are mixed in.

The plate map helper makes a 96-well layout with vehicle, positive-control, sample and empty
wells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VEHICLE_CLASS_PROBABILITIES = {
    "viable": 0.93,
    "early_apoptotic": 0.03,
    "late_apoptotic": 0.025,
    "necrotic": 0.015,
}
MAX_EFFECT_CLASS_PROBABILITIES = {
    "viable": 0.20,
    "early_apoptotic": 0.35,
    "late_apoptotic": 0.35,
    "necrotic": 0.10,
}
_CLASSES = tuple(VEHICLE_CLASS_PROBABILITIES)


def example_platemap(n_rows: int = 8, n_columns: int = 12) -> pd.DataFrame:
    """A plate map: column 1 vehicle, last column positive controls (top half), vehicle and one
    empty well (bottom half), a 10-point dilution series in between; two cell lines."""
    rows = [chr(ord("A") + i) for i in range(n_rows)]
    records = []
    concentrations = 1e-9 * 10 ** (np.arange(n_columns - 2) * 4 / max(n_columns - 3, 1))
    for r_index, row in enumerate(rows):
        sample = "HeLa" if r_index < n_rows // 2 else "U2OS"
        for column in range(1, n_columns + 1):
            record = {"well": f"{row}{column:02d}", "row": row, "column": column, "sample": sample}
            if column == 1:
                record.update(compound="DMSO", concentration_molar=0.0, role="negative_control")
            elif column == n_columns:
                if r_index < n_rows // 2:
                    record.update(
                        compound="staurosporine", concentration_molar=1e-6, role="positive_control"
                    )
                elif r_index == n_rows - 1:
                    record.update(compound="", concentration_molar=0.0, role="empty")
                else:
                    record.update(compound="DMSO", concentration_molar=0.0, role="negative_control")
            else:
                record.update(
                    compound="cmpd-1",
                    concentration_molar=float(concentrations[column - 2]),
                    role="sample",
                )
            records.append(record)
    return pd.DataFrame.from_records(records)


def _effect(platemap: pd.DataFrame, ec50_molar: float, hill: float) -> np.ndarray:
    role = platemap["role"].astype(str).to_numpy()
    concentration = platemap["concentration_molar"].to_numpy(dtype=float)
    effect = np.zeros(len(platemap))
    dosed = concentration > 0
    effect[dosed] = 1.0 / (1.0 + (ec50_molar / concentration[dosed]) ** hill)
    effect[role == "positive_control"] = 1.0
    effect[role == "negative_control"] = 0.0
    return effect


def simulate_cell_table(
    platemap: pd.DataFrame,
    *,
    cells_per_well: int = 150,
    timepoints: tuple[int, ...] = (0,),
    n_fields: int = 4,
    bleedthrough: float = 0.15,
    debris_fraction: float = 0.04,
    ec50_molar: float = 3e-7,
    hill: float = 1.2,
    pixel_size_um: float = 0.65,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-cell table (architecture column names) with a ``true_class`` column.

    Parameters
    ----------
    platemap
        Plate map (``well``, ``row``, ``column``, ``role``, ``concentration_molar``).
    cells_per_well
        Expected cells in a vehicle well (Poisson); dosed wells lose up to 60 %.
    timepoints
        Timepoints to simulate; apoptosis and Annexin brightness rise with time.
    n_fields
        Fields per well the cells are spread over.
    bleedthrough
        True FITC -> PI bleed-through coefficient.
    debris_fraction
        Expected debris objects per cell.
    seed
        Random seed.

    Returns
    -------
    pandas.DataFrame
        One row per object, with ``true_class`` in viable / early_apoptotic /
        late_apoptotic / necrotic / debris.
    """
    rng = np.random.default_rng(seed)
    effect_at_end = _effect(platemap, ec50_molar, hill)
    vehicle = np.array([VEHICLE_CLASS_PROBABILITIES[c] for c in _CLASSES])
    maximum = np.array([MAX_EFFECT_CLASS_PROBABILITIES[c] for c in _CLASSES])
    n_timepoints = len(timepoints)
    class_parts, brightness_parts, meta = [], [], []
    for t_index, tp in enumerate(timepoints):
        progress = (t_index + 1) / n_timepoints
        annexin_brightness = 1.0 + 0.6 * t_index  # reagent keeps accumulating
        for w_index, well in enumerate(platemap.itertuples(index=False)):
            if str(well.role) == "empty":
                continue
            effect = effect_at_end[w_index] * progress
            probabilities = (1 - effect) * vehicle + effect * maximum
            n_cells = rng.poisson(cells_per_well * (1.0 - 0.6 * effect))
            n_debris = rng.poisson(cells_per_well * debris_fraction * (1 + 2 * effect))
            classes = np.concatenate(
                [
                    rng.choice(np.array(_CLASSES), size=n_cells, p=probabilities),
                    ["debris"] * n_debris,
                ]
            )
            class_parts.append(classes)
            brightness_parts.append(np.full(classes.size, annexin_brightness))
            meta.append((well.well, well.row, int(well.column), int(tp), classes.size))
    classes = np.concatenate(class_parts)
    cells = _measure(classes, rng, bleedthrough, np.concatenate(brightness_parts), pixel_size_um)
    sizes = [m[4] for m in meta]
    cells.insert(0, "well", np.repeat([m[0] for m in meta], sizes))
    cells.insert(1, "row", np.repeat([m[1] for m in meta], sizes))
    cells.insert(2, "column", np.repeat([m[2] for m in meta], sizes))
    cells.insert(3, "field", rng.integers(0, n_fields, size=len(cells)))
    cells.insert(4, "timepoint", np.repeat([m[3] for m in meta], sizes))
    cells["label"] = cells.groupby(["well", "field", "timepoint"]).cumcount() + 1
    cells["cell_id"] = (
        cells["well"]
        + "_f"
        + cells["field"].astype(str)
        + "_t"
        + cells["timepoint"].astype(str)
        + "_"
        + cells["label"].astype(str)
    )
    cells.insert(0, "plate", "sim")
    return cells


def _measure(
    classes: np.ndarray,
    rng: np.random.Generator,
    bleedthrough: float,
    annexin_brightness: np.ndarray,
    pixel_size_um: float,
) -> pd.DataFrame:
    n = classes.size
    apoptotic = np.isin(classes, ["early_apoptotic", "late_apoptotic"])
    pi_positive = np.isin(classes, ["late_apoptotic", "necrotic"])
    debris = classes == "debris"
    area_um2 = np.where(
        apoptotic, rng.lognormal(np.log(65), 0.25, n), rng.lognormal(np.log(90), 0.25, n)
    )
    area_um2[debris] = rng.uniform(1.5, 7.9, debris.sum())
    area_px = np.maximum(np.round(area_um2 / pixel_size_um**2), 1).astype(int)
    radius_px = np.sqrt(area_px / np.pi)
    ring_px = np.maximum(np.round(2 * np.pi * (radius_px + 2) * 4), 8).astype(int)

    membrane = (
        np.where(
            apoptotic,
            rng.lognormal(np.log(300), 0.6, n),
            rng.lognormal(np.log(20), 0.5, n),
        )
        * annexin_brightness
    )
    membrane[debris] = rng.lognormal(np.log(80), 1.0, debris.sum())
    covered = rng.beta(3, 7, n)
    pixel_noise_sd = 25.0
    background_error = rng.normal(0, 5, n)
    ring_mean = np.empty(n)
    ring_p90 = np.empty(n)
    owner = np.repeat(np.arange(n), ring_px)
    pixels = rng.normal(0, pixel_noise_sd, owner.size) + background_error[owner]
    on_membrane = rng.random(owner.size) < covered[owner]
    speckle = rng.lognormal(0, 0.3, owner.size)
    pixels += on_membrane * membrane[owner] * speckle
    starts = np.concatenate([[0], np.cumsum(ring_px)[:-1]])
    for size in np.unique(ring_px):  # cells with equal ring sizes: one 2-D quantile each
        which = np.nonzero(ring_px == size)[0]
        block = pixels[starts[which][:, None] + np.arange(size)[None, :]]
        ring_mean[which] = block.mean(axis=1)
        ring_p90[which] = np.quantile(block, 0.9, axis=1)

    pi_mean = rng.lognormal(np.log(3), 0.5, n) + rng.normal(0, pixel_noise_sd / np.sqrt(area_px))
    pi_mean = pi_mean + rng.normal(0, 2, n)
    pi_bright = np.where(
        classes == "necrotic",
        rng.lognormal(np.log(220), 0.6, n),
        rng.lognormal(np.log(300), 0.6, n),
    )
    pi_mean = np.where(pi_positive, pi_bright, pi_mean) + bleedthrough * membrane * covered / 0.3
    hoechst_mean = rng.lognormal(np.log(800), 0.2, n) * np.where(apoptotic, 1.5, 1.0)
    return pd.DataFrame(
        {
            "area_um2": area_um2,
            "area_px": area_px,
            "touches_border": rng.random(n) < 0.03,
            "hoechst_nucleus_mean": hoechst_mean,
            "hoechst_nucleus_integrated": hoechst_mean * area_px,
            "annexin_v_ring_mean": ring_mean,
            "annexin_v_ring_p90": ring_p90,
            "annexin_v_ring_integrated": ring_mean * ring_px,
            "pi_nucleus_mean": pi_mean,
            "pi_nucleus_integrated": pi_mean * area_px,
            "true_class": classes,
        }
    )
