"""File-naming conventions of screening microscopes' TIFF exports, both ways.

``export_relpath`` builds the relative path of one image in a vendor's naming; the
``parse_*`` functions read such a path back into an :class:`ImageKey`. Our API numbers
fields, channels, timepoints and z-planes from 0; vendors number them from 1.

* ``imagexpress`` (MetaXpress):
  ``[TimePoint_<t>/][ZStep_<z>/]<plate>_<well>[_s<site>][_w<channel>][<GUID>].tif``
  (TimePoint folders only with several timepoints, ZStep folders only with several planes,
  ``_s`` / ``_w`` only with several sites / wavelengths; ``_thumb`` previews skipped).
* ``operetta`` (Opera Phenix / Operetta Harmony export):
  ``Images/r<RR>c<CC>f<FF>p<PP>-ch<C>sk<T>fk1fl1.tiff``.
* ``cellvoyager`` (Yokogawa CV7000/CV8000):
  ``<plate>_<well>_T<tttt>F<fff>L<ll>A<aa>Z<zz>C<cc>.tif``.

``write_vendor_metadata`` writes the side-car files a real export carries (ImageXpress
``.HTD``, Harmony ``Index.idx.xml``, CellVoyager ``MeasurementDetail.mrf``) and
``imagexpress_tiff_description`` the MetaSeries XML of one image, so simulated exports
look like real ones to :func:`screenlib.ingest.ingest_export`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

from screenlib.errors import InputError
from screenlib.platemap import PlateGeometry, normalize_well, split_well

__all__ = [
    "CONVENTIONS",
    "ExportInfo",
    "ImageKey",
    "export_relpath",
    "imagexpress_tiff_description",
    "parse_relpath",
    "write_vendor_metadata",
]

CONVENTIONS = ("imagexpress", "operetta", "cellvoyager")


class ImageKey(NamedTuple):
    """Where one image file belongs: 0-based field, channel, timepoint and z; ``A01`` well."""

    well: str
    field: int
    channel: int
    timepoint: int = 0
    z: int = 0
    plate: str = ""


def _check_convention(convention: str) -> str:
    name = convention.lower()
    if name not in CONVENTIONS:
        raise InputError(
            f"unknown naming convention {convention!r}; use one of {', '.join(CONVENTIONS)}"
        )
    return name


def export_relpath(
    convention: str,
    *,
    plate: str,
    well: str,
    field: int,
    channel: int,
    timepoint: int = 0,
    z: int = 0,
    n_fields: int,
    n_channels: int,
    n_timepoints: int,
    n_z: int,
) -> str:
    """Relative path (with ``/``) of one image in a vendor's export naming.

    Parameters
    ----------
    convention
        ``"imagexpress"``, ``"operetta"`` or ``"cellvoyager"``.
    plate, well
        Plate name (no ``_`` for ImageXpress and CellVoyager, which split on it) and well
        (``A1`` or ``A01``).
    field, channel, timepoint, z
        0-based indices (converted to the vendor's 1-based numbering).
    n_fields, n_channels, n_timepoints, n_z
        Totals; ImageXpress drops the parts that have a single value.

    Examples
    --------
    >>> export_relpath("operetta", plate="P1", well="B3", field=0, channel=1,
    ...                n_fields=4, n_channels=3, n_timepoints=1, n_z=1)
    'Images/r02c03f01p01-ch2sk1fk1fl1.tiff'
    >>> export_relpath("imagexpress", plate="P1", well="B3", field=0, channel=1,
    ...                n_fields=4, n_channels=3, n_timepoints=1, n_z=1)
    'P1_B03_s1_w2.tif'
    """
    name = _check_convention(convention)
    well = normalize_well(well)
    for label, value, total in (
        ("field", field, n_fields),
        ("channel", channel, n_channels),
        ("timepoint", timepoint, n_timepoints),
        ("z", z, n_z),
    ):
        if not 0 <= value < total:
            raise ValueError(f"{label} {value} outside 0..{total - 1}")
    if name == "imagexpress":
        parts = []
        if n_timepoints > 1:
            parts.append(f"TimePoint_{timepoint + 1}")
        if n_z > 1:
            parts.append(f"ZStep_{z + 1}")
        stem = f"{plate}_{well}"
        if n_fields > 1:
            stem += f"_s{field + 1}"
        if n_channels > 1:
            stem += f"_w{channel + 1}"
        return "/".join([*parts, stem + ".tif"])
    if name == "operetta":
        row, column = split_well(well)
        row_number = PlateGeometry.from_size(1536).row_names.index(row) + 1
        return (
            f"Images/r{row_number:02d}c{column:02d}f{field + 1:02d}p{z + 1:02d}"
            f"-ch{channel + 1}sk{timepoint + 1}fk1fl1.tiff"
        )
    return (
        f"{plate}_{well}_T{timepoint + 1:04d}F{field + 1:03d}L01A01"
        f"Z{z + 1:02d}C{channel + 1:02d}.tif"
    )


# --- parsers -------------------------------------------------------------------------------

_GUID = r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?"
IMAGEXPRESS_RE = re.compile(
    r"^(?:(?P<plate>[^/]*?)_)??(?P<well>[A-Za-z]{1,2}\d{1,3})"
    r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?" + _GUID + r"\.tiff?$",
    re.IGNORECASE,
)
OPERETTA_RE = re.compile(
    r"^(?:.*/)?r(?P<row>\d+)c(?P<col>\d+)f(?P<field>\d+)p(?P<z>\d+)-ch(?P<channel>\d+)"
    r"sk(?P<timepoint>\d+)fk\d+fl\d+\.tiff?$",
    re.IGNORECASE,
)
CELLVOYAGER_RE = re.compile(
    r"^(?:.*/)?(?P<plate>[^/]*)_(?P<well>[A-Za-z]{1,2}\d{1,3})_T(?P<timepoint>\d+)F(?P<field>\d+)"
    r"L\d+A\d+Z(?P<z>\d+)C(?P<channel>\d+)\.tiff?$",
    re.IGNORECASE,
)
_IMAGEXPRESS_FOLDER_RE = re.compile(r"^(TimePoint|ZStep)_(\d+)$", re.IGNORECASE)
_PATTERNS = {
    "imagexpress": IMAGEXPRESS_RE,
    "operetta": OPERETTA_RE,
    "cellvoyager": CELLVOYAGER_RE,
}


def is_thumbnail(relpath: str) -> bool:
    """Whether a file is a MetaXpress ``_thumb`` preview (never part of the plate)."""
    return "_thumb" in Path(relpath).name.lower()


def parse_relpath(convention: str, relpath: str) -> ImageKey | None:
    """Read a vendor path back into an :class:`ImageKey` (0-based); None if it does not match.

    Examples
    --------
    >>> parse_relpath("cellvoyager", "P1_C02_T0001F002L01A01Z01C03.tif")
    ImageKey(well='C02', field=1, channel=2, timepoint=0, z=0, plate='P1')
    """
    name = _check_convention(convention)
    relpath = str(relpath).replace("\\", "/")
    if is_thumbnail(relpath):
        return None
    target = relpath.rsplit("/", 1)[-1] if name == "imagexpress" else relpath
    match = _PATTERNS[name].match(target)
    if match is None:
        return None
    groups = match.groupdict()
    if name == "imagexpress":
        # TimePoint_<t> / ZStep_<z> are folders above the file
        for part in relpath.split("/")[:-1]:
            folder = _IMAGEXPRESS_FOLDER_RE.match(part)
            if folder:
                key = "timepoint" if folder.group(1).lower() == "timepoint" else "z"
                groups[key] = folder.group(2)
    if name == "operetta":
        row_names = PlateGeometry.from_size(1536).row_names
        row = int(groups["row"])
        if not 1 <= row <= len(row_names):
            return None
        well = f"{row_names[row - 1]}{int(groups['col']):02d}"
        plate = ""
    else:
        try:
            well = normalize_well(groups["well"])
        except InputError:
            return None
        plate = groups.get("plate") or ""
    return ImageKey(
        well=well,
        field=_one_based(groups.get("field")),
        channel=_one_based(groups.get("channel")),
        timepoint=_one_based(groups.get("timepoint")),
        z=_one_based(groups.get("z")),
        plate=plate,
    )


def _one_based(text: str | None) -> int:
    return 0 if text is None else max(int(text) - 1, 0)


def parse_generic(pattern: str | re.Pattern[str], relpath: str) -> ImageKey | None:
    """Parse a path with a user regex: named groups ``well`` or ``row``+``col`` (or
    ``column``), ``field``, ``channel`` and optional ``timepoint``, ``z``, ``plate``.

    Numbers in the path are taken as 1-based unless they contain a 0 value anywhere in the
    export; the caller re-bases them (see ``screenlib.ingest``). Here they are returned as
    written. Rows may be letters (``B``) or 1-based numbers (``2``).
    """
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    relpath = str(relpath).replace("\\", "/")
    if is_thumbnail(relpath):
        return None
    match = regex.search(relpath)
    if match is None:
        return None
    groups = match.groupdict()
    try:
        if groups.get("well"):
            well = normalize_well(groups["well"])
        else:
            row = groups["row"]
            column = int(groups.get("col") or groups.get("column"))
            if row.isdigit():
                row_names = PlateGeometry.from_size(1536).row_names
                if not 1 <= int(row) <= len(row_names):
                    raise InputError(f"row number {row} outside 1..{len(row_names)}")
                row = row_names[int(row) - 1]
            well = normalize_well(f"{row}{column}")
        return ImageKey(
            well=well,
            field=int(groups.get("field") or 0),
            channel=int(groups.get("channel") or 0),
            timepoint=int(groups.get("timepoint") or 0),
            z=int(groups.get("z") or 0),
            plate=groups.get("plate") or "",
        )
    except (TypeError, ValueError) as error:
        raise InputError(
            f"{relpath}: the pattern's groups must capture numbers for field, channel, "
            f"timepoint, z and col ({error})"
        ) from None


# --- vendor side-car metadata ----------------------------------------------------------------


@dataclass
class ExportInfo:
    """What the vendor side-car files describe about an export.

    ``wells`` in ``A01`` form; ``image_shape`` is ``(Y, X)``; ``acquisition_times`` are ISO
    8601 strings, one per timepoint (optional).
    """

    plate: str
    wells: Sequence[str]
    n_fields: int
    channel_names: Sequence[str]
    image_shape: tuple[int, int]
    pixel_size_um: float | None = None
    n_timepoints: int = 1
    n_z: int = 1
    plate_size: int = 96
    dtype: str = "uint16"
    acquisition_times: Sequence[str] = field(default_factory=tuple)

    @classmethod
    def from_any(cls, info: ExportInfo | Mapping[str, Any] | Any) -> ExportInfo:
        """Accept an ExportInfo, a mapping of its fields, or a ``PlateLayout``."""
        if isinstance(info, ExportInfo):
            return info
        if isinstance(info, Mapping):
            return cls(**info)
        # a screenlib.store.PlateLayout
        t, _c, z, y, x = info.shape
        return cls(
            plate=info.name,
            wells=list(info.wells),
            n_fields=info.n_fields,
            channel_names=list(info.channel_names),
            image_shape=(y, x),
            pixel_size_um=info.pixel_size_um,
            n_timepoints=t,
            n_z=z,
            plate_size=info.geometry.n_wells,
            dtype=str(info.dtype),
            acquisition_times=list(info.acquisition_times or ()),
        )


def write_vendor_metadata(
    convention: str, folder: str | Path, info: ExportInfo | Mapping[str, Any] | Any
) -> list[Path]:
    """Write the vendor's plate-level side-car file(s) into an export folder.

    ImageXpress: ``<plate>.HTD``; Operetta: ``Images/Index.idx.xml`` (channel names, pixel
    size, one ``Image`` entry per file); CellVoyager: ``MeasurementDetail.mrf``.

    Returns
    -------
    list of Path
        The files written.
    """
    name = _check_convention(convention)
    info = ExportInfo.from_any(info)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if name == "imagexpress":
        path = folder / f"{info.plate}.HTD"
        path.write_text(_htd_text(info), encoding="latin-1", newline="\r\n")
        return [path]
    if name == "operetta":
        path = folder / "Images" / "Index.idx.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_harmony_xml(info), encoding="utf-8")
        return [path]
    path = folder / "MeasurementDetail.mrf"
    path.write_text(_mrf_xml(info), encoding="utf-8")
    return [path]


def _bool(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def _htd_text(info: ExportInfo) -> str:
    geometry = PlateGeometry.from_size(info.plate_size)
    wells = {normalize_well(w) for w in info.wells}
    lines = [
        '"HTSInfoFile", Version 1.0',
        f'"Description", "{info.plate}"',
        f'"PlateType", {geometry.n_wells}',
        f'"TimePoints", {info.n_timepoints}',
        f'"ZSeries", {_bool(info.n_z > 1)}',
        f'"ZSteps", {info.n_z}',
        f'"XWells", {geometry.n_columns}',
        f'"YWells", {geometry.n_rows}',
    ]
    for row_index, row in enumerate(geometry.row_names, start=1):
        flags = ", ".join(_bool(f"{row}{c:02d}" in wells) for c in range(1, geometry.n_columns + 1))
        lines.append(f'"WellsSelection{row_index}", {flags}')
    lines += [
        f'"Sites", {_bool(info.n_fields > 1)}',
        f'"XSites", {info.n_fields}',
        '"YSites", 1',
        f'"SiteSelection1", {", ".join(["TRUE"] * info.n_fields)}',
        f'"Waves", {_bool(len(info.channel_names) > 1)}',
        f'"NWavelengths", {len(info.channel_names)}',
    ]
    for index, channel in enumerate(info.channel_names, start=1):
        lines.append(f'"WaveName{index}", "{channel}"')
        lines.append(f'"WaveCollect{index}", 1')
    if info.pixel_size_um is not None:
        # not a MetaXpress key (MetaXpress keeps it in each image's MetaSeries tags);
        # written so an export without per-image tags still carries its calibration
        lines.append(f'"PixelSizeUm", {info.pixel_size_um!r}')
    lines += [f'"UniquePlateIdentifier", "{info.plate}"', '"EndFile"']
    return "\n".join(lines) + "\n"


def imagexpress_tiff_description(
    info: ExportInfo | Mapping[str, Any] | Any, *, channel: int, acquisition_time: str = ""
) -> str:
    """MetaSeries XML for an ImageXpress TIFF's ImageDescription: channel name, pixel size
    and acquisition time of one image.

    Examples
    --------
    >>> info = ExportInfo(plate="P1", wells=["A01"], n_fields=1, channel_names=["DAPI"],
    ...                   image_shape=(64, 64), pixel_size_um=0.65)
    >>> text = imagexpress_tiff_description(info, channel=0)
    >>> # tifffile.imwrite(path, plane, description=text, software="MetaSeries", metadata=None)
    """
    info = ExportInfo.from_any(info)
    pixel = info.pixel_size_um if info.pixel_size_um is not None else 1.0
    props = {
        "spatial-calibration-x": ("float", repr(float(pixel))),
        "spatial-calibration-y": ("float", repr(float(pixel))),
        "spatial-calibration-units": ("string", "um"),
        "image-name": ("string", info.channel_names[channel]),
        "_IllumSetting_": ("string", info.channel_names[channel]),
        "wavelength": ("int", str(channel + 1)),
        "acquisition-time-local": ("string", acquisition_time),
    }
    body = "".join(
        f'<prop id="{key}" type="{kind}" value="{escape(value, {chr(34): "&quot;"})}"/>'
        for key, (kind, value) in props.items()
    )
    return (
        '<MetaData><prop id="Description" type="string" value=""/>'
        f"<PlaneInfo>{body}</PlaneInfo><SetInfo></SetInfo></MetaData>"
    )


_HARMONY_NS = "http://www.perkinelmer.com/PEHH/HarmonyV5"


def _harmony_xml(info: ExportInfo) -> str:
    pixel_m = (info.pixel_size_um or 1.0) * 1e-6
    row_names = PlateGeometry.from_size(1536).row_names
    geometry = PlateGeometry.from_size(info.plate_size)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<EvaluationInputData xmlns="{_HARMONY_NS}" Version="1">',
        "  <User>screenlib</User>",
        "  <Plates><Plate>",
        f"    <PlateID>{escape(info.plate)}</PlateID>",
        f"    <Name>{escape(info.plate)}</Name>",
        f"    <PlateTypeName>{geometry.n_wells}well</PlateTypeName>",
        f"    <PlateRows>{geometry.n_rows}</PlateRows>",
        f"    <PlateColumns>{geometry.n_columns}</PlateColumns>",
    ]
    wells = [normalize_well(w) for w in info.wells]
    for well in wells:
        row, column = split_well(well)
        out.append(f'    <Well id="{row_names.index(row) + 1:02d}{column:02d}"/>')
    out.append("  </Plate></Plates>")
    out.append("  <Maps><Map>")
    for index, channel in enumerate(info.channel_names, start=1):
        out += [
            f'    <Entry ChannelID="{index}">',
            f"      <ChannelName>{escape(channel)}</ChannelName>",
            f'      <ImageResolutionX Unit="m">{pixel_m!r}</ImageResolutionX>',
            f'      <ImageResolutionY Unit="m">{pixel_m!r}</ImageResolutionY>',
            f"      <ImageSizeX>{info.image_shape[1]}</ImageSizeX>",
            f"      <ImageSizeY>{info.image_shape[0]}</ImageSizeY>",
            "    </Entry>",
        ]
    out.append("  </Map></Maps>")
    out.append("  <Images>")
    n_channels = len(info.channel_names)
    for well in wells:
        row, column = split_well(well)
        for t in range(info.n_timepoints):
            for f in range(info.n_fields):
                for z in range(info.n_z):
                    for c in range(n_channels):
                        url = export_relpath(
                            "operetta", plate=info.plate, well=well, field=f, channel=c,
                            timepoint=t, z=z, n_fields=info.n_fields, n_channels=n_channels,
                            n_timepoints=info.n_timepoints, n_z=info.n_z,
                        ).split("/")[-1]  # fmt: skip
                        time = info.acquisition_times[t] if info.acquisition_times else ""
                        out += [
                            '    <Image Version="1">',
                            f"      <URL>{url}</URL>",
                            f"      <Row>{row_names.index(row) + 1}</Row>",
                            f"      <Col>{column}</Col>",
                            f"      <FieldID>{f + 1}</FieldID>",
                            f"      <PlaneID>{z + 1}</PlaneID>",
                            f"      <TimepointID>{t}</TimepointID>",
                            f"      <ChannelID>{c + 1}</ChannelID>",
                            f"      <ChannelName>{escape(info.channel_names[c])}</ChannelName>",
                            f'      <ImageResolutionX Unit="m">{pixel_m!r}</ImageResolutionX>',
                            f'      <ImageResolutionY Unit="m">{pixel_m!r}</ImageResolutionY>',
                            f"      <AbsTime>{time}</AbsTime>",
                            "    </Image>",
                        ]
    out.append("  </Images>")
    out.append("</EvaluationInputData>")
    return "\n".join(out) + "\n"


def _mrf_xml(info: ExportInfo) -> str:
    geometry = PlateGeometry.from_size(info.plate_size)
    pixel = info.pixel_size_um or 1.0
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<bts:MeasurementDetail xmlns:bts="http://www.yokogawa.co.jp/BTS/BTSSchema/1.0" '
        f'bts:Version="1.0" bts:TimePointCount="{info.n_timepoints}" '
        f'bts:FieldCount="{info.n_fields}" bts:ZCount="{info.n_z}" '
        f'bts:RowCount="{geometry.n_rows}" bts:ColumnCount="{geometry.n_columns}" '
        f'bts:PlateName="{escape(info.plate)}">',
    ]
    for index, channel in enumerate(info.channel_names, start=1):
        out.append(
            f'  <bts:MeasurementChannel bts:Ch="{index}" bts:ChannelName="{escape(channel)}" '
            f'bts:HorizontalPixelDimension="{pixel!r}" bts:VerticalPixelDimension="{pixel!r}" '
            f'bts:HorizontalPixels="{info.image_shape[1]}" '
            f'bts:VerticalPixels="{info.image_shape[0]}"/>'
        )
    out.append("</bts:MeasurementDetail>")
    return "\n".join(out) + "\n"
