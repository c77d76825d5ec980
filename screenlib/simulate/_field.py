"""Render one synthetic fluorescence field (Hoechst / Annexin V / PI) with per-cell ground truth.

The image model, from object to camera:

1. **Cells** are drawn with a class (``viable``, ``early_apoptotic``, ``late_apoptotic``,
   ``necrotic``), a DNA content (G1 / S / G2), a nucleus shape (an ellipse whose radius is
   modulated by low-order harmonics, so boundaries are irregular) and a morphology:
   normal, *pyknotic* (condensed: 50-70 % of the area, 2-4x brighter Hoechst, smooth) or
   *fragmented* (karyorrhexis: 2-5 small bright fragments that share one truth label); about
   2 % of viable cells are in mitosis (a small, bright, elongated metaphase plate), which a
   morphology-only apoptosis call must not confuse with pyknosis.
2. **Placement**: free nuclei keep a gap from each other; a share of nuclei is attached to an
   already placed one (centre distance ~0.8-0.95 of the radii sum), which builds touching
   pairs and clusters. Where shapes overlap, the nucleus placed first keeps the pixels (nuclei
   press against each other), so the truth labels never overlap.
3. **Stains**: Hoechst fills the nucleus (chromatin texture from band-passed noise, a dome
   profile, cell-to-cell lognormal variation); Annexin V is a thin membrane ring a few pixels
   outside the nucleus edge (bright for early and late apoptotic cells, dim for viable and
   necrotic ones; late apoptotic cells also get diffuse cytoplasmic Annexin); PI fills the
   nucleus of late apoptotic and necrotic cells (viable and early apoptotic cells exclude it);
   ``caspase37`` (optional) fills the nucleus of early and late apoptotic cells. Marker levels
   are lognormal with a spread wide enough that the classes overlap a little, as real
   populations do.
4. **Optics and camera**: bleed-through between channels (FITC into PI by default), a Gaussian
   point-spread function plus optional defocus blur, a smooth vignetting profile that falls
   off towards the corners, Poisson shot noise, Gaussian read noise, a camera offset, and
   clipping to ``uint16``. A few tiny bright debris specks (smaller than any nucleus) are
   added without truth labels.

Class definitions used in the truth (flow-cytometry quadrants, Annexin V / PI):

========================  =========  =====  ==================================================
class                     Annexin V  PI     nucleus
========================  =========  =====  ==================================================
``viable``                dim        dim    normal size and texture
``early_apoptotic``       bright     dim    normal or pyknotic, rarely fragmented
``late_apoptotic``        bright     bright often pyknotic or fragmented
``necrotic``              dim        bright normal to swollen, dimmer and smoother Hoechst
========================  =========  =====  ==================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace

import numpy as np
import pandas as pd
from scipy import ndimage

from screenlib.errors import InputError
from screenlib.gating.classify import CELL_CLASSES
from screenlib.simulate._confounders import (
    clump_ids,
    debris_parameters,
    paint_fibre,
    paint_precipitate,
)

logger = logging.getLogger(__name__)

SUPPORTED_STAINS = ("hoechst", "annexin_v", "pi", "caspase37")

_DEFAULT_CLASS_FRACTIONS = {
    "viable": 0.85,
    "early_apoptotic": 0.06,
    "late_apoptotic": 0.05,
    "necrotic": 0.04,
}


@dataclass(frozen=True)
class CellModel:
    """Morphology and intensity model of the simulated cells.

    Intensities are in camera units (ADU) above the camera offset at the centre of the
    illumination; marker levels are lognormal (``median`` times ``exp(sigma * N(0, 1))``).
    """

    # nucleus size (viable, G1): diameter in micrometres, drawn from a clipped normal
    nucleus_diameter_um: float = 10.5
    nucleus_diameter_sd_um: float = 1.4
    nucleus_diameter_range_um: tuple[float, float] = (8.0, 14.0)
    max_aspect_ratio: float = 1.7
    boundary_irregularity: float = 0.05  # amplitude of the radius harmonics (fraction)
    # cell cycle: share of G1, S and G2 cells (DNA content 1, 1-2, 2)
    cell_cycle_fractions: tuple[float, float, float] = (0.6, 0.25, 0.15)
    # morphology probabilities per class: (pyknotic, fragmented)
    morphology: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "viable": (0.0, 0.0),
            "early_apoptotic": (0.45, 0.05),
            "late_apoptotic": (0.45, 0.30),
            "necrotic": (0.0, 0.0),
        }
    )
    pyknotic_area_factor: tuple[float, float] = (0.5, 0.7)
    pyknotic_brightness: tuple[float, float] = (2.0, 4.0)
    fragments: tuple[int, int] = (2, 5)
    # viable cells in mitosis (metaphase): a condensed, bright, elongated chromosome plate
    mitotic_fraction: float = 0.02
    mitotic_area_factor: tuple[float, float] = (0.35, 0.5)
    mitotic_aspect: tuple[float, float] = (2.2, 3.2)
    mitotic_brightness: tuple[float, float] = (2.5, 3.5)
    necrotic_area_factor: tuple[float, float] = (1.0, 1.3)
    necrotic_brightness: tuple[float, float] = (0.55, 0.8)
    # Hoechst mean intensity of a viable G1 nucleus and its cell-to-cell spread
    hoechst_median: float = 900.0
    hoechst_sigma: float = 0.2
    chromatin_texture: float = 0.25  # relative amplitude of the chromatin texture
    # Annexin V membrane ring
    annexin_dim_median: float = 30.0
    annexin_dim_sigma: float = 0.5
    annexin_bright_median: float = 300.0
    annexin_bright_sigma: float = 0.6
    necrotic_annexin_factor: float = 1.5  # slightly above viable (some inner-leaflet binding)
    late_diffuse_annexin: float = 0.25  # diffuse cytoplasmic Annexin of late apoptotic cells
    ring_gap_um: tuple[float, float] = (1.0, 2.3)  # nucleus edge to membrane
    ring_width_um: tuple[float, float] = (0.5, 0.85)  # Gaussian sigma across the membrane
    # PI in the nucleus
    pi_dim_median: float = 8.0
    pi_dim_sigma: float = 0.5
    pi_bright_median: float = 700.0
    pi_bright_sigma: float = 0.5
    # caspase-3/7 nuclear reporter (optional stain)
    caspase_dim_median: float = 15.0
    caspase_bright_median: float = 400.0
    caspase_sigma: float = 0.55
    # per-channel background (autofluorescence, ADU above offset, at the centre)
    background: Mapping[str, float] = field(
        default_factory=lambda: {"hoechst": 40.0, "annexin_v": 25.0, "pi": 20.0, "caspase37": 20.0}
    )
    psf_sigma_um: float = 0.6  # Gaussian point-spread function (10x-20x widefield)
    debris_per_cell: float = 0.03  # tiny bright specks (no truth label) per nucleus


@dataclass
class SimulatedField:
    """One rendered field and its ground truth.

    Attributes
    ----------
    channels : ndarray, uint16, (C, Y, X)
        Camera images, one per stain in ``stains``.
    labels : ndarray, int32, (Y, X)
        Truth nuclei, 0 = background, 1..N; fragments of one nucleus share its label.
    cells : DataFrame
        One row per label: ``label``, ``cell_class`` (``debris`` for objects that are not
        cells), ``centroid_y``, ``centroid_x``, ``area_px``, ``touching`` (shares a boundary
        with another nucleus, 8-neighbourhood), ``object_class`` (``cell``, ``fragmented``,
        ``mitotic`` or ``debris``), ``clump`` (clump id, -1 none), ``fragmented``,
        ``pyknotic``, ``mitotic``, ``touches_border``, ``dna_content`` and the true
        per-cell levels ``hoechst_level``, ``annexin_v_level``, ``pi_level`` (ADU).
    stains : tuple of str
        Stain name of each channel.
    pixel_size_um : float
    illumination : ndarray, float32, (Y, X)
        The true illumination profile (1 at its centre).
    n_debris : int
        Number of unlabelled debris specks in the image.
    z_stack : ndarray, uint16, (Z, C, Y, X) or None
        Every focal plane when more than one was rendered (``channels`` is the focused one).
    """

    channels: np.ndarray
    labels: np.ndarray
    cells: pd.DataFrame
    stains: tuple[str, ...]
    pixel_size_um: float
    illumination: np.ndarray
    n_debris: int = 0
    z_stack: np.ndarray | None = None


def vignetting_profile(
    shape: tuple[int, int],
    falloff: float = 0.35,
    center: tuple[float, float] = (0.46, 0.54),
) -> np.ndarray:
    """Smooth illumination profile: 1 at ``center`` falling to ``1 - falloff`` at the corners.

    Parameters
    ----------
    shape : (Y, X)
    falloff : float
        Relative loss at the farthest corner (0 = flat field).
    center : (float, float)
        Position of the maximum as a fraction of the field height and width.

    Returns
    -------
    ndarray, float32, (Y, X)

    Examples
    --------
    >>> profile = vignetting_profile((64, 64), falloff=0.3)
    >>> round(float(profile.min()), 2)
    0.7
    """
    height, width = shape
    cy, cx = center[0] * (height - 1), center[1] * (width - 1)
    yy = (np.arange(height, dtype=np.float32) - cy)[:, None]
    xx = (np.arange(width, dtype=np.float32) - cx)[None, :]
    r2 = yy**2 + xx**2
    r2_max = max(cy, height - 1 - cy) ** 2 + max(cx, width - 1 - cx) ** 2
    # cos^4-like fall-off, written as a smooth polynomial in r^2
    return (1.0 - falloff * (r2 / max(r2_max, 1.0))).astype(np.float32)


def class_counts_from_fractions(n_cells: int, class_fractions: Mapping[str, float]) -> dict:
    """Split ``n_cells`` into whole class counts (largest-remainder rounding).

    Examples
    --------
    >>> class_counts_from_fractions(10, {"viable": 0.75, "necrotic": 0.25})
    {'viable': 8, 'necrotic': 2}
    """
    _check_classes(class_fractions, "class_fractions")
    fractions = np.array([float(class_fractions[name]) for name in class_fractions])
    if np.any(fractions < 0) or fractions.sum() <= 0:
        raise InputError(
            f"class_fractions {dict(class_fractions)} must be non-negative with a positive sum"
        )
    exact = n_cells * fractions / fractions.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_cells - counts.sum()]] += 1
    return {name: int(count) for name, count in zip(class_fractions, counts, strict=True)}


def _check_classes(mapping: Mapping[str, object], what: str) -> None:
    unknown = sorted(set(mapping) - set(CELL_CLASSES))
    if unknown:
        raise InputError(f"{what} has unknown cell classes {unknown}; use {list(CELL_CLASSES)}")


def _lognormal(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def _cell_parameters(
    rng: np.random.Generator,
    classes: np.ndarray,
    pixel_size_um: float,
    model: CellModel,
) -> dict[str, np.ndarray]:
    """Per-cell shape, morphology and stain levels (vectorised)."""
    n = classes.size
    is_class = {name: classes == name for name in CELL_CLASSES}
    low, high = model.nucleus_diameter_range_um
    diameter = np.clip(
        rng.normal(model.nucleus_diameter_um, model.nucleus_diameter_sd_um, n), low, high
    )
    phase = rng.choice(3, size=n, p=np.asarray(model.cell_cycle_fractions) / 1.0)
    dna = np.where(phase == 0, 1.0, np.where(phase == 2, 2.0, rng.uniform(1.0, 2.0, n)))
    # a G2 nucleus has ~1.3x the area of a G1 one: radius grows with dna^0.4
    radius = diameter / 2.0 / pixel_size_um * dna**0.2
    pyknotic = np.zeros(n, bool)
    fragmented = np.zeros(n, bool)
    draw = rng.random(n)
    for name, (p_pyknotic, p_fragmented) in model.morphology.items():
        members = is_class[name]
        fragmented |= members & (draw < p_fragmented)
        pyknotic |= members & (draw >= p_fragmented) & (draw < p_fragmented + p_pyknotic)
    area_factor = np.ones(n)
    brightness = np.ones(n)
    texture = np.full(n, model.chromatin_texture)
    condensed = pyknotic | fragmented
    area_factor[condensed] = rng.uniform(*model.pyknotic_area_factor, condensed.sum())
    brightness[condensed] = rng.uniform(*model.pyknotic_brightness, condensed.sum())
    texture[condensed] *= 0.3
    necrotic = is_class["necrotic"]
    area_factor[necrotic] = rng.uniform(*model.necrotic_area_factor, necrotic.sum())
    brightness[necrotic] = rng.uniform(*model.necrotic_brightness, necrotic.sum())
    texture[necrotic] *= 0.5
    mitotic = is_class["viable"] & (rng.random(n) < model.mitotic_fraction)
    area_factor[mitotic] = rng.uniform(*model.mitotic_area_factor, mitotic.sum())
    brightness[mitotic] = rng.uniform(*model.mitotic_brightness, mitotic.sum())
    texture[mitotic] *= 0.3
    dna[mitotic] = 2.0
    # a nucleus keeps its DNA: mean intensity of a G2 nucleus is dna / area ratio higher
    hoechst = (
        _lognormal(rng, model.hoechst_median, model.hoechst_sigma, n) * brightness * dna / dna**0.4
    )
    annexin_positive = is_class["early_apoptotic"] | is_class["late_apoptotic"]
    annexin = np.where(
        annexin_positive,
        _lognormal(rng, model.annexin_bright_median, model.annexin_bright_sigma, n),
        _lognormal(rng, model.annexin_dim_median, model.annexin_dim_sigma, n),
    )
    annexin[necrotic] *= model.necrotic_annexin_factor
    pi_positive = is_class["late_apoptotic"] | necrotic
    pi = np.where(
        pi_positive,
        _lognormal(rng, model.pi_bright_median, model.pi_bright_sigma, n),
        _lognormal(rng, model.pi_dim_median, model.pi_dim_sigma, n),
    )
    caspase = np.where(
        annexin_positive,
        _lognormal(rng, model.caspase_bright_median, model.caspase_sigma, n),
        _lognormal(rng, model.caspase_dim_median, model.caspase_sigma, n),
    )
    aspect = np.clip(1.0 + np.abs(rng.normal(0.0, 0.18, n)), 1.0, model.max_aspect_ratio)
    aspect[condensed] = 1.0 + (aspect[condensed] - 1.0) * 0.4  # condensed nuclei round up
    aspect[mitotic] = rng.uniform(*model.mitotic_aspect, mitotic.sum())
    radius = radius * np.sqrt(area_factor)
    return {
        "radius": radius,
        "aspect": aspect,
        "angle": rng.uniform(0, np.pi, n),
        "harmonics": rng.normal(0.0, model.boundary_irregularity, (n, 4)),
        "harmonic_phase": rng.uniform(0, 2 * np.pi, (n, 4)),
        "pyknotic": pyknotic,
        "mitotic": mitotic,
        "fragmented": fragmented,
        "texture": texture,
        "dna": dna,
        "hoechst": hoechst,
        "annexin_v": annexin,
        "pi": pi,
        "caspase37": caspase,
        "ring_gap": rng.uniform(*model.ring_gap_um, n) / pixel_size_um,
        "ring_width": rng.uniform(*model.ring_width_um, n) / pixel_size_um,
        "n_fragments": rng.integers(model.fragments[0], model.fragments[1] + 1, n),
    }


def _place_centres(
    rng: np.random.Generator,
    shape: tuple[int, int],
    semi_major: np.ndarray,
    semi_minor: np.ndarray,
    angle: np.ndarray,
    touching_fraction: float,
    min_gap_px: float = 3.0,
    clump: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place nucleus centres; returns (centres (N, 2), placed mask).

    About ``0.6 * touching_fraction`` of the nuclei are attached to an already placed nucleus
    (an attachment usually makes two touching nuclei; attaching to a nucleus that already
    touches another grows a cluster); the others keep ``min_gap_px`` free around them.
    ``clump`` (id per nucleus, -1 none) places the members of a clump against each other.
    """
    height, width = shape
    n = semi_major.size
    outer = semi_major * 1.1
    centres = np.full((n, 2), np.nan)
    placed = np.zeros(n, bool)
    # an exact number of attachments keeps small fields close to the target; the first
    # nucleus has nothing to attach to
    n_attach = min(int(round(touching_fraction * 0.6 * n)), max(n - 1, 0))
    attach = np.zeros(n, bool)
    attach[1 + rng.permutation(max(n - 1, 0))[:n_attach]] = True

    def extent(index: int | np.ndarray, direction: float) -> np.ndarray:
        # radius of the ellipse along ``direction`` (image angle)
        phi = direction - angle[index]
        a, b = semi_major[index], semi_minor[index]
        return a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)

    for index in range(n):
        placed_idx = np.flatnonzero(placed)
        members = (
            placed_idx[clump[placed_idx] == clump[index]]
            if clump is not None and clump[index] >= 0
            else placed_idx[:0]
        )
        for attempt in range(60):
            if members.size and attempt < 45:
                anchor = members[rng.integers(members.size)]
                theta = rng.uniform(0, 2 * np.pi)
                reach = extent(anchor, theta) + extent(index, theta + np.pi)
                candidate = centres[anchor] + reach * rng.uniform(0.8, 0.92) * np.array(
                    [np.sin(theta), np.cos(theta)]
                )
                required = (outer[placed_idx] + outer[index]) * 0.75
                required[np.isin(placed_idx, members)] = 0.0
            # after 30 failed attachments, place the nucleus freely instead
            elif attach[index] and placed_idx.size and attempt < 30:
                free = placed_idx[~attach[placed_idx]]
                pool = free if free.size and rng.random() < 0.7 else placed_idx
                anchor = pool[rng.integers(pool.size)]
                theta = rng.uniform(0, 2 * np.pi)
                reach = extent(anchor, theta) + extent(index, theta + np.pi)
                distance = reach * rng.uniform(0.8, 0.92)
                offset = distance * np.array([np.sin(theta), np.cos(theta)])
                candidate = centres[anchor] + offset
                required = (outer[placed_idx] + outer[index]) * 0.75
                required[placed_idx == anchor] = 0.0
            else:
                candidate = np.array([rng.uniform(0, height - 1), rng.uniform(0, width - 1)])
                required = outer[placed_idx] + outer[index] + min_gap_px
            if not (0 <= candidate[0] <= height - 1 and 0 <= candidate[1] <= width - 1):
                continue
            if placed_idx.size:
                d2 = np.sum((centres[placed_idx] - candidate) ** 2, axis=1)
                if np.any(d2 < required**2):
                    continue
            centres[index] = candidate
            placed[index] = True
            break
    return centres, placed


def _touching_labels(labels: np.ndarray) -> np.ndarray:
    """Labels that share a boundary (8-neighbourhood) with a different nucleus."""
    touching = np.zeros(int(labels.max()) + 1, bool)
    pairs = (
        (labels[:, :-1], labels[:, 1:]),
        (labels[:-1, :], labels[1:, :]),
        (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1]),
    )
    for a, b in pairs:
        contact = (a != b) & (a > 0) & (b > 0)
        touching[a[contact]] = True
        touching[b[contact]] = True
    return touching


def _radius_modulation(
    u: np.ndarray, v: np.ndarray, rho: np.ndarray, harmonics: np.ndarray, phases: np.ndarray
) -> np.ndarray:
    """``1 + sum_k a_k cos(k theta + phi_k)`` for k = 2, 3, ..., theta the angle of (u, v)."""
    # powers of the unit complex number exp(i theta) avoid arctan2 and one cos per order
    unit = (u + 1j * v).astype(np.complex64) / np.maximum(rho, np.float32(1e-6))
    power = unit * unit
    modulation = np.ones_like(rho)
    for order in range(harmonics.size):
        rotated = power * np.complex64(harmonics[order] * np.exp(1j * phases[order]))
        modulation += rotated.real
        power = power * unit
    return modulation


def render_field(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (512, 512),
    pixel_size_um: float = 0.65,
    n_cells: int = 150,
    class_fractions: Mapping[str, float] | None = None,
    class_counts: Mapping[str, int] | None = None,
    touching_fraction: float = 0.2,
    stains: Sequence[str] = ("hoechst", "annexin_v", "pi"),
    defocus_sigma_px: float = 0.0,
    illumination: float | np.ndarray | None = 0.35,
    camera_offset: float = 100.0,
    read_noise_adu: float = 4.0,
    gain_adu_per_electron: float = 1.0,
    bleed_through: Mapping[tuple[str, str], float] | None = None,
    intensity_scale: float = 1.0,
    model: CellModel | None = None,
    z_planes: int = 1,
    z_defocus_step_px: float = 1.5,
    debris_objects_per_cell: float = 0.0,
    clump_fraction: float = 0.0,
    stain_gain: Mapping[str, float] | None = None,
    fibre: bool = False,
    precipitate: bool = False,
    hot_pixels: Sequence[tuple[int, int, int, int]] = (),
) -> SimulatedField:
    """Render one field of nuclei with Hoechst, Annexin V and PI channels and its truth.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (same seed -> same field).
    shape : (Y, X)
        Field size in pixels.
    pixel_size_um : float
        Pixel size; sets the nucleus size in pixels (viable nuclei 8-14 µm across).
    n_cells : int
        Number of nuclei (ignored when ``class_counts`` is given). Nuclei that cannot be
        placed in a crowded field are dropped; ``cells`` lists those rendered.
    class_fractions : mapping, optional
        Share of each class; rounded to whole counts. Default: 85 % viable, 6 % early
        apoptotic, 5 % late apoptotic, 4 % necrotic.
    class_counts : mapping, optional
        Exact number of nuclei per class (overrides ``n_cells`` and ``class_fractions``).
    touching_fraction : float
        Target share of nuclei touching another one (the default gives 15-25 %).
    stains : sequence of str
        One channel per stain, in this order: ``hoechst``, ``annexin_v``, ``pi``,
        ``caspase37``.
    defocus_sigma_px : float
        Extra Gaussian blur (defocus) on top of the point-spread function.
    illumination : float, ndarray or None
        Vignetting fall-off at the corners (float), a (Y, X) profile, or None for flat.
    camera_offset, read_noise_adu, gain_adu_per_electron : float
        Camera model: offset + gain * Poisson(signal / gain) + N(0, read_noise).
    bleed_through : mapping, optional
        ``{(source_stain, target_stain): fraction}``; default 5 % Annexin V (FITC) into PI.
    intensity_scale : float
        Multiplies every signal (exposure time).
    model : CellModel, optional
        Morphology and intensity model.
    z_planes : int
        Number of focal planes; the middle one is in focus and each plane away from it adds
        ``z_defocus_step_px`` of blur. ``channels`` is the in-focus plane, ``z_stack`` all.
    z_defocus_step_px : float
        Extra blur per plane away from focus.
    debris_objects_per_cell : float
        Labelled debris (apoptotic bodies, dim debris; ``object_class`` ``debris`` in the
        truth) per nucleus, see :mod:`screenlib.simulate._confounders`.
    clump_fraction : float
        Share of nuclei in clumps of 3-6 touching nuclei.
    stain_gain : mapping, optional
        ``{stain: gain}``: multiplies that stain's signal (staining, not optics).
    fibre, precipitate : bool
        Paint an autofluorescent fibre / a saturated precipitate into the field.
    hot_pixels : sequence of (channel, y, x, value)
        Hot sensor pixels (the brighter of the pixel and ``value`` is kept).

    Returns
    -------
    SimulatedField

    Examples
    --------
    >>> field = render_field(np.random.default_rng(0), shape=(128, 128), n_cells=12)
    >>> field.channels.shape, field.channels.dtype.name, int(field.labels.max())
    ((3, 128, 128), 'uint16', 12)
    """
    model = model or CellModel()
    stains = tuple(stains)
    unknown = [stain for stain in stains if stain not in SUPPORTED_STAINS]
    if unknown:
        raise InputError(
            f"render_field cannot simulate stains {unknown}; supported: {list(SUPPORTED_STAINS)}"
        )
    shape = (int(shape[0]), int(shape[1]))
    if class_counts is not None:
        _check_classes(class_counts, "class_counts")
        counts = {name: int(count) for name, count in class_counts.items()}
    else:
        counts = class_counts_from_fractions(
            int(n_cells), class_fractions or _DEFAULT_CLASS_FRACTIONS
        )
    classes = np.concatenate(
        [np.full(count, name, dtype=object) for name, count in counts.items()] or [np.array([])]
    ).astype(object)
    classes = classes[rng.permutation(classes.size)]
    params = _cell_parameters(rng, classes, pixel_size_um, model)
    params["object_class"] = np.where(
        params["fragmented"], "fragmented", np.where(params["mitotic"], "mitotic", "cell")
    ).astype(object)
    n_real = classes.size
    clump = clump_ids(rng, n_real, clump_fraction) if clump_fraction > 0 else None
    if debris_objects_per_cell > 0 and n_real:
        n_extra = int(rng.poisson(debris_objects_per_cell * n_real))
        extra = debris_parameters(rng, n_extra, pixel_size_um, model)
        extra["object_class"] = np.full(n_extra, "debris", dtype=object)
        params = {key: np.concatenate([params[key], extra[key]]) for key in params}
        classes = np.concatenate([classes, np.full(n_extra, "debris", dtype=object)])
        if clump is not None:
            clump = np.concatenate([clump, np.full(n_extra, -1, dtype=np.int64)])
    params["clump"] = clump if clump is not None else np.full(classes.size, -1, np.int64)
    centres, placed = _place_centres(
        rng,
        shape,
        params["radius"] * np.sqrt(params["aspect"]),
        params["radius"] / np.sqrt(params["aspect"]),
        params["angle"],
        touching_fraction,
        clump=clump,
    )

    if not placed.all():
        logger.warning(
            "field too crowded: placed %d of %d nuclei (%s px field)",
            int(placed.sum()),
            placed.size,
            "x".join(map(str, shape)),
        )
    labels = np.zeros(shape, np.int32)
    nucleus_signal = {
        stain: np.zeros(shape, np.float32) for stain in stains if stain != "annexin_v"
    }
    annexin_signal = np.zeros(shape, np.float32)
    texture = _chromatin_texture(rng, shape)

    kept = np.flatnonzero(placed)
    for label, index in enumerate(kept, start=1):
        _draw_cell(
            label,
            index,
            centres[index],
            params,
            rng,
            labels,
            nucleus_signal,
            annexin_signal if "annexin_v" in stains else None,
            texture,
            late=classes[index] == "late_apoptotic",
            late_diffuse=model.late_diffuse_annexin,
        )

    n_debris = int(rng.poisson(model.debris_per_cell * kept.size)) if kept.size else 0
    if "hoechst" in nucleus_signal and n_debris:
        _draw_debris(rng, nucleus_signal, n_debris, pixel_size_um, model)

    signals = {stain: nucleus_signal.get(stain, annexin_signal) for stain in stains}
    if bleed_through is None:
        bleed_through = {("annexin_v", "pi"): 0.05}
    if stain_gain:
        signals = {
            stain: signals[stain] * np.float32(stain_gain.get(stain, 1.0)) for stain in stains
        }
    mixed = {stain: signals[stain].copy() for stain in stains}
    for (source, target), fraction in bleed_through.items():
        if source in signals and target in mixed:
            mixed[target] += np.float32(fraction) * signals[source]
    if fibre:
        paint_fibre(rng, mixed, pixel_size_um, model)
    if precipitate:
        paint_precipitate(rng, mixed, pixel_size_um)

    if illumination is None:
        profile = np.ones(shape, np.float32)
    elif np.ndim(illumination) == 0:
        profile = vignetting_profile(shape, float(illumination))
    else:
        profile = np.asarray(illumination, np.float32)
        if profile.shape != shape:
            raise InputError(f"illumination profile has shape {profile.shape}, field {shape}")
    psf_px = model.psf_sigma_um / pixel_size_um
    camera = {
        "profile": profile,
        "camera_offset": camera_offset,
        "read_noise_adu": read_noise_adu,
        "gain_adu_per_electron": gain_adu_per_electron,
        "intensity_scale": intensity_scale,
        "background": model.background,
    }
    z_planes = max(int(z_planes), 1)
    focus_plane = (z_planes - 1) // 2
    planes = []
    for plane in range(z_planes):
        defocus = defocus_sigma_px + z_defocus_step_px * abs(plane - focus_plane)
        plane = _camera_image(rng, mixed, stains, math.hypot(psf_px, defocus), **camera)
        for channel, y, x, value in hot_pixels:
            if channel < plane.shape[0] and y < shape[0] and x < shape[1]:
                plane[channel, y, x] = max(int(plane[channel, y, x]), int(value))
        planes.append(plane)
    channels = planes[focus_plane]
    z_stack = np.stack(planes) if z_planes > 1 else None

    cells = _truth_table(labels, classes[kept], params, kept, shape)
    return SimulatedField(
        channels=channels,
        labels=labels,
        cells=cells,
        stains=stains,
        pixel_size_um=float(pixel_size_um),
        illumination=profile,
        n_debris=n_debris,
        z_stack=z_stack,
    )


def _camera_image(
    rng: np.random.Generator,
    signals: Mapping[str, np.ndarray],
    stains: Sequence[str],
    blur_px: float,
    *,
    profile: np.ndarray,
    camera_offset: float,
    read_noise_adu: float,
    gain_adu_per_electron: float,
    intensity_scale: float,
    background: Mapping[str, float],
) -> np.ndarray:
    """Blur, illuminate and expose noise-free signals: ``(C, Y, X)`` uint16 camera counts."""
    shape = profile.shape
    channels = np.empty((len(stains), *shape), np.uint16)
    for channel, stain in enumerate(stains):
        image = signals[stain]
        if blur_px > 0:
            image = ndimage.gaussian_filter(image, blur_px, mode="nearest")
        expected = (image + np.float32(background.get(stain, 20.0))) * profile
        expected *= np.float32(intensity_scale / gain_adu_per_electron)
        electrons = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
        counts_adu = electrons * np.float32(gain_adu_per_electron) + np.float32(camera_offset)
        counts_adu += np.float32(read_noise_adu) * rng.standard_normal(shape, dtype=np.float32)
        np.clip(np.rint(counts_adu), 0, 65535, out=counts_adu)
        channels[channel] = counts_adu.astype(np.uint16)
    return channels


def _chromatin_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Band-passed noise (fine granules plus coarse domains), mean 0, roughly unit spread."""
    fine = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0)
    fine /= max(float(fine.std()), 1e-6)
    small = (max(shape[0] // 4, 1), max(shape[1] // 4, 1))
    coarse = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), 1.0)
    coarse /= max(float(coarse.std()), 1e-6)
    coarse = ndimage.zoom(coarse, (shape[0] / small[0], shape[1] / small[1]), order=1)
    coarse = coarse[: shape[0], : shape[1]]
    return 0.7 * fine + 0.5 * coarse


def _draw_cell(
    label: int,
    index: int,
    centre: np.ndarray,
    params: dict[str, np.ndarray],
    rng: np.random.Generator,
    labels: np.ndarray,
    nucleus_signal: dict[str, np.ndarray],
    annexin_signal: np.ndarray | None,
    texture: np.ndarray,
    *,
    late: bool,
    late_diffuse: float,
) -> None:
    """Paint one nucleus (label and nuclear stains) and its Annexin V membrane ring."""
    height, width = labels.shape
    radius = params["radius"][index]
    aspect = params["aspect"][index]
    semi_major, semi_minor = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    gap, ring_width = params["ring_gap"][index], params["ring_width"][index]
    reach = semi_major * 1.25 + gap + 4 * ring_width + 2
    cy, cx = centre
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, height)
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, width)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos_a, sin_a = np.cos(params["angle"][index]), np.sin(params["angle"][index])
    u = (dx * cos_a + dy * sin_a) / semi_major
    v = (-dx * sin_a + dy * cos_a) / semi_minor
    rho = np.sqrt(u**2 + v**2)
    boundary = _radius_modulation(
        u, v, rho, params["harmonics"][index], params["harmonic_phase"][index]
    )
    # distance outside the nucleus edge in pixels (approximate, along the ray)
    outside_px = (rho - boundary) * np.float32(radius)

    box_labels = labels[y0:y1, x0:x1]
    if params["fragmented"][index]:
        shape_mask = np.zeros(rho.shape, bool)
        n_fragments = int(params["n_fragments"][index])
        fragment_radius = radius * rng.uniform(0.28, 0.42, n_fragments)
        # fragments scatter within the old nucleus, mostly apart (a gap of >= 1 px)
        offsets: list[np.ndarray] = []
        for r_fragment in fragment_radius:
            for _attempt in range(20):
                offset = rng.uniform(-radius, radius, 2) * 0.85
                if all(
                    np.hypot(*(offset - other)) >= r_fragment + r_other + 1.0
                    for other, r_other in zip(offsets, fragment_radius, strict=False)
                ):
                    break
            offsets.append(offset)
        for (oy, ox), r_fragment in zip(offsets, fragment_radius, strict=True):
            shape_mask |= (dy - oy) ** 2 + (dx - ox) ** 2 <= r_fragment**2
        dome = np.float32(1.0)
    else:
        shape_mask = rho <= boundary
        dome = 1.0 - 0.25 * np.minimum(rho / boundary, 1.0) ** 2
    mask = shape_mask & (box_labels == 0)
    if not mask.any():
        return
    box_labels[mask] = label

    local_texture = 1.0 + params["texture"][index] * texture[y0:y1, x0:x1]
    profile = np.clip(local_texture * dome, 0.2, None).astype(np.float32)
    for stain, image in nucleus_signal.items():
        level = np.float32(params[stain][index])
        if stain == "hoechst":
            image[y0:y1, x0:x1][mask] += level * profile[mask]
        else:
            # PI and caspase reporters bind DNA: follow chromatin, with less texture
            image[y0:y1, x0:x1][mask] += level * np.sqrt(profile[mask])

    if annexin_signal is None:
        return
    membrane = np.exp(-0.5 * ((outside_px - gap) / ring_width) ** 2)
    level = np.float32(params["annexin_v"][index])
    box = annexin_signal[y0:y1, x0:x1]
    box += level * membrane.astype(np.float32)
    if late:
        # late apoptotic cells show diffuse Annexin in the whole (shrunken) cell
        inside_cell = outside_px < gap
        box[inside_cell] += level * np.float32(late_diffuse)


def _draw_debris(
    rng: np.random.Generator,
    nucleus_signal: dict[str, np.ndarray],
    n_debris: int,
    pixel_size_um: float,
    model: CellModel,
) -> None:
    """Tiny bright specks below any nucleus size (area < ~3 µm²), unlabelled."""
    hoechst = nucleus_signal["hoechst"]
    height, width = hoechst.shape
    radius_px = max(0.9 / pixel_size_um, 1.0)
    for _ in range(n_debris):
        cy, cx = rng.uniform(0, height - 1), rng.uniform(0, width - 1)
        r = radius_px * rng.uniform(0.6, 1.0)
        y0, y1 = max(int(cy - r - 1), 0), min(int(cy + r) + 2, height)
        x0, x1 = max(int(cx - r - 1), 0), min(int(cx + r) + 2, width)
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        speck = (dy**2 + dx**2) <= r**2
        hoechst[y0:y1, x0:x1][speck] += np.float32(model.hoechst_median * rng.uniform(1.0, 3.0))


def _truth_table(
    labels: np.ndarray,
    classes: np.ndarray,
    params: dict[str, np.ndarray],
    kept: np.ndarray,
    shape: tuple[int, int],
) -> pd.DataFrame:
    """Per-label truth from the label image itself (so it always matches it)."""
    n_labels = kept.size
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n_labels + 1)[1:]
    rows, cols = np.indices(shape)
    sum_y = np.bincount(flat, weights=rows.ravel(), minlength=n_labels + 1)[1:]
    sum_x = np.bincount(flat, weights=cols.ravel(), minlength=n_labels + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_y, centroid_x = sum_y / area, sum_x / area
    touching = _touching_labels(labels)
    touching = np.pad(touching, (0, max(0, n_labels + 1 - touching.size)))[1 : n_labels + 1]
    border = np.zeros(n_labels + 1, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    table = pd.DataFrame(
        {
            "label": np.arange(1, n_labels + 1, dtype=np.int32),
            "cell_class": pd.array(classes.astype(str), dtype=object),
            "centroid_y": centroid_y,
            "centroid_x": centroid_x,
            "area_px": area.astype(np.int64),
            "touching": touching,
            "object_class": pd.array(params["object_class"][kept].astype(str), dtype=object),
            "clump": params["clump"][kept],
            "fragmented": params["fragmented"][kept],
            "pyknotic": params["pyknotic"][kept],
            "mitotic": params["mitotic"][kept],
            "touches_border": border[1:],
            "dna_content": params["dna"][kept],
            "hoechst_level": params["hoechst"][kept],
            "annexin_v_level": params["annexin_v"][kept],
            "pi_level": params["pi"][kept],
        }
    )
    # a nucleus entirely hidden under earlier ones has no pixels: drop it and relabel
    if np.any(area == 0):
        keep = area > 0
        mapping = np.zeros(n_labels + 1, np.int32)
        mapping[1:][keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
        labels[...] = mapping[labels]
        table = table[keep].reset_index(drop=True)
        table["label"] = np.arange(1, len(table) + 1, dtype=np.int32)
    return table


def render_bright_among_dim(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (512, 512),
    pixel_size_um: float = 0.65,
    n_dim: int = 51,
    n_bright: int = 6,
    dim_hoechst: float = 160.0,
    bright_factor: tuple[float, float] = (10.0, 14.0),
    **kwargs,
) -> SimulatedField:
    """A field with a few very bright condensed nuclei among many dim ones.

    A single global threshold (Otsu) on such an image separates the bright nuclei from
    everything else and misses most dim ones; a segmenter must find all ``n_dim + n_bright``.
    The bright nuclei are early apoptotic and pyknotic, the dim ones viable.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape, pixel_size_um :
        As in :func:`render_field`.
    n_dim, n_bright : int
        Number of dim (viable) and bright (condensed) nuclei.
    dim_hoechst : float
        Median Hoechst intensity (ADU above background) of the dim nuclei.
    bright_factor : (float, float)
        Range of the brightness of the condensed nuclei relative to the dim ones.
    **kwargs
        Passed on to :func:`render_field` (e.g. ``stains``, ``illumination``).

    Returns
    -------
    SimulatedField

    Examples
    --------
    >>> field = render_bright_among_dim(np.random.default_rng(1), shape=(256, 256), n_dim=20,
    ...                                 n_bright=3)
    >>> int((field.cells["cell_class"] == "early_apoptotic").sum())
    3
    """
    model = kwargs.pop("model", None) or CellModel()
    model = dataclasses_replace(
        model,
        hoechst_median=dim_hoechst,
        pyknotic_brightness=bright_factor,
        morphology={
            "viable": (0.0, 0.0),
            "early_apoptotic": (1.0, 0.0),
            "late_apoptotic": (1.0, 0.0),
            "necrotic": (0.0, 0.0),
        },
        background={**model.background, "hoechst": 15.0},
    )
    return render_field(
        rng,
        shape=shape,
        pixel_size_um=pixel_size_um,
        class_counts={"viable": n_dim, "early_apoptotic": n_bright},
        model=model,
        **kwargs,
    )
