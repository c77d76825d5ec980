"""Flow-cytometry plates: Annexin V / PI events from FCS files through the same engine.

``read_flow_plate`` reads a folder of per-well FCS files (or one file with a data set per
well), compensates each well with its ``$SPILLOVER`` matrix and finds the Annexin V, PI and
scatter channels; ``flow_tables`` turns the events into the per-cell and per-field tables the
image kernel writes, with debris and doublets marked by a scatter gate learned from the
vehicle wells; then ``learn_gates`` / ``classify_cells`` / ``aggregate_wells`` /
``plate_qc`` / ``fit_wells`` run as for images. Needs the ``flow`` extra (flowio).

The names are imported on first use: every image run asks ``is_flow_input`` whether its input
is a flow plate, and the scatter gate's scipy.ndimage (about 0.2 s to import) is needed only
when it is.
"""

from screenlib._lazy import lazy_exports

#: public name -> the module of this package that defines it
_EXPORTS = {
    "FcsDataSet": "fcs",
    "FlowPlate": "plate",
    "FlowSettings": "settings",
    "ScatterGate": "scatter",
    "apply_scatter_gate": "scatter",
    "flow_tables": "tables",
    "is_flow_input": "plate",
    "learn_scatter_gate": "scatter",
    "parse_spillover": "fcs",
    "read_fcs": "fcs",
    "read_flow_plate": "plate",
    "spillover_text": "fcs",
    "well_from_name": "plate",
    "write_fcs": "fcs",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
