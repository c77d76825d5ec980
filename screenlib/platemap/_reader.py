"""``read_platemap``: one reader for plate maps as labs write them (see ``docs/platemaps.md``)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from screenlib.errors import InputError
from screenlib.platemap._sources import RawTable, read_source
from screenlib.platemap._values import (
    VEHICLE_COMPOUNDS,
    is_role_word,
    molar_unit,
    normalize_role,
    parse_concentration,
)
from screenlib.platemap._vocabulary import (
    AMBIGUOUS_ROLE_HEADERS,
    HeaderMeaning,
    compact,
    is_output_column,
    read_header,
)
from screenlib.platemap._wells import (
    PlateGeometry,
    geometry_for_wells,
    normalize_well,
    split_well,
)

__all__ = ["KNOWN_COLUMNS", "read_platemap"]

logger = logging.getLogger(__name__)

# the columns read_platemap writes itself, in this order (optional ones only when present)
KNOWN_COLUMNS = (
    "well", "row", "column", "sample", "compound", "concentration_molar", "role",
    "concentration", "concentration_unit", "plate", "replicate", "map_timepoint",
)  # fmt: skip
_ROW_HEADERS, _COLUMN_HEADERS = {"row", "rows"}, {"column", "columns", "col"}


@dataclass
class _Layout:
    """Which column of the raw table holds which field."""

    fields: dict[str, int]
    header_unit: str | None
    extras: list[int]
    well_parts: tuple[int, int] | None  # (row, column) headers when there is no well column
    checked_parts: tuple[int | None, int | None] | None  # row and/or column beside a well
    meanings: list[HeaderMeaning]
    info: list[str] = field(default_factory=list)


def _column_values(raw: RawTable, index: int) -> list[str]:
    return [row[index] for row in raw.rows if row[index]]


def _resolve_columns(raw: RawTable, path: Path) -> _Layout:
    """Map headers to fields; a header that is both a compound and a role word is decided
    by its values (all role words -> role)."""
    meanings = [read_header(h) for h in raw.header]
    info = []
    for i, meaning in enumerate(meanings):
        key = compact(meaning.header)
        if key not in AMBIGUOUS_ROLE_HEADERS or meaning.field not in ("role", "compound"):
            continue
        values = _column_values(raw, i)
        if values and all(is_role_word(v) for v in values):
            meanings[i] = HeaderMeaning(meaning.header, "role", None, "alias; values are roles")
        elif meaning.field == "compound":
            meanings[i] = HeaderMeaning(
                meaning.header, "compound", None, "alias; values are not role words"
            )
        else:
            example = next(v for v in values if not is_role_word(v)) if values else ""
            meanings[i] = HeaderMeaning(meaning.header, None, None, "")
            info.append(
                f"column {meaning.header!r} is not read as the role: {example!r} is not a role word"
            )
    fields: dict[str, int] = {}
    for i, meaning in enumerate(meanings):
        if meaning.field is None:
            continue
        if meaning.field in fields and "concentrationmolar" in (
            compact(meaning.header),
            compact(raw.header[fields[meaning.field]]),
        ):
            # beside another concentration column, concentration_molar is an annotation
            demoted = (
                i
                if compact(meaning.header) == "concentrationmolar"
                else fields.pop("concentration")
            )
            meanings[demoted] = HeaderMeaning(raw.header[demoted], None, None, "")
            if demoted == i:
                continue
        if meaning.field in fields:
            other = raw.header[fields[meaning.field]]
            raise InputError(
                f"{path}: columns {other!r} and {meaning.header!r} both name the "
                f"{meaning.field}; rename or remove one of them"
            )
        fields[meaning.field] = i
    extras = [i for i, m in enumerate(meanings) if m.field is None]
    parts = _well_parts(raw, extras)
    well_parts = checked_parts = None
    if "well" in fields and parts != (None, None):
        checked_parts = parts
    elif None not in parts:
        well_parts = parts
    extras = [i for i in extras if i not in (well_parts or checked_parts or ())]
    if "role" not in fields:
        _find_role_by_values(raw, meanings, fields, extras, info)
    header_unit = meanings[fields["concentration"]].unit if "concentration" in fields else None
    return _Layout(fields, header_unit, extras, well_parts, checked_parts, meanings, info)


def _well_parts(raw: RawTable, extras: list[int]) -> tuple[int | None, int | None]:
    """The ``row`` and ``column`` headers (None where there is not exactly one)."""
    rows = [i for i in extras if compact(raw.header[i]) in _ROW_HEADERS]
    columns = [i for i in extras if compact(raw.header[i]) in _COLUMN_HEADERS]
    return (rows[0] if len(rows) == 1 else None, columns[0] if len(columns) == 1 else None)


def _find_role_by_values(raw, meanings, fields, extras, info) -> None:
    """A column of any name whose values are all role words, with at least a vehicle and a
    second role, is the role column."""
    for i in list(extras):
        values = _column_values(raw, i)
        if not values or not all(is_role_word(v) for v in values):
            continue
        roles = {normalize_role(v) for v in values}
        if len(roles) >= 2 and "negative_control" in roles:
            fields["role"] = i
            extras.remove(i)
            meanings[i] = HeaderMeaning(raw.header[i], "role", None, "its values are role words")
            info.append(f"column {raw.header[i]!r} holds only role words: read as the role")
            return


_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d*,\d+(?:[eE][+-]?\d+)?(?=\s*[^\d,.]*$)")
_THOUSANDS_DOT = re.compile(r"^\s*[1-9]\d{0,2}(?:\.\d{3})+\s*[^\d.,]*$")


def _decimal_texts(raw: RawTable, index: int, path: Path) -> list[str]:
    """The concentration column with decimal commas turned into points (``;``/tab files and
    Excel text); refuses numbers whose separator cannot be told."""
    values = [row[index] for row in raw.rows]
    has_comma = [v for v in values if "," in v]
    if not has_comma:
        dotted = [v for v in values if "." in v and re.search(r"\d", v)]
        if raw.decimal_comma and dotted and all(_THOUSANDS_DOT.match(v) for v in dotted):
            raise InputError(
                f"{path}: column {raw.header[index]!r}: {dotted[0]!r} in a file with decimal "
                "commas may be a thousands separator; write the number without it (e.g. 10000)"
            )
        return values
    if not raw.decimal_comma:
        where = raw.where[values.index(has_comma[0])]
        raise InputError(
            f"{path}: {where}, column {raw.header[index]!r}: {has_comma[0]!r} has a comma in "
            "a comma-separated file; write decimals with a point (0.5)"
        )
    out = []
    for place, value in zip(raw.where, values, strict=True):
        if "," in value and ("." in value or not _DECIMAL_COMMA.match(value)):
            raise InputError(
                f"{path}: {place}, column {raw.header[index]!r}: cannot read the number "
                f"{value!r}; write one decimal comma and no thousands separator"
            )
        out.append(value.replace(",", "."))
    return out


_NO_VALUE = {"-", "--", "—", "na", "n/a", "nan", "none"}
_NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
_UNIT_IN_TEXT = re.compile(r"[\d.]\s*([A-Za-zµμ][A-Za-zµμ/]*)\s*$")


def _dose_kind(text: str, unit: str) -> str:
    """``blank``, ``zero``, ``percent``, ``words`` (no digits: 'vehicle'), ``dose`` or ``bad``."""
    if not text or text.strip().lower() in _NO_VALUE:
        return "blank"
    if "%" in text or unit == "%":
        return "percent"
    if not re.search(r"\d", text):
        return "words"
    if _NUMBER.match(text):
        return "zero" if float(text) == 0 else "dose"
    try:
        value = parse_concentration(text)
    except InputError:
        return "bad"
    return "zero" if value == 0 else "dose"


def _concentration(text: str, unit: str, header_unit: str | None, role: str, well: str):
    """``(molar, unit used)`` of one well; vehicle and empty wells need no concentration."""
    kind = _dose_kind(text, unit)
    if unit and unit != "%" and header_unit and molar_unit(unit) != molar_unit(header_unit):
        raise InputError(
            f"the unit column says {unit!r} but the header says {header_unit!r}; keep one of them"
        )
    match = _UNIT_IN_TEXT.search(text)
    unit_used = unit or header_unit or (match.group(1) if match else "")
    if kind == "percent":
        if role in ("negative_control", "empty"):
            return (0.0 if role == "negative_control" else math.nan), "%"
        raise InputError(
            f"{text!r}{' ' + unit if unit else ''} (percent) is accepted for vehicle wells only; "
            f"give the {role.replace('_', ' ')} well {well} a molar concentration"
        )
    if role == "negative_control":
        if kind in ("blank", "zero", "words"):
            return 0.0, unit_used
        value = parse_concentration(text, unit or header_unit)
        if value != 0:
            raise InputError(
                f"vehicle well {well} has concentration {text}; give it 0 or leave it empty"
            )
        return 0.0, unit_used
    if role == "empty":
        try:
            return parse_concentration(text, unit or header_unit), unit_used
        except InputError:
            return math.nan, unit_used
    if role == "positive_control" and kind == "blank":
        return math.nan, unit_used
    if kind == "words":
        raise InputError(
            f"cannot parse concentration {text!r} of {role.replace('_', ' ')} well {well}: "
            "write a number and a unit like '10 uM'"
        )
    if kind == "blank":
        raise InputError(
            f"{role.replace('_', ' ')} well {well} has no usable concentration ({text!r}); "
            "write a dose with a unit, e.g. '10 uM'"
        )
    if kind == "zero" and not (unit or header_unit or match):
        return 0.0, unit_used
    return parse_concentration(text, unit or header_unit), unit_used


def _infer_role(compound: str, sample: str, kind: str) -> str | None:
    """Role of a well the map gives none: only from values that cannot mean anything else."""
    is_vehicle = compact(compound) in {compact(v) for v in VEHICLE_COMPOUNDS}
    if is_vehicle and kind in ("blank", "zero", "percent", "words"):
        return "negative_control"
    if not compound and not sample and kind == "blank":
        return "empty"
    if compound and not is_vehicle and kind == "dose":
        return "sample"
    if compound and not is_vehicle and kind == "zero":
        return "negative_control"
    return None


def _parse_rows(raw: RawTable, layout: _Layout, path: Path, geometry) -> tuple[list[dict], int]:
    """One record per well with the known fields; returns the records and the number of
    wells whose role was inferred."""
    f = layout.fields
    texts = _decimal_texts(raw, f["concentration"], path) if "concentration" in f else None
    records, seen, n_inferred = [], {}, 0
    for n, (row, place) in enumerate(zip(raw.rows, raw.where, strict=True)):

        def cell(name: str, row: list[str] = row) -> str:
            return row[f[name]] if name in f else ""

        def fail(name: str, message: str, place: str = place) -> InputError:
            header = raw.header[f[name]] if name in f else name
            return InputError(f"{path}: {place}, column {header!r}: {message}")

        well = _well_of(raw, layout, row, place, path, geometry)
        plate = cell("plate")
        if (plate, well) in seen:
            raise fail("well", f"duplicate well {well} (first on {seen[plate, well]})")
        seen[plate, well] = place
        text = texts[n] if texts is not None else ""
        unit = cell("unit")
        if cell("role"):
            try:
                role = normalize_role(cell("role"))
            except InputError as error:
                raise fail("role", str(error)) from None
        else:
            role = _infer_role(cell("compound"), cell("sample"), _dose_kind(text, unit))
            if role is None:
                raise fail(
                    "role" if "role" in f else "compound",
                    f"cannot tell the role of well {well} (compound {cell('compound')!r}, "
                    f"concentration {text!r}); give it a role: sample, vehicle, "
                    "positive_control or empty",
                )
            n_inferred += 1
        if role == "sample" and "concentration" not in f:
            unread = [raw.header[i] for i in layout.extras]
            raise fail(
                "concentration",
                f"sample well {well} needs a concentration, and no column was read as one "
                f"(columns kept as annotations: {unread}); name it e.g. 'concentration (nM)'",
            )
        try:
            molar, unit_used = _concentration(text, unit, layout.header_unit, role, well)
        except InputError as error:
            raise fail("concentration", str(error)) from None
        row_letters, column_number = split_well(well)
        record = {
            "well": well, "row": row_letters, "column": column_number,
            "sample": cell("sample"), "compound": cell("compound"),
            "concentration_molar": molar, "role": role,
            "_role_given": bool(cell("role")), "_where": place,
        }  # fmt: skip
        if "concentration" in f:
            record["concentration"] = row[f["concentration"]]
            record["concentration_unit"] = unit_used
        for name in ("plate", "replicate"):
            if name in f:
                record[name] = cell(name)
        if "timepoint" in f:
            record["map_timepoint"] = cell("timepoint")
        records.append(record)
    return records, n_inferred


def _well_of(raw, layout, row, place, path, geometry) -> str:
    fields = layout.fields
    if "well" in fields:
        text, header = row[fields["well"]], raw.header[fields["well"]]
    elif layout.well_parts is not None:
        r, c = layout.well_parts
        letters = row[r].strip()
        if letters.isdigit() and 1 <= int(letters) <= 32:  # rows numbered 1, 2, ... (r01c02)
            letters = (
                chr(ord("A") + int(letters) - 1)
                if int(letters) <= 26
                else f"A{chr(38 + int(letters))}"
            )
        text, header = letters + row[c].strip(), f"{raw.header[r]}/{raw.header[c]}"
    else:
        raise InputError(
            f"{path}: no well column (header: {raw.header}); name it 'well' (A1 or A01) or give "
            "'row' and 'column'"
        )
    try:
        well = normalize_well(text, geometry or PlateGeometry.from_size(1536))
        if layout.checked_parts is not None:
            r, c = layout.checked_parts
            letters, number = split_well(well)
            if (r is not None and row[r].strip().upper() != letters) or (
                c is not None and row[c].strip().lstrip("0") != str(number)
            ):
                given = " / ".join(f"{raw.header[i]} {row[i]!r}" for i in (r, c) if i is not None)
                raise InputError(f"{given} disagree(s) with well {text!r}")
    except InputError as error:
        raise InputError(f"{path}: {place}, column {header!r}: {error}") from None
    return well


def _check_single_dose_compounds(records: list[dict], path: Path) -> None:
    """Without a role column a compound given at one dose may be a positive control: refuse."""
    doses: dict[tuple[str, str], set[float]] = {}
    for r in records:
        if r["role"] == "sample" and not r["_role_given"]:
            doses.setdefault((r.get("plate", ""), r["compound"]), set()).add(
                r["concentration_molar"]
            )
    for (_, compound), values in sorted(doses.items()):
        if len(values) == 1:
            first = next(r for r in records if r["compound"] == compound)
            raise InputError(
                f"{path}: {first['_where']}: the map has no role column and compound "
                f"{compound!r} is given at one concentration only: a positive control or a "
                "one-dose sample? Add a 'role' column (sample, vehicle, positive_control, empty)"
            )


def _describe_column(meaning: HeaderMeaning) -> str:
    text = {"timepoint": "timepoint (kept as map_timepoint; splits curves)"}.get(
        meaning.field, meaning.field
    )
    if meaning.unit:
        text += f" in {meaning.unit} (unit from the header)"
    return f"{text} ({meaning.how})" if meaning.how else text


def _add_extras(records, raw, layout, warnings) -> list[dict]:
    """Every other column, kept under its own name; output names get a ``map_`` prefix."""
    columns = []
    taken = set(KNOWN_COLUMNS)
    for i in layout.extras:
        name = raw.header[i]
        if is_output_column(name.lower()) or name.lower() in taken:
            new = f"map_{name}"
            while new.lower() in taken:
                new = f"map_{new}"
            warnings.append(
                f"column {name!r} has the name of an output column; kept as {new!r} and "
                "never used as a parsed value"
            )
            read_as = f"kept as {new!r} (renamed: {name!r} is an output column)"
        else:
            new, read_as = name, f"kept as {name!r} (annotation; splits curves when it varies)"
        taken.add(new.lower())
        columns.append({"header": name, "read_as": read_as})
        rows_by_where = {place: row for place, row in zip(raw.where, raw.rows, strict=True)}
        for record in records:
            record[new] = rows_by_where[record["_where"]][i]
    return columns


def read_platemap(
    path: str | Path,
    geometry: PlateGeometry | int | None = None,
    *,
    plate: str | None = None,
    sheet: str | int | None = None,
) -> pd.DataFrame:
    """Read a plate map, as labs write it, into one row per well.

    Parameters
    ----------
    path
        CSV (comma, semicolon or tab; UTF-8 with or without BOM, or Windows-1252), ``.xlsx``,
        or plate-layout grids (one 8 x 12 / 16 x 24 block per variable). Headers are read
        through the vocabulary of ``docs/platemaps.md`` (``cell line`` -> sample, ``drug`` ->
        compound, ``dose [µM]`` -> concentration in µM, ...).
    geometry
        Plate geometry (or its size: 96, 384, 1536) that every well must lie on; None
        picks the smallest standard plate holding each plate's wells.
    plate
        Keep only this plate's rows of a map with a ``plate`` column.
    sheet
        Sheet name (or 1-based number) of an ``.xlsx`` map; default the first sheet.

    Returns
    -------
    pandas.DataFrame
        ``well``, ``row``, ``column``, ``sample``, ``compound``, ``concentration_molar``,
        ``role``; ``concentration`` and ``concentration_unit`` (as the map wrote them) when
        the map has a concentration; ``plate``, ``replicate``, ``map_timepoint`` when given;
        then every other column of the map. ``attrs["platemap_notes"]`` says how each column
        was read and lists every warning (see :func:`describe_platemap`).

    Raises
    ------
    InputError
        Naming the file, line (or sheet row / grid well) and column of what must be fixed.
    """
    path = Path(path)
    if isinstance(geometry, int):
        geometry = PlateGeometry.from_size(geometry)
    raw = read_source(path, sheet)
    if not raw.rows:
        raise InputError(f"plate map {path} has a header but no wells")
    layout = _resolve_columns(raw, path)
    records, n_inferred = _parse_rows(raw, layout, path, geometry)
    warnings = list(raw.notes)
    info = list(layout.info)
    if "role" not in layout.fields:
        _check_single_dose_compounds(records, path)
    if n_inferred:
        roles = pd.Series([r["role"] for r in records if not r["_role_given"]]).value_counts()
        message = (
            f"role inferred for {n_inferred} well(s) without one ("
            + ", ".join(f"{n} {role}" for role, n in roles.items())
            + "): DMSO/vehicle or zero dose -> negative_control, a dose -> sample, "
            "nothing -> empty"
        )
        (info if "role" in layout.fields else warnings).append(message)
    columns = [
        {"header": m.header, "read_as": _describe_column(m)}
        for m in layout.meanings if m.field is not None
    ]  # fmt: skip
    for parts, what in ((layout.well_parts, "well"), (layout.checked_parts, "checked")):
        if parts is not None:
            read_as = "well (row + column)" if what == "well" else "checked against the well"
            columns += [
                {"header": raw.header[i], "read_as": read_as} for i in parts if i is not None
            ]
    columns += _add_extras(records, raw, layout, warnings)
    records = _select_plate(records, plate, path, info)
    table = pd.DataFrame.from_records(records).drop(columns=["_role_given", "_where"])
    for _, part in table.groupby(table["plate"] if "plate" in table else pd.Series(0, table.index)):
        if geometry is None:
            geometry_for_wells(part["well"].tolist())
    table["column"] = table["column"].astype(int)
    table["concentration_molar"] = table["concentration_molar"].astype(float)
    for message in warnings:
        logger.warning("plate map %s: %s", path.name, message)
    table.attrs["platemap_notes"] = {
        "source": str(path), "format": raw.description, "columns": columns,
        "warnings": warnings, "info": info,
    }  # fmt: skip
    return table


def _select_plate(records: list[dict], plate: str | None, path: Path, info: list[str]):
    if plate is None:
        return records
    if not records or "plate" not in records[0]:
        info.append(f"the map has no plate column: it applies to plate {plate!r} as a whole")
        return records
    chosen = [r for r in records if r["plate"] == str(plate).strip()]
    if not chosen:
        plates = sorted({r["plate"] for r in records})
        raise InputError(f"plate map {path} has no rows for plate {plate!r}; its plates: {plates}")
    return chosen


_TEXT_FIELDS = ("sample", "compound", "role", "well", "plate", "replicate", "unit")


def read_dose_table(path: str | Path, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a tidy dose-response table with the plate-map vocabulary and formats.

    Headers are renamed to their field (``drug`` -> ``compound``, ``cell line`` -> ``sample``,
    ``dose [µM]`` -> ``concentration``); numbers with decimal commas (``;`` files, ``.xlsx``
    text) become numbers; without a ``concentration_molar`` column it is computed from the
    concentration and its unit (cell, ``unit`` column or header) as in :func:`read_platemap`
    (vehicle rows may leave it blank). Every other column (``response``, ``n_positive``...)
    is kept under its own name.

    Raises
    ------
    InputError
        Naming the file, line and column of a concentration that cannot be read.
    """
    path = Path(path)
    raw = read_source(path, sheet)
    layout = _resolve_columns(raw, path)
    names = {i: raw.header[i] for i in range(len(raw.header))}
    for field_name, i in layout.fields.items():
        names[i] = "timepoint" if field_name == "timepoint" else field_name
    molar_index = next(
        (i for i, h in enumerate(raw.header) if h.strip().lower() == "concentration_molar"), None
    )
    if molar_index is not None:  # screenlib's own column (wells.csv): molar, whatever the unit
        names[molar_index] = "concentration_molar"
    if "concentration" in layout.fields and layout.meanings[layout.fields["concentration"]].unit:
        header_unit = layout.header_unit
    else:
        header_unit = None
    columns = {}
    for i, name in names.items():
        values = [row[i] for row in raw.rows]
        if name == "concentration_molar":
            columns[name] = _molar_values(values, raw, path)
            continue
        if name not in _TEXT_FIELDS and name != "concentration":
            numbers = [v.replace(",", ".") if raw.decimal_comma else v for v in values]
            converted = pd.to_numeric(pd.Series(numbers), errors="coerce")
            if converted[[bool(v) for v in values]].notna().all():
                columns[name] = converted
                continue
        columns[name] = pd.Series(values, dtype=object)
    table = pd.DataFrame(columns)
    if "concentration" in table and "concentration_molar" not in table:
        table["concentration_molar"] = _molar_column(table, raw, layout, path, header_unit)
    table.attrs["platemap_notes"] = {"source": str(path), "format": raw.description}
    return table


def _molar_values(values: list[str], raw, path: Path) -> pd.Series:
    """A ``concentration_molar`` column: numbers in mol/L, or text with its unit (``10 nM``);
    a blank is NaN (the fit drops that row and says so)."""
    molar = []
    for text, place in zip(values, raw.where, strict=True):
        text = text.strip().replace(",", ".") if raw.decimal_comma else text.strip()
        if not text:
            molar.append(math.nan)
            continue
        try:
            molar.append(float(text))
        except ValueError:
            try:
                molar.append(parse_concentration(text))
            except InputError as error:
                raise InputError(
                    f"{path}: {place}, column 'concentration_molar': {error}"
                ) from None
    return pd.Series(molar, dtype=float)


def _molar_column(table, raw, layout, path, header_unit) -> list[float]:
    """``concentration_molar`` of a tidy table, row by row, with the plate-map rules."""
    texts = _decimal_texts(raw, layout.fields["concentration"], path)
    header = raw.header[layout.fields["concentration"]]
    molar = []
    for n, place in enumerate(raw.where):
        row = {c: str(table[c].iloc[n]) for c in ("role", "unit", "compound") if c in table}
        unit = row.get("unit", "")
        try:
            if row.get("role"):
                role = normalize_role(row["role"])
            else:
                kind = _dose_kind(texts[n], unit)
                role = _infer_role(row.get("compound", ""), "-", kind) or "sample"
            molar.append(_concentration(texts[n], unit, header_unit, role, f"on {place}")[0])
        except InputError as error:
            raise InputError(f"{path}: {place}, column {header!r}: {error}") from None
    return molar
