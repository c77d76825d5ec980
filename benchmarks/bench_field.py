"""Per-field speed and memory: screenlib's kernel against a plain scikit-image pipeline.

Renders 2160 x 2160 three-channel fields (Hoechst, Annexin V, PI; ~2,000 nuclei, with touching
clusters) with ``screenlib.simulate.render_field``, then times, interleaved on the same fields
and single-threaded, (a) a plain scikit-image pipeline (Gaussian, Otsu, distance-transform
peaks, watershed, expand_labels ring, regionprops_table) and (b) ``analyze_field``. Prints the
median seconds per field for both, their ratio, nuclei F1 against the truth, and peak memory
of a fresh worker process analysing one field (tracemalloc peak of array allocations and the
process's peak resident set).

    python benchmarks/bench_field.py            # 5 fields
    python benchmarks/bench_field.py --fields 9 --profile
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # one core, as one worker of a plate run

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SHAPE = (2160, 2160)
N_CELLS = 2000
PIXEL_SIZE_UM = 0.65
STAINS = ["hoechst", "annexin_v", "pi"]


def render(seed: int):
    from screenlib.simulate import render_field

    return render_field(
        np.random.default_rng(seed),
        shape=SHAPE,
        pixel_size_um=PIXEL_SIZE_UM,
        n_cells=N_CELLS,
        touching_fraction=0.2,
    )


def plain_skimage(channels: np.ndarray, pixel_size_um: float):
    """The straightforward scikit-image pipeline a user would write first."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import regionprops_table
    from skimage.segmentation import expand_labels, watershed

    nuclear = gaussian(channels[0].astype(np.float32), sigma=1.0, preserve_range=True)
    mask = nuclear > threshold_otsu(nuclear)
    mask = ndi.binary_fill_holes(mask)
    distance = ndi.distance_transform_edt(mask)
    min_distance = max(1, int(round(0.4 * 10.0 / pixel_size_um)))
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndi.label(mask)[0])
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    nuclei = watershed(-distance, markers, mask=mask)
    ring_px = max(1, int(round(2.5 / pixel_size_um)))
    ring = expand_labels(nuclei, ring_px)
    ring[nuclei > 0] = 0
    intensities = np.moveaxis(channels, 0, -1)
    nucleus_table = regionprops_table(
        nuclei,
        intensity_image=intensities,
        properties=("label", "area", "centroid", "eccentricity", "solidity", "intensity_mean"),
    )
    ring_table = regionprops_table(
        ring, intensity_image=intensities, properties=("label", "intensity_mean")
    )
    return nuclei, nucleus_table, ring_table


#: the plate's nucleus scale, measured once from a sample of fields as a run does (None: each
#: field measures its own)
PLATE_DIAMETER_PX: float | None = None


def ours(channels: np.ndarray, pixel_size_um: float):
    from screenlib.analysis import analyze_field
    from screenlib.plugins import get_stain
    from screenlib.settings import AssaySettings

    return analyze_field(
        channels,
        stains=[get_stain(name) for name in STAINS],
        pixel_size_um=pixel_size_um,
        settings=AssaySettings(),
        nucleus_diameter_px=PLATE_DIAMETER_PX,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec on Linux, so a
    child started from a big parent would report the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(which: str, path: str) -> dict:
    """Analyse the field saved at ``path`` in this (fresh) process; report peak memory."""
    import tracemalloc

    channels = np.load(path)
    global PLATE_DIAMETER_PX
    PLATE_DIAMETER_PX = 10.5 / PIXEL_SIZE_UM  # the plate's scale is measured before the fields
    function = ours if which == "ours" else plain_skimage
    function(channels[:, :256, :256], PIXEL_SIZE_UM)  # imports and caches outside the window
    baseline_rss = peak_rss_mb()
    tracemalloc.start()
    function(channels, PIXEL_SIZE_UM)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "tracemalloc_peak_mb": peak / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": baseline_rss,
        "input_mb": channels.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile our kernel once")
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe)))
        return

    from screenlib.analysis import match_labels

    fields = []
    start = time.perf_counter()
    for seed in range(args.fields):
        fields.append(render(seed))
    print(
        f"rendered {len(fields)} fields {SHAPE[0]}x{SHAPE[1]}x3 with "
        f"~{int(np.mean([f.labels.max() for f in fields]))} nuclei in "
        f"{time.perf_counter() - start:.1f} s"
    )
    # the plate's nucleus scale from a sample of fields, as a run measures it once per plate
    global PLATE_DIAMETER_PX
    from screenlib.analysis.scale import estimate_nucleus_scale

    start = time.perf_counter()
    scale = estimate_nucleus_scale(field.channels[0] for field in fields)
    scale_s = time.perf_counter() - start
    PLATE_DIAMETER_PX = scale.diameter_px
    print(
        f"nucleus scale      : {scale} in {scale_s:.3f} s for {len(fields)} fields "
        f"({scale_s / len(fields):.3f} s/field sampled; true {10.5 / PIXEL_SIZE_UM:.1f} px)"
    )
    # warm up both (imports, caches)
    plain_skimage(fields[0].channels[:, :512, :512], PIXEL_SIZE_UM)
    ours(fields[0].channels[:, :512, :512], PIXEL_SIZE_UM)

    times = {"plain": [], "ours": []}
    scores = {"plain": [], "ours": []}
    for number, field in enumerate(fields):
        order = ("plain", "ours") if number % 2 == 0 else ("ours", "plain")
        for which in order:
            function = plain_skimage if which == "plain" else ours
            start = time.perf_counter()
            result = function(field.channels, PIXEL_SIZE_UM)
            times[which].append(time.perf_counter() - start)
            labels = result[0] if which == "plain" else result.labels
            scores[which].append(match_labels(field.labels, labels).f1)
    plain_s, ours_s = np.median(times["plain"]), np.median(times["ours"])
    print(
        f"plain scikit-image : {plain_s:.3f} s/field (median of {len(fields)}), "
        f"nuclei F1 {np.mean(scores['plain']):.3f}"
    )
    print(
        f"screenlib kernel   : {ours_s:.3f} s/field (median of {len(fields)}), "
        f"nuclei F1 {np.mean(scores['ours']):.3f}"
    )
    print(f"speed-up           : {plain_s / ours_s:.1f}x")
    print(
        f"scale estimate     : {scale_s / len(fields) / ours_s:.1%} of one field's analysis per "
        "field sampled (a plate samples a few dozen of its fields once)"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "field.npy")
        np.save(path, fields[0].channels)
        for which in ("ours", "plain"):
            probe = subprocess.run(
                [sys.executable, __file__, "--memory-probe", which, path],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            memory = json.loads(probe.stdout)
            print(
                f"memory ({which:5s})     : peak RSS {memory['peak_rss_mb']:.0f} MB per worker "
                f"process (interpreter and libraries {memory['rss_before_mb']:.0f} MB, input "
                f"field {memory['input_mb']:.0f} MB); array peak during the analysis "
                f"{memory['tracemalloc_peak_mb']:.0f} MB"
            )

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for field in fields[:3]:
            ours(field.channels, PIXEL_SIZE_UM)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
