"""The flat-field estimate of a dim channel is not set by hot pixels (fixed sensor positions
that are bright in every field)."""

import numpy as np
from scipy import ndimage as ndi

from screenlib.analysis import estimate_flatfield


def _fields(hot_pixels: bool, n_fields: int = 40, size: int = 128) -> tuple[list, np.ndarray]:
    """Fields of one dim channel (sparse blurred spots, as membranes in an Annexin V channel)
    under a vignetting ramp, with or without hot pixels at the same positions in every field."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:size, :size] / size
    profile = 1.0 - 0.5 * ((yy - 0.35) ** 2 + (xx - 0.6) ** 2)
    hot = rng.integers(0, size // 2, (12, 2)) * 2  # on the sampled (even) grid
    fields = []
    for _ in range(n_fields):
        spots = np.zeros((size, size))
        spots[rng.integers(0, size, 400), rng.integers(0, size, 400)] = 2000.0
        signal = 20.0 + ndi.gaussian_filter(spots, 1.5)
        image = rng.poisson(profile * signal).astype(np.float64) + 100.0
        if hot_pixels:
            image[hot[:, 0], hot[:, 1]] = 30000.0
        fields.append(image[None].astype(np.uint16))
    return fields, profile / profile.mean()


def test_hot_pixels_do_not_set_the_flat_field_of_a_dim_channel():
    fields, truth = _fields(hot_pixels=True)
    ratio = estimate_flatfield(fields)[0] / truth
    assert ratio.max() < 1.25 and ratio.min() > 0.85  # the estimator's own smoothing error


def test_a_plate_without_hot_pixels_gets_the_same_profile():
    with_hot, _ = _fields(hot_pixels=True)
    without, truth = _fields(hot_pixels=False)
    clean = estimate_flatfield(without)[0]
    assert np.abs(clean / truth - 1).max() < 0.25
    np.testing.assert_allclose(estimate_flatfield(with_hot)[0], clean, rtol=0.02)


# --- hot pixels in the fields themselves (removed before segmenting and measuring) -------


def _nuclei_field(size: int = 160) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Hoechst, Annexin V and PI of a field of blurred, textured nuclei 12 px wide (viable:
    Annexin V and PI at background); and the nuclei's centres."""
    rng = np.random.default_rng(11)
    centres = [(y, x) for y in range(20, size - 10, 30) for x in range(20, size - 10, 30)]
    yy, xx = np.mgrid[:size, :size]
    nuclei = np.zeros((size, size))
    for y, x in centres:
        nuclei[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = 700.0
    texture = 1.0 + 0.15 * ndi.gaussian_filter(rng.normal(size=(size, size)), 1.0) * 4
    hoechst = ndi.gaussian_filter(nuclei * texture, 1.2) + 100.0
    dim = np.full((size, size), 100.0)
    channels = np.stack([rng.poisson(c) for c in (hoechst, dim + 20.0, dim)])
    return channels.astype(np.uint16), centres


def _analyse(channels: np.ndarray, hot_pixels: bool = True):
    from screenlib.analysis import analyze_field
    from screenlib.plugins import get_stain
    from screenlib.settings import AssaySettings, CorrectionSettings

    settings = AssaySettings(correction=CorrectionSettings(hot_pixels=hot_pixels))
    stains = [get_stain(name) for name in ("hoechst", "annexin_v", "pi")]
    return analyze_field(
        channels, stains=stains, pixel_size_um=0.65, settings=settings, nucleus_diameter_px=12
    )


def test_remove_hot_pixels_replaces_lone_spikes_and_keeps_what_the_optics_drew():
    from screenlib.analysis.correction import remove_hot_pixels

    rng = np.random.default_rng(2)
    spots = np.zeros((96, 96))
    spots[rng.integers(4, 92, 30), rng.integers(4, 92, 30)] = 5000.0
    image = (ndi.gaussian_filter(spots, 0.8) + rng.poisson(100, spots.shape)).astype(np.float32)
    drawn = image.copy()
    assert remove_hot_pixels(image) == 0  # blurred spots, even small ones, are not defects
    np.testing.assert_array_equal(image, drawn)
    image[10, 20] = image[50, 60] = 20000.0  # one in the background ...
    image[40, 41] += 3000.0  # ... one beside or on a spot, at a few times its level
    assert remove_hot_pixels(image) == 3
    assert image.max() <= drawn.max()
    assert image[10, 20] < 200 and image[50, 60] < drawn[49:52, 59:62].max() + 1
    # an 8-bit image: a flat background of 1 with a nucleus at 100, a block one level up
    flat = np.ones((64, 64), np.float32)
    flat[10:20, 10:20] = 100.0
    flat[40, 40] = 1.2
    assert remove_hot_pixels(flat) == 0


def test_a_hot_pixel_neither_hides_a_nucleus_nor_makes_a_viable_cell_pi_positive():
    clean, centres = _nuclei_field()
    hot = clean.copy()
    hoechst_hit, pi_hit = centres[4], centres[10]
    hot[0][hoechst_hit] = 60000  # a hot pixel inside a nucleus, Hoechst channel
    hot[2][pi_hit] = 30000  # and one inside another nucleus, PI channel
    reference = _analyse(clean)
    fixed = _analyse(hot)
    assert fixed.qc["hot_pixels"] == 2 and reference.qc["hot_pixels"] == 0
    assert fixed.qc["n_cells"] == reference.qc["n_cells"] == len(centres)

    def pi_of(result, centre):
        cells = result.cells
        nearest = np.hypot(cells.centroid_y - centre[0], cells.centroid_x - centre[1]).idxmin()
        return cells.loc[nearest, "pi_nucleus_mean"], cells.loc[nearest, "area_px"]

    pi_fixed, _ = pi_of(fixed, pi_hit)
    pi_reference, _ = pi_of(reference, pi_hit)
    assert abs(pi_fixed - pi_reference) < 5.0
    _, area_fixed = pi_of(fixed, hoechst_hit)
    _, area_reference = pi_of(reference, hoechst_hit)
    assert abs(area_fixed - area_reference) <= 0.1 * area_reference
    # without the correction the same pixels do the harm
    harmed = _analyse(hot, hot_pixels=False)
    pi_harmed, _ = pi_of(harmed, pi_hit)
    lost = harmed.qc["n_cells"] < len(centres)
    _, area_harmed = pi_of(harmed, hoechst_hit)
    assert pi_harmed > pi_reference + 100.0
    assert lost or area_harmed < 0.5 * area_reference


def test_hot_pixels_are_replaced_in_a_strided_view_too():
    from screenlib.analysis.correction import remove_hot_pixels

    rng = np.random.default_rng(3)
    image = rng.poisson(100, (64, 128)).astype(np.float32)
    image[20, 40] = 9000.0  # column 40 of the full image: column 20 of the view below
    view = image[:, ::2]
    assert not view.flags.c_contiguous
    assert remove_hot_pixels(view) == 1
    assert image[20, 40] < 200
