"""End-to-end accuracy on a simulated plate: per-cell classes, per-well fractions, IC50s.

Runs ``screenlib run`` on a simulated plate folder (export/, platemap.csv, truth/) and scores
the result against the truth with ``screenlib.simulate.evaluate.evaluate_run``.

    python benchmarks/accuracy_plate.py                       # the bundled example plate
    python benchmarks/accuracy_plate.py --plate DIR --out OUT --settings assay.toml
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from screenlib.orchestrate import run_plate
from screenlib.settings import load_settings
from screenlib.simulate.evaluate import evaluate_run

EXAMPLE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_nb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plate", type=Path, default=EXAMPLE, help="simulated plate folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    parser.add_argument("--settings", type=Path, default=None)
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="screenlib-accuracy-")) / "results"
    source = args.plate / "export"
    if not source.exists():
        source = next(args.plate.glob("*.zarr"))
    start = time.perf_counter()
    summary = run_plate(
        source,
        args.plate / "platemap.csv",
        out,
        load_settings(args.settings),
        progress=False,
        report=False,
    )
    seconds = time.perf_counter() - start
    print(summary.line() if hasattr(summary, "line") else summary)
    print(f"run time: {seconds:.1f} s")

    accuracy = evaluate_run(out, args.plate / "truth")
    print(
        f"cells: {accuracy.n_matched} of {accuracy.n_truth_cells} truth cells matched "
        f"({accuracy.n_matched / accuracy.n_truth_cells:.1%})"
    )
    print(f"per-cell class accuracy (matched cells): {accuracy.class_accuracy:.3f}")
    print(
        f"per-well apoptotic fraction: MAE {accuracy.fraction_mae:.4f}, bias "
        f"{accuracy.fraction_bias:+.4f}, worst {accuracy.worst_well} "
        f"({accuracy.worst_well_error:+.3f})"
    )
    print("confusion (rows truth, columns call):")
    print(accuracy.confusion.to_string())

    fits = pd.read_csv(out / "fits.csv")
    truth_wells = pd.read_csv(args.plate / "truth" / "wells.csv")
    design_ic50 = truth_wells.groupby("sample")["ic50_apoptosis_molar"].first()
    print("\napoptotic-fraction IC50 (nM): fitted [95 % interval] vs design")
    for _, row in fits[fits["readout"] == "apoptotic_fraction"].iterrows():
        true_nm = design_ic50.get(row["sample"], np.nan)
        print(
            f"  {row['sample']:>10s}: {row['ic50_molar'] * 1e9:7.1f} "
            f"[{row['ic50_ci_low_molar'] * 1e9:.1f}, {row['ic50_ci_high_molar'] * 1e9:.1f}]"
            f"  design {true_nm * 1e9:.1f}  {row['flags'] if isinstance(row['flags'], str) else ''}"
        )


if __name__ == "__main__":
    main()
