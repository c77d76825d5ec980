"""Plate maps: units, roles, geometries and errors that name file, line and column."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screenlib.errors import InputError
from screenlib.platemap import (
    PlateGeometry,
    normalize_well,
    parse_concentration,
    read_platemap,
)


def write(tmp_path, text: str, name: str = "platemap.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("10 uM", None, 1e-5),
        ("10 µM", None, 1e-5),  # micro sign U+00B5
        ("10 μM", None, 1e-5),  # Greek mu U+03BC
        ("1e-5 M", None, 1e-5),
        ("10nM", None, 1e-8),
        ("3.3 pM", None, 3.3e-12),
        ("2 mM", None, 2e-3),
        ("21.9", "nM", 21.9e-9),
        ("0", "uM", 0.0),
        (".5 uM", None, 5e-7),
        ("", None, math.nan),
    ],
)
def test_parse_concentration_units(text, unit, expected):
    value = parse_concentration(text, unit)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "unit", "fragment"),
    [
        ("10 furlongs", None, "unknown concentration unit"),
        ("ten uM", None, "cannot parse"),
        ("10", None, "no unit"),
        ("-1 uM", None, "negative"),
        ("10 nM", "uM", "keep one"),
    ],
)
def test_parse_concentration_errors(text, unit, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_concentration(text, unit)


def test_normalize_well_forms():
    assert normalize_well("A1") == "A01"
    assert normalize_well(" b07 ") == "B07"
    assert normalize_well("AF48", PlateGeometry.from_size(1536)) == "AF48"
    with pytest.raises(InputError, match="outside a 96-well plate"):
        normalize_well("I01", PlateGeometry.from_size(96))
    with pytest.raises(InputError, match="malformed well"):
        normalize_well("1A")


def test_geometries():
    for size, rows, columns, last in ((96, 8, 12, "H12"), (384, 16, 24, "P24"),
                                      (1536, 32, 48, "AF48")):  # fmt: skip
        geometry = PlateGeometry.from_size(size)
        assert (geometry.n_rows, geometry.n_columns, geometry.n_wells) == (rows, columns, size)
        assert geometry.wells()[-1] == last
        assert len(set(geometry.wells())) == size
    with pytest.raises(InputError):
        PlateGeometry.from_size(100)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.one_of(st.none(), st.text(max_size=6)))
def test_parse_concentration_never_crashes(text, unit):
    try:
        value = parse_concentration(text, unit)
    except InputError:
        return
    assert math.isnan(value) or (math.isfinite(value) and value >= 0)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=6),
        st.builds(
            lambda r, c: f"{r}{c}",
            st.sampled_from(["A", "h", "P", "AF", "Z", "AG", "q"]),
            st.integers(min_value=-3, max_value=120),
        ),
    )
)
def test_normalize_well_never_crashes(text):
    try:
        well = normalize_well(text)
    except InputError:
        return
    assert normalize_well(well) == well  # idempotent
    assert well[-2:].isdigit()


GOOD = """well,sample,compound,concentration,role,replicate
A1,SK-N-SH,milademetan,10 uM,sample,1
A02,SK-N-SH,milademetan,10 µM,sample,2
A3,SK-N-SH,milademetan,3.33 μM,sample,1
A4,SK-N-SH,milademetan,1e-7 M,sample,1
A5,SK-N-SH,milademetan,100nM,sample,1
A6,SK-N-SH,DMSO,,vehicle,1
A7,SK-N-SH,DMSO,0 uM,DMSO,2
A8,SK-N-SH,staurosporine,1 uM,pos,1
A9,,,,empty,1
A10,SK-N-SH,milademetan,500 pM,Sample,1
A11,SK-N-SH,DMSO,,neg,1
A12,SK-N-SH,staurosporine,1 uM,positive_control,2
"""


def test_read_platemap_good(tmp_path):
    table = read_platemap(write(tmp_path, GOOD))
    assert list(table.columns[:7]) == [
        "well", "row", "column", "sample", "compound", "concentration_molar", "role",
    ]  # fmt: skip
    assert "replicate" in table.columns  # extra columns kept
    by_well = table.set_index("well")
    assert by_well.loc["A01", "concentration_molar"] == pytest.approx(1e-5)
    assert by_well.loc["A02", "concentration_molar"] == pytest.approx(1e-5)
    assert by_well.loc["A03", "concentration_molar"] == pytest.approx(3.33e-6)
    assert by_well.loc["A04", "concentration_molar"] == pytest.approx(1e-7)
    assert by_well.loc["A05", "concentration_molar"] == pytest.approx(1e-7)
    assert by_well.loc["A10", "concentration_molar"] == pytest.approx(5e-10)
    assert by_well.loc["A06", "concentration_molar"] == 0.0  # vehicle
    assert set(table["role"]) == {"sample", "negative_control", "positive_control", "empty"}
    assert (by_well.loc[["A06", "A07", "A11"], "role"] == "negative_control").all()
    assert by_well.loc["A10", "role"] == "sample"
    assert by_well.loc["A12", "column"] == 12 and by_well.loc["A12", "row"] == "A"


def test_read_platemap_unit_column_and_384(tmp_path):
    text = (
        "well,compound,concentration,concentration_unit,role\n"
        "P24,x,21.9,nM,sample\nA1,x,0,nM,vehicle\n"
    )
    table = read_platemap(write(tmp_path, text), geometry=384)
    assert table.set_index("well").loc["P24", "concentration_molar"] == pytest.approx(21.9e-9)
    text = "well;compound;concentration;unit;role\nAF48;x;5;uM;sample\n"
    table = read_platemap(write(tmp_path, text, "semi.csv"))
    assert table["concentration_molar"].iloc[0] == pytest.approx(5e-6)


@pytest.mark.parametrize(
    ("body", "line", "column", "fragment"),
    [
        ("A1,x,1 uM,sample\nI1,x,1 uM,sample\n", 3, "well", "outside a 96-well plate"),
        (
            "A1,x,1 uM,sample\nB2,x,1 uM,sample\nA01,x,2 uM,sample\n",
            4,
            "well",
            "duplicate well A01",
        ),
        ("A1,x,1 uM,sample\nA-1,x,1 uM,sample\n", 3, "well", "malformed well"),
        ("A1,x,10 uMol,sample\n", 2, "concentration", "unknown concentration unit"),
        ("A1,x,-5 nM,sample\n", 2, "concentration", "negative"),
        ("A1,x,5,sample\n", 2, "concentration", "no unit"),
        ("A1,x,5 nM,control\n", 2, "role", "unknown role"),
        ("A1,x,5 nM,vehicle\n", 2, "concentration", "vehicle well A01"),
    ],
)
def test_read_platemap_errors_name_file_line_column(tmp_path, body, line, column, fragment):
    path = write(tmp_path, "well,compound,concentration,role\n" + body)
    with pytest.raises(InputError) as error:
        read_platemap(path, geometry=96)
    message = str(error.value)
    assert str(path) in message
    assert f"line {line}" in message
    assert f"column '{column}'" in message
    assert fragment in message


def test_read_platemap_without_geometry_still_names_the_line(tmp_path):
    path = write(
        tmp_path, "well,compound,concentration,role\nA1,x,1 uM,sample\nA60,x,1 uM,sample\n"
    )
    with pytest.raises(InputError, match=r"line 3, column 'well': well 'A60' is outside a 1536"):
        read_platemap(path)


def test_read_platemap_without_roles_refuses_a_one_dose_compound(tmp_path):
    # without a role column a compound at one dose may be a positive control: refused
    path = write(tmp_path, "well,compound,concentration\nA1,x,1 uM\n")
    with pytest.raises(InputError, match=r"line 2: the map has no role column and compound 'x'"):
        read_platemap(path)


def test_read_platemap_ragged_row(tmp_path):
    path = write(tmp_path, "well,compound,concentration,role\nA1,x,1 uM\n")
    with pytest.raises(InputError, match="line 2: 3 fields but the header has 4"):
        read_platemap(path)
