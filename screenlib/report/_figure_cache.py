"""Figures of the report, drawn once per input: unchanged figures are taken from the last report.

Re-gating or refitting a plate changes some figures and not others (a gating change leaves the
cell-count and well-QC maps as they were; a fit change leaves every plate map and the gating
plot). Drawing a figure costs far more than the rest of the report, so each figure is keyed by a
hash of everything it is drawn from: its input data, its kind, the figure code, its colour
tables and fonts. ``figures/figures.json`` records each figure's key and the SHA-256 of its
files. A figure whose key and files match the previous report's is copied, not drawn; any
difference (data, code, a file edited or deleted by hand) draws it again. What was reused is
logged and shown in the report's Run section.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import screenlib
from screenlib.io_utils import file_sha256

if TYPE_CHECKING:  # the report's own figures never import matplotlib's Figure (about 0.7 s)
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

INDEX_NAME = "figures.json"
FIGURE_PREFIXES = ("plate_", "curve_", "gating_", "gallery_", "gr_")
# the modules whose code decides what a figure looks like: a change to any redraws all
_FIGURE_CODE = ("report/figures.py", "report/plate_figures.py", "report/canvas.py",
                "report/gallery.py", "report/_figure_cache.py", "report/colormaps.py",
                "report/colormaps.npz", "doseresponse/model.py")  # fmt: skip


def slug(value: Any) -> str:
    """A file-name-safe version of ``value`` (letters, digits, ``._-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_.")
    return name[:60] or "x"


@cache
def figure_code_version() -> str:
    """Hash of the figure-drawing code and colour tables, screenlib's and Pillow's versions
    and the font files the figures are drawn with."""
    import PIL

    from screenlib.report.plate_figures import font_file

    versions = f"{screenlib.__version__}|{PIL.__version__}"
    digest = hashlib.sha256(versions.encode())
    package = Path(screenlib.__file__).parent
    fonts = [Path(font_file(False)), Path(font_file(True))]
    for path in [*(package / name for name in _FIGURE_CODE), *fonts]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    """Feed ``value`` into ``digest`` unambiguously (type tags, lengths, exact float bytes)."""
    if value is None:
        digest.update(b"N")
    elif isinstance(value, bool | np.bool_):
        digest.update(b"B1" if value else b"B0")
    elif isinstance(value, int | np.integer):
        digest.update(b"I" + str(int(value)).encode() + b";")
    elif isinstance(value, float | np.floating):
        number = float(value)
        digest.update(b"F" + (b"nan" if math.isnan(number) else np.float64(number).tobytes()))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        digest.update(b"S" + str(len(data)).encode() + b":" + data)
    elif isinstance(value, bytes):
        digest.update(b"Y" + str(len(value)).encode() + b":" + value)
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            _feed(digest, value.tolist())
        else:
            digest.update(f"A{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, pd.DataFrame):
        digest.update(b"D")
        _feed(digest, [str(c) for c in value.columns])
        for column in value.columns:
            _feed(digest, value[column].to_numpy())
    elif isinstance(value, pd.Series):
        _feed(digest, value.to_numpy())
    elif isinstance(value, Mapping):
        digest.update(b"M" + str(len(value)).encode() + b"{")
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        digest.update(b"L" + str(len(items)).encode() + b"[")
        for item in items:
            _feed(digest, item)
        digest.update(b"]")
    else:
        # a callable or an object without a stable value: it cannot key a figure
        raise TypeError(f"cannot key a figure on a {type(value).__name__}")


def input_key(kind: str, data: Any) -> str:
    """The cache key of a figure of ``kind`` drawn from ``data`` (SHA-256, hex): the figures
    depend on nothing else but the code and fonts of :func:`figure_code_version` (no
    matplotlib settings: they are drawn without matplotlib).

    Examples
    --------
    >>> input_key("plate", {"A01": 0.5}) == input_key("plate", {"A01": 0.5})
    True
    >>> input_key("plate", {"A01": 0.5}) == input_key("plate", {"A01": 0.5000001})
    False
    """
    digest = hashlib.sha256(figure_code_version().encode())
    _feed(digest, kind)
    _feed(digest, data)
    return digest.hexdigest()


def read_index(folder: Path | None) -> dict[str, dict[str, Any]]:
    """``figures.json`` of a figures folder (empty when missing or unreadable)."""
    if folder is None:
        return {}
    try:
        data = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    figures = data.get("figures") if isinstance(data, dict) else None
    return figures if isinstance(figures, dict) else {}


@dataclass
class PendingFigure:
    """A figure queued for drawing; ``png`` holds its PNG bytes once it is drawn."""

    name: str
    draw: Callable[[], Figure]
    svg: bool
    key: str
    png: bytes | None = None


# the figures a forked drawing process draws: set just before the fork, read by index in the
# child (the draw callables are closures over the run's tables, so they are inherited, not
# pickled)
_JOBS: list[tuple[Path, PendingFigure]] = []


def _draw_job(index: int) -> bytes:
    from screenlib.report.figures import save_figure

    folder, job = _JOBS[index]
    return save_figure(job.draw(), folder / job.name, svg=job.svg)


def _forking_allowed() -> bool:
    import multiprocessing
    import sys

    # fork is the only start method that inherits the closures; it is unsafe on macOS
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


@dataclass
class FigureWriter:
    """Saves the report's figures under ``folder``, reusing the previous report's unchanged ones.

    Figures to draw are queued by :meth:`figure` and drawn by :meth:`start` / :meth:`finish`,
    in ``processes`` forked processes at once when there are several (drawing is pure Python
    work in matplotlib, so threads would not help); the report's other sections are prepared
    meanwhile.

    Parameters
    ----------
    folder
        Where this report's figures go (``figures/`` of the report being written).
    previous
        The ``figures/`` folder of the report this one replaces (None: draw everything).
    processes
        Drawing processes (default: up to 2, one per core; 1 draws in this process).
    """

    folder: Path
    previous: Path | None = None
    processes: int | None = None
    used: set[str] = field(default_factory=set)
    drawn: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    index: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[PendingFigure] = field(default_factory=list)

    def __post_init__(self) -> None:
        import os

        self._previous_index = read_index(self.previous)
        if self.processes is None:
            self.processes = min(2, os.cpu_count() or 1)
        self._pool = None
        self._async = None
        self.n_processes_used = 1

    def name(self, stem: str) -> str:
        candidate, number = slug(stem), 2
        while candidate in self.used:
            candidate, number = f"{slug(stem)}_{number}", number + 1
        self.used.add(candidate)
        return candidate

    def figure(
        self,
        stem: str,
        draw: Callable[[], Figure],
        key_data: Any,
        *,
        svg: bool = False,
    ) -> bytes | PendingFigure:
        """Figure ``stem``: its PNG bytes copied from the previous report when ``key_data``
        (everything ``draw`` draws from) is unchanged; else a :class:`PendingFigure` that
        ``draw()`` fills (PNG, and SVG when ``svg``) by :meth:`finish`.
        """
        name = self.name(stem)
        suffixes = (".png", ".svg") if svg else (".png",)
        key = input_key(f"{stem}|{'svg' if svg else 'png'}", key_data)
        png = self._reuse(name, key, suffixes)
        if png is not None:
            self.reused.append(name)
            self._record(name, key, suffixes)
            return png
        pending = PendingFigure(name, draw, svg, key)
        self.pending.append(pending)
        return pending

    def start(self) -> None:
        """Start drawing the queued figures in other processes (when that can help)."""
        if self._pool is not None or len(self.pending) < 2 or (self.processes or 1) < 2:
            return
        if not _forking_allowed():
            return
        import multiprocessing

        self.folder.mkdir(parents=True, exist_ok=True)
        _JOBS[:] = [(self.folder, job) for job in self.pending]
        processes = min(self.processes or 1, len(self.pending))
        try:
            self._pool = multiprocessing.get_context("fork").Pool(processes)
            self._async = self._pool.map_async(_draw_job, range(len(_JOBS)), chunksize=1)
            self.n_processes_used = processes
        except OSError as error:  # no processes to be had: draw here instead
            log.warning("figures drawn in this process (%s)", error)
            self.close()

    def _collect(self) -> None:
        """Wait for the drawing processes; on any failure the figures are drawn here."""
        if self._async is None:
            return
        try:
            # a figure takes about a second: a child hung for far longer is given up on
            results = self._async.get(timeout=60 + 15 * len(self.pending))
        except Exception as error:  # noqa: BLE001 - a broken worker must not lose the report
            log.warning("drawing figures in other processes failed (%s); drawing them here",
                        error)  # fmt: skip
            results = None
            self.n_processes_used = 1
        self.close()
        if results is not None:
            for job, png in zip(self.pending, results, strict=True):
                job.png = png

    def close(self) -> None:
        """Stop the drawing processes (if any are left)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
        self._pool = self._async = None
        _JOBS.clear()

    def _draw_pending(self) -> None:
        from screenlib.report.figures import save_figure

        self._collect()
        for job in self.pending:
            if job.png is None:
                job.png = save_figure(job.draw(), self.folder / job.name, svg=job.svg)
            self.drawn.append(job.name)
            self._record(job.name, job.key, (".png", ".svg") if job.svg else (".png",))
        self.pending = []

    def save(self, figure: Figure, stem: str, *, svg: bool = True) -> bytes:
        """Save a figure drawn elsewhere (a caller's own section): always written, never reused."""
        from screenlib.report.figures import save_figure

        name = self.name(stem)
        png = save_figure(figure, self.folder / name, svg=svg)
        self.drawn.append(name)
        self._record(name, "", (".png", ".svg") if svg else (".png",))
        return png

    def image(self, stem: str, write: Callable[[Path], None], key_data: Any) -> Path:
        """A PNG written by ``write(path)`` (e.g. a gallery mosaic), reused like a figure;
        returns its path."""
        name = self.name(stem)
        key = input_key(f"{stem}|image", key_data)
        if self._reuse(name, key, (".png",)) is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write(self.folder / f"{name}.png")
            self.drawn.append(name)
        else:
            self.reused.append(name)
        self._record(name, key, (".png",))
        return self.folder / f"{name}.png"

    def _reuse(self, name: str, key: str, suffixes: tuple[str, ...]) -> bytes | None:
        entry = self._previous_index.get(name)
        if self.previous is None or not isinstance(entry, Mapping) or entry.get("key") != key:
            return None
        files = entry.get("files") or {}
        sources = {suffix: self.previous / f"{name}{suffix}" for suffix in suffixes}
        try:
            contents = {suffix: path.read_bytes() for suffix, path in sources.items()}
        except OSError:
            return None
        for suffix, data in contents.items():  # edited or replaced since: draw it again
            if files.get(suffix) != hashlib.sha256(data).hexdigest():
                return None
        self.folder.mkdir(parents=True, exist_ok=True)
        for suffix, data in contents.items():
            (self.folder / f"{name}{suffix}").write_bytes(data)
        return contents[".png"]

    def _record(self, name: str, key: str, suffixes: tuple[str, ...]) -> None:
        files = {suffix: file_sha256(self.folder / f"{name}{suffix}") for suffix in suffixes}
        self.index[name] = {"key": key, "files": files}

    def finish(self) -> None:
        """Draw the queued figures (waiting for :meth:`start`'s processes), write
        ``figures.json`` and delete the figures an earlier report in this folder wrote that
        this one did not (only the report's own files: by prefix and suffix)."""
        self._draw_pending()
        if not self.folder.is_dir():
            return
        for stale in self.folder.iterdir():
            own = stale.suffix in (".png", ".svg") and stale.name.startswith(FIGURE_PREFIXES)
            if own and stale.stem not in self.index:
                stale.unlink()
            elif own and stale.suffix == ".svg" and ".svg" not in self.index[stale.stem]["files"]:
                stale.unlink()
        if self.index:
            data = {"about": "input keys of the report's figures (screenlib.report._figure_cache)",
                    "figures": self.index}  # fmt: skip
            text = json.dumps(data, indent=1, sort_keys=True) + "\n"
            (self.folder / INDEX_NAME).write_text(text, encoding="utf-8")

    def summary(self) -> str:
        """One line for the log and the report: how many figures were drawn and reused."""
        drawn = f"{len(self.drawn)} drawn"
        if self.n_processes_used > 1:
            drawn += f" ({self.n_processes_used} processes)"
        if not self.reused:
            return drawn
        return (
            f"{drawn}, {len(self.reused)} reused from the previous report "
            f"(same input data and figure code): {', '.join(self.reused)}"
        )
