"""Events of a flow plate as the engine's per-cell and per-field tables.

Each event becomes one row of the per-cell table the image kernel writes, so that
``learn_gates``, ``classify_cells``, ``aggregate_wells``, ``plate_qc`` and ``fit_wells`` run
unchanged. The gating features named by the settings (``gating.annexin_feature``,
``gating.pi_feature``, ``gating.bleedthrough_feature``) hold the event's compensated Annexin V
and PI values; ``fsc_a``, ``fsc_h``, ``ssc_a`` its scatter. ``scatter_exclusion`` is ``""``
for a single cell, ``"debris"`` or ``"doublet"`` from the scatter gate learned on the vehicle
wells; the gating leaves such events out of the gates and calls them ``debris`` with that
``exclusion_reason``. Each well is one pseudo-field (``field`` 0) of the field table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from screenlib.errors import InputError
from screenlib.flow.plate import FlowPlate
from screenlib.flow.scatter import (
    DEBRIS,
    DOUBLET,
    SINGLET,
    apply_scatter_gate,
    learn_scatter_gate,
)
from screenlib.platemap import split_well
from screenlib.settings import AssaySettings, GatingSettings


def _gating(settings: AssaySettings | GatingSettings | None) -> GatingSettings:
    if settings is None:
        return GatingSettings()
    return settings if isinstance(settings, GatingSettings) else settings.gating


_STRINGS = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype


def _repeated_strings(values: list[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``values[codes]`` as an Arrow string array, built without a Python loop per row."""
    import pyarrow as pa

    array = pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32()), pa.array(values, pa.string())
    )
    return pd.array(array.dictionary_decode(), dtype=_STRINGS)


def _cell_ids(wells: pd.api.extensions.ExtensionArray, event: np.ndarray):
    """``"<well>_f0_t0_<event>"`` per event (the image runs' ``cell_id`` form)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.large_string()
    joined = pc.binary_join_element_wise(
        pc.cast(pa.array(wells), text),
        pa.scalar("_f0_t0_", text),
        pc.cast(pa.array(event), text),
        pa.scalar("", text),
    )
    return pd.array(joined, dtype=_STRINGS)


def _column(plate: FlowPlate, role: str, parts: list[np.ndarray]) -> np.ndarray | None:
    index = plate.channel(role)
    if index is None:
        return None
    return np.concatenate([p[:, index] for p in parts]) if parts else np.empty(0)


def flow_tables(
    plate: FlowPlate,
    platemap: pd.DataFrame,
    settings: AssaySettings | GatingSettings | None = None,
    *,
    plate_name: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-cell table (one row per event) and the field table (one pseudo-field per well).

    Parameters
    ----------
    plate
        From :func:`~screenlib.flow.read_flow_plate`.
    platemap
        Plate map with ``well`` and ``role``; the ``negative_control`` wells train the
        scatter gate.
    settings
        Assay (or gating) settings: the feature column names.
    plate_name
        Value of the ``plate`` column (default: ``plate.name``).

    Returns
    -------
    cells, fields
        ``cells``: ``plate``, ``well``, ``row``, ``column``, ``field`` (0), ``timepoint`` (0),
        ``event``, ``cell_id``, ``fsc_a``, ``fsc_h``, ``ssc_a`` (NaN where the plate lacks
        the channel), the gating features, ``scatter_exclusion``. ``fields``: ``well``,
        ``field``, ``timepoint``, ``status``, ``n_events``, ``n_cells`` (single cells),
        ``n_debris``, ``n_doublets``, ``excluded_fraction``, ``qc_pass``, ``qc_reason``,
        ``file``, ``fcs_version``, ``compensation``. Both carry the learned gate as
        ``.attrs["scatter_gate"]`` (a dict) and the plate's warnings as
        ``.attrs["flow_warnings"]``.
    """
    gating = _gating(settings)
    flow = plate.settings
    if platemap is None or "role" not in platemap.columns:
        raise InputError("flow plates need a plate map with a role column (vehicle wells)")
    role_of = dict(zip(platemap["well"].astype(str), platemap["role"].astype(str), strict=True))
    parts = [plate.events[w] for w in plate.wells]
    counts = np.array([len(p) for p in parts], dtype=int)
    event = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.empty(0, int)
    fsc_a = _column(plate, "fsc_area", parts)
    fsc_h = _column(plate, "fsc_height", parts)
    ssc_a = _column(plate, "ssc_area", parts)
    annexin = _column(plate, "annexin", parts)
    pi = _column(plate, "pi", parts)

    vehicle_wells = [w for w in plate.wells if role_of.get(w) == "negative_control"]
    vehicle = np.repeat([role_of.get(w) == "negative_control" for w in plate.wells], counts)
    if not vehicle_wells:
        raise InputError(
            f"{plate.path}: none of its wells ({', '.join(plate.wells[:6])}...) is a "
            "negative_control (vehicle) well in the plate map; the scatter and Annexin/PI "
            "gates are learned from them"
        )
    gate = learn_scatter_gate(
        fsc_a, ssc_a, fsc_h, vehicle, debris_k=flow.debris_k, doublet_k=flow.doublet_k
    )
    exclusion = apply_scatter_gate(gate, fsc_a, ssc_a, fsc_h)

    name = plate_name or plate.name
    n = int(counts.sum())
    nan = np.full(n, np.nan)
    well_codes = np.repeat(np.arange(len(plate.wells), dtype=np.int32), counts)
    rows, columns = zip(*(split_well(w) for w in plate.wells), strict=True) if n else ((), ())
    well_strings = _repeated_strings(plate.wells, well_codes)
    cells = pd.DataFrame(
        {
            "plate": _repeated_strings([name], np.zeros(n, dtype=np.int32)),
            "well": well_strings,
            "row": _repeated_strings(list(rows), well_codes),
            "column": np.asarray(columns, dtype=int)[well_codes] if n else np.empty(0, int),
            "field": np.zeros(n, dtype=int),
            "timepoint": np.zeros(n, dtype=int),
            "event": event,
            "cell_id": _cell_ids(well_strings, event),
            "fsc_a": fsc_a if fsc_a is not None else nan,
            "fsc_h": fsc_h if fsc_h is not None else nan,
            "ssc_a": ssc_a if ssc_a is not None else nan,
        }
    )
    for feature in (gating.annexin_feature, gating.bleedthrough_feature):
        cells[feature] = annexin
    cells[gating.pi_feature] = pi
    labels = [SINGLET, DEBRIS, DOUBLET]
    exclusion_codes = np.select([exclusion == DEBRIS, exclusion == DOUBLET], [1, 2], 0)
    cells["scatter_exclusion"] = _repeated_strings(labels, exclusion_codes.astype(np.int32))

    fields = _field_table(plate, exclusion, counts, flow.max_excluded_fraction)
    info = gate.to_dict()
    info["channels"] = {k: v for k, v in plate.roles.items()}
    for table in (cells, fields):
        table.attrs["scatter_gate"] = info
        table.attrs["flow_warnings"] = list(plate.warnings)
    return cells, fields


def _field_table(
    plate: FlowPlate, exclusion: np.ndarray, counts: np.ndarray, max_excluded: float
) -> pd.DataFrame:
    ends = np.cumsum(counts)
    rows = []
    for well, stop, count in zip(plate.wells, ends, counts, strict=True):
        labels = exclusion[stop - count : stop]
        n_debris = int(np.sum(labels == DEBRIS))
        n_doublets = int(np.sum(labels == DOUBLET))
        n_cells = int(count) - n_debris - n_doublets
        excluded = (n_debris + n_doublets) / count if count else float("nan")
        reasons = []
        if count < max(plate.settings.min_events_per_well, 1):
            reasons.append("no_events" if count == 0 else "too_few_events")
        elif excluded > max_excluded:
            reasons.append("mostly_debris")
        meta = plate.metadata[well]
        rows.append(
            {
                "well": well,
                "field": 0,
                "timepoint": 0,
                "status": "done",
                "n_events": int(count),
                "n_cells": n_cells,
                "n_debris": n_debris,
                "n_doublets": n_doublets,
                "excluded_fraction": excluded,
                "qc_pass": not reasons,
                "qc_reason": ";".join(reasons),
                "file": meta["file"],
                "fcs_version": meta["fcs_version"],
                "compensation": meta["compensation"],
            }
        )
    return pd.DataFrame(rows)
