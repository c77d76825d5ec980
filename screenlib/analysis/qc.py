"""Per-field image QC: focus, saturation, background, cell count, and the pass/fail call."""

from __future__ import annotations

import numpy as np

from screenlib.settings import QCSettings


def focus_score(
    nuclear_image: np.ndarray, nuclei: np.ndarray, pixel_size_um: float, background: float = 0.0
) -> float:
    """Sharpness of the nuclei: RMS Laplacian over RMS intensity inside them, per µm.

    Dimensionless apart from the 1/µm scale, so it does not depend on exposure or stain
    brightness; blur lowers it (a defocused field scores a fraction of an in-focus one).
    Simulated fields at 0.65 µm score about 0.37 in focus and 0.22 / 0.14 / 0.11 with
    1.5 / 3 / 5 pixels of defocus blur; the scale depends on optics and pixel size, so set
    ``qc.min_focus_score`` from a plate's own distribution (e.g. half its median). 0 when
    there are no nuclei.

    Parameters
    ----------
    nuclear_image
        Nuclear image (any grid).
    nuclei
        Label image (or mask) of nuclei on the same grid.
    pixel_size_um
        Size of one pixel of ``nuclear_image``.
    background
        Background level of ``nuclear_image``, subtracted from the intensities (the Laplacian
        does not see a constant).
    """
    return focus_score_at(nuclear_image, np.flatnonzero(nuclei), pixel_size_um, background)


def focus_score_at(
    nuclear_image: np.ndarray, pixels: np.ndarray, pixel_size_um: float, background: float = 0.0
) -> float:
    """:func:`focus_score` over the nucleus pixels given as flat indices into the image."""
    if pixels.size == 0:
        return 0.0
    image = np.asarray(nuclear_image)
    flat = image.ravel()
    values = flat[pixels].astype(np.float64)
    energy = float(np.sqrt(np.mean((values - background) ** 2)))
    if energy <= 0:
        return 0.0
    # the 4-neighbour Laplacian at the nucleus pixels only; a neighbour beyond the image edge
    # is the edge pixel itself (scipy.ndimage.laplace's "reflect" mode)
    height, width = image.shape
    x = pixels % width
    laplacian = -4.0 * values
    for neighbours in (
        np.where(pixels >= width, pixels - width, pixels),
        np.where(pixels < (height - 1) * width, pixels + width, pixels),
        np.where(x > 0, pixels - 1, pixels),
        np.where(x < width - 1, pixels + 1, pixels),
    ):
        laplacian += flat[neighbours]
    sharpness = float(np.sqrt(np.mean(laplacian**2)))
    return sharpness / energy / pixel_size_um


def saturated_fraction(channel: np.ndarray) -> float:
    """Fraction of pixels at the top of an integer type's range (0 for float images)."""
    if not np.issubdtype(channel.dtype, np.integer) or channel.size == 0:
        return 0.0
    top = np.iinfo(channel.dtype).max
    if channel.max() < top:  # the usual case, and a much cheaper pass than counting
        return 0.0
    return float(np.count_nonzero(channel == top)) / channel.size


def qc_call(
    *, focus: float, saturated: float, n_cells: int, settings: QCSettings
) -> tuple[bool, str]:
    """Whether a field passes QC, and why not (reasons joined by ``"; "``, ``""`` when it does)."""
    reasons = []
    if settings.min_focus_score > 0 and focus < settings.min_focus_score:
        reasons.append(f"out of focus (focus_score {focus:.3g} < {settings.min_focus_score:g})")
    if saturated > settings.max_saturated_fraction:
        reasons.append(
            f"saturated ({100 * saturated:.2f} % of pixels > "
            f"{100 * settings.max_saturated_fraction:g} %)"
        )
    if n_cells < settings.min_cells_per_field:
        reasons.append(f"too few cells ({n_cells} < {settings.min_cells_per_field})")
    return (not reasons, "; ".join(reasons))


def channel_problems(channels: np.ndarray, names: list[str] | tuple[str, ...]) -> list[str]:
    """What makes a channel unusable: all NaN or with NaN pixels, or blank (one value
    everywhere, e.g. all zeros). ``[]`` when every channel is usable.

    A regular subsample (1 pixel in 16) is looked at first, so the check costs well under a
    millisecond per channel; the whole channel is read only when the subsample is constant.

    Examples
    --------
    >>> field = np.random.default_rng(0).poisson(100, (2, 64, 64)).astype(np.uint16)
    >>> field[1] = 0
    >>> channel_problems(field, ["hoechst", "annexin_v"])
    ['annexin_v channel is blank (every pixel is 0)']
    """
    problems = []
    for channel, name in zip(channels, names, strict=True):
        sample = channel[::4, ::4]
        if np.issubdtype(channel.dtype, np.floating):
            missing = np.isnan(sample)
            if missing.all():
                problems.append(f"{name} channel is all NaN")
                continue
            if missing.any() or np.isnan(channel).any():
                problems.append(f"{name} channel has NaN pixels")
                continue
        low, high = sample.min(), sample.max()
        if low == high and channel.min() == channel.max():
            problems.append(f"{name} channel is blank (every pixel is {low:g})")
    return problems
