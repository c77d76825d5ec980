"""``screenlib fit``: dose-response curves from a tidy table, ``wells.csv`` or an MTT plate."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from screenlib.errors import InputError


def _read_table(path: Path) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError(
            f"{path} is empty; give a table with a header row (sample, compound, "
            "concentration_molar, response)"
        )
    if path.suffix.lower() not in (".parquet", ".pq"):
        from screenlib.platemap import read_dose_table

        # the plate map's vocabulary and formats: headers as labs write them, CSV in any
        # dialect and encoding, .xlsx
        return read_dose_table(path)
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read table {path}: {error}") from None


def _check_numeric(data: pd.DataFrame, path: Path) -> None:
    """Refuse text in a numeric column (e.g. '10 nM' in concentration_molar): coercing it to
    NaN would drop the row silently."""
    for column in ("concentration_molar", "response", "n_positive", "n_total"):
        if column not in data.columns:
            continue
        raw = data[column]
        text = raw.astype(str).str.strip()
        bad = raw.notna() & (text != "") & pd.to_numeric(raw, errors="coerce").isna()
        if bad.any():
            position = int(bad.to_numpy().nonzero()[0][0])
            raise InputError(
                f"{path}: line {position + 2}, column '{column}': {raw.iloc[position]!r} is not "
                "a number; write plain numbers (concentration_molar in mol/L: 1e-08 for 10 nM)"
            )


@click.command()
@click.argument("table", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the short table, one row per curve (CSV). Written beside it: "
    "OUT_full.parquet (every column), OUT_curves.png/.svg, OUT.html and, with --mtt, "
    "OUT_viability.csv.",
)
@click.option(
    "--mtt",
    is_flag=True,
    help="TABLE is plate-reader absorbance (grid or long form); needs --layout.",
)
@click.option(
    "--layout",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Plate map of the MTT plate (blank wells: role 'blank'; vehicle: 'vehicle').",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Assay settings TOML; its [fit] section is used.",
)
def command(
    table: Path, out_path: Path, mtt: bool, layout: Path | None, settings_path: Path | None
) -> None:
    """Fit 4PL dose-response curves and write IC50s, intervals, flags and curve figures.

    \b
    TABLE (CSV, TSV, .xlsx or .parquet) is one of
      * a tidy table: sample, compound, concentration_molar and response
        (or n_positive + n_total for fractions fitted on counts), optional readout,
        role (positive_control wells give incomplete curves their full effect) and unit;
      * a wells.csv from `screenlib run` (apoptotic_fraction, relative_cell_count);
      * with --mtt, plate-reader absorbance at 570 nm plus --layout.
    """
    from screenlib.cli._fit_outputs import write_fit_outputs
    from screenlib.doseresponse.columns import split_fit_columns
    from screenlib.doseresponse.mtt import mtt_viability
    from screenlib.doseresponse.table import fit_table, fit_wells
    from screenlib.doseresponse.units import choose_unit
    from screenlib.settings import load_settings

    settings = load_settings(settings_path)
    viabilities = None
    if mtt:
        if layout is None:
            raise InputError("--mtt needs --layout PLATEMAP.csv (blank, vehicle and dose wells)")
        viabilities = mtt_viability(table, layout)
        data = viabilities.assign(viability_percent=viabilities["response"])
        fits = fit_table(viabilities, settings, direction="decreasing")
    else:
        data = _read_table(table)
        _check_numeric(data, table)
        columns = set(data.columns)
        if "response" in columns or {"n_positive", "n_total"} <= columns:
            missing = [c for c in ("concentration_molar",) if c not in columns]
            if missing:
                raise InputError(f"{table}: missing column(s) {', '.join(missing)}")
            fits = fit_table(data, settings)
        elif set(settings.fit.responses) & columns:
            fits = fit_wells(data, settings)
        else:
            raise InputError(
                f"{table}: needs columns concentration_molar and response (or n_positive and "
                f"n_total), or a wells.csv with {', '.join(settings.fit.responses)}; "
                f"found: {', '.join(map(str, data.columns))}"
            )
        used = [
            c
            for c in ("concentration_molar", "response", "n_positive", "n_total")
            + tuple(settings.fit.responses)
            if c in columns
        ]
        n_missing = int(data[used].isna().any(axis=1).sum())
        if n_missing:
            click.echo(
                f"note: {n_missing} row(s) of {table} have missing values in "
                f"{', '.join(used)}; dropped from their curves (see the notes column)"
            )
    unit = _map_unit(data)
    if unit is None:
        unit = choose_unit(pd.to_numeric(data["concentration_molar"], errors="coerce"))
    core, full = split_fit_columns(fits, unit=unit)
    written = write_fit_outputs(out_path, core, full, data, unit, viabilities)
    n_flagged = int((fits.get("flags", pd.Series(dtype=str)).fillna("") != "").sum())
    click.echo(f"{len(fits)} curve(s) fitted, {n_flagged} flagged -> {out_path}")
    click.echo("also written: " + ", ".join(str(p) for p in written[1:]))


def _map_unit(data: pd.DataFrame) -> str | None:
    """The concentration unit the input names (a ``unit`` column with one known value)."""
    from screenlib.doseresponse.units import UNIT_FACTORS

    if "unit" not in data.columns:
        return None
    units = set(data["unit"].dropna().astype(str).str.strip()) - {""}
    units = {"µM" if u in ("uM", "μM") else u for u in units}
    return units.pop() if len(units) == 1 and next(iter(units)) in UNIT_FACTORS else None
