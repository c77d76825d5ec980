"""OME-Zarr 0.5 HCS plates on zarr v3: create, open, read and write fields and labels.

Layout (OME-Zarr 0.5, one ``zarr.json`` per node, OME metadata under ``attributes.ome``)::

    plate.zarr/                 plate group: ome.plate (+ plate.version), screenlib.vendor
      A/                        row group
        1/                      well group: ome.well.images
          0/                    field (image) group: ome.multiscales, ome.omero
            0                   array (t, c, z, y, x), one chunk per (t, c, z) plane
            labels/             ome.labels = ["nuclei"]
              nuclei/           ome.multiscales + ome.image-label
                0               int32 array (t, z, y, x), one chunk per (t, z) plane

Every group and array is created up front by :func:`create_plate` (or
:meth:`Plate.create_labels`), so parallel writers only ever write the chunks of their own
field and never touch metadata — no two writers share a chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np

from screenlib.errors import InputError
from screenlib.platemap import PlateGeometry, geometry_for_wells, normalize_well, split_well

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec

# zarr (about 0.3 s to import) and numcodecs are imported where an array is opened, created
# or decoded: a run whose fields are all finished reads only metadata and chunk checksums

__all__ = [
    "ALLOWED_CODECS",
    "DEFAULT_COMPRESSION",
    "OME_VERSION",
    "Plate",
    "PlateLayout",
    "create_plate",
    "open_plate",
]

OME_VERSION = "0.5"
IMAGE_DIMENSIONS = ("t", "c", "z", "y", "x")
LABEL_DIMENSIONS = ("t", "z", "y", "x")
# Blosc lz4 + bit shuffle: read fastest with near-zstd size on microscope planes
# (benchmarks/bench_ingest.py; figures in the module docstring of that script)
DEFAULT_COMPRESSION = {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"}
# zarr v3 codec names a plate may use; anything else (notably pickle-based numcodecs
# codecs, which can run arbitrary code when decoded) is refused when a plate is opened
ALLOWED_CODECS = frozenset(
    {"bytes", "blosc", "zstd", "gzip", "crc32c", "transpose", "sharding_indexed", "endian"}
)
_ALLOWED_DTYPES = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
     "float32", "float64"}
)  # fmt: skip
# default display colours: blue (nuclear), green, red, then magenta, cyan, yellow, grey
_DEFAULT_COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


@dataclass
class PlateLayout:
    """Everything needed to create an empty plate.

    Parameters
    ----------
    name
        Plate name.
    wells
        Wells holding images (``A1`` / ``A01``; stored as ``A01``).
    channel_names
        One name per channel (vendor names, e.g. ``"DAPI"``).
    shape
        ``(T, C, Z, Y, X)`` of one field.
    dtype
        Pixel type (``"uint16"``...).
    n_fields
        Fields per well.
    pixel_size_um
        Pixel size in micrometres (None when unknown).
    z_step_um
        Distance between z-planes (None: unknown or one plane).
    channel_colors
        6-hex-digit display colours, one per channel (default blue, green, red...).
    geometry
        Plate geometry (default: smallest standard plate holding the wells).
    acquisition_times
        ISO 8601 time of each timepoint (optional).
    vendor_metadata
        JSON-serialisable vendor metadata kept in the plate attributes.
    vendor_files
        Raw vendor side-car files, name -> text (``.HTD``, ``Index.idx.xml``...).
    """

    name: str
    wells: Sequence[str]
    channel_names: Sequence[str]
    shape: tuple[int, int, int, int, int]
    dtype: str = "uint16"
    n_fields: int = 1
    pixel_size_um: float | None = None
    z_step_um: float | None = None
    channel_colors: Sequence[str] | None = None
    geometry: PlateGeometry | None = None
    acquisition_times: Sequence[str] = field(default_factory=tuple)
    vendor_metadata: dict[str, Any] = field(default_factory=dict)
    vendor_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.wells = sorted({normalize_well(w) for w in self.wells}, key=_well_sort_key)
        if not self.wells:
            raise InputError("a plate needs at least one well")
        self.shape = tuple(int(s) for s in self.shape)
        if len(self.shape) != 5 or min(self.shape) < 1:
            raise InputError(f"field shape {self.shape} must be 5 positive sizes (T, C, Z, Y, X)")
        self.channel_names = [str(c) for c in self.channel_names]
        if len(self.channel_names) != self.shape[1]:
            raise InputError(
                f"{len(self.channel_names)} channel names for {self.shape[1]} channels"
            )
        self.dtype = np.dtype(self.dtype).name
        if self.dtype not in _ALLOWED_DTYPES:
            raise InputError(f"pixel type {self.dtype} is not supported; use an integer or float")
        if self.geometry is None:
            self.geometry = geometry_for_wells(list(self.wells))
        for well in self.wells:
            if not self.geometry.contains(well):
                raise InputError(f"well {well} is outside the {self.geometry.n_wells}-well plate")
        colors = list(self.channel_colors or [])
        colors += [_DEFAULT_COLORS[i % len(_DEFAULT_COLORS)] for i in range(len(colors), 99)]
        self.channel_colors = [c.lstrip("#").upper() for c in colors[: self.shape[1]]]
        if self.n_fields < 1:
            raise InputError("a well needs at least one field")

    def to_json(self) -> dict[str, Any]:
        """JSON form (stored in the plate attributes)."""
        data = asdict(self)
        data.pop("vendor_files")
        data.pop("vendor_metadata")  # stored once, under screenlib.vendor
        data["geometry"] = self.geometry.n_wells
        data["shape"] = list(self.shape)
        return data


def _well_sort_key(well: str) -> tuple[int, str, int]:
    row, column = split_well(well)
    return (len(row), row, column)


def _multiscales(name: str, axes_names: Sequence[str], scale: Sequence[float]) -> list[dict]:
    kinds = {"t": ("time", None), "c": ("channel", None), "z": ("space", "micrometer"),
             "y": ("space", "micrometer"), "x": ("space", "micrometer")}  # fmt: skip
    axes = []
    for axis in axes_names:
        kind, unit = kinds[axis]
        entry = {"name": axis, "type": kind}
        if unit:
            entry["unit"] = unit
        axes.append(entry)
    return [
        {
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": list(scale)}],
                }
            ],
        }
    ]


def _window(dtype: np.dtype) -> dict[str, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
        # a useful default contrast for 12/16-bit cameras rather than the full 0..65535
        end = min(high, 4095.0) if dtype.itemsize >= 2 else high
        return {"min": low, "max": high, "start": max(low, 0.0), "end": end}
    return {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}


class Plate:
    """An OME-Zarr HCS plate on disk. Open with :func:`open_plate` or :func:`create_plate`."""

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        self.path = Path(path)
        self.mode = mode
        root_meta = _read_node_json(self.path, "", kind="group")
        attributes = root_meta.get("attributes", {})
        ome = attributes.get("ome", {})
        if "plate" not in ome:
            raise InputError(
                f"{self.path} is a Zarr group but not an OME-Zarr plate (no ome.plate "
                "metadata); create it with `screenlib ingest`"
            )
        if str(ome.get("version")) != OME_VERSION:
            raise InputError(
                f"{self.path} is OME-Zarr {ome.get('version')!r}; screenlib reads version "
                f"{OME_VERSION} (convert with ome2024-ngff-challenge's resave)"
            )
        self._plate_meta = ome["plate"]
        self._attrs = attributes
        self._arrays: dict[str, zarr.Array] = {}
        # array path -> its whole-plane chunk codec (None: another layout, read through zarr)
        self._plane_chunks: dict[str, _PlaneChunks | None] = {}
        self._lock = threading.Lock()
        info = attributes.get("screenlib", {}).get("layout")
        self._wells = [
            normalize_well(w["path"].replace("/", "")) for w in self._plate_meta["wells"]
        ]
        self._well_paths = {
            normalize_well(w["path"].replace("/", "")): w["path"] for w in self._plate_meta["wells"]
        }
        self._fields_cache: dict[str, list[int]] = {}
        first_field = self._field_path(self._wells[0], self.fields(self._wells[0])[0])
        # shape and type from the first image's metadata (checked as opening it would be)
        first = _check_array_codecs(self.path, f"{first_field}/0")
        self._shape = tuple(int(s) for s in first.get("shape", []))
        if len(self._shape) != 5:
            raise InputError(
                f"{self.path}: images must be 5-D (t, c, z, y, x); found shape {self._shape}"
            )
        self._dtype = np.dtype(first["data_type"])  # native byte order, as zarr gives it
        field_meta = _read_node_json(self.path, first_field, "group")
        field_ome = field_meta.get("attributes", {}).get("ome", {})
        omero = field_ome.get("omero", {}).get("channels", [])
        if info is not None:
            self._channel_names = list(info["channel_names"])
            self._pixel_size_um = info.get("pixel_size_um")
        else:  # a plate written by another tool
            self._channel_names = [ch.get("label", f"c{i}") for i, ch in enumerate(omero)] or [
                f"c{i}" for i in range(self._shape[1])
            ]
            scale = field_ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
            self._pixel_size_um = float(scale["scale"][-1])
        self._layout_json = info

    def __reduce__(self) -> tuple[type[Plate], tuple[str, str]]:
        # pickled as its path (for Dask workers in other processes): locks and caches stay
        return (Plate, (str(self.path), self.mode))

    # --- properties -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Plate name."""
        return str(self._plate_meta.get("name", self.path.stem))

    @property
    def wells(self) -> list[str]:
        """Wells with images, ``A01`` form, row-major."""
        return list(self._wells)

    @property
    def channel_names(self) -> list[str]:
        """Channel names (as the microscope named them)."""
        return list(self._channel_names)

    @property
    def pixel_size_um(self) -> float | None:
        """Pixel size in micrometres, or None when unknown."""
        return None if self._pixel_size_um is None else float(self._pixel_size_um)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)`` of one field."""
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """Pixel type."""
        return self._dtype

    @property
    def n_timepoints(self) -> int:
        """Number of timepoints."""
        return self._shape[0]

    @property
    def geometry(self) -> PlateGeometry:
        """Plate geometry from the row and column lists."""
        return PlateGeometry(len(self._plate_meta["rows"]), len(self._plate_meta["columns"]))

    @property
    def attrs(self) -> dict[str, Any]:
        """All plate attributes (``ome`` and ``screenlib`` incl. vendor metadata)."""
        return json.loads(json.dumps(self._attrs))

    @property
    def vendor_metadata(self) -> dict[str, Any]:
        """Vendor metadata copied at ingest (pixel size, channels, times, raw files)."""
        return dict(self._attrs.get("screenlib", {}).get("vendor", {}))

    @property
    def acquisition_times(self) -> list[str]:
        """ISO 8601 time of each timepoint when the export recorded it."""
        info = self._layout_json or {}
        return list(info.get("acquisition_times") or [])

    def __repr__(self) -> str:
        return (
            f"Plate({str(self.path)!r}, wells={len(self._wells)}, shape={self.shape}, "
            f"channels={self.channel_names})"
        )

    # --- navigation -----------------------------------------------------------------------
    def _well_path(self, well: str) -> str:
        key = normalize_well(well)
        if key not in self._well_paths:
            raise InputError(f"well {well} is not in plate {self.path}")
        return self._well_paths[key]

    def _field_path(self, well: str, field: int) -> str:
        if field not in self.fields(well):
            raise InputError(
                f"field {field} of well {well} is not in plate {self.path} "
                f"(fields {self.fields(well)})"
            )
        return f"{self._well_path(well)}/{field}"

    def fields(self, well: str) -> list[int]:
        """0-based field indices of a well."""
        key = normalize_well(well)
        if key not in self._fields_cache:
            meta = _read_node_json(self.path, self._well_path(key), "group")
            images = meta.get("attributes", {}).get("ome", {}).get("well", {}).get("images", [])
            self._fields_cache[key] = sorted(int(image["path"]) for image in images)
        return list(self._fields_cache[key])

    def _open_array(self, array_path: str) -> zarr.Array:
        with self._lock:
            if array_path in self._arrays:
                return self._arrays[array_path]
        _check_array_codecs(self.path, array_path)
        import zarr

        array = zarr.open_array(self.path / array_path, mode="r" if self.mode == "r" else "r+")
        with self._lock:
            self._arrays[array_path] = array
        return array

    def _image_array(self, well: str, field: int) -> zarr.Array:
        return self._open_array(f"{self._field_path(well, field)}/0")

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise InputError(f"plate {self.path} is open read-only; open it with mode='r+'")

    # --- pixels ---------------------------------------------------------------------------
    def read_field(self, well: str, field: int, timepoint: int = 0) -> np.ndarray:
        """One field as ``(C, Y, X)``; with several z-planes, their maximum projection."""
        array_path = f"{self._field_path(well, field)}/0"
        if not 0 <= timepoint < self.n_timepoints:
            raise InputError(f"timepoint {timepoint} outside 0..{self.n_timepoints - 1}")
        # screenlib's own whole-plane layout: decode each chunk file straight into the result
        # (no zarr round trip, no copy); an absent chunk is lost data there, never zeros
        chunks = self._plane_chunks_of(array_path) if self._layout_json is not None else None
        try:
            if chunks is not None:
                return self._read_planes(chunks, well, field, timepoint)
            data = self._open_array(array_path)[timepoint]  # (C, Z, Y, X)
        except (InputError, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - a damaged chunk names its field
            raise InputError(
                f"{self.path}: well {well} field {field} timepoint {timepoint}: unreadable "
                f"image data ({type(error).__name__}: {error}); the store is damaged — "
                "ingest the export again"
            ) from None
        return data.max(axis=1) if data.shape[1] > 1 else data[:, 0]

    def field_fingerprint(self, well: str, field: int, timepoint: int = 0) -> str:
        """A cheap fingerprint of the stored pixels of one field at one time point.

        For screenlib's own layout it reads each plane chunk's size and trailing crc32c
        (4 bytes per file, so a rewritten chunk with the same pixels keeps its fingerprint);
        for chunks without a checksum, and for plates of other tools, it also takes each
        file's modification time, so any rewrite counts as a change.
        """
        array_path = f"{self._field_path(well, field)}/0"
        chunks = self._plane_chunks_of(array_path) if self._layout_json is not None else None
        digest = hashlib.sha256()
        if chunks is not None:
            _t, n_channels, n_z, _y, _x = self.shape
            for c in range(n_channels):
                for z in range(n_z):
                    digest.update(chunks.fingerprint((timepoint, c, z)))
            return digest.hexdigest()[:20]
        return _files_fingerprint(self.path / array_path, digest)

    def labels_fingerprint(
        self, well: str, field: int, timepoint: int = 0, name: str = "nuclei"
    ) -> str:
        """A cheap fingerprint of one field's stored label image (as :meth:`field_fingerprint`)."""
        array_path = self._labels_array_path(well, field, name)
        chunks = self._plane_chunks_of(array_path)
        digest = hashlib.sha256(b"labels")
        if chunks is not None:
            digest.update(chunks.fingerprint((timepoint, 0)))
            return digest.hexdigest()[:20]
        return _files_fingerprint(self.path / array_path, digest)

    def _read_planes(
        self, chunks: _PlaneChunks, well: str, field: int, timepoint: int
    ) -> np.ndarray:
        """``(C, Y, X)`` from whole-plane chunk files, maximum over z planes."""
        _t, n_channels, n_z, y, x = self.shape
        out = np.empty((n_channels, y, x), dtype=chunks.dtype)
        plane = np.empty((y, x), dtype=chunks.dtype) if n_z > 1 else None
        for channel in range(n_channels):
            for z in range(n_z):
                index = (timepoint, channel, z)
                target = out[channel] if z == 0 else plane
                if not chunks.read(index, target):
                    raise self._missing_plane_error(well, field, channel, timepoint, z)
                if z > 0:
                    np.maximum(out[channel], plane, out=out[channel])
        return out.astype(self._dtype, copy=False)

    def _missing_plane_error(
        self, well: str, field: int, channel: int, timepoint: int, z: int
    ) -> InputError:
        """The error for a plane chunk file absent from a screenlib plate.

        screenlib writes every plane's chunk (zeros included), so an absent chunk is lost
        data, not a blank image: zarr would silently read it as zeros and, e.g., a lost PI
        plane would make every cell of the field PI-negative. Plates written by other tools
        (no ``screenlib.layout``) keep zarr's meaning of an absent chunk (the fill value).
        """
        chunk = (self.path / f"{self._field_path(well, field)}/0").joinpath(
            "c", str(timepoint), str(channel), str(z), "0", "0"
        )
        recorded = {
            (g.get("well"), g.get("field"), g.get("channel"), g.get("timepoint"), g.get("z"))
            for g in self.vendor_metadata.get("missing_images") or []
        }
        known = (normalize_well(well), field, channel, timepoint, z) in recorded
        name = self._channel_names[channel] if channel < len(self._channel_names) else ""
        return InputError(
            f"{self.path}: well {well} field {field}: no image data for channel "
            f"{channel} ({name}) timepoint {timepoint} z {z} — chunk file "
            f"{chunk.relative_to(self.path)} is missing"
            + (" (recorded as missing at ingest)" if known else "")
            + "; restore the image and ingest the export again, or leave the field out"
        )

    def read_field_stack(self, well: str, field: int) -> np.ndarray:
        """One field with every timepoint and plane, ``(T, C, Z, Y, X)``."""
        return self._image_array(well, field)[...]

    def write_field(self, well: str, field: int, data: np.ndarray) -> None:
        """Write one whole field, ``(T, C, Z, Y, X)`` (``(C, Y, X)`` accepted when T = Z = 1)."""
        self._check_writable()
        data = np.asarray(data)
        if data.ndim == 3 and self.shape[0] == 1 and self.shape[2] == 1:
            data = data[None, :, None]
        if data.shape != self.shape:
            raise InputError(
                f"field {well}/{field}: data shape {data.shape} does not match the plate's "
                f"{self.shape} (T, C, Z, Y, X)"
            )
        data = data.astype(self.dtype, copy=False)
        array_path = f"{self._field_path(well, field)}/0"
        for t, c, z in np.ndindex(*data.shape[:3]):
            self._write_plane_chunk(array_path, (t, c, z), data[t, c, z])

    def write_plane(
        self, well: str, field: int, plane: np.ndarray, *, channel: int, timepoint: int = 0,
        z: int = 0,
    ) -> None:  # fmt: skip
        """Write one ``(Y, X)`` plane (exactly one chunk) of a field."""
        self._check_writable()
        plane = np.asarray(plane)
        if plane.shape != self.shape[3:]:
            raise InputError(
                f"field {well}/{field} channel {channel}: plane shape {plane.shape} does not "
                f"match the plate's {self.shape[3:]}"
            )
        if not (0 <= timepoint < self.shape[0] and 0 <= channel < self.shape[1]
                and 0 <= z < self.shape[2]):  # fmt: skip
            raise InputError(
                f"field {well}/{field}: plane (t={timepoint}, c={channel}, z={z}) outside "
                f"the plate's {self.shape[:3]} (T, C, Z)"
            )
        self._write_plane_chunk(
            f"{self._field_path(well, field)}/0",
            (timepoint, channel, z),
            plane.astype(self.dtype, copy=False),
        )

    def _plane_chunks_of(self, array_path: str) -> _PlaneChunks | None:
        """The array's whole-plane chunk codec (cached), or None for another layout."""
        with self._lock:
            if array_path in self._plane_chunks:
                return self._plane_chunks[array_path]
        meta = _check_array_codecs(self.path, array_path)
        chunks = _PlaneChunks.for_array(self.path / array_path, meta)
        with self._lock:
            self._plane_chunks[array_path] = chunks
        return chunks

    def _write_plane_chunk(
        self, array_path: str, index: tuple[int, ...], plane: np.ndarray
    ) -> None:
        """Write one whole-plane chunk: encoded here and written with an atomic rename when
        the array is laid out as screenlib creates it (2-3x faster than a round trip through
        zarr's async pipeline); through zarr otherwise."""
        chunks = self._plane_chunks_of(array_path)
        if chunks is None:
            self._open_array(array_path)[index] = plane
        else:
            chunks.write(index, plane)

    # --- labels ---------------------------------------------------------------------------
    def set_display_windows(self, windows: Sequence[tuple[float, float]]) -> None:
        """Set each channel's display window (``omero`` ``start``/``end``) in every field,
        so napari and other viewers open the channels with a useful contrast."""
        self._check_writable()
        for well in self._wells:
            for field_index in self.fields(well):
                path = self.path / self._field_path(well, field_index)
                meta = _read_node_json(self.path, self._field_path(well, field_index), "group")
                attributes = meta.get("attributes", {})
                channels = attributes.get("ome", {}).get("omero", {}).get("channels", [])
                for channel, (start, end) in zip(channels, windows, strict=False):
                    channel["window"] = {**channel.get("window", {}), "start": start, "end": end}
                _write_group(path, attributes)

    def create_labels(self, name: str = "nuclei", *, workers: int = 8) -> None:
        """Create an empty int32 ``(t, z=1, y, x)`` label image under every field's
        ``labels/<name>`` with its ``image-label`` metadata (prepare phase, one process)."""
        self._check_writable()
        t, _c, _z, y, x = self.shape
        scale = self._scale()
        tasks = [(w, f) for w in self._wells for f in self.fields(w)]

        label_attrs = {
            "ome": {
                "version": OME_VERSION,
                "multiscales": _multiscales(
                    name, LABEL_DIMENSIONS, [1.0, scale[2], scale[3], scale[4]]
                ),
                "image-label": {
                    "version": OME_VERSION,
                    "source": {"image": "../../"},
                    "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}],
                },
            }
        }
        array_json = _array_json(
            shape=(t, 1, y, x),
            chunks=(1, 1, y, x),
            dtype=np.dtype("int32"),
            compressor=_blosc(),
            dimension_names=LABEL_DIMENSIONS,
        )

        def create(task: tuple[str, int]) -> None:
            labels_path = self.path / self._field_path(*task) / "labels"
            names = []
            if (labels_path / "zarr.json").exists():
                names = _read_node_json(labels_path, "", "group")["attributes"]["ome"]["labels"]
            if name not in names:
                names = [*names, name]
            _write_group(labels_path, {"ome": {"version": OME_VERSION, "labels": names}})
            label_path = labels_path / name
            if label_path.exists():  # start empty: drop chunks of an earlier run
                shutil.rmtree(label_path)
            _write_group(label_path, label_attrs)
            _write_text(label_path / "0" / "zarr.json", array_json)
            with self._lock:
                key = str((label_path / "0").relative_to(self.path))
                self._arrays.pop(key, None)
                self._plane_chunks.pop(key, None)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(create, tasks))

    def label_names(self, well: str, field: int) -> list[str]:
        """Names of the label images of one field."""
        path = f"{self._field_path(well, field)}/labels"
        try:
            meta = _read_node_json(self.path, path, "group")
        except InputError:
            return []
        return list(meta.get("attributes", {}).get("ome", {}).get("labels", []))

    def _labels_array_path(self, well: str, field: int, name: str) -> str:
        path = f"{self._field_path(well, field)}/labels/{name}/0"
        if not (self.path / path / "zarr.json").exists():
            raise InputError(
                f"plate {self.path} has no label image {name!r} for {well}/{field}; "
                f"call Plate.create_labels({name!r}) first"
            )
        return path

    def _labels_array(self, well: str, field: int, name: str) -> zarr.Array:
        return self._open_array(self._labels_array_path(well, field, name))

    def write_labels(
        self, well: str, field: int, labels: np.ndarray, timepoint: int = 0, name: str = "nuclei"
    ) -> None:
        """Write one field's ``(Y, X)`` label image (only that field's chunk)."""
        self._check_writable()
        labels = np.asarray(labels)
        if labels.shape != self.shape[3:]:
            raise InputError(
                f"labels for {well}/{field}: shape {labels.shape} does not match {self.shape[3:]}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels for {well}/{field} must be integers, got {labels.dtype}")
        array_path = self._labels_array_path(well, field, name)  # checks that it exists
        if not 0 <= timepoint < self.shape[0]:
            raise InputError(f"timepoint {timepoint} outside 0..{self.shape[0] - 1}")
        self._write_plane_chunk(array_path, (timepoint, 0), labels.astype(np.int32, copy=False))

    def read_labels(
        self, well: str, field: int, timepoint: int = 0, name: str = "nuclei"
    ) -> np.ndarray:
        """One field's label image, int32 ``(Y, X)`` (zeros where none was written)."""
        array_path = self._labels_array_path(well, field, name)
        chunks = self._plane_chunks_of(array_path)
        if chunks is None:  # another layout: through zarr
            return self._labels_array(well, field, name)[timepoint, 0]
        if not 0 <= timepoint < self.shape[0]:
            raise InputError(f"timepoint {timepoint} outside 0..{self.shape[0] - 1}")
        labels = np.zeros(self.shape[3:], dtype=chunks.dtype)  # zarr's fill value: 0
        try:
            chunks.read((timepoint, 0), labels)
        except ValueError as error:
            raise InputError(
                f"{self.path}: labels {name!r} of well {well} field {field} timepoint "
                f"{timepoint} are damaged ({error}); run again with --recompute"
            ) from None
        return labels.astype(labels.dtype.newbyteorder("="), copy=False)

    def _scale(self) -> list[float]:
        info = self._layout_json or {}
        pixel = self.pixel_size_um or 1.0
        return [1.0, 1.0, float(info.get("z_step_um") or 1.0), pixel, pixel]


def _files_fingerprint(root: Path, digest) -> str:
    """Fingerprint of every file under ``root``: relative path, size, modification time."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:20]


def _blosc(cname: str | None = None, clevel: int | None = None, shuffle: str | None = None):
    from zarr.codecs import BloscCodec, BloscShuffle

    return BloscCodec(
        cname=cname or DEFAULT_COMPRESSION["cname"],
        clevel=DEFAULT_COMPRESSION["clevel"] if clevel is None else clevel,
        shuffle=BloscShuffle(shuffle or DEFAULT_COMPRESSION["shuffle"]),
    )


_CRC32C_RESIDUE = 0x48674BC7  # crc32c(data + crc32c(data) as 4 little-endian bytes)


class _PlaneChunks:
    """Reads and writes whole-plane chunks of one array without zarr's async pipeline.

    Only for arrays whose chunks are single ``(Y, X)`` planes under the default ``c/``
    key encoding, with codecs ``bytes`` (little endian) then optionally ``blosc`` — the
    layout :func:`create_plate` writes. The bytes are exactly those zarr reads and writes
    (the tests read them back through zarr).
    """

    def __init__(
        self, array_dir: Path, dtype: np.dtype, blosc: dict | None, checksum: bool = False
    ) -> None:
        self.array_dir = array_dir
        self.dtype = dtype.newbyteorder("<")
        self.blosc = blosc  # the Blosc codec's configuration (None: stored uncompressed)
        self.checksum = checksum  # a crc32c of the stored bytes follows them (4 bytes, LE)

    @cached_property
    def codec(self) -> Any | None:
        """The Blosc codec, made on first read or write (fingerprints need none)."""
        if self.blosc is None:
            return None
        import numcodecs

        config = self.blosc
        shuffles = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
        return numcodecs.Blosc(
            cname=config["cname"],
            clevel=config["clevel"],
            shuffle=shuffles[config["shuffle"]],
            blocksize=config.get("blocksize", 0),
            typesize=config.get("typesize"),
        )

    @classmethod
    def for_array(cls, array_dir: Path, meta: dict | None = None) -> _PlaneChunks | None:
        """The reader of the array in ``array_dir`` (``meta``: its ``zarr.json``, when read
        already), or None when its chunks are not whole planes laid out as screenlib writes."""
        if meta is None:
            meta = json.loads((array_dir / "zarr.json").read_text(encoding="utf-8"))
        shape = meta["shape"]
        grid = meta.get("chunk_grid", {})
        keys = meta.get("chunk_key_encoding", {})
        codecs = meta.get("codecs", [])
        if (
            grid.get("name") != "regular"
            or grid["configuration"]["chunk_shape"] != [1] * (len(shape) - 2) + shape[-2:]
            or keys.get("name") != "default"
            or keys.get("configuration", {}).get("separator", "/") != "/"
            or meta.get("storage_transformers")
            or not codecs
            or codecs[0].get("name") != "bytes"
            or codecs[0].get("configuration", {}).get("endian", "little") != "little"
        ):
            return None
        names = [c.get("name") for c in codecs[1:]]
        checksum = names[-1:] == ["crc32c"]
        if checksum:
            names = names[:-1]
        if names not in ([], ["blosc"]):
            return None
        blosc = codecs[1]["configuration"] if names else None
        return cls(array_dir, np.dtype(meta["data_type"]), blosc, checksum)

    def _path(self, index: tuple[int, ...]) -> Path:
        return self.array_dir.joinpath("c", *map(str, index), "0", "0")

    def read(self, index: tuple[int, ...], out: np.ndarray) -> bool:
        """Decode the chunk at ``index`` into ``out`` (a contiguous plane of ``self.dtype``);
        False when its file does not exist. Raises ValueError for a damaged chunk."""
        try:
            payload = self._path(index).read_bytes()
        except FileNotFoundError:
            return False
        if self.checksum:
            # data + its crc32c (little endian) always checksums to the CRC's residue: one
            # pass over the bytes as read, no copy of the data
            if len(payload) < 4 or google_crc32c.value(payload) != _CRC32C_RESIDUE:
                raise ValueError("crc32c checksum mismatch: the chunk's bytes were altered")
            payload = memoryview(payload)[:-4]
        if self.codec is None:
            if len(payload) != out.nbytes:
                raise ValueError(f"chunk holds {len(payload)} bytes, expected {out.nbytes}")
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(payload, dtype=np.uint8)
            return True
        # the Blosc header records the decoded and the stored size: check both, so a
        # truncated or foreign chunk is refused instead of leaving part of ``out`` unset
        decoded = int.from_bytes(payload[4:8], "little") if len(payload) >= 16 else -1
        stored = int.from_bytes(payload[12:16], "little") if len(payload) >= 16 else -1
        if decoded != out.nbytes or stored != len(payload):
            raise ValueError(
                f"not a Blosc chunk of {out.nbytes} bytes ({len(payload)} bytes on disk)"
            )
        self.codec.decode(payload, out=out)
        return True

    def fingerprint(self, index: tuple[int, ...]) -> bytes:
        """Size and stored checksum of one chunk file (modification time without one)."""
        try:
            handle = open(self._path(index), "rb")  # noqa: SIM115 - closed just below
        except FileNotFoundError:
            return b"missing;"
        with handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size >= 8:
                handle.seek(-8, os.SEEK_END)
            tail = handle.read(8)
        changed = b"" if self.checksum else str(stat.st_mtime_ns).encode()
        return b"%d:" % stat.st_size + tail + changed + b";"

    def write(self, index: tuple[int, ...], plane: np.ndarray) -> None:
        data = np.ascontiguousarray(plane, dtype=self.dtype)
        payload = data.tobytes() if self.codec is None else self.codec.encode(data)
        if self.checksum:
            payload = bytes(payload) + google_crc32c.value(payload).to_bytes(4, "little")
        path = self._path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        temporary.write_bytes(payload)
        os.replace(temporary, path)  # readers never see a half-written chunk


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_group(path: Path, attributes: Mapping[str, Any]) -> None:
    """Write a zarr v3 group's ``zarr.json`` (we own the metadata, so no zarr round trip)."""
    meta = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    _write_text(path / "zarr.json", json.dumps(meta, indent=2))


def _array_json(
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    compressor: BloscCodec,
    dimension_names: Sequence[str],
) -> str:
    # crc32c after compression: a chunk whose bytes flip on disk is refused when read,
    # instead of decoding to wrong pixels (checking adds ~4 % to a field's read time,
    # benchmarks/bench_checksum.py)
    """A zarr v3 array's ``zarr.json`` as zarr-python itself writes it (made in memory once,
    then copied to every field: creating hundreds of arrays through zarr takes seconds)."""
    import zarr
    from zarr.codecs import Crc32cCodec

    array = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        compressors=[compressor, Crc32cCodec()],
        dimension_names=list(dimension_names),
    )
    return json.dumps(array.metadata.to_dict(), indent=2)


def _read_node_json(root: Path, node_path: str, kind: str) -> dict[str, Any]:
    path = root / node_path / "zarr.json" if node_path else root / "zarr.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{root}: missing Zarr v3 metadata {path.relative_to(root)} — not a zarr v3 "
            f"{kind} (is this an OME-Zarr 0.5 plate?)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: unreadable Zarr metadata ({error})") from None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != kind:
        raise InputError(f"{path}: expected a zarr v3 {kind}")
    return meta


def _codec_names(codecs: Sequence[Mapping[str, Any]]) -> list[str]:
    names = []
    for codec in codecs:
        names.append(str(codec.get("name")))
        if codec.get("name") == "sharding_indexed":
            config = codec.get("configuration", {})
            names += _codec_names(config.get("codecs", []))
            names += _codec_names(config.get("index_codecs", []))
    return names


def _check_array_codecs(root: Path, array_path: str) -> dict[str, Any]:
    """Refuse arrays whose codecs are not on the allow-list (e.g. pickle-based ones) or whose
    data type is not one screenlib reads; return the array's checked ``zarr.json``."""
    meta = _read_node_json(root, array_path, "array")
    unknown = [n for n in _codec_names(meta.get("codecs", [])) if n not in ALLOWED_CODECS]
    if unknown:
        raise InputError(
            f"{root / array_path}: refusing codec(s) {unknown}; screenlib reads only "
            f"{sorted(ALLOWED_CODECS)} (pickle-like codecs can run code when read)"
        )
    dtype = meta.get("data_type")
    if not isinstance(dtype, str) or dtype not in _ALLOWED_DTYPES:
        raise InputError(f"{root / array_path}: unsupported data type {dtype!r}")
    return meta


def create_plate(
    path: str | Path,
    layout: PlateLayout,
    *,
    overwrite: bool = False,
    compression: Mapping[str, Any] | None = None,
    workers: int = 8,
) -> Plate:
    """Create an empty OME-Zarr 0.5 HCS plate with every group, array and metadata.

    Parameters
    ----------
    path
        Where the ``.zarr`` folder goes.
    layout
        Wells, fields, channels, shape and vendor metadata.
    overwrite
        Replace an existing store at ``path``.
    compression
        Blosc settings (``cname``, ``clevel``, ``shuffle``); default
        :data:`DEFAULT_COMPRESSION`.
    workers
        Threads used to create the field arrays.

    Returns
    -------
    Plate
        The new plate, open for writing.
    """
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir()):
        raise InputError(f"{path} already exists; choose another path or pass --overwrite")
    compression = dict(DEFAULT_COMPRESSION, **(compression or {}))
    geometry = layout.geometry
    assert geometry is not None
    rows_used = sorted({split_well(w)[0] for w in layout.wells}, key=lambda r: (len(r), r))
    wells_meta = []
    for well in layout.wells:
        row, column = split_well(well)
        wells_meta.append(
            {
                "path": f"{row}/{column}",
                "rowIndex": geometry.row_names.index(row),
                "columnIndex": column - 1,
            }
        )
    plate_meta: dict[str, Any] = {
        "version": OME_VERSION,  # 0.5 text says MUST, 0.5 schema omits it: write both
        "name": layout.name,
        "rows": [{"name": r} for r in geometry.row_names],
        "columns": [{"name": c} for c in geometry.column_names],
        "wells": wells_meta,
        "field_count": layout.n_fields,
        "acquisitions": [{"id": 0, "name": layout.name, "maximumfieldcount": layout.n_fields}],
    }
    vendor = dict(layout.vendor_metadata)
    vendor.setdefault("pixel_size_um", layout.pixel_size_um)
    vendor.setdefault("channel_names", list(layout.channel_names))
    vendor.setdefault("acquisition_times", list(layout.acquisition_times))
    vendor["files"] = dict(layout.vendor_files)
    attributes = {
        "ome": {"version": OME_VERSION, "plate": plate_meta},
        "screenlib": {"layout": layout.to_json(), "vendor": vendor},
    }
    if path.exists() and overwrite:
        if any(path.iterdir()) and not (path / "zarr.json").is_file():
            raise InputError(f"{path} exists and is not a Zarr store; refusing to replace it")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_group(path, attributes)
    except OSError as error:
        raise InputError(
            f"cannot create plate {path}: {error.strerror or error}; choose a writable folder"
        ) from None
    for row in rows_used:
        _write_group(path / row, {})
    dtype = np.dtype(layout.dtype)
    t, c, z, y, x = layout.shape
    pixel = layout.pixel_size_um or 1.0
    scale = [1.0, 1.0, float(layout.z_step_um or 1.0), pixel, pixel]
    omero = {
        "channels": [
            {
                "label": name,
                "color": color,
                "window": _window(dtype),
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
            }
            for name, color in zip(layout.channel_names, layout.channel_colors, strict=True)
        ],
        "rdefs": {"defaultT": 0, "defaultZ": z // 2, "model": "color"},
    }
    images_meta = [{"path": str(f), "acquisition": 0} for f in range(layout.n_fields)]
    array_json = _array_json(
        shape=(t, c, z, y, x),
        chunks=(1, 1, 1, y, x),
        dtype=dtype,
        compressor=_blosc(**compression),
        dimension_names=IMAGE_DIMENSIONS,
    )

    def create_well(well: str) -> None:
        row, column = split_well(well)
        well_path = path / row / str(column)
        _write_group(well_path, {"ome": {"version": OME_VERSION, "well": {"images": images_meta}}})
        for field_index in range(layout.n_fields):
            image_attrs = {
                "ome": {
                    "version": OME_VERSION,
                    "multiscales": _multiscales(
                        f"{layout.name}/{well}/{field_index}", IMAGE_DIMENSIONS, scale
                    ),
                    "omero": omero,
                }
            }
            _write_group(well_path / str(field_index), image_attrs)
            _write_text(well_path / str(field_index) / "0" / "zarr.json", array_json)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(create_well, layout.wells))
    return Plate(path, mode="r+")


def open_plate(path: str | Path, mode: str = "r") -> Plate:
    """Open an OME-Zarr 0.5 HCS plate (``mode="r"`` or ``"r+"``).

    Raises
    ------
    InputError
        When the path is not a zarr v3 OME-Zarr plate, or its arrays use a codec outside
        :data:`ALLOWED_CODECS`.
    """
    if mode not in ("r", "r+"):
        raise InputError(f"mode {mode!r}: use 'r' or 'r+'")
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such plate folder")
    plate = Plate(path, mode=mode)
    # check every array's codecs now, before any chunk is decoded
    for well in plate.wells:
        for field_index in plate.fields(well):
            _check_array_codecs(path, f"{plate._field_path(well, field_index)}/0")
    return plate
