"""Plate-map files as cells of text: CSV (any separator, UTF-8 / BOM / Windows-1252), ``.xlsx``
and plate-layout grids (one 8 x 12 / 16 x 24 block per variable, as R's plater writes them).

Every reader returns a :class:`RawTable` in long form (one row per well) with, per row, where
it came from (``line 5``, ``sheet 'Layout', row 5``, ``well C05 (grid row C, column 5)``), so
the plate-map reader's errors can name the place a user has to fix.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from screenlib.errors import InputError

__all__ = ["RawTable", "read_source"]


@dataclass
class RawTable:
    """A table of text cells, one row per well, with the place each row came from."""

    header: list[str]
    rows: list[list[str]]
    where: list[str]
    description: str
    decimal_comma: bool = False  # ',' may be a decimal separator (';' / tab files, .xlsx text)
    notes: list[str] = field(default_factory=list)


def read_source(path: str | Path, sheet: str | int | None = None) -> RawTable:
    """Read a plate-map file of any supported format into a long :class:`RawTable`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".xls", ".ods", ".numbers"):
        raise InputError(f"plate map {path}: {suffix} files are not read; save it as .xlsx or CSV")
    if suffix in (".xlsx", ".xlsm"):
        rows, description = _xlsx_rows(path, sheet)
        decimal_comma = True
    else:
        if sheet is not None:
            raise InputError(f"plate map {path}: --sheet applies to .xlsx files only")
        rows, description, delimiter = _csv_rows(path)
        decimal_comma = delimiter != ","
    if not any(any(c.strip() for c in row) for _, row in rows):
        raise InputError(
            f"plate map {path} is empty; it needs a header with 'well' and 'role', "
            "then a row per well"
        )
    grid = _grid_table(rows, description, path)
    if grid is not None:
        grid.decimal_comma = decimal_comma
        return grid
    return _long_table(
        rows, description, decimal_comma, path, csv_lines=suffix not in (".xlsx", ".xlsm")
    )


# ---------------------------------------------------------------- CSV and Excel


def _decode(data: bytes, path: Path) -> tuple[str, str]:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="strict"), "UTF-8 with BOM"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "UTF-16"
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252 (not UTF-8)"
    except UnicodeDecodeError as error:
        raise InputError(
            f"plate map {path} is neither UTF-8 nor Windows-1252 text (byte {error.start}); "
            "save it as CSV (UTF-8)"
        ) from None


def _csv_rows(path: Path) -> tuple[list[tuple[str, list[str]]], str, str]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read plate map {path}: {error.strerror}") from error
    if data[:4] == b"PK\x03\x04":
        raise InputError(
            f"plate map {path} is a zip archive (an Excel workbook?), not UTF-8 text; save it "
            "as CSV (UTF-8), or as .xlsx under an .xlsx name"
        )
    text, encoding = _decode(data, path)
    sample = [line for line in text.splitlines()[:30] if line.strip()]
    widths = {
        d: max((len(next(csv.reader([line], delimiter=d))) for line in sample), default=1)
        for d in (",", ";", "\t")
    }
    delimiter = max(widths, key=lambda d: (widths[d], d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            rows.append((f"line {reader.line_num}", row))
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: {error}") from None
    name = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    return rows, f"CSV ({name}-separated, {encoding})", delimiter


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _xlsx_rows(path: Path, sheet: str | int | None) -> tuple[list[tuple[str, list[str]]], str]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot read plate map {path} as an .xlsx workbook: {error}") from None
    except Exception as error:  # noqa: BLE001 - zipfile/xml errors of a damaged workbook
        raise InputError(f"cannot read plate map {path} as an .xlsx workbook: {error}") from None
    names = workbook.sheetnames
    try:
        if sheet is None:
            name = names[0]
        elif str(sheet) in names:
            name = str(sheet)
        elif str(sheet).isdigit() and 1 <= int(sheet) <= len(names):
            name = names[int(sheet) - 1]
        else:
            raise InputError(f"plate map {path} has no sheet {sheet!r}; its sheets: {names}")
        rows = [
            (f"sheet {name!r}, row {i}", [_cell_text(v) for v in values])
            for i, values in enumerate(workbook[name].iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()
    others = f"; other sheets: {', '.join(n for n in names if n != name)}" if len(names) > 1 else ""
    return rows, f"Excel workbook, sheet {name!r}{others}"


# ---------------------------------------------------------------- long form


def _long_table(
    rows: list[tuple[str, list[str]]],
    description: str,
    decimal_comma: bool,
    path: Path,
    csv_lines: bool,
) -> RawTable:
    rows = [(where, row) for where, row in rows if any(c.strip() for c in row)]
    start = _header_row(rows)
    notes = [f"{rows[i][0]} above the header ignored: {_short(rows[i][1])}" for i in range(start)]
    rows = rows[start:]
    header_where, header = rows[0]
    header = [h.strip() for h in header]
    # Excel writes trailing separators: drop columns with neither a header nor a value
    used = [
        i for i, h in enumerate(header)
        if h or any(i < len(r) and r[i].strip() for _, r in rows[1:])
    ]  # fmt: skip
    for i in used:
        if not header[i]:
            header[i] = f"column_{i + 1}"
            notes.append(f"column {i + 1} has no header; kept as {header[i]!r}")
    lower = [header[i].lower() for i in used]
    duplicated = sorted({h for h in lower if lower.count(h) > 1})
    if duplicated:
        raise InputError(f"{path}: {header_where}: duplicate column(s) {duplicated}")
    body, where = [], []
    for place, row in rows[1:]:
        if csv_lines and len(row) < len(used) and len(row) < len(header):
            raise InputError(f"{path}: {place}: {len(row)} fields but the header has {len(header)}")
        extra = [c for i, c in enumerate(row) if i >= len(header) and c.strip()]
        if extra:
            raise InputError(
                f"{path}: {place}: {len(row)} fields but the header has {len(header)} "
                f"(extra values {extra[:3]})"
            )
        body.append([row[i].strip() if i < len(row) else "" for i in used])
        where.append(place)
    return RawTable([header[i] for i in used], body, where, description, decimal_comma, notes)


def _header_row(rows: list[tuple[str, list[str]]]) -> int:
    """Index of the header: the first of the first ten rows naming a well (or a row and a
    column); title lines above it ('Plate map, experiment 12') are skipped."""
    from screenlib.platemap._vocabulary import FIELD_ALIASES, compact

    for index, (_, row) in enumerate(rows[:10]):
        names = {compact(c) for c in row}
        if names & FIELD_ALIASES["well"] or {"row", "column"} <= names:
            return index
    return 0


def _short(row: list[str]) -> str:
    text = " | ".join(c.strip() for c in row if c.strip())
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- plate-layout grids


def _row_label(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else "A" + chr(ord("A") + index - 26)


def _grid_columns(row: list[str]) -> int:
    """Number of plate columns when ``row`` is a grid header (``name,1,2,...,12``), else 0."""
    cells = [c.strip() for c in row[1:]]
    while cells and not cells[-1]:
        cells.pop()
    if len(cells) < 2 or any(not c.isdigit() or int(c) != i for i, c in enumerate(cells, start=1)):
        return 0
    return len(cells)


def _is_title(row: list[str]) -> bool:
    return sum(bool(c.strip()) for c in row) == 1 and bool(row[0].strip())


def _grid_table(rows: list[tuple[str, list[str]]], description: str, path: Path) -> RawTable | None:
    """Long form of a file of plate-layout blocks; None when the file is not one."""
    first = [i for i, (_, row) in enumerate(rows) if any(c.strip() for c in row)][:2]
    starts_grid = bool(first) and (
        _grid_columns(rows[first[0]][1])
        or (len(first) == 2 and _is_title(rows[first[0]][1]) and _grid_columns(rows[first[1]][1]))
    )
    if not starts_grid:
        return None
    blocks: dict[str, dict[str, str]] = {}
    notes, i = [], 0
    while i < len(rows):
        place, row = rows[i]
        n_columns = _grid_columns(row)
        if not n_columns:
            if any(c.strip() for c in row) and not (
                _is_title(row) and i + 1 < len(rows) and _grid_columns(rows[i + 1][1])
            ):
                notes.append(f"{place} ignored: not part of a plate-layout block")
            i += 1
            continue
        name = row[0].strip()
        if not name or name == "<>":
            title = rows[i - 1][1] if i else []
            name = title[0].strip() if i and _is_title(title) else ""
        if not name:
            raise InputError(
                f"{path}: {place}: a plate-layout block needs the variable's name in its "
                "top-left cell (e.g. 'compound') or on the line above"
            )
        if name in blocks:
            raise InputError(f"{path}: {place}: a second block named {name!r}")
        values = {}
        i += 1
        index = 0
        while i < len(rows) and rows[i][1] and rows[i][1][0].strip().upper() == _row_label(index):
            cells = rows[i][1]
            letter = _row_label(index)
            for column in range(1, n_columns + 1):
                values[f"{letter}{column:02d}"] = (
                    cells[column].strip() if column < len(cells) else ""
                )
            index += 1
            i += 1
        if index == 0:
            raise InputError(f"{path}: {place}: block {name!r} has no rows A, B, ...")
        blocks[name] = values
    wells = sorted(
        {w for values in blocks.values() for w, v in values.items() if v},
        key=lambda w: (len(w.rstrip("0123456789")), w.rstrip("0123456789"), int(w[-2:])),
    )
    body = [[w, *(values.get(w, "") for values in blocks.values())] for w in wells]
    where = [f"well {w} (grid row {w[:-2]}, column {int(w[-2:])})" for w in wells]
    header = ["well", *blocks]
    return RawTable(
        header, body, where,
        f"plate-layout grids ({len(blocks)} block(s): {', '.join(blocks)}), {description}",
        notes=notes,
    )  # fmt: skip
