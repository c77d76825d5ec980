"""Wells and plate geometries: ``A1`` / ``a01`` / ``A001`` -> ``A01``, 96/384/1536 plates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from screenlib.errors import InputError

__all__ = ["PlateGeometry", "geometry_for_wells", "normalize_well", "split_well"]


def _row_name(index: int) -> str:
    """0-based row index -> letters: 0 -> A, 25 -> Z, 26 -> AA, 31 -> AF."""
    if index < 26:
        return chr(ord("A") + index)
    return chr(ord("A") + index // 26 - 1) + chr(ord("A") + index % 26)


def row_index(name: str) -> int:
    """Row letters -> 0-based index (inverse of :func:`_row_name`): ``"A"`` -> 0, ``"AA"`` -> 26."""
    name = str(name).upper()
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
        return row_index(row) < self.n_rows and 1 <= column <= self.n_columns

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
    if column < 1 or (len(row) == 2 and row_index(row) >= 32):
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
