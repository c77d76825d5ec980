"""Flow-cytometry settings: the ``[flow]`` section of the assay settings.

The class lives in :mod:`screenlib.settings` with every other section (one settings object
per assay); it is re-exported here for the flow package's users.
"""

from screenlib.settings import FlowSettings

__all__ = ["FlowSettings"]
