"""The scale of the images: pixel size (from settings or metadata)."""

from __future__ import annotations

__all__ = ["resolve_pixel_size"]


def resolve_pixel_size(
    explicit_um: float | None, recorded_um: float | None
) -> tuple[float | None, str]:
    """The pixel size to use and where it came from: settings, else metadata, else unknown.

    Examples
    --------
    >>> resolve_pixel_size(None, 1.3)
    (1.3, 'plate metadata')
    """
    if explicit_um is not None:
        return float(explicit_um), "settings"
    if recorded_um is not None and recorded_um > 0:
        return float(recorded_um), "plate metadata"
    return None, "not recorded"
