"""Figures of the report: dose-response curves and Annexin V / PI quadrants (drawn as shapes:
:mod:`screenlib.report.canvas`), and the plate maps (drawn as pixels:
:mod:`screenlib.report.plate_figures`, re-exported here).

:func:`dose_response_figure` and :func:`quadrant_figure` return a
:class:`~screenlib.report.canvas.Canvas`, a plate map a ``PIL.Image.Image``; :func:`save_figure`
writes any of them, or a caller's matplotlib ``Figure``, as PNG (a Canvas or a Figure also as
SVG, for the figures taken to slides). They look as matplotlib would draw them (its font,
colour maps and tick rules) without importing it: its figure machinery costs about 0.7 s to
import and about half a second to lay out and render each curve figure, and even its colour
maps about 0.15 s, which a gating-only re-run would pay every time.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from screenlib.platemap import PlateGeometry, geometry_for_wells
from screenlib.report.canvas import Canvas
from screenlib.report.colormaps import colormap_rgb
from screenlib.report.plate_figures import (  # noqa: F401 - the report's plate maps
    DPI,
    NO_DATA_COLOR,
    PT,
    QC_STATES,
    axis_ticks,
    font,
    plate_heatmap,
    plate_heatmap_panels,
    qc_heatmap,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
BAND_COLOR, CURVE_COLOR, IC50_COLOR, SECOND_COLOR = "#6baed6", "#08519c", "#cb181d", "#7b3294"


def save_figure(
    figure: Canvas | Figure | Image.Image, stem: Path, dpi: int = 120, *, svg: bool = True
) -> bytes:
    """Write ``stem.png`` (and ``stem.svg`` when ``svg``); return the PNG bytes (for embedding).

    ``figure`` is a :class:`Canvas`, a matplotlib Figure, or an image already drawn (a plate
    map: PNG only). The PNG is compressed at zlib level 3: as sharp (lossless), a few per cent
    larger and about a third faster to write than the default level 6. The SVG keeps its text
    as text (:data:`SVG_STYLE`), so titles and labels can be edited where the figure is pasted.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(figure, Canvas):
        png = figure.png()
        stem.with_suffix(".png").write_bytes(png)
        if svg:
            stem.with_suffix(".svg").write_text(figure.svg(), encoding="utf-8")
        return png
    buffer = io.BytesIO()
    if isinstance(figure, Image.Image):
        if svg:
            raise ValueError(f"{stem.name}: an image drawn as pixels has no SVG")
        figure.save(buffer, "png", compress_level=3)
        stem.with_suffix(".png").write_bytes(buffer.getvalue())
        return buffer.getvalue()
    import matplotlib

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


def dose_response_figure(
    title: str,
    panels: list[dict],
) -> Canvas:
    """Dose-response panels (one per read-out) of one compound in one cell line, Prism-like:
    a log-dose axis with decade ticks, the vehicle left of an axis break, replicate wells as
    points, the 4PL fit with its IC50 band, the IC50 with its 95 % interval, one legend below.

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

    Returns
    -------
    Canvas
        The figure (:meth:`Canvas.png`, :meth:`Canvas.svg`; Jupyter shows it).
    """
    width_in = 5.2 * len(panels)
    canvas = Canvas(width_in, 4.5)
    width, height = canvas.size
    # the layout matplotlib's subplots_adjust gave: margins in inches, 0.3 axes widths apart
    left, right = 0.8 * DPI, width - 0.2 * DPI
    axes_width = (right - left) / (len(panels) + 0.3 * (len(panels) - 1))
    top, bottom = 0.12 * height, 0.8 * height
    legend: dict[str, tuple] = {}
    for index, panel in enumerate(panels):
        x0 = left + index * 1.3 * axes_width
        for label, handle in _draw_dose_response(canvas, (x0, top, x0 + axes_width, bottom),
                                                 panel):  # fmt: skip
            legend.setdefault(label, handle)
    _legend(canvas, legend)
    canvas.text((0.02 * width, 0.02 * height), title, 12, ha="left", va="top")
    return canvas


class _Axes:
    """Data to pixel positions of one panel (``box``: left, top, right, bottom pixels).

    ``scale`` (x, y) makes an axis asinh-scaled with that linear width (matplotlib's
    ``"asinh"`` scale: ``asinh(value / width)``, linear near zero, logarithmic far from it).
    """

    def __init__(self, box: tuple[float, float, float, float], xlim, ylim,
                 scale: tuple[float | None, float | None] = (None, None)) -> None:  # fmt: skip
        self.box, self.scale = box, scale
        self.xlim = tuple(self._scaled(v, 0) for v in xlim)
        self.ylim_scaled = tuple(self._scaled(v, 1) for v in ylim)
        self.ylim = tuple(ylim)

    def _scaled(self, value, axis: int):
        value = np.asarray(value, dtype=float)
        width = self.scale[axis]
        return value if width is None else np.arcsinh(value / width)

    def x(self, value):
        x0, _, x1, _ = self.box
        low, high = self.xlim
        return x0 + (self._scaled(value, 0) - low) / (high - low) * (x1 - x0)

    def y(self, value):
        _, y0, _, y1 = self.box
        low, high = self.ylim_scaled
        return y1 - (self._scaled(value, 1) - low) / (high - low) * (y1 - y0)

    def points(self, xs, ys) -> list[tuple[float, float]]:
        return list(zip(self.x(xs).tolist(), self.y(ys).tolist(), strict=True))


def _data_ylim(values: list[np.ndarray]) -> tuple[float, float]:
    """matplotlib's automatic limits: the data's range with 5 % margins."""
    finite = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-12 * max(abs(high), 1.0):
        low, high = low - 0.05 * max(abs(low), 1.0), high + 0.05 * max(abs(high), 1.0)
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def scalar_tick_labels(ticks: np.ndarray) -> list[str]:
    """Tick labels with the decimals matplotlib's ScalarFormatter gives them (and its
    minus sign).

    Examples
    --------
    >>> scalar_tick_labels(np.array([0.0, 0.2, 0.4]))
    ['0.0', '0.2', '0.4']
    >>> scalar_tick_labels(np.array([-0.25, 0.0, 0.25]))
    ['−0.25', '0.00', '0.25']
    """
    locs = np.asarray(ticks, dtype=float)
    if locs.size < 2:
        return [f"{v:g}".replace("-", "\u2212") for v in locs]
    loc_range = float(np.ptp(locs)) or float(np.max(np.abs(locs))) or 1.0
    range_oom = math.floor(math.log10(loc_range))
    sigfigs = max(0, 3 - range_oom)
    threshold = 1e-3 * 10**range_oom
    while sigfigs >= 0 and np.abs(locs - np.round(locs, decimals=sigfigs)).max() < threshold:
        sigfigs -= 1
    decimals = sigfigs + 1
    labels = [f"{v:.{decimals}f}" for v in locs]
    return [("0" + label[2:] if label.startswith("-0") and float(label) == 0 else label)
            .replace("-", "\u2212") for label in labels]  # fmt: skip


def _draw_dose_response(canvas: Canvas, box, panel: dict) -> list[tuple[str, tuple]]:
    """Draw one panel into ``box``; return its legend entries ``(label, handle)``."""
    concentration = np.asarray(panel["concentration_molar"], dtype=float)
    response = np.asarray(panel["response"], dtype=float)
    dosed = concentration > 0
    log_dose = np.log10(concentration[dosed]) if dosed.any() else np.array([-6.0])
    low, high = float(log_dose.min()), float(log_dose.max())
    span = max(high - low, 1.0)
    vehicle_x = low - 0.35 * span  # vehicle drawn left of an axis break, as Prism does
    grid = np.linspace(low - 0.15 * span, high + 0.15 * span, 200)
    has_vehicle = bool((~dosed).any())
    xlim = (min(vehicle_x, grid[0]) - 0.1 * span if has_vehicle else grid[0], grid[-1])
    band = panel["band"](grid) if panel.get("band") is not None else None
    curve = panel["curve"](grid) if panel.get("curve") is not None else None
    second = panel.get("second_response")
    second = np.asarray(second, dtype=float) if second is not None else None
    jitter = np.linspace(-0.04, 0.04, int((~dosed).sum())) * span
    ic50 = panel.get("ic50_molar")
    mark = None
    if ic50 is not None and np.isfinite(ic50) and ic50 > 0:
        log_ic50 = math.log10(ic50)
        y_mark = float(panel["curve"](np.array([log_ic50]))[0]) if curve is not None \
            else float(np.nanmedian(response))  # fmt: skip
        mark = (log_ic50, y_mark)
    ylim = panel.get("ylim")
    if ylim is None:
        shown = [response, [] if mark is None else [mark[1]]]
        shown += [curve] if curve is not None else []
        shown += [second[dosed]] if second is not None else []
        shown += list(band) if band is not None else []
        ylim = _data_ylim(shown)
    axes = _Axes(box, xlim, tuple(ylim))
    x0, y0, x1, y1 = box
    entries: list[tuple[str, tuple]] = []
    canvas.clip_box = box
    if band is not None:
        outline = axes.points(grid, band[0]) + axes.points(grid[::-1], band[1][::-1])
        canvas.polygon(outline, BAND_COLOR, alpha=0.3)
        entries.append(("curve across the IC50 / EC50 interval", ("patch", BAND_COLOR)))
    if curve is not None:
        canvas.line(axes.points(grid, curve), CURVE_COLOR, 2)
        entries.append(("4PL fit", ("line", CURVE_COLOR)))
    if has_vehicle:
        separator = float(axes.x(vehicle_x + 0.17 * span))
        canvas.line([(separator, y0), (separator, y1)], "#bbbbbb", 0.8, dash=":")
    if mark is not None:
        canvas.line([(float(axes.x(mark[0])), y0), (float(axes.x(mark[0])), y1)], IC50_COLOR,
                    1.2, dash="--")  # fmt: skip
    canvas.clip_box = None
    _axes_frame(canvas, axes, panel, vehicle_x if has_vehicle else None, grid, span)
    canvas.clip_box = box
    canvas.markers(
        axes.points(np.log10(concentration[dosed]), response[dosed]),
        "o",
        math.sqrt(22),
        "black",
        "black",
    )
    entries.append(("replicate wells", ("marker", "o", "black", "black")))
    if second is not None:  # a second estimate of the same read-out, e.g. the mixture model
        canvas.markers(axes.points(np.log10(concentration[dosed]), second[dosed]), "D",
                       math.sqrt(2 * 18), None, SECOND_COLOR)  # fmt: skip
        entries.append((panel.get("second_label", "second estimate"),
                        ("marker", "D", None, SECOND_COLOR)))  # fmt: skip
    if has_vehicle:
        canvas.markers(axes.points(vehicle_x + jitter, response[~dosed]), "o", math.sqrt(22),
                       "white", "black")  # fmt: skip
        entries.append(("vehicle wells", ("marker", "o", "white", "black")))
    if mark is not None:
        entries.append(_ic50_mark(canvas, axes, panel, mark))
    canvas.clip_box = None
    if mark is not None:  # the IC50 written at the top of its line
        name = panel.get("ic50_name", "IC50")
        canvas.text((float(axes.x(mark[0])) + 4 * PT, y0 + 2 * PT),
                    f"{name} {format_molar(ic50)}", 9, color=IC50_COLOR, va="top",
                    bold=True)  # fmt: skip
    note = "; ".join(item for item in (panel.get("ic50_text"), panel.get("flags")) if item)
    if note:  # above the panel, where it hides no data
        canvas.text((x1, y0 - 6 * PT), note, 8, color="#b35900", ha="right")
    return entries


def _ic50_mark(canvas: Canvas, axes: _Axes, panel: dict, mark) -> tuple[str, tuple]:
    """The IC50 on the curve, with its 95 % interval as a horizontal error bar when known."""
    x, y = float(axes.x(mark[0])), float(axes.y(mark[1]))
    interval = panel.get("ic50_interval_molar")
    if interval is not None and all(v is not None and np.isfinite(v) and v > 0 for v in interval):
        x_low, x_high = (float(axes.x(math.log10(v))) for v in interval)
        canvas.line([(x_low, y), (x_high, y)], IC50_COLOR, 1.5)
        for end in (x_low, x_high):  # caps 2 x capsize (4 pt) long
            canvas.line([(end, y - 4 * PT), (end, y + 4 * PT)], IC50_COLOR, 1.0)
        canvas.markers([(x, y)], "o", 6, IC50_COLOR, IC50_COLOR)
        return "IC50 / EC50 with 95 % interval", ("errorbar", IC50_COLOR)
    canvas.markers([(x, y)], "o", 6, IC50_COLOR, IC50_COLOR)
    return "IC50 / EC50", ("marker", "o", IC50_COLOR, IC50_COLOR)


def _axes_frame(canvas: Canvas, axes: _Axes, panel: dict, vehicle_x, grid, span) -> None:
    """Left and bottom spines, ticks with their labels, and the axis labels."""
    x0, y0, x1, y1 = axes.box
    tick, pad = 3.5 * PT, 3.5 * PT
    canvas.line([(x0, y0), (x0, y1)], "black", 0.8)
    canvas.line([(x0, y1), (x1, y1)], "black", 0.8)
    ticks = np.arange(math.ceil(grid[0]), math.floor(grid[-1]) + 1)
    if span > 5:  # keep tick labels apart on wide ranges
        ticks = ticks[ticks % 2 == 0]
    positions = [float(t) for t in ticks]
    labels = [format_molar(10.0**t) for t in ticks]
    if vehicle_x is not None:
        positions, labels = [vehicle_x, *positions], ["vehicle", *labels]
    for position, label in zip(positions, labels, strict=True):
        x = float(axes.x(position))
        canvas.line([(x, y1), (x, y1 + tick)], "black", 0.8)
        canvas.text((x, y1 + tick + pad), label, 8, ha="center", va="top")
    ascent, descent = font(8).getmetrics()
    canvas.text(((x0 + x1) / 2, y1 + tick + pad + ascent + descent + 4 * PT), "concentration",
                10, ha="center", va="top")  # fmt: skip
    y_ticks = axis_ticks(*axes.ylim, y1 - y0, tolerance=1e-10)
    y_labels = scalar_tick_labels(y_ticks)
    for value, label in zip(y_ticks, y_labels, strict=True):
        y = float(axes.y(value))
        canvas.line([(x0 - tick, y), (x0, y)], "black", 0.8)
        canvas.text((x0 - tick - pad, y), label, 10, ha="right", va="center")
    widest = max((Canvas.text_width(label, 10) for label in y_labels), default=0.0)
    canvas.text((x0 - tick - pad - widest - 4 * PT, (y0 + y1) / 2), panel.get("ylabel",
                "response"), 10, ha="center", va="bottom", rotated=True)  # fmt: skip


def _legend(canvas: Canvas, entries: dict[str, tuple]) -> None:
    """One legend row centred below the panels (no frame, 8 pt), as matplotlib lays it out."""
    em = 8 * PT
    widths = [2.0 * em + 0.8 * em + Canvas.text_width(label, 8) for label in entries]
    total = sum(widths) + 2.0 * em * (len(widths) - 1)
    width, height = canvas.size
    x = (width - total) / 2
    ascent, descent = font(8).getmetrics()
    y = height - 0.5 * em - 0.4 * em - (ascent + descent) / 2  # the row's middle
    for (label, handle), entry_width in zip(entries.items(), widths, strict=True):
        middle = x + em  # of the handle, 2 em long
        kind = handle[0]
        if kind == "patch":
            canvas.polygon([(x, y - 0.35 * em), (x + 2 * em, y - 0.35 * em),
                            (x + 2 * em, y + 0.35 * em), (x, y + 0.35 * em)], handle[1],
                           alpha=0.3)  # fmt: skip
        elif kind == "line":
            canvas.line([(x, y), (x + 2 * em, y)], handle[1], 2)
        elif kind == "marker":
            size = 6 if handle[2] == IC50_COLOR else math.sqrt(2 * 18) if handle[1] == "D" \
                else math.sqrt(22)  # fmt: skip
            canvas.markers([(middle, y)], handle[1], size, handle[2], handle[3])
        else:  # an error bar: the mark with its interval and caps
            canvas.line([(x + 0.25 * em, y), (x + 1.75 * em, y)], handle[1], 1.5)
            for end in (x + 0.25 * em, x + 1.75 * em):
                canvas.line([(end, y - 4 * PT), (end, y + 4 * PT)], handle[1], 1.0)
            canvas.markers([(middle, y)], "o", 6, handle[1], handle[1])
        canvas.text((x + 2.8 * em, y), label, 8, va="center")
        x += entry_width + 2.0 * em


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
) -> Canvas:
    """Annexin V vs PI dot plots with quadrant gates, one panel per population: points
    coloured by their local density (as a flow cytometer's pseudocolour plot), both axes on
    an asinh scale (linear near zero, logarithmic above), the gates as lines and each
    quadrant's share of the cells in its corner.

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
    canvas = Canvas(4.6 * len(populations), 5.0)
    width, height = canvas.size
    # room for two-line axis labels (the measurement, then where and how it was taken)
    left, right = 1.0 * DPI, width - 0.2 * DPI
    axes_width = (right - left) / (len(populations) + 0.25 * (len(populations) - 1))
    top, bottom = 0.1 * height, 0.84 * height
    rng = np.random.default_rng(0)
    x_limits = _asinh_limits(all_x[np.isfinite(all_x)], x_width, annexin_gate)
    y_limits = _asinh_limits(all_y[np.isfinite(all_y)], y_width, pi_gate)
    for index, population in enumerate(populations):
        x0 = left + index * 1.25 * axes_width
        axes = _Axes((x0, top, x0 + axes_width, bottom), x_limits, y_limits,
                     scale=(x_width, y_width))  # fmt: skip
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
        span = float(density.max() - density.min()) if density.size else 0.0
        shade = (density[order] - density.min()) / span if span > 0 else np.zeros(order.size)
        rgb = colormap_rgb("jet", shade)
        canvas.clip_box = axes.box
        canvas.markers(axes.points(x_plot[order], y_plot[order]), "o",
                       math.sqrt(3 if x.size > 2000 else 8), rgb.tolist(), None)  # fmt: skip
        x_low, y_low, x_high, y_high = axes.box
        if annexin_gate is not None and np.isfinite(annexin_gate):
            gate_x = float(axes.x(annexin_gate))
            canvas.line([(gate_x, y_low), (gate_x, y_high)], "black", 1.2)
        if pi_gate is not None and np.isfinite(pi_gate):
            gate_y = float(axes.y(pi_gate))
            canvas.line([(x_low, gate_y), (x_high, gate_y)], "black", 1.2)
        canvas.clip_box = None
        canvas.line([(x_low, y_low), (x_high, y_low), (x_high, y_high), (x_low, y_high),
                     (x_low, y_low)], "black", 0.8)  # fmt: skip
        _quadrant_labels(canvas, axes, x, y, classes, annexin_gate, pi_gate)
        _asinh_axis(canvas, axes, "x", x_limits, x_width)
        bottom_of_labels = _asinh_axis(canvas, axes, "y", y_limits, y_width)
        title = str(population["title"])
        title = title if len(title) <= 48 else title[:46] + "…"
        canvas.text((x_low, y_low - 6 * PT), f"{title}\nn = {x.size:,} cells", 10)
        tick_text = 8 * PT * 1.2
        canvas.text(((x_low + x_high) / 2, y_high + 7 * PT + tick_text + 4 * PT),
                    annexin_label, 10, ha="center", va="top")  # fmt: skip
        if index == 0:
            canvas.text((bottom_of_labels - 4 * PT, (y_low + y_high) / 2), pi_label, 10,
                        ha="center", va="bottom", rotated=True)  # fmt: skip
    return canvas


def _asinh_ticks(limits: tuple[float, float], width: float) -> list[float]:
    """Ticks at 0 and at powers of ten beyond the linear region (inside ``limits``)."""
    low, high = limits
    ticks = [0.0]
    first = 10.0 ** math.ceil(math.log10(max(width, 1e-12)))
    power = first
    while power <= high:
        ticks.append(power)
        power *= 10
    power = first
    while -power >= low:
        ticks.insert(0, -power)
        power *= 10
    return [t for t in ticks if low <= t <= high]


def _asinh_axis(canvas: Canvas, axes: _Axes, which: str, limits, width: float) -> float:
    """Ticks and their labels (plain numbers, 8 pt) on the bottom or left of ``axes``;
    returns the outer edge of the labels (for the y axis: where its title goes)."""
    x_low, _, _, y_high = axes.box
    tick, pad = 3.5 * PT, 3.5 * PT
    edge = x_low - tick - pad
    for value in _asinh_ticks(limits, width):
        label = f"{value:g}"
        if which == "x":
            x = float(axes.x(value))
            canvas.line([(x, y_high), (x, y_high + tick)], "black", 0.8)
            canvas.text((x, y_high + tick + pad), label, 8, ha="center", va="top")
        else:
            y = float(axes.y(value))
            canvas.line([(x_low - tick, y), (x_low, y)], "black", 0.8)
            canvas.text((x_low - tick - pad, y), label, 8, ha="right", va="center")
            edge = min(edge, x_low - tick - pad - Canvas.text_width(label, 8))
    return edge


def _asinh_limits(values: np.ndarray, width: float, gate: float | None) -> tuple[float, float]:
    if values.size == 0:
        return (-width, 10 * width)
    low = float(np.percentile(values, 0.2))
    high = float(np.percentile(values, 99.9))
    if gate is not None and np.isfinite(gate):
        high = max(high, 3 * gate)
    low = min(low, -width)
    return low * 1.3, high * 1.6


def _quadrant_labels(canvas: Canvas, axes: _Axes, x, y, classes, annexin_gate, pi_gate) -> None:
    """Each quadrant's class and share of the cells, bold in its colour, in its corner."""
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
    x_low, y_low, x_high, y_high = axes.box
    inset_x, inset_y = 0.02 * (x_high - x_low), 0.02 * (y_high - y_low)
    corners = {  # where the label's block sits: (x, y, ha, va)
        "viable": (x_low + inset_x, y_high - inset_y, "left", "bottom"),
        "early_apoptotic": (x_high - inset_x, y_high - inset_y, "right", "bottom"),
        "late_apoptotic": (x_high - inset_x, y_low + inset_y, "right", "top"),
        "necrotic": (x_low + inset_x, y_low + inset_y, "left", "top"),
    }
    pad = 0.2 * 8 * PT
    for name, (u, v, ha, va) in corners.items():
        label = f"{CLASS_LABELS[name]}\n{100 * fractions[name]:.1f} %"
        box_width, box_height = canvas.text_box(label, 8, bold=True)
        left = u if ha == "left" else u - box_width
        upper = v if va == "top" else v - box_height
        canvas.polygon([(left - pad, upper - pad), (left + box_width + pad, upper - pad),
                        (left + box_width + pad, upper + box_height + pad),
                        (left - pad, upper + box_height + pad)], "white", alpha=0.8)  # fmt: skip
        canvas.text((u, v), label, 8, color=CLASS_COLORS[name], ha=ha, va=va, bold=True)


def fractions_to_series(wells: pd.DataFrame, column: str) -> dict[str, float]:
    """``{well: value}`` of one wells.csv column (NaN dropped)."""
    if column not in wells.columns:
        return {}
    series = pd.to_numeric(wells[column], errors="coerce")
    return {w: float(v) for w, v in zip(wells["well"], series, strict=True) if np.isfinite(v)}
