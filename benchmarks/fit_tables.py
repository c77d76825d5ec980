"""Write a fixed set of dose-response tables for checking that fits do not change.

The tables cover what ``screenlib fit`` reads: a tidy table of continuous responses (clean,
noisy, partial, flat, above/below the tested range, steep, with outliers and vehicles), a tidy
table of counts (binomial fits) and an MTT plate-reader grid with its plate map. Fit them
before and after a change and compare with ``benchmarks/compare_outputs.py``::

    python benchmarks/fit_tables.py /tmp/fit_tables
    for t in tidy counts; do screenlib fit /tmp/fit_tables/$t.csv --out /tmp/a/$t.csv; done
    screenlib fit /tmp/fit_tables/mtt_plate.csv --mtt --layout /tmp/fit_tables/mtt_layout.csv \
        --out /tmp/a/mtt.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DOSES = 1e-5 / 3.0 ** np.arange(10)  # 10-point 3-fold dilution from 10 uM
CONC = np.repeat(DOSES, 3)


def _logistic(conc, ic50, hill, e0, e_inf):
    with np.errstate(divide="ignore"):
        return e0 + (e_inf - e0) / (1 + (ic50 / np.maximum(conc, 1e-300)) ** hill)


# (name, ic50 molar, hill, zero-dose response, infinite-dose response, noise sd)
SHAPES = [
    ("clean", 2e-8, 1.0, 100, 0, 3),
    ("noisy", 5e-8, 1.2, 100, 5, 12),
    ("partial", 3e-7, 0.8, 100, 55, 5),
    ("flat", 1e-7, 1.0, 100, 100, 6),
    ("above_range", 3e-4, 1.0, 100, 0, 5),
    ("near_top", 4e-6, 1.0, 100, 0, 5),
    ("below_range", 1e-11, 1.0, 100, 0, 5),
    ("steep", 1.1e-7, 8.0, 100, 0, 3),
    ("shallow", 1e-7, 0.4, 100, 0, 4),
    ("increasing", 4e-8, 1.3, 5, 80, 4),
]


def tidy_table(seed: int = 0) -> pd.DataFrame:
    """Continuous responses: every shape for three samples, vehicles and one outlier well."""
    rng = np.random.default_rng(seed)
    frames = []
    conc = np.append(CONC, np.zeros(4))
    for sample in ("A", "B", "C"):
        for name, ic50, hill, e0, e_inf, sd in SHAPES:
            response = _logistic(conc, ic50, hill, e0, e_inf) + rng.normal(0, sd, conc.size)
            if sample == "B":
                response[5] += 60  # one wild well
            frames.append(
                pd.DataFrame(
                    {
                        "sample": sample,
                        "compound": name,
                        "concentration_molar": conc,
                        "response": response,
                        "well": [f"{name[:3]}{i:02d}" for i in range(conc.size)],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def counts_table(seed: int = 1) -> pd.DataFrame:
    """Counts (apoptotic of total cells), fitted with the binomial likelihood."""
    rng = np.random.default_rng(seed)
    frames = []
    conc = np.append(CONC, np.zeros(3))
    for sample, total in (("A", 1500), ("B", 80)):
        for name, ic50, hill, _e0, _e_inf, _sd in SHAPES:
            top = 0.3 if name == "partial" else (0.04 if name == "flat" else 0.75)
            p = _logistic(conc, ic50, hill, 0.04, top)
            n_total = rng.poisson(total, conc.size)
            frames.append(
                pd.DataFrame(
                    {
                        "sample": sample,
                        "compound": name,
                        "concentration_molar": conc,
                        "n_positive": rng.binomial(n_total, p),
                        "n_total": n_total,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def mtt_plate(directory: Path, seed: int = 2) -> None:
    """A 96-well MTT grid as a reader exports it, with its plate map."""
    rng = np.random.default_rng(seed)
    rows = "ABCDEFGH"
    layout = ["well,role,sample,compound,concentration"]
    absorbance = np.full((8, 12), np.nan)
    blank_od, vehicle_od = 0.06, 1.25
    for r, row in enumerate(rows):
        for c in range(12):
            if c == 0:
                role, conc = ("blank", 0.0) if r < 4 else ("vehicle", 0.0)
            elif c <= 10 and r < 6:
                role, conc = "sample", DOSES[10 - c]
            else:
                role, conc = ("vehicle", 0.0) if r < 6 else ("empty", 0.0)
            sample = "SK-N-SH" if r < 3 else "IMR-32"
            compound = "milademetan" if role == "sample" else ""
            layout.append(f"{row}{c + 1:02d},{role},{sample},{compound},{conc} M")
            od = blank_od if role in ("blank", "empty") else vehicle_od
            if role == "sample":
                ic50 = 21.9e-9 if r < 3 else 52.6e-9
                od = blank_od + (vehicle_od - blank_od) * _logistic(conc, ic50, 1.0, 1, 0)
            absorbance[r, c] = od * (1 + rng.normal(0, 0.04))
    (directory / "mtt_layout.csv").write_text("\n".join(layout) + "\n")
    lines = ["Read: 570nm", "", "," + ",".join(str(c) for c in range(1, 13))]
    lines += [row + "," + ",".join(f"{v:.4f}" for v in absorbance[r]) for r, row in enumerate(rows)]
    (directory / "mtt_plate.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    tidy_table().to_csv(args.directory / "tidy.csv", index=False)
    counts_table().to_csv(args.directory / "counts.csv", index=False)
    mtt_plate(args.directory)
    print(f"wrote tidy.csv, counts.csv, mtt_plate.csv, mtt_layout.csv to {args.directory}")


if __name__ == "__main__":
    main()
