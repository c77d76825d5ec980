"""Compare the tables of two runs (or two table files): are the results the same?

Run::

    python benchmarks/compare_outputs.py DIR_A DIR_B            # wells.csv, fits.csv, cells.parquet
    python benchmarks/compare_outputs.py A/fits.csv B/fits.csv  # two tables
    python benchmarks/compare_outputs.py DIR_A DIR_B --rtol 1e-9 --tables fits.csv

Rows are matched on the key columns each table has (plate, well, sample, compound, readout,
timepoint, field, label ...), never on row order alone. Every column present in both tables is
compared: text exactly (missing equals empty), numbers exactly (NaN equals NaN) unless
``--rtol``/``--atol`` allow a tolerance. A CSV and a Parquet table compare too. Columns
present in only one table are listed (a deliberate rename or removal shows there; it is not a
failure unless ``--strict-columns``). Exit status 0 when equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_TABLES = ("wells.csv", "fits.csv", "cells.parquet")
KEY_CANDIDATES = (
    "plate",
    "well",
    "field",
    "label",
    "timepoint",
    "sample",
    "compound",
    "readout",
    "concentration_molar",
)


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    # read text as text: '' and 'NA' stay distinguishable from NaN numbers only via dtype
    return pd.read_csv(path, keep_default_na=True)


def _aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Both tables sorted on their shared key columns (row order when there are none)."""
    keys = [k for k in KEY_CANDIDATES if k in a.columns and k in b.columns]
    if keys and not a.duplicated(keys).any() and not b.duplicated(keys).any():
        a = a.sort_values(keys, kind="stable").reset_index(drop=True)
        b = b.sort_values(keys, kind="stable").reset_index(drop=True)
    else:
        keys = []
        a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    return a, b, keys


def compare_columns(x: pd.Series, y: pd.Series, rtol: float, atol: float) -> tuple[int, str]:
    """Number of differing rows and a short description of the largest difference."""
    numeric_x = pd.api.types.is_numeric_dtype(x) or pd.api.types.is_bool_dtype(x)
    numeric_y = pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)
    if numeric_x and numeric_y:
        u, v = x.to_numpy(float), y.to_numpy(float)
        both_nan = np.isnan(u) & np.isnan(v)
        with np.errstate(invalid="ignore"):
            same = both_nan | (u == v) | (np.abs(u - v) <= atol + rtol * np.abs(v))
        differ = ~same
        if not differ.any():
            return 0, ""
        with np.errstate(invalid="ignore", divide="ignore"):
            absolute = np.where(differ, np.abs(u - v), 0.0)
            relative = np.where(differ, absolute / np.maximum(np.abs(v), 1e-300), 0.0)
        i = int(np.nanargmax(np.where(np.isnan(absolute), np.inf, absolute)))
        return int(differ.sum()), (
            f"max |diff| {np.nanmax(absolute):.3g} (rel {np.nanmax(relative):.3g}), "
            f"row {i}: {u[i]!r} vs {v[i]!r}"
        )
    # a missing text and an empty one are the same (CSV reads '' back as missing, Parquet not)
    sx = x.astype("string").fillna("")
    sy = y.astype("string").fillna("")
    differ = (sx != sy).to_numpy()
    if not differ.any():
        return 0, ""
    i = int(np.flatnonzero(differ)[0])
    return int(differ.sum()), f"row {i}: {sx.iloc[i]!r} vs {sy.iloc[i]!r}"


def compare_tables(
    a: pd.DataFrame, b: pd.DataFrame, rtol: float = 0.0, atol: float = 0.0
) -> tuple[bool, list[str]]:
    """``(equal, lines)``: equal when rows match and every shared column agrees."""
    lines = []
    only_a = [c for c in a.columns if c not in b.columns]
    only_b = [c for c in b.columns if c not in a.columns]
    if only_a:
        lines.append(f"  only in A ({len(only_a)}): {', '.join(map(str, only_a))}")
    if only_b:
        lines.append(f"  only in B ({len(only_b)}): {', '.join(map(str, only_b))}")
    if len(a) != len(b):
        lines.append(f"  rows differ: {len(a)} vs {len(b)}")
        return False, lines
    a, b, keys = _aligned(a, b)
    lines.append(f"  {len(a)} rows matched on {', '.join(keys) if keys else 'row order'}")
    equal = True
    shared = [c for c in a.columns if c in b.columns]
    for column in shared:
        n, text = compare_columns(a[column], b[column], rtol, atol)
        if n:
            equal = False
            lines.append(f"  DIFFERS {column}: {n} row(s); {text}")
    lines.append(f"  {len(shared)} shared column(s) {'identical' if equal else 'compared'}")
    return equal, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="run folder or table file (reference)")
    parser.add_argument("b", type=Path, help="run folder or table file (to check)")
    parser.add_argument("--tables", nargs="+", default=list(DEFAULT_TABLES))
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (numbers)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (numbers)")
    parser.add_argument(
        "--strict-columns", action="store_true", help="fail when the column sets differ"
    )
    args = parser.parse_args(argv)
    if args.a.is_file() and args.b.is_file():
        pairs = [(args.a.name, args.a, args.b)]
    else:
        pairs = [(name, args.a / name, args.b / name) for name in args.tables]
    all_equal = True
    for name, path_a, path_b in pairs:
        if not (path_a.exists() and path_b.exists()):
            print(f"{name}: missing in {'A' if not path_a.exists() else 'B'}")
            all_equal = False
            continue
        table_a, table_b = read_table(path_a), read_table(path_b)
        equal, lines = compare_tables(table_a, table_b, args.rtol, args.atol)
        if args.strict_columns and set(table_a.columns) != set(table_b.columns):
            equal = False
        print(f"{name}: {'SAME' if equal else 'DIFFERENT'}")
        print("\n".join(lines))
        all_equal &= equal
    print("ALL SAME" if all_equal else "DIFFERENCES FOUND")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
