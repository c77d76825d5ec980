"""The built-in stains: Hoechst/DAPI (nuclei), Annexin V (membrane ring) and propidium iodide."""

from screenlib.plugins.stain import Stain

HOECHST = Stain(
    name="hoechst",
    role="nuclear",
    region="nucleus",
    feature="hoechst_nucleus_mean",
    description="Hoechst 33342 / DAPI DNA dye: nuclei are segmented in this channel; "
    "condensed (pyknotic) nuclei are small and bright",
    color="0000FF",
)

ANNEXIN_V = Stain(
    name="annexin_v",
    role="marker",
    region="ring",
    # the ring's 90th percentile: a thin membrane signal is diluted by the ring's mean (with
    # the 4 um ring: best-threshold accuracy 0.968 vs 0.963; tests/test_gating.py)
    feature="annexin_v_ring_p90",
    description="Annexin V conjugate: binds phosphatidylserine on the outer membrane leaflet "
    "(early apoptosis); measured in a ring outside the nucleus",
    color="00FF00",
)

PROPIDIUM_IODIDE = Stain(
    name="pi",
    role="marker",
    region="nucleus",
    feature="pi_nucleus_mean",
    description="Propidium iodide: membrane-impermeant DNA dye, stains nuclei of late "
    "apoptotic and necrotic cells",
    color="FF0000",
)
