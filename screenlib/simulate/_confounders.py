"""What makes a real screening plate messy, as switchable parts of the simulator.

A clean rendering has whole nuclei, one stain gain per well and mild vignetting. A real
screen adds objects that are not cells and optics that move every intensity. Each confounder
below can be switched on alone (``Confounders.only(name)``) so a benchmark can measure what it
does to the per-well fractions; ``Confounders.messy()`` switches on all of them.

========================  ============================================================
name                      what is rendered
========================  ============================================================
``debris``                apoptotic bodies (sub-nuclear, condensed, often Annexin V
                          bright, some PI bright) and dim non-nuclear debris (low
                          Hoechst, sticky Annexin V); each has a truth label with
                          ``object_class`` ``debris``
``mitoses``               more viable cells in mitosis (condensed, bright, elongated,
                          Annexin V negative): ``object_class`` ``mitotic``
``clumps``                clusters of 3-6 touching nuclei (``clump`` id in the truth)
``stain_gain``            every stain's gain varies per well and per timepoint
                          (log-normal), Annexin V and PI grow 15 % per timepoint
``vignetting``            stronger, off-centre illumination fall-off
``bleed_through``         FITC (Annexin V) into the PI channel at 12 % instead of 5 %
``artefacts``             one autofluorescent fibre and one saturated precipitate per
                          plate, hot pixels at fixed sensor positions in every field
``seeding_failure``       one vehicle well seeded at 15 % of the normal density
========================  ============================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

CONFOUNDERS = (
    "debris",
    "mitoses",
    "clumps",
    "stain_gain",
    "vignetting",
    "bleed_through",
    "artefacts",
    "seeding_failure",
)


@dataclass(frozen=True)
class Confounders:
    """Switchable confounders of a simulated plate; the defaults render a clean plate.

    Attributes
    ----------
    debris_per_cell
        Debris objects (apoptotic bodies and dim debris) per rendered nucleus.
    mitotic_fraction
        Share of viable cells in mitosis (None: the cell model's 2 %).
    clump_fraction
        Share of nuclei placed in clumps of 3-6 touching nuclei.
    stain_gain_cv
        Log-normal spread of each stain's gain per well and timepoint.
    timepoint_gain_step
        Annexin V and PI gain grows by this share per timepoint.
    illumination_falloff
        Vignetting at the field corners (None: the design's).
    illumination_center
        Position of the illumination maximum (fraction of height and width).
    bleed_through
        FITC (Annexin V) into PI (None: the field renderer's 5 %).
    fibre, precipitate
        One fibre / one saturated precipitate somewhere on the plate.
    hot_pixels_per_megapixel
        Hot pixels (same sensor positions in every field).
    seeding_failure
        One vehicle well seeded at ``seeding_failure_density`` of the normal density.
    seeding_failure_density
        Relative density of the seeding-failure well.
    """

    debris_per_cell: float = 0.0
    mitotic_fraction: float | None = None
    clump_fraction: float = 0.0
    stain_gain_cv: float = 0.0
    timepoint_gain_step: float = 0.0
    illumination_falloff: float | None = None
    illumination_center: tuple[float, float] = (0.46, 0.54)
    bleed_through: float | None = None
    fibre: bool = False
    precipitate: bool = False
    hot_pixels_per_megapixel: float = 0.0
    seeding_failure: bool = False
    seeding_failure_density: float = 0.15

    @classmethod
    def messy(cls) -> Confounders:
        """Every confounder on, at the strength of a hard but real screen."""
        return cls(**{k: v for name in CONFOUNDERS for k, v in _SETTINGS[name].items()})

    @classmethod
    def only(cls, name: str) -> Confounders:
        """A clean plate with the one confounder ``name`` (one of ``CONFOUNDERS``)."""
        if name not in _SETTINGS:
            raise ValueError(f"unknown confounder {name!r}; use one of {', '.join(CONFOUNDERS)}")
        return cls(**_SETTINGS[name])

    def active(self) -> list[str]:
        """Names of the confounders switched on."""
        clean = Confounders()
        return [
            name
            for name in CONFOUNDERS
            if any(getattr(self, key) != getattr(clean, key) for key in _SETTINGS[name])
        ]

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["illumination_center"] = list(self.illumination_center)
        return data

    @classmethod
    def from_json(cls, data: dict | None) -> Confounders:
        data = dict(data or {})
        if "illumination_center" in data:
            data["illumination_center"] = tuple(data["illumination_center"])
        return cls(**data)


_SETTINGS: dict[str, dict] = {
    "debris": {"debris_per_cell": 0.25},
    "mitoses": {"mitotic_fraction": 0.06},
    "clumps": {"clump_fraction": 0.15},
    "stain_gain": {"stain_gain_cv": 0.15, "timepoint_gain_step": 0.15},
    "vignetting": {"illumination_falloff": 0.5, "illumination_center": (0.35, 0.62)},
    "bleed_through": {"bleed_through": 0.12},
    "artefacts": {"fibre": True, "precipitate": True, "hot_pixels_per_megapixel": 300.0},
    "seeding_failure": {"seeding_failure": True},
}


def debris_parameters(
    rng: np.random.Generator,
    n: int,
    pixel_size_um: float,
    model,
) -> dict[str, np.ndarray]:
    """Shape and stain levels of ``n`` debris objects (same keys as the cells' parameters).

    70 % are apoptotic bodies: 0.2-0.45 of a nucleus' radius, condensed chromatin (0.8-2.5x
    a nucleus' Hoechst), exposed phosphatidylserine (Annexin V bright in 75 %), PI bright in
    30 %. 30 % are dim debris: 0.35-0.8 of a nucleus' radius, 8-25 % of a nucleus' Hoechst,
    sticky Annexin V in half of them.
    """
    radius_nucleus = model.nucleus_diameter_um / 2.0 / pixel_size_um
    body = rng.random(n) < 0.7
    radius = np.where(body, rng.uniform(0.2, 0.45, n), rng.uniform(0.35, 0.8, n)) * radius_nucleus
    hoechst = model.hoechst_median * np.where(
        body, rng.uniform(0.8, 2.5, n), rng.uniform(0.08, 0.25, n)
    )
    bright_annexin = np.where(body, rng.random(n) < 0.75, rng.random(n) < 0.5)
    annexin = np.where(
        bright_annexin,
        model.annexin_bright_median * np.exp(model.annexin_bright_sigma * rng.standard_normal(n)),
        model.annexin_dim_median * np.exp(model.annexin_dim_sigma * rng.standard_normal(n)),
    )
    annexin = np.where(body, annexin, annexin * 0.5)
    pi_bright = body & (rng.random(n) < 0.3)
    pi = np.where(
        pi_bright,
        model.pi_bright_median * np.exp(model.pi_bright_sigma * rng.standard_normal(n)),
        model.pi_dim_median * np.exp(model.pi_dim_sigma * rng.standard_normal(n)),
    )
    false = np.zeros(n, bool)
    return {
        "radius": radius,
        "aspect": 1.0 + 0.4 * rng.random(n),
        "angle": rng.uniform(0, np.pi, n),
        "harmonics": rng.normal(0.0, 0.08, (n, 4)),
        "harmonic_phase": rng.uniform(0, 2 * np.pi, (n, 4)),
        "pyknotic": false,
        "mitotic": false.copy(),
        "fragmented": false.copy(),
        "texture": np.full(n, 0.1),
        "dna": np.zeros(n),
        "hoechst": hoechst,
        "annexin_v": annexin,
        "pi": pi,
        "caspase37": model.caspase_dim_median * np.ones(n),
        "ring_gap": rng.uniform(0.3, 0.8, n) / pixel_size_um,
        "ring_width": rng.uniform(0.4, 0.6, n) / pixel_size_um,
        "n_fragments": np.zeros(n, dtype=int),
    }


def clump_ids(rng: np.random.Generator, n: int, clump_fraction: float) -> np.ndarray:
    """Clump id of each of ``n`` nuclei (-1: not in a clump); clumps hold 3-6 nuclei."""
    ids = np.full(n, -1, dtype=np.int64)
    target = int(round(clump_fraction * n))
    order = rng.permutation(n)
    start, clump = 0, 0
    while start + 3 <= min(target, n):
        size = min(int(rng.integers(3, 7)), n - start)
        ids[order[start : start + size]] = clump
        start += size
        clump += 1
    return ids


def paint_fibre(
    rng: np.random.Generator, signals: dict[str, np.ndarray], pixel_size_um: float, model
) -> None:
    """An autofluorescent fibre: a long, thin, gently curved line bright in every channel."""
    shape = next(iter(signals.values())).shape
    height, width = shape
    length = rng.uniform(0.6, 0.9) * max(shape)
    steps = int(length * 2)
    angle = rng.uniform(0, np.pi)
    curvature = rng.normal(0, 1.5 / max(length, 1.0))
    y, x = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    mask = np.zeros(shape, np.float32)
    for _ in range(steps):
        y += 0.5 * np.sin(angle)
        x += 0.5 * np.cos(angle)
        angle += curvature * 0.5
        if 0 <= y < height and 0 <= x < width:
            mask[int(y), int(x)] = 1.0
    from scipy import ndimage

    width_px = max(0.8 / pixel_size_um, 0.5)
    mask = ndimage.gaussian_filter(mask, width_px)
    mask /= max(float(mask.max()), 1e-6)
    levels = {
        "hoechst": 1.2 * model.hoechst_median,
        "annexin_v": 1.5 * model.annexin_bright_median,
        "pi": 0.6 * model.pi_bright_median,
        "caspase37": 0.5 * model.caspase_bright_median,
    }
    for stain, image in signals.items():
        image += np.float32(levels.get(stain, 100.0)) * mask


def paint_precipitate(
    rng: np.random.Generator, signals: dict[str, np.ndarray], pixel_size_um: float
) -> None:
    """A saturated precipitate: a blob of 5-8 µm radius that saturates every channel."""
    shape = next(iter(signals.values())).shape
    cy, cx = rng.uniform(0.2, 0.8) * shape[0], rng.uniform(0.2, 0.8) * shape[1]
    radius = rng.uniform(5.0, 8.0) / pixel_size_um
    yy, xx = np.indices(shape, dtype=np.float32)
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2
    for image in signals.values():
        image[blob] += np.float32(80000.0)


def hot_pixel_map(
    seed: int, shape: tuple[int, int], n_channels: int, per_megapixel: float
) -> list[tuple[int, int, int, int]]:
    """Fixed hot pixels of a sensor: ``(channel, y, x, value)``; same in every field."""
    rng = np.random.default_rng([seed, 997])
    count = int(round(per_megapixel * shape[0] * shape[1] / 1e6))
    return [
        (
            int(rng.integers(n_channels)),
            int(rng.integers(shape[0])),
            int(rng.integers(shape[1])),
            int(rng.uniform(3000, 65535)),
        )
        for _ in range(count)
    ]
