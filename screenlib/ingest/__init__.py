"""Ingest: microscope TIFF exports (ImageXpress, Operetta/Phenix, CellVoyager, or a regex)
into an OME-Zarr HCS plate. Raw files are opened read-only and never modified."""

from screenlib.ingest._ingest import (
    detect_convention,
    export_channel_names,
    ingest_export,
    list_tiffs,
    scan_export,
)
from screenlib.ingest.conventions import (
    CONVENTIONS,
    ExportInfo,
    ImageKey,
    export_relpath,
    imagexpress_tiff_description,
    parse_generic,
    parse_relpath,
    write_vendor_metadata,
)

__all__ = [
    "CONVENTIONS",
    "ExportInfo",
    "ImageKey",
    "detect_convention",
    "export_channel_names",
    "export_relpath",
    "imagexpress_tiff_description",
    "ingest_export",
    "list_tiffs",
    "parse_generic",
    "parse_relpath",
    "scan_export",
    "write_vendor_metadata",
]
