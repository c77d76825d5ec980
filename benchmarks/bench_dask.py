"""Dask orchestration speed on 2160 x 2160 three-channel fields.

Measures, with the same task code ``run_plate`` uses (read field, analyse, write labels,
Parquet part and marker):

* seconds per field in one process (no Dask) - the task time;
* fields/s with 1 and 2 worker processes (one thread each), the 1 -> 2 scaling, with and
  without ``MALLOC_MMAP_THRESHOLD_`` in the workers' environment, with 2 threads in one
  process, and with one task per well instead of per field;
* Dask overhead: wall-clock time not spent inside tasks, and the cost of scheduling no-op tasks,
  both as % of the task time;
* peak resident memory per worker (and its multiple of one field's size);
* building and submitting the 3,456 task graph of a 384-well x 9-field plate;
* the extrapolated time of a 384-well x 9-field plate on this machine.

Usage::

    python benchmarks/bench_dask.py [--fields 8] [--repeats 1] [--workdir /tmp/bench_dask]

Medians are printed; on a shared machine run it when quiet, or read it as "under load".
"""

from __future__ import annotations

import os

# the serial baseline runs on one core, as a Dask worker does (its nanny sets these too);
# they must be set before numpy is imported
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SIZE = 2160
PLATE_384_FIELDS = 384 * 9


def make_plate(folder: Path, n_fields: int, n_unique: int = 2):
    """A Zarr plate of ``n_fields`` simulated fields (2 per well; ``n_unique`` distinct)."""
    from screenlib.simulate import render_field
    from screenlib.store import PlateLayout, create_plate

    n_wells = (n_fields + 1) // 2
    wells = [f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}" for i in range(n_wells)]
    layout = PlateLayout(
        name="BENCH",
        wells=wells,
        channel_names=["w1", "w2", "w3"],
        shape=(1, 3, 1, SIZE, SIZE),
        n_fields=2,
        pixel_size_um=0.65,
    )
    plate = create_plate(folder / "bench.zarr", layout, overwrite=True)
    renders = [
        render_field(np.random.default_rng(seed), shape=(SIZE, SIZE), n_cells=2000).channels
        for seed in range(n_unique)
    ]
    field_ids = [(w, f) for w in wells for f in range(2)][:n_fields]
    for number, (well, field_index) in enumerate(field_ids):
        plate.write_field(well, field_index, renders[number % n_unique])
    return plate, field_ids


def make_jobs(plate, field_ids, parts_dir: Path, flatfield_path: str | None):
    from screenlib.orchestrate._field_task import FieldJob
    from screenlib.settings import AssaySettings

    settings = AssaySettings()
    token = uuid.uuid4().hex
    parts_dir.mkdir(parents=True, exist_ok=True)
    return [
        FieldJob(
            plate_path=str(plate.path),
            plate_name="BENCH",
            well=well,
            field=field_index,
            timepoint=0,
            channel_indices=(0, 1, 2),
            stains=("hoechst", "annexin_v", "pi"),
            pixel_size_um=0.65,
            settings=settings,
            flatfield_path=flatfield_path,
            parts_dir=str(parts_dir),
            analysis_hash="bench",
            run_token=token,
        )
        for well, field_index in field_ids
    ]


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def noop(*args) -> None:
    return None


def serial_task_seconds(jobs) -> list[float]:
    """Per-field seconds of the real task in this process (the first call warms caches)."""
    from screenlib.orchestrate._field_task import analyze_one_field

    analyze_one_field(jobs[0])
    times = []
    for job in jobs[: min(len(jobs), 4)]:
        started = time.perf_counter()
        analyze_one_field(job)
        times.append(time.perf_counter() - started)
    return times


def run_config(jobs, *, n_workers: int, threads: int, malloc_env: bool, per_well: bool):
    """Wall time, in-task seconds and worker peak memory of one cluster configuration."""
    import dask
    from distributed import Client, LocalCluster, wait

    from screenlib.orchestrate._field_task import analyze_fields

    environ = {}  # without it: Dask's own default worker environment
    if malloc_env:
        environ["distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_"] = "33554432"
    with dask.config.set(environ):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    client = Client(cluster)
    try:
        # warm-up: every worker imports, opens the plate and loads the flat-field once
        warm = [
            client.submit(analyze_fields, [job], pure=False) for job in jobs[: n_workers * threads]
        ]
        wait(warm)
        baseline = client.run(current_rss_mb)
        groups = (
            [jobs[i : i + 2] for i in range(0, len(jobs), 2)] if per_well else [[j] for j in jobs]
        )
        started = time.perf_counter()
        futures = client.map(analyze_fields, groups, pure=False)
        records = [r for group in client.gather(futures) for r in group]
        wall = time.perf_counter() - started
        peaks = client.run(peak_rss_mb)
        failed = [r for r in records if r["status"] != "done"]
        if failed:
            raise RuntimeError(f"benchmark fields failed: {failed[0]['error']}")
        return {
            "wall_s": wall,
            "task_s": sum(r["analysis_seconds"] for r in records),
            "n": len(records),
            "peak_rss_mb": max(peaks.values()),
            "baseline_rss_mb": max(baseline.values()),
        }
    finally:
        client.close()
        cluster.close()


def graph_submit_seconds(template_job) -> dict[str, float]:
    """Build the 3,456 FieldJobs of a 384 x 9 plate and submit them (no-op tasks)."""
    import dataclasses

    from distributed import Client, LocalCluster, wait

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.CRITICAL
    )
    client = Client(cluster)
    try:
        rows = "ABCDEFGHIJKLMNOP"
        started = time.perf_counter()
        jobs = [
            dataclasses.replace(template_job, well=f"{r}{c:02d}", field=f)
            for r in rows
            for c in range(1, 25)
            for f in range(9)
        ]
        built = time.perf_counter()
        keys = [f"screenlib-field-bench-{j.stem}" for j in jobs]
        futures = client.map(noop, [[j] for j in jobs], key=keys, pure=False)
        submitted = time.perf_counter()
        wait(futures)
        finished = time.perf_counter()
        return {
            "n_tasks": len(jobs),
            "build_s": built - started,
            "submit_s": submitted - built,
            "noop_run_s": finished - submitted,
        }
    finally:
        client.close()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=8, help="fields per timed run")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per configuration")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/screenlib_bench_dask"))
    args = parser.parse_args()

    from screenlib.analysis import estimate_flatfield
    from screenlib.store import open_plate

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    started = time.perf_counter()
    plate, field_ids = make_plate(args.workdir, args.fields)
    print(f"plate: {len(field_ids)} fields of 3 x {SIZE} x {SIZE} uint16 "
          f"({3 * SIZE * SIZE * 2 / 2**20:.1f} MB each), made in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    reader = open_plate(plate.path)
    sample = np.stack([reader.read_field(w, f) for w, f in field_ids[:2]])
    flatfield = np.asarray(estimate_flatfield(sample), dtype=np.float32)
    flatfield_path = args.workdir / "flatfield.npy"
    np.save(flatfield_path, flatfield)
    plate.create_labels("nuclei")
    jobs = make_jobs(plate, field_ids, args.workdir / "parts", str(flatfield_path))

    serial = serial_task_seconds(jobs)
    task_s = statistics.median(serial)
    print(f"task (read + analyse + write), one process, no Dask: median {task_s:.2f} s/field "
          f"({', '.join(f'{t:.2f}' for t in serial)})")  # fmt: skip

    configs = {
        "1 process x 1 thread": dict(n_workers=1, threads=1, malloc_env=True, per_well=False),
        "2 processes x 1 thread": dict(n_workers=2, threads=1, malloc_env=True, per_well=False),
        "2 processes, Dask default env": dict(
            n_workers=2, threads=1, malloc_env=False, per_well=False
        ),
        "1 process x 2 threads": dict(n_workers=1, threads=2, malloc_env=True, per_well=False),
        "2 processes, per-well tasks": dict(n_workers=2, threads=1, malloc_env=True, per_well=True),
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.repeats):  # interleaved, so load changes hit every configuration
        for name, config in configs.items():
            results[name].append(run_config(jobs, **config))

    print(f"\n{'configuration':32s} {'fields/s':>9s} {'/core':>7s} {'s/field in task':>16s} "
          f"{'overhead':>9s} {'peak RSS/worker':>16s}")  # fmt: skip
    rates = {}
    for name, runs in results.items():
        cores = configs[name]["n_workers"] * configs[name]["threads"]
        rate = statistics.median(r["n"] / r["wall_s"] for r in runs)
        overhead = statistics.median(
            (r["wall_s"] * cores - r["task_s"]) / r["task_s"] for r in runs
        )
        peak = statistics.median(r["peak_rss_mb"] for r in runs)
        in_task = statistics.median(r["task_s"] / r["n"] for r in runs)
        rates[name] = rate
        print(f"{name:32s} {rate:9.3f} {rate / cores:7.3f} {in_task:16.2f} "
              f"{100 * overhead:8.1f}% {peak:11.0f} MB")  # fmt: skip
    field_mb = 3 * SIZE * SIZE * 2 / 2**20
    peak = statistics.median(r["peak_rss_mb"] for r in results["2 processes x 1 thread"])
    base = statistics.median(r["baseline_rss_mb"] for r in results["2 processes x 1 thread"])
    one = rates["1 process x 1 thread"]
    scaling = rates["2 processes x 1 thread"] / one
    default_env = rates["2 processes, Dask default env"] / one
    threads = rates["1 process x 2 threads"] / one
    per_well = rates["2 processes, per-well tasks"] / rates["2 processes x 1 thread"]
    print(f"\nscaling 1 -> 2 worker processes: x{scaling:.2f} (Dask default env: "
          f"x{default_env:.2f}; 1 process x 2 threads: x{threads:.2f})")  # fmt: skip
    print(f"per-well vs per-field tasks (2 processes): {per_well:.2f}x the rate")
    print(f"peak memory per worker: {peak:.0f} MB ({peak / field_mb:.1f} x one field's "
          f"{field_mb:.0f} MB; {base:.0f} MB after warm-up, {(peak - base) / field_mb:.1f} fields "
          "above it)")  # fmt: skip

    graph = graph_submit_seconds(jobs[0])
    per_task_ms = 1000 * graph["noop_run_s"] / graph["n_tasks"]
    print(f"384 x 9 plate graph: build {1000 * graph['build_s']:.0f} ms, submit "
          f"{1000 * graph['submit_s']:.0f} ms for {graph['n_tasks']} tasks; no-op tasks run at "
          f"{per_task_ms:.2f} ms each on 2 workers = {100 * per_task_ms * 2 / 1000 / task_s:.2f} % "
          "of the task time")  # fmt: skip
    best = max(rates["2 processes x 1 thread"], rates["2 processes, per-well tasks"])
    minutes = PLATE_384_FIELDS / rates["2 processes x 1 thread"] / 60
    print(
        f"extrapolated 384-well x 9-field plate on 2 worker processes: {minutes:.1f} min "
        f"(best configuration {PLATE_384_FIELDS / best / 60:.1f} min; from the serial task "
        f"time x the measured scaling: {PLATE_384_FIELDS * task_s / scaling / 60:.1f} min)"
    )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
