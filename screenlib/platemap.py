"""Plate maps: which sample, compound, concentration and role sits in every well.

A plate map is a CSV file with one row per well. Required columns: ``well`` and ``role``;
optional: ``sample`` (cell line), ``compound``, ``concentration`` (text with a unit such as
``10 uM``, ``1e-5 M``, ``10nM``; or a bare number plus a ``unit`` / ``concentration_unit``
column). Every other column is kept as it is.

Roles are normalised to ``sample``, ``negative_control``, ``positive_control`` and ``empty``
(``vehicle``, ``dmso``, ``neg`` -> ``negative_control``; ``pos`` -> ``positive_control``).
The ``role`` column is required: guessing roles from compound names silently turns a
mislabelled DMSO well into a sample, so a plate map without it is refused with the fix.
Vehicle (negative-control) wells get ``concentration_molar`` 0.0.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path

import pandas as pd

from screenlib.errors import InputError

__all__ = [
    "PlateGeometry",
    "ROLES",
    "geometry_for_wells",
    "normalize_role",
    "normalize_well",
    "parse_concentration",
    "read_platemap",
    "split_well",
]

ROLES = ("sample", "negative_control", "positive_control", "empty")
_ROLE_ALIASES = {
    "sample": "sample",
    "treatment": "sample",
    "treated": "sample",
    "negative_control": "negative_control",
    "negative control": "negative_control",
    "negative": "negative_control",
    "neg": "negative_control",
    "vehicle": "negative_control",
    "dmso": "negative_control",
    "positive_control": "positive_control",
    "positive control": "positive_control",
    "positive": "positive_control",
    "pos": "positive_control",
    "empty": "empty",
    "blank": "empty",
}


def _row_name(index: int) -> str:
    """0-based row index -> letters: 0 -> A, 25 -> Z, 26 -> AA, 31 -> AF."""
    if index < 26:
        return chr(ord("A") + index)
    return chr(ord("A") + index // 26 - 1) + chr(ord("A") + index % 26)


def _row_index(name: str) -> int:
    """Row letters -> 0-based index (inverse of :func:`_row_name`)."""
    name = name.upper()
    if len(name) == 1:
        return ord(name) - ord("A")
    return (ord(name[0]) - ord("A") + 1) * 26 + ord(name[1]) - ord("A")


@dataclass(frozen=True)
class PlateGeometry:
    """Rows and columns of a standard microplate (96, 384 or 1536 wells).

    Examples
    --------
    >>> PlateGeometry.from_size(384).row_names[-1]
    'P'
    >>> PlateGeometry.from_size(96).contains("H12")
    True
    """

    n_rows: int
    n_columns: int

    @classmethod
    def from_size(cls, n_wells: int) -> PlateGeometry:
        """Geometry of a 96-, 384- or 1536-well plate."""
        sizes = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
        if n_wells not in sizes:
            raise InputError(f"unknown plate size {n_wells} wells; use 96, 384 or 1536")
        return cls(*sizes[n_wells])

    @property
    def n_wells(self) -> int:
        """Number of wells."""
        return self.n_rows * self.n_columns

    @cached_property
    def row_names(self) -> list[str]:
        """Row letters, ``["A", ..., "H"]`` for 96 wells."""
        return [_row_name(i) for i in range(self.n_rows)]

    @cached_property
    def column_names(self) -> list[str]:
        """Column numbers as text, ``["1", ..., "12"]`` for 96 wells."""
        return [str(i + 1) for i in range(self.n_columns)]

    def contains(self, well: str) -> bool:
        """Whether a well name (``A1`` or ``A01``) lies on this plate."""
        row, column = split_well(well)
        return _row_index(row) < self.n_rows and 1 <= column <= self.n_columns

    def wells(self) -> list[str]:
        """All wells in row-major order, ``A01`` form."""
        return [f"{r}{c:02d}" for r in self.row_names for c in range(1, self.n_columns + 1)]


_WELL_RE = re.compile(r"^\s*([A-Za-z]{1,2})\s*0*(\d{1,3})\s*$")


def split_well(well: str) -> tuple[str, int]:
    """Split a well name into row letters and 1-based column: ``"b7"`` -> ``("B", 7)``.

    Raises
    ------
    InputError
        When the text is not a well name.
    """
    match = _WELL_RE.match(str(well))
    if match is None:
        raise InputError(
            f"malformed well {well!r}: expected row letter(s) and column number like A1 or A01"
        )
    row, column = match.group(1).upper(), int(match.group(2))
    if column < 1 or (len(row) == 2 and _row_index(row) >= 32):
        raise InputError(f"malformed well {well!r}: column must be >= 1 and rows A..AF")
    return row, column


def normalize_well(well: str, geometry: PlateGeometry | None = None) -> str:
    """Return the canonical ``A01`` form of a well name (``A1``, ``a01``, ``A001`` accepted).

    Examples
    --------
    >>> normalize_well("a1")
    'A01'
    >>> normalize_well("AF48")
    'AF48'
    """
    row, column = split_well(well)
    if geometry is not None and not geometry.contains(f"{row}{column}"):
        raise InputError(
            f"well {well!r} is outside a {geometry.n_wells}-well plate "
            f"(rows A..{geometry.row_names[-1]}, columns 1..{geometry.n_columns})"
        )
    if column > 99:
        raise InputError(f"malformed well {well!r}: column {column} is larger than any plate's")
    return f"{row}{column:02d}"


def geometry_for_wells(wells: list[str]) -> PlateGeometry:
    """The smallest standard plate (96, 384, 1536) that holds every well."""
    for size in (96, 384, 1536):
        geometry = PlateGeometry.from_size(size)
        if all(geometry.contains(w) for w in wells):
            return geometry
    raise InputError(f"wells {wells[:3]}... do not fit on a 1536-well plate")


# unit -> power of ten of mol/L (exact decimal arithmetic: "2.5 uM" is 2.5e-06, not ...98e-06)
_UNIT_EXPONENTS = {"m": 0, "mm": -3, "um": -6, "nm": -9, "pm": -12, "fm": -15}
_CONCENTRATION_RE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def _unit_exponent(unit: str) -> int:
    key = unit.strip().replace("µ", "u").replace("μ", "u").replace("mol/l", "m")
    key = key.replace("mol/L", "m").lower()
    if key.endswith("molar") and key != "molar":
        key = key[: -len("molar")] + "m"
    elif key == "molar":
        key = "m"
    if key not in _UNIT_EXPONENTS:
        raise InputError(f"unknown concentration unit {unit!r}: use M, mM, uM (µM), nM or pM")
    return _UNIT_EXPONENTS[key]


def parse_concentration(text: str | float | int | None, unit: str | None = None) -> float:
    """Parse a concentration to molar: ``"10 uM"`` -> ``1e-05``.

    Parameters
    ----------
    text
        ``"10 uM"``, ``"10 µM"``, ``"1e-5 M"``, ``"10nM"`` or a bare number (then ``unit``
        is required). Empty text or None gives NaN (no compound).
    unit
        Unit for a bare number (``"nM"``, ``"uM"``, ...).

    Returns
    -------
    float
        Concentration in mol/L.

    Raises
    ------
    InputError
        Unparseable text, unknown unit, a bare number without a unit, a negative or
        non-finite value, or two different units.

    Examples
    --------
    >>> parse_concentration("10 nM")
    1e-08
    >>> parse_concentration("2.5", unit="uM")
    2.5e-06
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan
    if isinstance(text, int | float):
        value_text, unit_in_text = repr(float(text)), ""
    else:
        raw = str(text).replace("µ", "u").replace("μ", "u").replace("mol/L", "M")
        raw = raw.replace("mol/l", "M")
        if raw.strip() == "":
            return math.nan
        match = _CONCENTRATION_RE.match(raw)
        if match is None:
            raise InputError(
                f"cannot parse concentration {text!r}: write a number and a unit like '10 uM'"
            )
        value_text, unit_in_text = match.group(1), match.group(2)
    unit_given = "" if unit is None or str(unit).strip() in ("", "nan") else str(unit)
    if unit_in_text and unit_given and _unit_exponent(unit_in_text) != _unit_exponent(unit_given):
        raise InputError(
            f"concentration {text!r} has unit {unit_in_text!r} but the unit column says "
            f"{unit_given!r}; keep one of them"
        )
    unit_used = unit_in_text or unit_given
    if not unit_used:
        raise InputError(
            f"concentration {text!r} has no unit: write e.g. '{value_text} uM' or add a "
            "'unit' column"
        )
    try:
        value = float(Decimal(value_text).scaleb(_unit_exponent(unit_used)))
    except ArithmeticError:  # decimal overflow of absurd exponents
        value = math.inf
    if not math.isfinite(value):
        raise InputError(f"concentration {text!r} is not a finite number")
    if value < 0:
        raise InputError(f"concentration {text!r} is negative")
    return value


def normalize_role(role: str) -> str:
    """Map a role alias (``vehicle``, ``DMSO``, ``pos``...) to its canonical name."""
    key = re.sub(r"[\s\-]+", "_", str(role).strip().lower())
    key = _ROLE_ALIASES.get(key, _ROLE_ALIASES.get(key.replace("_", " "), None))
    if key is None:
        raise InputError(
            f"unknown role {role!r}: use sample, negative_control (vehicle, dmso, neg), "
            "positive_control (pos) or empty"
        )
    return key


def read_platemap(path: str | Path, geometry: PlateGeometry | int | None = None) -> pd.DataFrame:
    """Read a plate-map CSV into one row per well.

    Parameters
    ----------
    path
        CSV file with columns ``well``, ``role`` and optionally ``sample``, ``compound``,
        ``concentration`` (with unit) and ``unit`` / ``concentration_unit``.
    geometry
        Plate geometry (or its size: 96, 384, 1536) that every well must lie on; None
        picks the smallest standard plate holding all wells.

    Returns
    -------
    pandas.DataFrame
        Columns ``well``, ``row``, ``column``, ``sample``, ``compound``,
        ``concentration_molar``, ``role`` followed by the file's other columns.

    Raises
    ------
    InputError
        Naming the file, line and column of a malformed or unknown well, a duplicate well,
        an unparseable unit, a negative concentration or an unknown role.
    """
    path = Path(path)
    if isinstance(geometry, int):
        geometry = PlateGeometry.from_size(geometry)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except OSError as error:
        raise InputError(f"cannot read plate map {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InputError(f"plate map {path} is not UTF-8 text; save it as CSV (UTF-8)") from error
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = [row for row in reader]
    if not rows:
        raise InputError(f"plate map {path} is empty; it needs a header with 'well' and 'role'")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if len(set(lower)) != len(lower):
        duplicated = sorted({h for h in lower if lower.count(h) > 1})
        raise InputError(f"{path}: line 1: duplicate column(s) {duplicated}")
    for required in ("well", "role"):
        if required not in lower:
            raise InputError(
                f"{path}: line 1: missing column '{required}' (header: {header}); add it — "
                "roles are sample, negative_control (vehicle), positive_control or empty"
            )
    col = {name: lower.index(name) for name in lower}
    unit_column = next((c for c in ("concentration_unit", "unit") if c in col), None)
    concentration_column = next(
        (c for c in ("concentration", "concentration_molar", "conc", "dose") if c in col), None
    )
    reserved = {"well", "role", "sample", "compound", "row", "column"}
    reserved |= {unit_column, concentration_column} - {None}
    extras = [h for h, low in zip(header, lower, strict=True) if low not in reserved]

    records: list[dict] = []
    seen: dict[str, int] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(
                f"{path}: line {line_number}: {len(row)} fields but the header has {len(header)}"
            )

        def cell(name: str, row: list[str] = row) -> str:
            return row[col[name]].strip()

        def fail(column: str, message: str, line_number: int = line_number) -> InputError:
            return InputError(f"{path}: line {line_number}, column '{column}': {message}")

        try:
            well = normalize_well(cell("well"), geometry or PlateGeometry.from_size(1536))
        except InputError as error:
            raise fail("well", str(error)) from None
        if well in seen:
            raise fail("well", f"duplicate well {well} (first on line {seen[well]})")
        seen[well] = line_number
        try:
            role = normalize_role(cell("role"))
        except InputError as error:
            raise fail("role", str(error)) from None
        concentration = math.nan
        if concentration_column is not None:
            unit = cell(unit_column) if unit_column else None
            raw = cell(concentration_column)
            try:
                if concentration_column == "concentration_molar" and not unit:
                    unit = "M"
                concentration = parse_concentration(raw, unit)
            except InputError as error:
                raise fail(concentration_column, str(error)) from None
        if role == "negative_control":
            if concentration == concentration and concentration != 0.0:
                raise fail(
                    concentration_column or "concentration",
                    f"vehicle well {well} has concentration {cell(concentration_column)}; "
                    "give it 0 or leave it empty",
                )
            concentration = 0.0
        row_letters, column_number = split_well(well)
        record = {
            "well": well,
            "row": row_letters,
            "column": column_number,
            "sample": cell("sample") if "sample" in col else "",
            "compound": cell("compound") if "compound" in col else "",
            "concentration_molar": concentration,
            "role": role,
        }
        for name in extras:
            record[name] = row[header.index(name)].strip()
        records.append(record)
    if not records:
        raise InputError(f"plate map {path} has a header but no wells")
    if geometry is None:
        geometry_for_wells([r["well"] for r in records])
    table = pd.DataFrame.from_records(records)
    table["column"] = table["column"].astype(int)
    table["concentration_molar"] = table["concentration_molar"].astype(float)
    return table
