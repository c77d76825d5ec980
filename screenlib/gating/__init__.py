"""Gating: per-cell Annexin V / PI quadrant classes from gates learned on the plate's controls."""

from screenlib.gating.classify import (
    CELL_CLASSES,
    DEBRIS,
    classify_cells,
    compare_annexin_features,
    feature_separation,
    is_counted,
)
from screenlib.gating.gates import (
    Gates,
    estimate_bleedthrough,
    gates_are_manual,
    gates_from_dict,
    gates_to_dict,
    learn_gates,
    learn_object_scales,
)
from screenlib.gating.objects import OBJECT_CLASSES, ObjectScale, classify_objects, object_scale

__all__ = [
    "gates_are_manual",
    "CELL_CLASSES",
    "DEBRIS",
    "Gates",
    "classify_cells",
    "compare_annexin_features",
    "estimate_bleedthrough",
    "feature_separation",
    "is_counted",
    "gates_from_dict",
    "gates_to_dict",
    "learn_gates",
    "learn_object_scales",
    "OBJECT_CLASSES",
    "ObjectScale",
    "classify_objects",
    "object_scale",
]
