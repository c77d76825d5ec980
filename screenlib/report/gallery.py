"""Example cell crops per class: an RGB composite with the nucleus outline, from real wells.

Hoechst is shown blue, Annexin V green and PI red, so an early-apoptotic cell shows a green
ring around a blue nucleus and a late-apoptotic one a red (PI-filled) nucleus inside a green
ring. All crops share one display range per channel, so brightness compares across classes.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from screenlib.settings import AssaySettings

GALLERY_CLASSES = ("viable", "early_apoptotic", "late_apoptotic", "necrotic")
#: object classes (``object_class`` of the cells table, see screenlib.gating.objects) shown in
#: rows of their own: mitotic figures are counted cells, debris is not counted
OBJECT_GALLERY_CLASSES = ("mitotic", "debris")
GALLERY_ROWS = (*GALLERY_CLASSES, *OBJECT_GALLERY_CLASSES)
# display colour of each stain in the composite (RGB weights)
STAIN_COLORS = {
    "hoechst": (0.15, 0.35, 1.0),
    "annexin_v": (0.0, 1.0, 0.0),
    "pi": (1.0, 0.0, 0.0),
}


# crops are shown at least this wide (CSS pixels), zoomed by a whole number
CROP_DISPLAY_PX = 160
# below 1 lifts dim structures (a faint Annexin rim) without saturating bright nuclei
DISPLAY_GAMMA = 0.75


def gallery_class(cells: pd.DataFrame) -> pd.Series:
    """The gallery row of each object: ``mitotic`` or ``debris`` by its ``object_class``,
    else its quadrant ``cell_class``; empty for objects shown in no row (e.g. fragments)."""
    row = pd.Series("", index=cells.index, dtype=object)
    if "cell_class" in cells.columns:
        quadrant = cells["cell_class"].astype(str)
        row = row.mask(quadrant.isin(GALLERY_CLASSES), quadrant)
    if "object_class" in cells.columns:
        objects = cells["object_class"].astype(str)
        row = row.mask(objects.isin(OBJECT_GALLERY_CLASSES), objects)
    return row


@dataclass(frozen=True)
class CellCrop:
    """One example cell: its composite crop (PNG bytes) and where it came from."""

    cell_class: str  # the gallery row: a quadrant class, "mitotic" or "debris"
    well: str
    field: int
    timepoint: int
    label: int
    png: bytes
    annexin: float
    pi: float
    size_px: int = 0  # width of the PNG: shown at this size, never rescaled by the browser
    # the crop's RGB pixels (uint8), for the mosaic: no decoding of the PNG again
    pixels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


def stain_channel_indices(channel_names: list[str], settings: AssaySettings) -> dict[str, int]:
    """Channel index of each stain in the plate, from the settings' channel table.

    A channel's ``name`` wins when it matches a plate channel name; otherwise its ``index``.
    """
    indices = {}
    for channel in settings.channels:
        if channel.name is not None and channel.name in channel_names:
            indices[channel.stain] = channel_names.index(channel.name)
        elif channel.index is not None and channel.index < len(channel_names):
            indices[channel.stain] = channel.index
    return indices


def composite_rgb(
    channels: np.ndarray,
    stain_indices: dict[str, int],
    display_ranges: dict[str, tuple[float, float]],
) -> np.ndarray:
    """An RGB float image in [0, 1] from a ``(C, Y, X)`` field: Hoechst blue, Annexin green,
    PI red, each scaled by its display range (low, high) and a gamma of 0.75."""
    shape = channels.shape[1:]
    rgb = np.zeros((*shape, 3), dtype=np.float32)
    for stain, color in STAIN_COLORS.items():
        if stain not in stain_indices or stain not in display_ranges:
            continue
        low, high = display_ranges[stain]
        plane = channels[stain_indices[stain]].astype(np.float32)
        scaled = np.clip((plane - low) / max(high - low, 1e-9), 0.0, 1.0) ** DISPLAY_GAMMA
        rgb += scaled[..., None] * np.asarray(color, dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0)


def _crop(image: np.ndarray, center_y: float, center_x: float, half: int) -> np.ndarray:
    """A ``2*half`` square crop centred on a point; near the image edge the window slides
    inside the image (the cell sits off-centre) instead of filling the crop with padding."""
    size = 2 * half
    padding = [(0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1]))]
    if any(after for _, after in padding):  # an image smaller than the crop
        image = np.pad(image, padding + [(0, 0)] * (image.ndim - 2), mode="constant")
    y = int(np.clip(round(center_y) - half, 0, image.shape[0] - size))
    x = int(np.clip(round(center_x) - half, 0, image.shape[1] - size))
    return image[y : y + size, x : x + size]


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of a labelled object that touch (4-connected) another label or the background:
    ``skimage.segmentation.find_boundaries(labels, mode="inner")``, in numpy (importing
    scikit-image's segmentation module costs a gating-only re-run about a second).

    Examples
    --------
    >>> inner_boundaries(np.array([[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])).astype(int)
    array([[0, 1, 0, 0],
           [0, 1, 0, 0],
           [0, 1, 0, 0]])
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    padded = np.pad(labels, 1, mode="edge")  # outside the image: as the edge (no boundary)
    centre = padded[1:-1, 1:-1]
    highest, lowest = centre.copy(), centre.copy()
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        np.maximum(highest, shifted, out=highest)
        np.minimum(lowest, shifted, out=lowest)
    return (highest != lowest) & (labels != 0)


def _outlined(rgb: np.ndarray, labels: np.ndarray, label: int, zoom: int) -> np.ndarray:
    """Zoom a crop by an integer factor (nearest neighbour: every pixel a sharp square, no
    blur) and draw the cell's outline white, its neighbours' grey."""
    big = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    big_labels = np.repeat(np.repeat(labels, zoom, axis=0), zoom, axis=1)
    others = inner_boundaries(np.where(big_labels == label, 0, big_labels))
    big[others] = 0.5 * big[others] + 0.25
    own = inner_boundaries(big_labels == label)
    big[own] = 1.0
    return big


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """An RGB float image in [0, 1] as 8-bit pixels (truncated, as matplotlib's ``imsave``)."""
    return (np.asarray(rgb, dtype=np.float32) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """8-bit RGB pixels as PNG bytes (lossless; zlib level 3, as the report's figures)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buffer, "png", compress_level=3)
    return buffer.getvalue()


def choose_example_cells(
    cells: pd.DataFrame,
    per_class: int = 6,
    fields_per_class: int = 2,
    seed: int = 0,
    *,
    margin_px: int = 0,
    field_shape: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Example objects per gallery row (:data:`GALLERY_ROWS`), from the fields richest in it.

    Returns the chosen rows of ``cells`` with a ``gallery_class`` column. Objects touching the
    image border are skipped, and so are objects nearer than ``margin_px`` to the border of a
    ``field_shape`` image (their crop would be padding), unless a row has no other objects.
    Objects with an ``exclusion_reason`` are never shown, except debris in its own row (its
    reason is being debris); leave out the fields that failed QC before calling. Drawing from
    few fields keeps the number of fields read small; a fixed seed makes the gallery the same
    on every run.
    """
    if "cell_class" not in cells.columns or cells.empty:
        return cells.iloc[0:0].assign(gallery_class="")
    # masks over the whole table and one take at the end: a table filtered once per step and
    # per field copied every column each time
    row_class = gallery_class(cells).to_numpy(dtype=object)
    keep = row_class != ""
    if "exclusion_reason" in cells.columns:
        excluded = cells["exclusion_reason"].fillna("").astype(str).to_numpy() != ""
        keep &= ~excluded | (row_class == "debris")
    if "touches_border" in cells.columns:
        keep &= ~cells["touches_border"].astype(bool).to_numpy()
    if field_shape is not None and margin_px > 0:
        y, x = cells["centroid_y"].to_numpy(float), cells["centroid_x"].to_numpy(float)
        inside = (y >= margin_px) & (x >= margin_px)
        inside &= (y <= field_shape[0] - margin_px) & (x <= field_shape[1] - margin_px)
        # a class found only near the border is still shown (off-centre) rather than hidden
        shown = list(set(row_class[keep & inside]))
        keep &= inside | ~np.isin(row_class, shown)
    rng = np.random.default_rng(seed)
    # each object's field as a number, in (well, field, timepoint) order; -1: no field key
    key_columns = ["well", "field", "timepoint"]
    field_id = cells[key_columns].groupby(key_columns, sort=True).ngroup().to_numpy()
    chosen = []
    for name in GALLERY_ROWS:
        of_class = np.flatnonzero(keep & (row_class == name) & (field_id >= 0))
        if not of_class.size:
            continue
        # fields richest in the class first (ties: in field order)
        ids = field_id[of_class]
        counts = np.bincount(ids)
        present = np.flatnonzero(counts)
        fields = present[np.argsort(-counts[present], kind="stable")][:fields_per_class]
        per_field = max(1, -(-per_class // len(fields)))
        picked = []
        for field_key in fields:
            positions = np.flatnonzero(ids == field_key)  # in table order
            take = min(per_field, len(positions))
            picked.append(positions[np.sort(rng.choice(len(positions), take, replace=False))])
        chosen.append(of_class[np.concatenate(picked)[:per_class]])
    rows = np.concatenate(chosen) if chosen else np.zeros(0, dtype=int)
    chosen_rows = cells.iloc[rows]
    return chosen_rows.assign(
        gallery_class=pd.Series(row_class[rows], index=chosen_rows.index, dtype=object)
    )


def crop_half_width(cells: pd.DataFrame, settings: AssaySettings, pixel_size_um: float) -> int:
    """Half the crop side (pixels): a large nucleus of the plate plus its Annexin V ring and a
    little context, so the cell fills most of the crop rather than a corner of padding."""
    ring_px = settings.ring.ring_width_um / pixel_size_um
    if "area_px" in cells.columns and cells["area_px"].notna().any():
        area = float(np.nanpercentile(cells["area_px"].to_numpy(dtype=float), 90))
        diameter_px = 2.0 * np.sqrt(area / np.pi)
    else:
        diameter_px = (settings.segmentation.nucleus_diameter_um or 10.0) / pixel_size_um
    return int(np.clip(np.ceil(0.5 * diameter_px + ring_px + 0.35 * diameter_px), 8, 64))


@dataclass(frozen=True)
class GalleryPlan:
    """Which objects the gallery shows and how their crops are drawn, known before any pixel
    is read: enough to tell whether the previous report's mosaics show the same crops."""

    examples: pd.DataFrame  # the chosen rows of the cells table, with ``gallery_class``
    half: int  # half the crop side, plate pixels
    zoom: int  # integer zoom of the crops
    stain_indices: dict[str, int]
    annexin_feature: str
    pi_feature: str

    @property
    def size_px(self) -> int:
        """Side of one crop as shown (pixels)."""
        return 2 * self.half * self.zoom

    def field_keys(self) -> list[tuple[str, int, int]]:
        """``(well, field, timepoint)`` of every field read, in reading order."""
        keys = self.examples[["well", "field", "timepoint"]].drop_duplicates()
        return [(str(w), int(f), int(t)) for w, f, t in keys.itertuples(index=False)]


def gallery_columns(
    settings: AssaySettings, annexin_feature: str | None = None, pi_feature: str | None = None
) -> list[str]:
    """The columns of the cells table the gallery reads (the features: the settings')."""
    wanted = ("cell_class", "object_class", "exclusion_reason", "touches_border", "well",
              "field", "timepoint", "label", "centroid_y", "centroid_x", "area_px", "plate",
              annexin_feature or settings.gating.annexin_feature,
              pi_feature or settings.gating.pi_feature)  # fmt: skip
    return list(dict.fromkeys(wanted))


def plan_gallery(
    plate,
    cells: pd.DataFrame,
    settings: AssaySettings,
    *,
    per_class: int = 6,
    pixel_size_um: float | None = None,
    annexin_feature: str | None = None,
    pi_feature: str | None = None,
) -> GalleryPlan:
    """The example objects of :func:`cell_gallery` and the crop geometry (no pixels read)."""
    annexin_feature = annexin_feature or settings.gating.annexin_feature
    pi_feature = pi_feature or settings.gating.pi_feature
    # only the columns the gallery reads: a cells table has about a hundred, and every
    # selection below would copy them all
    wanted = gallery_columns(settings, annexin_feature, pi_feature)
    cells = cells[[c for c in wanted if c in cells.columns]]
    # only cells whose field is in this plate (a table may span several plates)
    in_plate = cells["well"].isin(set(plate.wells))
    if "plate" in cells.columns and getattr(plate, "name", None) in set(cells["plate"]):
        in_plate &= cells["plate"] == plate.name
    if not in_plate.all():
        cells = cells[in_plate]
    pixel_size = pixel_size_um or settings.pixel_size_um or plate.pixel_size_um
    pixel_size = pixel_size or settings.segmentation.default_pixel_size_um
    sized = cells
    if "object_class" in sized.columns:  # the crop fits a cell, not a speck of debris
        sized = sized[sized["object_class"].astype(str) != "debris"]
    half = crop_half_width(sized, settings, pixel_size)
    examples = choose_example_cells(
        cells, per_class=per_class, margin_px=half,
        field_shape=tuple(plate.shape[-2:]),
    )  # fmt: skip
    return GalleryPlan(
        examples=examples,
        half=half,
        zoom=max(1, -(-CROP_DISPLAY_PX // (2 * half))),  # integer: sharp pixels
        stain_indices=stain_channel_indices(list(plate.channel_names), settings),
        annexin_feature=annexin_feature,
        pi_feature=pi_feature,
    )


def gallery_source_key(plate, plan: GalleryPlan) -> dict | None:
    """Everything the gallery's pixels are drawn from: the chosen objects, the crop geometry
    and a fingerprint of each field's stored image and labels (None when the plate cannot
    fingerprint them: the crops are then always read again). The plate's path is left out:
    the fingerprints say whether the pixels are the same."""
    if not all(hasattr(plate, m) for m in ("field_fingerprint", "labels_fingerprint")):
        return None
    columns = ["gallery_class", "well", "field", "timepoint", "label", "centroid_y", "centroid_x"]
    fields = [
        [*key, plate.field_fingerprint(*key), plate.labels_fingerprint(*key)]
        for key in plan.field_keys()
    ]
    return {
        "channels": list(plate.channel_names),
        "examples": plan.examples[columns].reset_index(drop=True),
        "geometry": [plan.half, plan.zoom],
        "stains": plan.stain_indices,
        "fields": fields,
    }


def cell_gallery(
    plate,
    cells: pd.DataFrame,
    settings: AssaySettings,
    *,
    per_class: int = 6,
    pixel_size_um: float | None = None,
    annexin_feature: str | None = None,
    pi_feature: str | None = None,
) -> list[CellCrop]:
    """Composite crops of example cells of each class, read from the plate.

    Parameters
    ----------
    plate
        An open plate (``screenlib.store.Plate``) with raw channels and ``nuclei`` labels.
    cells
        Per-cell table with ``cell_class``, ``well``, ``field``, ``timepoint``, ``label``,
        ``centroid_y``, ``centroid_x``.
    settings
        Assay settings (channel → stain, nucleus size for the crop size).
    """
    plan = plan_gallery(
        plate, cells, settings, per_class=per_class, pixel_size_um=pixel_size_um,
        annexin_feature=annexin_feature, pi_feature=pi_feature,
    )  # fmt: skip
    return draw_crops(plate, plan)


def _crop_of(row, plan: GalleryPlan, picture: np.ndarray) -> CellCrop:
    return CellCrop(
        cell_class=row.gallery_class,
        well=str(row.well),
        field=int(row.field),
        timepoint=int(row.timepoint),
        label=int(row.label),
        png=png_bytes(picture),
        annexin=float(getattr(row, plan.annexin_feature, np.nan)),
        pi=float(getattr(row, plan.pi_feature, np.nan)),
        size_px=int(picture.shape[1]),
        pixels=picture,
    )


def draw_crops(plate, plan: GalleryPlan) -> list[CellCrop]:
    """The crops of a :class:`GalleryPlan`, read and coloured from the plate's fields."""
    examples = plan.examples
    if examples.empty:
        return []
    fields = {}
    for well, field, timepoint in plan.field_keys():
        image = np.asarray(plate.read_field(well, field, timepoint=timepoint))
        labels = np.asarray(plate.read_labels(well, field, timepoint=timepoint))
        fields[(well, field, timepoint)] = (image, labels)

    # one display range per stain over all fields read: 0.5th to 99.7th percentile
    display_ranges = {}
    for stain, channel in plan.stain_indices.items():
        pixels = np.concatenate(
            [image[channel][::2, ::2].ravel() for image, _ in fields.values()]
        ).astype(np.float32)
        low, high = np.percentile(pixels, [0.5, 99.7])
        display_ranges[stain] = (float(low), float(max(high, low + 1e-6)))

    crops = []
    half = plan.half
    for row in examples.itertuples(index=False):
        image, labels = fields[(str(row.well), int(row.field), int(row.timepoint))]
        # crop first, then colour: the composite of the crop is the crop of the composite
        crop_channels = _crop(np.moveaxis(image, 0, -1), row.centroid_y, row.centroid_x, half)
        crop_rgb = composite_rgb(
            np.moveaxis(crop_channels, -1, 0), plan.stain_indices, display_ranges
        )
        crop_labels = _crop(labels, row.centroid_y, row.centroid_x, half)
        picture = to_uint8(_outlined(crop_rgb, crop_labels, int(row.label), plan.zoom))
        crops.append(_crop_of(row, plan, picture))
    return crops


def crops_from_mosaics(plan: GalleryPlan, mosaics: dict[str, np.ndarray]) -> list[CellCrop]:
    """The crops of every gallery row cut back out of its mosaic (:func:`gallery_mosaic`, which
    holds their exact pixels), in :func:`draw_crops`' order; raises ValueError when a mosaic
    has another layout than the plan's."""
    size, gap, columns = plan.size_px, MOSAIC_GAP, MOSAIC_COLUMNS
    counts = plan.examples["gallery_class"].value_counts()
    for cell_class, n in counts.items():
        n_rows, width = -(-n // columns), min(n, columns)
        expected = (n_rows * (size + gap) - gap, width * (size + gap) - gap, 3)
        shape = getattr(mosaics.get(cell_class), "shape", None)
        if shape != expected:
            raise ValueError(f"mosaic of {cell_class} is {shape}, not {expected}")
    crops, placed = [], dict.fromkeys(counts.index, 0)
    for row in plan.examples.itertuples(index=False):
        r, c = divmod(placed[row.gallery_class], columns)
        placed[row.gallery_class] += 1
        y, x = r * (size + gap), c * (size + gap)
        tile = mosaics[row.gallery_class][y : y + size, x : x + size]
        crops.append(_crop_of(row, plan, np.ascontiguousarray(tile)))
    return crops


MOSAIC_GAP = 4  # white pixels between the crops of a mosaic
MOSAIC_COLUMNS = 6


def gallery_mosaic(crops: list[CellCrop], columns: int = MOSAIC_COLUMNS) -> np.ndarray | None:
    """All crops of one class side by side, 8-bit RGB on white (``figures/gallery_<class>.png``)."""
    if not crops:
        return None
    tiles = [
        crop.pixels if crop.pixels is not None
        else np.asarray(Image.open(io.BytesIO(crop.png)).convert("RGB"))
        for crop in crops
    ]  # fmt: skip
    size = tiles[0].shape[0]
    gap = MOSAIC_GAP
    n_rows = -(-len(tiles) // columns)
    width = min(len(tiles), columns)
    mosaic = np.full((n_rows * (size + gap) - gap, width * (size + gap) - gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        mosaic[
            r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size
        ] = tile
    return mosaic
