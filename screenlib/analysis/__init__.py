"""Per-field image analysis: corrections, nuclei segmentation, regions, measurements and QC.

The public entry point is :func:`analyze_field` (one field's channels in, nucleus labels, a
per-cell table and QC out); :func:`estimate_flatfield` estimates the illumination profile per
plate and channel; :func:`segment_nuclei` is the classical segmenter; :func:`match_labels`
scores a segmentation against ground truth.

The names are imported on first use: the stain definitions (``screenlib.analysis.stain``) are
needed by every run, the segmentation and its scikit-image modules (about 0.2 s to import)
only by a run that analyses a field; a re-gate with every field finished never loads them.
"""

from screenlib._lazy import lazy_exports

#: public name -> the module of this package that defines it
_EXPORTS = {
    "FieldResult": "kernel",
    "MatchResult": "metrics",
    "analyze_field": "kernel",
    "background_annulus_labels": "regions",
    "cell_labels": "regions",
    "estimate_camera_offset": "correction",
    "estimate_flatfield": "correction",
    "focus_score": "qc",
    "index_labels": "measure",
    "match_labels": "metrics",
    "region_statistics": "measure",
    "ring_labels": "regions",
    "saturated_fraction": "qc",
    "segment_nuclei": "segmentation",
    "shape_features": "measure",
    "shared_reach": "regions",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
