"""refine_outlines against a pixel-by-pixel reference of its documented rule, on shapes that
are not multiples of the block size, with a flat-field, a per-pixel noise floor and nuclei
whose every outline pixel falls under their edge."""

import numpy as np
import pytest

from screenlib.analysis.segmentation import GridSegmentation, refine_outlines


def _reference(grid, image, factor, flat, offset):
    """Each outline block (its 3 x 3 neighbourhood holds another nonzero label, or it is
    background next to a nucleus) is redrawn pixel by pixel; a nucleus left with no pixel keeps
    its blocks. Returns the labels and the pixels each label gained against factor**2 per
    block (counted over the pixels inside the image)."""
    labels = grid.labels
    height, width = image.shape
    full = np.kron(labels, np.ones((factor, factor), labels.dtype))[:height, :width].copy()
    n_labels = int(labels.max())
    floor = np.broadcast_to(np.asarray(grid.floor, np.float32), labels.shape)
    redrawn = {}  # block -> (own, [(y, x, new)])
    gained = np.zeros(n_labels + 1, np.int64)
    for by, bx in np.ndindex(labels.shape):
        own = int(labels[by, bx])
        around = labels[max(by - 1, 0) : by + 2, max(bx - 1, 0) : bx + 2]
        nonzero = around[around > 0]
        if around.max() == own and (own == 0 or nonzero.min() == own):
            continue  # not on an outline
        candidate = own or int(around.max())
        level = max(grid.edge_levels[candidate], floor[by, bx]) + grid.baseline[by, bx]
        pixels = []
        for y in range(by * factor, min((by + 1) * factor, height)):
            for x in range(bx * factor, min((bx + 1) * factor, width)):
                value = np.float32(image[y, x]) - np.float32(offset)
                if flat is not None:
                    value = value / flat[y, x]
                new = candidate if value > level else 0
                pixels.append((y, x, new))
                gained[new] += 1
                gained[own] -= 1
        redrawn[by, bx] = (own, pixels)
    blocks = np.bincount(labels.ravel(), minlength=n_labels + 1)
    vanished = gained + factor**2 * blocks <= 0
    vanished[0] = False
    for own, pixels in redrawn.values():
        for y, x, new in pixels:
            if vanished[own]:
                gained[own] += 1
                gained[new] -= 1
                new = own
            full[y, x] = new
    return full, gained


@pytest.mark.parametrize("seed", range(12))
def test_refine_outlines_matches_pixel_reference(seed):
    rng = np.random.default_rng(seed)
    factor = int(rng.integers(2, 5))
    height, width = int(rng.integers(20, 40)), int(rng.integers(20, 40))
    grid_shape = (-(-height // factor), -(-width // factor))
    labels = np.zeros(grid_shape, np.int32)
    for label in range(1, 7):
        y, x = rng.integers(0, grid_shape[0] - 2), rng.integers(0, grid_shape[1] - 2)
        labels[y : y + int(rng.integers(1, 4)), x : x + int(rng.integers(1, 4))] = label
    edge_levels = rng.uniform(20, 120, 7).astype(np.float32)
    edge_levels[0] = np.inf
    edge_levels[6] = 1e6  # every outline pixel of nucleus 6 falls under its edge
    floor = rng.uniform(0, 30, grid_shape).astype(np.float32) if seed % 2 else np.float32(10.0)
    grid = GridSegmentation(
        labels, rng.uniform(0, 20, grid_shape).astype(np.float32), edge_levels, floor
    )
    image = rng.integers(0, 200, (height, width)).astype(np.uint16)
    flat = rng.uniform(0.7, 1.3, (height, width)).astype(np.float32) if seed % 3 else None

    full, change = refine_outlines(grid, image, factor, flat=flat, offset=5.0)
    expected_full, expected_change = _reference(grid, image, factor, flat, 5.0)

    assert full.dtype == np.int32
    np.testing.assert_array_equal(full, expected_full)
    np.testing.assert_array_equal(change[1:], expected_change[1:])
    if height % factor == 0 and width % factor == 0:
        areas = np.bincount(full.ravel(), minlength=7)[1:]
        np.testing.assert_array_equal(
            areas, factor**2 * np.bincount(labels.ravel(), minlength=7)[1:] + change[1:]
        )
