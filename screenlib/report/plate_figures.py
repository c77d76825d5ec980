"""Plate maps: a grid of coloured wells with their labels, drawn as pixels with Pillow.

A plate map is a few hundred short labels on coloured squares. Through matplotlib every label
is a Text artist laid out and rendered in Python (about a millisecond each), so a 96-well map
cost about a quarter of a second and the four-panel class map over half a second; Pillow draws
the same font (DejaVu Sans, the one matplotlib ships and draws with) with FreeType in C, in
about a hundredth of that, without importing matplotlib. The layout is fixed in pixels at
120 dpi, as the report's other figures: square wells, white lines between them, row letters
and column numbers outside, a colour bar with its ticks and label. Each function returns a
``PIL.Image.Image`` (shown by Jupyter; ``image.save("map.png")`` writes it).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from screenlib.platemap import PlateGeometry, split_well
from screenlib.report.colormaps import colormap_rgb

DPI = 120
PT = DPI / 72  # pixels per point
NO_VALUE_COLOR = "#eeeeee"  # a well without a value
QC_STATES = (
    ("pass", "#2c7fb8", "passed"),
    ("expected", "#c2a5cf", "few cells, expected\n(cytotoxic dose or\npositive control)"),
    ("caveat", "#fdb863", "usable, with a caveat\n(fields excluded, other\nvehicle reference)"),
    ("failed", "#d7301f", "failed: too few cells\nwhere none were lost\nto the treatment"),
)
NO_DATA_COLOR = "#d9d9d9"


@cache
def font_file(bold: bool = False) -> str:
    """DejaVu Sans (bold), from matplotlib's fonts folder, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name
        if path.is_file():
            return str(path)
    from matplotlib import font_manager  # an unusual install: ask matplotlib where it is

    weight = "bold" if bold else "normal"
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight=weight))


@cache
def _font_cached(path: str, size_px: float) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size_px)


def font(size_pt: float, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The figures' sans-serif font, DejaVu Sans (:func:`font_file`), at ``size_pt`` points."""
    return _font_cached(font_file(bold), round(size_pt * PT, 2))


def _rgb(color: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(color)[:3]


class _Layout:
    """Pixel positions of one or more plate panels (the wells of each are square)."""

    def __init__(self, geometry: PlateGeometry, legend_width_in: float, n_panels: int,
                 panels_per_row: int) -> None:  # fmt: skip
        cell = 0.55 if geometry.n_columns <= 12 else 0.3 if geometry.n_columns <= 24 else 0.16
        if n_panels > 1:
            cell *= 0.75
        self.cell = cell * DPI
        self.left, self.top = 0.45 * DPI, 0.62 * DPI
        self.panel_width = self.left + geometry.n_columns * self.cell + legend_width_in * DPI
        self.panel_height = self.top + geometry.n_rows * self.cell + 0.15 * DPI
        self.columns = min(n_panels, panels_per_row)
        self.rows = -(-n_panels // panels_per_row)
        self.size = (round(self.panel_width * self.columns), round(self.panel_height * self.rows))
        self.geometry = geometry
        self.small = geometry.n_columns > 12

    def origin(self, index: int) -> tuple[float, float]:
        """Top-left pixel of panel ``index``'s well grid."""
        row, column = divmod(index, self.columns)
        return (column * self.panel_width + self.left, row * self.panel_height + self.top)

    def grid_box(self, index: int) -> tuple[float, float, float, float]:
        x0, y0 = self.origin(index)
        g = self.geometry
        return x0, y0, x0 + g.n_columns * self.cell, y0 + g.n_rows * self.cell


def _plate_grid(values: Mapping[str, float], geometry: PlateGeometry) -> np.ndarray:
    grid = np.full((geometry.n_rows, geometry.n_columns), np.nan)
    rows = {name: index for index, name in enumerate(geometry.row_names)}
    for well, value in values.items():
        row, column = split_well(well)
        if row in rows and 1 <= column <= geometry.n_columns:
            grid[rows[row], column - 1] = value
    return grid


def _draw_wells(draw: ImageDraw.ImageDraw, layout: _Layout, index: int, rgb: np.ndarray) -> None:
    """Wells as squares (``rgb``: rows x columns x 3, 0-255) with white lines between them,
    and the row letters and column numbers outside the grid."""
    x0, y0 = layout.origin(index)
    cell, g = layout.cell, layout.geometry
    inset = (0.8 if layout.small else 1.5) * PT / 2  # half the white line between wells
    for (row, column), _ in np.ndenumerate(rgb[..., 0]):
        left, top = x0 + column * cell, y0 + row * cell
        box = (round(left + inset), round(top + inset),
               round(left + cell - inset) - 1, round(top + cell - inset) - 1)  # fmt: skip
        draw.rectangle(box, fill=tuple(int(v) for v in rgb[row, column]))
    step = 2 if g.n_columns > 24 else 1
    label_font = font(7 if layout.small else 9)
    gap = 3.5 * PT  # as a tick label: 3.5 pt from the grid
    for column in range(0, g.n_columns, step):
        xy = (x0 + (column + 0.5) * cell, y0 - gap)
        draw.text(xy, g.column_names[column], font=label_font, fill="black", anchor="md")
    for row in range(0, g.n_rows, step):
        xy = (x0 - gap, y0 + (row + 0.5) * cell)
        draw.text(xy, g.row_names[row], font=label_font, fill="black", anchor="rm")


def _format_value(value: float, fmt: str) -> str:
    if fmt == "count":
        return f"{value:.0f}"
    if fmt == "percent":
        return f"{100 * value:.0f}"
    return f"{value:.2g}"


#: tick steps per decade, and the wider and narrower ones tried when they place too few ticks
TICK_STEPS = (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0)


def axis_ticks(vmin: float, vmax: float, length_px: float, tolerance: float = 1e-9) -> np.ndarray:
    """Tick values of an axis or colour bar ``length_px`` long, placed as matplotlib's automatic
    locator places them, kept within the range up to ``tolerance`` of its span (a colour bar
    1e-9, an axis 1e-10).

    About one interval per 20 points (at most 9): the step is the smallest of 1, 2, 2.5, 5 x
    10^n that is at least the span over the intervals, or a smaller one where that leaves
    fewer than two ticks in the range; ticks are the step's multiples covering the range.

    Examples
    --------
    >>> axis_ticks(0.0, 1.0, 600).tolist()
    [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    """
    n_bins = max(min(int(length_px / PT // 20), 9), 1)
    vmin, vmax = min(vmin, vmax), max(vmin, vmax)  # (an inverted axis gets the same ticks)
    span = vmax - vmin
    if not (math.isfinite(span) and span > 0):  # a single value: one tick, on it
        return np.array([vmin]) if math.isfinite(vmin) else np.zeros(0)
    scale = 10.0 ** math.floor(math.log10(span / n_bins))
    steps = [multiple * scale for multiple in TICK_STEPS]
    widest = next(i for i, step in enumerate(steps) if step >= span / n_bins)
    for step in reversed(steps[: widest + 1]):
        first, last = math.floor(vmin / step + 1e-10), math.ceil(vmax / step - 1e-10)
        ticks = np.arange(first, last + 1) * step
        if np.count_nonzero((ticks >= vmin) & (ticks <= vmax)) >= 2:
            break
    return ticks[(ticks >= vmin - tolerance * span) & (ticks <= vmax + tolerance * span)]


def tick_labels(ticks: np.ndarray, value_format: str) -> list[str]:
    """Labels with as many decimals as the ticks need, all alike (``"percent"``: of 100 %).

    Examples
    --------
    >>> tick_labels(np.array([0.0, 0.025, 0.05]), "percent")
    ['0.0 %', '2.5 %', '5.0 %']
    >>> tick_labels(np.array([0.0, 50.0, 100.0]), "count")
    ['0', '50', '100']
    """
    shown = 100 * np.asarray(ticks, dtype=float) if value_format == "percent" else ticks
    scale = max(float(np.max(np.abs(shown))), 1e-12) if len(shown) else 1.0
    exact = (d for d in range(7) if np.allclose(np.round(shown, d), shown, rtol=0,
                                                 atol=1e-9 * scale))  # fmt: skip
    decimals = next(exact, 6)
    unit = " %" if value_format == "percent" else ""
    return [f"{value:.{decimals}f}{unit}" for value in shown]


def _draw_colorbar(image: Image.Image, layout: _Layout, index: int, cmap: str, vmin: float,
                   vmax: float, label: str, value_format: str) -> None:  # fmt: skip
    """A vertical colour bar right of panel ``index``'s grid: gradient, outline, ticks, label."""
    draw = ImageDraw.Draw(image)
    _, top, right, bottom = layout.grid_box(index)
    x0, x1 = round(right + 0.12 * DPI), round(right + 0.28 * DPI)
    y0, y1 = round(top), round(bottom) - 1
    levels = np.linspace(1.0, 0.0, y1 - y0 + 1)[:, None]  # top: vmax
    gradient = colormap_rgb(cmap, np.repeat(levels, x1 - x0 + 1, axis=1))
    image.paste(Image.fromarray(gradient, "RGB"), (x0, y0))
    draw.rectangle((x0, y0, x1, y1), outline="black", width=1)
    ticks = axis_ticks(vmin, vmax, y1 - y0)
    tick_font = font(10)
    tick_length = round(3.5 * PT)
    widths = [0.0]
    for value, text in zip(ticks, tick_labels(ticks, value_format), strict=True):
        y = y1 - (value - vmin) / (vmax - vmin) * (y1 - y0)
        draw.line((x1, round(y), x1 + tick_length, round(y)), fill="black", width=1)
        xy = (x1 + 2 * tick_length, y)
        draw.text(xy, text, font=tick_font, fill="black", anchor="lm")
        widths.append(draw.textlength(text, font=tick_font))
    # the label reads upwards, right of the tick labels (4 pt apart), centred on the bar
    label_font = font(10)
    box = draw.textbbox((0, 0), label, font=label_font, anchor="lt")
    strip = Image.new("L", (box[2] + 2, box[3] + 2), 0)
    ImageDraw.Draw(strip).text((1, 1), label, font=label_font, fill=255, anchor="lt")
    strip = strip.rotate(90, expand=True)
    x = round(x1 + 2 * tick_length + max(widths) + 4 * PT)
    y = round((y0 + y1) / 2 - strip.height / 2)
    image.paste(Image.new("RGB", strip.size, "black"), (x, y), strip)


def _draw_values(draw, layout: _Layout, index: int, grid, rgb, value_format: str) -> None:
    """Each well's value inside it, black on light wells and white on dark ones."""
    x0, y0 = layout.origin(index)
    lightness = rgb @ np.array([0.299, 0.587, 0.114]) / 255
    value_font = font(7.5)
    for (row, column), value in np.ndenumerate(grid):
        if np.isfinite(value):
            xy = (x0 + (column + 0.58) * layout.cell, y0 + (row + 0.6) * layout.cell)
            color = "black" if lightness[row, column] > 0.55 else "white"
            draw.text(xy, _format_value(value, value_format), font=value_font, fill=color,
                      anchor="mm")  # fmt: skip


def _draw_markers(draw, layout: _Layout, index: int, markers, rgb) -> None:
    """Short role marks (``N``, ``P``…) in each well's top-left corner, on a white patch."""
    if not markers:
        return
    x0, y0 = layout.origin(index)
    g = layout.geometry
    rows = {name: position for position, name in enumerate(g.row_names)}
    marker_font = font(6.5 if g.n_wells <= 96 else 4.5, bold=True)
    pad = 0.15 * (6.5 if g.n_wells <= 96 else 4.5) * PT
    for well, text in markers.items():
        row, column = split_well(well)
        if row not in rows or not 1 <= column <= g.n_columns:
            continue
        xy = (x0 + (column - 1 + 0.06) * layout.cell, y0 + (rows[row] + 0.06) * layout.cell)
        left, top, right, bottom = draw.textbbox(xy, text, font=marker_font, anchor="la")
        under = rgb[rows[row], column - 1]
        patch = tuple(int(round(0.85 * 255 + 0.15 * v)) for v in under)  # white, 85 % opaque
        draw.rectangle((round(left - pad), round(top - pad), round(right + pad),
                        round(bottom + pad)), fill=patch)  # fmt: skip
        draw.text(xy, text, font=marker_font, fill="black", anchor="la")


def _well_colors(grid: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    scaled = np.clip((grid - vmin) / (vmax - vmin), 0.0, 1.0)
    rgb = colormap_rgb(cmap, scaled).astype(float)
    rgb[~np.isfinite(grid)] = _rgb(NO_VALUE_COLOR)
    return rgb


def _draw_panel(image, layout, index, values, *, colorbar_label, cmap="viridis", vmin=None,
                vmax=None, value_format="number", markers=None, annotate=True) -> None:  # fmt: skip
    grid = _plate_grid(values, layout.geometry)
    finite = grid[np.isfinite(grid)]
    vmax = float(finite.max()) if vmax is None and finite.size else vmax
    vmin = float(finite.min()) if vmin is None and finite.size else vmin
    vmin = 0.0 if vmin is None else float(vmin)
    vmax = vmin + 1.0 if vmax is None or vmax <= vmin else float(vmax)
    rgb = _well_colors(grid, cmap, vmin, vmax)
    draw = ImageDraw.Draw(image)
    _draw_wells(draw, layout, index, rgb)
    _draw_colorbar(image, layout, index, cmap, vmin, vmax, colorbar_label, value_format)
    if annotate and layout.geometry.n_wells <= 96:
        _draw_values(draw, layout, index, grid, rgb, value_format)
    _draw_markers(draw, layout, index, markers, rgb)


def _title(image: Image.Image, title: str, x_fraction: float, y_fraction: float) -> None:
    xy = (x_fraction * image.width, y_fraction * image.height)
    ImageDraw.Draw(image).text(xy, title, font=font(12), fill="black", anchor="la")


def plate_heatmap(
    values: Mapping[str, float],
    geometry: PlateGeometry,
    *,
    title: str,
    colorbar_label: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    value_format: str = "number",
    markers: Mapping[str, str] | None = None,
    annotate: bool = True,
) -> Image.Image:
    """A plate-shaped heatmap of one value per well (rows as letters, columns as numbers).

    Parameters
    ----------
    values
        Value per well (``"A01"`` form); wells without a value are drawn light grey.
    geometry
        The plate's rows and columns.
    title, colorbar_label
        Title and the colour bar's label (with units).
    cmap, vmin, vmax
        Colour map (a matplotlib name; :mod:`colormaps` holds the report's own without
        matplotlib) and its range (default: the values' range).
    value_format
        How values are written inside the wells of plates with at most 96 wells:
        ``"count"``, ``"percent"`` (fractions shown as %) or ``"number"``.
    markers
        Optional short text per well (e.g. ``"N"`` for vehicle) drawn in a corner.
    annotate
        Write each well's value inside it (plates of at most 96 wells only).

    Returns
    -------
    PIL.Image.Image
        The map at 120 dpi (``.save(path)`` writes a PNG).

    Examples
    --------
    >>> from screenlib.platemap import PlateGeometry
    >>> image = plate_heatmap({"A01": 0.2, "B03": 0.9}, PlateGeometry.from_size(96),
    ...                       title="Apoptotic fraction", colorbar_label="share of cells")
    >>> image.size
    (984, 620)
    """
    layout = _Layout(geometry, 1.15, 1, 1)
    image = Image.new("RGB", layout.size, "white")
    _draw_panel(
        image, layout, 0, values, colorbar_label=colorbar_label, cmap=cmap, vmin=vmin,
        vmax=vmax, value_format=value_format, markers=markers, annotate=annotate,
    )  # fmt: skip
    _title(image, title, 0.02, 0.01)
    return image


def plate_heatmap_panels(
    panels: list[dict], geometry: PlateGeometry, *, title: str, panels_per_row: int = 2
) -> Image.Image:
    """Several plate heatmaps in one image (e.g. the fraction of each cell class).

    ``panels`` holds dicts of :func:`plate_heatmap`'s arguments (``values``, ``title``,
    ``colorbar_label``, ``cmap``, ``vmin``, ``vmax``, ``value_format``, ``markers``,
    ``annotate``).
    """
    layout = _Layout(geometry, 1.15, len(panels), panels_per_row)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        options = {k: v for k, v in panel.items() if k not in ("values", "title")}
        _draw_panel(image, layout, index, panel["values"], **options)
        x0, y0 = layout.origin(index)
        draw.text((x0, y0 - 16 * PT), panel["title"], font=font(10), fill="black", anchor="ls")
    _title(image, title, 0.01, 0.005)
    return image


def qc_heatmap(
    status: Mapping[str, str], geometry: PlateGeometry, *, title: str = "Well QC"
) -> Image.Image:
    """Plate map of each well's QC state (``QC_STATES``) with a legend counting each; wells
    not in ``status`` are grey (no data: not imaged, empty, or every field failed image QC)."""
    code = {state: index for index, (state, _, _) in enumerate(QC_STATES)}
    values = {well: float(code[state]) for well, state in status.items() if state in code}
    grid = _plate_grid(values, geometry)
    palette = np.array([_rgb(color) for _, color, _ in QC_STATES] + [_rgb(NO_DATA_COLOR)])
    rgb = palette[np.where(np.isfinite(grid), grid, len(QC_STATES)).astype(int)]
    layout = _Layout(geometry, 2.6, 1, 1)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    _draw_wells(draw, layout, 0, rgb)
    counts = [sum(1 for v in values.values() if v == code[state]) for state, _, _ in QC_STATES]
    entries = [(color, f"{label} ({n})") for (_, color, label), n in zip(QC_STATES, counts,
                                                                          strict=True)]  # fmt: skip
    entries.append((NO_DATA_COLOR, f"no data ({geometry.n_wells - len(values)})"))
    _, top, right, _ = layout.grid_box(0)
    legend_font, em = font(10), 10 * PT
    x, y = right + 0.01 * (right - layout.origin(0)[0]) + 0.4 * em, top + 0.4 * em
    for color, label in entries:
        lines = label.count("\n") + 1
        height = lines * 1.2 * em  # matplotlib's line spacing
        middle = y + height / 2
        draw.rectangle((round(x), round(middle - 0.35 * em), round(x + 2 * em),
                        round(middle + 0.35 * em)), fill=_rgb(color))  # fmt: skip
        draw.multiline_text((x + 2.8 * em, middle), label, font=legend_font, fill="black",
                            anchor="lm", spacing=round(0.2 * em))  # fmt: skip
        y += height + 1.0 * em  # labelspacing 1.0
    _title(image, title, 0.02, 0.01)
    return image


def grid_rgb(image: Image.Image, geometry: PlateGeometry, n_panels: int = 1,
             panels_per_row: int = 1, legend_width_in: float = 1.15,
             panel: int = 0) -> np.ndarray:  # fmt: skip
    """The colour of each well of ``panel`` (rows x columns x 3) read back from a drawn map
    (e.g. by tests), at a point clear of the well's value and marker."""
    layout = _Layout(geometry, legend_width_in, n_panels, panels_per_row)
    x0, y0 = layout.origin(panel)
    pixels = np.asarray(image)
    # right of the centre and above it: clear of the value (centre) and the marker (top left)
    rows = [round(y0 + (r + 0.35) * layout.cell) for r in range(geometry.n_rows)]
    columns = [round(x0 + (c + 0.85) * layout.cell) for c in range(geometry.n_columns)]
    return pixels[np.ix_(rows, columns)]
