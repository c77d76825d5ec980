"""``screenlib simulate``: render a synthetic plate with per-cell ground truth."""

from __future__ import annotations

import re
from pathlib import Path

import click

from screenlib.errors import InputError
from screenlib.simulate import LAYOUTS, example_plate_design, simulate_plate

EXAMPLE_COMMAND = "screenlib simulate example_plates/milademetan_nb --example --overwrite"


def _expand_wells(text: str) -> list[str]:
    """``"A01,A05-A08,B12"`` -> the listed wells (ranges run along one row)."""
    wells: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,2})-([A-Za-z]{1,2})(\d{1,2})", part)
        if match is None:
            wells.append(part)
            continue
        row, start, row_end, end = match.groups()
        if row.upper() != row_end.upper():
            raise InputError(f"--wells range {part!r} must stay in one row (e.g. A01-A12)")
        wells += [f"{row.upper()}{column:02d}" for column in range(int(start), int(end) + 1)]
    return wells


@click.command(name="simulate")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS, case_sensitive=False),
    default="imagexpress",
    show_default=True,
    help="Vendor file naming of the export, or 'zarr' for an OME-Zarr plate.",
)
@click.option(
    "--example",
    is_flag=True,
    help="Write exactly the committed example plate (milademetan on five neuroblastoma lines, "
    "ImageXpress naming, zlib TIFFs); other options must be left at their defaults.",
)
@click.option("--wells", help="Only these wells, e.g. 'A01,A05-A08,H12'.")
@click.option("--fields", type=click.IntRange(1), help="Fields per well [example: 2].")
@click.option("--size", type=click.IntRange(16), help="Field width and height in pixels [168].")
@click.option("--pixel-size", type=click.FloatRange(0.05, 10), help="Micrometres [1.3].")
@click.option(
    "--cells-per-field",
    type=click.FloatRange(0),
    help="Nuclei per vehicle field [65 on 168 px; same density on other sizes].",
)
@click.option("--timepoints", type=click.IntRange(1), help="Timepoints [1].")
@click.option("--z-planes", type=click.IntRange(1), help="Focal planes [1].")
@click.option("--seed", type=int, help="Random seed [20260105].")
@click.option(
    "--compression",
    type=click.Choice(["none", "zlib"]),
    help="TIFF compression [none, as the vendors write; zlib with --example].",
)
@click.option("--overwrite", is_flag=True, help="Write into a non-empty OUT folder.")
@click.option(
    "--flow",
    is_flag=True,
    help="Write a flow-cytometry plate instead: one FCS 3.1 file per well (Annexin V-FITC, PI, "
    "scatter; spillover, debris and doublets) with per-event truth; --example writes the "
    "committed example_plates/milademetan_flow.",
)
@click.option(
    "--events-per-well",
    type=click.IntRange(1),
    help="With --flow: single cells in a vehicle well [10000; 1500 with --example].",
)
@click.pass_context
def command(
    ctx: click.Context,
    out: Path,
    layout: str,
    example: bool,
    wells: str | None,
    fields: int | None,
    size: int | None,
    pixel_size: float | None,
    cells_per_field: float | None,
    timepoints: int | None,
    z_planes: int | None,
    seed: int | None,
    compression: str | None,
    overwrite: bool,
    flow: bool,
    events_per_well: int | None,
) -> None:
    """Render a synthetic screening plate with per-cell ground truth into OUT.

    \b
    OUT gets:
      export/ (or <plate>.zarr)  the images, in the vendor's naming
      platemap.csv               well, sample, compound, concentration, unit, role
      truth/cells.parquet        every nucleus: well, field, timepoint, label, cell_class...
      truth/wells.csv            per-well true and design fractions, cell counts, IC50s
      truth/labels/*.tif         truth nuclei label images
      truth/design.json          the full design (re-renders the same plate)

    The design is the example plate (milademetan on SK-N-SH, SH-SY5Y, IMR-32, IMR-5 and
    LAN-5; vehicle column 1, 10-point 3-fold dilution from 10 uM in columns 2-11,
    staurosporine in column 12); the options change its size.
    """
    overrides = {
        "wells": wells,
        "fields": fields,
        "size": size,
        "pixel_size": pixel_size,
        "cells_per_field": cells_per_field,
        "timepoints": timepoints,
        "z_planes": z_planes,
        "seed": seed,
        "compression": compression,
    }
    if flow:
        _simulate_flow(ctx, out, example, wells, seed, events_per_well, overwrite, overrides)
        return
    if events_per_well is not None:
        raise InputError("--events-per-well applies to --flow plates only")
    if example:
        given = [name for name, value in overrides.items() if value is not None]
        if given or layout.lower() != "imagexpress":
            raise InputError(
                f"--example writes the committed example exactly; drop {given or ['--layout']}"
            )
        compression = "zlib"
    keywords = {
        "fields_per_well": fields,
        "field_shape": (size, size) if size else None,
        "pixel_size_um": pixel_size,
        "cells_per_field": cells_per_field,
        "timepoints": timepoints,
        "z_planes": z_planes,
        "seed": seed,
    }
    if cells_per_field is None and (size or pixel_size):
        # keep the example's cell density (nuclei per mm²) on a different field area
        base = example_plate_design()
        base_um = base.field_shape[0] * base.pixel_size_um
        new_um = (size or base.field_shape[0]) * (pixel_size or base.pixel_size_um)
        keywords["cells_per_field"] = base.cells_per_field * (new_um / base_um) ** 2
    design = example_plate_design(**{k: v for k, v in keywords.items() if v is not None})
    if wells:
        design = design.restricted_to(_expand_wells(wells))
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    result = simulate_plate(
        design,
        out,
        layout.lower(),
        compression=compression,
        progress=not quiet,
        overwrite=overwrite,
    )
    if not quiet:
        click.echo(
            f"wrote {result.n_images} images ({result.n_cells} cells) of plate {design.name} "
            f"to {result.images}\nplate map: {result.platemap}\ntruth: {result.truth}"
        )


def _simulate_flow(ctx, out, example, wells, seed, events_per_well, overwrite, overrides):
    """``--flow``: the example design acquired on a plate cytometer (screenlib.simulate._flow)."""
    from screenlib.simulate._flow import FLOW_EXAMPLE_EVENTS, simulate_flow_plate

    image_only = [k for k, v in overrides.items() if v is not None and k not in ("wells", "seed")]
    if image_only:
        raise InputError(f"--flow plates have no {', '.join(image_only)}; drop them")
    if example and (wells or seed is not None or events_per_well is not None):
        raise InputError("--flow --example writes the committed example exactly; drop the rest")
    design = example_plate_design(**({"seed": seed} if seed is not None else {}))
    if wells:
        design = design.restricted_to(_expand_wells(wells))
    events = events_per_well or (FLOW_EXAMPLE_EVENTS if example else 10000)
    result = simulate_flow_plate(design, out, events_per_well=events, overwrite=overwrite)
    if not (ctx.obj and ctx.obj.get("quiet")):
        click.echo(
            f"wrote {result.n_events} events ({result.n_cells} single cells) of plate "
            f"{design.name} to {result.fcs}\nplate map: {result.platemap}\ntruth: {result.truth}"
        )
