"""``screenlib init``: write a commented assay-settings template for an export or a plate."""

from __future__ import annotations

from pathlib import Path

import click

from screenlib.cli._output import write_output
from screenlib.errors import InputError
from screenlib.settings_template import guess_stain, settings_template


def detect_channel_names(source: Path, pattern: str | None = None) -> tuple[list[str], str]:
    """Channel names of a Zarr plate or a microscope export, and where they came from.

    A Zarr plate gives its stored names. An export gives the names its side-car files
    (ImageXpress ``.HTD`` / MetaSeries tags, Operetta ``Index.idx.xml``, CellVoyager ``.mrf``)
    state, or the vendor's default names (``w1``, ``ch1``, ``C01``) from the file names.
    """
    from screenlib.ingest import detect_convention, export_channel_names

    if (source / "zarr.json").is_file():
        from screenlib.store import open_plate

        plate = open_plate(source)
        return list(plate.channel_names), f"Zarr plate {plate.name}"
    if not source.is_dir():
        raise InputError(f"{source}: not a folder; point init at an export folder or a .zarr plate")
    convention = "generic" if pattern else detect_convention(source)
    return export_channel_names(source, pattern), f"{convention} export"


@click.command("init")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("settings.toml"),
    show_default=True,
    help="Where to write the settings template.",
)
@click.option("--pattern", default=None, help="Regex for non-standard file names (as in ingest).")
@click.option(
    "--overwrite", "--force", "overwrite", is_flag=True, help="Replace an existing settings file."
)
def command(source: Path, out_path: Path, pattern: str | None, overwrite: bool) -> None:
    """Write a commented assay-settings template for SOURCE (an export folder or a .zarr plate).

    The channels found in SOURCE are mapped to stains by their names (Hoechst/DAPI ->
    hoechst, FITC/Annexin/488 -> annexin_v, PI/Texas Red/561 -> pi); check them, then pass
    the file to `screenlib run --settings`.
    """
    if out_path.exists() and not overwrite:
        raise InputError(f"{out_path} already exists; choose another --out or pass --overwrite")
    names, origin = detect_channel_names(source, pattern)
    stains = [guess_stain(name) for name in names]
    text = settings_template(names, stains)
    write_output(out_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    click.echo(f"Channels found in the {origin}:")
    for index, (name, stain) in enumerate(zip(names, stains, strict=True)):
        click.echo(f"  {index}: {name!r:30} -> {stain or 'not recognised (edit the file)'}")
    click.echo(f"Wrote {out_path}; check the [[channels]] tables before running.")
