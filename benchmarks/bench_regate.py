"""Re-gating time: a settings change that touches only gating, against the first run.

The user guide promises that gating and fit changes take seconds: finished fields are reused
and only finalize (gates, wells, QC, fits, report) runs again. This script runs the example
plate into a fresh folder, then again with a gating-only change, and prints both times and
their ratio (the target is <= 10 %).

    python benchmarks/bench_regate.py [--scheduler sync] [--no-report]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from screenlib.orchestrate import run_plate
from screenlib.settings import AssaySettings, GatingSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "example_plates" / "milademetan_nb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None, help="sync, an address, or a local cluster")
    parser.add_argument("--no-report", action="store_true", help="time the tables only")
    args = parser.parse_args()
    report = not args.no_report
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        started = time.perf_counter()
        first = run_plate(EXAMPLE / "export", EXAMPLE / "platemap.csv", out,
                          scheduler=args.scheduler, progress=False, report=report)  # fmt: skip
        first_seconds = time.perf_counter() - started
        regated = AssaySettings(gating=GatingSettings(k_mad=3.5, method="robust"))
        started = time.perf_counter()
        second = run_plate(EXAMPLE / "export", EXAMPLE / "platemap.csv", out, regated,
                           scheduler=args.scheduler, progress=False, report=report)  # fmt: skip
        second_seconds = time.perf_counter() - started
    assert second.n_fields_computed == 0, "the gating change re-analysed fields"
    print(f"first run:  {first_seconds:6.2f} s ({first.n_fields_computed} fields analysed)")
    print(f"re-gating:  {second_seconds:6.2f} s ({second.n_fields_reused} fields reused)")
    print(f"ratio:      {100 * second_seconds / first_seconds:5.1f} % (target <= 10 %)")


if __name__ == "__main__":
    main()
