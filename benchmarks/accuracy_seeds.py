"""Per-well fraction error and class accuracy over several renderings of the example design.

One simulated plate is a small sample: on the example design the per-well apoptotic-fraction
MAE of one rendering moves by +-0.002 when a segmentation constant changes slightly, and by
more between seeds. This script renders the example design with several seeds, runs each
plate and prints, per seed and as medians:

* class accuracy and per-well MAE / bias, as ``accuracy_plate.py`` does;
* the MAE over wells whose fields all passed QC and over wells that lost a field to QC
  (their fraction rests on fewer cells than the truth's);
* the mean error by true-fraction band: hard gates overcount wells with few apoptotic cells
  (false positives among many negatives) and undercount wells with many;
* the same for ``apoptotic_fraction_mixture`` (the plate's mixture model,
  :mod:`screenlib.aggregate.mixture`), which does not pull toward the middle;
* signed bias and MAE per timepoint and per band of the true fraction for both columns
  (:func:`screenlib.simulate.evaluate.fraction_errors`), with ``--timepoints 2``.

``--confounders`` renders the example design with confounders (``messy`` for all of them,
or names of ``screenlib.simulate.CONFOUNDERS``); ``benchmarks/accuracy_messy.py`` runs the
messy designs (96 and 384 wells) one confounder at a time.

    python benchmarks/accuracy_seeds.py                        # seeds 11-15
    python benchmarks/accuracy_seeds.py --seeds 11 12 --cache /tmp/plates --settings a.toml
    python benchmarks/accuracy_seeds.py --pixel-size 0.65 --size 336   # same area, finer pixels
    python benchmarks/accuracy_seeds.py --confounders messy --timepoints 2 --seeds 11 12

``--cache`` keeps the rendered plates (and reuses them on the next call), which halves the
time of a comparison run; outputs always go to a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from screenlib.orchestrate import run_plate
from screenlib.settings import load_settings
from screenlib.simulate import Confounders, example_plate_design, simulate_plate
from screenlib.simulate.evaluate import evaluate_run, fraction_errors

BANDS = [0.0, 0.1, 0.3, 0.7, 1.0]


def rendered_plate(
    seed: int,
    cache: Path,
    pixel_size_um: float,
    size: int,
    confounders: tuple[str, ...] = (),
    timepoints: int = 1,
) -> Path:
    """The example design rendered with ``seed`` under ``cache`` (rendered once).

    Other pixel and field sizes keep the example's field area in µm and so its cell density.
    """
    mess = "-".join(confounders) or "clean"
    folder = cache / f"example-seed{seed}-px{pixel_size_um:g}-size{size}-{mess}-t{timepoints}"
    if not (folder / "truth" / "wells.csv").exists():
        base = example_plate_design()
        scale = (size * pixel_size_um / (base.field_shape[0] * base.pixel_size_um)) ** 2
        design = example_plate_design(
            seed=seed,
            pixel_size_um=pixel_size_um,
            field_shape=(size, size),
            cells_per_field=base.cells_per_field * scale,
            timepoints=timepoints,
        )
        design.confounders = _confounders(confounders)
        simulate_plate(design, folder, "imagexpress", progress=False, overwrite=True)
    return folder


def _confounders(names: tuple[str, ...]) -> Confounders:
    if "messy" in names:
        return Confounders.messy()
    merged: dict = {}
    for name in names:
        only = Confounders.only(name)
        merged.update({k: v for k, v in only.__dict__.items() if v != getattr(Confounders(), k)})
    return Confounders(**merged)


def score(out: Path, truth_dir: Path) -> dict[str, float]:
    """Accuracy, MAE and bias of a finished run, split by field QC and true-fraction band."""
    accuracy = evaluate_run(out, truth_dir)
    fields = pd.read_csv(out / "fields.csv")
    lost_field = set(fields.loc[~fields["qc_pass"].astype(bool), "well"])
    all_wells = pd.read_csv(out / "wells.csv")
    truth_table = pd.read_csv(truth_dir / "wells.csv")
    # the split by QC and band below is over the last timepoint (the end point)
    last = truth_table["timepoint"].max()
    wells = all_wells[all_wells["timepoint"] == last].set_index("well")
    truth = truth_table[truth_table["timepoint"] == last].set_index("well")["apoptotic_fraction"]
    error = (wells["apoptotic_fraction"] - truth).dropna()
    mixture_error = (wells["apoptotic_fraction_mixture"] - truth).dropna()
    complete = ~error.index.isin(lost_field)
    row = {
        "accuracy": accuracy.class_accuracy,
        "mae": accuracy.fraction_mae,
        "bias": accuracy.fraction_bias,
        "mae_mixture": accuracy.mixture_fraction_mae,
        "bias_mixture": accuracy.mixture_fraction_bias,
        "mae_complete": float(error[complete].abs().mean()),
        "mae_lost_field": float(error[~complete].abs().mean()) if (~complete).any() else 0.0,
        "n_lost_field": int((~complete).sum()),
    }
    for column in ("apoptotic_fraction", "apoptotic_fraction_mixture"):
        name = "" if column == "apoptotic_fraction" else " mixture"
        per_timepoint = fraction_errors(all_wells, truth_table, column)
        for item in per_timepoint.to_dict("records"):
            row[f"bias{name} t{item['timepoint']}"] = item["bias"]
            row[f"mae{name} t{item['timepoint']}"] = item["mae"]
    for name, errors in (("", error), (" mixture", mixture_error)):
        kept = errors[~errors.index.isin(lost_field)]
        bands = pd.cut(truth.reindex(kept.index), BANDS, include_lowest=True)
        for band, mean in kept.groupby(bands, observed=True).mean().items():
            row[f"bias{name} {max(band.left, 0.0):.1f}-{band.right:.1f}"] = float(mean)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--pixel-size", type=float, default=1.3, help="micrometres [1.3]")
    parser.add_argument("--size", type=int, default=168, help="field width in pixels [168]")
    parser.add_argument("--cache", type=Path, default=None, help="keep rendered plates here")
    parser.add_argument("--settings", type=Path, default=None)
    parser.add_argument("--confounders", nargs="*", default=[], help="messy or CONFOUNDERS names")
    parser.add_argument("--timepoints", type=int, default=1)
    args = parser.parse_args()

    settings = load_settings(args.settings)
    work = Path(tempfile.mkdtemp(prefix="screenlib-seeds-"))
    cache = args.cache or work
    rows = {}
    for seed in args.seeds:
        plate = rendered_plate(
            seed, cache, args.pixel_size, args.size, tuple(args.confounders), args.timepoints
        )
        out = work / f"run-seed{seed}"
        run_plate(
            plate / "export", plate / "platemap.csv", out, settings, progress=False, report=False
        )
        rows[seed] = score(out, plate / "truth")
        print(
            f"seed {seed}: accuracy {rows[seed]['accuracy']:.3f}  MAE {rows[seed]['mae']:.4f} "
            f"(bias {rows[seed]['bias']:+.4f}); mixture MAE {rows[seed]['mae_mixture']:.4f} "
            f"(bias {rows[seed]['bias_mixture']:+.4f})",
            flush=True,
        )
    table = pd.DataFrame(rows).T
    table.index.name = "seed"
    print()
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    print(
        f"\nmedian over {len(rows)} seeds: accuracy "
        f"{statistics.median(table['accuracy']):.3f}, MAE {statistics.median(table['mae']):.4f}, "
        f"MAE over wells with every field {statistics.median(table['mae_complete']):.4f}; "
        f"apoptotic_fraction_mixture MAE {statistics.median(table['mae_mixture']):.4f} "
        f"(largest {table['mae_mixture'].max():.4f})"
    )


if __name__ == "__main__":
    main()
