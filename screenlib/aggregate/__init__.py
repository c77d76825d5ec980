"""Aggregation: per-well fractions with Wilson intervals, and plate-level QC statistics."""

from screenlib.aggregate.field_qc import flag_relative_focus
from screenlib.aggregate.plate_qc import edge_effect, plate_format, plate_qc
from screenlib.aggregate.stats import robust_z_prime, ssmd, wilson_interval, z_prime
from screenlib.aggregate.wells import aggregate_wells, relative_cell_count

__all__ = [
    "aggregate_wells",
    "edge_effect",
    "flag_relative_focus",
    "plate_format",
    "plate_qc",
    "relative_cell_count",
    "robust_z_prime",
    "ssmd",
    "wilson_interval",
    "z_prime",
]
