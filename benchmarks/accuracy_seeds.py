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
  :mod:`screenlib.aggregate.mixture`), which does not pull toward the middle.

    python benchmarks/accuracy_seeds.py                        # seeds 11-15
    python benchmarks/accuracy_seeds.py --seeds 11 12 --cache /tmp/plates --settings a.toml
    python benchmarks/accuracy_seeds.py --pixel-size 0.65 --size 336   # same area, finer pixels

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
from screenlib.simulate import example_plate_design, simulate_plate
from screenlib.simulate.evaluate import evaluate_run

BANDS = [0.0, 0.1, 0.3, 0.7, 1.0]


def rendered_plate(seed: int, cache: Path, pixel_size_um: float, size: int) -> Path:
    """The example design rendered with ``seed`` under ``cache`` (rendered once).

    Other pixel and field sizes keep the example's field area in µm and so its cell density.
    """
    folder = cache / f"example-seed{seed}-px{pixel_size_um:g}-size{size}"
    if not (folder / "truth" / "wells.csv").exists():
        base = example_plate_design()
        scale = (size * pixel_size_um / (base.field_shape[0] * base.pixel_size_um)) ** 2
        design = example_plate_design(
            seed=seed,
            pixel_size_um=pixel_size_um,
            field_shape=(size, size),
            cells_per_field=base.cells_per_field * scale,
        )
        simulate_plate(design, folder, "imagexpress", progress=False, overwrite=True)
    return folder


def score(out: Path, truth_dir: Path) -> dict[str, float]:
    """Accuracy, MAE and bias of a finished run, split by field QC and true-fraction band."""
    accuracy = evaluate_run(out, truth_dir)
    fields = pd.read_csv(out / "fields.csv")
    lost_field = set(fields.loc[~fields["qc_pass"].astype(bool), "well"])
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    truth = pd.read_csv(truth_dir / "wells.csv").set_index("well")["apoptotic_fraction"]
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
    args = parser.parse_args()

    settings = load_settings(args.settings)
    work = Path(tempfile.mkdtemp(prefix="screenlib-seeds-"))
    cache = args.cache or work
    rows = {}
    for seed in args.seeds:
        plate = rendered_plate(seed, cache, args.pixel_size, args.size)
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
