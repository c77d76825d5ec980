"""Finalize: from the per-cell and per-field tables to gates, classes, wells, plate QC and fits.

:func:`finalize` is a pure function of tables and settings: it reads no file and writes none
(writing the results as one set is :mod:`screenlib.orchestrate.outputs`; the report is
:mod:`screenlib.report`). The science decisions it strings together live in their own layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from screenlib.aggregate import aggregate_wells, flag_relative_focus, plate_qc
from screenlib.doseresponse import fit_wells
from screenlib.doseresponse.replicates import replicate_fits, replicate_spread
from screenlib.gating import classify_cells, is_counted, learn_gates
from screenlib.settings import AssaySettings

logger = logging.getLogger(__name__)

__all__ = ["Results", "finalize", "mark_excluded_fields"]

FIELD_KEYS = ["well", "field", "timepoint"]


@dataclass
class Results:
    """The tables, gates and fits of one plate, and what the engine noticed on the way."""

    cells: pd.DataFrame
    fields: pd.DataFrame
    wells: pd.DataFrame | None = None
    plate_qc: pd.DataFrame | None = None
    gates: dict[int, Any] | None = None
    fits: pd.DataFrame | None = None
    replicates: pd.DataFrame | None = None  # per-replicate pIC50 spread (map's replicate column)
    notes: list[str] = field(default_factory=list)

    @property
    def n_cells_analysed(self) -> int:
        """Cells that entered the fractions (:func:`screenlib.gating.is_counted`)."""
        return int(is_counted(self.cells).sum())


def mark_excluded_fields(cells: pd.DataFrame, fields: pd.DataFrame) -> pd.Series:
    """Each cell's exclusion for field QC: ``"field QC: <reason>"``, or ``""`` when its field
    passed. Such cells stay in ``cells.parquet`` for inspection but never enter gates,
    fractions, galleries or counts."""
    failed = fields.loc[~fields["qc_pass"].astype(bool), [*FIELD_KEYS, "qc_reason"]]
    failed = failed.rename(columns={"qc_reason": "_field_qc"})
    reason = cells[FIELD_KEYS].merge(failed, on=FIELD_KEYS, how="left")["_field_qc"]
    text = "field QC: " + reason.fillna("").astype(str)
    return pd.Series(np.where(reason.notna(), text, ""), index=cells.index, dtype=object)


def _marker_features(stains: dict[str, Any], settings: AssaySettings) -> dict[str, str]:
    """``{stain: feature}`` of plugin marker stains, gated like Annexin V and PI."""
    features = {}
    for channel in settings.channels:
        stain = stains.get(channel.stain)
        if stain is None or stain.role != "marker":
            continue
        gated = (settings.gating.annexin_feature, settings.gating.pi_feature)
        if any(feature.startswith(f"{stain.name}_") for feature in gated):
            continue  # the stains of the two gated readouts have their own gates
        features[stain.name] = stain.feature
    return features


def finalize(
    cells: pd.DataFrame,
    fields: pd.DataFrame,
    platemap: pd.DataFrame,
    settings: AssaySettings,
    stains: dict[str, Any] | None = None,
) -> Results:
    """Gates from the vehicle wells, cell classes, well fractions, plate QC and fits.

    Parameters
    ----------
    cells, fields
        The per-cell table of the analysed fields and the per-field table (``qc_pass``).
    platemap
        The plate map (``read_platemap``).
    settings
        Assay settings (``qc``, ``gating``, ``fit`` are used).
    stains
        The run's stain objects by name, for plugin marker stains (None: none).

    Returns
    -------
    Results
    """
    fields = flag_relative_focus(fields, settings.qc)
    field_reason = mark_excluded_fields(cells, fields)
    # gates are learned from fields that pass QC: a blurred or saturated vehicle field
    # would move them for the whole plate
    notes: list[str] = []
    usable = cells[(field_reason == "").to_numpy()]
    if not settings.qc.exclude_failed_fields:
        # the user keeps failed fields in the numbers: their cells are counted (the wells
        # table counts them too), though the gates still come from passing fields only
        field_reason = pd.Series("", index=cells.index, dtype=object)
    if not len(usable):
        notes.append(
            "no field passed image QC; the gates were learned from all fields' cells, so "
            "treat every fraction as unreliable (fields.csv, column qc_reason, says why)"
        )
        usable = cells
    gates = learn_gates(
        usable,
        platemap,
        settings.gating,
        marker_features=_marker_features(stains or {}, settings),
    )
    classified = classify_cells(cells, gates, settings.gating)
    # classification adds its own reasons (debris...); a field-QC reason comes first
    own = classified["exclusion_reason"].fillna("").astype(str)
    classified["exclusion_reason"] = field_reason.where(field_reason != "", own)
    wells = aggregate_wells(classified, platemap, fields, settings)
    # the mixture models go to the gates (pandas would deep-copy them with every operation
    # on the wells table below)
    for timepoint, model in wells.attrs.pop("annexin_mixture", {}).items():
        if timepoint in gates:
            gates[timepoint].details["fraction_mixture"] = model
    qc_table = plate_qc(wells, platemap)
    fits = fit_wells(wells, settings.fit)
    replicates = None
    if "replicate" in wells and wells["replicate"].astype("string").str.strip().nunique() > 1:
        per_replicate = replicate_fits(wells, settings.fit, by="replicate")
        replicates = replicate_spread(per_replicate, by="replicate")
        notes.append(
            "the plate map has a 'replicate' column: fits.csv pools the replicates; "
            "replicates.csv gives each replicate's pIC50 and their spread"
        )
    return Results(
        cells=classified,
        fields=fields,
        wells=wells,
        plate_qc=qc_table,
        gates=gates,
        fits=fits,
        replicates=replicates,
        notes=notes,
    )
