"""Vectorised per-object measurements: every statistic for all labels at once.

The foreground pixels of a label image are sorted by label once (:func:`index_labels`); sums,
means, percentiles, moments and convex-hull supports are then segment-wise reductions
(``np.add.reduceat`` and friends) over those pixels only. No per-object Python loop.

All functions accept a label image on a *grid* whose pixels are ``factor`` x ``factor`` blocks
of the full-resolution image (``factor=1``: the image itself); when the labels are unions of
such blocks (as the classical segmenter's are) areas, centroids, moments and means are exact
at full resolution, and percentiles are those of block means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIndex:
    """Foreground pixels of a label image grouped by label 1..n_labels."""

    n_labels: int
    pixels: np.ndarray  # flat indices, sorted by label
    object_ids: np.ndarray  # label of each entry of ``pixels``
    counts: np.ndarray  # (n_labels,) pixels per label
    starts: np.ndarray  # (n_labels,) first entry of each label in ``pixels``
    shape: tuple[int, int]


def index_labels(labels: np.ndarray, n_labels: int | None = None) -> LabelIndex:
    """Group the foreground pixels of ``labels`` by label (one stable sort).

    Examples
    --------
    >>> index_labels(np.array([[0, 2], [1, 2]])).counts.tolist()
    [1, 2]
    """
    flat = labels.ravel()
    pixels = np.flatnonzero(flat != 0)  # on a boolean mask: several times faster than on ints
    object_ids = flat[pixels]
    if n_labels is None:
        n_labels = int(object_ids.max()) if object_ids.size else 0
    # a stable sort of 16-bit keys is a radix sort in NumPy: linear time
    keys = object_ids.astype(np.uint16) if n_labels < 2**16 else object_ids
    order = np.argsort(keys, kind="stable")
    return _grouped(n_labels, pixels[order], object_ids[order].astype(np.int64), labels.shape)


def _grouped(
    n_labels: int, pixels: np.ndarray, object_ids: np.ndarray, shape: tuple[int, int]
) -> LabelIndex:
    """A :class:`LabelIndex` of pixels already grouped by (sorted) ``object_ids``."""
    counts = np.bincount(object_ids, minlength=n_labels + 1)[1 : n_labels + 1]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return LabelIndex(n_labels, pixels, object_ids, counts, starts, shape)


def index_cell_regions(
    nucleus_labels: np.ndarray,
    cell_labels: np.ndarray,
    n_labels: int,
    shared: np.ndarray | Sequence[np.ndarray] | None = None,
    min_ring_pixels: int = 1,
) -> dict[str, LabelIndex]:
    """Indices of the ``nucleus``, ``ring`` and whole ``cell`` regions from one sort.

    ``cell_labels`` are the nuclei grown by their rings (the ring is the cell outside its
    nucleus). Each result equals :func:`index_labels` of that region's label image.

    ``shared`` (boolean, optional) marks pixels within reach of a neighbouring nucleus (see
    :func:`screenlib.analysis.regions.shared_reach`); they are left out of the ring, except
    for a cell with fewer than ``min_ring_pixels`` ring pixels outside them, which keeps its
    whole ring. A sequence of such masks, widest reach first, is tried in turn: each cell
    drops the widest one that leaves it ``min_ring_pixels``.
    """
    index = index_labels(cell_labels, n_labels)
    in_nucleus = nucleus_labels.ravel()[index.pixels] > 0
    in_ring = ~in_nucleus
    if shared is not None:
        masks = [shared] if isinstance(shared, np.ndarray) else list(shared)
        decided = np.zeros(n_labels + 1, dtype=bool)
        kept = np.zeros_like(in_ring)
        for mask in masks:
            own = in_ring & ~mask.ravel()[index.pixels]
            enough = np.bincount(index.object_ids[own], minlength=n_labels + 1) >= min_ring_pixels
            enough &= ~decided
            kept |= own & enough[index.object_ids]
            decided |= enough
        in_ring = kept | (in_ring & ~decided[index.object_ids])
    return {
        "nucleus": subset_index(index, in_nucleus),
        "ring": subset_index(index, in_ring),
        "cell": index,
    }


def _reduce(ufunc: np.ufunc, values: np.ndarray, index: LabelIndex, empty: float) -> np.ndarray:
    """Apply ``ufunc.reduceat`` per label; ``empty`` where a label has no pixels."""
    result = np.full(index.n_labels, empty, dtype=np.float64)
    present = index.counts > 0
    if values.size and present.any():
        result[present] = ufunc.reduceat(values, index.starts[present])
    return result


def labelled_sum(image: np.ndarray, index: LabelIndex) -> np.ndarray:
    """Sum of ``image`` over each label (float64, 0 for empty labels)."""
    values = image.ravel()[index.pixels].astype(np.float64)
    return _reduce(np.add, values, index, 0.0)


def labelled_mean(image: np.ndarray, index: LabelIndex) -> np.ndarray:
    """Mean of ``image`` over each label (NaN for empty labels)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return labelled_sum(image, index) / index.counts


def labelled_percentile(image: np.ndarray, index: LabelIndex, q: float) -> np.ndarray:
    """The ``q``-th percentile of ``image`` in each label (linear interpolation, as NumPy).

    The pixels are already grouped by label; one plain sort of ``label + scaled value`` (the
    value squeezed into [0, 1)) orders them by value within each label, many times faster
    than a lexicographic sort.
    """
    values = image.ravel()[index.pixels].astype(np.float64)
    result = np.full(index.n_labels, np.nan, dtype=np.float64)
    if values.size == 0:
        return result
    low, high = float(values.min()), float(values.max())
    scale = (high - low) * (1 + 1e-6) or 1.0
    keys = np.sort(index.object_ids + (values - low) / scale)
    sorted_values = (keys - index.object_ids) * scale + low
    present = index.counts > 0
    position = index.starts[present] + (q / 100.0) * (index.counts[present] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, index.starts[present] + index.counts[present] - 1)
    weight = position - lower
    result[present] = sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight
    return result


def region_statistics(
    image: np.ndarray, index: LabelIndex, background: np.ndarray | None = None, factor: int = 1
) -> dict[str, np.ndarray]:
    """Background-corrected mean, integrated intensity and 90th percentile per label.

    Parameters
    ----------
    image
        Intensities on the grid of ``index`` (block means when ``factor`` > 1).
    index
        From :func:`index_labels`.
    background
        Per-label background level to subtract (length ``n_labels``); none when None.
    factor
        Block size of the grid; integrated intensity is summed over full-resolution pixels.
    """
    mean = labelled_mean(image, index)
    p90 = labelled_percentile(image, index, 90.0)
    if background is not None:
        mean = mean - background
        p90 = p90 - background
    integrated = mean * index.counts * factor * factor
    return {"mean": mean, "integrated": integrated, "p90": p90}


def _support(projection: np.ndarray, index: LabelIndex) -> tuple[np.ndarray, np.ndarray]:
    return (
        _reduce(np.maximum, projection, index, np.nan),
        _reduce(np.minimum, projection, index, np.nan),
    )


def _row_ends(index: LabelIndex) -> np.ndarray:
    """Which entries of ``index.pixels`` are the first or last pixel of their object's run in
    an image row. Within a label the pixels are in raster order, so runs are consecutive; only
    these pixels can be extreme in any direction, so the convex hull needs no others."""
    rows = index.pixels // index.shape[1]
    new_run = np.ones(rows.size, dtype=bool)
    new_run[1:] = (rows[1:] != rows[:-1]) | (index.object_ids[1:] != index.object_ids[:-1])
    ends = new_run.copy()
    ends[:-1] |= new_run[1:]  # the entry before a new run ends the previous one
    ends[-1:] = True
    return ends


def subset_index(index: LabelIndex, selected: np.ndarray) -> LabelIndex:
    """The index restricted to the entries where ``selected`` is True (still grouped)."""
    return _grouped(index.n_labels, index.pixels[selected], index.object_ids[selected], index.shape)


def shape_features(index: LabelIndex, factor: int = 1, n_directions: int = 16) -> dict:
    """Area, centroid, eccentricity, solidity and border contact of every label.

    Coordinates are full-resolution pixel coordinates. Eccentricity is that of the ellipse
    with the same second moments (as scikit-image's). Solidity is the area over the area of
    the convex hull of the object's pixel squares, the hull approximated by the circumscribed
    polygon with ``2 * n_directions`` edge normals (for 16: solidity within ~0.05 of the
    exact value, 1.5 % low on average); only the pixels ending a row run of an object enter
    it (no other pixel can be extreme).
    """
    grid_y, grid_x = index.shape
    y = (index.pixels // grid_x).astype(np.float64)
    x = (index.pixels % grid_x).astype(np.float64)
    # block centres in full-resolution coordinates
    y = y * factor + (factor - 1) / 2.0
    x = x * factor + (factor - 1) / 2.0
    counts = index.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_y = _reduce(np.add, y, index, 0.0) / counts
        centroid_x = _reduce(np.add, x, index, 0.0) / counts
        per_pixel_y = centroid_y[index.object_ids - 1]
        per_pixel_x = centroid_x[index.object_ids - 1]
        dy = y - per_pixel_y
        dx = x - per_pixel_x
        within_block = (factor * factor - 1) / 12.0
        var_y = _reduce(np.add, dy * dy, index, 0.0) / counts + within_block
        var_x = _reduce(np.add, dx * dx, index, 0.0) / counts + within_block
        cov_xy = _reduce(np.add, dx * dy, index, 0.0) / counts
        half_trace = (var_y + var_x) / 2.0
        spread = np.sqrt(((var_y - var_x) / 2.0) ** 2 + cov_xy**2)
        major, minor = half_trace + spread, half_trace - spread
        eccentricity = np.sqrt(np.clip(1.0 - minor / major, 0.0, 1.0))
        eccentricity[major <= 0] = 0.0  # a single pixel

        # convex hull of the pixel squares via its support function in 2 * n_directions normals
        ends = _row_ends(index)
        hull_index, hull_y, hull_x = subset_index(index, ends), y[ends], x[ends]
        angles = np.arange(2 * n_directions) * (np.pi / n_directions)
        supports = np.empty((index.n_labels, angles.size))
        for k in range(n_directions):
            cos, sin = np.cos(angles[k]), np.sin(angles[k])
            half_block = factor / 2.0 * (abs(cos) + abs(sin))
            highest, lowest = _support(hull_x * cos + hull_y * sin, hull_index)
            supports[:, k] = highest + half_block
            supports[:, k + n_directions] = -lowest + half_block  # opposite normal
        cos_a, sin_a = np.cos(angles), np.sin(angles)
        cos_b, sin_b = np.roll(cos_a, -1), np.roll(sin_a, -1)
        h_a, h_b = supports, np.roll(supports, -1, axis=1)
        determinant = cos_a * sin_b - sin_a * cos_b
        vertex_x = (h_a * sin_b - h_b * sin_a) / determinant
        vertex_y = (cos_a * h_b - cos_b * h_a) / determinant
        hull_area = 0.5 * np.abs(
            np.sum(
                vertex_x * np.roll(vertex_y, -1, axis=1) - np.roll(vertex_x, -1, axis=1) * vertex_y,
                axis=1,
            )
        )
        area_px = counts * factor * factor
        solidity = np.clip(area_px / hull_area, 0.0, 1.0)

    on_border = np.zeros(grid_y * grid_x, dtype=bool)
    on_border.reshape(grid_y, grid_x)[[0, -1], :] = True
    on_border.reshape(grid_y, grid_x)[:, [0, -1]] = True
    touches = np.zeros(index.n_labels + 1, dtype=bool)
    touches[index.object_ids[on_border[index.pixels]]] = True
    return {
        "centroid_y": centroid_y,
        "centroid_x": centroid_x,
        "area_px": index.counts * factor * factor,
        "eccentricity": eccentricity,
        "solidity": solidity,
        "touches_border": touches[1:],
    }
