"""Object classes before quadrant classes: which segmented objects are cells.

A nuclear segmentation finds every Hoechst-bright object. On a real plate many of them are
not cells: apoptotic bodies and debris, the fragments of one karyorrhectic nucleus, mitotic
figures. Counting them as cells biases the apoptotic fraction up (apoptotic bodies are
Annexin V bright) and the cell count up. Every object therefore first gets an
``object_class``; only ``cell`` and ``fragmented`` objects enter the quadrant gates, and
``cell``, ``fragmented`` and ``mitotic`` objects are the cells that fractions and counts are
over.

Every threshold is relative to the plate's own vehicle (``negative_control``) nuclei of the
same timepoint, so it follows the magnification, the stain and the cell line without
constants fitted to one plate:

* the **scale** is the median nucleus area ``A0`` and the median DNA content ``D0``
  (Hoechst integrated intensity) of the vehicle objects (after a first pass that drops
  objects under half of either median, so debris does not pull them down);
* ``debris``: an object too small *and* with too little DNA for a nucleus at that scale
  (area < ``0.3 A0`` and DNA < ``0.35 D0``; a G1 nucleus holds about ``0.85 D0``, and a
  pyknotic nucleus, though small, keeps most of its DNA), or with hardly any DNA at all
  (DNA < ``0.25 D0``: dim, non-nuclear debris whatever its size), unless it is a piece of a
  fragmented nucleus. The DNA bounds sit well below a nucleus' because the measured Hoechst
  content of whole nuclei scatters widely on a real plate (illumination, stain gain, focus):
  on rendered messy plates 9 % of whole cells measured under ``0.5 D0``, 0.3 % under
  ``0.25 D0``, while 80 % of the debris did;
* ``fragmented`` / ``fragment``: two or more sub-nuclear objects (area < ``0.3 A0``) whose
  centres lie within one vehicle nucleus diameter of each other in the same field, together
  holding at least ``0.4 D0``, are the pieces of one karyorrhectic nucleus: the piece with
  the most DNA stands for the cell (``fragmented``, counted once) and the others are
  ``fragment`` (not counted); pieces that together hold less DNA are debris;
* ``mitotic``: condensed chromatin (Hoechst mean above the vehicle nuclei's median by more
  than 4 robust SDs on a log scale), a replicated genome (DNA >= ``1.3 D0``), a compact
  shape (solidity at least the vehicle's 5th percentile) and Annexin V below the vehicle's
  robust gate: alive, counted as a cell (its quadrant class is computed as for any cell),
  counted in ``n_mitotic``, and kept out of gate learning (its bright chromatin is not the
  vehicle population the gates describe). A pyknotic apoptotic nucleus is condensed too, but
  holds one genome and is Annexin V positive.

``n_nuclei`` counts the nuclei of an object the segmentation did not split (a clump): over
``1.6 A0`` in area *and* over ``1.6 D0`` in DNA (a single G2 nucleus holds about ``1.5 D0``
at about ``1.3 A0``) *and* less solid than the median vehicle nucleus (the neck between
touching nuclei; on a rendered messy plate merged objects had median solidity 0.85, large
single nuclei 0.90), the object stands for ``round(DNA / D0)`` nuclei in ``n_nuclei`` and
the relative cell count; its one class call counts once in the fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from screenlib.gating._robust import estimate_negative
from screenlib.robust import robust_sd
from screenlib.settings import GatingSettings

OBJECT_CLASSES = ("cell", "fragmented", "mitotic", "fragment", "debris")
#: object classes counted as cells (fractions, counts)
COUNTED = ("cell", "fragmented", "mitotic")
#: object classes the quadrant gates are learned on
GATED = ("cell", "fragmented")

SMALL_AREA = 0.3  # x A0
SMALL_DNA = 0.35  # x D0
NO_DNA = 0.25  # x D0
FRAGMENTS_DNA = 0.4  # x D0
MITOTIC_DNA = 1.3  # x D0
CONDENSED_K = 4.0  # robust SDs of log Hoechst mean
MERGED_SIZE = 1.6  # x A0 and x D0: an object this large with this much DNA holds several nuclei
_NUCLEAR_MEAN = "hoechst_nucleus_mean"
_NUCLEAR_DNA = "hoechst_nucleus_integrated"


@dataclass(frozen=True)
class ObjectScale:
    """The vehicle nuclei's scale of one plate and timepoint (thresholds derive from it)."""

    median_area_um2: float
    median_dna: float
    condensed_mean: float  # Hoechst mean above which chromatin is condensed
    min_solidity: float
    annexin_negative_below: float
    n_vehicle_objects: int
    median_solidity: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def object_scale(
    cells: pd.DataFrame, vehicle: np.ndarray, settings: GatingSettings
) -> ObjectScale | None:
    """The scale of the vehicle objects ``cells[vehicle]`` (None with fewer than 20 of them
    or without the nuclear measurements)."""
    needed = ("area_um2", _NUCLEAR_DNA, _NUCLEAR_MEAN)
    if any(c not in cells.columns for c in needed) or int(np.count_nonzero(vehicle)) < 20:
        return None
    area = cells["area_um2"].to_numpy(dtype=float)[vehicle]
    dna = cells[_NUCLEAR_DNA].to_numpy(dtype=float)[vehicle]
    mean = cells[_NUCLEAR_MEAN].to_numpy(dtype=float)[vehicle]
    first = (area > 0.5 * np.nanmedian(area)) & (dna > 0.5 * np.nanmedian(dna))
    if first.sum() < 20:
        return None
    log_mean = np.log(np.maximum(mean[first], 1e-6))
    annexin = cells[settings.annexin_feature].to_numpy(dtype=float)[vehicle][first]
    annexin = annexin[np.isfinite(annexin)]
    solidity = (
        cells["solidity"].to_numpy(dtype=float)[vehicle][first]
        if "solidity" in cells.columns
        else np.ones(int(first.sum()))
    )
    return ObjectScale(
        median_area_um2=float(np.median(area[first])),
        median_dna=float(np.median(dna[first])),
        condensed_mean=float(np.exp(np.median(log_mean) + CONDENSED_K * robust_sd(log_mean))),
        min_solidity=float(np.nanquantile(solidity, 0.05)),
        median_solidity=float(np.nanmedian(solidity)),
        annexin_negative_below=(
            estimate_negative(annexin).gate(settings.k_mad) if annexin.size >= 20 else np.inf
        ),
        n_vehicle_objects=int(first.sum()),
    )


def classify_objects(
    cells: pd.DataFrame,
    scales: dict[int, ObjectScale | None],
    settings: GatingSettings,
) -> pd.DataFrame:
    """Add ``object_class`` (see ``OBJECT_CLASSES``), ``fragment_of`` (label of the piece
    standing for a fragmented nucleus, -1 otherwise) and ``n_nuclei`` (cells the object
    stands for: 0 for debris and further fragments, ``round(DNA / D0)`` for an object over
    1.6x the vehicle nuclei's median area and DNA and less solid than their median, which
    are touching nuclei the segmentation did not split, 1 otherwise) to a per-cell table.

    Parameters
    ----------
    cells
        Per-object table (``well``, ``field``, ``timepoint``, ``label``, ``centroid_y``,
        ``centroid_x``, ``area_um2``, ``hoechst_nucleus_integrated``,
        ``hoechst_nucleus_mean``, ``solidity`` and the Annexin V feature).
    scales
        Vehicle scale per timepoint (:func:`object_scale`); a timepoint without one keeps
        every object a ``cell``.
    settings
        Gating settings (the Annexin V feature).

    Returns
    -------
    pandas.DataFrame
        A copy of ``cells`` with the two columns.
    """
    out = cells.copy()
    n = len(out)
    object_class = np.full(n, "cell", dtype=object)
    fragment_of = np.full(n, -1, dtype=np.int64)
    n_nuclei = np.ones(n, dtype=np.int64)
    timepoint = (
        out["timepoint"].to_numpy(dtype=int) if "timepoint" in out else np.zeros(n, dtype=int)
    )
    for tp in np.unique(timepoint):
        scale = scales.get(int(tp))
        if scale is None:
            continue
        here = np.flatnonzero(timepoint == tp)
        part = out.iloc[here]
        area = part["area_um2"].to_numpy(dtype=float) / scale.median_area_um2
        dna = part[_NUCLEAR_DNA].to_numpy(dtype=float) / scale.median_dna
        sub_nuclear = area < SMALL_AREA
        debris = (sub_nuclear & (dna < SMALL_DNA)) | ~(dna >= NO_DNA)
        classes = np.where(debris, "debris", "cell").astype(object)
        parent = np.full(here.size, -1, dtype=np.int64)
        _group_fragments(part, sub_nuclear, dna, scale, classes, parent)
        mean = part[_NUCLEAR_MEAN].to_numpy(dtype=float)
        solidity = (
            part["solidity"].to_numpy(dtype=float) if "solidity" in part else np.ones(here.size)
        )
        annexin = part[settings.annexin_feature].to_numpy(dtype=float)
        mitotic = (
            (classes == "cell")
            & (mean > scale.condensed_mean)
            & (dna >= MITOTIC_DNA)
            & (solidity >= scale.min_solidity)
            & (annexin < scale.annexin_negative_below)
        )
        classes[mitotic] = "mitotic"
        object_class[here] = classes
        fragment_of[here] = parent
        merged = (
            (classes == "cell")
            & (area > MERGED_SIZE)
            & (dna > MERGED_SIZE)
            & (solidity < scale.median_solidity)
        )
        n_nuclei[here] = np.where(
            merged,
            np.maximum(np.rint(dna), 1),
            1,
        )
    out["object_class"] = pd.Categorical(object_class, categories=OBJECT_CLASSES)
    out["fragment_of"] = fragment_of
    out["n_nuclei"] = np.where(np.isin(object_class, COUNTED), n_nuclei, 0).astype(np.int64)
    return out


def _group_fragments(
    part: pd.DataFrame,
    small: np.ndarray,
    dna: np.ndarray,
    scale: ObjectScale,
    classes: np.ndarray,
    parent: np.ndarray,
) -> None:
    """Mark groups of nearby sub-nuclear objects as one fragmented nucleus (in place)."""
    candidates = np.flatnonzero(small & np.isfinite(dna))
    if candidates.size < 2 or not {"centroid_y", "centroid_x", "well"} <= set(part.columns):
        return
    diameter_px = _diameter_px(part, scale)
    keys = part["well"].astype(str).to_numpy(dtype=object)[candidates]
    if "field" in part:  # fragments group within one field
        fields = part["field"].astype(str).to_numpy(dtype=object)[candidates]
        keys = keys + "/" + fields
    y = part["centroid_y"].to_numpy(dtype=float)[candidates]
    x = part["centroid_x"].to_numpy(dtype=float)[candidates]
    labels = part["label"].to_numpy() if "label" in part else np.arange(len(part))
    rows, cols = [], []
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        members = order[start:stop]
        if members.size < 2:
            continue
        dy = y[members, None] - y[None, members]
        dx = x[members, None] - x[None, members]
        close = np.hypot(dy, dx) <= diameter_px[candidates[members]][:, None]
        i, j = np.nonzero(np.triu(close, 1))
        rows.extend(members[i])
        cols.extend(members[j])
    if not rows:
        return
    n_groups, group = connected_groups(candidates.size, np.asarray(rows), np.asarray(cols))
    sizes = np.bincount(group, minlength=n_groups)
    totals = np.bincount(group, weights=dna[candidates], minlength=n_groups)
    for g in np.flatnonzero(sizes >= 2):
        members = candidates[group == g]
        if totals[g] < FRAGMENTS_DNA:
            classes[members] = "debris"
            continue
        lead = members[np.argmax(dna[members])]
        classes[members] = "fragment"
        classes[lead] = "fragmented"
        parent[members] = labels[lead]
        parent[lead] = -1


def connected_groups(n: int, rows: np.ndarray, cols: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the undirected graph of ``n`` nodes with edges ``rows[k]`` --
    ``cols[k]``: their number and each node's component (0, 1, ... in order of each
    component's lowest node).

    Each node takes the lowest label among its neighbours', then its label's label (pointer
    jumping), until nothing changes; touching fragments form small groups, so a few rounds do.
    (scipy.sparse.csgraph would cost its 0.15 s import on every run.)
    """
    label = np.arange(n)
    while True:
        lowest = np.minimum(label[rows], label[cols])
        new = label.copy()
        np.minimum.at(new, rows, lowest)
        np.minimum.at(new, cols, lowest)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    roots, group = np.unique(label, return_inverse=True)
    return roots.size, group


def _diameter_px(part: pd.DataFrame, scale: ObjectScale) -> np.ndarray:
    """One vehicle nucleus diameter in each object's pixels."""
    diameter_um = 2.0 * np.sqrt(scale.median_area_um2 / np.pi)
    if "area_px" in part and "area_um2" in part:
        with np.errstate(invalid="ignore", divide="ignore"):
            pixel_um = np.sqrt(
                part["area_um2"].to_numpy(dtype=float) / part["area_px"].to_numpy(dtype=float)
            )
        pixel_um = np.where(np.isfinite(pixel_um) & (pixel_um > 0), pixel_um, np.nan)
        fallback = np.nanmedian(pixel_um) if np.isfinite(pixel_um).any() else 1.0
        return diameter_um / np.where(np.isfinite(pixel_um), pixel_um, fallback)
    return np.full(len(part), diameter_um)
