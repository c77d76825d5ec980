"""Dask orchestration speed on 2160 x 2160 three-channel fields.

Measures, with the task code ``run_plate`` uses (read field, analyse, write labels, Parquet part
and marker; ``analyze_one_field`` times its own steps):

* where a task's time goes, inside a worker: read, kernel (``analyze_field``), writes;
* fields/s (and per core) with 1 and 2 worker processes, one thread each, and the 1 -> 2
  scaling, with screenlib's worker malloc settings (``WORKER_ENVIRONMENT``) and with the
  previous ones (``MALLOC_MMAP_THRESHOLD_`` only); workers started with Dask's own settings
  (as on an existing cluster) with and without the task's run-time malloc tuning; 2 threads
  in one process; one task per well instead of per field. The configurations run
  interleaved, each on a fresh cluster, so load changes hit all of them;
* page faults and kernel (system) CPU time per field in the workers;
* what the machine itself allows 2 processes, measured beside them: a cache-resident CPU loop
  and a loop streaming 64 MB arrays (memory bandwidth is shared by the cores);
* Dask overhead: wall-clock time not spent inside tasks, and the cost of scheduling no-op
  tasks, both as % of the task time;
* peak resident memory per worker (and its multiple of one field's size);
* building and submitting the 3,456 task graph of a 384-well x 9-field plate;
* the extrapolated time of a 384-well x 9-field plate on this machine.

Usage::

    python benchmarks/bench_dask.py [--fields 16] [--repeats 2] [--workdir DIR]

Medians are printed; on a shared machine run it when quiet, or read it as "under load".
"""

from __future__ import annotations

import os

# the serial baseline runs on one core, as a Dask worker does (its nanny sets these too);
# they must be set before numpy is imported
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
# each configuration states its workers' malloc settings; none may leak in from the shell
for _variable in [k for k in os.environ if k.startswith("MALLOC_")]:
    del os.environ[_variable]

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
# workers closing at the end of each configuration may log lost heartbeats: not news here
QUIET = logging.CRITICAL


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


def make_jobs(
    plate, field_ids, parts_dir: Path, flatfield_path: str | None, nucleus_diameter_px=None
):
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
            nucleus_diameter_px=nucleus_diameter_px,
        )
        for well, field_index in field_ids
    ]


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB), from its own address space's high-water mark
    (``ru_maxrss`` would include the parent's size when the worker was spawned)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_usage() -> tuple[int, float, float]:
    """(minor page faults, system CPU seconds, user CPU seconds) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime, usage.ru_utime


def noop(*args) -> None:
    return None


def import_task_modules() -> float:
    """Import what a task uses; this worker's resident memory (MB) afterwards."""
    import pyarrow.parquet  # noqa: F401

    import screenlib.analysis  # noqa: F401
    import screenlib.orchestrate._field_task  # noqa: F401

    return current_rss_mb()


def cpu_probe(_: int) -> float:
    """A cache-resident, CPU-bound loop (~0.1 s): what the cores alone allow."""
    total = 0
    for number in range(1_500_000):
        total += number * number
    return float(total)


def memory_probe(_: int) -> float:
    """Streams 64 MB arrays through memory (~0.1 s): what shared memory bandwidth allows."""
    source = np.ones(8_000_000)
    target = np.empty_like(source)
    for _repeat in range(5):
        np.multiply(source, 1.0001, out=target)
    return float(target[0])


def probe_rates(client, n_tasks: int) -> dict[str, float]:
    """Tasks per second of the two probes on this cluster."""
    rates = {}
    for probe in (cpu_probe, memory_probe):
        client.gather(client.map(probe, range(len(client.nthreads())), pure=False))  # warm
        started = time.perf_counter()
        client.gather(client.map(probe, range(n_tasks), pure=False))
        rates[probe.__name__] = n_tasks / (time.perf_counter() - started)
    return rates


STEPS = {  # analyze_one_field's timed steps, grouped as printed
    "read": ("read", "flatfield"),
    "kernel": ("kernel",),
    "write": ("identifiers", "labels", "table", "marker"),
}


def analyze_timed(jobs, tune: bool = True) -> list[tuple[dict, dict]]:
    """Worker side: ``analyze_fields``, the real task, with each field's step seconds
    (``tune=False`` skips its run-time malloc tuning, as screenlib did before)."""
    from screenlib.orchestrate._cluster import tune_worker_malloc
    from screenlib.orchestrate._field_task import analyze_one_field

    if tune:
        tune_worker_malloc()
    results = []
    for job in jobs:
        timings: dict[str, float] = {}
        results.append((analyze_one_field(job, timings), timings))
    return results


def _clear_malloc_environment() -> None:
    # a nanny copies its workers' settings into this process's os.environ, where the next
    # cluster's nanny would prefer them over its own configuration
    for variable in [k for k in os.environ if k.startswith("MALLOC_")]:
        del os.environ[variable]


def run_config(
    jobs,
    *,
    n_workers: int,
    threads: int,
    environment: dict,
    per_well: bool,
    tune: bool = True,
    probes: bool = False,
):
    """Wall time, in-task seconds, step times, faults and worker peak memory of one
    configuration, on a fresh local cluster."""
    from distributed import Client, wait

    from screenlib.orchestrate._cluster import local_cluster

    _clear_malloc_environment()
    cluster = local_cluster(
        n_workers, threads, environment=environment, dashboard_address=None, silence_logs=QUIET
    )
    client = Client(cluster)
    try:
        imported = client.run(import_task_modules)
        # warm-up: every worker opens the plate and loads the flat-field once
        warm = [
            client.submit(analyze_timed, [job], tune, pure=False)
            for job in jobs[: n_workers * threads]
        ]
        wait(warm)
        baseline = client.run(current_rss_mb)
        usage_before = client.run(cpu_usage)
        groups = (
            [jobs[i : i + 2] for i in range(0, len(jobs), 2)] if per_well else [[j] for j in jobs]
        )
        started = time.perf_counter()
        client_cpu = time.process_time()  # client, scheduler and nannies share this process
        futures = client.map(analyze_timed, groups, tune=tune, pure=False)
        results = [r for group in client.gather(futures) for r in group]
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        usage_after = client.run(cpu_usage)
        peaks = client.run(peak_rss_mb)
        probe = probe_rates(client, 8 * n_workers) if probes else {}
        records = [record for record, _ in results]
        failed = [r for r in records if r["status"] != "done"]
        if failed:
            raise RuntimeError(f"benchmark fields failed: {failed[0]['error']}")
        steps = {
            name: statistics.median(sum(t.get(k, 0.0) for k in keys) for _, t in results)
            for name, keys in STEPS.items()
        }
        steps.update(
            {k: statistics.median(t.get(k, 0.0) for _, t in results) for k in results[0][1]}
        )
        return {
            "wall_s": wall,
            "task_s": sum(r["analysis_seconds"] for r in records),
            "n": len(records),
            "steps": steps,
            "faults": sum(usage_after[w][0] - usage_before[w][0] for w in usage_after)
            / len(records),
            "sys_s": sum(usage_after[w][1] - usage_before[w][1] for w in usage_after)
            / len(records),
            "cpu_s": sum(
                usage_after[w][1] + usage_after[w][2] - usage_before[w][1] - usage_before[w][2]
                for w in usage_after
            )
            / len(records),
            "client_cpu_s": client_cpu / len(records),
            "peak_rss_mb": max(peaks.values()),
            "probes": probe,
            "baseline_rss_mb": max(baseline.values()),
            "imported_rss_mb": max(imported.values()),
        }
    finally:
        client.close()
        cluster.close()


def graph_submit_seconds(template_job) -> dict[str, float]:
    """Build the 3,456 FieldJobs of a 384 x 9 plate and submit them (no-op tasks)."""
    import dataclasses

    from distributed import Client, wait

    from screenlib.orchestrate._cluster import local_cluster

    _clear_malloc_environment()
    cluster = local_cluster(2, 1, dashboard_address=None, silence_logs=QUIET)
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
    parser.add_argument("--fields", type=int, default=16, help="fields per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/screenlib_bench_dask"))
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(QUIET)

    from screenlib.analysis import estimate_flatfield
    from screenlib.analysis.scale import estimate_nucleus_scale
    from screenlib.orchestrate._cluster import WORKER_ENVIRONMENT
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
    # as run_plate does: the nucleus scale is measured once per plate (about 4 % of its
    # fields, at least 3) and handed to every field task
    scale_started = time.process_time()
    scale = estimate_nucleus_scale(reader.read_field(w, f)[0] for w, f in field_ids[:3])
    scale_cpu = time.process_time() - scale_started
    jobs = make_jobs(
        plate, field_ids, args.workdir / "parts", str(flatfield_path), scale.diameter_px
    )

    screenlib_env = dict(WORKER_ENVIRONMENT)
    previous_env = {"MALLOC_MMAP_THRESHOLD_": "33554432"}  # before this benchmark's findings
    fields, well = dict(per_well=False), dict(per_well=True)
    configs = {
        "1 process x 1 thread": dict(
            n_workers=1, threads=1, environment=screenlib_env, probes=True, **fields
        ),
        "2 processes x 1 thread": dict(
            n_workers=2, threads=1, environment=screenlib_env, probes=True, **fields
        ),
        "1 process, previous env": dict(
            n_workers=1, threads=1, environment=previous_env, tune=False, **fields
        ),
        "2 processes, previous env": dict(
            n_workers=2, threads=1, environment=previous_env, tune=False, **fields
        ),
        # an existing cluster started with Dask's defaults (dask worker, dask-jobqueue...)
        "2 processes, Dask env, untuned": dict(
            n_workers=2, threads=1, environment={}, tune=False, **fields
        ),
        "2 processes, Dask env, tuned": dict(n_workers=2, threads=1, environment={}, **fields),
        "1 process x 2 threads": dict(n_workers=1, threads=2, environment=screenlib_env, **fields),
        "2 processes, per-well tasks": dict(
            n_workers=2, threads=1, environment=screenlib_env, **well
        ),
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.repeats):  # interleaved, so load changes hit every configuration
        for name, config in configs.items():
            results[name].append(run_config(jobs, **config))

    def median(name: str, key) -> float:
        return statistics.median(key(r) for r in results[name])

    one = "1 process x 1 thread"
    print("\ntask time split inside a worker process (median wall ms per field):")
    for name in ("1 process x 1 thread", "1 process, previous env"):
        steps = {k: median(name, lambda r, k=k: r["steps"][k]) for k in results[name][0]["steps"]}
        detail = ", ".join(f"{k} {1000 * steps[k]:.0f}" for k in results[name][0]["steps"]
                           if k not in STEPS)  # fmt: skip
        read, kernel, write = (1000 * steps[k] for k in ("read", "kernel", "write"))
        print(f"  {name:26s} read {read:4.0f} | kernel {kernel:4.0f} | write {write:4.0f}"
              f"   ({detail})")  # fmt: skip

    print(
        "\nper field: s/field = wall seconds inside the task; cpu = the workers' user + "
        "system CPU seconds; sys = system (kernel) CPU ms; faults = minor page faults"
    )
    print(f"{'configuration':31s} {'fields/s':>8s} {'/core':>6s} {'s/field':>7s} {'cpu':>5s} "
          f"{'overhead':>8s} {'faults':>7s} {'sys ms':>6s} {'peak RSS/worker':>15s}")  # fmt: skip
    rates = {}
    for name in configs:
        cores = configs[name]["n_workers"] * configs[name]["threads"]
        rate = median(name, lambda r: r["n"] / r["wall_s"])
        overhead = median(name, lambda r, c=cores: (r["wall_s"] * c - r["task_s"]) / r["task_s"])
        rates[name] = rate
        print(f"{name:31s} {rate:8.3f} {rate / cores:6.3f} "
              f"{median(name, lambda r: r['task_s'] / r['n']):7.2f} "
              f"{median(name, lambda r: r['cpu_s']):5.2f} {100 * overhead:7.1f}% "
              f"{median(name, lambda r: r['faults']):7.0f} "
              f"{1000 * median(name, lambda r: r['sys_s']):6.0f} "
              f"{median(name, lambda r: r['peak_rss_mb']):12.0f} MB")  # fmt: skip
    field_mb = 3 * SIZE * SIZE * 2 / 2**20
    two = "2 processes x 1 thread"
    peak = median(two, lambda r: r["peak_rss_mb"])
    base = median(two, lambda r: r["baseline_rss_mb"])
    overhead_two = median(two, lambda r: (r["wall_s"] * 2 - r["task_s"]) / r["task_s"])
    scaling = rates[two] / rates[one]
    previous = rates["2 processes, previous env"] / rates["1 process, previous env"]
    untuned = rates["2 processes, Dask env, untuned"] / rates[two]
    tuned = rates["2 processes, Dask env, tuned"] / rates[two]
    threads = rates["1 process x 2 threads"] / rates[one]
    per_well = rates["2 processes, per-well tasks"] / rates[two]
    print(f"\nfields/s per core: 1 worker {rates[one]:.3f}, 2 workers {rates[two] / 2:.3f}")
    print(f"scaling 1 -> 2 worker processes: x{scaling:.2f} (previous env: x{previous:.2f}; "
          f"1 process x 2 threads: x{threads:.2f})")  # fmt: skip
    # each repeat ran every configuration back to back: its own 1 -> 2 ratio is the least
    # exposed to the machine's drift (use --repeats 6 or more for a stable median)
    pairs = [
        (b["n"] / b["wall_s"]) / (a["n"] / a["wall_s"])
        for a, b in zip(results[one], results[two], strict=True)
    ]
    print(f"scaling per repeat: {', '.join(f'x{p:.2f}' for p in pairs)}; "
          f"median x{statistics.median(pairs):.2f}")  # fmt: skip
    ceiling = {
        name: median(two, lambda r, n=name: r["probes"][n])
        / median(one, lambda r, n=name: r["probes"][n])
        for name in ("cpu_probe", "memory_probe")
    }
    print(f"what the machine allows, measured beside them: a CPU-bound loop scales "
          f"x{ceiling['cpu_probe']:.2f}, streaming 64 MB arrays x{ceiling['memory_probe']:.2f} "
          "on 2 processes")  # fmt: skip
    print(f"workers started with Dask's defaults (an existing cluster): {untuned:.2f}x the "
          f"rate untuned, {tuned:.2f}x with the task's run-time malloc tuning")  # fmt: skip
    print(f"per-well vs per-field tasks (2 processes): {per_well:.2f}x the rate")
    client_ms = 1000 * median(two, lambda r: r["client_cpu_s"])
    share = 100 * client_ms / 1000 * rates[two] / 2
    print(f"client + scheduler + nannies (one process) used {client_ms:.0f} ms of CPU per "
          f"field on 2 workers ({share:.1f} % of the 2 cores)")  # fmt: skip
    tail = 100 * 0.5 / len(jobs)  # the last field leaves the other worker idle ~half a task
    print(f"Dask overhead on 2 workers: {100 * overhead_two:.1f} % of the task time (a "
          f"{len(jobs)}-field run includes ~{tail:.0f} % of idle tail, which a plate of "
          "thousands of fields does not)")  # fmt: skip
    imported = median(two, lambda r: r["imported_rss_mb"])
    print(f"peak memory per worker: {peak:.0f} MB; {imported:.0f} MB of it is the imported "
          f"libraries, so one field's analysis needs {peak - imported:.0f} MB = "
          f"{(peak - imported) / field_mb:.1f} x its {field_mb:.0f} MB of pixels "
          f"({base:.0f} MB resident between fields)")  # fmt: skip

    graph = graph_submit_seconds(jobs[0])
    per_task_ms = 1000 * graph["noop_run_s"] / graph["n_tasks"]
    task_s = median(two, lambda r: r["task_s"] / r["n"])
    print(f"384 x 9 plate graph: build {1000 * graph['build_s']:.0f} ms, submit "
          f"{1000 * graph['submit_s']:.0f} ms for {graph['n_tasks']} tasks; no-op tasks run at "
          f"{per_task_ms:.2f} ms each on 2 workers = {100 * per_task_ms * 2 / 1000 / task_s:.2f} % "
          "of the task time")  # fmt: skip
    minutes = PLATE_384_FIELDS / rates[two] / 60
    print(
        f"extrapolated 384-well x 9-field plate on 2 worker processes: {minutes:.1f} min "
        f"(previous env: {PLATE_384_FIELDS / rates['2 processes, previous env'] / 60:.1f} min)"
    )
    sampled = int(np.clip(round(0.04 * PLATE_384_FIELDS), 3, 24))  # as run.nucleus_scale
    field_cpu = median(one, lambda r: r["cpu_s"])
    scale_share = 100 * (scale_cpu / 3 * sampled) / (field_cpu * PLATE_384_FIELDS)
    print(f"nucleus scale: {scale.diameter_px:.1f} px from 3 fields in {scale_cpu:.2f} s CPU; "
          f"on a 384 x 9 plate ({sampled} sampled fields) {scale_share:.2f} % of the fields' "
          "analysis CPU")  # fmt: skip
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
