"""Per-field image analysis: corrections, nuclei segmentation, regions, measurements and QC.

The public entry point is :func:`analyze_field` (one field's channels in, nucleus labels, a
per-cell table and QC out); :func:`estimate_flatfield` estimates the illumination profile per
plate and channel; :func:`segment_nuclei` is the classical segmenter; :func:`match_labels`
scores a segmentation against ground truth.
"""

from screenlib.analysis.correction import estimate_camera_offset, estimate_flatfield
from screenlib.analysis.kernel import FieldResult, analyze_field
from screenlib.analysis.measure import index_labels, region_statistics, shape_features
from screenlib.analysis.metrics import MatchResult, match_labels
from screenlib.analysis.qc import focus_score, saturated_fraction
from screenlib.analysis.regions import (
    background_annulus_labels,
    cell_labels,
    ring_labels,
    shared_reach,
)
from screenlib.analysis.segmentation import segment_nuclei

__all__ = [
    "FieldResult",
    "MatchResult",
    "analyze_field",
    "background_annulus_labels",
    "cell_labels",
    "estimate_camera_offset",
    "estimate_flatfield",
    "focus_score",
    "index_labels",
    "match_labels",
    "region_statistics",
    "ring_labels",
    "saturated_fraction",
    "segment_nuclei",
    "shape_features",
    "shared_reach",
]
