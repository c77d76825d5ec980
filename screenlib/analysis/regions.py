"""Per-cell regions grown from the nuclei: the membrane ring and a local-background annulus."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _grow(labels: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow labels into background one pixel per step; return grown labels and step reached.

    Each step gives an unassigned pixel the label of a 3x3 neighbour, so a pixel goes to the
    nucleus that reaches it first (the nearest in chessboard distance): regions of neighbouring
    cells meet halfway and never overlap (clipped against neighbours).
    """
    grown = labels.copy()
    step_reached = np.zeros(labels.shape, dtype=np.uint8)
    for step in range(1, steps + 1):
        neighbour = ndi.maximum_filter(grown, size=3, mode="constant")
        new = (grown == 0) & (neighbour > 0)
        grown[new] = neighbour[new]
        step_reached[new] = step
    return grown, step_reached


def ring_labels(labels: np.ndarray, width_px: int, gap_px: int = 0) -> np.ndarray:
    """The ring outside each nucleus: pixels ``gap_px < d <= gap_px + width_px`` away.

    Parameters
    ----------
    labels
        Nucleus labels (0 = background).
    width_px, gap_px
        Ring width and gap between nucleus edge and ring, in pixels of ``labels``.

    Returns
    -------
    ndarray
        Same dtype as ``labels``; each ring pixel carries its nucleus' label.

    Examples
    --------
    >>> nuclei = np.zeros((7, 7), np.int32); nuclei[3, 3] = 1
    >>> int((ring_labels(nuclei, 1) == 1).sum())
    8
    """
    width_px = max(1, int(width_px))
    gap_px = max(0, int(gap_px))
    grown, step_reached = _grow(labels, gap_px + width_px)
    ring = np.where(step_reached > gap_px, grown, 0)
    return ring.astype(labels.dtype, copy=False)


def background_annulus_labels(cell_labels: np.ndarray, width_px: int) -> np.ndarray:
    """A local-background annulus around each cell (nucleus plus ring).

    Pixels within ``width_px`` (chessboard distance) of exactly one cell and outside every
    cell; pixels that two cells could claim are left out, so a neighbour's membrane or nucleus
    never counts as background.
    """
    width_px = max(1, int(width_px))
    size = 2 * width_px + 1
    highest = ndi.maximum_filter(cell_labels, size=size, mode="constant")
    empty = np.iinfo(cell_labels.dtype).max
    lowest = ndi.minimum_filter(
        np.where(cell_labels > 0, cell_labels, empty).astype(cell_labels.dtype),
        size=size,
        mode="constant",
        cval=empty,
    )
    annulus = (cell_labels == 0) & (highest > 0) & (highest == lowest)
    return np.where(annulus, highest, 0).astype(cell_labels.dtype, copy=False)
