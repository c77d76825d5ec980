"""``describe_platemap``: what a plate map says, in text, before a long run."""

from __future__ import annotations

import math
import string

import pandas as pd

from screenlib.platemap._curves import plan_curves
from screenlib.platemap._wells import geometry_for_wells

__all__ = ["describe_platemap", "format_molar"]

_PREFIXES = ((1.0, "M"), (1e-3, "mM"), (1e-6, "µM"), (1e-9, "nM"), (1e-12, "pM"), (1e-15, "fM"))


def format_molar(value: float) -> str:
    """``1e-05`` -> ``'10 µM'``; ``5.08053e-10`` -> ``'508 pM'``.

    Examples
    --------
    >>> format_molar(3.33333e-6)
    '3.33 µM'
    """
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    for scale, unit in _PREFIXES:
        if value >= scale * 0.9995:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} M"


def _codes(names: list[str], alphabet: str) -> dict[str, str]:
    codes = {}
    for i, name in enumerate(names):
        code = alphabet[i % len(alphabet)]
        if i >= len(alphabet):
            code = alphabet[i // len(alphabet) - 1] + code
        codes[name] = code
    return codes


def _picture(wells: dict[str, str], width: int) -> list[str]:
    geometry = geometry_for_wells(list(wells))
    lines = ["    " + "".join(f"{c:>{width}}" for c in geometry.column_names)]
    for row in geometry.row_names:
        cells = [wells.get(f"{row}{c:02d}", "") for c in range(1, geometry.n_columns + 1)]
        lines.append(f"  {row:<2}" + "".join(f"{c:>{width}}" for c in cells))
    return lines


def _plate_pictures(part: pd.DataFrame) -> list[str]:
    """Role and compound per well (dose rank 1 = top dose), then sample per well."""
    dosed = part[(part["role"] == "sample") & (part["concentration_molar"] > 0)]
    compounds = _codes(sorted(dosed["compound"].astype(str).unique()), string.ascii_lowercase)
    ranks = {
        name: {c: i + 1 for i, c in enumerate(sorted(group.unique(), reverse=True))}
        for name, group in dosed.groupby(dosed["compound"].astype(str))["concentration_molar"]
    }
    symbols = {"negative_control": "V", "positive_control": "P", "empty": "."}
    cells = {}
    for row in part.itertuples(index=False):
        compound = str(row.compound)
        rank = ranks.get(compound, {}).get(row.concentration_molar)
        if row.role == "sample" and rank is not None:
            cells[row.well] = f"{compounds[compound]}{rank}"
        else:
            cells[row.well] = symbols.get(row.role, "V")  # zero dose of a sample: vehicle
    lines = ["  role / compound (dose 1 = highest; V vehicle, P positive control, . empty):"]
    lines += _picture(cells, 4)
    for name, code in compounds.items():
        doses = dosed.loc[dosed["compound"].astype(str) == name, "concentration_molar"]
        lines.append(
            f"    {code} = {name}: {doses.nunique()} doses, {format_molar(doses.max())} "
            f"... {format_molar(doses.min())}"
        )
    for role, symbol in (("negative_control", "V"), ("positive_control", "P")):
        chosen = part[part["role"] == role]
        if len(chosen):
            what = ", ".join(
                f"{c or '(no compound)'} {_dose_text(chosen, c)}".strip()
                for c in sorted(chosen["compound"].astype(str).unique())
            )
            lines.append(f"    {symbol} = {role}: {what}")
    samples = [s for s in dict.fromkeys(part["sample"].astype(str)) if s]
    if samples:
        codes = _codes(samples, string.digits[1:] + string.ascii_uppercase)
        lines.append("  sample per well:")
        lines += _picture(
            {w: codes.get(str(s), "") for w, s in zip(part["well"], part["sample"], strict=True)}, 3
        )
        lines.append("    " + ", ".join(f"{code} = {name}" for name, code in codes.items()))
    return lines


def _dose_text(chosen: pd.DataFrame, compound: str) -> str:
    values = chosen.loc[chosen["compound"].astype(str) == compound, "concentration_molar"]
    values = values[values > 0]
    return (
        "(" + ", ".join(format_molar(v) for v in sorted(values.unique())) + ")"
        if len(values)
        else ""
    )


def _curve_lines(table: pd.DataFrame) -> list[str]:
    plan = plan_curves(table)
    split = plan.attrs.get("curve_group_columns", [])
    labels = plan.attrs.get("point_label_columns", [])
    keys = [c for c in ("plate", "sample", "compound", "map_timepoint", *split) if c in plan]
    lines = [f"Curves to fit ({len(plan)}; each on every readout): {' x '.join(keys)}"]
    for row in plan.to_dict("records"):
        name = "  ".join(str(row[k]) or "(none)" for k in keys)
        lines.append(
            f"  {name}: {row['n_doses']} doses ({format_molar(row['lowest_dose_molar'])} - "
            f"{format_molar(row['top_dose_molar'])}), {row['wells_per_dose']} well(s) per dose, "
            f"{row['n_vehicle']} vehicle well(s)"
        )
        if row["n_doses"] < 4:
            lines.append("    ^ fewer than 4 doses: this curve cannot be fitted reliably")
        if row["n_vehicle"] == 0:
            lines.append("    ^ no vehicle well: the zero-dose plateau is not measured")
    if split:
        lines.append(
            f"  curves are split by {', '.join(split)}: these columns vary among wells that "
            "would otherwise be pooled into one curve"
        )
    if labels:
        lines.append(
            f"  {', '.join(labels)} vary only from dose to dose: kept as labels, not split by"
        )
    return lines


def describe_platemap(table: pd.DataFrame) -> str:
    """How a plate map was read, a picture of each plate, the curves to fit and every warning.

    ``table`` is what :func:`read_platemap` returns (its ``attrs["platemap_notes"]`` give the
    column mapping and warnings; a table without them is described from its values alone).
    """
    notes = table.attrs.get("platemap_notes", {})
    lines = []
    if notes:
        lines.append(f"Plate map {notes.get('source', '')} ({notes.get('format', '')})")
        lines.append("Columns:")
        width = max((len(c["header"]) for c in notes.get("columns", [])), default=0) + 2
        for column in notes.get("columns", []):
            lines.append(f"  {column['header']!r:<{width}} -> {column['read_as']}")
    plates = table.groupby("plate", sort=False) if "plate" in table else [("", table)]
    for plate, part in plates:
        counts = part["role"].value_counts()
        label = f"Plate {plate}: " if plate != "" else "Plate: "
        lines.append(
            label
            + f"{len(part)} wells in the map ("
            + ", ".join(f"{n} {role}" for role, n in counts.items())
            + ")"
        )
        lines += _plate_pictures(part)
    lines += _curve_lines(table)
    for title, key in (("Notes", "info"), ("Warnings", "warnings")):
        if notes.get(key):
            lines.append(f"{title}:")
            lines += [f"  - {message}" for message in notes[key]]
    if not notes.get("warnings"):
        lines.append("Warnings: none")
    return "\n".join(lines)
