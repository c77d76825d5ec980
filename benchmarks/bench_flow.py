"""Seconds to read, gate and aggregate a flow plate of about one million events.

Simulates the example design (96 wells, milademetan on five lines) as one FCS 3.1 file per
well with spillover, debris and doublets on, once, into a temporary folder; then times each
step of the analysis: ``read_flow_plate`` (flowio, compensation), ``flow_tables`` (scatter
gate, per-cell table), ``learn_gates`` + ``classify_cells`` and ``aggregate_wells`` +
``plate_qc``. Target: the whole chain within 10 s on 2 cores. Wall-clock seconds depend on
what else runs on the machine; "total CPU" (user + system seconds of this process) does not,
and on an idle machine the two agree (the chain is single-threaded).

Run: ``python benchmarks/bench_flow.py [--events-per-well 14500] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from screenlib.aggregate import aggregate_wells, plate_qc
from screenlib.flow import flow_tables, read_flow_plate
from screenlib.gating import classify_cells, learn_gates
from screenlib.platemap import read_platemap
from screenlib.settings import AssaySettings
from screenlib.simulate import example_plate_design
from screenlib.simulate._flow import simulate_flow_plate


def analyse(fcs: Path, platemap_path: Path, settings: AssaySettings) -> dict[str, float]:
    """Run the chain once; seconds per step."""
    times: dict[str, float] = {}
    cpu = time.process_time()
    start = time.perf_counter()
    platemap = read_platemap(platemap_path)
    plate = read_flow_plate(fcs)
    times["read"] = time.perf_counter() - start
    mark = time.perf_counter()
    cells, fields = flow_tables(plate, platemap, settings)
    times["tables + scatter gate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gates = learn_gates(cells, platemap, settings.gating)
    cells = classify_cells(cells, gates, settings.gating)
    times["Annexin/PI gates + classes"] = time.perf_counter() - mark
    mark = time.perf_counter()
    wells = aggregate_wells(cells, platemap, fields, settings)
    plate_qc(wells, platemap)
    times["wells + plate QC"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    times["total CPU"] = time.process_time() - cpu
    times["events"] = float(len(cells))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-well", type=int, default=14500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        simulated = simulate_flow_plate(
            example_plate_design(), Path(folder) / "plate", events_per_well=args.events_per_well
        )
        size = sum(p.stat().st_size for p in simulated.fcs.iterdir()) / 1e6
        print(f"plate: {simulated.n_events} events in 96 FCS files ({size:.0f} MB)")
        runs = [
            analyse(simulated.fcs, simulated.platemap, AssaySettings()) for _ in range(args.repeats)
        ]
    for step in runs[0]:
        if step == "events":
            continue
        values = [run[step] for run in runs]
        print(f"{step:>28}: median {statistics.median(values):6.2f} s  best {min(values):6.2f} s")
    best = min(run["total"] for run in runs)
    print(f"events per second (best run): {runs[0]['events'] / best:,.0f}")


if __name__ == "__main__":
    main()
