"""The HTML report and figures of a screening run.

``write_report`` writes ``report.html`` (one self-contained file: images embedded, no external
scripts or styles) and ``figures/*.png`` / ``*.svg`` for slides.
"""

from screenlib.report._report import SECTION_IDS, write_report
from screenlib.report.figures import dose_response_figure, plate_heatmap, quadrant_figure
from screenlib.report.gallery import cell_gallery, composite_rgb

__all__ = [
    "SECTION_IDS",
    "cell_gallery",
    "composite_rgb",
    "dose_response_figure",
    "plate_heatmap",
    "quadrant_figure",
    "write_report",
]
