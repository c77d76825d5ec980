"""Score a finished run against a simulated plate's ground truth.

A truth cell is matched to the predicted nucleus that covers most of its pixels (and at least
half of them); per-cell class accuracy is counted over matched cells, and the per-well
apoptotic fraction is compared with the realised truth fraction of the well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from screenlib.settings import FitSettings
from screenlib.store import open_plate

CLASSES = ("viable", "early_apoptotic", "late_apoptotic", "necrotic")


@dataclass(frozen=True)
class RunAccuracy:
    """How a run's per-cell classes and per-well fractions compare with the truth."""

    n_truth_cells: int
    n_matched: int
    class_accuracy: float
    fraction_mae: float
    fraction_bias: float
    worst_well: str
    worst_well_error: float
    confusion: pd.DataFrame  # rows: true class, columns: called class (incl. debris)
    # the same for apoptotic_fraction_mixture (NaN when the run has no such column)
    mixture_fraction_mae: float = float("nan")
    mixture_fraction_bias: float = float("nan")


def match_truth_cells(truth_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For every truth label 1..N, the predicted label covering most of it (0: none).

    A match needs the predicted nucleus to cover at least half of the truth nucleus.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2]]); predicted = np.array([[5, 5, 0, 0]])
    >>> match_truth_cells(truth, predicted)
    array([0, 5, 0])
    """
    truth_flat = truth_labels.ravel().astype(np.int64)
    pred_flat = labels.ravel().astype(np.int64)
    n_truth = int(truth_flat.max(initial=0))
    matches = np.zeros(n_truth + 1, dtype=np.int64)
    inside = truth_flat > 0
    if not inside.any():
        return matches
    truth_area = np.bincount(truth_flat, minlength=n_truth + 1)
    both = inside & (pred_flat > 0)
    base = int(pred_flat.max()) + 1
    keys, overlap = np.unique(truth_flat[both] * base + pred_flat[both], return_counts=True)
    truth_ids, pred_ids = keys // base, keys % base
    order = np.lexsort((-overlap, truth_ids))  # largest overlap first within each truth cell
    truth_ids, pred_ids, overlap = truth_ids[order], pred_ids[order], overlap[order]
    first = np.r_[True, truth_ids[1:] != truth_ids[:-1]]
    keep = first.copy()
    keep[first] = 2 * overlap[first] >= truth_area[truth_ids[first]]
    matches[truth_ids[keep]] = pred_ids[keep]
    return matches


def evaluate_run(out_dir: str | Path, truth_dir: str | Path) -> RunAccuracy:
    """Compare ``out_dir`` (a finished ``screenlib run``) with a simulated plate's truth.

    Parameters
    ----------
    out_dir
        The run's output folder: ``cells.parquet``, ``wells.csv`` and the plate with its
        ``nuclei`` labels (``plate.zarr`` inside ``out_dir``, or the plate named in
        ``run.json``).
    truth_dir
        The simulated plate's ``truth`` folder (``cells.parquet``, ``wells.csv``, ``labels/``).
    """
    out_dir, truth_dir = Path(out_dir), Path(truth_dir)
    cells = pd.read_parquet(out_dir / "cells.parquet")
    wells = pd.read_csv(out_dir / "wells.csv")
    truth_cells = pd.read_parquet(truth_dir / "cells.parquet")
    truth_wells = pd.read_csv(truth_dir / "wells.csv")
    plate = open_plate(_plate_path(out_dir))

    called = cells.set_index(["well", "field", "timepoint", "label"])["cell_class"]
    pairs = []
    for (well, field, timepoint), group in truth_cells.groupby(["well", "field", "timepoint"]):
        truth_labels = tifffile.imread(truth_dir / "labels" / f"{well}_f{field}_t{timepoint}.tif")
        labels = plate.read_labels(well, int(field), timepoint=int(timepoint))
        matches = match_truth_cells(truth_labels, labels)
        predicted = matches[group["label"].to_numpy()]
        keys = pd.MultiIndex.from_arrays(
            [
                [well] * len(group),
                [field] * len(group),
                [timepoint] * len(group),
                predicted,
            ]
        )
        call = called.reindex(keys).to_numpy()
        call = np.where(predicted == 0, "missed", call)
        pairs.append(pd.DataFrame({"truth": group["cell_class"].to_numpy(), "called": call}))
    pairs = pd.concat(pairs, ignore_index=True)
    matched = pairs[pairs["called"] != "missed"]
    confusion = pd.crosstab(pairs["truth"], pairs["called"])

    merged = wells.merge(truth_wells, on=["well", "timepoint"], suffixes=("", "_truth"))
    error = merged["apoptotic_fraction"] - merged["apoptotic_fraction_truth"]
    worst = int(error.abs().idxmax())
    mixture_error = (
        merged["apoptotic_fraction_mixture"] - merged["apoptotic_fraction_truth"]
        if "apoptotic_fraction_mixture" in merged
        else pd.Series(dtype=float)
    )
    return RunAccuracy(
        n_truth_cells=len(pairs),
        n_matched=len(matched),
        class_accuracy=float((matched["truth"] == matched["called"]).mean()),
        fraction_mae=float(error.abs().mean()),
        fraction_bias=float(error.mean()),
        worst_well=str(merged.loc[worst, "well"]),
        worst_well_error=float(error.loc[worst]),
        confusion=confusion,
        mixture_fraction_mae=float(mixture_error.abs().mean()),
        mixture_fraction_bias=float(mixture_error.mean()),
    )


def _plate_path(out_dir: Path) -> Path:
    """The plate holding the run's nucleus labels: its own labels plate, an ingested copy, or
    the input plate it wrote them into (``--write-labels``)."""
    for name in ("labels.zarr", "plate.zarr"):
        if (out_dir / name).exists():
            return out_dir / name
    import json

    run = json.loads((out_dir / "run.json").read_text())
    return Path(run["plate"])


#: bands of the true apoptotic fraction that errors are reported in
FRACTION_BANDS = (0.0, 0.1, 0.3, 0.7, 1.0)


def fraction_errors(
    wells: pd.DataFrame,
    truth_wells: pd.DataFrame,
    column: str = "apoptotic_fraction",
    bands: tuple[float, ...] = FRACTION_BANDS,
) -> pd.DataFrame:
    """Signed bias and MAE of a per-well fraction per timepoint, overall and per true band.

    Parameters
    ----------
    wells
        The run's ``wells.csv`` (``well``, ``timepoint``, ``column``, ``n_cells``).
    truth_wells
        The simulated plate's ``truth/wells.csv``.
    column
        The run's fraction column scored against the truth's ``apoptotic_fraction``.

    Returns
    -------
    pandas.DataFrame
        One row per timepoint: ``n_wells``, ``bias``, ``mae``, ``bias <band>`` and
        ``mae <band>`` per band of the true fraction, ``count_error_median`` (median of
        ``|n_nuclei / true n_cells - 1|`` over wells; ``n_cells`` without ``n_nuclei``) and
        ``count_bias_median``.
    """
    merged = wells.merge(truth_wells, on=["well", "timepoint"], suffixes=("", "_truth"))
    rows = []
    for timepoint, group in merged.groupby("timepoint"):
        truth = group["apoptotic_fraction_truth"]
        error = (group[column] - truth).dropna()
        row: dict = {
            "timepoint": int(timepoint),
            "n_wells": int(error.size),
            "bias": float(error.mean()),
            "mae": float(error.abs().mean()),
        }
        band = pd.cut(truth.reindex(error.index), list(bands), include_lowest=True)
        for interval, part in error.groupby(band, observed=True):
            label = f"{max(interval.left, 0.0):.1f}-{interval.right:.1f}"
            row[f"bias {label}"] = float(part.mean())
            row[f"mae {label}"] = float(part.abs().mean())
        with np.errstate(invalid="ignore", divide="ignore"):
            counted = group["n_nuclei"] if "n_nuclei" in group else group["n_cells"]
            relative = counted / group["n_cells_truth"] - 1.0
        row["count_error_median"] = float(relative.abs().median())
        row["count_bias_median"] = float(relative.median())
        rows.append(row)
    return pd.DataFrame(rows)


def passing_field_count_errors(
    wells: pd.DataFrame, fields: pd.DataFrame, truth_cells: pd.DataFrame
) -> pd.DataFrame:
    """Per-well cell-count error against the true cells of the fields that passed QC.

    ``n_nuclei`` counts the cells of the fields a run used; a field that failed QC takes its
    cells out of the count (``cells_per_field`` and the relative cell count allow for that),
    so the like-for-like truth is the count over the passing fields.

    Parameters
    ----------
    wells, fields
        The run's ``wells.csv`` and ``fields.csv``.
    truth_cells
        The simulated plate's ``truth/cells.parquet`` (debris is not counted).

    Returns
    -------
    pandas.DataFrame
        One row per timepoint: ``count_error_passing_median`` (median of
        ``|n_nuclei / true cells in passing fields - 1|`` over wells with a passing field)
        and ``count_bias_passing_median``.
    """
    keys = ["well", "field", "timepoint"]
    passing = fields.loc[fields["qc_pass"].astype(bool), keys]
    cells = truth_cells.loc[truth_cells["object_class"] != "debris", keys]
    truth = cells.merge(passing, on=keys).groupby(["well", "timepoint"]).size()
    counted = wells.set_index(["well", "timepoint"])["n_nuclei"]
    relative = (counted / truth.rename("truth")).dropna() - 1.0
    rows = []
    for timepoint, part in relative.groupby(level="timepoint"):
        rows.append(
            {
                "timepoint": int(timepoint),
                "count_error_passing_median": float(part.abs().median()),
                "count_bias_passing_median": float(part.median()),
            }
        )
    return pd.DataFrame(rows)


def truth_fit_ic50s(truth_wells: pd.DataFrame, settings: FitSettings | None = None) -> pd.Series:
    """IC50 of the realised truth fractions, fitted with the engine's 4PL fitter.

    The design IC50 is the midpoint of the *expected* fraction curve; each well's realised
    fraction scatters binomially around it (a few dozen cells per well), so a fit to the true
    per-cell classes already misses the design IC50 (on the 96-well messy design with two
    fields per well by up to 1.5-fold at 24 h, where the response is half-built). This IC50 is
    what a perfect image analysis would report: the fold error against it is the image
    analysis's own.

    Parameters
    ----------
    truth_wells
        The simulated plate's ``truth/wells.csv``; ``sample`` and ``negative_control`` wells
        of each sample and timepoint are fitted on their counts (``n_apoptotic`` of
        ``n_cells``).
    settings
        Fit settings (default :class:`~screenlib.settings.FitSettings`).

    Returns
    -------
    pandas.Series
        ``ic50_molar`` indexed by ``(sample, timepoint)`` (NaN where no IC50 was reported).
    """
    from screenlib.doseresponse.fit import fit_curve

    wells = truth_wells[truth_wells["role"].isin(["sample", "negative_control"])]
    if "timepoint" not in wells.columns:
        wells = wells.assign(timepoint=0)
    values = {}
    for (sample, timepoint), curve in wells.groupby(["sample", "timepoint"]):
        fit = fit_curve(
            curve["concentration_molar"].to_numpy(float),
            n_positive=curve["n_apoptotic"].to_numpy(float),
            n_total=curve["n_cells"].to_numpy(float),
            direction="increasing",
            settings=settings,
        )
        values[(sample, int(timepoint))] = float(fit.ic50_molar)
    index = pd.MultiIndex.from_tuples(list(values), names=["sample", "timepoint"])
    return pd.Series(list(values.values()), index=index, name="ic50_molar", dtype=float)


def ic50_fold_errors(
    fits: pd.DataFrame,
    truth_wells: pd.DataFrame,
    readout: str,
    truth_fit: pd.Series | None = None,
) -> pd.DataFrame:
    """Fold error of each fitted IC50 of ``readout`` against the design's apoptosis IC50 and,
    given ``truth_fit`` (:func:`truth_fit_ic50s`), against the IC50 of the realised truth.

    Returns one row per fitted curve: ``sample``, ``timepoint`` (0 when absent), ``ic50_molar``,
    ``design_ic50_molar`` and ``fold`` (>= 1; NaN when no IC50 was reported); with
    ``truth_fit`` also ``truth_fit_ic50_molar`` and ``fold_vs_truth_fit``.
    """
    design = truth_wells.groupby("sample")["ic50_apoptosis_molar"].first()
    chosen = fits[fits["readout"] == readout].copy()
    if "timepoint" not in chosen.columns:
        chosen["timepoint"] = 0
    chosen["design_ic50_molar"] = chosen["sample"].map(design)
    chosen["fold"] = _fold(chosen["ic50_molar"], chosen["design_ic50_molar"])
    columns = ["sample", "timepoint", "ic50_molar", "design_ic50_molar", "fold"]
    if truth_fit is not None:
        keys = pd.MultiIndex.from_arrays([chosen["sample"], chosen["timepoint"].astype(int)])
        chosen["truth_fit_ic50_molar"] = truth_fit.reindex(keys).to_numpy()
        chosen["fold_vs_truth_fit"] = _fold(chosen["ic50_molar"], chosen["truth_fit_ic50_molar"])
        columns += ["truth_fit_ic50_molar", "fold_vs_truth_fit"]
    return chosen[columns]


def _fold(value: pd.Series, reference: pd.Series) -> pd.Series:
    ratio = value / reference
    return np.maximum(ratio, 1.0 / ratio)
