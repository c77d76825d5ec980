"""A finished run, for notebooks: its tables, gates and fits, and a few plots.

>>> run = screenlib.open_run("results/milademetan_nb")      # doctest: +SKIP
>>> run.fits[["sample", "compound", "readout", "ic50_molar"]]  # doctest: +SKIP
>>> run.plot_curve("SK-N-SH", "milademetan")                  # doctest: +SKIP
>>> run.plate_heatmap("apoptotic_fraction")                   # doctest: +SKIP

:func:`analyze_plate` runs a plate as ``screenlib run`` does and returns the same object.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from screenlib.errors import InputError
from screenlib.settings import AssaySettings, load_settings

__all__ = ["RunResults", "analyze_plate", "open_run"]


class RunResults:
    """The outputs of one run folder, read when first used.

    Attributes
    ----------
    folder : Path
        The run's output folder.
    wells, fits, fits_full, fields, plate_qc, cells : pandas.DataFrame
        ``wells.csv``, ``fits.csv`` (the short table), ``fits_full.parquet``, ``fields.csv``,
        ``plate_qc.csv`` and ``cells.parquet``.
    gates : dict
        ``gates.json``.
    settings : AssaySettings
        ``settings_used.toml``.
    notes : list of str
        What the engine noticed (``outputs.json``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "outputs.json"
        if not manifest.is_file():
            raise InputError(
                f"{self.folder} holds no finished screenlib run (no outputs.json); give the "
                "--out folder of `screenlib run`"
            )
        self._manifest = json.loads(manifest.read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        files = ", ".join(entry["name"] for entry in self._manifest.get("files", [])[:8])
        return f"RunResults({str(self.folder)!r}: {files})"

    def _csv(self, name: str) -> pd.DataFrame:
        path = self.folder / name
        if not path.is_file():
            raise InputError(f"{path} does not exist: this run did not write {name}")
        return pd.read_csv(path, keep_default_na=False, na_values=[""])

    @cached_property
    def wells(self) -> pd.DataFrame:
        """Per-well fractions, counts and QC flags (``wells.csv``)."""
        return self._csv("wells.csv")

    @cached_property
    def fits(self) -> pd.DataFrame:
        """Dose-response fits (``fits.csv``)."""
        return self._csv("fits.csv")

    @cached_property
    def fits_full(self) -> pd.DataFrame:
        """Every column of the fits: parameters, intervals, tests (``fits_full.parquet``)."""
        return pd.read_parquet(self.folder / "fits_full.parquet")

    @cached_property
    def fields(self) -> pd.DataFrame:
        """Per-field QC (``fields.csv``)."""
        return self._csv("fields.csv")

    @cached_property
    def plate_qc(self) -> pd.DataFrame:
        """Z′, SSMD and edge effects (``plate_qc.csv``)."""
        return self._csv("plate_qc.csv")

    @cached_property
    def cells(self) -> pd.DataFrame:
        """Every measured object with its class and exclusion reason (``cells.parquet``)."""
        return pd.read_parquet(self.folder / "cells.parquet")

    @cached_property
    def gates(self) -> dict[str, Any]:
        """The gates per time point (``gates.json``)."""
        return json.loads((self.folder / "gates.json").read_text(encoding="utf-8"))

    @cached_property
    def settings(self) -> AssaySettings:
        """The settings the run used (``settings_used.toml``)."""
        return load_settings(self.folder / "settings_used.toml")

    @property
    def notes(self) -> list[str]:
        """What the engine noticed and said during the run."""
        return list(self._manifest.get("notes", []))

    def curve(self, sample: str, compound: str, readout: str | None = None) -> pd.Series:
        """The full fit row of one curve (readout: the first fitted one by default)."""
        fits = self.fits_full
        chosen = fits[(fits["sample"] == sample) & (fits["compound"] == compound)]
        if readout is not None:
            chosen = chosen[chosen["readout"] == readout]
        if chosen.empty:
            known = sorted(set(zip(fits["sample"], fits["compound"], strict=True)))
            raise InputError(
                f"no fit for sample {sample!r}, compound {compound!r}"
                f"{'' if readout is None else f', readout {readout!r}'}; fitted: {known[:8]}"
            )
        return chosen.iloc[0]

    def plot_curve(self, sample: str, compound: str, readout: str | None = None, ax=None):
        """The dose-response points and fitted curve of one sample × compound.

        Returns the matplotlib Figure (drawn into ``ax`` when given).
        """
        import matplotlib.pyplot as plt

        from screenlib.doseresponse.units import format_concentration

        fit = self.curve(sample, compound, readout)
        readout = str(fit["readout"])
        wells = self.wells
        points = wells[
            (wells["sample"] == sample)
            & (wells["compound"] == compound)
            & (wells["concentration_molar"] > 0)
        ]
        if ax is None:
            figure, ax = plt.subplots(figsize=(5, 3.6))
        else:
            figure = ax.figure
        ax.plot(points["concentration_molar"], points[readout], "o", color="#1f5fa8")
        doses = np.logspace(
            np.log10(points["concentration_molar"].min()) - 0.5,
            np.log10(points["concentration_molar"].max()) + 0.5,
            200,
        )
        ax.plot(doses, _four_parameter_curve(fit, doses), "-", color="#1f5fa8")
        ax.set_xscale("log")
        ax.set_xlabel(f"{compound} concentration (M)")
        ax.set_ylabel(readout.replace("_", " "))
        ic50 = fit.get("ic50_molar")
        label = format_concentration(float(ic50)) if pd.notna(ic50) else "not determined"
        ax.set_title(f"{sample} — {compound}: IC50 {label}")
        return figure

    def plate_heatmap(self, column: str = "apoptotic_fraction", timepoint: int = 0):
        """A plate-layout heatmap of one ``wells.csv`` column, as the report draws it: a
        ``PIL.Image.Image`` (Jupyter shows it; ``.save("map.png")`` writes it)."""
        from screenlib.report.figures import plate_geometry, plate_heatmap

        wells = self.wells
        if column not in wells:
            raise InputError(f"wells.csv has no column {column!r}; columns: {list(wells)}")
        if "timepoint" in wells:
            wells = wells[wells["timepoint"] == timepoint]
        numbers = pd.to_numeric(wells[column], errors="coerce")
        values = dict(zip(wells["well"], numbers, strict=True))
        label = column.replace("_", " ")
        geometry = plate_geometry(list(values))
        return plate_heatmap(values, geometry, title=label, colorbar_label=label)


def _four_parameter_curve(fit: pd.Series, doses: np.ndarray) -> np.ndarray:
    """The fitted 4PL at ``doses`` from the parameters the full fit table keeps."""
    from screenlib.doseresponse.model import logistic_fraction

    start, end = float(fit["response_at_zero_dose"]), float(fit["response_at_infinite_dose"])
    share = logistic_fraction(np.log10(doses), float(fit["log_ic50_fit"]), float(fit["hill_slope"]))
    return start + (end - start) * share


def open_run(folder: str | Path) -> RunResults:
    """Open the output folder of a finished ``screenlib run``.

    Raises
    ------
    InputError
        When the folder holds no finished run.
    """
    return RunResults(folder)


def analyze_plate(
    plate: str | Path,
    platemap: str | Path | pd.DataFrame,
    out_dir: str | Path,
    settings: AssaySettings | str | Path | None = None,
    **options: Any,
) -> RunResults:
    """Run a plate as ``screenlib run`` does (same outputs, resume included); return them.

    ``settings`` may be a TOML path; ``options`` are those of
    :func:`screenlib.orchestrate.run_plate` (``scheduler="sync"`` runs in this process).
    """
    from screenlib.orchestrate import run_plate

    if settings is not None and not isinstance(settings, AssaySettings):
        settings = load_settings(settings)
    options.setdefault("progress", False)
    run_plate(plate, platemap, out_dir, settings, **options)
    return open_run(out_dir)
