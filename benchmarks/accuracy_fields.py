"""Nuclei segmentation accuracy of the kernel on simulated fields with ground truth.

For each scenario and seed, renders a 512 x 512 field with ``screenlib.simulate``, runs
``analyze_field`` and matches its nuclei to the truth at IoU 0.5. Prints F1, precision,
recall, count error and mean matched IoU per scenario (mean and worst over seeds), and what
a global Otsu threshold finds on the bright-among-dim field. The last four scenarios render
fields at 0.3, 0.65, 1.3 and 2 µm pixels and hide the pixel size from the kernel (it
measures the nucleus scale on each field).

    python benchmarks/accuracy_fields.py --seeds 5
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from screenlib.analysis import analyze_field, match_labels
from screenlib.plugins import get_stains
from screenlib.settings import AssaySettings
from screenlib.simulate import render_bright_among_dim, render_field

APOPTOTIC = {"viable": 0.3, "early_apoptotic": 0.3, "late_apoptotic": 0.3, "necrotic": 0.1}
SCENARIOS = {
    "touching (>=15 %)": lambda rng: render_field(
        rng, shape=(512, 512), n_cells=160, touching_fraction=0.3
    ),
    "dense, 40 % touching": lambda rng: render_field(
        rng, shape=(512, 512), n_cells=300, touching_fraction=0.4
    ),
    "bright among dim": lambda rng: render_bright_among_dim(rng),
    "uneven illumination": lambda rng: render_field(
        rng, shape=(512, 512), n_cells=150, illumination=0.6
    ),
    "fragmented apoptotic": lambda rng: render_field(
        rng, shape=(512, 512), n_cells=150, class_fractions=APOPTOTIC
    ),
    "out of focus (3 px)": lambda rng: render_field(
        rng, shape=(512, 512), n_cells=150, defocus_sigma_px=3.0
    ),
}
#: pixel sizes rendered and hidden from the kernel: (field side, nuclei) keep the density
HIDDEN_PIXEL_SIZES = {0.3: (768, 70), 0.65: (512, 150), 1.3: (512, 400), 2.0: (512, 400)}
for _size, (_side, _n) in HIDDEN_PIXEL_SIZES.items():
    SCENARIOS[f"{_size:g} um, size hidden"] = lambda rng, size=_size, side=_side, n=_n: (
        render_field(rng, shape=(side, side), pixel_size_um=size, n_cells=n, touching_fraction=0.2)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'scenario':24s} {'F1 mean':>8s} {'F1 min':>7s} {'count err max':>14s} "
          f"{'IoU':>6s} {'touching':>9s}")  # fmt: skip
    for name, make in SCENARIOS.items():
        f1, count_error, iou, touching = [], [], [], []
        for seed in range(args.seeds):
            field = make(np.random.default_rng(1000 + seed))
            hidden = name.endswith("size hidden")
            result = analyze_field(
                field.channels,
                stains=get_stains(field.stains),
                pixel_size_um=None if hidden else field.pixel_size_um,
                settings=AssaySettings(),
            )
            score = match_labels(field.labels, result.labels)
            f1.append(score.f1)
            count_error.append(score.count_error)
            iou.append(score.mean_matched_iou)
            touching.append(field.cells["touching"].mean())
            if name == "bright among dim" and seed == 0:
                image = field.channels[0].astype(np.float32)
                smooth = ndi.gaussian_filter(image, 1)
                n_otsu = ndi.label(smooth > threshold_otsu(image))[1]
                otsu_note = (
                    f"  (global Otsu finds {n_otsu} of {int(field.labels.max())} objects; "
                    f"the kernel {score.n_predicted})"
                )
        print(
            f"{name:24s} {np.mean(f1):8.3f} {np.min(f1):7.3f} {np.max(count_error):14.3f} "
            f"{np.mean(iou):6.3f} {np.mean(touching):9.2f}"
        )
    print(otsu_note)


if __name__ == "__main__":
    main()
