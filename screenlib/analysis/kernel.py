"""The per-field kernel: channels in, nucleus labels + per-cell table + QC out.

Pure: numpy arrays, resolved stain objects and a settings object in, arrays and a table out;
no I/O, no Dask, no plate maps, no plugin registry. The work is done on a *grid* of ``f`` x
``f`` pixel blocks chosen from the nucleus scale (a typical nucleus spans 7-14 grid pixels;
``f = 2`` for a 16-pixel nucleus). Nuclei are found on the grid and their outlines redrawn at
full resolution; ``area_px`` is that of the returned labels, while centroids, moments and
intensities are measured over the grid blocks of each nucleus (percentiles are those of block
means). A plugin segmenter's labels are measured at full resolution (``f = 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from screenlib.analysis.correction import (
    background_blocks,
    block_mean,
    check_flatfield,
    estimate_camera_offset,
    remove_hot_pixels,
    sample_blocks,
)
from screenlib.analysis.measure import (
    index_cell_regions,
    index_labels,
    labelled_mean,
    region_statistics,
    shape_features,
)
from screenlib.analysis.qc import focus_score_at, qc_call, saturated_fraction
from screenlib.analysis.regions import background_annulus_labels, cell_labels, shared_reach
from screenlib.analysis.scale import TYPICAL_NUCLEUS_DIAMETER_UM
from screenlib.analysis.segmentation import (
    grid_factor,
    nucleus_diameter,
    refine_outlines,
    segment_nuclei_grid,
)
from screenlib.analysis.stain import Segmenter, Stain
from screenlib.errors import InputError, PluginError
from screenlib.settings import AssaySettings

#: fewer annulus pixels than this: the cell's background comes from the smooth background map
MIN_ANNULUS_PIXELS = 4
#: fewer ring pixels than this out of the neighbours' reach: the cell keeps its whole ring
MIN_RING_PIXELS = 6


@dataclass(frozen=True)
class FieldResult:
    """What the kernel returns for one field."""

    labels: np.ndarray  # int32 (Y, X): 0 background, 1..N nuclei
    cells: pd.DataFrame  # one row per nucleus
    qc: dict  # focus_score, saturated_fraction, background_<stain>, n_cells, qc_pass, qc_reason


def _resolve_stains(stains: Sequence[Stain], n_channels: int) -> list[Stain]:
    if len(stains) != n_channels:
        names = [getattr(stain, "name", stain) for stain in stains]
        raise InputError(
            f"{len(stains)} stains ({', '.join(names)}) for {n_channels} channels; "
            "give one stain per channel (settings [[channels]])"
        )
    names = [stain for stain in stains if not isinstance(stain, Stain)]
    if names:
        raise InputError(
            f"stains {names} are names: give the kernel Stain objects "
            "(screenlib.plugins.get_stains resolves names)"
        )
    resolved = list(stains)
    nuclear = [stain.name for stain in resolved if stain.role == "nuclear"]
    if len(nuclear) != 1:
        raise InputError(
            f"exactly one nuclear stain is needed to segment nuclei, got {nuclear or 'none'} "
            f"among {', '.join(stain.name for stain in resolved)}"
        )
    return resolved


def _grid_channel(
    channel: np.ndarray, factor: int, offset: float, flat: np.ndarray | None, hot_pixels: bool
) -> tuple[np.ndarray, int]:
    """Block means of one channel, hot pixels replaced (when asked), camera offset removed and
    flat-field corrected; and how many hot pixels were replaced."""
    grid = block_mean(channel, factor)
    n_hot = remove_hot_pixels(grid) if hot_pixels else 0
    grid -= offset
    if flat is not None:
        grid /= _flat_on_grid(flat, factor)
    return grid, n_hot


def _grids(
    channels: np.ndarray,
    factor: int,
    offsets: list[float],
    flats: list[np.ndarray | None],
    hot_pixels: bool,
) -> tuple[list[np.ndarray], int]:
    """Every channel on the ``factor`` grid (see :func:`_grid_channel`), and the number of
    hot pixels replaced in all of them."""
    grids, n_hot = [], 0
    for channel, offset, flat in zip(channels, offsets, flats, strict=True):
        grid, found = _grid_channel(channel, factor, offset, flat, hot_pixels)
        grids.append(grid)
        n_hot += found
    return grids, n_hot


def _flat_on_grid(flat: np.ndarray, factor: int) -> np.ndarray:
    """The flat-field profile on the ``factor`` grid: the profile is smooth, so its value at
    each block centre stands for the block."""
    grid_shape = (-(-flat.shape[0] // factor), -(-flat.shape[1] // factor))
    start = (factor - 1) // 2
    sampled = flat[start::factor, start::factor][: grid_shape[0], : grid_shape[1]]
    if sampled.shape != grid_shape:
        sampled = np.pad(
            sampled,
            ((0, grid_shape[0] - sampled.shape[0]), (0, grid_shape[1] - sampled.shape[1])),
            mode="edge",
        )
    return sampled


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber labels 1..N (a plugin may leave gaps); int32."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() <= 0:
        return np.zeros(labels.shape, np.int32), 0
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    new_ids = np.zeros(present.size, dtype=np.int32)
    new_ids[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return new_ids[labels], int(present.sum())


def _noise_scale(flat: np.ndarray | None, factor: int) -> np.ndarray | None:
    """Relative noise of a flat-field-corrected channel on the grid: dividing by the profile
    multiplies the noise by its inverse (median 1)."""
    if flat is None:
        return None
    inverse = 1.0 / np.maximum(_flat_on_grid(flat, factor), np.float32(1e-3))
    # the profile is smooth: a regular subsample gives its median
    inverse /= np.median(inverse[::8, ::8])
    return inverse.astype(np.float32, copy=False)


def _um_to_px(size_um: float, pixel_size_um: float | None, diameter_px: float) -> float:
    """A µm size in full-resolution pixels: by the pixel size when known, else in proportion
    to the nucleus scale (a :data:`TYPICAL_NUCLEUS_DIAMETER_UM` nucleus)."""
    if pixel_size_um:
        return size_um / pixel_size_um
    return size_um / TYPICAL_NUCLEUS_DIAMETER_UM * diameter_px


def _check_channels(channels: np.ndarray) -> np.ndarray:
    channels = np.asarray(channels)
    if channels.ndim != 3:
        raise InputError(f"a field must be a (C, Y, X) array, got shape {channels.shape}")
    if not (
        np.issubdtype(channels.dtype, np.integer) or np.issubdtype(channels.dtype, np.floating)
    ):
        raise InputError(f"field has dtype {channels.dtype}; expected integer or float pixels")
    return channels


def _plugin_labels(
    segmenter: Segmenter,
    nuclear: np.ndarray,
    pixel_size_um: float | None,
    settings: AssaySettings,
) -> tuple[np.ndarray, int]:
    """A plugin segmenter's labels, checked and numbered 1..N."""
    name = settings.segmentation.segmenter
    try:
        raw_labels = segmenter(nuclear, pixel_size_um, settings.segmentation)
    except Exception as error:
        raise PluginError(f"segmenter '{name}' failed: {type(error).__name__}: {error}") from error
    raw_labels = np.asarray(raw_labels)
    if raw_labels.shape != nuclear.shape or not np.issubdtype(raw_labels.dtype, np.integer):
        raise PluginError(
            f"segmenter '{name}' returned {raw_labels.dtype} {raw_labels.shape}; "
            f"expected integer labels of shape {nuclear.shape}"
        )
    return _sequential(raw_labels)


def _median_diameter(labels: np.ndarray, fallback: float | None) -> float:
    """Median equivalent diameter of the objects of ``labels`` (pixels); ``fallback`` when
    there are none."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if areas.size:
        return float(np.sqrt(4.0 / np.pi * np.median(areas)))
    return fallback if fallback is not None else TYPICAL_NUCLEUS_DIAMETER_UM


def analyze_field(
    channels: np.ndarray,
    *,
    stains: Sequence[Stain],
    pixel_size_um: float | None,
    settings: AssaySettings,
    flatfield: np.ndarray | None = None,
    nucleus_diameter_px: float | None = None,
    segmenter: Segmenter | None = None,
) -> FieldResult:
    """Segment the nuclei of one field and measure every cell.

    Parameters
    ----------
    channels
        ``(C, Y, X)`` array of one field (any integer or float dtype).
    stains
        One :class:`~screenlib.analysis.stain.Stain` per channel; the one with role
        ``nuclear`` is segmented (``screenlib.plugins.get_stains`` resolves names).
    pixel_size_um
        Pixel size (see :func:`screenlib.analysis.scale.resolve_pixel_size`), or None when
        unknown: sizes then follow the nucleus scale and µm outputs are NaN.
    settings
        Assay settings (sections ``correction``, ``segmentation``, ``ring``, ``qc`` are used).
    flatfield
        ``(C, Y, X)`` illumination profile (mean 1) from :func:`estimate_flatfield`, or None.
    nucleus_diameter_px
        The plate's measured nucleus scale (``scale.estimate_nucleus_scale``);
        None: measured on this field. A diameter in the settings wins over both.
    segmenter
        A plugin segmenter (its labels are measured at full resolution), resolved by the
        caller (``screenlib.plugins.resolve_segmenter``); None: the built-in classical one,
        on a grid of blocks (an error when the settings name another).

    Returns
    -------
    FieldResult
        ``labels``, ``cells`` (columns in docs/architecture.md) and ``qc`` (with the
        ``nucleus_diameter_px`` used).

    Examples
    --------
    >>> from screenlib.plugins import get_stain
    >>> rng = np.random.default_rng(0)
    >>> field = rng.poisson(100, (3, 128, 128)).astype(np.uint16)
    >>> field[0, 30:45, 30:45] += 800
    >>> stains = [get_stain(name) for name in ("hoechst", "annexin_v", "pi")]
    >>> result = analyze_field(field, stains=stains, pixel_size_um=0.65,
    ...                        settings=AssaySettings(), nucleus_diameter_px=15)
    >>> result.qc["n_cells"], list(result.cells.columns[:3])
    (1, ['label', 'centroid_y', 'centroid_x'])
    """
    channels = _check_channels(channels)
    resolved = _resolve_stains(stains, channels.shape[0])
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise InputError(f"pixel size must be positive, got {pixel_size_um} µm")
    if flatfield is not None:
        flatfield = check_flatfield(flatfield, channels.shape)
    nuclear_index = next(i for i, stain in enumerate(resolved) if stain.role == "nuclear")
    offsets = [
        float(settings.correction.camera_offset)
        if settings.correction.camera_offset is not None
        else estimate_camera_offset(channel)
        for channel in channels
    ]
    flats = [None] * len(resolved) if flatfield is None else list(flatfield)
    if segmenter is None and settings.segmentation.segmenter != "classical":
        raise InputError(
            f"settings name the segmenter {settings.segmentation.segmenter!r}: pass it "
            "resolved (screenlib.plugins.resolve_segmenter)"
        )
    if segmenter is None:
        diameter, _ = nucleus_diameter(
            channels[nuclear_index], pixel_size_um, settings.segmentation, nucleus_diameter_px
        )
        factor = grid_factor(diameter)
        grids, n_hot = _grids(channels, factor, offsets, flats, settings.correction.hot_pixels)
        found = segment_nuclei_grid(
            grids[nuclear_index],
            factor,
            diameter,
            settings.segmentation,
            noise_scale=_noise_scale(flats[nuclear_index], factor),
            pixel_size_um=pixel_size_um,
        )
        labels_grid = found.labels
        n_cells = int(labels_grid.max())
        # outlines redrawn at full resolution; intensities stay measured on the grid blocks
        labels, area_change = refine_outlines(
            found,
            channels[nuclear_index],
            factor,
            flat=flats[nuclear_index],
            offset=offsets[nuclear_index],
        )
    else:
        factor = 1
        grids, n_hot = _grids(channels, 1, offsets, flats, settings.correction.hot_pixels)
        labels_grid, n_cells = _plugin_labels(
            segmenter, grids[nuclear_index], pixel_size_um, settings
        )
        diameter = _median_diameter(labels_grid, nucleus_diameter_px)
        labels, area_change = labels_grid, np.zeros(n_cells + 1, dtype=np.int64)
    cells, qc = _measure(
        grids, labels_grid, n_cells, factor, resolved, pixel_size_um, diameter, settings
    )
    saturated = max(saturated_fraction(channel) for channel in channels)
    passed, reason = qc_call(
        focus=qc["focus_score"], saturated=saturated, n_cells=n_cells, settings=settings.qc
    )
    qc = {
        "focus_score": qc.pop("focus_score"),
        "saturated_fraction": saturated,
        "hot_pixels": n_hot,
        **qc,
        "n_cells": n_cells,
        "qc_pass": passed,
        "qc_reason": reason,
        "nucleus_diameter_px": float(diameter),
    }
    # the outlines were redrawn at full resolution: the area is that of the labels returned
    area_px = cells["area_px"].to_numpy() + area_change[1:]
    cells["area_px"] = area_px.astype(np.int64)
    cells["area_um2"] = area_px * (pixel_size_um or np.nan) ** 2
    return FieldResult(labels=labels, cells=cells, qc=qc)


def _neighbour_reach(labels_grid: np.ndarray, reach: int, margin: float) -> list[np.ndarray]:
    """Ring pixels a neighbour's membrane light may reach, widest first (see
    :func:`~screenlib.analysis.measure.index_cell_regions`).

    A neighbour's ring reaches ``reach`` grid pixels from its nucleus, and its membrane's light
    spreads ``margin`` further by the optics' blur (a bright apoptotic neighbour then lights a
    viable cell's ring past the halfway split). A cell whose ring keeps too few pixels outside
    the wider reach drops only the neighbours' rings themselves.
    """
    wider = int(round(reach + margin))
    masks = [shared_reach(labels_grid, wider)] if wider > reach else []
    return [*masks, shared_reach(labels_grid, reach)]


def _measure(
    grids: list[np.ndarray],
    labels_grid: np.ndarray,
    n_cells: int,
    factor: int,
    stains: list[Stain],
    pixel_size_um: float | None,
    diameter: float,
    settings: AssaySettings,
) -> tuple[pd.DataFrame, dict]:
    """Every cell's shape and per-stain intensities on the ``factor`` grid, and the field's
    background per stain and focus score."""
    grid_px = float(factor)  # full-resolution pixels per grid pixel

    def grid_size(size_um: float) -> float:
        return _um_to_px(size_um, pixel_size_um, diameter) / grid_px

    ring_width = max(1, int(round(grid_size(settings.ring.ring_width_um))))
    ring_gap = int(round(grid_size(settings.ring.ring_gap_um)))
    background_width = max(1, int(round(grid_size(settings.ring.background_width_um))))
    cell = cell_labels(labels_grid, ring_width, ring_gap)  # each nucleus with its ring
    shared = (
        _neighbour_reach(
            labels_grid, ring_gap + ring_width, grid_size(settings.ring.neighbour_margin_um)
        )
        if settings.ring.exclude_neighbours and n_cells > 1
        else None
    )
    indices = index_cell_regions(labels_grid, cell, n_cells, shared, MIN_RING_PIXELS)
    # the local background is a mean over many pixels: every other grid pixel is plenty
    step = 2 if min(cell.shape) >= 128 else 1
    annulus = background_annulus_labels(
        cell[::step, ::step], max(1, int(round(background_width / step)))
    )
    annulus_index = index_labels(annulus, n_cells)

    table: dict[str, np.ndarray] = {"label": np.arange(1, n_cells + 1, dtype=np.int32)}
    shape_columns = shape_features(indices["nucleus"], factor)
    table["centroid_y"] = shape_columns["centroid_y"]
    table["centroid_x"] = shape_columns["centroid_x"]
    table["area_px"] = shape_columns["area_px"].astype(np.int64)
    table["area_um2"] = shape_columns["area_px"] * (pixel_size_um or np.nan) ** 2
    table["eccentricity"] = shape_columns["eccentricity"]
    table["solidity"] = shape_columns["solidity"]
    table["touches_border"] = shape_columns["touches_border"]

    outside_cells = cell[::8, ::8] == 0
    qc: dict[str, object] = {}
    for stain, grid in zip(stains, grids, strict=True):
        background = labelled_mean(grid[::step, ::step], annulus_index)
        sparse = annulus_index.counts < MIN_ANNULUS_PIXELS
        if sparse.any() and n_cells:
            block = max(1, int(round(diameter / grid_px)))
            radius = grid_size(settings.correction.background_radius_um)
            window = max(3, int(round(2 * radius / block)))
            blocks = background_blocks(grid, block_px=block, window_blocks=window)
            # the map is smooth: its value at the nucleus centre stands for the cell
            grid_y = (table["centroid_y"][sparse] - (factor - 1) / 2.0) / factor
            grid_x = (table["centroid_x"][sparse] - (factor - 1) / 2.0) / factor
            background[sparse] = sample_blocks(blocks, grid.shape, grid_y, grid_x)
        regions = ["nucleus"] if stain.role == "nuclear" else []
        if stain.region not in regions:
            regions.append(stain.region)
        for region in regions:
            stats = region_statistics(grid, indices[region], background, factor)
            for statistic, values in stats.items():
                table[f"{stain.name}_{region}_{statistic}"] = values
        table[f"{stain.name}_background"] = background
        outside = grid[::8, ::8][outside_cells]
        qc[f"background_{stain.name}"] = float(np.median(outside)) if outside.size else float("nan")

    nuclear_index = next(i for i, stain in enumerate(stains) if stain.role == "nuclear")
    qc["focus_score"] = focus_score_at(
        grids[nuclear_index],
        indices["nucleus"].pixels,
        # per µm; per (typical nucleus / 10 µm) when the pixel size is unknown
        grid_px / _um_to_px(1.0, pixel_size_um, diameter),
        background=qc[f"background_{stains[nuclear_index].name}"],
    )
    return pd.DataFrame(table), qc
