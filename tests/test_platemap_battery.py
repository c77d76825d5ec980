"""The example plate's map re-worded as labs write it: every variant must read exactly as the
canonical map (same wells, roles, samples, compounds and concentration_molar).

One variant per header alias family, per value form and per file format; the committed
examples under ``example_plates/milademetan_nb/platemaps/`` are read too.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from screenlib.platemap import describe_platemap, read_platemap

PLATE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_nb"
CANONICAL_PATH = PLATE / "platemap.csv"
CANON = list(csv.DictReader(CANONICAL_PATH.open(encoding="utf-8")))
COLUMNS = ["well", "role", "sample", "compound", "concentration_molar"]
ROLE_ORDER = ["negative_control", "sample", "positive_control"]


@pytest.fixture(scope="module")
def canonical() -> pd.DataFrame:
    return read_platemap(CANONICAL_PATH)[COLUMNS]


def scaled(nanomolar: str, exponent: int) -> str:
    """'3333.33' nM -> µM (exponent -3): '3.33333', an exact decimal shift."""
    return format(Decimal(nanomolar).scaleb(exponent).normalize(), "f")


def roles(words):
    return lambda r: words[ROLE_ORDER.index(r["role"])]


def is_vehicle(r) -> bool:
    return r["role"] == "negative_control"


def table_text(header, cell_fns, delimiter=",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for r in CANON:
        writer.writerow([fn(r) if callable(fn) else r[fn] for fn in cell_fns])
    return buffer.getvalue()


STANDARD = ["well", "sample", "compound", "concentration", "unit", "role"]


def standard_with(**replace):
    """The canonical header and cells, with some columns renamed or re-valued."""
    header, cells = [], []
    for name in STANDARD:
        new_name, fn = replace.get(name, (name, name))
        if new_name is None:
            continue
        header.append(new_name)
        cells.append(fn)
    return header, cells


# id -> (header, cell functions[, delimiter, encoding])
VARIANTS = {
    # well aliases and forms
    "well:Well ID, A1 form": standard_with(
        well=("Well ID", lambda r: r["well"][0] + str(int(r["well"][1:])))
    ),
    "well:well name lower case": standard_with(well=("well name", lambda r: r["well"].lower())),
    "well:Position": standard_with(well=("Position", "well")),
    "well:WELL A001": standard_with(well=("WELL", lambda r: r["well"][0] + "0" + r["well"][1:])),
    # sample aliases
    "sample:cell_line": standard_with(sample=("cell_line", "sample")),
    "sample:Cell line": standard_with(sample=("Cell line", "sample")),
    "sample:CellLine": standard_with(sample=("CellLine", "sample")),
    "sample:cell-type": standard_with(sample=("cell-type", "sample")),
    "sample:line": standard_with(sample=("line", "sample")),
    "sample:Cells": standard_with(sample=("Cells", "sample")),
    # compound aliases (treatment with compound names is the compound)
    "compound:drug": standard_with(compound=("drug", "compound")),
    "compound:Treatment": standard_with(compound=("Treatment", "compound")),
    "compound:agent": standard_with(compound=("agent", "compound")),
    "compound:Compound Name": standard_with(compound=("Compound Name", "compound")),
    # concentration aliases, units in the header
    "concentration:conc": standard_with(concentration=("conc", "concentration")),
    "concentration:dose + units": standard_with(
        concentration=("dose", "concentration"), unit=("units", "unit")
    ),
    "concentration:Concentration (nM), no unit column": standard_with(
        concentration=("Concentration (nM)", "concentration"), unit=(None, None)
    ),
    "concentration:dose [µM]": standard_with(
        concentration=("dose [µM]", lambda r: scaled(r["concentration"], -3)), unit=(None, None)
    ),
    "concentration:conc_uM": standard_with(
        concentration=("conc_uM", lambda r: scaled(r["concentration"], -3)), unit=(None, None)
    ),
    "concentration:Conc. in nM": standard_with(
        concentration=("Conc. in nM", "concentration"), unit=(None, None)
    ),
    "concentration:concentration (M) in scientific notation": standard_with(
        concentration=(
            "concentration (M)",
            lambda r: f"{Decimal(r['concentration']).scaleb(-9).normalize():E}",
        ),
        unit=(None, None),
    ),
    "concentration:concentration_molar": standard_with(
        concentration=("concentration_molar", lambda r: scaled(r["concentration"], -9)),
        unit=(None, None),
    ),
    "concentration:Compound concentration (µM)": standard_with(
        concentration=("Compound concentration (µM)", lambda r: scaled(r["concentration"], -3)),
        unit=(None, None),
    ),
    "unit:Concentration Unit": standard_with(unit=("Concentration Unit", "unit")),
    # role aliases and role words
    "role:type vehicle/treatment/pos": standard_with(
        role=("type", roles(["vehicle", "treatment", "pos"]))
    ),
    "role:Well Type neg/sample/positive": standard_with(
        role=("Well Type", roles(["neg", "sample", "positive"]))
    ),
    "role:control with blanks for samples": standard_with(
        role=("control", roles(["negative", "", "positive"]))
    ),
    "role:Role DMSO/test/Positive Control": standard_with(
        role=("Role", roles(["DMSO", "test", "Positive Control"]))
    ),
    "role:Vehicle (DMSO)/Unknown/Positive control (staurosporine)": standard_with(
        role=("Role", roles(["Vehicle (DMSO)", "Unknown", "Positive control (staurosporine)"]))
    ),
    "role:treatment holding role words": standard_with(
        role=("treatment", roles(["vehicle control", "treated", "pos ctrl"]))
    ),
    "role:unnamed column of role words": standard_with(
        role=("Condition", roles(["negative control", "sample", "positive control"]))
    ),
    # vehicle wells as people write them
    "vehicle:0 with empty unit": standard_with(
        unit=("unit", lambda r: "" if is_vehicle(r) else r["unit"])
    ),
    "vehicle:blank dose and unit": standard_with(
        concentration=("concentration", lambda r: "" if is_vehicle(r) else r["concentration"]),
        unit=("unit", lambda r: "" if is_vehicle(r) else r["unit"]),
    ),
    "vehicle:0.1 %": standard_with(
        concentration=("concentration", lambda r: "0.1" if is_vehicle(r) else r["concentration"]),
        unit=("unit", lambda r: "%" if is_vehicle(r) else r["unit"]),
    ),
    "vehicle:0.1% DMSO": standard_with(
        concentration=(
            "concentration",
            lambda r: "0.1% DMSO" if is_vehicle(r) else r["concentration"] + " nM",
        ),
        unit=(None, None),
    ),
    "vehicle:the word vehicle": standard_with(
        concentration=(
            "concentration",
            lambda r: "vehicle" if is_vehicle(r) else r["concentration"] + "nM",
        ),
        unit=(None, None),
    ),
    # doses as people write them
    "dose:10 µM": standard_with(
        concentration=("concentration", lambda r: scaled(r["concentration"], -3) + " µM"),
        unit=(None, None),
    ),
    "dose:10uM": standard_with(
        concentration=("concentration", lambda r: scaled(r["concentration"], -3) + "uM"),
        unit=(None, None),
    ),
    "dose:10 micromolar": standard_with(
        concentration=("concentration", lambda r: scaled(r["concentration"], -3) + " micromolar"),
        unit=(None, None),
    ),
    "dose:1e-5 M": standard_with(
        concentration=(
            "concentration",
            lambda r: f"{Decimal(r['concentration']).scaleb(-9).normalize():e} M",
        ),
        unit=(None, None),
    ),
    "dose:µmol/L unit column": standard_with(
        concentration=("concentration", lambda r: scaled(r["concentration"], -3)),
        unit=("unit", lambda r: "µmol/L"),
    ),
    "dose:pM": standard_with(
        concentration=("concentration", lambda r: scaled(r["concentration"], 3)),
        unit=("unit", lambda r: "pM"),
    ),
}


def write_variant(tmp_path, header, cells, delimiter=",", encoding="utf-8") -> Path:
    path = tmp_path / "map.csv"
    path.write_bytes(table_text(header, cells, delimiter).encode(encoding))
    return path


@pytest.mark.parametrize("name", list(VARIANTS))
def test_reworded_map_reads_as_the_canonical_map(tmp_path, canonical, name):
    header, cells = VARIANTS[name]
    table = read_platemap(write_variant(tmp_path, header, cells))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert describe_platemap(table)  # the preview works on every variant


@pytest.mark.parametrize(
    ("name", "delimiter", "encoding", "prefix"),
    [
        ("comma, UTF-8 with BOM", ",", "utf-8", b"\xef\xbb\xbf"),
        ("semicolon, decimal comma, BOM", ";", "utf-8", b"\xef\xbb\xbf"),
        ("semicolon, decimal comma, no BOM", ";", "utf-8", b""),
        ("tab, decimal comma", "\t", "utf-8", b""),
        ("tab, UTF-16 (Excel 'Unicode text')", "\t", "utf-16", b""),
        ("semicolon, Windows-1252", ";", "cp1252", b""),
    ],
)
def test_csv_dialects_and_encodings(tmp_path, canonical, name, delimiter, encoding, prefix):
    if delimiter == ",":
        header, cells = VARIANTS["dose:10 µM"]
    else:
        header = ["Well", "Cell line", "Compound", "Dose [µM]", "Role"]
        cells = [
            "well", "sample", "compound",
            lambda r: "" if is_vehicle(r) else scaled(r["concentration"], -3).replace(".", ","),
            "role",
        ]  # fmt: skip
    path = tmp_path / "map.csv"
    path.write_bytes(prefix + table_text(header, cells, delimiter).encode(encoding))
    table = read_platemap(path)
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)


def test_windows_1252_micro_sign_in_values(tmp_path, canonical):
    header, cells = VARIANTS["dose:10 µM"]
    path = tmp_path / "map.csv"
    path.write_bytes(table_text(header, cells).encode("cp1252"))
    table = read_platemap(path)
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert "Windows-1252" in table.attrs["platemap_notes"]["format"]


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def test_xlsx_numbers_and_sheet_choice(tmp_path, canonical):
    rows = [["Well", "Cell Line", "Drug", "Dose (nM)", "Type"]]
    rows += [
        [r["well"], r["sample"], r["compound"], float(r["concentration"]), r["role"]] for r in CANON
    ]
    path = write_xlsx(tmp_path / "map.xlsx", {"README": [["notes only"]], "Layout": rows})
    table = read_platemap(path, sheet="Layout")
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert read_platemap(path, sheet=2)[COLUMNS].equals(canonical)


def test_xlsx_text_cells_with_decimal_commas(tmp_path, canonical):
    rows = [["Well", "Sample", "Compound", "Concentration", "Role"]]
    rows += [
        [r["well"], r["sample"], r["compound"],
         "0,1 %" if is_vehicle(r) else r["concentration"].replace(".", ",") + " nM", r["role"]]
        for r in CANON
    ]  # fmt: skip
    table = read_platemap(write_xlsx(tmp_path / "map.xlsx", {"Sheet1": rows}))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)


def grid_rows(name: str, value, corner_title: bool = False) -> list[list[str]]:
    by_well = {r["well"]: r for r in CANON}
    head = [["" if corner_title else name] + [str(c) for c in range(1, 13)]]
    if corner_title:
        head = [[name], ["<>"] + [str(c) for c in range(1, 13)]]
    body = [
        [letter] + [value(by_well[f"{letter}{c:02d}"]) for c in range(1, 13)]
        for letter in "ABCDEFGH"
    ]
    return head + body


GRID_BLOCKS = [
    ("sample", lambda r: r["sample"]),
    ("drug", lambda r: r["compound"]),
    ("dose (nM)", lambda r: "" if is_vehicle(r) else r["concentration"]),
    ("well type", lambda r: r["role"]),
]


@pytest.mark.parametrize("corner_title", [False, True], ids=["name in corner", "title line"])
def test_plate_layout_grids_csv(tmp_path, canonical, corner_title):
    lines = []
    for name, value in GRID_BLOCKS:
        lines += grid_rows(name, value, corner_title) + [[]]
    path = tmp_path / "layout.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(lines)
    table = read_platemap(path)
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert "plate-layout grids" in table.attrs["platemap_notes"]["format"]


def test_plate_layout_grids_xlsx(tmp_path, canonical):
    rows = []
    for name, value in GRID_BLOCKS:
        rows += grid_rows(name, value) + [[]]
    table = read_platemap(write_xlsx(tmp_path / "layout.xlsx", {"Layout": rows}))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)


def test_row_and_column_instead_of_well(tmp_path, canonical):
    header = ["Row", "Column", "sample", "compound", "concentration", "unit", "role"]
    cells = [lambda r: r["well"][0], lambda r: str(int(r["well"][1:])), *STANDARD[1:]]
    table = read_platemap(write_variant(tmp_path, header, cells))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)


def test_numbered_rows_and_columns_instead_of_well(tmp_path, canonical):
    # rows numbered 1..8 as Harmony/Operetta write them (r01c02)
    header = ["Row", "Column", *STANDARD[1:]]
    cells = [lambda r: str(ord(r["well"][0]) - 64), lambda r: r["well"][1:], *STANDARD[1:]]
    table = read_platemap(write_variant(tmp_path, header, cells))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)


def test_title_lines_above_the_header(tmp_path, canonical):
    header, cells = VARIANTS["sample:Cell line"]
    path = tmp_path / "map.csv"
    text = "Plate map;;;;;\r\nExperiment 12, 2026-11-30;;;;;\r\n;;;;;\r\n"
    path.write_text(text + table_text(header, cells, ";"), encoding="utf-8")
    table = read_platemap(path)
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    warnings = table.attrs["platemap_notes"]["warnings"]
    assert any("line 1 above the header ignored: Plate map" in w for w in warnings)


def test_grid_with_zero_padded_column_numbers(tmp_path, canonical):
    lines = []
    for name, value in GRID_BLOCKS:
        block = grid_rows(name, value)
        block[0] = [block[0][0]] + [f"{c:02d}" for c in range(1, 13)]
        lines += block + [[]]
    path = tmp_path / "layout.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t").writerows(lines)
    pd.testing.assert_frame_equal(read_platemap(path)[COLUMNS], canonical)


def test_known_extra_fields_do_not_change_the_parse(tmp_path, canonical):
    header = [*STANDARD, "Plate", "Replicate", "Timepoint (h)"]
    cells = [
        *STANDARD, lambda r: "P1", lambda r: "2" if r["well"][0] in "FGH" else "1", lambda r: "48"
    ]  # fmt: skip
    table = read_platemap(write_variant(tmp_path, header, cells))
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert set(table["plate"]) == {"P1"} and set(table["map_timepoint"]) == {"48"}
    assert table.loc[table["well"] == "F02", "replicate"].item() == "2"


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (PLATE / "platemaps").iterdir()),
)
def test_committed_example_maps(canonical, name):
    table = read_platemap(PLATE / "platemaps" / name)
    pd.testing.assert_frame_equal(table[COLUMNS], canonical)
    assert table.attrs["platemap_notes"]["warnings"] == []
