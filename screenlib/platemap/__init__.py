"""Plate maps: which sample, compound, concentration and role sits in every well.

``read_platemap`` reads a plate map as labs write it -- CSV (comma, semicolon or tab, UTF-8 or
Windows-1252, decimal commas), ``.xlsx`` or plate-layout grids -- through a vocabulary of
header names (``cell line`` -> sample, ``drug`` -> compound, ``dose [µM]`` -> concentration,
...); ``describe_platemap`` prints how it was read, the plate and the curves it defines. The
vocabulary and the rules are in ``docs/platemaps.md``.

Roles are normalised to ``sample``, ``negative_control``, ``positive_control`` and ``empty``.
Vehicle (negative-control) wells get ``concentration_molar`` 0.0.
"""

from screenlib.platemap._describe import describe_platemap
from screenlib.platemap._reader import KNOWN_COLUMNS, read_dose_table, read_platemap
from screenlib.platemap._values import ROLES, normalize_role, parse_concentration
from screenlib.platemap._vocabulary import FIELD_ALIASES, is_output_column, read_header
from screenlib.platemap._wells import (
    PlateGeometry,
    geometry_for_wells,
    normalize_well,
    row_index,
    split_well,
)

__all__ = [
    "FIELD_ALIASES",
    "KNOWN_COLUMNS",
    "ROLES",
    "PlateGeometry",
    "describe_platemap",
    "geometry_for_wells",
    "is_output_column",
    "normalize_role",
    "normalize_well",
    "parse_concentration",
    "read_dose_table",
    "read_header",
    "read_platemap",
    "row_index",
    "split_well",
]
