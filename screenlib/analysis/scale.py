"""Pixel size and nucleus scale: where the µm size comes from, and how big nuclei are in pixels.

Every size the segmenter uses (area limits, seed spacing, smoothing, background windows, the
grid) follows the *nucleus scale*, the typical nucleus diameter in pixels, measured from the
images: a pixel size that is missing or wrong can no longer put every size off by the same
factor. The pixel size is only needed for µm outputs.

:func:`resolve_pixel_size` is the one order in which the pixel size is chosen (``screenlib run``
and ``screenlib segment`` both use it); :func:`estimate_nucleus_scale` measures the nucleus
scale from a sample of nuclear-channel fields. Planning a run needs only the first, so the
image-processing imports of the second (scipy.ndimage, about 0.2 s) wait until it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from screenlib.analysis.measure import index_labels, labelled_percentile
from screenlib.robust import robust_sd

#: a typical interphase nucleus (µm); converts µm settings (ring width) into nucleus diameters
#: when the pixel size is unknown
TYPICAL_NUCLEUS_DIAMETER_UM = 10.0
#: the estimate works on images of at most about this many pixels along the longer side
_WORK_SIDE_PX = 512
#: ... and re-measures on a finer grid when nuclei span fewer grid pixels than this
_MIN_WORK_DIAMETER_PX = 10.0
#: objects are cut at this fraction of their own bright level (the half-maximum edge)
_EDGE_FRACTION = 0.5
#: objects whose area exceeds this many inscribed discs are clumps (or very elongated)
_MAX_AREA_PER_DISC = 1.6


def resolve_pixel_size(
    explicit_um: float | None, recorded_um: float | None
) -> tuple[float | None, str]:
    """The pixel size (µm) to use and where it came from.

    The one resolution order: an explicit value (settings ``pixel_size_um`` or a command-line
    option) wins, else the value recorded with the image or plate (TIFF tags, MetaSeries, the
    OME-Zarr scale), else None: unknown. With an unknown pixel size every size follows the
    measured nucleus scale and µm outputs are NaN.

    Examples
    --------
    >>> resolve_pixel_size(None, 1.3)
    (1.3, 'recorded with the image')
    >>> resolve_pixel_size(0.65, 1.3)[0], resolve_pixel_size(None, None)[0]
    (0.65, None)
    """
    for value, source in ((explicit_um, "settings"), (recorded_um, "recorded with the image")):
        if value is None:
            continue
        value = float(value)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"pixel size ({source}) must be a positive number of µm, got {value}")
        return value, source
    return None, "unknown (sizes follow the measured nucleus scale; µm outputs are NaN)"


@dataclass(frozen=True)
class NucleusScale:
    """The typical nucleus diameter of a set of fields, in pixels.

    ``diameter_px`` is the median area-equivalent diameter of single, whole nuclei;
    ``n_objects`` how many nuclei it rests on; ``method`` one line on how it was measured.
    """

    diameter_px: float
    n_objects: int
    method: str

    def __str__(self) -> str:
        return f"{self.diameter_px:.1f} px ({self.n_objects} nuclei; {self.method})"


def estimate_nucleus_scale(planes: Iterable[np.ndarray]) -> NucleusScale:
    """Measure the typical nucleus diameter (pixels) from nuclear-channel images.

    Each image is thresholded against its local background and noise, every object is cut at
    half its own bright level (so touching nuclei mostly come apart and blur halos do not
    count), and its inscribed radius (the maximum of its distance transform) and area are
    taken. Single nuclei are the objects no larger than 1.6 discs of their inscribed radius;
    clumps are larger for their width. Debris (inscribed radius under a third of the
    median) does not vote, and intensity plays no part, so a few very bright nuclei weigh
    no more than any other. The result is the median equivalent diameter over all single
    nuclei of all images (the median of twice the inscribed radius, x1.1, when fewer than
    five singles are found).

    Parameters
    ----------
    planes
        2-D images of the nuclear stain (any dtype), e.g. a sample of a plate's fields.

    Returns
    -------
    NucleusScale

    Raises
    ------
    ValueError
        When no nucleus-like object is found in any image.
    """
    singles, widths, n_planes = [], [], 0
    for plane in planes:
        plane = np.asarray(plane)
        if plane.ndim != 2:
            raise ValueError(f"nucleus scale: expected 2-D images, got shape {plane.shape}")
        diameters, inscribed = _plane_objects(plane)
        singles.append(diameters)
        widths.append(inscribed)
        n_planes += 1
    single = np.concatenate(singles) if singles else np.zeros(0)
    width = np.concatenate(widths) if widths else np.zeros(0)
    if single.size >= 5:
        method = f"median equivalent diameter of single nuclei in {n_planes} image(s)"
        return NucleusScale(float(np.median(single)), int(single.size), method)
    if width.size:
        method = f"1.1 x median inscribed diameter ({width.size} objects, {n_planes} image(s))"
        return NucleusScale(float(1.1 * np.median(width)), int(width.size), method)
    raise ValueError(f"nucleus scale: no nucleus-like object found in {n_planes} image(s)")


def _plane_objects(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equivalent diameters of single nuclei and inscribed diameters of all objects (pixels).

    Measured first on a grid at most ``_WORK_SIDE_PX`` wide; when its nuclei are under
    ``_MIN_WORK_DIAMETER_PX`` grid pixels across, again on a finer grid (a central crop).
    """
    from screenlib.analysis.correction import block_mean

    factor = max(1, int(np.ceil(max(plane.shape) / _WORK_SIDE_PX)))
    singles, inscribed = _grid_objects(block_mean(plane, factor))
    pooled = singles if singles.size >= 5 else 1.1 * inscribed
    if factor > 1 and pooled.size and np.median(pooled) < _MIN_WORK_DIAMETER_PX:
        finer = max(1, int(np.median(pooled) * factor // _MIN_WORK_DIAMETER_PX))
        if finer < factor:
            half = _WORK_SIDE_PX * finer // 2
            cy, cx = plane.shape[0] // 2, plane.shape[1] // 2
            crop = plane[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half]
            singles, inscribed = _grid_objects(block_mean(crop, finer))
            factor = finer
    return singles * factor, inscribed * factor


def _level_and_noise_floor(signal: np.ndarray) -> np.ndarray | float:
    """Background level plus five noise SDs of a background-subtracted image.

    The noise is the larger of the robust SD of the background pixels (sigma-clipped from
    above) and that of neighbour differences / sqrt 2 (quantised integer images have a zero
    MAD), and at least 0.1 % of the brightest signal.
    """
    sample = signal[:: max(1, signal.shape[0] // 256), :: max(1, signal.shape[1] // 256)]
    level = float(np.median(sample))
    below = sample[sample < level + 3.0 * max(robust_sd(sample), 1e-6)]
    level = float(np.median(below))
    step = robust_sd((sample[:, 1:] - sample[:, :-1]).ravel()) / np.sqrt(2.0)
    top = float(np.percentile(sample, 99.9)) - level
    noise = max(robust_sd(below), step, 1e-3 * top, 1e-6)
    return level + 5.0 * noise


def _grid_objects(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The measurement behind :func:`_plane_objects` on one (block-averaged) image."""
    from scipy import ndimage as ndi

    from screenlib.analysis.correction import background_blocks, resize_linear

    # a 1-pixel blur: shot noise and speckle, not nuclei, live at that scale
    image = ndi.gaussian_filter(image.astype(np.float32, copy=False), 1.0, mode="nearest")
    block = max(4, min(image.shape) // 16)
    signal = image - resize_linear(background_blocks(image, block, 5), image.shape)
    signal -= _level_and_noise_floor(signal)
    mask = signal > 0
    components, n = ndi.label(mask)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    # each object is cut at half its typical bright level (the 75th percentile of its pixels:
    # bright chromatin spots and a few saturated pixels do not move it)
    index = index_labels(components, n)
    cut = np.zeros(n + 1, np.float32)
    cut[1:] = _EDGE_FRACTION * labelled_percentile(signal, index, 75.0)
    cores = ndi.binary_fill_holes(mask & (signal > cut[components]))
    objects, n_objects = ndi.label(cores)
    if n_objects == 0:
        return np.zeros(0), np.zeros(0)
    # inscribed radius: the octagonal chamfer distance (mean of city-block and chessboard),
    # within a few per cent of the Euclidean one and several times faster
    distance = ndi.distance_transform_cdt(cores, metric="taxicab").astype(np.float32)
    distance += ndi.distance_transform_cdt(cores, metric="chessboard")
    distance *= 0.5
    index = index_labels(objects, n_objects)
    radius = np.zeros(n_objects)
    radius[index.counts > 0] = (
        np.maximum.reduceat(distance.ravel()[index.pixels], index.starts[index.counts > 0]) - 0.5
    )
    area = index.counts.astype(float)
    border = np.zeros(n_objects + 1, bool)
    border[np.concatenate([objects[0], objects[-1], objects[:, 0], objects[:, -1]])] = True
    keep = ~border[1:] & (radius >= 1.5)
    if not keep.any():
        return np.zeros(0), np.zeros(0)
    # debris and fragments: inscribed radius under 0.4 of the area-weighted median one (the
    # object the typical foreground pixel belongs to), so many small specks cannot outvote
    order = np.argsort(radius[keep])
    weights = np.cumsum(area[keep][order])
    typical = radius[keep][order][np.searchsorted(weights, weights[-1] / 2.0)]
    keep &= radius >= 0.4 * typical
    radius, area = radius[keep], area[keep]
    single = area <= _MAX_AREA_PER_DISC * np.pi * (radius + 0.5) ** 2
    return np.sqrt(4.0 / np.pi * area[single]), 2.0 * radius + 1.0
