"""What ``screenlib fit`` writes next to its table: the full table, curve figures, an HTML page
and (for MTT input) the per-well viabilities."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from screenlib.cli._output import write_output
from screenlib.doseresponse.model import four_parameter_logistic
from screenlib.doseresponse.units import UNIT_FACTORS, format_concentration

READOUT_LABELS = {
    "apoptotic_fraction": "apoptotic fraction",
    "relative_cell_count": "cell count (relative to vehicle)",
    "viability_percent": "viability (%)",
    "gr_value": "GR value",
}


def _points(data: pd.DataFrame | None, fit: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dose (molar) and response of the curve's wells in the input table, if it has them."""
    if data is None or "concentration_molar" not in data.columns:
        return np.array([]), np.array([])
    rows = data
    for key in ("sample", "compound"):
        if key in rows.columns and key in fit.index:
            rows = rows[rows[key].fillna("").astype(str) == str(fit[key])]
    readout = str(fit.get("readout", ""))
    if readout in rows.columns:
        y = pd.to_numeric(rows[readout], errors="coerce")
    elif {"n_positive", "n_total"} <= set(rows.columns):
        y = pd.to_numeric(rows["n_positive"]) / pd.to_numeric(rows["n_total"])
    elif "response" in rows.columns:
        y = pd.to_numeric(rows["response"], errors="coerce")
    else:
        return np.array([]), np.array([])
    conc = pd.to_numeric(rows["concentration_molar"], errors="coerce")
    keep = (conc > 0) & y.notna()
    return conc[keep].to_numpy(float), y[keep].to_numpy(float)


def curve_figure(fits: pd.DataFrame, data: pd.DataFrame | None, unit: str):
    """Prism-like panels, one per sample x compound (readouts overlaid), log-dose axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter

    groups = list(fits.groupby(["sample", "compound"], sort=True, dropna=False))
    n = max(len(groups), 1)
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    factor = UNIT_FACTORS[unit]
    for axis, ((sample, compound), part) in zip(axes.ravel(), groups, strict=False):
        for _, fit in part.iterrows():
            label = READOUT_LABELS.get(str(fit.get("readout")), str(fit.get("readout")))
            x, y = _points(data, fit)
            dots = axis.plot(x / factor, y, "o", ms=4, alpha=0.8, label=label)[0]
            low, high = fit.get("lowest_dose_molar"), fit.get("top_dose_molar")
            parameters = [
                fit.get(k)
                for k in ("log_ic50_fit", "hill_slope", "response_at_zero_dose",
                          "response_at_infinite_dose")
            ]  # fmt: skip
            if all(pd.notna(v) for v in [low, high, *parameters]):
                grid = np.linspace(np.log10(low) - 0.3, np.log10(high) + 0.3, 200)
                curve = four_parameter_logistic(grid, *map(float, parameters))
                axis.plot(10**grid / factor, curve, "-", color=dots.get_color())
        readouts = [str(r) for r in part.get("readout", pd.Series(["response"] * len(part)))]
        texts = [
            f"{READOUT_LABELS.get(r, r).split(' (')[0]} {t}"
            for r, t in zip(readouts, part.get("ic50_text", [""] * len(part)), strict=True)
        ]
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
        axis.set_title(f"{sample} · {compound}\nIC50: " + "; ".join(texts), fontsize=9)
        axis.set_xlabel(f"{compound} ({unit})")
        labels = {READOUT_LABELS.get(r, r) for r in readouts}
        axis.set_ylabel(labels.pop() if len(labels) == 1 else "response (see legend)")
        axis.spines[["top", "right"]].set_visible(False)
        axis.legend(fontsize=7, frameon=False, loc="best")
    for axis in axes.ravel()[n:]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure


def write_fit_outputs(
    out_path: Path,
    core: pd.DataFrame,
    full: pd.DataFrame,
    data: pd.DataFrame | None,
    unit: str,
    viabilities: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``OUT`` (core CSV), ``OUT_full.parquet``, ``OUT_curves.png/.svg``, ``OUT.html``
    and, for MTT input, ``OUT_viability.csv``; return the paths written."""
    stem = out_path.with_suffix("")
    written = [write_output(out_path, lambda tmp: core.to_csv(tmp, index=False))]
    full_path = Path(f"{stem}_full.parquet")
    written.append(write_output(full_path, lambda tmp: full.to_parquet(tmp, index=False)))
    if viabilities is not None:
        path = Path(f"{stem}_viability.csv")
        written.append(write_output(path, lambda tmp: viabilities.to_csv(tmp, index=False)))
    images = {}
    if not full.empty and {"sample", "compound"} <= set(full.columns):
        import matplotlib
        from matplotlib import pyplot as plt

        from screenlib.report.figures import SVG_STYLE

        figure = curve_figure(full, data, unit)
        for suffix in ("png", "svg"):
            path = Path(f"{stem}_curves.{suffix}")
            with matplotlib.rc_context(SVG_STYLE):  # editable SVG text; no effect on PNG
                written.append(
                    write_output(path, lambda tmp, s=suffix: figure.savefig(tmp, format=s, dpi=150))
                )
            images[suffix] = path
        plt.close(figure)
    page = _html_page(core, images.get("png"))
    written.append(write_output(Path(f"{stem}.html"), lambda tmp: tmp.write_text(page)))
    return written


def _html_page(core: pd.DataFrame, png: Path | None) -> str:
    image = ""
    if png is not None:
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        image = f'<img alt="dose-response curves" src="data:image/png;base64,{encoded}">'
    table = core.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}", border=0)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Dose-response fits</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>Dose-response fits</h1>"
        f"<p>{len(core)} curve(s). IC50s outside the tested range are given as text "
        f"({html.escape('> top dose')}, or a lower limit when the curve has no high-dose "
        "plateau). Hill slope: steepness, always positive.</p>"
        f"{image}{table}</body></html>"
    )


__all__ = ["curve_figure", "format_concentration", "write_fit_outputs"]
