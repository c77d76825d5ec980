"""Flow-cytometry plates: Annexin V / PI events from FCS files through the same engine.

``read_flow_plate`` reads a folder of per-well FCS files (or one file with a data set per
well), compensates each well with its ``$SPILLOVER`` matrix and finds the Annexin V, PI and
scatter channels; ``flow_tables`` turns the events into the per-cell and per-field tables the
image kernel writes, with debris and doublets marked by a scatter gate learned from the
vehicle wells; then ``learn_gates`` / ``classify_cells`` / ``aggregate_wells`` /
``plate_qc`` / ``fit_wells`` run as for images. Needs the ``flow`` extra (flowio).
"""

from screenlib.flow.fcs import FcsDataSet, parse_spillover, read_fcs, spillover_text, write_fcs
from screenlib.flow.plate import FlowPlate, is_flow_input, read_flow_plate, well_from_name
from screenlib.flow.scatter import ScatterGate, apply_scatter_gate, learn_scatter_gate
from screenlib.flow.settings import FlowSettings
from screenlib.flow.tables import flow_tables

__all__ = [
    "FcsDataSet",
    "FlowPlate",
    "FlowSettings",
    "ScatterGate",
    "apply_scatter_gate",
    "flow_tables",
    "is_flow_input",
    "learn_scatter_gate",
    "parse_spillover",
    "read_fcs",
    "read_flow_plate",
    "spillover_text",
    "well_from_name",
    "write_fcs",
]
