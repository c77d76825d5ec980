"""Read the vendors' plate-level side-car files: ImageXpress ``.HTD``, Harmony
``Index.idx.xml`` / ``Index.xml``, CellVoyager ``MeasurementDetail.mrf``, and MetaSeries
TIFF tags. Each reader returns a :class:`VendorMetadata` with what it found (None = unknown).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tifffile

from screenlib.errors import InputError
from screenlib.platemap import PlateGeometry

log = logging.getLogger(__name__)

MAX_RAW_FILE_BYTES = 4_000_000  # larger side-car files are referenced, not copied


@dataclass
class VendorMetadata:
    """Plate facts a vendor's side-car files state (None where they say nothing)."""

    plate: str | None = None
    channel_names: list[str] | None = None
    pixel_size_um: float | None = None
    n_fields: int | None = None
    n_timepoints: int | None = None
    n_z: int | None = None
    wells: list[str] | None = None
    acquisition_times: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    with open(path, "rb") as handle:  # read-only
        data = handle.read()
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1", errors="replace")


def _keep_raw(meta: VendorMetadata, source: Path, path: Path, text: str) -> None:
    name = str(path.relative_to(source))
    if len(text.encode("utf-8")) <= MAX_RAW_FILE_BYTES:
        meta.files[name] = text
    else:
        meta.extra.setdefault("files_not_copied", []).append(name)


def read_htd(path: Path) -> VendorMetadata:
    """Parse an ImageXpress ``.HTD`` plate descriptor."""
    text = _read_text(path)
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = [p.strip().strip('"') for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            values[parts[0]] = parts[1:]
    if "HTSInfoFile" not in values:
        raise InputError(f"{path}: not an ImageXpress .HTD file (no HTSInfoFile line)")

    def number(key: str) -> int | None:
        try:
            return int(values[key][0])
        except (KeyError, ValueError, IndexError):
            return None

    meta = VendorMetadata()
    meta.plate = (values.get("Description") or [None])[0] or None
    n_waves = number("NWavelengths")
    if n_waves:
        meta.channel_names = [
            (values.get(f"WaveName{i}") or [f"w{i}"])[0] or f"w{i}" for i in range(1, n_waves + 1)
        ]
    x_sites, y_sites = number("XSites") or 1, number("YSites") or 1
    if values.get("Sites", ["FALSE"])[0].upper() == "TRUE":
        selections = [values.get(f"SiteSelection{i}") for i in range(1, y_sites + 1)]
        flags = [f for row in selections if row for f in row[:x_sites]]
        meta.n_fields = sum(f.upper() == "TRUE" for f in flags) or x_sites * y_sites
    else:
        meta.n_fields = 1
    meta.n_timepoints = number("TimePoints")
    meta.n_z = number("ZSteps") if values.get("ZSeries", ["FALSE"])[0].upper() == "TRUE" else 1
    n_rows, n_columns = number("YWells"), number("XWells")
    if n_rows and n_columns:
        geometry = PlateGeometry(n_rows, n_columns)
        wells = []
        for r, row in enumerate(geometry.row_names, start=1):
            flags = values.get(f"WellsSelection{r}", [])
            wells += [
                f"{row}{c:02d}" for c, flag in enumerate(flags, start=1) if flag.upper() == "TRUE"
            ]
        meta.wells = wells or None
        meta.extra["plate_size"] = geometry.n_wells
    if "PixelSizeUm" in values:
        meta.pixel_size_um = float(values["PixelSizeUm"][0])
    return meta


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_harmony_index(path: Path) -> VendorMetadata:
    """Parse a Harmony ``Index.idx.xml`` / ``Index.xml`` (Opera Phenix / Operetta)."""
    try:
        root = ElementTree.fromstring(_read_text(path))
    except ElementTree.ParseError as error:
        raise InputError(f"{path}: unreadable Harmony index XML ({error})") from None
    meta = VendorMetadata()
    channels: dict[int, str] = {}
    resolution_m: float | None = None
    times: dict[int, str] = {}
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "PlateID" and element.text and meta.plate is None:
            meta.plate = element.text.strip()
        elif tag in ("Entry", "Image"):
            children = {_local(child.tag): child for child in element}
            channel_id = element.get("ChannelID") or (
                children["ChannelID"].text if "ChannelID" in children else None
            )
            if channel_id is not None and "ChannelName" in children:
                channels.setdefault(int(channel_id), (children["ChannelName"].text or "").strip())
            if "ImageResolutionX" in children and resolution_m is None:
                unit = children["ImageResolutionX"].get("Unit", "m")
                value = float(children["ImageResolutionX"].text)
                resolution_m = value if unit == "m" else value * 1e-6
            if tag == "Image" and "AbsTime" in children and "TimepointID" in children:
                timepoint = int(children["TimepointID"].text)
                stamp = (children["AbsTime"].text or "").strip()
                if stamp and (timepoint not in times or stamp < times[timepoint]):
                    times[timepoint] = stamp
    if channels:
        meta.channel_names = [channels[k] for k in sorted(channels)]
    if resolution_m is not None:
        meta.pixel_size_um = resolution_m * 1e6
    if times:
        meta.acquisition_times = [times[k] for k in sorted(times)]
    return meta


def read_cellvoyager_mrf(path: Path) -> VendorMetadata:
    """Parse a CellVoyager ``MeasurementDetail.mrf`` (channel names, pixel size)."""
    try:
        root = ElementTree.fromstring(_read_text(path))
    except ElementTree.ParseError as error:
        raise InputError(f"{path}: unreadable CellVoyager .mrf XML ({error})") from None
    meta = VendorMetadata()
    channels: dict[int, str] = {}
    for element in root.iter():
        if _local(element.tag) != "MeasurementChannel":
            continue
        attrs = {_local(k): v for k, v in element.attrib.items()}
        channels[int(attrs.get("Ch", len(channels) + 1))] = attrs.get("ChannelName", "")
        if meta.pixel_size_um is None and "HorizontalPixelDimension" in attrs:
            meta.pixel_size_um = float(attrs["HorizontalPixelDimension"])
    attrs = {_local(k): v for k, v in root.attrib.items()}
    meta.plate = attrs.get("PlateName")
    for key, name in (("FieldCount", "n_fields"), ("TimePointCount", "n_timepoints"),
                      ("ZCount", "n_z")):  # fmt: skip
        if key in attrs:
            setattr(meta, name, int(attrs[key]))
    if channels:
        meta.channel_names = [channels[k] or f"C{k:02d}" for k in sorted(channels)]
    return meta


def read_metaseries(path: Path) -> dict[str, Any] | None:
    """MetaSeries tags of an ImageXpress TIFF (``PlaneInfo`` dict), or None."""
    try:
        with open(path, "rb") as handle, tifffile.TiffFile(handle) as tif:
            meta = tif.metaseries_metadata
    except Exception:  # noqa: BLE001 - a bad file is reported by the pixel pass
        return None
    return None if not meta else dict(meta.get("PlaneInfo", {}))


def read_side_cars(source: Path, convention: str) -> VendorMetadata:
    """Find and read the side-car file(s) of an export (empty metadata when there are none)."""
    meta = VendorMetadata()
    if convention == "imagexpress":
        candidates = sorted(p for p in source.rglob("*") if p.suffix.lower() == ".htd")
        if candidates:
            found = read_htd(candidates[0])
            _keep_raw(found, source, candidates[0], _read_text(candidates[0]))
            return found
    elif convention == "operetta":
        names = ("index.idx.xml", "index.xml", "index.ref.xml")
        candidates = sorted(
            (p for p in source.rglob("*") if p.name.lower() in names),
            key=lambda p: names.index(p.name.lower()),
        )
        if candidates:
            found = read_harmony_index(candidates[0])
            _keep_raw(found, source, candidates[0], _read_text(candidates[0]))
            return found
    elif convention == "cellvoyager":
        candidates = sorted(p for p in source.rglob("*") if p.suffix.lower() == ".mrf")
        if candidates:
            found = read_cellvoyager_mrf(candidates[0])
            _keep_raw(found, source, candidates[0], _read_text(candidates[0]))
            for mlf in sorted(p for p in source.rglob("*") if p.suffix.lower() == ".mlf"):
                _keep_raw(found, source, mlf, _read_text(mlf))
            return found
    return meta
