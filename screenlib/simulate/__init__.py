"""Synthetic screening data with ground truth: fields, plates and the committed example plate.

``render_field`` draws one field (Hoechst / Annexin V / PI) with truth labels and classes;
``render_bright_among_dim`` a field that defeats a single global threshold;
``simulate_plate`` writes a microscope-style export (or a Zarr plate) with per-cell and
per-well truth, following a ``PlateDesign`` whose dose-responses are Hill curves.
"""

from screenlib.simulate._confounders import CONFOUNDERS, Confounders
from screenlib.simulate._field import (
    CELL_CLASSES,
    SUPPORTED_STAINS,
    CellModel,
    SimulatedField,
    class_counts_from_fractions,
    render_bright_among_dim,
    render_field,
    vignetting_profile,
)
from screenlib.simulate._plate_design import (
    LAYOUTS,
    MILADEMETAN_IC50_NM,
    PlateDesign,
    SampleResponse,
    SimulatedPlate,
    WellDesign,
    example_plate_design,
    expected_well_response,
    hill_effect,
    messy_plate_design,
    simulate_plate,
    write_platemap,
)

__all__ = [
    "CONFOUNDERS",
    "Confounders",
    "LAYOUTS",
    "MILADEMETAN_IC50_NM",
    "PlateDesign",
    "SampleResponse",
    "SimulatedPlate",
    "WellDesign",
    "example_plate_design",
    "messy_plate_design",
    "expected_well_response",
    "hill_effect",
    "simulate_plate",
    "write_platemap",
    "CELL_CLASSES",
    "SUPPORTED_STAINS",
    "CellModel",
    "SimulatedField",
    "class_counts_from_fractions",
    "render_bright_among_dim",
    "render_field",
    "vignetting_profile",
]
