"""``read_dose_table``: tidy dose-response tables read with the plate-map vocabulary, so
``screenlib fit`` takes a table with ``concentration`` + ``unit`` as labs write it."""

from __future__ import annotations

import pytest

from screenlib.doseresponse import fit_table
from screenlib.errors import InputError
from screenlib.platemap import read_dose_table

DOSES_NM = [10000 / 3**i for i in range(9)]


def european_table(tmp_path, blank_dose_line: bool = False):
    lines = ["Cell line;Drug;Dose;Units;response"]
    lines.append("SK-N-SH;DMSO;;;100")
    for dose in DOSES_NM:
        response = 100 / (1 + dose / 21.9)
        lines.append(
            f"SK-N-SH;milademetan;{f'{dose:.6g}'.replace('.', ',')};nM;"
            f"{f'{response:.8g}'.replace('.', ',')}"
        )
    if blank_dose_line:
        lines.append("SK-N-SH;milademetan;;nM;50")
    path = tmp_path / "table.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def test_european_tidy_table_fits_like_a_canonical_one(tmp_path):
    table = read_dose_table(european_table(tmp_path))
    assert {"sample", "compound", "concentration", "unit", "concentration_molar"} <= set(table)
    assert table["response"].dtype == float  # decimal commas read as numbers
    assert table["concentration_molar"].iloc[0] == 0.0  # DMSO without a dose: vehicle
    assert table["concentration_molar"].iloc[1] == pytest.approx(1e-5)
    fits = fit_table(table)
    assert len(fits) == 1 and fits["sample"].item() == "SK-N-SH"
    assert fits["ic50_molar"].item() == pytest.approx(21.9e-9, rel=1e-3)


def test_dose_row_without_a_dose_names_the_line(tmp_path):
    with pytest.raises(InputError, match=r"line 12, column 'Dose': sample well"):
        read_dose_table(european_table(tmp_path, blank_dose_line=True))
