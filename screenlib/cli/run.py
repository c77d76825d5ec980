"""``screenlib run``: the whole protocol on one plate, on a local or an existing Dask cluster."""

from __future__ import annotations

from pathlib import Path

import click

from screenlib.settings import load_settings


@click.command("run")
@click.argument("plate", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--platemap",
    "platemap",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Plate-map CSV: well, role, sample, compound, concentration.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder; a rerun into the same folder resumes where the last one stopped.",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Assay settings TOML (see `screenlib init`); defaults when omitted.",
)
@click.option(
    "--scheduler",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Address of a running Dask scheduler (tcp://HOST:PORT); default: a local cluster.",
)
@click.option(
    "--workers",
    "n_workers",
    type=click.IntRange(min=1),
    help="Local cluster: worker processes (default one per core).",
)
@click.option(
    "--recompute",
    "--force",
    "recompute",
    is_flag=True,
    help="Analyse every field again, ignoring finished ones (--force is an old name).",
)
@click.option("--no-report", is_flag=True, help="Skip report.html (tables and fits only).")
@click.option(
    "--write-labels",
    is_flag=True,
    help="Write the nucleus labels into a Zarr input plate (default: OUT/labels.zarr; an "
    "input plate is otherwise only read).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check settings and plate map, print the plan and stop (no field is analysed).",
)
@click.pass_context
def command(
    ctx: click.Context,
    plate: Path,
    platemap: Path,
    out_dir: Path,
    settings_path: Path | None,
    scheduler: str | None,
    n_workers: int | None,
    recompute: bool,
    no_report: bool,
    write_labels: bool,
    dry_run: bool,
) -> None:
    """Analyse PLATE (an OME-Zarr plate or a microscope export folder, ingested on the fly).

    \b
    Segments nuclei in every field, measures Annexin V and PI per cell, gates from the vehicle
    wells, aggregates wells, computes plate QC, fits dose-response curves and writes a report:
      OUT/cells.parquet  OUT/fields.csv  OUT/wells.csv  OUT/plate_qc.csv  OUT/gates.json
      OUT/fits.csv       OUT/report.html OUT/settings_used.toml  OUT/run.json
    Finished fields are kept as they finish; rerun the same command to resume (a field whose
    images changed is analysed again). A Zarr input plate is only read: labels go to
    OUT/labels.zarr unless --write-labels. --scheduler sync runs everything in this process.
    Exit status 3 means the run finished but some fields failed (fields.csv, column 'error').
    """
    from screenlib.cli import EXIT_PARTIAL
    from screenlib.orchestrate import plan_run, run_plate

    quiet = bool((ctx.obj or {}).get("quiet"))
    settings = load_settings(settings_path)
    if dry_run:
        plan, _plate, _manifest = plan_run(plate, platemap, out_dir, settings, not quiet)
        click.echo(plan.describe())
        return
    summary = run_plate(
        plate,
        platemap,
        out_dir,
        settings,
        scheduler=scheduler,
        n_workers=n_workers,
        force=recompute,
        progress=not quiet,
        report=not no_report,
        write_labels=write_labels,
    )
    for failure in summary.failed_fields[:10]:
        click.echo(
            f"field failed: {failure['well']} f{failure['field']} t{failure['timepoint']}: "
            f"{failure['error']}",
            err=True,
        )
    click.echo(summary.line())
    if "report.html" in summary.outputs:
        click.echo(f"report: {summary.outputs['report.html']}")
    if summary.n_fields_failed:
        raise SystemExit(EXIT_PARTIAL)
