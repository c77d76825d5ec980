"""``finalize``: one definition of a counted cell, whatever the field-QC setting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from screenlib.gating.synthetic_cells import example_platemap, simulate_cell_table
from screenlib.orchestrate.finalize import finalize
from screenlib.report._cells import counted_cells
from screenlib.settings import AssaySettings


def _fields_with_failures(cells):
    fields = (
        cells[["well", "field", "timepoint"]]
        .drop_duplicates()
        .reset_index(drop=True)
        .assign(qc_pass=True, qc_reason="", status="done", n_cells=1)
    )
    failed = fields.index[::7]  # every seventh field failed image QC
    fields.loc[failed, "qc_pass"] = False
    fields.loc[failed, "qc_reason"] = "out_of_focus"
    return fields


@pytest.mark.parametrize("exclude_failed_fields", [True, False])
def test_cli_report_and_wells_count_the_same_cells(exclude_failed_fields):
    platemap = example_platemap()
    cells = simulate_cell_table(platemap, seed=5)
    fields = _fields_with_failures(cells)
    settings = AssaySettings()
    settings = dataclasses.replace(
        settings, qc=dataclasses.replace(settings.qc, exclude_failed_fields=exclude_failed_fields)
    )
    results = finalize(cells, fields, platemap, settings)
    in_wells = int(results.wells["n_cells"].sum())
    shown, left_out = counted_cells(results.cells, results.fields, settings)
    # the command line prints n_cells_analysed, the report len(shown), the wells sum n_cells
    assert results.n_cells_analysed == len(shown) == in_wells
    failed_objects = left_out["failed_fields"]
    if exclude_failed_fields:
        assert failed_objects > 0
        reasons = results.cells["exclusion_reason"].astype(str)
        assert reasons.str.startswith("field QC: ").sum() == failed_objects
    else:
        assert failed_objects == 0
        assert not results.cells["exclusion_reason"].astype(str).str.startswith("field QC").any()
    # gates come from fields that passed QC either way
    assert np.isfinite(results.gates[0].annexin_gate)


def test_every_well_flag_has_a_colour_in_the_report():
    """A flag the report does not know would draw its well as 'pass' (green)."""
    import itertools

    from screenlib.aggregate.wells import _flags
    from screenlib.report._sections import (
        CAVEAT_FLAGS,
        EXPECTED_FLAGS,
        FAILED_FLAGS,
        NO_DATA_FLAGS,
        well_qc_status,
    )

    known = NO_DATA_FLAGS | FAILED_FLAGS | CAVEAT_FLAGS | EXPECTED_FLAGS
    seen = set()
    for role, n_cells, excluded, reference_out, no_vehicle, fallback, expected, outside in (
        itertools.product(["sample", "empty", "negative_control"], [0, 5, 500], [0, 1],
                          [False, True], [False, True], [False, True], [False, True],
                          [False, True])
    ):  # fmt: skip
        row = {"role": role, "n_cells": n_cells, "n_fields_used": 2, "_expected_loss": expected,
               "n_fields_excluded": excluded, "vehicle_reference_excluded": reference_out,
               "_no_vehicle": no_vehicle, "_vehicle_fallback": fallback}  # fmt: skip
        flags = _flags(row, min_cells=20, not_in_platemap=outside)
        seen |= set(filter(None, flags.split(";")))
        if flags and not set(flags.split(";")) <= EXPECTED_FLAGS:
            assert well_qc_status({"qc_flags": flags, "n_fields_used": 2}) != "pass", flags
    assert seen <= known, seen - known
    assert well_qc_status({"qc_flags": "vehicle_reference_excluded", "n_fields_used": 2}) == (
        "failed"
    )
