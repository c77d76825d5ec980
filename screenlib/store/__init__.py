"""Plate store: OME-Zarr 0.5 HCS plates on zarr v3 (see ``docs/architecture.md``)."""

from screenlib.store._hcs_plate import (
    ALLOWED_CODECS,
    DEFAULT_COMPRESSION,
    OME_VERSION,
    Plate,
    PlateLayout,
    create_plate,
    open_plate,
)

__all__ = [
    "ALLOWED_CODECS",
    "DEFAULT_COMPRESSION",
    "OME_VERSION",
    "Plate",
    "PlateLayout",
    "create_plate",
    "open_plate",
]
