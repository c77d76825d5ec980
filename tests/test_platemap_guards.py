"""Plate maps: never pool silently, never let a map column override a parsed or computed value,
and refuse what cannot be read with the line to fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screenlib.doseresponse.table import (
    annotation_columns,
    curve_split_columns,
    fit_table,
    plan_curves,
)
from screenlib.errors import InputError
from screenlib.platemap import describe_platemap, read_platemap

DOSES = [1e-5 / 3.0**i for i in range(8)]


def write(tmp_path, text: str, name: str = "map.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def dose_rows(prefix: str, sample: str, extra: str, column_offset: int = 0) -> list[str]:
    """Vehicle in column 1, eight doses in columns 2-9 of row ``prefix``."""
    rows = [f"{prefix}{1 + column_offset},{sample},DMSO,0,nM,vehicle,{extra}"]
    rows += [
        f"{prefix}{i + 2 + column_offset},{sample},drug-1,{d * 1e9:.6g},nM,sample,{extra}"
        for i, d in enumerate(DOSES)
    ]
    return rows


def responses(table: pd.DataFrame, ic50_of) -> pd.DataFrame:
    """A noiseless 4PL response per well, IC50 chosen per well by ``ic50_of(row)``."""
    conc = table["concentration_molar"].to_numpy()
    ic50 = np.array([ic50_of(r) for r in table.to_dict("records")])
    return table.assign(response=100.0 / (1.0 + conc / ic50))


def test_cell_line_column_gives_one_curve_per_line(tmp_path):
    # the defect of issue 16: a `cell_line` column pooled five lines into one curve
    lines = ["well,cell_line,compound,concentration,unit,role,extra"]
    lines += dose_rows("A", "SK-N-SH", "x") + dose_rows("B", "IMR-32", "x")
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    assert set(table["sample"]) == {"SK-N-SH", "IMR-32"}
    ic50 = {"SK-N-SH": 2e-8, "IMR-32": 5e-7}
    fits = fit_table(responses(table, lambda r: ic50[r["sample"]]))
    assert len(fits) == 2
    for row in fits.itertuples():
        assert row.ic50_molar == pytest.approx(ic50[row.sample], rel=1e-3)


def test_varying_annotation_splits_curves_and_says_so(tmp_path, caplog):
    # same sample and compound, two seeding densities: two curves, named in fits and attrs
    lines = ["well,sample,compound,concentration,unit,role,seeding"]
    lines += dose_rows("A", "SK-N-SH", "2000") + dose_rows("B", "SK-N-SH", "8000")
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    assert curve_split_columns(table) == (["seeding"], [])
    ic50 = {"2000": 2e-8, "8000": 4e-7}
    fits = fit_table(responses(table, lambda r: ic50[r["seeding"]]))
    assert sorted(fits["seeding"]) == ["2000", "8000"]
    assert fits.attrs["curve_group_columns"] == ["seeding"]
    assert set(fits["curve_split_by"]) == {"seeding"}
    for row in fits.itertuples():
        assert row.ic50_molar == pytest.approx(ic50[row.seeding], rel=1e-3)
        assert row.n_vehicle == 1  # each curve keeps its own row's vehicle
    assert "curves split by column(s) seeding" in caplog.text
    assert "curves are split by seeding" in describe_platemap(table)


def test_vehicle_without_the_annotation_joins_every_split_curve(tmp_path):
    lines = ["well,sample,compound,concentration,unit,role,lot"]
    lines += dose_rows("A", "S", "L1") + dose_rows("B", "S", "L2")
    lines = [line.replace("vehicle,L1", "vehicle,").replace("vehicle,L2", "vehicle,")
             for line in lines]  # fmt: skip
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    plan = plan_curves(table)
    assert list(plan["lot"]) == ["L1", "L2"] and list(plan["n_vehicle"]) == [2, 2]


def test_dose_labels_and_notes_do_not_split(tmp_path):
    # a dilution step labels single doses; a note column is free text: neither splits
    lines = ["well,sample,compound,concentration,unit,role,dilution_step,comment"]
    for row in "AB":
        lines.append(f"{row}1,S,DMSO,0,nM,vehicle,0,")
        lines += [
            f"{row}{i + 2},S,drug-1,{d * 1e9:.6g},nM,sample,{i + 1},{'bubble' if i == 3 else ''}"
            for i, d in enumerate(DOSES)
        ]
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    split, labels = curve_split_columns(table)
    assert split == [] and labels == ["dilution_step"]
    fits = fit_table(responses(table, lambda r: 1e-7))
    assert len(fits) == 1 and fits["comment"].item() == "bubble"  # carried into fits
    assert fits.attrs["point_label_columns"] == ["dilution_step"]


def test_constant_annotations_are_carried_into_fits(tmp_path):
    lines = ["well,sample,compound,concentration,unit,role,mycn_status"]
    lines += dose_rows("A", "IMR-32", "amplified") + dose_rows("B", "SH-SY5Y", "non-amplified")
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    fits = fit_table(responses(table, lambda r: 1e-7)).set_index("sample")
    assert fits.loc["IMR-32", "mycn_status"] == "amplified"
    assert "curve_split_by" not in fits.columns  # a per-sample constant splits nothing


def test_map_timepoint_and_plate_keep_curves_apart(tmp_path):
    lines = ["well,sample,compound,concentration,unit,role,time (h),plate"]
    lines += [f"{r},24,P1" for r in dose_rows("A", "S", "")]
    lines += [f"{r},48,P1" for r in dose_rows("B", "S", "")]
    lines = [line.replace(",,", ",", 1) if line.count(",") > 7 else line for line in lines]
    text = "\n".join(line.replace("vehicle,,", "vehicle,").replace("sample,,", "sample,")
                     for line in lines)  # fmt: skip
    table = read_platemap(write(tmp_path, text + "\n"))
    assert sorted(set(table["map_timepoint"])) == ["24", "48"]
    fits = fit_table(responses(table, lambda r: 1e-7 if r["map_timepoint"] == "24" else 1e-6))
    assert sorted(fits["map_timepoint"]) == ["24", "48"] and set(fits["plate"]) == {"P1"}
    by_time = fits.set_index("map_timepoint")["ic50_molar"]
    assert by_time["24"] == pytest.approx(1e-7, rel=1e-3)
    assert by_time["48"] == pytest.approx(1e-6, rel=1e-3)


CLASH = (
    "well,row,column,sample,compound,concentration,unit,role,concentration_molar,n_cells,"
    "apoptotic_fraction,flags,notes,ic50_molar\n"
    "A1,A,1,S,DMSO,0,nM,vehicle,999,7,0.9,x,edge,1\n"
    "A2,A,2,S,drug-1,10,nM,sample,999,7,0.9,x,,1\n"
)


def test_output_names_are_renamed_and_never_override(tmp_path, caplog):
    table = read_platemap(write(tmp_path, CLASH))
    by_well = table.set_index("well")
    assert by_well.loc["A02", "concentration_molar"] == pytest.approx(1e-8)  # parsed, not 999
    for name in ("concentration_molar", "n_cells", "apoptotic_fraction", "flags", "notes",
                 "ic50_molar"):  # fmt: skip
        assert f"map_{name}" in table.columns
    assert by_well.loc["A02", "map_n_cells"] == "7"
    assert list(table.columns).count("row") == 1 and by_well.loc["A02", "column"] == 2
    warnings = table.attrs["platemap_notes"]["warnings"]
    assert any("'n_cells' has the name of an output column" in w for w in warnings)
    assert "map_n_cells" in caplog.text


def test_clashing_map_goes_through_aggregation_and_fits(tmp_path):
    from screenlib.aggregate import aggregate_wells
    from screenlib.doseresponse import fit_wells
    from screenlib.gating import classify_cells, learn_gates
    from screenlib.gating.synthetic_cells import simulate_cell_table
    from screenlib.settings import FitSettings, GatingSettings

    lines = [CLASH.splitlines()[0]]
    extra = "999,7,0.9,x,edge,1"
    for row in "AB":
        lines.append(f"{row}1,{row},1,S,DMSO,0,nM,vehicle,{extra}")
        lines += [
            f"{row}{i + 2},{row},{i + 2},S,drug-1,{d * 1e9:.6g},nM,sample,{extra}"
            for i, d in enumerate(DOSES)
        ]
    platemap = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    cells = simulate_cell_table(platemap, cells_per_well=60, n_fields=1, seed=3)
    gating = GatingSettings()
    cells = classify_cells(cells, learn_gates(cells, platemap, gating), gating)
    wells = aggregate_wells(cells, platemap)
    # only the map's own columns may split curves: a new computed wells column must be an
    # output name (screenlib.platemap.is_output_column), or this fails
    assert set(annotation_columns(wells)) == {
        "map_concentration_molar", "map_n_cells", "map_apoptotic_fraction", "map_flags",
        "map_notes", "map_ic50_molar",
    }  # fmt: skip
    assert (wells["n_cells"] > 7).all()  # counted, not the map's 7
    assert (wells["map_n_cells"].astype(str) == "7").all()
    fits = fit_wells(wells, FitSettings())
    assert len(fits) == 2 and "map_ic50_molar" in fits.columns
    assert fits["ic50_molar"].notna().all()


def test_row_column_disagreeing_with_the_well_is_refused(tmp_path):
    path = write(tmp_path, "well,row,column,compound,role\nA1,B,1,DMSO,vehicle\n")
    with pytest.raises(InputError, match=r"line 2, column 'well': row 'B' / column '1' disagree"):
        read_platemap(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "well,compound,concentration,unit,role\nA1,x,,nM,sample\n",
            r"line 2, column 'concentration': sample well A01 has no usable concentration",
        ),
        (
            "well,compound,concentration,unit,role\nA1,x,0.1,%,sample\n",
            r"line 2, column 'concentration': '0.1' % \(percent\) is accepted for vehicle wells",
        ),
        (
            'well,compound,concentration,role\nA1,x,"0,5 uM",sample\n',
            r"line 2, column 'concentration': '0,5 uM' has a comma in a comma-separated file",
        ),
        (
            "well;compound;concentration;unit;role\nA1;x;10.000;nM;sample\nA2;x;1.000;nM;sample\n",
            r"'10.000' in a file with decimal commas may be a thousands separator",
        ),
        (
            "well;compound;concentration;unit;role\nA1;x;1.000,5;nM;sample\n",
            r"line 2, column 'concentration': cannot read the number '1.000,5'",
        ),
        (
            "well,sample,cell line,role\nA1,a,b,vehicle\n",
            r"columns 'sample' and 'cell line' both name the sample",
        ),
        (
            "well,compound,dose (mg/ml),role\nA1,x,5,sample\n",
            r"no column was read as one \(columns kept as annotations: \['dose \(mg/ml\)'\]\)",
        ),
        (
            "well,compound,concentration\nA1,DMSO,0\nA2,x,\nA3,x,1 uM\n",
            r"line 3, column 'compound': cannot tell the role of well A02",
        ),
        ("well,compound,concentration,role\nA1,x,1 uM,control\n", r"unknown role 'control'"),
        ("well,compound,Dose (nM),unit,role\nA1,x,5,uM,sample\n", r"keep one of them"),
    ],  # fmt: skip
)
def test_refusals_name_the_place_to_fix(tmp_path, text, fragment):
    with pytest.raises(InputError, match=fragment):
        read_platemap(write(tmp_path, text))


def test_roles_inferred_without_a_role_column_are_announced(tmp_path):
    lines = ["well,cell line,drug,dose (nM)", "A1,S,DMSO,0", "A2,,,"]
    lines += [f"A{i + 3},S,drug-1,{d * 1e9:.6g}" for i, d in enumerate(DOSES)]
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    assert list(table["role"][:3]) == ["negative_control", "empty", "sample"]
    warnings = table.attrs["platemap_notes"]["warnings"]
    assert any("role inferred for 10 well(s)" in w for w in warnings)
    assert "role inferred" in describe_platemap(table)


def test_treatment_is_the_compound_unless_its_values_are_roles(tmp_path):
    text = "well,treatment,conc (uM),type\nA1,DMSO,0,vehicle\nA2,drug-1,1,sample\n"
    table = read_platemap(write(tmp_path, text))
    assert list(table["compound"]) == ["DMSO", "drug-1"]
    assert list(table["role"]) == ["negative_control", "sample"]
    # `type` with values that are not role words stays an annotation
    text = "well,compound,conc (uM),role,type\nA1,DMSO,0,vehicle,adherent\nA2,d,1,sample,adherent\n"
    table = read_platemap(write(tmp_path, text))
    assert list(table["type"]) == ["adherent", "adherent"]


def test_several_plates_in_one_map(tmp_path):
    text = (
        "plate,well,compound,concentration,unit,role\n"
        "P1,A1,DMSO,0,nM,vehicle\nP1,A2,x,1,uM,sample\n"
        "P2,A1,DMSO,0,nM,vehicle\nP2,A2,x,2,uM,sample\n"
    )
    path = write(tmp_path, text)
    both = read_platemap(path)
    assert len(both) == 4 and list(both["plate"]) == ["P1", "P1", "P2", "P2"]
    second = read_platemap(path, plate="P2")
    assert second.set_index("well").loc["A02", "concentration_molar"] == pytest.approx(2e-6)
    with pytest.raises(InputError, match=r"no rows for plate 'P3'; its plates: \['P1', 'P2'\]"):
        read_platemap(path, plate="P3")
    with pytest.raises(InputError, match="duplicate well A01"):
        read_platemap(write(tmp_path, text.replace("P2,A1", "P1,A1"), "dup.csv"))


def test_xlsx_errors(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["well", "compound", "role"])
    book.save(tmp_path / "map.xlsx")
    with pytest.raises(InputError, match=r"has no sheet 'Layout'; its sheets: \['Sheet'\]"):
        read_platemap(tmp_path / "map.xlsx", sheet="Layout")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(InputError, match=r"\.xls files are not read; save it as \.xlsx or CSV"):
        read_platemap(tmp_path / "old.xls")


def test_formula_like_text_is_kept_as_text(tmp_path):
    text = "well,sample,compound,concentration,unit,role,note\nA1,=1+1,DMSO,0,nM,vehicle,@x\n"
    table = read_platemap(write(tmp_path, text))
    assert table["sample"].item() == "=1+1" and table["note"].item() == "@x"


def test_no_value_markers(tmp_path):
    # 'n/a' / '-' on a control is no concentration; on a sample well it is refused
    text = "well,compound,concentration,role\nA1,DMSO,-,vehicle\nA2,st,n/a,pos\nA3,x,1 uM,sample\n"
    table = read_platemap(write(tmp_path, text))
    assert table["concentration_molar"].iloc[0] == 0.0
    assert np.isnan(table["concentration_molar"].iloc[1])
    with pytest.raises(InputError, match="line 2, column 'concentration': sample well A01 has no"):
        read_platemap(write(tmp_path, "well,compound,concentration,role\nA1,x,n/a,sample\n"))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    "well",
                    "A1",
                    "b02",
                    "Cell line",
                    "drug",
                    "dose (nM)",
                    "role",
                    "vehicle",
                    "pos",
                    "",
                    "0",
                    "10",
                    "1,5",
                    "0.1 %",
                    "µM",
                    "type",
                    "=x",
                    "1",
                    "2",
                    "12",
                    "A",
                    "B",
                ]
            ),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([",", ";", "\t"]),
)
def test_read_platemap_never_crashes(tmp_path, rows, delimiter):
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n", encoding="utf-8")
    try:
        table = read_platemap(path)
    except InputError:
        return
    assert set(table["role"]) <= {"sample", "negative_control", "positive_control", "empty"}
    describe_platemap(table)


def test_a_measurement_column_with_repeated_readings_does_not_split(tmp_path):
    # saturated readings repeat across doses; one repeated value is not a curve grouping
    lines = ["well,sample,compound,concentration,unit,role,od570"]
    for row in "AB":
        lines.append(f"{row}1,S,DMSO,0,nM,vehicle,1.2")
        for i, d in enumerate(DOSES):
            reading = 0.05 if i < 3 else 0.1 * i + (0.01 if row == "B" else 0.0)
            lines.append(f"{row}{i + 2},S,drug-1,{d * 1e9:.6g},nM,sample,{reading:.3f}")
    table = read_platemap(write(tmp_path, "\n".join(lines) + "\n"))
    assert curve_split_columns(table) == ([], ["od570"])
    fits = fit_table(responses(table, lambda r: 1e-7))
    assert len(fits) == 1 and fits["od570"].item().startswith("(")


def test_platemap_command_previews_a_workbook_sheet(tmp_path, capsys):
    from screenlib.cli import main

    examples = Path(__file__).resolve().parents[1] / "example_plates/milademetan_nb/platemaps"
    main(["platemap", str(examples / "platemap.xlsx"), "--sheet", "Plate map"])
    out = capsys.readouterr().out
    assert re.search(r"'Cell Line' +-> sample", out) and "sheet 'Plate map'" in out
    assert "Curves to fit (5; each on every readout): sample x compound" in out
    assert "  A    V  a1  a2" in out  # the plate picture: vehicle, then the top doses
    with pytest.raises(SystemExit) as stop:
        main(["platemap", str(examples / "platemap.xlsx"), "--sheet", "Layout"])
    assert stop.value.code == 2
    assert "has no sheet 'Layout'" in capsys.readouterr().err
