"""MTT / plate-reader input: absorbance (570 nm) -> % viability -> the same 4PL fitter.

Plate readers export a grid (row letters down, column numbers across), often below a few lines
of instrument header; some export long form (``well`` + a value column). Blank wells (role
``empty``/``blank`` in the plate map: medium without cells) give the background; vehicle wells
(``negative_control``) of the same sample define 100 % viability.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from screenlib.doseresponse.table import fit_table
from screenlib.errors import InputError

__all__ = ["absorbance_to_viability", "fit_mtt", "mtt_viability", "read_absorbance"]

_ROW_LABEL = re.compile(r"^[A-Za-z]{1,2}$")
_VALUE_COLUMNS = ("absorbance", "od", "od570", "a570", "570", "value", "signal")


def _number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ".")) if text.strip() else None
    except ValueError:
        return None


def _split(line: str) -> list[str]:
    for delimiter in ("\t", ";", ","):
        if delimiter in line:
            return next(csv.reader([line], delimiter=delimiter))
    return line.split()


def _read_grid(lines: list[str], source: str) -> pd.DataFrame | None:
    """The first absorbance grid in ``lines`` as long form, or None when there is none."""
    for start, line in enumerate(lines):
        cells = [c.strip() for c in _split(line)]
        # a corner label ("<>", "Plate 1") may precede the column numbers
        first = 1 if cells and not cells[0].isdigit() else 0
        numbers = [c for c in cells[first:] if c]
        if len(numbers) < 2 or not all(c.isdigit() for c in numbers):
            continue
        columns = [int(c) for c in numbers]
        if columns != list(range(1, len(columns) + 1)):
            continue
        records = []
        for offset, row_line in enumerate(lines[start + 1 :], start=start + 2):
            row_cells = [c.strip() for c in _split(row_line)]
            if not row_cells or not _ROW_LABEL.match(row_cells[0] if row_cells else ""):
                break
            label = row_cells[0].upper()
            values = row_cells[first : first + len(columns)]
            for column, text in zip(columns, values, strict=False):
                value = _number(text)
                if value is None and text.strip() not in ("", "NaN", "nan", "-"):
                    raise InputError(
                        f"{source}, line {offset}: well {label}{column:02d} holds {text!r}, "
                        "not an absorbance; fix or blank that cell"
                    )
                records.append((f"{label}{column:02d}", np.nan if value is None else value))
        if records:
            return pd.DataFrame(records, columns=["well", "absorbance"])
    return None


def read_absorbance(path: str | Path) -> pd.DataFrame:
    """Read plate-reader absorbances (grid with optional header lines, or long form).

    Returns
    -------
    DataFrame
        ``well`` (``"A01"`` form) and ``absorbance``.

    Examples
    --------
    >>> import tempfile, os
    >>> text = "Reader: X\\nWavelength: 570\\n,1,2\\nA,0.9,0.5\\nB,0.05,0.06\\n"
    >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    ...     _ = f.write(text)
    >>> read_absorbance(f.name)["well"].tolist()
    ['A01', 'A02', 'B01', 'B02']
    >>> os.unlink(f.name)
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as error:
        raise InputError(f"cannot read absorbance file {path}: {error.strerror}") from error
    lines = text.splitlines()
    grid = _read_grid(lines, str(path))
    if grid is not None:
        return grid
    try:
        table = pd.read_csv(io.StringIO(text), sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: neither a plate grid nor a table: {error}") from error
    lowered = {str(c).strip().lower(): c for c in table.columns}
    well_column = lowered.get("well")
    value_column = next((lowered[k] for k in _VALUE_COLUMNS if k in lowered), None)
    if well_column is None or value_column is None:
        raise InputError(
            f"{path}: no plate grid (a header line 1, 2, 3 ... then rows A, B, ...) and no "
            f"'well' + absorbance column (one of {', '.join(_VALUE_COLUMNS)}) found"
        )
    from screenlib.platemap import normalize_well

    return pd.DataFrame(
        {
            "well": [normalize_well(str(w)) for w in table[well_column]],
            "absorbance": pd.to_numeric(table[value_column], errors="coerce"),
        }
    )


def absorbance_to_viability(absorbance: pd.DataFrame, layout: pd.DataFrame) -> pd.DataFrame:
    """Percent viability of every well: 100 * (A - blank) / (vehicle - blank).

    Parameters
    ----------
    absorbance
        ``well`` and ``absorbance`` (from :func:`read_absorbance`).
    layout
        Plate map (``read_platemap``): ``well``, ``role``, ``sample``, ``compound``,
        ``concentration_molar``. Blanks are role ``empty`` (``blank`` in the file).

    Returns
    -------
    DataFrame
        The layout's wells that have an absorbance, with ``absorbance``, ``response`` (%
        viability), ``readout`` = ``"viability_percent"``.
    """
    for column in ("well", "role", "concentration_molar"):
        if column not in layout.columns:
            raise InputError(f"MTT layout lacks column '{column}'")
    merged = layout.merge(absorbance, on="well", how="left")
    missing = merged["absorbance"].isna() & (merged["role"] != "empty")
    if missing.all():
        raise InputError("no layout well has an absorbance value: do the well names match?")
    if "sample" not in merged.columns:
        merged["sample"] = ""
    blanks = merged.loc[merged["role"] == "empty", "absorbance"].dropna()
    if blanks.empty:
        raise InputError(
            "MTT layout has no blank wells (role 'blank' or 'empty', medium without cells); "
            "add them so the background can be subtracted"
        )
    blank = float(blanks.mean())
    vehicle = merged[merged["role"] == "negative_control"].groupby("sample")["absorbance"].mean()
    if vehicle.empty:
        raise InputError("MTT layout has no vehicle wells (role 'negative_control' / 'vehicle')")
    reference = merged["sample"].map(vehicle)
    reference = reference.fillna(
        float(merged.loc[merged["role"] == "negative_control", "absorbance"].mean())
    )
    merged["response"] = 100.0 * (merged["absorbance"] - blank) / (reference - blank)
    merged["readout"] = "viability_percent"
    return merged[merged["role"].isin(["sample", "negative_control"])].reset_index(drop=True)


def fit_mtt(absorbance_path, layout, settings=None) -> pd.DataFrame:
    """Read an MTT plate, convert to % viability and fit one curve per sample x compound.

    ``layout`` is a plate-map path or an already-read plate map DataFrame.
    """
    return fit_table(mtt_viability(absorbance_path, layout), settings, direction="decreasing")


def mtt_viability(absorbance_path, layout) -> pd.DataFrame:
    """The normalised per-well % viability of an MTT plate (what :func:`fit_mtt` fits)."""
    if not isinstance(layout, pd.DataFrame):
        from screenlib.platemap import read_platemap

        layout = read_platemap(layout)
    return absorbance_to_viability(read_absorbance(absorbance_path), layout)
