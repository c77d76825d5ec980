"""``screenlib run``: the whole protocol on one plate or an experiment of several plates."""

from __future__ import annotations

from pathlib import Path

import click

from screenlib.settings import load_settings


@click.command("run")
@click.argument("plates", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--platemap",
    "platemaps",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Plate map (CSV, .xlsx or plate-layout grids; see docs/platemaps.md). Several "
    "plates: one map each, one map for all, or one map with a 'plate' column.",
)
@click.option(
    "--experiment",
    "experiment_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Experiment file: a CSV listing plate,platemap[,name] per plate (instead of PLATES).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (new, empty or an earlier run's); a rerun resumes where it stopped.",
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
    help="tcp://HOST:PORT of a running Dask scheduler, or 'sync' to run in this process; "
    "default: a local cluster.",
)
@click.option(
    "--workers",
    "n_workers",
    type=click.IntRange(min=1),
    help="Local cluster: worker processes (default one per core).",
)
@click.option(
    "--recompute", is_flag=True, help="Analyse every field again, ignoring finished ones."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Let this run replace the results of another input in OUT (refused otherwise).",
)
@click.option("--no-report", is_flag=True, help="Skip report.html (tables and fits only).")
@click.option(
    "--excel", is_flag=True, help="Also write results.xlsx (wells, fits, plate QC; one sheet each)."
)
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
    plates: tuple[Path, ...],
    platemaps: tuple[Path, ...],
    experiment_file: Path | None,
    out_dir: Path,
    settings_path: Path | None,
    scheduler: str | None,
    n_workers: int | None,
    recompute: bool,
    overwrite: bool,
    no_report: bool,
    excel: bool,
    write_labels: bool,
    dry_run: bool,
) -> None:
    """Analyse PLATES (OME-Zarr plates or microscope export folders, ingested on the fly).

    \b
    Segments nuclei in every field, measures Annexin V and PI per cell, gates from the vehicle
    wells, aggregates wells, computes plate QC, fits dose-response curves and writes a report:
      OUT/cells.parquet  OUT/fields.csv  OUT/wells.csv  OUT/plate_qc.csv  OUT/gates.json
      OUT/fits.csv       OUT/report.html OUT/settings_used.toml  OUT/outputs.json  OUT/run.json
    Several plates: each gets OUT/plates/NAME/ (gated on its own vehicle wells), and OUT holds
    wells.csv and fits.csv of all plates, the pooled fits (plate 'pooled'), experiment.csv
    (between-plate pIC50 mean ± SD) and a summary report.html.
    Finished fields are kept as they finish; rerun the same command to resume (a field whose
    images changed is analysed again). A Zarr input plate is only read: labels go to
    OUT/labels.zarr unless --write-labels. --scheduler sync runs everything in this process.
    Exit status 3 means the run finished but some fields failed (fields.csv, column 'error').
    """
    from screenlib.cli import EXIT_PARTIAL

    quiet = bool((ctx.obj or {}).get("quiet"))
    settings = load_settings(settings_path)
    if experiment_file is not None or len(plates) > 1:
        summary = _run_experiment(
            plates, platemaps, experiment_file, out_dir, settings, scheduler, n_workers,
            recompute, quiet, no_report,
        )  # fmt: skip
    else:
        if not plates or len(platemaps) != 1:
            raise click.UsageError(
                "give one PLATE and one --platemap, several plates, or --experiment FILE"
            )
        summary = _run_one(
            plates[0], platemaps[0], out_dir, settings, scheduler, n_workers, recompute,
            quiet, no_report, write_labels, dry_run, overwrite, excel,
        )  # fmt: skip
        if summary is None:
            return
    click.echo(summary.line())
    if "report.html" in summary.outputs:
        click.echo(f"report: {summary.outputs['report.html']}")
    if summary.n_fields_failed:
        raise SystemExit(EXIT_PARTIAL)


def _run_one(
    plate, platemap, out_dir, settings, scheduler, n_workers, recompute, quiet, no_report,
    write_labels, dry_run, overwrite, excel,
):  # fmt: skip
    from screenlib.orchestrate import plan_run, run_plate

    if dry_run:
        plan, _plate, _manifest = plan_run(plate, platemap, out_dir, settings, not quiet, overwrite)
        click.echo(plan.describe())
        return None
    summary = run_plate(
        plate, platemap, out_dir, settings, scheduler=scheduler, n_workers=n_workers,
        force=recompute, progress=not quiet, report=not no_report, write_labels=write_labels,
        overwrite=overwrite, excel=excel,
    )  # fmt: skip
    for failure in summary.failed_fields[:10]:
        click.echo(
            f"field failed: {failure['well']} f{failure['field']} t{failure['timepoint']}: "
            f"{failure['error']}",
            err=True,
        )
    return summary


def _run_experiment(
    plates, platemaps, experiment_file, out_dir, settings, scheduler, n_workers, recompute,
    quiet, no_report,
):  # fmt: skip
    from screenlib.orchestrate.experiment import (
        experiment_plates,
        read_experiment_file,
        run_experiment,
    )

    if experiment_file is not None:
        if plates or platemaps:
            raise click.UsageError("give either --experiment FILE or PLATES with --platemap")
        members = read_experiment_file(experiment_file)
    else:
        if not platemaps:
            raise click.UsageError("several plates need --platemap (one, or one per plate)")
        members = experiment_plates(list(plates), list(platemaps))
    return run_experiment(
        members, out_dir, settings, scheduler=scheduler, n_workers=n_workers, force=recompute,
        progress=not quiet, report=not no_report,
    )  # fmt: skip
