"""A caspase-3/7 stain for screenlib, registered through the ``screenlib.stains`` entry point.

Caspase-3/7 reagents such as CellEvent Caspase-3/7 Green are a DEVD peptide fused to a
DNA-binding dye: active executioner caspases cleave the peptide in apoptotic cells, and the
freed dye stains their nucleus. The stain is therefore measured in the nucleus, and a cell is
called positive on its mean nuclear intensity (gated against vehicle wells like Annexin V).

Install it beside screenlib (``pip install plugins/screenlib-caspase37``) and name it in the
assay settings::

    [[channels]]
    stain = "caspase37"
    index = 3
"""

from screenlib.plugins import Stain

CASPASE37 = Stain(
    name="caspase37",
    role="marker",
    region="nucleus",
    feature="caspase37_nucleus_mean",
    description="Caspase-3/7 DEVD nuclear dye (e.g. CellEvent): nuclei of cells with active "
    "executioner caspases (early and late apoptosis)",
    color="FFAA00",
)

__all__ = ["CASPASE37"]
