"""End-to-end accuracy on a simulated plate: per-cell classes, per-well fractions, IC50s.

Runs ``screenlib run`` on a simulated plate folder (export/, platemap.csv, truth/) and scores
the result against the truth with ``screenlib.simulate.evaluate.evaluate_run``.

    python benchmarks/accuracy_plate.py                       # the bundled example plate
    python benchmarks/accuracy_plate.py --plate DIR --out OUT --settings assay.toml
    python benchmarks/accuracy_plate.py --ceiling             # + the best gates could do

``--ceiling`` also prints what quadrant gates placed with the truth (an oracle) would reach on
the run's own per-cell measurements, and on the truth's stain levels: it tells whether an
error lies in the gate placement (screenlib.gating) or in the measurement (screenlib.analysis).
An existing ``--out`` folder is resumed: only gating and aggregation are redone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from screenlib.orchestrate import run_plate
from screenlib.settings import load_settings
from screenlib.simulate.evaluate import evaluate_run, match_truth_cells
from screenlib.store import open_plate

APOPTOTIC = ["early_apoptotic", "late_apoptotic"]
PI_POSITIVE = ["late_apoptotic", "necrotic"]


def matched_cells(out: Path, truth_dir: Path) -> pd.DataFrame:
    """Truth cells (``true_*`` columns) joined with the run's cell they were matched to."""
    cells = pd.read_parquet(out / "cells.parquet")
    truth = pd.read_parquet(truth_dir / "cells.parquet")
    plate_path = out / "plate.zarr"
    if not plate_path.exists():
        plate_path = Path(json.loads((out / "run.json").read_text())["plate"])
    plate = open_plate(plate_path)
    parts = []
    for (well, field, timepoint), group in truth.groupby(["well", "field", "timepoint"]):
        truth_labels = tifffile.imread(truth_dir / "labels" / f"{well}_f{field}_t{timepoint}.tif")
        labels = plate.read_labels(well, int(field), timepoint=int(timepoint))
        parts.append(
            group.assign(predicted=match_truth_cells(truth_labels, labels)[group["label"]])
        )
    truth = pd.concat(parts, ignore_index=True)
    truth = truth.rename(columns={c: f"true_{c}" for c in truth.columns if c.endswith("_level")})
    truth = truth.rename(columns={"cell_class": "true_class"}).drop(columns="label")
    joined = truth.merge(
        cells,
        left_on=["well", "field", "timepoint", "predicted"],
        right_on=["well", "field", "timepoint", "label"],
        how="inner",
    )
    return joined[joined["cell_class"].astype(str) != "debris"]


def best_quadrant_gates(
    annexin: np.ndarray, pi: np.ndarray, truth: np.ndarray, n_steps: int = 120
) -> tuple[float, float, float]:
    """Annexin and PI gates with the highest class accuracy (grid over quantiles)."""
    is_annexin = np.isin(truth, APOPTOTIC)
    is_pi = np.isin(truth, PI_POSITIVE)
    quantiles = np.linspace(0.2, 0.995, n_steps)
    annexin_grid = np.unique(np.nanquantile(annexin, quantiles))
    pi_grid = np.unique(np.nanquantile(pi, quantiles))
    annexin_right = (annexin[:, None] > annexin_grid[None, :]) == is_annexin[:, None]
    best = (-1.0, np.nan, np.nan)
    for pi_gate in pi_grid:
        pi_right = (pi > pi_gate) == is_pi
        accuracy = (annexin_right & pi_right[:, None]).mean(axis=0)
        i = int(np.argmax(accuracy))
        if accuracy[i] > best[0]:
            best = (float(accuracy[i]), float(annexin_grid[i]), float(pi_gate))
    return best


def fraction_error(positive: pd.Series, truth_fraction: pd.Series) -> tuple[float, float]:
    """MAE and bias of per-well positive fractions (index: well) against the truth."""
    error = positive.groupby(level=0).mean() - truth_fraction
    error = error.dropna()
    return float(error.abs().mean()), float(error.mean())


def print_ceiling(out: Path, truth_dir: Path, annexin_feature: str) -> None:
    """What the best possible quadrant gates reach on measured and on true stain levels."""
    joined = matched_cells(out, truth_dir)
    fields = pd.read_csv(out / "fields.csv")
    passing = fields.loc[fields["qc_pass"].astype(bool), ["well", "field", "timepoint"]]
    used = joined.merge(passing, on=["well", "field", "timepoint"])
    truth_fraction = pd.read_csv(truth_dir / "wells.csv").set_index("well")["apoptotic_fraction"]
    called_right = used["cell_class"].astype(str) == used["true_class"]
    print(
        f"\nclass accuracy over fields that passed QC: {called_right.mean():.3f} "
        f"({len(used)} of {len(joined)} matched cells)"
    )
    print("ceiling: gates fitted with the truth (fractions over fields that passed QC)")
    candidates = {"measured": (annexin_feature, "pi_compensated")}
    if {"true_annexin_v_level", "true_pi_level"} <= set(joined.columns):
        candidates["true levels"] = ("true_annexin_v_level", "true_pi_level")
    for name, (annexin_column, pi_column) in candidates.items():
        accuracy, annexin_gate, pi_gate = best_quadrant_gates(
            joined[annexin_column].to_numpy(float),
            joined[pi_column].to_numpy(float),
            joined["true_class"].to_numpy(),
        )
        annexin = used.set_index("well")[annexin_column]
        grid = np.unique(np.nanquantile(annexin, np.linspace(0.2, 0.995, 300)))
        errors = [fraction_error(annexin > gate, truth_fraction) for gate in grid]
        best = int(np.argmin([mae for mae, _ in errors]))
        at_accuracy = fraction_error(annexin > annexin_gate, truth_fraction)
        print(
            f"  {name:>11s} ({annexin_column}): best class accuracy {accuracy:.3f} "
            f"(annexin > {annexin_gate:.4g}, PI > {pi_gate:.4g}; fraction MAE there "
            f"{at_accuracy[0]:.4f}); best fraction MAE {errors[best][0]:.4f} "
            f"(bias {errors[best][1]:+.4f}, annexin > {grid[best]:.4g})"
        )
    perfect = used.assign(apoptotic=used["true_class"].isin(APOPTOTIC)).set_index("well")
    mae, bias = fraction_error(perfect["apoptotic"], truth_fraction)
    print(f"  perfect calls of the matched cells: fraction MAE {mae:.4f} (bias {bias:+.4f})")


EXAMPLE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_nb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plate", type=Path, default=EXAMPLE, help="simulated plate folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    parser.add_argument("--settings", type=Path, default=None)
    parser.add_argument(
        "--ceiling", action="store_true", help="also print what oracle-placed gates reach"
    )
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="screenlib-accuracy-")) / "results"
    source = args.plate / "export"
    if not source.exists():
        source = next(args.plate.glob("*.zarr"))
    settings = load_settings(args.settings)
    start = time.perf_counter()
    summary = run_plate(
        source,
        args.plate / "platemap.csv",
        out,
        settings,
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
    print(
        f"per-well apoptotic_fraction_mixture: MAE {accuracy.mixture_fraction_mae:.4f}, bias "
        f"{accuracy.mixture_fraction_bias:+.4f}"
    )
    print("confusion (rows truth, columns call):")
    print(accuracy.confusion.to_string())
    if args.ceiling:
        print_ceiling(out, args.plate / "truth", settings.gating.annexin_feature)

    fits = pd.read_parquet(out / "fits_full.parquet")  # fits.csv gives the IC50 in the map's unit
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
