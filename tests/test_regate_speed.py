"""A gating change re-runs from the command line without paying for what it does not use:
scipy.stats, Dask, tqdm and (with --no-report) matplotlib are not imported, and the
scipy.stats-free statistics give scipy's numbers exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from test_bad_inputs import GOOD_PLATEMAP, screenlib, write_text

from screenlib.aggregate.stats import (
    average_ranks,
    mann_whitney,
    normal_quantile,
    spearman,
    wilson_interval,
)
from screenlib.gating._robust import (
    GlogScale,
    NegativePopulation,
    PositivePopulation,
    bayes_boundary,
    gaussian_kde_1d,
    normal_logpdf,
    normal_pdf,
    positive_share_boundary,
    theil_sen_slope,
)
from screenlib.gating.objects import connected_groups
from screenlib.orchestrate.run import CELLS_CACHE, concatenate_parts

# modules a re-gate with every field finished has no use for (scipy.stats, csgraph, Dask and
# matplotlib cost about 1.3 s, 0.15 s, 0.2-0.4 s and 0.7 s of a fresh process; zarr 0.3 s:
# the plate's metadata and chunk checksums are read without it)
UNUSED_ON_REGATE = (
    "scipy.stats", "scipy.sparse.csgraph", "dask", "distributed", "tqdm", "matplotlib", "zarr",
)  # fmt: skip

REGATE_PROBE = """
import json, sys
from screenlib.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("MODULES", json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def modules_after(args: list) -> set[str]:
    """The modules a fresh ``screenlib`` process running ``args`` had loaded at its end."""
    done = subprocess.run(
        [sys.executable, "-c", REGATE_PROBE, *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.split("MODULES", 1)[1]))


def test_a_regate_imports_only_what_it_uses(export, tmp_path):
    """A fresh process re-gating a finished run (no --scheduler: the default local cluster)
    imports none of scipy.stats, Dask, tqdm or matplotlib, and its tables still change with
    the gate."""
    gates = "\n[gating]\nannexin_gate = {}\npi_gate = 200.0\nbleedthrough_annexin_to_pi = 0.0\n"
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    out = tmp_path / "out"
    first = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                      "--settings", write_text(tmp_path / "a.toml", gates.format(200.0)),
                      "--scheduler", "sync", "--no-report")  # fmt: skip
    assert first.returncode == 0, first
    args = ["-q", "run", export, "--platemap", platemap, "--out", out, "--settings",
            write_text(tmp_path / "b.toml", gates.format(300.0)), "--no-report"]  # fmt: skip
    loaded = modules_after(args)
    assert "screenlib.orchestrate.finalize" in loaded  # the probe saw the run's modules
    assert not loaded & set(UNUSED_ON_REGATE), sorted(loaded & set(UNUSED_ON_REGATE))
    manifest = json.loads((Path(out) / "run.json").read_text())
    assert manifest["n_fields_todo"] == 0 and manifest["n_fields_reused"] == 4
    assert "300" in (Path(out) / "gates.json").read_text()


# drawn as shapes with Pillow (report/canvas.py), with the colour maps' tables
# (report/colormaps.npz), the report needs nothing of matplotlib (its figure machinery about
# 0.7 s, even its colour maps and tick locators 0.15 s); scikit-image's segmentation module is
# not needed for the gallery
UNUSED_BY_THE_REPORT = ("matplotlib", "dask", "distributed",
                        # the segmentation and the flow scatter gate: no field is analysed
                        "skimage", "scipy.ndimage", "screenlib.analysis.kernel",
                        "screenlib.flow.scatter")  # fmt: skip


def test_a_regate_with_its_report_draws_without_matplotlib(export, tmp_path):
    """A fresh process re-gating a finished run writes the report, its gating plot drawn
    again for the new gate, without importing matplotlib."""
    gates = "\n[gating]\nannexin_gate = {}\npi_gate = 200.0\nbleedthrough_annexin_to_pi = 0.0\n"
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    out = tmp_path / "out"
    first = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                      "--settings", write_text(tmp_path / "a.toml", gates.format(200.0)),
                      "--scheduler", "sync")  # fmt: skip
    assert first.returncode == 0, first
    gating_png = Path(out) / "figures" / "gating_annexin_pi.png"
    before = gating_png.read_bytes()
    args = ["-q", "run", export, "--platemap", platemap, "--out", out, "--settings",
            write_text(tmp_path / "b.toml", gates.format(300.0))]  # fmt: skip
    loaded = modules_after(args)
    assert "screenlib.report._report" in loaded  # the probe saw the report written
    assert not loaded & set(UNUSED_BY_THE_REPORT), sorted(loaded & set(UNUSED_BY_THE_REPORT))
    assert "skimage.segmentation._find_boundaries" not in loaded  # gallery outlines in numpy
    assert gating_png.read_bytes() != before  # drawn again for the new gate
    assert gating_png.read_bytes().startswith(b"\x89PNG")


def _samples(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 1, 40), rng.normal(0.5, 1, 60)),  # continuous: no ties
        (rng.integers(0, 5, 30).astype(float), rng.integers(1, 6, 25).astype(float)),  # ties
        (rng.normal(0, 1, 5), rng.normal(1, 1, 7)),  # small, no ties: exact distribution
        (rng.integers(0, 3, 6).astype(float), rng.integers(0, 3, 4).astype(float)),  # small, ties
        (np.full(12, 2.0), np.full(9, 2.0)),  # all tied
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_tests_give_scipys_numbers(seed):
    for x, y in _samples(seed):
        expected = stats.mannwhitneyu(x, y, alternative="two-sided")
        u, p = mann_whitney(x, y)
        assert u == expected.statistic
        np.testing.assert_array_equal(p, expected.pvalue)
        np.testing.assert_array_equal(average_ranks(np.concatenate([x, y]))[0],
                                      stats.rankdata(np.concatenate([x, y])))  # fmt: skip
        rho, p_rho = spearman(x[: len(y)], y[: len(x)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns of a constant input
            reference = stats.spearmanr(x[: len(y)], y[: len(x)])
        np.testing.assert_array_equal([rho, p_rho], [reference.statistic, reference.pvalue])
    # a perfect monotone relation and a dose series with replicates
    x = np.repeat(np.arange(6.0), 3)
    for y in (-x, -x + np.random.default_rng(seed).normal(0, 0.5, x.size)):
        reference = stats.spearmanr(x, y)
        np.testing.assert_array_equal(spearman(x, y), [reference.statistic, reference.pvalue])


def test_normal_quantile_and_wilson_interval_are_scipys():
    for p in (0.5, 0.8, 0.9, 0.95, 0.975, 0.995):
        assert normal_quantile(p) == stats.norm.ppf(p)
    low, high = wilson_interval(np.array([0, 3, 50]), np.array([10, 10, 60]))
    z = stats.norm.ppf(0.975)
    n, k = np.array([10.0, 10.0, 60.0]), np.array([0.0, 3.0, 50.0])
    centre = (k / n + z**2 / (2 * n)) / (1 + z**2 / n)
    np.testing.assert_allclose(low + high, 2 * centre, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gating_densities_and_slope_are_scipys(seed):
    rng = np.random.default_rng(seed)
    n_neg, n_pos = int(rng.integers(200, 3000)), int(rng.integers(5, 800))
    x = np.concatenate([rng.normal(0, 1, n_neg), rng.normal(6, 1.5, n_pos)])
    grid = np.linspace(2, 6, 801)
    factor = x.size ** (-1 / 5) / float(np.std(x))
    # bit for bit: the same sums in the same order (scipy's loop adds kernels in data order)
    expected = stats.gaussian_kde(x, bw_method=factor)(grid)
    # whatever the block of kernels added at a time (a speed setting only)
    for chunk in (7, 256, 5000):
        np.testing.assert_array_equal(gaussian_kde_1d(x, factor, grid, chunk=chunk), expected)
    np.testing.assert_array_equal(normal_pdf(grid, 6.0, 1.5), stats.norm.pdf(grid, 6.0, 1.5))
    np.testing.assert_array_equal(normal_logpdf(grid, 0.3, 0.9), stats.norm.logpdf(grid, 0.3, 0.9))
    b = rng.normal(0, 1, 300)
    b[:40] = b[40:80]  # repeated x values: their pairs carry no slope
    y = 0.3 * b + rng.normal(0, 0.2, 300)
    assert theil_sen_slope(y, b) == stats.theilslopes(y, b).slope


@pytest.mark.parametrize(
    ("n_positive", "center", "weight"),
    [(600, 5.0, 0.13), (150, 4.0, 0.035), (2500, 6.5, 0.4), (4000, 4.0, 0.5), (40, 4.0, 0.002)],
)
def test_gate_boundaries_match_the_scipy_formulas(n_positive, center, weight):
    """The two boundary rules give the values the scipy.stats formulas give over the whole
    grid, wherever on it the boundary falls (the share is computed block by block, from below,
    only up to the boundary)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 4000), rng.normal(center, 1, n_positive)])
    negative = NegativePopulation(GlogScale(1.0), center=0.0, spread=1.0, n_cells=4000)
    positive = PositivePopulation(weight=weight, center=center, spread=1.0)
    grid = np.linspace(0.0, center, 4001)
    above = np.log(weight) + stats.norm.logpdf(grid, center, 1.0) >= np.log1p(-weight) + (
        stats.norm.logpdf(grid, 0.0, 1.0)
    )
    bayes = grid[np.argmax(above)]
    assert bayes_boundary(negative, positive) == bayes
    grid = np.linspace(2.0, center, 801)
    observed = stats.gaussian_kde(x, bw_method=x.size ** (-1 / 5) / float(np.std(x)))(grid)
    reached = weight * stats.norm.pdf(grid, center, 1.0) / observed >= 0.5
    expected = (grid[np.argmax(reached)], "positive share") if reached.any() else (
        max(bayes, 2.0), "model"
    )  # fmt: skip
    assert positive_share_boundary(x, negative, positive) == expected


def _write_part(path: Path, values: list[float]) -> None:
    field = int(path.name.split("_f")[1][0])
    table = pa.table({"well": ["A01"] * len(values), "field": [field] * len(values),
                      "timepoint": [0] * len(values), "label": list(range(1, len(values) + 1)),
                      "annexin": values})  # fmt: skip
    # uncompressed, plain: another value of the same type keeps the file's size
    pq.write_table(table, path, compression="none", use_dictionary=False)


def test_concatenated_parts_are_reused_only_while_every_part_is_the_same(tmp_path):
    """A re-gate reads the finished fields' cells from one kept file instead of one Parquet
    file per field, but only while the parts are byte for byte what it was made of: a part
    rewritten with the same size and modification time is read again."""
    parts = tmp_path / "parts"
    parts.mkdir()
    _write_part(parts / "A01_f0_t0.parquet", [1.0, 2.0])
    _write_part(parts / "A01_f1_t0.parquet", [3.0])
    stems = ["A01_f0_t0", "A01_f1_t0"]
    first = concatenate_parts(parts, stems)
    assert (parts / CELLS_CACHE).is_file()
    kept = (parts / CELLS_CACHE).stat().st_mtime_ns
    again = concatenate_parts(parts, stems)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert (parts / CELLS_CACHE).stat().st_mtime_ns == kept  # read, not written again

    changed = parts / "A01_f1_t0.parquet"
    before = changed.stat()
    _write_part(changed, [30.0])
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert changed.stat().st_size == before.st_size
    assert list(concatenate_parts(parts, stems)["annexin"]) == [1.0, 2.0, 30.0]
    assert list(concatenate_parts(parts, stems[:1])["annexin"]) == [1.0, 2.0]

    (parts / CELLS_CACHE).write_bytes(b"damaged")  # an unreadable copy is made again
    assert list(concatenate_parts(parts, stems)["annexin"]) == [1.0, 2.0, 30.0]
    assert pq.ParquetFile(parts / CELLS_CACHE).metadata.num_rows == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_groups_are_scipys_components(seed):
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(seed)
    n = 300
    rows = rng.integers(0, n, 120)
    cols = np.minimum(rows + rng.integers(1, 30, 120), n - 1)  # chains and clumps, 1-node gaps
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    expected_n, expected = connected_components(graph, directed=False)
    found_n, found = connected_groups(n, rows, cols)
    assert found_n == expected_n
    np.testing.assert_array_equal(found, expected)


def test_labels_read_without_zarr_are_zarrs(tmp_path):
    """Label images are read straight from their chunk files (as pixels are): the same arrays
    zarr reads, zeros where nothing was written, and a flipped byte is named."""
    import zarr

    from screenlib.errors import InputError
    from screenlib.store import PlateLayout, create_plate, open_plate

    layout = PlateLayout(name="P", wells=["A01", "B02"], channel_names=["DAPI", "FITC"],
                         shape=(2, 2, 1, 24, 32), n_fields=2, pixel_size_um=0.65)  # fmt: skip
    plate = create_plate(tmp_path / "p.zarr", layout)
    plate.create_labels("nuclei")
    rng = np.random.default_rng(3)
    written = rng.integers(0, 300, (24, 32)).astype(np.int32)
    plate.write_labels("B02", 1, written, timepoint=1)
    reopened = open_plate(tmp_path / "p.zarr")
    stored = zarr.open_array(tmp_path / "p.zarr" / "B" / "2" / "1" / "labels" / "nuclei" / "0")
    for well, field, timepoint in [("B02", 1, 1), ("B02", 1, 0), ("A01", 0, 1)]:
        labels = reopened.read_labels(well, field, timepoint)
        assert labels.dtype == np.int32 and labels.shape == (24, 32)
        if well == "B02":
            np.testing.assert_array_equal(labels, stored[timepoint, 0])
    np.testing.assert_array_equal(reopened.read_labels("B02", 1, 1), written)
    assert not reopened.read_labels("A01", 0, 1).any()
    chunk = tmp_path / "p.zarr" / "B" / "2" / "1" / "labels" / "nuclei" / "0" / "c" / "1" / "0"
    chunk = next(p for p in chunk.rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    with pytest.raises(InputError, match="B02 field 1 timepoint 1 are damaged"):
        open_plate(tmp_path / "p.zarr").read_labels("B02", 1, 1)
