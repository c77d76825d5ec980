"""The plate-map vocabulary: which header names which field, and which names outputs own.

Headers are compared case-, space- and punctuation-insensitively (``Cell line``,
``cell_line``, ``CellLine`` and ``cell-line`` are one name). A concentration header may carry
its unit: ``concentration (nM)``, ``dose [µM]``, ``conc_uM``, ``Conc. in nM``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from screenlib.platemap._values import molar_unit

__all__ = [
    "AMBIGUOUS_ROLE_HEADERS",
    "ANNOTATION_HEADERS",
    "FIELD_ALIASES",
    "HeaderMeaning",
    "is_output_column",
    "read_header",
]

# field -> compact header names (lower case, letters and digits only)
FIELD_ALIASES: dict[str, frozenset[str]] = {
    "well": frozenset({"well", "wells", "wellid", "wellname", "position", "wellposition"}),
    "sample": frozenset(
        {
            "sample", "samplename", "cellline", "celllines", "celllinename", "celllineid",
            "celltype",
            "line", "cells", "cell",
        }
    ),
    "compound": frozenset(
        {
            "compound", "compounds", "compoundname", "drug", "drugs", "drugname",
            "treatment", "agent", "substance",
        }
    ),
    "concentration": frozenset(
        {
            "concentration", "conc", "dose", "finalconcentration", "finalconc",
            "concentrationmolar", "compoundconcentration", "compoundconc", "drugconcentration",
            "drugconc", "drugdose",
        }
    ),
    "unit": frozenset(
        {
            "unit", "units", "concentrationunit", "concentrationunits", "concunit", "concunits",
            "doseunit", "doseunits",
        }
    ),
    "role": frozenset({"role", "type", "welltype", "wellrole", "control", "controltype"}),
    "replicate": frozenset(
        {
            "replicate", "replicates", "rep", "replicateid", "replicatenumber", "replicateno",
            "repno", "biologicalreplicate", "technicalreplicate", "biorep", "techrep",
        }
    ),
    "plate": frozenset({"plate", "plateid", "platename", "platebarcode", "barcode", "platenumber"}),
    "timepoint": frozenset({"timepoint", "time", "timepoints", "duration", "treatmenttime"}),
}  # fmt: skip
# headers that name the role only when every value is a role word (else: see below)
AMBIGUOUS_ROLE_HEADERS = frozenset({"type", "control", "controltype", "treatment"})
# free-text notes: carried into the outputs, never split curves
ANNOTATION_HEADERS = frozenset(
    {"note", "notes", "comment", "comments", "remark", "remarks", "description"}
)

# names the engine writes into wells.csv / fits.csv; a plate-map column of that name is renamed
_OUTPUT_NAMES = frozenset(
    {
        "well", "row", "column", "timepoint", "sample", "compound", "concentration",
        "concentration_unit", "concentration_molar", "role", "plate", "replicate", "readout",
        "response", "direction", "model", "flags", "notes", "qc_flags", "cells_per_field",
        "relative_cell_count", "fields_excluded_reasons", "top", "bottom", "hill",
        "hill_slope", "emax", "auc", "auc_normalized", "rss", "deviance", "dispersion",
        "confident", "starts_agreed", "e0", "e_inf", "ci_method", "lowest_dose_molar",
        "top_dose_molar", "residual_std_error", "f_test_p_value", "absolute_level",
        "response_at_zero_dose", "response_at_infinite_dose", "viability", "viability_percent",
        "map_timepoint", "curve_split_by", "vehicle_reference_excluded",
    }
)  # fmt: skip
_OUTPUT_PREFIXES = re.compile(
    r"^(n_|fraction_|mean_|apoptotic_fraction|ic50|log_ic50|pic50|absolute_ic50|outlier|"
    r"gr_|gr50|n_starts)"
)


def is_output_column(name: str) -> bool:
    """Whether ``wells.csv`` or ``fits.csv`` may write a column of this name."""
    return name in _OUTPUT_NAMES or bool(_OUTPUT_PREFIXES.match(name))


def compact(text: str) -> str:
    """``"Cell line"`` -> ``"cellline"``: lower case, µ -> u, letters and digits only."""
    text = str(text).replace("µ", "u").replace("μ", "u").lower()
    return re.sub(r"[^a-z0-9%]", "", text)


@dataclass(frozen=True)
class HeaderMeaning:
    """How one header was read: the field (None: kept as its own column) and a unit."""

    header: str
    field: str | None
    unit: str | None = None  # concentration unit written in the header ("nM")
    how: str = ""


_BRACKETED = re.compile(r"^(?P<base>.*?)[\s_\-,./]*[(\[]\s*(?P<unit>[^)\]]*?)\s*[)\]]\s*$")
_TRAILING = re.compile(r"^(?P<base>.*?)[\s_\-,./]+(?:in\s+)?(?P<unit>[a-zµμ/%]+)\s*$", re.I)


def _split_unit(header: str) -> tuple[str, str] | None:
    """``"dose [µM]"`` -> ``("dose", "µM")``; None when the header carries no unit."""
    for pattern in (_BRACKETED, _TRAILING):
        match = pattern.match(header.strip())
        if match and match.group("base").strip():
            return match.group("base"), match.group("unit")
    return None


def read_header(header: str) -> HeaderMeaning:
    """Which field a header names.

    Examples
    --------
    >>> meaning = read_header("Concentration (nM)")
    >>> meaning.field, meaning.unit
    ('concentration', 'nM')
    >>> read_header("conc_uM").unit
    'uM'
    >>> read_header("Cell line").field
    'sample'
    """
    key = compact(header)
    if key == "concentrationmolar":
        return HeaderMeaning(header, "concentration", "M", "alias")
    for field, aliases in FIELD_ALIASES.items():
        if key in aliases:
            return HeaderMeaning(header, field, None, "alias")
    split = _split_unit(header)
    if split is not None:
        base, unit = compact(split[0]), split[1].strip()
        if base in FIELD_ALIASES["concentration"] and molar_unit(unit) is not None:
            return HeaderMeaning(header, "concentration", unit, "alias, unit in the header")
        if base in FIELD_ALIASES["timepoint"]:
            return HeaderMeaning(header, "timepoint", None, f"alias ({unit})")
    return HeaderMeaning(header, None, None, "")
