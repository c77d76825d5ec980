"""Stain and segmenter plugins, discovered through Python entry points.

A package adds a stain by declaring an entry point in the group ``screenlib.stains`` that
points at a :class:`Stain`, and a segmenter by declaring one in ``screenlib.segmenters`` that
points at a callable with the :data:`Segmenter` signature. A plugin that fails to load is
reported by name (:func:`plugin_failures`) and skipped; it never breaks the host.
"""

from screenlib.plugins.registry import (
    SEGMENTER_GROUP,
    STAIN_GROUP,
    PluginFailure,
    get_segmenter,
    get_stain,
    get_stains,
    load_segmenters,
    load_stains,
    plugin_failures,
    resolve_segmenter,
)
from screenlib.plugins.stain import Segmenter, Stain

__all__ = [
    "SEGMENTER_GROUP",
    "STAIN_GROUP",
    "PluginFailure",
    "Segmenter",
    "Stain",
    "get_segmenter",
    "get_stain",
    "get_stains",
    "load_segmenters",
    "load_stains",
    "plugin_failures",
    "resolve_segmenter",
]
