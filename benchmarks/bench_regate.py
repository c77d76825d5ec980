"""Re-gating time: a settings change that touches only gating, against the first run.

The user guide promises that gating and fit changes take seconds: finished fields are reused
and only finalize (gates, wells, QC, fits, report) runs again; the report draws again only
the figures whose input data changed (the others are copied from the previous report). This
script runs the example plate into a fresh folder, then again with a gating-only change, and
prints both times and their ratio (the target is <= 10 %). Wall-clock time and CPU time are
both shown: on a shared machine the CPU time (this process and its children, e.g. the
figure-drawing processes) is the steadier measure.

With the report it then times the report alone, from the re-gated run's tables: every figure
drawn (a fresh folder), and with the previous figures to reuse (nothing changed).

With ``--cli`` both runs are ``screenlib run`` commands, each a fresh process started from this
checkout (so imports count, as they do for a user; the report is written unless
``--no-report``); ``--repeat N`` re-gates N times (the gate changed each time) and takes the
median for the ratio. With ``PYTHONDONTWRITEBYTECODE`` set, a checkout without ``__pycache__``
compiles its modules again in every process (about 0.3 s here); a user's install has them.

    python benchmarks/bench_regate.py [--scheduler sync] [--no-report]
    python benchmarks/bench_regate.py --cli [--no-report] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from screenlib.orchestrate import run_plate
from screenlib.settings import AssaySettings, GatingSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_nb"


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timer:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu_seconds() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s wall, {self.cpu:6.2f} s CPU"


def _report_alone(out: Path, folder: Path, previous: Path | None) -> Timer:
    """Write the report of the run in ``out`` into ``folder`` from its output tables."""
    from screenlib.report import write_report
    from screenlib.store import open_plate

    tables = {
        "cells": pd.read_parquet(out / "cells.parquet"),
        "fields": pd.read_csv(out / "fields.csv"),
        "wells": pd.read_csv(out / "wells.csv", keep_default_na=False, na_values=[""]),
        "plate_qc": pd.read_csv(out / "plate_qc.csv"),
        "fits": pd.read_parquet(out / "fits_full.parquet"),
        "gates": json.loads((out / "gates.json").read_text(encoding="utf-8")),
    }
    plate = open_plate(out / "plate.zarr")
    with Timer() as timer:
        extra = {"previous_figures": previous} if previous is not None else {}
        write_report(folder, plate=plate, **tables, **extra)
    return timer


def _command_line(report: bool = True, repeat: int = 1) -> None:
    """First run and ``repeat`` gating-only re-runs as ``screenlib run`` processes (each
    re-run changes the gate again: ``k_mad`` 3.5 and 3.2 in turn)."""
    root = EXAMPLE.parents[1]  # started here, the checkout's own code is imported
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        command = [sys.executable, "-m", "screenlib", "-q", "run", str(EXAMPLE / "export"),
                   "--platemap", str(EXAMPLE / "platemap.csv"), "--out", str(out),
                   *([] if report else ["--no-report"])]  # fmt: skip
        with Timer() as first_time:
            subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL)
        regates = []
        for number in range(repeat):
            settings = Path(folder) / f"gating{number % 2}.toml"
            k_mad = 3.5 if number % 2 == 0 else 3.2
            settings.write_text(f'[gating]\nk_mad = {k_mad}\nmethod = "robust"\n', "utf-8")
            with Timer() as timer:
                subprocess.run([*command, "--settings", str(settings)], cwd=root, check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
            regates.append(timer)
    print(f"first run (command line):  {first_time}")
    for timer in regates:
        print(f"re-gating (command line):  {timer}")
    second_time = sorted(regates, key=lambda timer: timer.wall)[len(regates) // 2]  # median
    label = "ratio" if repeat == 1 else f"ratio, median of {repeat}"
    print(f"{label}: {100 * second_time.wall / first_time.wall:5.1f} % wall, "
          f"{100 * second_time.cpu / first_time.cpu:5.1f} % CPU (target <= 10 %)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None, help="sync, an address, or a local cluster")
    parser.add_argument("--no-report", action="store_true", help="time the tables only")
    parser.add_argument("--cli", action="store_true", help="time two screenlib run commands")
    parser.add_argument("--repeat", type=int, default=1, help="re-gates to time with --cli")
    args = parser.parse_args()
    if args.cli:
        _command_line(report=not args.no_report, repeat=max(1, args.repeat))
        return
    report = not args.no_report
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        with Timer() as first_time:
            first = run_plate(EXAMPLE / "export", EXAMPLE / "platemap.csv", out,
                              scheduler=args.scheduler, progress=False, report=report)  # fmt: skip
        regated = AssaySettings(gating=GatingSettings(k_mad=3.5, method="robust"))
        with Timer() as second_time:
            second = run_plate(EXAMPLE / "export", EXAMPLE / "platemap.csv", out, regated,
                               scheduler=args.scheduler, progress=False, report=report)  # fmt: skip
        alone = reused = None
        if report:
            alone = _report_alone(out, Path(folder) / "report_alone", None)
            reused = _report_alone(out, Path(folder) / "report_reused", out / "figures")
    assert second.n_fields_computed == 0, "the gating change re-analysed fields"
    print(f"first run:  {first_time} ({first.n_fields_computed} fields analysed)")
    print(f"re-gating:  {second_time} ({second.n_fields_reused} fields reused)")
    print(f"ratio:      {100 * second_time.wall / first_time.wall:5.1f} % wall, "
          f"{100 * second_time.cpu / first_time.cpu:5.1f} % CPU (target <= 10 %)")  # fmt: skip
    if alone is not None:
        print(f"report alone, every figure drawn:   {alone}")
        print(f"report alone, every figure reused:  {reused}")


if __name__ == "__main__":
    main()
