"""`screenlib fit` outputs: short table, full table, curve figures, HTML page, MTT viabilities,
.xlsx input -- real files through the real command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from screenlib.cli import main
from screenlib.doseresponse import CORE_COLUMNS

DOSES = 1e-5 / 3.0 ** np.arange(10)
CONC = np.repeat(DOSES, 3)


def _tidy(rng) -> pd.DataFrame:
    rows = []
    for sample, ic50 in (("SK-N-SH", 21.9e-9), ("LAN-5", 44.1e-9)):
        response = 100 / (1 + CONC / ic50) + rng.normal(0, 4, CONC.size)
        rows.append(
            pd.DataFrame(
                {
                    "sample": sample,
                    "compound": "milademetan",
                    "concentration_molar": CONC,
                    "response": response,
                    "unit": "nM",
                }
            )  # fmt: skip
        )
    return pd.concat(rows, ignore_index=True)


def _run(args):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_fit_writes_short_table_full_table_figures_and_page(tmp_path, capsys):
    _tidy(np.random.default_rng(3)).to_csv(tmp_path / "tidy.csv", index=False)
    out = tmp_path / "results" / "fits.csv"
    main(["fit", str(tmp_path / "tidy.csv"), "--out", str(out)])
    printed = capsys.readouterr().out
    core = pd.read_csv(out)
    assert list(core.columns) == [c for c in CORE_COLUMNS if c != "timepoint"]
    assert (core.unit == "nM").all()
    assert core.set_index("sample").ic50["SK-N-SH"] == pytest.approx(21.9, rel=0.3)
    assert core.ic50_text.str.endswith(" nM").all()
    full = pd.read_parquet(tmp_path / "results" / "fits_full.parquet")
    assert len(full) == 2 and {"ic50_molar", "notes", "f_test_p_value"} <= set(full.columns)
    png = tmp_path / "results" / "fits_curves.png"
    svg = tmp_path / "results" / "fits_curves.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    svg_text = svg.read_text()
    assert "<svg" in svg_text and ">milademetan (nM)</text>" in svg_text  # editable axis label
    page = (tmp_path / "results" / "fits.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page and "SK-N-SH" in page
    assert "fits_full.parquet" in printed and "fits.html" in printed


def test_fit_reads_an_xlsx_table(tmp_path, capsys):
    pytest.importorskip("openpyxl")
    table = _tidy(np.random.default_rng(4))
    table.to_excel(tmp_path / "tidy.xlsx", index=False)
    main(["fit", str(tmp_path / "tidy.xlsx"), "--out", str(tmp_path / "fits.csv")])
    core = pd.read_csv(tmp_path / "fits.csv")
    assert len(core) == 2 and core.ic50.notna().all()


def test_fit_refuses_a_broken_xlsx_with_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook \xff\xfe")
    code = _run(["fit", str(broken), "--out", str(tmp_path / "fits.csv")])
    text = capsys.readouterr()
    assert code == 2 and "broken.xlsx" in text.out + text.err
    assert "UnicodeDecodeError" not in text.out + text.err


def test_mtt_fit_writes_the_normalised_viabilities(tmp_path, capsys):
    from test_doseresponse import _write_mtt_plate

    plate, layout = _write_mtt_plate(tmp_path, np.random.default_rng(5))
    main(["fit", str(plate), "--mtt", "--layout", str(layout), "--out", str(tmp_path / "m.csv")])
    viability = pd.read_csv(tmp_path / "m_viability.csv")
    assert {"well", "absorbance", "response", "role"} <= set(viability.columns)
    vehicle = viability[viability.role == "negative_control"]
    assert vehicle.response.mean() == pytest.approx(100.0, abs=1e-9)
    assert (tmp_path / "m_curves.png").exists() and (tmp_path / "m.html").exists()


def test_fit_help_names_the_outputs(capsys):
    try:
        main(["fit", "--help"])
    except SystemExit as exit_info:
        assert exit_info.code in (0, None)
    text = capsys.readouterr().out
    assert "OUT_full.parquet" in text and "xlsx" in text and "OUT_viability.csv" in text
