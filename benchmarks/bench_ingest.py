"""Ingest throughput and the plate store's compression choice.

1. Writes a simulated ImageXpress export (default 96 wells x 4 fields x 3 channels of
   1080 x 1080 uint16, realistic content: offset, uneven illumination, nuclei, shot noise)
   with tifffile into a temporary folder, then times ``ingest_export`` on it
   (images/s and MB/s of raw pixels).
2. Compares Blosc lz4 / zstd (and no compression) on the same kind of planes, one chunk per
   plane as the store writes them: compressed size, write and read speed (medians).

Measured 2026-11-30 on the 2-core project machine while up to 7 other jobs ran (load
average 5-8, so absolute speeds are pessimistic and noisy):

* ingest, 96 x 4 x 3 x 1080^2 uint16 (1152 images, 2687 MB): median 15.2 s of 3 runs
  (8.7-17.9 s) -> 76 images/s, 177 MB/s (best run 133 images/s, 310 MB/s); plate 1478 MB.
* compression (24 planes, medians of 5-7 runs, two sessions):

  ======================== ===== ============ ===========
  codec                    ratio write MB/s   read MB/s
  ======================== ===== ============ ===========
  none                     1.00  178-203      709-1149
  blosc lz4 shuffle 5      1.59  79-90        312-476
  blosc lz4 bitshuffle 5   1.82  165-191      441-732
  blosc zstd shuffle 1     1.96  52-91        187-273
  blosc zstd shuffle 3     2.01  26-57        236-357
  blosc zstd bitshuffle 3  1.94  46-114       378-494
  blosc zstd shuffle 5     2.06  14-19        245-438
  zstd 3 (no shuffle)      1.80  25-30        152-269
  ======================== ===== ============ ===========

  Decision: Blosc lz4 + bit shuffle (level 5) — the fastest reads of the compressing
  codecs and fast writes, at 88-94 % of zstd's compression. Analysis reads every field
  once per run, so read speed matters more than the last 10 % of disk.

Usage::

    python benchmarks/bench_ingest.py                 # the full 96-well run
    python benchmarks/bench_ingest.py --wells 8       # a quick run
    python benchmarks/bench_ingest.py --skip-ingest   # only the compression table
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from screenlib.ingest import export_relpath, ingest_export, write_vendor_metadata
from screenlib.platemap import PlateGeometry


def realistic_plane(rng: np.random.Generator, size: int, channel: int) -> np.ndarray:
    """A microscope-like uint16 plane: offset, vignetting, blurred nuclei, shot/read noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    illumination = 1.0 - 0.6 * (yy**2 + xx**2)
    signal = np.zeros((size, size), np.float32)
    n_nuclei = int(250 * (size / 1080) ** 2)
    centres = rng.integers(0, size, (n_nuclei, 2))
    radius = 9
    disk_y, disk_x = np.mgrid[-2 * radius : 2 * radius + 1, -2 * radius : 2 * radius + 1]
    brightness = [1500, 300, 200][channel % 3]
    for cy, cx in centres:
        r = radius * rng.uniform(0.7, 1.3)
        blob = np.exp(-(disk_y**2 + disk_x**2) / (2 * r**2)).astype(np.float32)
        if channel == 1:  # membrane ring
            blob = np.exp(-((np.hypot(disk_y, disk_x) - 1.4 * r) ** 2) / 4).astype(np.float32)
        y0, x0 = cy - 2 * radius, cx - 2 * radius
        ys = slice(max(y0, 0), min(y0 + blob.shape[0], size))
        xs = slice(max(x0, 0), min(x0 + blob.shape[1], size))
        signal[ys, xs] += (
            brightness
            * rng.uniform(0.3, 1.5)
            * blob[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        )
    expected = 100 + 200 * illumination + signal * illumination
    noisy = rng.poisson(expected).astype(np.float32) + rng.normal(0, 3, expected.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def write_export(folder: Path, n_wells: int, n_fields: int, n_channels: int, size: int) -> int:
    """Write the export; return the number of images."""
    rng = np.random.default_rng(0)
    bases = [[realistic_plane(rng, size, c) for _ in range(4)] for c in range(n_channels)]
    wells = PlateGeometry.from_size(96 if n_wells <= 96 else 384).wells()[:n_wells]
    dims = dict(n_fields=n_fields, n_channels=n_channels, n_timepoints=1, n_z=1)
    write_vendor_metadata(
        "imagexpress",
        folder,
        dict(plate="BENCH", wells=wells, n_fields=n_fields, image_shape=(size, size),
             channel_names=["Hoechst", "AnnexinV", "PI"][:n_channels], pixel_size_um=0.65),
    )  # fmt: skip
    count = 0
    for index, well in enumerate(wells):
        for field in range(n_fields):
            shift = (index * 37 + field * 101) % size
            for channel in range(n_channels):
                plane = np.roll(bases[channel][(index + field) % 4], shift, axis=1)
                relpath = export_relpath(
                    "imagexpress", plate="BENCH", well=well, field=field, channel=channel, **dims
                )
                tifffile.imwrite(folder / relpath, plane)
                count += 1
    return count


def bench_ingest(args: argparse.Namespace, work: Path) -> None:
    export = work / "export"
    export.mkdir()
    start = time.perf_counter()
    n_images = write_export(export, args.wells, args.fields, args.channels, args.size)
    print(f"wrote {n_images} TIFFs in {time.perf_counter() - start:.1f} s")
    megabytes = n_images * args.size * args.size * 2 / 1e6
    timings = []
    for repeat in range(args.repeats):
        out = work / f"plate{repeat}.zarr"
        start = time.perf_counter()
        ingest_export(export, out, progress=False, workers=args.workers)
        timings.append(time.perf_counter() - start)
        size_on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out)
    seconds = statistics.median(timings)
    print(
        f"ingest {args.wells} wells x {args.fields} fields x {args.channels} channels "
        f"{args.size}x{args.size} uint16 ({n_images} images, {megabytes:.0f} MB raw), "
        f"workers={args.workers or 'default'}, cpus={os.cpu_count()}: median {seconds:.2f} s "
        f"of {[round(t, 2) for t in timings]} -> {n_images / seconds:.0f} images/s, "
        f"{megabytes / seconds:.0f} MB/s; plate on disk {size_on_disk / 1e6:.0f} MB "
        f"({megabytes * 1e6 / size_on_disk:.2f}x)"
    )


def bench_compression(args: argparse.Namespace, work: Path) -> None:
    rng = np.random.default_rng(1)
    planes = np.stack(
        [realistic_plane(rng, args.size, c % 3) for c in range(args.compression_planes)]
    )
    raw_mb = planes.nbytes / 1e6
    candidates = {
        "none": [],
        "blosc lz4 shuffle 5": [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)],
        "blosc lz4 bitshuffle 5": [
            BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle)
        ],
        "blosc zstd shuffle 1": [BloscCodec(cname="zstd", clevel=1, shuffle=BloscShuffle.shuffle)],
        "blosc zstd shuffle 3": [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)],
        "blosc zstd bitshuffle 3": [
            BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)
        ],
        "blosc zstd shuffle 5": [BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle)],
        "zstd 3 (no shuffle)": [ZstdCodec(level=3)],
    }
    print(
        f"\ncompression: {len(planes)} planes {args.size}x{args.size} uint16 "
        f"({raw_mb:.0f} MB), one chunk per plane; medians of {args.repeats_compression} runs"
    )
    print(f"{'codec':26s} {'ratio':>6s} {'MB':>7s} {'write MB/s':>11s} {'read MB/s':>10s}")
    for name, compressors in candidates.items():
        path = work / f"codec_{name.replace(' ', '_')}.zarr"
        array = zarr.create_array(
            path,
            shape=planes.shape,
            chunks=(1, args.size, args.size),
            dtype=planes.dtype,
            compressors=compressors,
            fill_value=0,
        )
        writes, reads = [], []
        for _ in range(args.repeats_compression):
            start = time.perf_counter()
            for index, plane in enumerate(planes):
                array[index] = plane
            writes.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        for _ in range(args.repeats_compression):
            reopened = zarr.open_array(path, mode="r")
            start = time.perf_counter()
            for index in range(len(planes)):
                plane = reopened[index]
            reads.append(time.perf_counter() - start)
        assert np.array_equal(plane, planes[-1])
        print(
            f"{name:26s} {planes.nbytes / size:6.2f} {size / 1e6:7.1f} "
            f"{raw_mb / statistics.median(writes):11.0f} {raw_mb / statistics.median(reads):10.0f}"
        )
        shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--repeats", type=int, default=1, help="ingest runs (median)")
    parser.add_argument("--workers", type=int, default=None, help="ingest threads")
    parser.add_argument("--compression-planes", type=int, default=24)
    parser.add_argument("--repeats-compression", type=int, default=5)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-compression", action="store_true")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: TMPDIR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_ingest_") as scratch:
        work = Path(scratch)
        if not args.skip_ingest:
            bench_ingest(args, work)
        if not args.skip_compression:
            bench_compression(args, work)


if __name__ == "__main__":
    main()
