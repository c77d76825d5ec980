"""The built-in segmenter, and how to plug in StarDist or Cellpose.

A segmenter is any callable ``(nuclear_image, pixel_size_um, settings) -> labels`` (see
:data:`screenlib.plugins.Segmenter`) registered under the entry-point group
``screenlib.segmenters``; the assay chooses it with ``[segmentation] segmenter = "<name>"``.
A StarDist wrapper in a user's package could read::

    # my_package/segmenters.py
    import numpy as np
    from csbdeep.utils import normalize
    from stardist.models import StarDist2D

    _model = None

    def stardist(nuclear_image, pixel_size_um, settings):
        global _model
        _model = _model or StarDist2D.from_pretrained("2D_versatile_fluo")
        labels, _ = _model.predict_instances(normalize(nuclear_image, 1, 99.8))
        return labels.astype(np.int32)

    # pyproject.toml
    # [project.entry-points."screenlib.segmenters"]
    # stardist = "my_package.segmenters:stardist"

(For a model trained at another pixel size, rescale by ``pixel_size_um / model_pixel_size``
before predicting and resize the labels back with nearest-neighbour interpolation.)
"""

from screenlib.analysis.segmentation import segment_nuclei

#: The classical segmenter (local background, noise-aware threshold, shape-based splitting).
CLASSICAL = segment_nuclei
