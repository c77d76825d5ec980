"""Classical nuclei segmentation, robust to what apoptosis screens show, at any scale.

Every size follows the *nucleus scale* ``d``, the typical nucleus diameter in pixels (measured
per plate by :func:`screenlib.analysis.scale.estimate_nucleus_scale`, or on the image itself);
the pixel size matters only for settings given in µm. The work is done on a grid of blocks
where a nucleus spans 7-14 grid pixels, and every threshold has a physical or statistical
meaning:

1. block-average to the grid, smooth (0.07 d) and remove a smooth local background (grey
   opening of block means a few nucleus diameters wide);
2. foreground: above a *noise floor* (5 noise SDs from sigma-clipped statistics; no global
   Otsu, so a few very bright nuclei cannot lift it above dim ones) and above 40 % of the
   brightest pixel in a window 0.7 nucleus diameters wide (a local threshold: necks between
   touching nuclei open, and a bright nucleus cannot hide a dim one, even one it touches);
   components with no pixel above that threshold in a window 1.3 diameters wide are the glow
   of stained cytoplasm around brighter nuclei and go;
3. components over 0.6 typical nuclei are split by a watershed of the distance transform of
   their bright core (above half the local peak), seeds at least 0.3 d apart; pieces merge
   back unless the neck between them is narrower than 65 % of the smaller one's inscribed
   radius when together they are one typical nucleus, more the larger they are together
   (any waist splits pieces of 1.8 typical nuclei), or the fainter is under 75 % of the
   brighter; pieces under two typical nuclei together whose joint outline has no waist stay
   one: pairs split, lobes, textured halves and smooth elongated nuclei do not;
4. every nucleus gets its own edge, half its median level, so bright blurred nuclei are not
   inflated by their halo while dim ones keep their extent; holes are filled; objects under
   30 % of the typical nucleus' level (faint cytoplasm) are dropped unless they stand out
   from their own surroundings as a dim nucleus on a dark background does;
5. clusters of small pieces within 0.2 d (a fragmented apoptotic nucleus) become one object;
   objects outside the size limits (0.1-6.4 typical nuclei, or the µm² settings) go;
6. :func:`refine_outlines` redraws the outlines at full resolution, visiting the pixels of
   outline blocks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from screenlib.analysis.correction import block_mean, smooth_background, upsample_nearest
from screenlib.analysis.measure import LabelIndex, index_labels, subset_index
from screenlib.analysis.regions import labels_within
from screenlib.analysis.scale import TYPICAL_NUCLEUS_DIAMETER_UM, estimate_nucleus_scale
from screenlib.analysis.windows import window_max
from screenlib.settings import SegmentationSettings

#: nuclei are segmented on a grid where the typical nucleus spans about this many pixels
COARSE_DIAMETER_PX = 7.0
#: noise threshold: coarse pixels this many noise standard deviations above background
NOISE_THRESHOLD_SIGMAS = 5.0
#: a nucleus' edge lies at this fraction of its own bright level (background-corrected 90th
#: percentile): the half-maximum edge of a blurred object, robust to bright chromatin spots
EDGE_FRACTION_OF_PEAK = 0.5
EDGE_PERCENTILE = 50.0
#: seeds for splitting clumps come from pixels above this fraction of the local peak: the
#: half-maximum core, as for edges. The valley between two touching nuclei mostly lies under
#: half their peak even where blur or the grid lifts it over a third (at 0.3, 17 of 125
#: BBBC038 nuclei stayed merged in pairs, 10 at 0.5)
SPLIT_CORE_FRACTION_OF_PEAK = 0.5
#: two touching pieces stay one nucleus unless the neck between them (the distance map's
#: saddle) is narrower than this fraction of the smaller piece's inscribed radius when
#: together they are one typical nucleus, a fraction that grows by ``NECK_RATIO_PER_LOG_SIZE``
#: per e-fold of their joint size, up to ``MAX_NECK_RATIO`` (pairs of 1.8 typical nuclei
#: split at any waist, a piece without one never; a small lobe of an ordinary nucleus needs
#: a deep waist): fitted on split decisions in real (mnfinder, BBBC038) and simulated fields
#: together, checked end to end on both
NECK_RATIO = 0.65
NECK_RATIO_PER_LOG_SIZE = 0.6
MAX_NECK_RATIO = 0.95
#: ... and two pieces whose mean levels differ, the fainter under this fraction of the
#: brighter, are two nuclei whatever their neck: texture varies less within one nucleus than
#: DNA content and condensation between nuclei
SAME_NUCLEUS_LEVEL_RATIO = 0.75
#: ... but two pieces whose joint outline has no waist (the distance to the clump's outline
#: dips by under 10 % between them, below the smaller one's peak) are one nucleus when
#: together they are under two typical nuclei: a dark band of texture across one nucleus cuts
#: its bright core in two, not its outline (BBBC038 F1 0.874 -> 0.898, simulated fields
#: within 0.007, all above the earlier kernel)
OUTLINE_NECK_RATIO = 0.9
OUTLINE_MAX_NUCLEI = 2.0
#: a pixel is foreground when above this fraction of the brightest pixel within
#: a window ``LOCAL_WINDOW_DIAMETERS`` nucleus diameters wide (and above the noise floor). The
#: window reaches a third of a diameter each way, so the core of a bright nucleus, half a
#: diameter from its edge, darkens only the rim of a dim nucleus it touches; a window one
#: diameter wide cut such dim nuclei in two (simulated bright-among-dim F1 0.979 -> 0.986 at
#: 0.7, every simulated scenario up, real sources within 0.01)
LOCAL_FRACTION_OF_PEAK = 0.4
LOCAL_WINDOW_DIAMETERS = 0.7
#: ... and a component none of whose pixels passes the same test in a window
#: ``ANCHOR_WINDOW_DIAMETERS`` wide lies wholly in the glow around brighter nuclei (stained
#: cytoplasm): it is dropped. A dim nucleus beside a bright one reaches beyond that glow.
#: (mnfinder, 49 images: F1 0.908 with the narrow window alone, 0.918 with the anchor; the
#: simulated scenarios keep the narrow window's gains)
ANCHOR_WINDOW_DIAMETERS = 1.3
#: only to size the search in a field with no nucleus to measure and no pixel size
DEFAULT_PIXEL_SIZE_UM = 0.65
#: objects fainter than this fraction of the typical nucleus' bright level are not nuclei
#: (faint cytoplasm, autofluorescence, out-of-focus cells); dim nuclei are rarely under a
#: third of the typical one (bright condensed nuclei do not set the typical level)
FAINT_FRACTION = 0.3
#: ... unless they stand out from their own surroundings as a nucleus does: a level over
#: ``DIM_FRACTION`` of the typical one and over ``DIM_CONTRAST`` times the mean of a ring
#: ``DIM_RING_DIAMETERS`` wide around them, and at least ``DIM_MIN_AREA_NUCLEI`` typical
#: nuclei in area. Dim nuclei lie on a dark background (low-expressing H2B-GFP cells at a
#: fifth of the typical level: Cell Tracking Challenge HeLa F1 0.905 -> 0.945); faint
#: cytoplasm lies on more cytoplasm and stays dropped
DIM_FRACTION = 0.1
DIM_CONTRAST = 5.0
DIM_RING_DIAMETERS = 0.15
DIM_MIN_AREA_NUCLEI = 0.4
#: smoothing sigma as a fraction of the nucleus diameter (0.7 µm for a 10 µm nucleus)
SMOOTHING_DIAMETERS = 0.07
#: default area limits in typical nucleus areas (8 and 500 µm² for a 10 µm nucleus)
MIN_AREA_NUCLEI = 0.1
MAX_AREA_NUCLEI = 6.4
#: objects smaller than this many typical nuclei, closer than the gap below, are fragments of
#: one apoptotic nucleus (karyorrhexis) and are merged into one object
FRAGMENT_MAX_AREA_NUCLEI = 0.4
FRAGMENT_GAP_DIAMETERS = 0.2
#: components larger than this many typical nuclei may hold several (pairs of small ones too)
CLUMP_AREA_NUCLEI = 0.6
#: two seeds must lie at least this many nucleus diameters apart
SEED_SEPARATION_DIAMETERS = 0.3


def background_noise(values: np.ndarray, iterations: int = 4) -> tuple[float, float]:
    """Background level and noise (std) of ``values`` by sigma clipping from above.

    Foreground pixels lie above the background; clipping them iteratively leaves the background
    distribution even when objects cover most of the field.
    """
    sample = values.ravel()
    if sample.size > 30_000:
        # a regular subsample is plenty for two robust statistics
        sample = sample[:: sample.size // 30_000]
    level = float(np.median(sample))
    spread = float(1.4826 * np.median(np.abs(sample - level)))
    previous_size = sample.size
    for _ in range(iterations):
        kept = sample[sample < level + 3.0 * max(spread, 1e-6)]
        # the kept values are all those below a bound: the same count is the same set
        if kept.size < 100 or kept.size == previous_size:
            break
        previous_size = kept.size
        level = float(np.median(kept))
        spread = float(1.4826 * np.median(np.abs(kept - level)))
    return level, max(spread, 1e-6)


def _pack_boxes(heights: np.ndarray, widths: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """Shelf-pack boxes (each with a 1-pixel margin) into rows of ``width``.

    Returns the top-left corners (rows, columns) of every box and the mosaic's shape.
    """
    row_list = [0] * heights.size
    column_list = [0] * heights.size
    row = column = shelf_height = 0
    # plain Python integers: a loop over NumPy scalars costs several times more
    box_heights, box_widths = heights.tolist(), widths.tolist()
    for k in np.argsort(-heights, kind="stable").tolist():
        height, box_width = box_heights[k] + 2, box_widths[k] + 2
        if column + box_width > width:
            row, column, shelf_height = row + shelf_height, 0, 0
        row_list[k], column_list[k] = row, column
        column += box_width
        shelf_height = max(shelf_height, height)
    rows = np.array(row_list, dtype=np.int64)
    columns = np.array(column_list, dtype=np.int64)
    shape = (int((rows + heights).max()) + 2, int((columns + widths).max()) + 2)
    return rows, columns, shape


def _split_clumps(
    components: np.ndarray,
    index: LabelIndex,
    signal: np.ndarray,
    single_area: float,
    min_separation: float,
) -> tuple[np.ndarray, int]:
    """Split components that hold several nuclei by a distance-transform watershed.

    Every component larger than ``CLUMP_AREA_NUCLEI`` typical nuclei is a candidate (so pairs
    of small nuclei are too). Its distance transform is taken on its bright core (pixels above
    half the local peak intensity, holes filled, so blur halos do not fill the necks and
    dark texture inside a nucleus makes no seeds); the maxima at least ``min_separation``
    apart are the seeds, and a watershed of the whole component from them draws the dividing
    lines. Pieces then merge back unless the neck between them is narrow for the smaller
    one's inscribed radius and their joint size (:func:`_merge_wide_necks`), so large or
    irregular single nuclei are not cut. The candidates' boxes (grown by
    the seed spacing, so windows see each component's surroundings) are first packed side by
    side into one small mosaic, so every step runs on their pixels only. The distance is the
    octagonal chamfer distance (mean of city-block and chessboard), within a few per cent of
    the Euclidean one and several times faster.

    Returns labels where unsplit components keep their ids and the pieces of clumps take ids
    above ``n_components`` (the ids of split clumps are left unused), and the highest id.
    """
    n_components = index.n_labels
    is_clump = index.counts > CLUMP_AREA_NUCLEI * single_area
    if not is_clump.any():
        return components, n_components

    # the clumps' pixels (still grouped by clump) and their boxes
    clumps = subset_index(index, is_clump[index.object_ids - 1])
    pixels = clumps.pixels
    first, sizes = clumps.starts[is_clump], clumps.counts[is_clump]
    height, width = components.shape
    y, x = np.divmod(pixels, width)
    margin = int(round(min_separation))
    clump_top, clump_bottom = np.minimum.reduceat(y, first), np.maximum.reduceat(y, first) + 1
    clump_left, clump_right = np.minimum.reduceat(x, first), np.maximum.reduceat(x, first) + 1
    top, bottom = np.maximum(clump_top - margin, 0), np.minimum(clump_bottom + margin, height)
    left, right = np.maximum(clump_left - margin, 0), np.minimum(clump_right + margin, width)
    box_heights, box_widths = bottom - top, right - left
    rows, columns, mosaic_shape = _pack_boxes(
        box_heights, box_widths, width=max(int(box_widths.max()) + 2, 512)
    )

    # mosaic position of every clump pixel: its offset in its box plus the box's corner
    which = np.repeat(np.arange(first.size), sizes)
    mosaic_pixels = (y - top[which] + rows[which] + 1) * mosaic_shape[1] + (
        x - left[which] + columns[which] + 1
    )
    clump_index = np.zeros(mosaic_shape, dtype=np.int32)  # 1..K on the pixels of clump k
    clump_index.ravel()[mosaic_pixels] = which + 1
    mask = clump_index > 0
    mosaic_signal = np.zeros(mosaic_shape, dtype=np.float32)
    for k in range(first.size):
        row, column = int(rows[k]) + 1, int(columns[k]) + 1
        mosaic_signal[row : row + box_heights[k], column : column + box_widths[k]] = signal[
            top[k] : bottom[k], left[k] : right[k]
        ]

    # seeds come from the clump's bright core: pixels above a fraction of the local peak
    # (within about one nucleus), so blur halos do not fill the necks between nuclei
    local_peak = window_max(mosaic_signal, int(round(2 * min_separation)) | 1)
    core = mask & (mosaic_signal > SPLIT_CORE_FRACTION_OF_PEAK * local_peak)
    core = _fill_holes(core)
    distance = _chamfer_distance(core)
    local_max = window_max(distance, 2 * margin + 1)
    seeds = (distance == local_max) & (distance > 0) & mask
    markers, n_markers = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))
    # the clumps' own boxes in the mosaic: only those with two or more seeds need a watershed
    inner_boxes = (
        clump_top - top + rows + 1,
        clump_left - left + columns + 1,
        clump_bottom - clump_top,
        clump_right - clump_left,
    )
    pieces, outline_distance = _flood_clumps(distance, markers, n_markers, clump_index, inner_boxes)
    pieces, n_markers = _merge_wide_necks(
        pieces, distance, mosaic_signal, n_markers, single_area, outline_distance
    )
    # a clump without a seed (a thin, elongated object) stays one object
    orphan = mask & (pieces == 0)
    n_orphans = 0
    if orphan.any():
        orphan_ids, n_orphans = ndi.label(orphan)
        pieces[orphan] = orphan_ids[orphan] + n_markers
    labels = components.astype(np.int32, copy=True)
    labels.ravel()[pixels] = pieces.ravel()[mosaic_pixels] + n_components
    return labels, n_components + n_markers + n_orphans


def _chamfer_distance(mask: np.ndarray) -> np.ndarray:
    """Octagonal chamfer distance to the background (mean of city-block and chessboard)."""
    distance = ndi.distance_transform_cdt(mask, metric="taxicab").astype(np.float32)
    distance += ndi.distance_transform_cdt(mask, metric="chessboard")
    distance *= 0.5
    return distance


def _pair_saddles(
    pieces: np.ndarray, maps: tuple[np.ndarray, ...], n_pieces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touching pairs of ``pieces`` and, on each map, their saddles and the pieces' peaks.

    Returns the pairs as keys ``low * (n_pieces + 1) + high`` (sorted), the saddles (one row
    per map: the highest value along the pair's shared boundary, each boundary step taking
    the lower of its two sides) and the peaks (one row per map, indexed by piece id).
    """
    peaks = np.zeros((len(maps), n_pieces + 1), dtype=np.float32)  # maps are >= 0
    inside = np.flatnonzero(pieces.ravel() > 0)
    piece_of = pieces.ravel()[inside]
    for row, values in zip(peaks, maps, strict=True):
        np.maximum.at(row, piece_of, values.ravel()[inside])
    firsts, seconds, steps = [], [], []
    for a, b, before, after in (
        (pieces[:, :-1], pieces[:, 1:], np.s_[:, :-1], np.s_[:, 1:]),
        (pieces[:-1], pieces[1:], np.s_[:-1], np.s_[1:]),
    ):
        boundary = (a > 0) & (b > 0) & (a != b)
        firsts.append(a[boundary])
        seconds.append(b[boundary])
        steps.append([np.minimum(m[before][boundary], m[after][boundary]) for m in maps])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    low, high = np.minimum(first, second).astype(np.int64), np.maximum(first, second)
    keys, inverse = np.unique(low * (n_pieces + 1) + high, return_inverse=True)
    saddles = np.zeros((len(maps), keys.size), dtype=np.float32)
    for k, row in enumerate(saddles):
        np.maximum.at(row, inverse, np.concatenate([step[k] for step in steps]))
    return keys, saddles, peaks


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes (background not connected to the image edge) filled."""
    outside, _ = ndi.label(~mask)
    border_ids = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
    is_outside = np.zeros(int(outside.max()) + 1, dtype=bool)
    is_outside[border_ids] = True
    is_outside[0] = False
    return mask | ~is_outside[outside]


def _merge_wide_necks(
    pieces: np.ndarray,
    distance: np.ndarray,
    signal: np.ndarray,
    n_pieces: int,
    single_area: float,
    outline_distance: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Merge touching watershed pieces whose shared boundary is not a real neck.

    The saddle of two pieces is the highest distance value on their boundary; they are one
    nucleus when it exceeds a fraction of the smaller piece's peak distance (inscribed
    radius): ``NECK_RATIO`` when together they are one typical nucleus (``single_area``),
    plus ``NECK_RATIO_PER_LOG_SIZE`` per e-fold of their joint size, at most
    ``MAX_NECK_RATIO`` (a smooth elongated nucleus has no waist at all), and when their mean
    levels in ``signal`` are alike (``SAME_NUCLEUS_LEVEL_RATIO``). A shallow waist splits a
    pair too big to be one nucleus, and so does a step in brightness; a lobe or textured half
    of one nucleus stays. Pieces also stay one when the clump's outline has no waist between
    them (the saddle of ``outline_distance``, the distance to the clump's edge, over
    ``OUTLINE_NECK_RATIO`` of the smaller one's peak) and together they are under
    ``OUTLINE_MAX_NUCLEI`` typical nuclei. Returns the pieces renumbered 1..M and M.
    """
    if n_pieces < 2:
        return pieces, n_pieces
    keys, saddles, peaks = _pair_saddles(pieces, (distance, outline_distance), n_pieces)
    if keys.size == 0:
        return pieces, n_pieces
    pair_low, pair_high = keys // (n_pieces + 1), keys % (n_pieces + 1)
    areas = np.bincount(pieces.ravel(), minlength=n_pieces + 1)
    together = (areas[pair_low] + areas[pair_high]) / single_area
    ratio = np.minimum(NECK_RATIO + NECK_RATIO_PER_LOG_SIZE * np.log(together), MAX_NECK_RATIO)
    wide = saddles[0] > ratio * np.minimum(peaks[0, pair_low], peaks[0, pair_high])
    inside = pieces > 0
    level = np.bincount(pieces[inside], signal[inside], minlength=n_pieces + 1) / np.maximum(
        areas, 1
    )
    fainter = np.minimum(level[pair_low], level[pair_high])
    wide &= fainter >= SAME_NUCLEUS_LEVEL_RATIO * np.maximum(level[pair_low], level[pair_high])
    # no waist in the outline: a dark band across one nucleus cut its core, not its outline
    no_waist = saddles[1] > OUTLINE_NECK_RATIO * np.minimum(peaks[1, pair_low], peaks[1, pair_high])
    wide |= no_waist & (together < OUTLINE_MAX_NUCLEI)
    if not wide.any():
        return pieces, n_pieces
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(int(wide.sum())), (pair_low[wide], pair_high[wide])),
        shape=(n_pieces + 1, n_pieces + 1),
    )
    n_groups, group = connected_components(graph, directed=False)
    # group 0 is the background's (piece 0 has no edges): renumber the rest 1..M
    new_ids = np.zeros(n_groups, dtype=np.int32)
    others = np.unique(group[1:])
    new_ids[others] = np.arange(1, others.size + 1, dtype=np.int32)
    new_ids[group[0]] = 0
    return new_ids[group][pieces], int(others.size)


def _flood_clumps(
    distance: np.ndarray,
    markers: np.ndarray,
    n_markers: int,
    clump_index: np.ndarray,
    boxes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Watershed of ``-distance`` from ``markers`` within each clump of ``clump_index``.

    A clump with one seed is that seed's piece, one without stays 0; only clumps with two or
    more seeds are flooded, repacked into a smaller mosaic from their ``boxes`` (top, left,
    height, width in ``clump_index``). Flooding is local to each clump, so this is the watershed
    of the whole mosaic up to the order in which pixels of equal value are taken (ties).
    Also returns the distance to the clump's outline on the flooded clumps (0 elsewhere).
    """
    n_clumps = boxes[0].size
    seed_pixels = np.flatnonzero(markers != 0)
    clump_of_marker = np.zeros(n_markers + 1, dtype=np.int64)
    clump_of_marker[markers.ravel()[seed_pixels]] = clump_index.ravel()[seed_pixels]
    n_seeds = np.bincount(clump_of_marker[1:], minlength=n_clumps + 1)
    only_seed = np.zeros(n_clumps + 1, dtype=np.int32)
    single = n_seeds[clump_of_marker] == 1
    single[0] = False
    only_seed[clump_of_marker[single]] = np.flatnonzero(single)
    pieces = only_seed[clump_index]
    outline_distance = np.zeros(clump_index.shape, dtype=np.float32)
    several = np.flatnonzero(n_seeds[1:] >= 2)  # 0-based clump numbers
    if several.size == 0:
        return pieces, outline_distance
    tops, lefts, heights, widths = (box[several] for box in boxes)
    rows, columns, shape = _pack_boxes(heights, widths, width=max(int(widths.max()) + 2, 256))
    sub_distance = np.zeros(shape, dtype=np.float32)
    sub_markers = np.zeros(shape, dtype=np.int32)
    sub_mask = np.zeros(shape, dtype=bool)
    places = []
    for k, number in enumerate(several.tolist()):
        source = (slice(tops[k], tops[k] + heights[k]), slice(lefts[k], lefts[k] + widths[k]))
        target = (
            slice(rows[k] + 1, rows[k] + 1 + heights[k]),
            slice(columns[k] + 1, columns[k] + 1 + widths[k]),
        )
        sub_mask[target] = clump_index[source] == number + 1
        sub_distance[target] = distance[source]
        sub_markers[target] = markers[source]
        places.append((source, target))
    flooded = watershed(-sub_distance, sub_markers, mask=sub_mask)
    sub_outline = _chamfer_distance(sub_mask)
    for source, target in places:
        pieces[source] = np.where(sub_mask[target], flooded[target], pieces[source])
        outline_distance[source] = np.where(
            sub_mask[target], sub_outline[target], outline_distance[source]
        )
    return pieces, outline_distance


@dataclass(frozen=True)
class GridSegmentation:
    """Nuclei found on a grid of blocks, with each nucleus' edge level for the full image.

    ``labels`` (int32, grid); ``baseline``: the grid's background (and noise level) map to
    subtract from intensities; ``edge_levels[k]``: nucleus ``k``'s edge, the level above the
    baseline where its outline lies (index 0 unused); ``floor``: the noise floor above the
    baseline (a number or a grid map); ``areas[k]``: nucleus ``k``'s grid pixels (index 0
    unused; None: counted from ``labels`` where needed).
    """

    labels: np.ndarray
    baseline: np.ndarray
    edge_levels: np.ndarray
    floor: float | np.ndarray
    areas: np.ndarray | None = None


def refine_outlines(
    grid: GridSegmentation,
    image: np.ndarray,
    factor: int,
    flat: np.ndarray | None = None,
    offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution labels from grid labels: outlines redrawn pixel by pixel.

    Only the blocks on an outline (a block whose 3 x 3 neighbourhood holds another label) are
    revisited: each of their pixels goes to the block's nucleus (or, for a background block,
    the neighbouring one) when its value, less the baseline, lies above that nucleus' edge
    level and the noise floor. Blocks inside nuclei and in the background keep their
    label, so the cost follows the outlines' length, not the image's size.

    Parameters
    ----------
    grid
        From :func:`segment_nuclei_grid` on ``block_mean(image, factor)``.
    image
        The full-resolution nuclear image (any dtype).
    factor
        Block size of the grid.
    flat
        Flat-field profile the grid image was divided by (full resolution), or None.
    offset
        Camera offset removed from the grid image.

    Returns
    -------
    labels : ndarray of int32
        Full-resolution labels.
    area_change : ndarray of int64
        Pixels each label gained (or lost) against ``factor**2`` per grid pixel (index 0
        unused), so areas follow without counting the full image.
    """
    shape = image.shape
    labels = grid.labels
    full = upsample_nearest(labels, factor, shape).astype(np.int32, copy=False)
    n_labels = int(labels.max())
    change = np.zeros(n_labels + 1, dtype=np.int64)
    if factor == 1 or n_labels == 0:
        return full, change
    compact, highest, lowest = labels_within(labels, 1)
    outline = (highest != compact) | ((compact > 0) & (lowest != compact))
    blocks = np.flatnonzero(outline)
    own = labels.ravel()[blocks]
    candidate = np.where(own > 0, own, highest.ravel()[blocks]).astype(np.int32)
    level = grid.edge_levels[candidate]
    if np.ndim(grid.floor):
        level = np.maximum(level, np.asarray(grid.floor).ravel()[blocks])
    else:
        level = np.maximum(level, np.float32(grid.floor))
    level += grid.baseline.ravel()[blocks]
    # every pixel of an outline block, one row per position (dy, dx) in the block: one gather
    # of the full image, no full-size temporaries
    block_y, block_x = np.divmod(blocks, labels.shape[1])
    corner = block_y * factor * shape[1] + block_x * factor
    dy, dx = np.divmod(np.arange(factor * factor), factor)
    pixels = corner[None, :] + (dy * shape[1] + dx)[:, None]
    inside = None
    if shape[0] % factor or shape[1] % factor:
        # blocks of the last row or column reach past the image's edge
        inside = (block_y[None, :] * factor + dy[:, None] < shape[0]) & (
            block_x[None, :] * factor + dx[:, None] < shape[1]
        )
        pixels = np.where(inside, pixels, 0)
    values = np.asarray(image).ravel()[pixels].astype(np.float32)
    values -= np.float32(offset)
    if flat is not None:
        values /= np.asarray(flat).ravel()[pixels]
    above = values > level
    if inside is not None:
        above &= inside
    n_inside = factor * factor if inside is None else inside.sum(axis=0)
    n_above = above.sum(axis=0)
    # pixels gained (above the edge) less pixels of the block's own label
    change += np.bincount(candidate, weights=n_above, minlength=n_labels + 1).astype(np.int64)
    change[0] += int(np.sum(n_inside - n_above))
    if inside is None:
        change -= factor * factor * np.bincount(own, minlength=n_labels + 1)
    else:
        change -= np.bincount(own, weights=n_inside, minlength=n_labels + 1).astype(np.int64)
    new = np.where(above, candidate, 0)
    # a small nucleus whose every pixel fell under its edge level keeps its blocks
    areas = grid.areas if grid.areas is not None else np.bincount(labels.ravel())
    vanished = change + factor**2 * areas[: n_labels + 1] <= 0
    vanished[0] = False
    if vanished.any():
        keep_own = vanished[own]
        kept_own = np.broadcast_to(keep_own, above.shape)
        if inside is not None:
            kept_own = kept_own & inside
        kept_count = kept_own.sum(axis=0)
        change += np.bincount(own, weights=kept_count, minlength=n_labels + 1).astype(np.int64)
        change -= np.bincount(new[kept_own], minlength=n_labels + 1)
        new = np.where(keep_own, own, new)
    if inside is None:
        full.ravel()[pixels] = new
    else:
        full.ravel()[pixels[inside]] = new[inside]
    return full, change


def segment_nuclei(
    nuclear_image: np.ndarray,
    pixel_size_um: float | None = None,
    settings: SegmentationSettings | None = None,
    *,
    nucleus_diameter_px: float | None = None,
) -> np.ndarray:
    """Segment nuclei in one nuclear-stain image.

    Parameters
    ----------
    nuclear_image
        ``(Y, X)`` image of the nuclear stain (camera offset removed; background need not be).
    pixel_size_um
        Pixel size in micrometres, or None when unknown. Only µm settings need it.
    settings
        Segmentation settings; defaults when None.
    nucleus_diameter_px
        The typical nucleus diameter in pixels (e.g. measured per plate with
        :func:`screenlib.analysis.scale.estimate_nucleus_scale`); when None it comes from the
        settings or is measured on this image (:func:`nucleus_diameter`).

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)
        0 = background, 1..N = nuclei.

    Examples
    --------
    >>> image = np.zeros((64, 64), np.float32)
    >>> image[10:22, 10:22] = 100; image[40:52, 30:44] = 60
    >>> int(segment_nuclei(image, nucleus_diameter_px=13).max())
    2
    """
    settings = settings or SegmentationSettings()
    image = np.asarray(nuclear_image)
    if image.ndim != 2:
        raise ValueError(f"nuclear_image must be 2-D (Y, X), got shape {image.shape}")
    diameter, _ = nucleus_diameter(image, pixel_size_um, settings, nucleus_diameter_px)
    factor = grid_factor(diameter)
    grid = segment_nuclei_grid(
        block_mean(image, factor), factor, diameter, settings, pixel_size_um=pixel_size_um
    )
    return refine_outlines(grid, image, factor)[0]


def nucleus_diameter(
    nuclear_image: np.ndarray | None,
    pixel_size_um: float | None,
    settings: SegmentationSettings,
    measured_px: float | None = None,
) -> tuple[float, str]:
    """The typical nucleus diameter (pixels) to segment with, and where it came from.

    In order: the settings' ``nucleus_diameter_px``; their ``nucleus_diameter_um`` when the
    pixel size is known; ``measured_px`` (the plate's measured scale); else measured on
    ``nuclear_image`` itself.
    """
    if settings.nucleus_diameter_px is not None:
        return float(settings.nucleus_diameter_px), "settings (segmentation.nucleus_diameter_px)"
    if settings.nucleus_diameter_um is not None and pixel_size_um:
        return (
            float(settings.nucleus_diameter_um / pixel_size_um),
            "settings (segmentation.nucleus_diameter_um / pixel size)",
        )
    if measured_px is not None:
        if not measured_px > 0:
            raise ValueError(f"nucleus diameter must be positive, got {measured_px} px")
        return float(measured_px), "measured per plate"
    if nuclear_image is None:
        raise ValueError("no nucleus diameter: give one or an image to measure it on")
    try:
        scale = estimate_nucleus_scale([nuclear_image])
    except ValueError:
        # nothing nucleus-like in the field: any scale finds (next to) nothing, and QC says so
        fallback = TYPICAL_NUCLEUS_DIAMETER_UM / (pixel_size_um or DEFAULT_PIXEL_SIZE_UM)
        return fallback, "no nucleus found to measure; typical size assumed"
    return scale.diameter_px, f"measured on the field: {scale}"


def grid_factor(diameter_px: float) -> int:
    """Block size of the grid nuclei are segmented on (typical nucleus ~7-14 grid pixels)."""
    if not diameter_px > 0:
        raise ValueError(f"nucleus diameter must be positive, got {diameter_px} px")
    return max(1, int(diameter_px // COARSE_DIAMETER_PX))


def area_limits_px(
    diameter_px: float, pixel_size_um: float | None, settings: SegmentationSettings
) -> tuple[float, float]:
    """Smallest and largest nucleus area (full-resolution pixels): the settings' µm² limits
    when given and the pixel size is known, else ``MIN_AREA_NUCLEI``/``MAX_AREA_NUCLEI``
    typical nucleus areas."""
    typical = np.pi / 4.0 * diameter_px**2
    low, high = MIN_AREA_NUCLEI * typical, MAX_AREA_NUCLEI * typical
    if pixel_size_um:
        if settings.min_area_um2 is not None:
            low = settings.min_area_um2 / pixel_size_um**2
        if settings.max_area_um2 is not None:
            high = settings.max_area_um2 / pixel_size_um**2
    return low, high


def segment_nuclei_grid(
    grid_image: np.ndarray,
    factor: int,
    diameter_px: float,
    settings: SegmentationSettings | None = None,
    noise_scale: np.ndarray | None = None,
    pixel_size_um: float | None = None,
) -> np.ndarray:
    """Segment nuclei on a block-averaged image (the work behind :func:`segment_nuclei`).

    Parameters
    ----------
    grid_image
        ``factor`` x ``factor`` block means of the nuclear image (float32), see
        :func:`grid_factor` and :func:`screenlib.analysis.correction.block_mean`.
    factor
        Block size in full-resolution pixels.
    diameter_px
        Typical nucleus diameter in full-resolution pixels (see :func:`nucleus_diameter`).
    settings
        As in :func:`segment_nuclei`.
    noise_scale
        Relative noise level per grid pixel (median 1), e.g. the inverse of the flat-field
        profile the image was divided by: flat-field correction amplifies the noise of dim
        corners, and a single noise threshold would turn it into objects there.
    pixel_size_um
        Pixel size, or None when unknown (µm settings apply only when it is known).

    Returns
    -------
    GridSegmentation
        Labels on the grid, and what :func:`refine_outlines` needs to draw them at full
        resolution.
    """
    settings = settings or SegmentationSettings()
    diameter = diameter_px / factor
    coarse = np.asarray(grid_image, dtype=np.float32)
    if settings.smoothing_sigma_um is not None and pixel_size_um:
        smoothing = settings.smoothing_sigma_um / pixel_size_um / factor
    else:
        smoothing = SMOOTHING_DIAMETERS * diameter
    if smoothing > 0.6:
        # block averaging already smooths by about half a grid pixel
        coarse = ndi.gaussian_filter(coarse, np.sqrt(smoothing**2 - 0.25), mode="nearest")
    background = smooth_background(coarse, block_px=int(round(diameter)), window_blocks=5)
    signal = coarse - background
    if noise_scale is None:
        level, noise = background_noise(signal)
        signal -= level
        floor = NOISE_THRESHOLD_SIGMAS * noise
    else:
        noise_scale = np.asarray(noise_scale, dtype=np.float32)
        level, noise = background_noise(signal / noise_scale)
        signal -= level * noise_scale
        floor = NOISE_THRESHOLD_SIGMAS * noise * noise_scale
    # a local threshold above the noise floor: a fraction of the brightest value within a
    # third of a nucleus diameter, so necks between touching nuclei open and a bright nucleus
    # cannot raise the threshold of a dim one beside it
    window = 2 * int(round(LOCAL_WINDOW_DIAMETERS * diameter / 2.0)) + 1
    local_peak = window_max(signal, window)
    foreground = (signal > floor) & (signal > LOCAL_FRACTION_OF_PEAK * local_peak)
    components, n_components = ndi.label(foreground)
    index = index_labels(components, n_components)
    components, index = _drop_unanchored(components, index, signal, local_peak, window, diameter)
    if settings.split_touching and n_components:
        components, n_components = _split_clumps(
            components,
            index,
            signal,
            single_area=np.pi / 4.0 * diameter**2,
            min_separation=SEED_SEPARATION_DIAMETERS * diameter,
        )
    # every later step keeps or drops pixels of the components: their pixels are all it visits
    foreground = index.pixels
    labels, bright = _refine_edges(signal, components, n_components, floor, foreground)
    labels = _drop_faint(labels, bright, foreground, signal, diameter)
    labels = _merge_fragments(
        labels,
        small_area=FRAGMENT_MAX_AREA_NUCLEI * np.pi / 4.0 * diameter**2,
        gap_px=max(1, int(round(FRAGMENT_GAP_DIAMETERS * diameter))),
        foreground=foreground,
    )
    low, high = area_limits_px(diameter_px, pixel_size_um, settings)
    labels, new_ids, areas = _filter_sizes(labels, low / factor**2, high / factor**2, foreground)
    edges = np.zeros(areas.size, dtype=np.float32)
    edges[new_ids[1:]] = np.maximum(EDGE_FRACTION_OF_PEAK * bright[1 : new_ids.size], 0)
    edges[0] = np.inf
    baseline = level if noise_scale is None else level * noise_scale
    return GridSegmentation(labels, background + baseline, edges, floor, areas)


def _drop_unanchored(
    components: np.ndarray,
    index: LabelIndex,
    signal: np.ndarray,
    local_peak: np.ndarray,
    window: int,
    diameter: float,
) -> tuple[np.ndarray, LabelIndex]:
    """Drop the components wholly in the glow of brighter nuclei (stained cytoplasm): none of
    their pixels passes the local threshold in a window ``ANCHOR_WINDOW_DIAMETERS`` wide.
    ``local_peak`` is ``signal``'s maximum over the (narrower) ``window`` of the foreground
    test. Their ids stay unused."""
    if index.pixels.size == 0:
        return components, index
    wide = max(2 * int(round(ANCHOR_WINDOW_DIAMETERS * diameter / 2.0)) + 1, window)
    # the maximum over the wide window is the maximum of the narrow windows' maxima within it
    wide_peak = window_max(local_peak, wide - window + 1)
    values = signal.ravel()[index.pixels]
    passes = values > LOCAL_FRACTION_OF_PEAK * wide_peak.ravel()[index.pixels]
    has_anchor = np.bincount(index.object_ids[passes], minlength=index.n_labels + 1) > 0
    has_anchor[0] = True
    if has_anchor.all():
        return components, index
    dropped = ~has_anchor[index.object_ids]
    components = components.copy()
    components.ravel()[index.pixels[dropped]] = 0
    return components, subset_index(index, ~dropped)


def _refine_edges(
    signal: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    floor: float | np.ndarray,
    foreground: np.ndarray,
) -> np.ndarray:
    """Keep, per object, the pixels above a fraction of its own peak and above the noise
    floor (a number or a per-pixel map); fill holes. ``foreground`` holds the flat indices of
    all labelled pixels."""
    if n_labels == 0:
        return labels.astype(np.int32), np.zeros(1, dtype=np.float32)
    object_ids = labels.ravel()[foreground]
    values = signal.ravel()[foreground]
    # each object's level: a percentile of its pixels (one sort of id + value squeezed into
    # [0, 1) orders them by value within each object, as in measure.labelled_percentile)
    low = float(values.min()) if values.size else 0.0
    span = (float(values.max()) - low) * (1 + 1e-6) or 1.0 if values.size else 1.0
    keys = np.sort(object_ids + (values - low) / span)
    counts = np.bincount(object_ids, minlength=n_labels + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = counts > 0
    present[0] = False
    rank = starts[present] + (EDGE_PERCENTILE / 100.0 * (counts[present] - 1)).astype(np.int64)
    peaks = np.zeros(n_labels + 1, dtype=np.float32)
    peaks[present] = (keys[rank] - np.flatnonzero(present)) * span + low
    lowest = EDGE_FRACTION_OF_PEAK * peaks[object_ids]
    if np.ndim(floor):
        np.maximum(lowest, np.asarray(floor).ravel()[foreground], out=lowest)
    else:
        np.maximum(lowest, floor, out=lowest)
    kept = values > lowest
    keep = np.zeros(labels.shape, dtype=bool)
    keep.ravel()[foreground[kept]] = True
    # holes: removed pixels not connected to the outside (dark nucleoli, texture)
    outside, _ = ndi.label(~keep)
    border_ids = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
    is_outside = np.zeros(int(outside.max()) + 1, dtype=bool)
    is_outside[border_ids] = True
    is_outside[0] = False
    kept |= ~is_outside[outside.ravel()[foreground]]
    refined = np.zeros(labels.shape, dtype=np.int32)
    refined.ravel()[foreground[kept]] = object_ids[kept]
    return refined, peaks


def _drop_faint(
    labels: np.ndarray,
    bright: np.ndarray,
    foreground: np.ndarray,
    signal: np.ndarray,
    diameter: float,
) -> np.ndarray:
    """Remove objects fainter than ``FAINT_FRACTION`` of the typical nucleus.

    ``bright`` is each object's level (by id). The typical level is the median over objects
    weighted by their area, so many small specks do not set it and a few bright condensed
    nuclei do not either; only objects several times fainter than the typical nucleus go
    (faint cytoplasm, autofluorescence), so dim nuclei among bright ones stay. Of those, the
    nucleus-sized ones that stand out from their surroundings in ``signal`` (the grid image,
    nucleus ``diameter`` in grid pixels) stay too (:func:`_stand_out`).
    """
    object_ids = labels.ravel()[foreground]
    areas = np.bincount(object_ids, minlength=bright.size)[: bright.size].astype(np.float64)
    areas[0] = 0
    weights = areas.copy()
    if weights.sum() <= 0:
        return labels
    order = np.argsort(bright)
    cumulative = np.cumsum(weights[order])
    typical = bright[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)]
    faint = bright < FAINT_FRACTION * typical
    faint[0] = True
    if not faint[1:][areas[1:] > 0].any():
        return labels
    candidates = faint & (bright >= DIM_FRACTION * typical)
    candidates &= areas >= DIM_MIN_AREA_NUCLEI * np.pi / 4.0 * diameter**2
    candidates[0] = False
    if candidates.any():
        faint &= ~_stand_out(labels, candidates, bright, signal, diameter)
    refined = labels.copy()
    refined.ravel()[foreground] = np.where(faint[object_ids], 0, object_ids)
    return refined


def _stand_out(
    labels: np.ndarray,
    candidates: np.ndarray,
    bright: np.ndarray,
    signal: np.ndarray,
    diameter: float,
) -> np.ndarray:
    """Which ``candidates`` (by id) stand out from their surroundings as a nucleus does: level
    over ``DIM_CONTRAST`` times the mean ``signal`` in a ring around them."""
    only = np.where(candidates[labels], labels, 0).astype(np.int32)
    reach = 2 * max(1, int(round(DIM_RING_DIAMETERS * diameter))) + 1
    ring = window_max(only, reach)
    ring[labels > 0] = 0
    ids = ring.ravel()
    inside = ids > 0
    count = np.bincount(ids[inside], minlength=bright.size)[: bright.size]
    total = np.bincount(ids[inside], signal.ravel()[inside], minlength=bright.size)
    surround = total[: bright.size] / np.maximum(count, 1)
    return candidates & (bright > DIM_CONTRAST * np.maximum(surround, 0))


def _merge_fragments(
    labels: np.ndarray, small_area: float, gap_px: int, foreground: np.ndarray
) -> np.ndarray:
    """Merge clusters of small objects lying within ``gap_px`` of each other into one object.

    A fragmented apoptotic nucleus breaks into a few small bright pieces close together;
    counted one by one they would inflate the cell count. Only small objects are merged, and
    only with each other, so a fragment never joins a normal nucleus. ``foreground`` holds
    flat indices of (at least) every labelled pixel.
    """
    object_ids = labels.ravel()[foreground]
    areas = np.bincount(object_ids, minlength=1)
    is_small = areas < small_area
    is_small[0] = False
    if is_small.sum() < 2:
        return labels
    in_small = is_small[object_ids]
    small_pixels = foreground[in_small]
    small = np.zeros(labels.shape, dtype=np.uint8)
    small.ravel()[small_pixels] = 1
    clusters, _ = ndi.label(window_max(small, 2 * gap_px + 1))
    # every small object takes the id of its cluster's first object
    cluster_ids = clusters.ravel()[small_pixels]
    first_object = np.full(int(clusters.max()) + 1, np.iinfo(np.int32).max, dtype=np.int64)
    np.minimum.at(first_object, cluster_ids, object_ids[in_small])
    merged = labels.copy()
    merged.ravel()[small_pixels] = first_object[cluster_ids]
    return merged


def _filter_sizes(
    labels: np.ndarray, min_area: float, max_area: float, foreground: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop objects outside the area limits (grid pixels) and renumber 1..N (``foreground``
    as in :func:`_merge_fragments`); also returns the new id of every old one (0: dropped)
    and the area of every new one (index 0 unused)."""
    object_ids = labels.ravel()[foreground]
    area = np.bincount(object_ids, minlength=1)
    keep = (area >= min_area) & (area <= max_area)
    keep[0] = False
    new_ids = np.zeros(area.size, dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    filtered = np.zeros(labels.shape, dtype=np.int32)
    filtered.ravel()[foreground] = new_ids[object_ids]
    return filtered, new_ids, np.concatenate([[0], area[keep]])
