"""Figures of the report: dose-response curves and Annexin V / PI quadrants (matplotlib), and
the plate maps (drawn as pixels: :mod:`screenlib.report.plate_figures`, re-exported here).

Each curve or quadrant function takes tables and returns a matplotlib ``Figure`` (Agg backend,
no display); :func:`save_figure` writes it, or a plate map's image, as PNG (and a Figure also as
SVG, for the figures taken to slides).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)  # never open a window; a report is written headless

import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from screenlib.platemap import PlateGeometry, geometry_for_wells  # noqa: E402
from screenlib.report.plate_figures import (  # noqa: E402, F401 - the report's plate maps
    NO_DATA_COLOR,
    QC_STATES,
    plate_heatmap,
    plate_heatmap_panels,
    qc_heatmap,
)

#: SVG text as ``<text>`` (DejaVu Sans, else the viewer's Arial/Helvetica), not as outlines
SVG_STYLE = {"svg.fonttype": "none"}
CLASS_COLORS = {
    "viable": "#4d4d4d",
    "early_apoptotic": "#1a9850",
    "late_apoptotic": "#d4a017",
    "necrotic": "#d73027",
}
CLASS_LABELS = {
    "viable": "viable",
    "early_apoptotic": "early apoptotic",
    "late_apoptotic": "late apoptotic",
    "necrotic": "necrotic",
}


def save_figure(
    figure: Figure | Image.Image, stem: Path, dpi: int = 120, *, svg: bool = True
) -> bytes:
    """Write ``stem.png`` (and ``stem.svg`` when ``svg``); return the PNG bytes (for embedding).

    ``figure`` is a matplotlib Figure, or an image already drawn (a plate map: PNG only).
    The PNG is compressed at zlib level 3: as sharp (lossless), a few per cent larger and
    about a third faster to write than the default level 6. The SVG keeps its text as text
    (:data:`SVG_STYLE`), so titles and labels can be edited where the figure is pasted.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if isinstance(figure, Image.Image):
        if svg:
            raise ValueError(f"{stem.name}: an image drawn as pixels has no SVG")
        figure.save(buffer, "png", compress_level=3)
        stem.with_suffix(".png").write_bytes(buffer.getvalue())
        return buffer.getvalue()
    figure.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 3})
    png = buffer.getvalue()
    stem.with_suffix(".png").write_bytes(png)
    if svg:  # text kept as text: editable on a slide, and a third faster to write
        with matplotlib.rc_context(SVG_STYLE):
            figure.savefig(stem.with_suffix(".svg"), format="svg")
    return png


def plate_geometry(wells: list[str], n_wells: int | None = None) -> PlateGeometry:
    """The standard plate (96/384/1536) holding ``wells``, or the one of ``n_wells`` wells."""
    if n_wells in (96, 384, 1536):
        return PlateGeometry.from_size(n_wells)
    return geometry_for_wells(list(wells))


def format_molar(concentration: float) -> str:
    """A concentration in molar written in the unit a biologist would use (``"1.5 µM"``).

    Examples
    --------
    >>> format_molar(1.5e-6), format_molar(3e-9), format_molar(0.0)
    ('1.5 µM', '3 nM', '0')
    """
    if concentration is None or not np.isfinite(concentration):
        return "n/a"
    if concentration == 0:
        return "0"
    for factor, unit in ((1.0, "M"), (1e-3, "mM"), (1e-6, "µM"), (1e-9, "nM"), (1e-12, "pM")):
        if abs(concentration) >= factor * 0.9995:
            return f"{concentration / factor:.3g} {unit}"
    return f"{concentration / 1e-15:.3g} fM"


def _molar_tick(value_log10: float, _position=None) -> str:
    return format_molar(10.0**value_log10)


def dose_response_figure(
    title: str,
    panels: list[dict],
) -> Figure:
    """Dose-response panels (one per read-out) of one compound in one cell line.

    Parameters
    ----------
    title
        Figure title, e.g. ``"HeLa · staurosporine"``.
    panels
        One dict per read-out with keys ``ylabel``; ``concentration_molar`` and ``response``
        (arrays of the replicate wells, vehicle wells at concentration 0); optional
        ``curve`` (callable: log10 molar -> response), ``band`` (callable returning
        ``(low, high)`` arrays), ``ic50_molar``, ``ic50_interval_molar`` (low, high),
        ``ic50_text`` (shown when the IC50 is not a number, e.g. "> 10 µM"),
        ``flags`` (text), ``ylim``.
    """
    width = 5.2 * len(panels)
    figure = Figure(figsize=(width, 4.5))
    figure.subplots_adjust(
        left=0.8 / width, right=1 - 0.2 / width, bottom=0.2, top=0.88, wspace=0.3
    )
    legend: dict[str, object] = {}
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        _draw_dose_response(axes, panel)
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    # one legend for all panels, below them: a per-panel "best" placement is slow and crowded
    figure.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
        frameon=False, fontsize=8,
    )  # fmt: skip
    figure.suptitle(title, fontsize=12, x=0.02, y=0.98, ha="left", va="top")
    return figure


def _draw_dose_response(axes, panel: dict) -> None:
    concentration = np.asarray(panel["concentration_molar"], dtype=float)
    response = np.asarray(panel["response"], dtype=float)
    dosed = concentration > 0
    log_dose = np.log10(concentration[dosed]) if dosed.any() else np.array([-6.0])
    low, high = float(log_dose.min()), float(log_dose.max())
    span = max(high - low, 1.0)
    vehicle_x = low - 0.35 * span  # vehicle drawn left of an axis break, as Prism does
    grid = np.linspace(low - 0.15 * span, high + 0.15 * span, 200)
    if panel.get("band") is not None:
        band_low, band_high = panel["band"](grid)
        axes.fill_between(
            grid,
            band_low,
            band_high,
            color="#6baed6",
            alpha=0.3,
            linewidth=0,
            label="curve across the IC50 / EC50 interval",
        )
    if panel.get("curve") is not None:
        axes.plot(grid, panel["curve"](grid), color="#08519c", linewidth=2, label="4PL fit")
    axes.scatter(
        np.log10(concentration[dosed]),
        response[dosed],
        s=22,
        color="black",
        zorder=3,
        label="replicate wells",
    )
    second = panel.get("second_response")
    if second is not None:  # a second estimate of the same read-out, e.g. the mixture model
        second = np.asarray(second, dtype=float)
        axes.scatter(
            np.log10(concentration[dosed]), second[dosed], s=18, marker="D",
            facecolor="none", edgecolor="#7b3294", zorder=3,
            label=panel.get("second_label", "second estimate"),
        )  # fmt: skip
    if (~dosed).any():
        jitter = np.linspace(-0.04, 0.04, int((~dosed).sum())) * span
        axes.scatter(
            vehicle_x + jitter,
            response[~dosed],
            s=22,
            facecolor="white",
            edgecolor="black",
            zorder=3,
            label="vehicle wells",
        )
        axes.axvline(vehicle_x + 0.17 * span, color="#bbbbbb", linewidth=0.8, linestyle=":")
    ic50 = panel.get("ic50_molar")
    if ic50 is not None and np.isfinite(ic50) and ic50 > 0:
        log_ic50 = math.log10(ic50)
        axes.axvline(log_ic50, color="#cb181d", linestyle="--", linewidth=1.2)
        interval = panel.get("ic50_interval_molar")
        y_mark = (
            float(panel["curve"](np.array([log_ic50]))[0])
            if panel.get("curve") is not None
            else float(np.nanmedian(response))
        )
        name = panel.get("ic50_name", "IC50")
        if interval is not None and all(v is not None and np.isfinite(v) for v in interval):
            axes.errorbar(
                [log_ic50],
                [y_mark],
                xerr=[[log_ic50 - math.log10(interval[0])], [math.log10(interval[1]) - log_ic50]],
                fmt="o",
                color="#cb181d",
                capsize=4,
                zorder=4,
                label="IC50 / EC50 with 95 % interval",
            )
        else:
            axes.plot([log_ic50], [y_mark], "o", color="#cb181d", zorder=4, label="IC50 / EC50")
        axes.annotate(
            f"{name} {format_molar(ic50)}",
            xy=(log_ic50, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=9,
            color="#cb181d",
            fontweight="bold",
        )
    text = panel.get("ic50_text")
    flags = panel.get("flags")
    note = "; ".join(item for item in (text, flags) if item)
    if note:  # above the panel, where it hides no data
        axes.set_title(note, fontsize=8, loc="right", color="#b35900")
    ticks = np.arange(math.ceil(grid[0]), math.floor(grid[-1]) + 1)
    if span > 5:  # keep tick labels apart on wide ranges
        ticks = ticks[ticks % 2 == 0]
    tick_positions = [float(t) for t in ticks]
    tick_labels = [_molar_tick(t) for t in ticks]
    if (~dosed).any():
        tick_positions = [vehicle_x, *tick_positions]
        tick_labels = ["vehicle", *tick_labels]
    axes.set_xticks(tick_positions)
    axes.set_xticklabels(tick_labels, fontsize=8)
    axes.set_xlim(min(vehicle_x, grid[0]) - 0.1 * span if (~dosed).any() else grid[0], grid[-1])
    axes.set_xlabel("concentration")
    axes.set_ylabel(panel.get("ylabel", "response"))
    if panel.get("ylim") is not None:
        axes.set_ylim(*panel["ylim"])
    axes.spines[["top", "right"]].set_visible(False)


def _density_colors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Local point density (2-D histogram lookup), for a flow-style pseudocolour dot plot."""
    if x.size == 0:
        return np.zeros(0)
    bins = int(np.clip(np.sqrt(x.size), 8, 80))  # coarse bins when there are few cells
    counts, x_edges, y_edges = np.histogram2d(x, y, bins=bins)
    x_index = np.clip(np.searchsorted(x_edges, x) - 1, 0, bins - 1)
    y_index = np.clip(np.searchsorted(y_edges, y) - 1, 0, bins - 1)
    return np.log1p(counts[x_index, y_index])


def quadrant_figure(
    populations: list[dict],
    *,
    annexin_gate: float | None,
    pi_gate: float | None,
    annexin_label: str,
    pi_label: str,
    max_points: int = 20000,
) -> Figure:
    """Annexin V vs PI dot plots with quadrant gates, one panel per population.

    Parameters
    ----------
    populations
        Dicts with ``title``, ``annexin`` and ``pi`` (per-cell arrays) and optional
        ``classes`` (per-cell class names) used for the quadrant percentages.
    annexin_gate, pi_gate
        Gate values (feature units), drawn as lines; None leaves a gate out.
    annexin_label, pi_label
        Axis labels naming the features.
    """
    all_x = np.concatenate([np.asarray(p["annexin"], dtype=float) for p in populations])
    all_y = np.concatenate([np.asarray(p["pi"], dtype=float) for p in populations])

    def linear_width(values: np.ndarray, gate: float | None) -> float:
        # the asinh scale is linear near zero (where background-corrected values scatter
        # around 0) and logarithmic above: switch near the bulk of the negative population
        finite = np.abs(values[np.isfinite(values)])
        scale = float(np.median(finite)) if finite.size else 1.0
        if gate is not None and np.isfinite(gate) and gate > 0:
            scale = min(scale, gate / 3)
        return max(scale, 1e-6)

    x_width = linear_width(all_x, annexin_gate)
    y_width = linear_width(all_y, pi_gate)
    width = 4.6 * len(populations)
    figure = Figure(figsize=(width, 5.0))
    # room for two-line axis labels (the measurement, then where and how it was taken)
    figure.subplots_adjust(
        left=1.0 / width, right=1 - 0.2 / width, bottom=0.16, top=0.9, wspace=0.25
    )
    rng = np.random.default_rng(0)
    finite_x = all_x[np.isfinite(all_x)]
    finite_y = all_y[np.isfinite(all_y)]
    x_limits = _asinh_limits(finite_x, x_width, annexin_gate)
    y_limits = _asinh_limits(finite_y, y_width, pi_gate)
    for index, population in enumerate(populations):
        axes = figure.add_subplot(1, len(populations), index + 1)
        x = np.asarray(population["annexin"], dtype=float)
        y = np.asarray(population["pi"], dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        classes = population.get("classes")
        classes = np.asarray(classes)[keep] if classes is not None else None
        if x.size > max_points:
            chosen = rng.choice(x.size, max_points, replace=False)
            x_plot, y_plot = x[chosen], y[chosen]
        else:
            x_plot, y_plot = x, y
        density = _density_colors(np.arcsinh(x_plot / x_width), np.arcsinh(y_plot / y_width))
        order = np.argsort(density)
        axes.scatter(
            x_plot[order],
            y_plot[order],
            c=density[order],
            cmap="jet",
            s=3 if x.size > 2000 else 8,
            linewidths=0,
            rasterized=True,
        )
        axes.set_xscale("asinh", linear_width=x_width)
        axes.set_yscale("asinh", linear_width=y_width)
        axes.set_xlim(*x_limits)
        axes.set_ylim(*y_limits)
        _asinh_ticks(axes.xaxis, x_limits, x_width)
        _asinh_ticks(axes.yaxis, y_limits, y_width)
        if annexin_gate is not None and np.isfinite(annexin_gate):
            axes.axvline(annexin_gate, color="black", linewidth=1.2)
        if pi_gate is not None and np.isfinite(pi_gate):
            axes.axhline(pi_gate, color="black", linewidth=1.2)
        _quadrant_labels(axes, x, y, classes, annexin_gate, pi_gate)
        title = str(population["title"])
        title = title if len(title) <= 48 else title[:46] + "…"
        axes.set_title(f"{title}\nn = {x.size:,} cells", fontsize=10, loc="left")
        axes.set_xlabel(annexin_label)
        if index == 0:
            axes.set_ylabel(pi_label)
        axes.tick_params(labelsize=8)
    return figure


def _asinh_ticks(axis, limits: tuple[float, float], width: float) -> None:
    """Ticks at 0 and at powers of ten beyond the linear region, labelled as plain numbers."""
    low, high = limits
    ticks = [0.0]
    power = 10.0 ** math.ceil(math.log10(max(width, 1e-12)))
    while power <= high:
        ticks.append(power)
        power *= 10
    power = 10.0 ** math.ceil(math.log10(max(width, 1e-12)))
    while -power >= low:
        ticks.insert(0, -power)
        power *= 10
    axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def _asinh_limits(values: np.ndarray, width: float, gate: float | None) -> tuple[float, float]:
    if values.size == 0:
        return (-width, 10 * width)
    low = float(np.percentile(values, 0.2))
    high = float(np.percentile(values, 99.9))
    if gate is not None and np.isfinite(gate):
        high = max(high, 3 * gate)
    low = min(low, -width)
    return low * 1.3, high * 1.6


def _quadrant_labels(axes, x, y, classes, annexin_gate, pi_gate) -> None:
    total = x.size
    if total == 0:
        return
    if classes is not None:
        fractions = {name: float(np.mean(classes == name)) for name in CLASS_LABELS}
    elif annexin_gate is not None and pi_gate is not None:
        positive_a, positive_p = x > annexin_gate, y > pi_gate
        fractions = {
            "viable": float(np.mean(~positive_a & ~positive_p)),
            "early_apoptotic": float(np.mean(positive_a & ~positive_p)),
            "late_apoptotic": float(np.mean(positive_a & positive_p)),
            "necrotic": float(np.mean(~positive_a & positive_p)),
        }
    else:
        return
    corners = {
        "viable": (0.02, 0.02, "left", "bottom"),
        "early_apoptotic": (0.98, 0.02, "right", "bottom"),
        "late_apoptotic": (0.98, 0.98, "right", "top"),
        "necrotic": (0.02, 0.98, "left", "top"),
    }
    for name, (u, v, ha, va) in corners.items():
        axes.text(
            u,
            v,
            f"{CLASS_LABELS[name]}\n{100 * fractions[name]:.1f} %",
            transform=axes.transAxes,
            ha=ha,
            va=va,
            fontsize=8,
            color=CLASS_COLORS[name],
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def fractions_to_series(wells: pd.DataFrame, column: str) -> dict[str, float]:
    """``{well: value}`` of one wells.csv column (NaN dropped)."""
    if column not in wells.columns:
        return {}
    series = pd.to_numeric(wells[column], errors="coerce")
    return {w: float(v) for w, v in zip(wells["well"], series, strict=True) if np.isfinite(v)}
