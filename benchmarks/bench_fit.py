"""Time per 30-point dose-response curve: screenlib's full fit vs scipy's plain curve_fit.

screenlib's time includes the multi-start fit, the profile-likelihood interval on log IC50,
the F-test and every flag. scipy's ``curve_fit`` (Levenberg-Marquardt, no bounds, one start,
no interval) is given a sensible start from the data, as a user would.

Run: ``python benchmarks/bench_fit.py [--curves 200] [--repeats 5]``; prints medians (ms).
``--baseline REF`` also times the fitter as it was at git revision REF (its ``fit.py`` and
``model.py``), interleaved with the working tree's in every round, to show a change is no slower.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from screenlib.doseresponse import fit_curve

DOSES = 1e-5 / 3.0 ** np.arange(10)  # 10-point 3-fold dilution from 10 uM
SEED_IC50_NM = (21.9, 17.7, 52.63, 25.7, 44.1)


def prism(x, log_ic50, hill, top, bottom):
    return bottom + (top - bottom) / (1 + 10 ** (hill * (x - log_ic50)))


def simulated_curves(n_curves: int, seed: int = 0):
    """Triplicate 10-point curves at the seed's IC50s with 5 % noise."""
    rng = np.random.default_rng(seed)
    concentration = np.repeat(DOSES, 3)
    curves = []
    for index in range(n_curves):
        ic50 = SEED_IC50_NM[index % len(SEED_IC50_NM)] * 1e-9
        response = 100 / (1 + concentration / ic50) + rng.normal(0, 5, concentration.size)
        curves.append((concentration, response))
    return curves


def time_per_curve(function, curves, repeats: int, clock=time.perf_counter) -> float:
    """Median over curves of the best-of-``repeats`` time of one call (ms)."""
    times = []
    for concentration, response in curves:
        best = float("inf")
        for _ in range(repeats):
            start = clock()
            function(concentration, response)
            best = min(best, clock() - start)
        times.append(best)
    return 1e3 * statistics.median(times)


def time_interleaved(contenders, curves, repeats: int, clock) -> dict[str, float]:
    """Like :func:`time_per_curve` for several functions, alternating them curve by curve so
    that a burst of load on a shared machine hits each alike."""
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for concentration, response in curves:
        best = dict.fromkeys(times, float("inf"))
        for _ in range(repeats):
            for name, function in contenders:
                start = clock()
                function(concentration, response)
                best[name] = min(best[name], clock() - start)
        for name, value in best.items():
            times[name].append(value)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def screenlib_fit(concentration, response):
    return fit_curve(concentration, response, direction="decreasing")


def binomial_fit(concentration, response):
    total = np.full(concentration.size, 1500)
    positive = np.round(np.clip(1 - response / 100, 0, 1) * total)
    return fit_curve(concentration, n_positive=positive, n_total=total)


def scipy_curve_fit(concentration, response):
    x = np.log10(concentration)
    start = (float(np.median(x)), 1.0, float(response.max()), float(response.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        return curve_fit(prism, x, response, p0=start)


def baseline_fit_curve(revision: str):
    """``fit_curve`` from ``screenlib/doseresponse/{fit,model}.py`` at a git revision."""
    package = Path(tempfile.mkdtemp(prefix="bench_fit_")) / "baseline_doseresponse"
    package.mkdir()
    (package / "__init__.py").write_text("")
    root = Path(__file__).resolve().parent.parent
    for name in ("fit.py", "model.py"):
        source = subprocess.run(
            ["git", "show", f"{revision}:screenlib/doseresponse/{name}"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("screenlib.doseresponse.model", "baseline_doseresponse.model")
        (package / name).write_text(source)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("baseline_doseresponse.fit").fit_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", metavar="REF", help="also time fit_curve at git REF")
    args = parser.parse_args()
    curves = simulated_curves(args.curves)
    contenders = [("screenlib", screenlib_fit), ("scipy", scipy_curve_fit)]
    if args.baseline:
        old_fit_curve = baseline_fit_curve(args.baseline)

        def baseline_fit(concentration, response):
            return old_fit_curve(concentration, response, direction="decreasing")

        contenders.append((f"baseline {args.baseline}", baseline_fit))
    for _name, function in contenders:  # warm up imports and caches
        function(*curves[0])
    # interleave the two so that machine load hits both alike; wall time and this thread's
    # CPU time (the latter is less disturbed by other processes on a shared machine)
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    rounds: dict[tuple[str, str], list[float]] = {}
    for _ in range(3):
        for clock_name, clock in clocks.items():
            timed = time_interleaved(contenders, curves, args.repeats, clock)
            for name, value in timed.items():
                rounds.setdefault((name, clock_name), []).append(value)
        rounds.setdefault(("binomial", "wall"), []).append(
            time_per_curve(binomial_fit, curves[:50], 1)
        )
    median = {key: statistics.median(values) for key, values in rounds.items()}
    print(f"curves: {args.curves} x 30 points (10 doses x 3), 5 % noise; medians of 3 rounds")
    for clock_name in clocks:
        ours, theirs = median[("screenlib", clock_name)], median[("scipy", clock_name)]
        print(
            f"[{clock_name:4}] screenlib fit_curve (profile interval + flags): {ours:.2f} ms"
            f" | scipy curve_fit (one start, no interval): {theirs:.2f} ms"
            f" | ratio {ours / theirs:.1f}x | at curve_fit = 0.4 ms: {0.4 * ours / theirs:.2f} ms"
        )
    print(
        f"[wall] screenlib binomial (counts) incl. interval: {median[('binomial', 'wall')]:.2f} ms"
    )
    if args.baseline:
        name = f"baseline {args.baseline}"
        for clock_name in clocks:
            ours, old = median[("screenlib", clock_name)], median[(name, clock_name)]
            print(
                f"[{clock_name:4}] working tree {ours:.3f} ms | {name} {old:.3f} ms"
                f" | change {100 * (ours / old - 1):+.1f} %"
            )


if __name__ == "__main__":
    main()
