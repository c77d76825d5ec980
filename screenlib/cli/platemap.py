"""``screenlib platemap``: preview how a plate map will be read, before a long run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("platemap", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--plate", default=None, help="Only this plate's rows of a map with a plate column.")
@click.option(
    "--sheet", default=None, help="Sheet name or number of an .xlsx map (default: first)."
)
@click.option(
    "--plate-size",
    type=click.Choice(["96", "384", "1536"]),
    default=None,
    help="Check every well against this plate size (default: the smallest that holds them).",
)
def command(platemap: Path, plate: str | None, sheet: str | None, plate_size: str | None) -> None:
    """Show how PLATEMAP is read: columns, a picture of the plate, the curves, warnings.

    \b
    PLATEMAP is a CSV (comma, semicolon or tab; UTF-8 or Windows-1252), an .xlsx workbook or
    plate-layout grids (one 8 x 12 block per variable). Header names and values are read as
    described in docs/platemaps.md; nothing is written.
    """
    from screenlib.platemap import describe_platemap, read_platemap

    table = read_platemap(
        platemap, int(plate_size) if plate_size else None, plate=plate, sheet=sheet
    )
    click.echo(describe_platemap(table))
