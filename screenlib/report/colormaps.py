"""The report's colour maps as 256-level tables, so a plate map is drawn without matplotlib.

Importing matplotlib costs a re-gate about 0.15 s; the report needs only six of its colour maps.
``colormaps.npz`` holds them as matplotlib samples them (256 levels) in 8-bit RGB: viridis and
magma (CC0; N. J. Smith, S. van der Walt and E. Firing), Greens, Oranges and Reds (ColorBrewer,
Apache 2.0 licence; Cynthia A. Brewer) and jet. The tables were written from matplotlib 3.11 by
:func:`write_tables`; ``tests/test_report_figures.py`` checks them against the installed
matplotlib. Any other name is looked up in matplotlib.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

TABLES = Path(__file__).with_name("colormaps.npz")
NAMES = ("viridis", "magma", "Greens", "Oranges", "Reds", "jet")
LEVELS = 256


@cache
def _stored() -> dict[str, np.ndarray]:
    with np.load(TABLES) as data:
        return {name: data[name] for name in data.files}


def _matplotlib_table(name: str) -> np.ndarray:
    import matplotlib

    colormap = matplotlib.colormaps[name].resampled(LEVELS)
    return np.round(colormap(np.arange(LEVELS))[:, :3] * 255).astype(np.uint8)


def colormap_rgb(name: str, values: np.ndarray) -> np.ndarray:
    """8-bit RGB (``values.shape + (3,)``) of ``values`` in [0, 1] under colour map ``name``.

    Levels are picked as matplotlib picks them (``int(value * 256)``, 1 at the top level); a
    value outside [0, 1] takes the end colour and NaN black (callers paint missing values).

    Examples
    --------
    >>> colormap_rgb("viridis", np.array([0.0, 1.0])).tolist()
    [[68, 1, 84], [253, 231, 37]]
    """
    table = _stored().get(name)
    if table is None:
        table = _matplotlib_table(name)
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    levels = np.clip(np.where(missing, 0.0, values) * LEVELS, 0, LEVELS - 1).astype(int)
    rgb = table[levels]
    rgb[missing] = 0
    return rgb


def write_tables(path: Path = TABLES) -> None:
    """Write the tables of :data:`NAMES` from the installed matplotlib to ``path``."""
    np.savez_compressed(path, **{name: _matplotlib_table(name) for name in NAMES})
