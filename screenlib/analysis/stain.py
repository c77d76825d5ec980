"""What a stain and a segmenter are: the objects the kernel receives (plugins provide them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from screenlib.settings import SegmentationSettings

ROLES = ("nuclear", "marker")
REGIONS = ("nucleus", "ring", "cell")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Stain:
    """A stain: which role its channel plays, where it is measured, and what calls a cell.

    Parameters
    ----------
    name
        Lower-case identifier used in column names (``annexin_v`` gives ``annexin_v_ring_p90``).
    role
        ``"nuclear"``: the DNA dye whose channel is segmented into nuclei (one per assay);
        ``"marker"``: a stain measured per cell and turned into a positive/negative call.
    region
        Where the stain is measured: ``"nucleus"``, ``"ring"`` (a band outside the nucleus, the
        membrane) or ``"cell"`` (nucleus and ring together).
    feature
        The per-cell column whose value is gated into the positive/negative call, e.g.
        ``"annexin_v_ring_p90"``; it must be one of ``<name>_<region>_{mean,integrated,p90}``.
    description
        One line for ``screenlib plugins`` and the report.
    color
        Display colour as 6 hex digits (OME-Zarr ``omero`` convention, no ``#``).

    Examples
    --------
    >>> Stain("caspase37", "marker", "nucleus", "caspase37_nucleus_mean").region
    'nucleus'
    """

    name: str
    role: str
    region: str
    feature: str
    description: str = ""
    color: str = "FFFFFF"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"stain name {self.name!r} must be lower-case letters, digits and _")
        if self.role not in ROLES:
            raise ValueError(f"stain {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.region not in REGIONS:
            raise ValueError(
                f"stain {self.name!r}: region must be one of {REGIONS}, got {self.region!r}"
            )
        allowed = {f"{self.name}_{self.region}_{stat}" for stat in ("mean", "integrated", "p90")}
        if self.feature not in allowed:
            raise ValueError(
                f"stain {self.name!r}: feature must be one of {sorted(allowed)}, "
                f"got {self.feature!r}"
            )
        if not re.fullmatch(r"[0-9A-Fa-f]{6}", self.color):
            raise ValueError(f"stain {self.name!r}: color must be 6 hex digits, got {self.color!r}")


#: A segmenter: ``(nuclear_image, pixel_size_um, settings) -> labels``.
#:
#: ``nuclear_image`` is a float32 ``(Y, X)`` image of the nuclear stain, camera offset removed and
#: flat-field corrected (background not removed: uneven background is the segmenter's job).
#: ``pixel_size_um`` is the pixel size in micrometres, or None when unknown (use it to turn µm
#: ``settings`` sizes into pixels, or to rescale for a model trained at another pixel size).
#: It returns an int32 ``(Y, X)`` label image: 0 background, 1..N one label per nucleus.
#: A StarDist or Cellpose wrapper is a small function with this signature registered under the
#: entry-point group ``screenlib.segmenters`` (example in ``screenlib.plugins.builtin_segmenters``).
#: The kernel gives it the float32 field; its labels are measured at full resolution.
Segmenter = Callable[[np.ndarray, float, "SegmentationSettings"], np.ndarray]
