"""Accuracy of flow plates against their truth, and image vs flow EC50s on the same design.

Part 1 simulates the example design (milademetan on five neuroblastoma lines, 96 wells) as a
flow plate with spillover, debris and doublets on, reads it, runs the unchanged engine
(scatter gate, Annexin V / PI gates, wells, fits) and prints the per-well apoptotic-fraction
MAE against the realised truth and each line's EC50 against the design's (targets: MAE
<= 0.01, EC50 within 1.15-fold).

Part 2 (``--image-run DIR`` or ``--run-image``) puts the flow EC50s beside an image run's
``fits.csv`` of the same design: ``--image-run`` reads an existing ``screenlib run`` output
(e.g. of ``example_plates/milademetan_nb``); ``--run-image`` runs ``screenlib run`` on the
committed image example first (a few minutes on 2 cores).

Run: ``python benchmarks/accuracy_flow.py [--events-per-well 5000] [--seeds 3]
[--image-run results/milademetan_nb | --run-image]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from screenlib.aggregate import aggregate_wells
from screenlib.doseresponse import fit_wells
from screenlib.flow import flow_tables, read_flow_plate
from screenlib.gating import classify_cells, learn_gates
from screenlib.platemap import read_platemap
from screenlib.settings import AssaySettings
from screenlib.simulate import example_plate_design
from screenlib.simulate._flow import simulate_flow_plate

REPO = Path(__file__).resolve().parents[1]
IMAGE_EXAMPLE = REPO / "example_plates" / "milademetan_nb"


def flow_accuracy(events_per_well: int, seed: int, folder: Path) -> tuple[dict, pd.DataFrame]:
    """Simulate, analyse and score one flow plate; (summary, per-sample EC50 table)."""
    design = example_plate_design(seed=seed)
    simulated = simulate_flow_plate(design, folder / f"seed{seed}", events_per_well=events_per_well)
    settings = AssaySettings()
    platemap = read_platemap(simulated.platemap)
    cells, fields = flow_tables(read_flow_plate(simulated.fcs), platemap, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    wells = aggregate_wells(cells, platemap, fields, settings)
    truth = pd.read_csv(simulated.truth / "wells.csv")
    both = wells.merge(truth, on="well", suffixes=("", "_true"))
    error = (both["apoptotic_fraction"] - both["apoptotic_fraction_true"]).abs()
    events = pd.read_parquet(simulated.truth / "events.parquet")
    scored = cells[["well", "event", "cell_class"]].merge(events, on=["well", "event"])
    excluded = scored["true_class"].isin(["debris", "doublet"])
    called = scored["cell_class"].astype(str) == "debris"
    fits = fit_wells(wells, settings.fit)
    fits = fits[fits["readout"] == "apoptotic_fraction"].copy()
    fits["true_ic50_molar"] = [design.responses[s].ic50_apoptosis_molar for s in fits["sample"]]
    fits["fold_error"] = np.exp(np.abs(np.log(fits["ic50_molar"] / fits["true_ic50_molar"])))
    summary = {
        "seed": seed,
        "events": len(cells),
        "mae": float(error.mean()),
        "max_abs_error": float(error.max()),
        "scatter_gate_recall": float(called[excluded].mean()),
        "single_cells_kept": float((~called[~excluded]).mean()),
        "bleedthrough_after_compensation": gates[0].bleedthrough_annexin_to_pi,
        "worst_ec50_fold": float(fits["fold_error"].max()),
    }
    return summary, fits[["sample", "ic50_molar", "true_ic50_molar", "fold_error", "flags"]]


def image_fits(run_dir: Path) -> pd.DataFrame:
    fits = pd.read_csv(run_dir / "fits.csv")
    return fits[fits["readout"] == "apoptotic_fraction"][["sample", "ic50_molar", "flags"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-well", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-run", type=Path, help="an image run's output folder")
    parser.add_argument("--run-image", action="store_true", help="run the image example first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        summaries, first_fits = [], None
        for seed in range(20260105, 20260105 + args.seeds):
            summary, fits = flow_accuracy(args.events_per_well, seed, folder)
            summaries.append(summary)
            first_fits = fits if first_fits is None else first_fits
        pd.set_option("display.width", 140)
        print(f"flow plates, {args.events_per_well} cells per vehicle well, spillover + debris on")
        print(pd.DataFrame(summaries).to_string(index=False, float_format="%.4g"))
        print("\nEC50 of the apoptotic fraction, first seed (the image example's seed):")
        print(first_fits.to_string(index=False, float_format="%.4g"))

        image_run = args.image_run
        if args.run_image:
            image_run = folder / "image_run"
            subprocess.run(
                [sys.executable, "-m", "screenlib", "--quiet", "run",
                 str(IMAGE_EXAMPLE / "export"), "--platemap", str(IMAGE_EXAMPLE / "platemap.csv"),
                 "--out", str(image_run), "--no-report"],
                check=True,
            )  # fmt: skip
        if image_run is not None:
            image = image_fits(image_run)
            both = first_fits.merge(image, on="sample", suffixes=("_flow", "_image"))
            both["flow_vs_image_fold"] = np.exp(
                np.abs(np.log(both["ic50_molar_flow"] / both["ic50_molar_image"]))
            )
            both["image_vs_truth_fold"] = np.exp(
                np.abs(np.log(both["ic50_molar_image"] / both["true_ic50_molar"]))
            )
            print("\nimage vs flow, same design and seed (apoptotic-fraction EC50, molar):")
            columns = ["sample", "true_ic50_molar", "ic50_molar_image", "ic50_molar_flow",
                       "image_vs_truth_fold", "fold_error", "flow_vs_image_fold"]  # fmt: skip
            print(both[columns].rename(columns={"fold_error": "flow_vs_truth_fold"})
                  .to_string(index=False, float_format="%.4g"))  # fmt: skip


if __name__ == "__main__":
    main()
