"""Convert a microscope TIFF export into an OME-Zarr HCS plate (read-only on the export)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from tqdm.auto import tqdm

from screenlib.errors import InputError
from screenlib.ingest._vendor import VendorMetadata, read_metaseries, read_side_cars
from screenlib.ingest.conventions import (
    CONVENTIONS,
    ImageKey,
    export_relpath,
    is_thumbnail,
    parse_generic,
    parse_relpath,
)
from screenlib.platemap import PlateGeometry, geometry_for_wells
from screenlib.store import Plate, PlateLayout, create_plate, open_plate

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
# when names fit several conventions, the stricter pattern wins
_DETECTION_ORDER = ("operetta", "cellvoyager", "imagexpress")
_REEXPORT_HINT = (
    "export this image again from the microscope software, or move it out of the export "
    "folder and ingest with --allow-missing"
)
_SIDE_CAR_HINTS = {".htd": "imagexpress", ".mrf": "cellvoyager", ".mlf": "cellvoyager"}
_DEFAULT_CHANNEL_NAME = {
    "imagexpress": "w{}",
    "operetta": "ch{}",
    "cellvoyager": "C{:02d}",
    "generic": "c{}",
}


@dataclass(frozen=True)
class ExportScan:
    """What was found in an export folder: the images by key and the files left out."""

    convention: str
    images: dict[ImageKey, Path]
    ignored: list[str]
    plate_names: list[str]


def list_tiffs(source: Path) -> list[str]:
    """Relative paths (``/``-separated, sorted) of the TIFF files under ``source``."""
    found = []
    for folder, _dirs, files in os.walk(source):
        for name in files:
            if name.lower().endswith(TIFF_SUFFIXES):
                found.append(Path(folder, name).relative_to(source).as_posix())
    return sorted(found)


def _not_an_image(relpath: str) -> bool:
    """Previews, and macOS AppleDouble files (``._name.tif``: resource forks that copying
    to a non-Mac disk leaves beside every image; not images, and never duplicates)."""
    return is_thumbnail(relpath) or Path(relpath).name.startswith("._")


def detect_convention(source: str | Path) -> str:
    """Guess an export's naming convention from its file names and side-car files.

    Raises
    ------
    InputError
        When no TIFF file fits any convention (the message shows a few names and suggests
        ``--pattern``).
    """
    source = Path(source)
    relpaths = [p for p in list_tiffs(source) if not _not_an_image(p)]
    if not relpaths:
        raise InputError(
            f"{source}: no .tif/.tiff images found; point ingest at the folder that holds "
            "the export's TIFF files"
        )
    counts = {c: sum(parse_relpath(c, p) is not None for p in relpaths) for c in CONVENTIONS}
    hinted = set()
    for path in source.rglob("*"):
        name = path.name.lower()
        if name in ("index.idx.xml", "index.xml", "index.ref.xml"):
            hinted.add("operetta")
        elif path.suffix.lower() in _SIDE_CAR_HINTS:
            hinted.add(_SIDE_CAR_HINTS[path.suffix.lower()])
    # most matching names wins; ties go to a convention whose side-car file is present,
    # then to the stricter pattern (first in the order)
    best = max(
        _DETECTION_ORDER,
        key=lambda c: (counts[c], c in hinted, -_DETECTION_ORDER.index(c)),
    )
    if counts[best] == 0:
        examples = ", ".join(relpaths[:3])
        raise InputError(
            f"{source}: no image name fits the ImageXpress, Operetta or CellVoyager naming "
            f"(e.g. {examples}); give a regex with named groups well (or row+col), field, "
            "channel [, timepoint, z] via --pattern"
        )
    return best


def scan_export(source: Path, convention: str, pattern: str | None = None) -> ExportScan:
    """Map every image file of an export to its key (0-based indices)."""
    relpaths = list_tiffs(source)
    images: dict[ImageKey, Path] = {}
    ignored: list[str] = []
    plates: Counter[str] = Counter()
    raw_keys: list[tuple[ImageKey, str]] = []
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise InputError(f"--pattern {pattern!r} is not a valid regex: {error}") from None
        groups = set(regex.groupindex)
        if not ({"well"} <= groups or {"row", "col"} <= groups or {"row", "column"} <= groups):
            raise InputError(
                f"--pattern {pattern!r} needs a named group 'well' or the groups 'row' and "
                "'col', e.g. (?P<well>[A-P]\\d+)_s(?P<field>\\d)_w(?P<channel>\\d)"
            )
    for relpath in relpaths:
        if _not_an_image(relpath):
            ignored.append(relpath)
            continue
        try:
            key = (
                parse_generic(regex, relpath) if regex is not None
                else parse_relpath(convention, relpath)
            )  # fmt: skip
        except InputError as error:
            raise InputError(f"{source / relpath}: {error}") from None
        if key is None:
            ignored.append(relpath)
            continue
        raw_keys.append((key, relpath))
    if regex is not None and raw_keys:
        # numbering in a user's names may start at 0 or 1: the smallest becomes 0
        lows = {
            name: min(getattr(k, name) for k, _ in raw_keys)
            for name in ("field", "channel", "timepoint", "z")
        }
        raw_keys = [
            (k._replace(**{n: getattr(k, n) - low for n, low in lows.items()}), r)
            for k, r in raw_keys
        ]
    for key, relpath in raw_keys:
        plates[key.plate] += 1
        bare = key._replace(plate="")
        if bare in images:
            raise InputError(
                f"two images for well {key.well} field {key.field} channel {key.channel} "
                f"timepoint {key.timepoint} z {key.z}: {images[bare]} and {source / relpath}; "
                "remove one"
            )
        images[bare] = source / relpath
    if not images:
        raise InputError(f"{source}: no image fits the {'pattern' if regex else convention} naming")
    named = [p for p in plates if p]
    if len(named) > 1:
        raise InputError(
            f"{source} holds images of several plates ({', '.join(sorted(named))}); "
            "ingest one plate per folder"
        )
    return ExportScan(convention, images, ignored, named)


def _expected_name(convention: str, plate: str, key: ImageKey, dims: dict[str, int]) -> str:
    if convention not in CONVENTIONS:
        return "(file matching the pattern)"
    return export_relpath(
        convention, plate=plate or "PLATE", well=key.well, field=key.field,
        channel=key.channel, timepoint=key.timepoint, z=key.z, **dims,
    )  # fmt: skip


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty (zero-byte) TIFF file; re-export it or remove it")
    try:
        with open(path, "rb") as handle, tifffile.TiffFile(handle) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure names the file
        raise InputError(
            f"{path}: unreadable TIFF ({type(error).__name__}: {error}); {_REEXPORT_HINT}"
        ) from None


def _read_pixels(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as handle:  # read-only: raw files are never modified
            data = tifffile.imread(handle)
    except Exception as error:  # noqa: BLE001
        raise InputError(
            f"{path}: truncated or corrupt TIFF ({type(error).__name__}: {error}); {_REEXPORT_HINT}"
        ) from None
    return np.squeeze(data) if data.ndim > 2 else data


def _run_parallel(function, items, *, workers: int, progress: bool, description: str):
    results = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(function, item): item for item in items}
        bar = tqdm(total=len(futures), desc=description, unit="img", disable=not progress)
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
    return results


def ingest_export(
    source: str | Path,
    out_zarr: str | Path,
    *,
    convention: str = "auto",
    pattern: str | None = None,
    allow_missing: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
) -> Plate:
    """Convert a microscope TIFF export into an OME-Zarr 0.5 HCS plate.

    Parameters
    ----------
    source
        Export folder (read only; nothing in it is modified).
    out_zarr
        Path of the new ``.zarr`` plate.
    convention
        ``"auto"`` (detect), ``"imagexpress"``, ``"operetta"`` or ``"cellvoyager"``;
        ignored when ``pattern`` is given.
    pattern
        Regex with named groups ``well`` (or ``row`` + ``col``), ``field``, ``channel`` and
        optionally ``timepoint``, ``z``, ``plate``; searched in each relative path. Numbers
        are re-based so the smallest of each becomes 0.
    allow_missing
        Record missing images (left as zeros) in the plate attributes instead of stopping.
    progress
        Show a progress bar.
    overwrite
        Replace an existing ``out_zarr``.
    workers
        Threads reading TIFFs and writing chunks (default: 2 x CPUs, at most 16).

    Returns
    -------
    Plate
        The new plate, open read-only.

    Raises
    ------
    InputError
        An image that is missing, zero-byte, truncated or corrupt, or whose shape or pixel
        type differs from the others — named by file (and well / field / channel).
    """
    source = Path(source)
    out_zarr = Path(out_zarr)
    if not source.is_dir():
        raise InputError(f"{source}: not a folder; point ingest at the export folder")
    if out_zarr.resolve().is_relative_to(source.resolve()):
        raise InputError(f"{out_zarr} lies inside the export {source}; write the plate elsewhere")
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    if pattern is not None:
        name = "generic"
    elif convention == "auto":
        name = detect_convention(source)
    elif convention.lower() in CONVENTIONS:
        name = convention.lower()
    else:
        raise InputError(
            f"unknown --convention {convention!r}; use auto, {', '.join(CONVENTIONS)} "
            "or give --pattern"
        )
    scan = scan_export(source, name, pattern)
    vendor = read_side_cars(source, name) if name in CONVENTIONS else VendorMetadata()
    if scan.ignored:
        log.warning(
            "%d file(s) in %s skipped (previews or other names), e.g. %s",
            len(scan.ignored), source, scan.ignored[0],
        )  # fmt: skip
    keys = list(scan.images)
    found = _dimensions(keys)
    stated = {
        "n_fields": vendor.n_fields,
        "n_channels": len(vendor.channel_names) if vendor.channel_names else None,
        "n_timepoints": vendor.n_timepoints,
        "n_z": vendor.n_z,
    }
    dims = {k: max(found[k], stated[k] or 0) for k in found}
    wells = sorted({k.well for k in keys} | set(vendor.wells or []))
    plate_name = (scan.plate_names[0] if scan.plate_names else None) or vendor.plate or source.name

    # every (well, field, channel, timepoint, z) must have an image
    missing = []
    for well in wells:
        for t in range(dims["n_timepoints"]):
            for f in range(dims["n_fields"]):
                for z in range(dims["n_z"]):
                    for c in range(dims["n_channels"]):
                        key = ImageKey(well, f, c, t, z)
                        if key not in scan.images:
                            missing.append(key)
    if missing and not allow_missing:
        shown = "; ".join(
            f"well {k.well} field {k.field} channel {k.channel} timepoint {k.timepoint} "
            f"z {k.z} (expected {_expected_name(name, plate_name, k, dims)})"
            for k in missing[:3]
        )
        raise InputError(
            f"{source}: {len(missing)} image(s) missing: {shown}"
            f"{' ...' if len(missing) > 3 else ''}; restore them or pass --allow-missing "
            "to record the gaps"
        )

    # headers first: shapes and pixel types agree before anything is written
    headers = _run_parallel(
        lambda key: _read_header(scan.images[key]), keys, workers=workers, progress=False,
        description="checking",
    )  # fmt: skip
    reference_key = min(keys)
    reference_shape, reference_dtype = headers[reference_key]
    reference_shape = tuple(s for s in reference_shape if s != 1) or reference_shape
    if len(reference_shape) != 2:
        raise InputError(
            f"{scan.images[reference_key]}: image of shape {reference_shape}; ingest expects "
            "one 2-D plane per file"
        )
    for key in sorted(keys):
        shape, dtype = headers[key]
        shape = tuple(s for s in shape if s != 1) or shape
        if shape != reference_shape or dtype != reference_dtype:
            raise InputError(
                f"{scan.images[key]}: well {key.well} field {key.field} channel {key.channel} "
                f"is {shape} {dtype}, but {scan.images[reference_key].name} is "
                f"{reference_shape} {reference_dtype}; every image must have the same shape "
                "and pixel type"
            )

    channel_names = list(vendor.channel_names or [])
    if name == "imagexpress":
        _add_metaseries(vendor, scan, dims)
        channel_names = list(vendor.channel_names or [])
    template = _DEFAULT_CHANNEL_NAME[name]
    channel_names += [template.format(c + 1) for c in range(len(channel_names), 99)]
    plate_size = vendor.extra.get("plate_size")
    geometry = PlateGeometry.from_size(plate_size) if plate_size else geometry_for_wells(wells)
    vendor_json = {
        "convention": name,
        "source": str(source.resolve()),
        "pattern": pattern,
        "n_images": len(keys),
        "pixel_size_um": vendor.pixel_size_um,
        "channel_names": vendor.channel_names,
        "acquisition_times": vendor.acquisition_times,
        "missing_images": [
            {
                "well": k.well,
                "field": k.field,
                "channel": k.channel,
                "timepoint": k.timepoint,
                "z": k.z,
            }
            for k in missing
        ],  # fmt: skip
        "skipped_files": scan.ignored[:1000],
        **vendor.extra,
    }
    layout = PlateLayout(
        name=plate_name,
        wells=wells,
        channel_names=channel_names[: dims["n_channels"]],
        shape=(dims["n_timepoints"], dims["n_channels"], dims["n_z"], *reference_shape),
        dtype=reference_dtype.name,
        n_fields=dims["n_fields"],
        pixel_size_um=vendor.pixel_size_um,
        geometry=geometry,
        acquisition_times=list(vendor.acquisition_times or []),
        vendor_metadata=vendor_json,
        vendor_files=vendor.files,
    )
    existed = out_zarr.exists()
    plate = create_plate(out_zarr, layout, overwrite=overwrite)
    try:
        samples: dict[int, list[np.ndarray]] = {}

        def copy(key: ImageKey) -> int:
            plane = _read_pixels(scan.images[key])
            samples.setdefault(key.channel, []).append(plane[::8, ::8].copy())
            if plane.shape != reference_shape or plane.dtype != reference_dtype:
                raise InputError(
                    f"{scan.images[key]}: decoded as {plane.shape} {plane.dtype}, expected "
                    f"{reference_shape} {reference_dtype}"
                )
            try:
                plate.write_plane(
                    key.well, key.field, plane, channel=key.channel, timepoint=key.timepoint,
                    z=key.z,
                )  # fmt: skip
            except OSError as error:
                raise InputError(
                    f"cannot write plate {out_zarr}: {error.strerror or error}; free disk "
                    "space or choose another output folder"
                ) from None
            return plane.nbytes

        _run_parallel(copy, keys, workers=workers, progress=progress, description="ingest")
        plate.set_display_windows(display_windows(samples, dims["n_channels"]))
    except BaseException:
        if not existed or overwrite:  # leave no half-written plate behind
            shutil.rmtree(out_zarr, ignore_errors=True)
        raise
    return open_plate(out_zarr)


def display_windows(
    samples: dict[int, list[np.ndarray]], n_channels: int
) -> list[tuple[float, float]]:
    """A display window per channel from its pixels: the 0.1th to the 99.9th percentile of a
    subsample (a dim FITC channel is not shown black, a bright DAPI channel not clipped).

    Examples
    --------
    >>> ramp = {0: [np.arange(1000, dtype=np.uint16).reshape(10, 100)]}
    >>> display_windows(ramp, 1)
    [(0.0, 999.0)]
    """
    windows = []
    for channel in range(n_channels):
        planes = samples.get(channel) or [np.zeros(1)]
        values = np.concatenate([p.ravel() for p in planes[:64]]).astype(np.float64)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [0.1, 99.9]) if values.size else (0.0, 1.0)
        windows.append((float(np.floor(low)), float(np.ceil(max(high, low + 1)))))
    return windows


def _dimensions(keys: list[ImageKey]) -> dict[str, int]:
    """Fields, channels, timepoints and z-planes spanned by an export's image keys."""
    return {
        "n_fields": max(k.field for k in keys) + 1,
        "n_channels": max(k.channel for k in keys) + 1,
        "n_timepoints": max(k.timepoint for k in keys) + 1,
        "n_z": max(k.z for k in keys) + 1,
    }


def export_channel_names(source: str | Path, pattern: str | None = None) -> list[str]:
    """Channel names of a microscope export, without ingesting it.

    The names its side-car files state (ImageXpress ``.HTD`` / MetaSeries tags, Operetta
    ``Index.idx.xml``, CellVoyager ``.mrf``), else the vendor's default names (``w1``,
    ``ch1``, ``C01``) for the channels found in the file names.
    """
    source = Path(source)
    convention = "generic" if pattern else detect_convention(source)
    scan = scan_export(source, convention, pattern)
    vendor = read_side_cars(source, convention) if convention != "generic" else VendorMetadata()
    dims = _dimensions(list(scan.images))
    if convention == "imagexpress" and vendor.channel_names is None:
        _add_metaseries(vendor, scan, dims)
    names = list(vendor.channel_names or [])
    n_channels = max(dims["n_channels"], len(names))
    template = _DEFAULT_CHANNEL_NAME[convention]
    names += [template.format(c + 1) for c in range(len(names), n_channels)]
    return names[:n_channels]


def _add_metaseries(vendor: VendorMetadata, scan: ExportScan, dims: dict[str, int]) -> None:
    """Fill channel names, pixel size and acquisition times from MetaSeries TIFF tags."""
    by_channel: dict[int, dict] = {}
    times: dict[int, str] = {}
    first_well = min(k.well for k in scan.images)
    for key in sorted(scan.images):
        if key.field or key.z or key.well != first_well:
            continue
        if key.channel in by_channel and key.timepoint in times:
            continue
        tags = read_metaseries(scan.images[key])
        if tags is None:
            return
        by_channel.setdefault(key.channel, tags)
        stamp = tags.get("acquisition-time-local")
        if stamp and key.timepoint not in times:
            times[key.timepoint] = str(stamp)
        if len(by_channel) == dims["n_channels"] and len(times) == dims["n_timepoints"]:
            break
    if not by_channel:
        return
    if vendor.pixel_size_um is None:
        tags = by_channel[min(by_channel)]
        if "spatial-calibration-x" in tags:
            vendor.pixel_size_um = float(tags["spatial-calibration-x"])
    if vendor.channel_names is None and len(by_channel) == dims["n_channels"]:
        vendor.channel_names = [
            str(by_channel[c].get("_IllumSetting_") or by_channel[c].get("image-name") or "")
            or f"w{c + 1}"
            for c in range(dims["n_channels"])
        ]
    if vendor.acquisition_times is None and times:
        vendor.acquisition_times = [times[t] for t in sorted(times)]
    vendor.extra["metaseries"] = {str(c): _jsonable(t) for c, t in by_channel.items()}


def _jsonable(tags: dict) -> dict:
    out = {}
    for key, value in tags.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out
