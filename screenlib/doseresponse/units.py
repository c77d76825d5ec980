"""Concentrations for people: molar values written in the unit a biologist would use.

One function formats every concentration that a table or the report shows as text
(``format_concentration(6.309e-08) == "63.1 nM"``); tables keep numbers in molar
(``*_molar`` columns) and, in the short ``fits.csv``, in one named unit per row.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["UNIT_FACTORS", "choose_unit", "format_concentration", "molar_to_unit"]

# molar per unit, largest first
UNIT_FACTORS = {"M": 1.0, "mM": 1e-3, "µM": 1e-6, "nM": 1e-9, "pM": 1e-12, "fM": 1e-15}
_ALIASES = {"uM": "µM", "μM": "µM", "mol/L": "M"}  # spellings of the same unit


def _unit_name(unit: str) -> str:
    name = _ALIASES.get(unit.strip(), unit.strip())
    if name not in UNIT_FACTORS:
        known = ", ".join(UNIT_FACTORS)
        raise ValueError(f"unknown concentration unit {unit!r}; use one of {known}")
    return name


def format_concentration(molar: float, unit: str | None = None, digits: int = 3) -> str:
    """``molar`` as text with ``digits`` significant digits, in ``unit`` or the natural one.

    Examples
    --------
    >>> format_concentration(6.309e-08), format_concentration(1.5e-6), format_concentration(0.0)
    ('63.1 nM', '1.5 µM', '0')
    >>> format_concentration(6.309e-08, "µM"), format_concentration(float("nan"))
    ('0.0631 µM', 'n/a')
    """
    if molar is None or not math.isfinite(molar):
        return "n/a"
    if molar == 0:
        return "0"
    if unit is None:
        unit = next(
            (name for name, factor in UNIT_FACTORS.items() if abs(molar) >= factor * 0.9995),
            "fM",
        )
    unit = _unit_name(unit)
    return f"{molar / UNIT_FACTORS[unit]:.{digits}g} {unit}"


def choose_unit(molar_values) -> str:
    """The unit in which the geometric middle of positive, finite concentrations lies in
    [1, 1000) (``"nM"`` for a 0.5 nM to 10 µM dilution series; ``"M"`` when there are none).

    Examples
    --------
    >>> choose_unit([5e-10, 1e-8, 1e-5])
    'nM'
    """
    values = np.asarray(molar_values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return "M"
    middle = 10.0 ** ((np.log10(values.min()) + np.log10(values.max())) / 2)
    return next((n for n, f in UNIT_FACTORS.items() if middle >= f * 0.9995), "fM")


def molar_to_unit(molar, unit: str):
    """Molar value(s) expressed in ``unit`` (``molar_to_unit(6.3e-8, "nM") == 63.0``)."""
    return np.asarray(molar, dtype=float) / UNIT_FACTORS[_unit_name(unit)]
