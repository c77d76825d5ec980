"""``screenlib ingest SRC OUT.zarr``: convert a microscope TIFF export into an OME-Zarr plate."""

from __future__ import annotations

import time
from pathlib import Path

import click

from screenlib.ingest import CONVENTIONS, ingest_export


@click.command("ingest")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_zarr", type=click.Path(path_type=Path))
@click.option(
    "--convention",
    type=click.Choice(["auto", *CONVENTIONS], case_sensitive=False),
    default="auto",
    show_default=True,
    help="File naming of the export; auto detects it from the names and side-car files.",
)
@click.option(
    "--pattern",
    metavar="REGEX",
    default=None,
    help="Regex for other namings, with named groups well (or row + col), field, channel "
    "and optionally timepoint, z; numbers are re-based so the smallest is 0. "
    "Example: '(?P<well>[A-P]\\d+)_f(?P<field>\\d+)_c(?P<channel>\\d)'",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Record missing images (stored as zeros) in the plate instead of stopping.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT.zarr if it exists.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.pass_context
def command(
    ctx: click.Context,
    source: Path,
    out_zarr: Path,
    convention: str,
    pattern: str | None,
    allow_missing: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """Convert the TIFF export in SOURCE into the OME-Zarr HCS plate OUT_ZARR.

    Reads ImageXpress (MetaXpress), Opera Phenix / Operetta (Harmony) and Yokogawa
    CellVoyager exports, with their .HTD / Index.idx.xml / .mrf metadata when present.
    SOURCE is only read, never modified. Every image is checked for shape and pixel type;
    a missing or unreadable image stops the ingest with its file name.
    """
    quiet = bool((ctx.obj or {}).get("quiet"))
    start = time.perf_counter()
    plate = ingest_export(
        source,
        out_zarr,
        convention=convention,
        pattern=pattern,
        allow_missing=allow_missing,
        progress=progress and not quiet,
        overwrite=overwrite,
    )
    seconds = time.perf_counter() - start
    vendor = plate.vendor_metadata
    t, c, z, y, x = plate.shape
    n_fields = max(len(plate.fields(w)) for w in plate.wells)
    click.echo(
        f"{out_zarr}: plate {plate.name!r}, {len(plate.wells)} wells x {n_fields} fields, "
        f"{c} channels ({', '.join(plate.channel_names)}), {t} timepoint(s), {z} plane(s), "
        f"{y}x{x} {plate.dtype}; {vendor['n_images']} images from a "
        f"{vendor['convention']} export in {seconds:.1f} s"
    )
    if vendor.get("missing_images"):
        click.echo(f"warning: {len(vendor['missing_images'])} missing image(s) stored as zeros")
