"""Values as people write them: concentrations with units, role words, vehicle annotations."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from screenlib.errors import InputError

__all__ = [
    "ROLES",
    "VEHICLE_COMPOUNDS",
    "is_role_word",
    "molar_unit",
    "normalize_role",
    "parse_concentration",
]

ROLES = ("sample", "negative_control", "positive_control", "empty")

# role words, compared after lower-casing and turning spaces, '-' and '.' into '_'
_ROLE_ALIASES = {
    **dict.fromkeys(
        (
            "sample", "samples", "treatment", "treated", "test", "drug", "compound",
            "experimental", "unknown",
        ),
        "sample",
    ),
    **dict.fromkeys(
        (
            "negative_control", "negative", "neg", "neg_control", "neg_ctrl", "negative_ctrl",
            "vehicle", "vehicle_control", "dmso", "dmso_control", "solvent", "solvent_control",
        ),
        "negative_control",
    ),
    **dict.fromkeys(
        (
            "positive_control", "positive", "pos", "pos_control", "pos_ctrl", "positive_ctrl",
        ),
        "positive_control",
    ),
    **dict.fromkeys(
        ("empty", "blank", "unused", "no_cells", "medium_only", "media_only"), "empty"
    ),
}  # fmt: skip

# compound names that mean "vehicle" when a plate map has no role for the well
VEHICLE_COMPOUNDS = frozenset({"dmso", "vehicle", "solvent", "vehicle_control", "dmso_control"})


def _role_key(text: str) -> str:
    """``"Vehicle (DMSO)"`` -> ``"vehicle"``; ``"neg. control"`` -> ``"neg_control"``."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", str(text))
    return re.sub(r"[\s\-.]+", "_", text.strip().lower()).strip("_")


def is_role_word(text: str) -> bool:
    """Whether ``text`` is one of the role words :func:`normalize_role` understands."""
    return _role_key(text) in _ROLE_ALIASES


def normalize_role(role: str) -> str:
    """Map a role word to its canonical name.

    ``vehicle``, ``DMSO``, ``neg``, ``negative control`` -> ``negative_control``; ``pos`` ->
    ``positive_control``; ``treatment``, ``test`` -> ``sample``; ``blank``, ``unused`` ->
    ``empty``. A bare ``control`` is refused: it does not say which control.

    Examples
    --------
    >>> normalize_role("Negative Control")
    'negative_control'
    """
    key = _ROLE_ALIASES.get(_role_key(role))
    if key is None:
        raise InputError(
            f"unknown role {role!r}: use sample, negative_control (vehicle, dmso, neg), "
            "positive_control (pos) or empty"
        )
    return key


# unit -> power of ten of mol/L (exact decimal arithmetic: "2.5 uM" is 2.5e-06, not ...98e-06)
_UNIT_EXPONENTS = {"m": 0, "mm": -3, "um": -6, "nm": -9, "pm": -12, "fm": -15}
_PREFIX_WORDS = {"milli": "m", "micro": "u", "nano": "n", "pico": "p", "femto": "f"}
_CONCENTRATION_RE = re.compile(
    r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z][A-Za-z/]*)?\s*$"
)


def molar_unit(unit: str) -> int | None:
    """Power of ten of mol/L for a unit (``nM`` -> -9, ``micromolar`` -> -6), None if unknown.

    Accepts M, mM, uM, µM, μM, nM, pM, fM, the words (``nanomolar``) and ``mol/L`` forms
    (``µmol/L``).
    """
    key = re.sub(r"\s+", "", str(unit)).replace("µ", "u").replace("μ", "u").lower()
    for word, prefix in _PREFIX_WORDS.items():
        if key.startswith(word):
            key = prefix + key[len(word) :]
    if key.endswith("mol/l"):
        key = key[: -len("mol/l")] + "m"
    elif key.endswith("molar"):
        key = key[: -len("molar")] + "m"
    return _UNIT_EXPONENTS.get(key)


def _unit_exponent(unit: str) -> int:
    exponent = molar_unit(unit)
    if exponent is None:
        raise InputError(f"unknown concentration unit {unit!r}: use M, mM, uM (µM), nM or pM")
    return exponent


def parse_concentration(text: str | float | int | None, unit: str | None = None) -> float:
    """Parse a concentration to molar: ``"10 uM"`` -> ``1e-05``.

    Parameters
    ----------
    text
        ``"10 uM"``, ``"10 µM"``, ``"10 micromolar"``, ``"1e-5 M"``, ``"10nM"``,
        ``"10 µmol/L"`` or a bare number (then ``unit`` is required). Empty text or None
        gives NaN (no compound).
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
        if str(text).strip() == "":
            return math.nan
        match = _CONCENTRATION_RE.match(str(text).replace("µ", "u").replace("μ", "u"))
        if match is None:
            raise InputError(
                f"cannot parse concentration {text!r}: write a number and a unit like '10 uM'"
            )
        value_text, unit_in_text = match.group(1), match.group(2) or ""
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
