"""The scatter gate drawn for the report: FSC-A / SSC-A (debris) and FSC-A / FSC-H
(doublets) of the vehicle events, log10 axes, with the learned limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)  # headless, as the report's figures

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_COLORS = {"": "#4c72b0", "debris": "#c44e52", "doublet": "#dd8452"}
_MAX_POINTS = 20000


def scatter_gate_figure(
    cells: pd.DataFrame,
    gate: Mapping[str, Any],
    vehicle_wells: list[str] | None = None,
    seed: int = 0,
) -> Figure:
    """Two panels of (a sample of) events coloured by ``scatter_exclusion``.

    Parameters
    ----------
    cells
        Per-event table from :func:`~screenlib.flow.flow_tables` (``fsc_a``, ``ssc_a``,
        ``fsc_h``, ``scatter_exclusion``).
    gate
        ``cells.attrs["scatter_gate"]``.
    vehicle_wells
        Draw only these wells (the events the gate was learned from); None: all.
    """
    table = cells if vehicle_wells is None else cells[cells["well"].isin(vehicle_wells)]
    if len(table) > _MAX_POINTS:
        table = table.sample(_MAX_POINTS, random_state=seed)
    labels = table["scatter_exclusion"].fillna("").astype(str).to_numpy()
    figure = Figure(figsize=(8.0, 3.6))
    panels = figure.subplots(1, 2)
    pairs = (("fsc_a", "ssc_a", "FSC-A", "SSC-A"), ("fsc_a", "fsc_h", "FSC-A", "FSC-H"))
    for axes, (x_name, y_name, x_label, y_label) in zip(panels, pairs, strict=True):
        x = table[x_name].to_numpy(dtype=float)
        y = table[y_name].to_numpy(dtype=float)
        for label, color in _COLORS.items():
            keep = (labels == label) & (x > 0) & (y > 0)
            axes.scatter(x[keep], y[keep], s=2, color=color, alpha=0.4, linewidths=0,
                         label=label or "single cells")  # fmt: skip
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
    if gate.get("fsc"):
        for axes in panels:
            axes.axvline(gate["fsc"]["limit"], color="k", lw=0.8, ls="--")
    if gate.get("ssc"):
        panels[0].axhline(gate["ssc"]["limit"], color="k", lw=0.8, ls="--")
    if gate.get("singlet_ratio"):
        low, high = panels[1].get_xlim()
        line = np.geomspace(low, high, 50)
        panels[1].plot(line, line * gate["singlet_ratio"]["limit"], color="k", lw=0.8, ls="--")
        panels[1].set_xlim(low, high)
    panels[0].set_title("debris: FSC-A / SSC-A", fontsize=9)
    panels[1].set_title("doublets: FSC-H / FSC-A", fontsize=9)
    panels[0].legend(markerscale=4, fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
