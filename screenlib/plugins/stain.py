"""What a stain plugin and a segmenter plugin declare (defined in :mod:`screenlib.analysis.stain`,
where the kernel that uses them lives; re-exported here for plugin authors)."""

from screenlib.analysis.stain import REGIONS, ROLES, Segmenter, Stain

__all__ = ["REGIONS", "ROLES", "Segmenter", "Stain"]
