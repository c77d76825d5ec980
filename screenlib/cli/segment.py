"""``screenlib segment``: segment the nuclei of one image (check settings, score a segmenter)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from screenlib.cli._output import write_output
from screenlib.errors import InputError


def _read_image(path: Path, channel: int) -> tuple[np.ndarray, float | None]:
    """The nuclear image of a TIFF (2-D, or one channel of a 3-D stack) and its pixel size."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            image = tif.asarray()
            pixel_size = _tiff_pixel_size_um(tif)
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise InputError(f"cannot read image {path}: {error}") from error
    image = np.squeeze(image)
    if image.ndim == 3:
        # channels first (C, Y, X) unless the last axis is a short colour axis
        if image.shape[-1] <= 4 < image.shape[0]:
            image = np.moveaxis(image, -1, 0)
        if not 0 <= channel < image.shape[0]:
            raise InputError(
                f"{path} has {image.shape[0]} channels; --channel must be 0-{image.shape[0] - 1}"
            )
        image = image[channel]
    elif image.ndim != 2:
        raise InputError(f"{path}: expected a 2-D image or a (C, Y, X) stack, got {image.shape}")
    return image, pixel_size


def _tiff_pixel_size_um(tif) -> float | None:
    """Pixel size from ImageJ metadata or the TIFF resolution tags, when recorded in µm/cm."""
    page = tif.pages[0]
    imagej = tif.imagej_metadata or {}
    tags = page.tags
    if "XResolution" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    if not numerator:
        return None
    per_unit = numerator / denominator  # pixels per unit
    unit = str(imagej.get("unit", "")).lower()
    if unit in ("micron", "um", "µm", "\\u00b5m"):
        return 1.0 / per_unit
    resolution_unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 1
    if int(resolution_unit) == 3 and per_unit > 1000:  # centimetre
        return 1e4 / per_unit
    return None


@click.command(name="segment")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Label image to write (TIFF, int32: 0 background, 1..N nuclei).",
)
@click.option(
    "--pixel-size",
    type=float,
    default=None,
    help="Pixel size in µm (default: from the TIFF, the settings, or 0.65).",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Assay settings TOML; its [segmentation] section is used.",
)
@click.option("--channel", type=int, default=0, show_default=True, help="Channel of a stack.")
def command(
    image: Path, out: Path, pixel_size: float | None, settings_path: Path | None, channel: int
) -> None:
    """Segment nuclei in IMAGE (one nuclear-stain TIFF) and write a label image to --out."""
    import tifffile

    from screenlib.analysis.correction import estimate_camera_offset
    from screenlib.plugins import get_segmenter
    from screenlib.settings import load_settings

    settings = load_settings(settings_path)
    nuclear, tiff_pixel_size = _read_image(image, channel)
    pixel_size_um = (
        pixel_size
        or tiff_pixel_size
        or settings.pixel_size_um
        or settings.segmentation.default_pixel_size_um
    )
    if not pixel_size_um > 0:
        raise InputError(f"--pixel-size must be positive, got {pixel_size_um}")
    offset = (
        settings.correction.camera_offset
        if settings.correction.camera_offset is not None
        else estimate_camera_offset(nuclear)
    )
    segmenter = get_segmenter(settings.segmentation.segmenter)
    labels = segmenter(
        nuclear.astype(np.float32) - np.float32(offset), pixel_size_um, settings.segmentation
    )
    labels = np.asarray(labels, dtype=np.int32)
    write_output(out, lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib"))
    click.echo(
        f"{int(labels.max())} nuclei in {image.name} (pixel size {pixel_size_um:g} µm, "
        f"segmenter '{settings.segmentation.segmenter}') -> {out}"
    )
