"""Intensity corrections: camera offset, smooth background and flat-field (illumination).

The flat-field profile is estimated per plate and channel from many fields (block statistics,
median over fields, which removes the cells that sit at different places in every field),
smoothed and scaled to mean 1; dividing a field by it evens out vignetting. Background is
removed per field with a grey opening of block means (objects smaller than the window vanish).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi

from screenlib.errors import InputError


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (edges padded by reflection) as float32.

    Examples
    --------
    >>> block_mean(np.arange(16, dtype=np.float32).reshape(4, 4), 2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    if factor == 1:
        return np.array(image, dtype=np.float32)  # a copy: callers correct it in place
    height, width = image.shape
    pad_y, pad_x = -height % factor, -width % factor
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x)), mode="reflect")
    if image.dtype.kind in "ui" and image.dtype.itemsize <= 2 and factor <= 16:
        # camera pixels: exact integer sums of rows, then of columns (a block sum of 16-bit
        # pixels stays below 2**24, so float32 holds it exactly), ~40 % faster than floats;
        # in 16 bits when no block sum can reach 2**16 (e.g. 12- and 14-bit cameras), twice
        # as fast again
        if image.dtype.kind == "u" and int(image.max()) * factor * factor < 2**16:
            wide = np.uint16
        else:
            wide = np.uint32 if image.dtype.kind == "u" else np.int32
        rows = np.add(image[0::factor], image[1::factor], dtype=wide)
        for dy in range(2, factor):
            rows += image[dy::factor]
        sums = np.add(rows[:, 0::factor], rows[:, 1::factor])
        for dx in range(2, factor):
            sums += rows[:, dx::factor]
        total = sums.astype(np.float32)
    else:
        total = np.zeros((image.shape[0] // factor, image.shape[1] // factor), dtype=np.float32)
        # summing strided views is several times faster than reshape(...).mean(axis=(1, 3))
        for dy in range(factor):
            for dx in range(factor):
                total += image[dy::factor, dx::factor]
    total *= 1.0 / (factor * factor)
    return total


def upsample_nearest(labels: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Repeat each coarse pixel ``factor`` times along both axes and crop to ``shape``."""
    if factor == 1:
        return labels[: shape[0], : shape[1]]
    height, width = labels.shape
    full = np.empty((height * factor, width * factor), dtype=labels.dtype)
    # fill every factor-th row column by column, then copy whole rows: contiguous writes
    first_rows = full[0::factor]
    for dx in range(factor):
        first_rows[:, dx::factor] = labels
    for dy in range(1, factor):
        full[dy::factor] = first_rows
    if full.shape != tuple(shape):
        full = np.ascontiguousarray(full[: shape[0], : shape[1]])
    return full


def smooth_background(image: np.ndarray, block_px: int, window_blocks: int = 5) -> np.ndarray:
    """Smooth background of ``image``: grey opening of block means, interpolated back.

    Objects smaller than ``window_blocks`` blocks are removed by the opening (the minimum over
    the window, then the maximum); the result is smoothed and linearly interpolated back to the
    shape of ``image``.
    """
    return resize_linear(background_blocks(image, block_px, window_blocks), image.shape)


def background_blocks(image: np.ndarray, block_px: int, window_blocks: int = 5) -> np.ndarray:
    """The background of :func:`smooth_background` on its block grid (before interpolation)."""
    block_px = max(1, int(block_px))
    blocks = block_mean(image, block_px)
    window = max(1, min(window_blocks, min(blocks.shape)))
    opened = ndi.grey_opening(blocks, size=(window, window), mode="nearest")
    return ndi.gaussian_filter(opened, sigma=window / 2.0, mode="nearest")


def sample_blocks(
    blocks: np.ndarray, shape: tuple[int, int], y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Values of a block map (see :func:`background_blocks`) of an image of ``shape`` at
    image coordinates ``(y, x)``, bilinearly interpolated as :func:`resize_linear` does."""
    rows = (np.asarray(y, np.float64) + 0.5) * (blocks.shape[0] / shape[0]) - 0.5
    cols = (np.asarray(x, np.float64) + 0.5) * (blocks.shape[1] / shape[1]) - 0.5
    return ndi.map_coordinates(blocks.astype(np.float64), [rows, cols], order=1, mode="nearest")


def resize_linear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a small smooth map to ``shape`` (pixel centres aligned), float32."""

    def axis_weights(small: int, large: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = (np.arange(large, dtype=np.float32) + 0.5) * (small / large) - 0.5
        position = np.clip(position, 0, small - 1)
        lower = np.minimum(position.astype(np.int64), max(small - 2, 0))
        upper = np.minimum(lower + 1, small - 1)
        return lower, upper, (position - lower).astype(np.float32)

    image = image.astype(np.float32, copy=False)
    y0, y1, wy = axis_weights(image.shape[0], shape[0])
    x0, x1, wx = axis_weights(image.shape[1], shape[1])
    rows = image[:, x0] * (1 - wx) + image[:, x1] * wx  # (small_y, X): cheap
    out = rows[y0] * (1 - wy)[:, None]
    out += rows[y1] * wy[:, None]
    return out


#: a pixel is a hot pixel (a sensor defect or a cosmic ray) when its brightest neighbour
#: stands under this fraction of its height above the pixels two steps away: the optics blur
#: every real object over several pixels (a spot's neighbours keep over a tenth of its peak
#: down to a PSF sigma of 0.47 px), while a defect stands alone on its surroundings
HOT_PIXEL_NEIGHBOUR_FRACTION = 0.1
#: ... and stands above its brightest neighbour by more than this many noise SDs and this
#: fraction of the image's contrast (99th percentile over median)
HOT_PIXEL_NOISE_SIGMAS = 6.0
HOT_PIXEL_CONTRAST_FRACTION = 0.05


def remove_hot_pixels(image: np.ndarray) -> int:
    """Replace lone hot pixels of a float image by their brightest neighbour, in place.

    A hot pixel inside a nucleus makes the rest of the nucleus look dim beside it (the nucleus
    is lost or cut down to the spike); in the PI or Annexin V channel it makes a viable cell
    read positive. On block means (a grid) the test finds the pixels hot enough to dominate
    their block; fainter ones are averaged away there. The two outermost rows and columns are
    left as they are.

    Returns
    -------
    int
        How many pixels were replaced.

    Examples
    --------
    >>> image = np.full((5, 5), 100.0, dtype=np.float32); image[2, 2] = 9000.0
    >>> remove_hot_pixels(image), float(image[2, 2])
    (1, 100.0)
    """
    if image.ndim != 2 or min(image.shape) < 5:
        return 0
    if not image.flags.c_contiguous:  # pixels are replaced through a flat view
        work = np.ascontiguousarray(image)
        n_hot = remove_hot_pixels(work)
        image[...] = work
        return n_hot
    height, width = image.shape
    # the height over the pixels above and below first (two passes over the image); the
    # few pixels standing out are then checked against all their neighbours
    spike = np.maximum(image[:-2, 1:-1], image[2:, 1:-1])
    np.subtract(image[1:-1, 1:-1], spike, out=spike)
    # only spikes well above the noise (from neighbouring pixels' steps) and above a small
    # part of the image's contrast can matter: on a flat, quantised background a pixel one
    # grey level up is not a defect
    flat = image.ravel()
    left = np.arange(0, flat.size - 1, max(1, flat.size // 5_000))
    steps = flat[left + 1] - flat[left]  # pixels side by side (a few pairs span a row's end)
    noise = 1.4826 * float(np.median(np.abs(steps))) / np.sqrt(2.0)
    low, high = np.percentile(flat[left], [50.0, 99.0])
    margin = max(HOT_PIXEL_NOISE_SIGMAS * noise, HOT_PIXEL_CONTRAST_FRACTION * float(high - low))
    rows, cols = np.divmod(np.flatnonzero(spike > margin), width - 2)
    rows, cols = rows + 1, cols + 1
    inside = (rows >= 2) & (rows < height - 2) & (cols >= 2) & (cols < width - 2)
    if not inside.any():
        return 0
    centre = rows[inside] * width + cols[inside]

    def ring(step: int) -> np.ndarray:
        offsets = (-step * width, step * width, -step, step)
        return np.stack([flat[centre + offset] for offset in offsets])

    brightest = ring(1).max(axis=0)
    surround = ring(2).min(axis=0)
    value = flat[centre]
    hot = (value - brightest > margin) & (
        (brightest - surround) < HOT_PIXEL_NEIGHBOUR_FRACTION * (value - surround)
    )
    flat[centre[hot]] = brightest[hot]
    return int(hot.sum())


def estimate_camera_offset(image: np.ndarray, percentile: float = 0.1) -> float:
    """Camera offset (dark level) of one channel: a low percentile of its pixels.

    Screening images always contain background, so the darkest pixels sit at the camera's
    offset plus a little noise; a regular subsample keeps this cheap.
    """
    flat = np.asarray(image).ravel()
    step = max(1, flat.size // 50_000)
    return float(np.percentile(flat[::step], percentile))


def _despeckled_samples(channel: np.ndarray, rows: int, cols: int, step: int) -> np.ndarray:
    """``channel[:rows:step, :cols:step]`` as float32, each sample clipped to the brightest of
    its four neighbours: a lone hot pixel drops to its surroundings, while anything the optics
    drew (blurred over several pixels) keeps its value."""
    # padded with the lowest value: a hot pixel on the border is clipped to its real neighbours
    padded = np.pad(channel, 1, mode="constant", constant_values=channel.min())
    centre = padded[1 : rows + 1 : step, 1 : cols + 1 : step]
    neighbours = np.maximum(
        np.maximum(
            padded[0:rows:step, 1 : cols + 1 : step],
            padded[2 : rows + 2 : step, 1 : cols + 1 : step],
        ),
        np.maximum(
            padded[1 : rows + 1 : step, 0:cols:step],
            padded[1 : rows + 1 : step, 2 : cols + 2 : step],
        ),
    )
    return np.minimum(centre, neighbours).astype(np.float32)


def _block_quantiles(channel: np.ndarray, block_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and 99th percentile of each ``block_px`` block (every other pixel sampled).

    Hot pixels sit at the same sensor position in every field, so the median over fields
    keeps them: where one lands on a sampled pixel of a dim channel it sets the block's 99th
    percentile in every field. Each sample is therefore despeckled first
    (:func:`_despeckled_samples`); on a rendered plate with 300 hot pixels per megapixel the
    Annexin V and PI profiles were off the true vignetting by up to 2.6x and 6.6x, after it
    by up to 1.3x and 1.5x (a clean plate's profiles did not move).
    """
    height, width = channel.shape
    by, bx = max(1, height // block_px), max(1, width // block_px)
    step = 2 if block_px >= 8 else 1
    block_px -= block_px % step  # whole sample steps per block, also for odd block sizes
    cropped = _despeckled_samples(channel, by * block_px, bx * block_px, step)
    inner = block_px // step
    blocks = cropped.reshape(by, inner, bx, inner).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    low, high = np.percentile(blocks, [50.0, 99.0], axis=-1)
    return low, high


def estimate_flatfield(
    fields: Iterable[np.ndarray],
    *,
    camera_offset: float | None = None,
    block_px: int | None = None,
) -> np.ndarray:
    """Estimate a per-channel illumination profile (mean 1) from many fields of one plate.

    Every field is cut into blocks; per block the median (background) and the 99th
    percentile (the brightest objects) are taken, and their medians over fields follow
    ``offset + profile * level``. With a known ``camera_offset`` the profile is the
    offset-corrected median (cells removed by the median over fields, as in CellProfiler's
    CorrectIlluminationCalculate). Without it, the offset cancels in the difference of the two
    statistics, ``profile * (bright - background)``, so no dark frame is needed. The profile is
    smoothed, interpolated to full size and scaled to mean 1.

    Parameters
    ----------
    fields
        ``(C, Y, X)`` arrays of one plate, all the same shape (a few dozen are typical).
    camera_offset
        The camera's dark level, when known (settings ``correction.camera_offset``).
    block_px
        Block size; default one eighth of the field's shorter side.

    Returns
    -------
    ndarray of float32, shape (C, Y, X)
        The profile of every channel, mean 1; divide a field by it to correct it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ramp = np.linspace(0.5, 1.5, 64, dtype=np.float32)[None, None, :]
    >>> fields = [100 + 100 * ramp * rng.uniform(0.9, 1.1, (1, 64, 64)) for _ in range(8)]
    >>> profile = estimate_flatfield(fields, camera_offset=100.0)
    >>> bool(profile[0, :, -8:].mean() > 1.3 * profile[0, :, :8].mean())
    True
    """
    lows, highs = [], []
    shape = None
    for number, field in enumerate(fields):
        field = np.asarray(field)
        if field.ndim != 3:
            raise InputError(
                f"flat-field estimation: field {number} has shape {field.shape}, expected (C, Y, X)"
            )
        if shape is None:
            shape = field.shape
            block_px = block_px or max(4, min(shape[1:]) // 8)
        elif field.shape != shape:
            raise InputError(
                f"flat-field estimation: field {number} has shape {field.shape}, the first "
                f"had {shape}; all fields of a plate must have the same shape"
            )
        quantiles = [_block_quantiles(channel, block_px) for channel in field]
        lows.append(np.stack([low for low, _ in quantiles]))
        highs.append(np.stack([high for _, high in quantiles]))
    if shape is None:
        raise InputError("flat-field estimation needs at least one field")
    background = np.median(np.stack(lows), axis=0)
    if camera_offset is not None:
        coarse_profiles = background - camera_offset
    else:
        coarse_profiles = np.median(np.stack(highs), axis=0) - background
    out = np.empty(shape, dtype=np.float32)
    for channel, coarse in enumerate(coarse_profiles):
        coarse = coarse.astype(np.float32)
        positive = coarse[coarse > 0]
        if positive.size == 0:
            out[channel] = 1.0
            continue
        coarse = np.clip(coarse, 0.05 * float(np.median(positive)), None)
        smooth = ndi.gaussian_filter(coarse, 1.0, mode="nearest")
        full = resize_linear(smooth, shape[1:])
        out[channel] = full / full.mean()
    return out


def check_flatfield(flatfield: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a flat-field profile against a field's ``(C, Y, X)`` shape."""
    flatfield = np.asarray(flatfield, dtype=np.float32)
    if flatfield.shape != tuple(shape):
        raise InputError(
            f"flat-field profile has shape {flatfield.shape} but the field is {tuple(shape)}; "
            "estimate it from fields of this plate (estimate_flatfield)"
        )
    if not np.all(np.isfinite(flatfield)) or flatfield.min() <= 0:
        raise InputError("flat-field profile must be finite and positive everywhere")
    return flatfield
