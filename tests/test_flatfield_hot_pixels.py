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
