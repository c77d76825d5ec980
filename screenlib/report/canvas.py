"""A figure as a list of shapes, written both as PNG (Pillow) and as SVG (text).

The report's curve figures are a few hundred shapes and a few dozen labels. Laid out and
rendered by matplotlib they cost about half a second each (PNG and SVG), plus about 0.7 s to
import its figure machinery; kept as a list of shapes in pixels and rendered here they cost a
few hundredths of a second. The PNG is drawn at :data:`SUPERSAMPLE` times the size and reduced
(anti-aliased edges, as matplotlib's Agg draws them); the SVG holds the same shapes as vector
elements and its text as ``<text>`` (editable on a slide). Positions are pixels at
:data:`~screenlib.report.plate_figures.DPI`; sizes of lines, markers and fonts are in points,
as in matplotlib.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from html import escape

from PIL import Image, ImageDraw

from screenlib.report.plate_figures import DPI, PT, _rgb, font

SUPERSAMPLE = 3  # the PNG is drawn 3x larger and reduced: edges anti-aliased like Agg's
#: the SVG's fonts: matplotlib's default first, then what a slide program will have
SVG_FONTS = "'DejaVu Sans', 'Bitstream Vera Sans', Arial, Helvetica, sans-serif"
# matplotlib's dash patterns, in multiples of the line width (lines.scale_dashes)
DASHES = {"--": (3.7, 1.6), ":": (1.0, 1.65)}

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class _Shape:
    kind: str
    clip: Box | None
    data: dict


@dataclass
class Canvas:
    """A white figure ``width_in`` x ``height_in`` inches; shapes are drawn in the order added.

    Jupyter shows it (``_repr_png_``); :meth:`png` and :meth:`svg` give the two files.
    """

    width_in: float
    height_in: float
    shapes: list[_Shape] = field(default_factory=list)
    clip_box: Box | None = None

    @property
    def size(self) -> tuple[int, int]:
        return round(self.width_in * DPI), round(self.height_in * DPI)

    def _add(self, kind: str, **data) -> None:
        self.shapes.append(_Shape(kind, self.clip_box, data))

    def line(self, points: list[Point], color: str, width_pt: float, dash: str | None = None,
             alpha: float = 1.0) -> None:  # fmt: skip
        """A polyline (``dash``: ``"--"`` or ``":"``, scaled by the width as matplotlib's)."""
        points = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if len(points) >= 2:
            self._add("line", points=points, color=color, width=width_pt * PT, dash=dash,
                      alpha=alpha)  # fmt: skip

    def polygon(self, points: list[Point], fill: str, alpha: float = 1.0) -> None:
        points = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if len(points) >= 3:
            self._add("polygon", points=points, fill=fill, alpha=alpha)

    def markers(self, points: list[Point], shape: str, size_pt: float,
                face: str | list[tuple[int, int, int]] | None, edge: str | None,
                edge_width_pt: float = 1.0) -> None:  # fmt: skip
        """Markers centred on ``points``: ``"o"`` (circle of diameter ``size_pt``) or ``"D"``
        (diamond ``size_pt`` high); ``face`` None leaves them hollow, a list gives each marker
        its own RGB colour."""
        keep = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
        if not keep:
            return
        if isinstance(face, list):
            face = [tuple(int(v) for v in face[i]) for i in keep]
        self._add("markers", points=[(float(points[i][0]), float(points[i][1])) for i in keep],
                  shape=shape, size=size_pt * PT, face=face, edge=edge,
                  edge_width=edge_width_pt * PT if edge else 0.0)  # fmt: skip

    def text(self, xy: Point, text: str, size_pt: float, *, color: str = "black",
             ha: str = "left", va: str = "baseline", bold: bool = False,
             rotated: bool = False) -> None:  # fmt: skip
        """Text anchored at ``xy`` (``ha``: left/center/right; ``va``: top/center/bottom of
        the block, or baseline: of its last line); lines 1.2 font sizes apart, as matplotlib
        spaces them; ``rotated`` turns it 90 degrees anticlockwise."""
        ascent, descent = font(size_pt, bold).getmetrics()
        lines = text.split("\n")
        step = 1.2 * size_pt * PT
        block = (len(lines) - 1) * step
        first = {"top": ascent, "center": (ascent - descent - block) / 2, "baseline": -block,
                 "bottom": -descent - block}[va]  # fmt: skip
        x, y = xy
        for number, line in enumerate(lines):
            shift = first + number * step
            baseline = (x + shift, y) if rotated else (x, y + shift)
            self._add("text", xy=baseline, text=line, size=size_pt, color=color, ha=ha,
                      bold=bold, rotated=rotated)  # fmt: skip

    def text_box(self, text: str, size_pt: float, bold: bool = False) -> tuple[float, float]:
        """Width and height (pixels) of the block :meth:`text` draws."""
        ascent, descent = font(size_pt, bold).getmetrics()
        lines = text.split("\n")
        width = max(font(size_pt, bold).getlength(line) for line in lines)
        return width, (len(lines) - 1) * 1.2 * size_pt * PT + ascent + descent

    @staticmethod
    def text_width(text: str, size_pt: float, bold: bool = False) -> float:
        """Width of ``text`` in pixels."""
        return font(size_pt, bold).getlength(text)

    # --- PNG -------------------------------------------------------------------------------

    def image(self) -> Image.Image:
        """The figure as pixels (RGB)."""
        scale = SUPERSAMPLE
        width, height = self.size
        image = Image.new("RGB", (width * scale, height * scale), "white")
        runs: list[tuple[Box | None, list[_Shape]]] = []
        for shape in self.shapes:  # consecutive shapes with the same clip are drawn together
            if runs and runs[-1][0] == shape.clip:
                runs[-1][1].append(shape)
            else:
                runs.append((shape.clip, [shape]))
        for clip, shapes in runs:
            # a clipped run is drawn into its box cut out of the image: what lies outside falls off
            box = (0, 0, *image.size) if clip is None else tuple(round(v * scale) for v in clip)
            target = image if clip is None else image.crop(box)
            draw = ImageDraw.Draw(target, "RGBA")  # RGBA on RGB: translucent fills blend
            for shape in shapes:
                _draw_png(target, draw, shape, scale, box[:2])
            if clip is not None:
                image.paste(target, box[:2])
        return image.reduce(scale)

    def png(self) -> bytes:
        """PNG bytes (zlib level 3, as the report's other figures)."""
        buffer = io.BytesIO()
        self.image().save(buffer, "png", compress_level=3, dpi=(DPI, DPI))
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    # --- SVG -------------------------------------------------------------------------------

    def svg(self) -> str:
        """The figure as SVG text (size in points, as matplotlib writes it)."""
        width, height = self.size
        lines = [
            '<?xml version="1.0" encoding="utf-8" standalone="no"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
            f'width="{width / PT:.2f}pt" height="{height / PT:.2f}pt" '
            f'viewBox="0 0 {width} {height}">',
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        ]
        clips: dict[Box, str] = {}
        current: Box | None = None
        for shape in self.shapes:
            if shape.clip != current:
                if current is not None:
                    lines.append("</g>")
                if shape.clip is not None:
                    if shape.clip not in clips:
                        clips[shape.clip] = f"clip{len(clips) + 1}"
                        x0, y0, x1, y1 = shape.clip
                        lines.append(f'<clipPath id="{clips[shape.clip]}"><rect x="{x0:.2f}" '
                                     f'y="{y0:.2f}" width="{x1 - x0:.2f}" height="{y1 - y0:.2f}"'
                                     f'/></clipPath>')  # fmt: skip
                    lines.append(f'<g clip-path="url(#{clips[shape.clip]})">')
                current = shape.clip
            lines.append(_svg_element(shape))
        if current is not None:
            lines.append("</g>")
        lines.append("</svg>")
        return "\n".join(lines) + "\n"


def _color(name: str | None, alpha: float = 1.0) -> tuple[int, int, int, int]:
    return (*_rgb(name), round(255 * alpha))


def _dashed(points: list[Point], pattern: tuple[float, float], width: float) -> list[list[Point]]:
    """The pieces of a polyline that a dash pattern draws (on, off, on, ... from the start)."""
    on, off = pattern[0] * width, pattern[1] * width
    pieces, piece, drawing, left = [], [points[0]], True, on
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        length, done = math.hypot(x1 - x0, y1 - y0), 0.0
        while length - done > left:
            done += left
            t = done / length
            point = (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
            if drawing:
                pieces.append([*piece, point])
            piece, drawing = [point], not drawing
            left = off if not drawing else on
        left -= length - done
        piece.append((x1, y1))
    if drawing and len(piece) >= 2:
        pieces.append(piece)
    return pieces


def _draw_png(image: Image.Image, draw: ImageDraw.ImageDraw, shape: _Shape, scale: int,
              origin: tuple[int, int]) -> None:  # fmt: skip
    data = shape.data

    def pixels(points: list[Point]) -> list[Point]:
        return [(x * scale - origin[0], y * scale - origin[1]) for x, y in points]

    if shape.kind == "line":
        width = max(1, round(data["width"] * scale))
        points = pixels(data["points"])
        pieces = [points] if data["dash"] is None else _dashed(
            points, DASHES[data["dash"]], data["width"] * scale)  # fmt: skip
        for piece in pieces:
            draw.line(piece, fill=_color(data["color"], data["alpha"]), width=width,
                      joint="curve")  # fmt: skip
    elif shape.kind == "polygon":
        draw.polygon(pixels(data["points"]), fill=_color(data["fill"], data["alpha"]))
    elif shape.kind == "markers":
        _markers_png(draw, pixels(data["points"]), data, scale)
    elif shape.kind == "text":
        _text_png(image, draw, pixels([data["xy"]])[0], data, scale)


def _markers_png(draw: ImageDraw.ImageDraw, points: list[Point], data: dict, scale: int) -> None:
    # the outline is centred on the marker's edge, as matplotlib strokes it
    half = (data["size"] / 2 + data["edge_width"] / 2) * scale
    width = round(data["edge_width"] * scale)
    faces = data["face"] if isinstance(data["face"], list) else None
    fill = _color(data["face"]) if data["face"] and faces is None else None
    outline = _color(data["edge"]) if data["edge"] else None
    for number, (x, y) in enumerate(points):
        if faces is not None:
            fill = faces[number]
        if data["shape"] == "o":
            draw.ellipse((x - half, y - half, x + half, y + half), fill=fill, outline=outline,
                         width=width)  # fmt: skip
        else:  # a diamond: its height is the marker size
            corners = [(x, y - half), (x + half, y), (x, y + half), (x - half, y)]
            draw.polygon(corners, fill=fill, outline=outline, width=width)


def _text_png(image: Image.Image, draw: ImageDraw.ImageDraw, xy: Point, data: dict,
              scale: int) -> None:  # fmt: skip
    text_font = font(data["size"] * scale, data["bold"])
    fill = _color(data["color"])
    x, y = xy
    anchor = {"left": "ls", "center": "ms", "right": "rs"}[data["ha"]]
    if not data["rotated"]:
        draw.text((x, y), data["text"], font=text_font, fill=fill, anchor=anchor)
        return
    ascent, descent = text_font.getmetrics()
    length = math.ceil(text_font.getlength(data["text"])) + 2
    strip = Image.new("RGBA", (length, ascent + descent), (255, 255, 255, 0))
    start = {"left": 1, "center": length / 2, "right": length - 1}[data["ha"]]
    ImageDraw.Draw(strip).text((start, ascent), data["text"], font=text_font, fill=fill,
                               anchor=anchor)  # fmt: skip
    turned = strip.rotate(90, expand=True)  # the baseline becomes the column ``ascent``
    image.paste(turned, (round(x - ascent), round(y - (length - start))), turned)


def _svg_element(shape: _Shape) -> str:
    data = shape.data
    if shape.kind == "line":
        points = " ".join(f"{x:.2f},{y:.2f}" for x, y in data["points"])
        dash = ""
        if data["dash"] is not None:
            on, off = (v * data["width"] for v in DASHES[data["dash"]])
            dash = f' stroke-dasharray="{on:.2f},{off:.2f}"'
        opacity = f' stroke-opacity="{data["alpha"]:g}"' if data["alpha"] < 1 else ""
        return (
            f'<polyline points="{points}" fill="none" stroke="{_hex(data["color"])}" '
            f'stroke-width="{data["width"]:.2f}" stroke-linejoin="round"{dash}{opacity}/>'
        )
    if shape.kind == "polygon":
        points = " ".join(f"{x:.2f},{y:.2f}" for x, y in data["points"])
        return (
            f'<polygon points="{points}" fill="{_hex(data["fill"])}" '
            f'fill-opacity="{data["alpha"]:g}" stroke="none"/>'
        )
    if shape.kind == "markers":
        return _markers_svg(data)
    return _text_svg(data)


def _hex(color: str | None) -> str:
    return "none" if color is None else "#{:02x}{:02x}{:02x}".format(*_rgb(color))


def _markers_svg(data: dict) -> str:
    half = data["size"] / 2
    faces = data["face"] if isinstance(data["face"], list) else None
    face = "" if faces is not None else f'fill="{_hex(data["face"])}" '
    style = f'{face}stroke="{_hex(data["edge"])}" stroke-width="{data["edge_width"]:.2f}"'
    items = []
    for number, (x, y) in enumerate(data["points"]):
        own = "" if faces is None else ' fill="#{:02x}{:02x}{:02x}"'.format(*faces[number])
        if data["shape"] == "o":
            items.append(f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{half:.2f}"{own}/>')
        else:
            corners = f"{x:.2f},{y - half:.2f} {x + half:.2f},{y:.2f} {x:.2f},{y + half:.2f} " \
                      f"{x - half:.2f},{y:.2f}"  # fmt: skip
            items.append(f'<polygon points="{corners}"{own}/>')
    return f"<g {style}>" + "".join(items) + "</g>"


def _text_svg(data: dict) -> str:
    x, y = data["xy"]
    anchor = {"left": "start", "center": "middle", "right": "end"}[data["ha"]]
    weight = ' font-weight="bold"' if data["bold"] else ""
    turn = f' transform="rotate(-90 {x:.2f} {y:.2f})"' if data["rotated"] else ""
    return (
        f'<text x="{x:.2f}" y="{y:.2f}" font-family="{SVG_FONTS}" '
        f'font-size="{data["size"] * PT:.2f}" fill="{_hex(data["color"])}" '
        f'text-anchor="{anchor}"{weight}{turn}>{escape(data["text"], quote=False)}</text>'
    )
