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
    """Pixel size recorded in the TIFF: MetaSeries ``spatial-calibration-x`` (as the ingest
    reads it), else ImageJ metadata or the resolution tags when recorded in µm or cm."""
    metaseries = tif.metaseries_metadata if tif.is_metaseries else None
    if metaseries:
        calibration = dict(metaseries.get("PlaneInfo", {})).get("spatial-calibration-x")
        if calibration:
            return float(calibration)
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


def _write_overlay(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """PNG of ``image`` (contrast from its 0.5-99.8 percentiles) with the outlines of
    ``labels`` drawn in magenta."""
    from matplotlib.image import imsave
    from skimage.segmentation import find_boundaries

    low, high = np.percentile(image[:: max(1, image.shape[0] // 512)], [0.5, 99.8])
    grey = np.clip((image.astype(np.float32) - low) / max(float(high - low), 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(labels, mode="inner")] = (1.0, 0.0, 1.0)
    write_output(path, lambda tmp: imsave(tmp, rgb, format="png"))


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
    help="Pixel size in µm (default: the settings' pixel_size_um, else the TIFF's tags; "
    "unknown is fine: sizes follow the measured nucleus scale).",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Assay settings TOML; its [segmentation] section is used.",
)
@click.option("--channel", type=int, default=0, show_default=True, help="Channel of a stack.")
@click.option(
    "--overlay",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of the image with the nuclei outlines drawn on it.",
)
def command(
    image: Path,
    out: Path,
    pixel_size: float | None,
    settings_path: Path | None,
    channel: int,
    overlay: Path | None,
) -> None:
    """Segment nuclei in IMAGE (one nuclear-stain TIFF) and write a label image to --out.

    The field goes through the same kernel as ``screenlib run`` (pixel size resolved in the
    same order, nucleus scale measured on the image unless the settings give it).
    """
    import tifffile

    from screenlib.analysis import analyze_field
    from screenlib.analysis.scale import resolve_pixel_size
    from screenlib.plugins import get_segmenter, get_stain
    from screenlib.settings import load_settings

    settings = load_settings(settings_path)
    nuclear, tiff_pixel_size = _read_image(image, channel)
    if pixel_size is not None and not pixel_size > 0:
        raise InputError(f"--pixel-size must be positive, got {pixel_size}")
    explicit = pixel_size if pixel_size is not None else settings.pixel_size_um
    try:
        pixel_size_um, source = resolve_pixel_size(explicit, tiff_pixel_size)
    except ValueError as error:
        raise InputError(f"{image}: {error}") from error
    nuclear_stains = [c.stain for c in settings.channels if get_stain(c.stain).role == "nuclear"]
    stain = get_stain(nuclear_stains[0] if nuclear_stains else "hoechst")
    name = settings.segmentation.segmenter
    result = analyze_field(
        nuclear[None],
        stains=[stain],
        pixel_size_um=pixel_size_um,
        settings=settings,
        segmenter=None if name == "classical" else get_segmenter(name),
    )
    labels = np.asarray(result.labels, dtype=np.int32)
    write_output(out, lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib"))
    if overlay is not None:
        _write_overlay(overlay, nuclear, labels)
    size = f"{pixel_size_um:g} µm" if pixel_size_um else "unknown"
    click.echo(
        f"{int(labels.max())} nuclei in {image.name} (pixel size {size}: {source}; nucleus "
        f"diameter {result.qc['nucleus_diameter_px']:.1f} px; segmenter '{name}') -> {out}"
        + (f"; outlines -> {overlay}" if overlay is not None else "")
    )
