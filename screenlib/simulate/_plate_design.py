"""Simulate a whole screening plate: Hill dose-responses, rendered fields, export and truth.

Per well the design gives a sample (cell line), a compound, a concentration and a role. The
expected class fractions and the cell count follow Hill curves of the sample's IC50s:

* drug effect on apoptosis ``E_apo(c) = c^h / (c^h + IC50_apo^h)`` (0 for vehicle); the
  apoptotic fraction (early + late) rises from the vehicle background to
  ``max_apoptotic_fraction``: ``a(c) = a0 + (a_max - a0) * E_apo(c)`` — so ``IC50_apo`` is the
  *relative* IC50 (midpoint between vehicle and top). The induced apoptotic cells are split
  into early and late by ``late_share``; necrosis rises by up to ``max_necrotic_fraction``.
* cell count: ``N(c) = N_vehicle * (1 - (1 - min_relative_cell_count) * E_count(c))`` with
  ``E_count`` the Hill curve of ``IC50_count``.
* positive-control wells get the sample's maximal response times ``positive_control_effect``.
* with several timepoints the response builds up linearly: timepoint ``t`` of ``T`` gets
  ``(t + 1) / T`` of the end-point effect (fields are rendered independently per timepoint).

Each field draws its cell number from a Poisson law around the expected count and its
classes from a multinomial law, so realised per-well fractions scatter with binomial noise
around the design; the truth tables record both the design values and the realised ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from screenlib.errors import InputError
from screenlib.gating.classify import CELL_CLASSES
from screenlib.platemap import ROLES, PlateGeometry, normalize_well
from screenlib.simulate._confounders import Confounders, hot_pixel_map
from screenlib.simulate._field import CellModel, render_field, vignetting_profile

LAYOUTS = ("imagexpress", "operetta", "cellvoyager", "zarr")
DEFAULT_VEHICLE_FRACTIONS = {
    "viable": 0.93,
    "early_apoptotic": 0.03,
    "late_apoptotic": 0.025,
    "necrotic": 0.015,
}


@dataclass(frozen=True)
class SampleResponse:
    """How one sample (cell line) responds to the plate's compound.

    Concentrations in mol/L. ``ic50_apoptosis_molar`` is the relative IC50 of the apoptotic
    fraction (midpoint between vehicle and ``max_apoptotic_fraction``),
    ``ic50_cell_count_molar`` the IC50 of the cell count (midpoint between vehicle and
    ``min_relative_cell_count``).
    """

    ic50_apoptosis_molar: float
    ic50_cell_count_molar: float
    hill_slope_apoptosis: float = 1.0
    hill_slope_cell_count: float = 1.0
    max_apoptotic_fraction: float = 0.75
    min_relative_cell_count: float = 0.3
    max_necrotic_fraction: float = 0.06
    late_share: float = 0.5  # share of late among the drug-induced apoptotic cells


@dataclass(frozen=True)
class WellDesign:
    """One well of the plate map (``concentration_molar`` 0 for vehicle wells)."""

    well: str
    sample: str
    compound: str
    concentration_molar: float
    role: str = "sample"


@dataclass
class PlateDesign:
    """Everything that defines a simulated plate; the same design and seed give the same
    plate, file for file.

    Parameters
    ----------
    name
        Plate name (no ``_``: vendors split file names on it).
    geometry
        96, 384 or 1536 wells.
    wells
        The plate map, one :class:`WellDesign` per imaged well.
    responses
        Per sample: IC50s, Hill slopes and maximal effects.
    vehicle_fractions
        Class fractions of untreated cells (the few apoptotic / necrotic cells every
        culture carries).
    cells_per_field
        Expected nuclei per field in vehicle wells.
    fields_per_well, timepoints, z_planes
        Acquisition size.
    field_shape, pixel_size_um
        Field size in pixels and pixel size in micrometres.
    channel_names, stains
        Vendor channel names and the stain imaged in each channel.
    seed
        Seeds every random draw.
    timepoint_interval_h
        Time between timepoints (for acquisition times).
    z_step_um
        Distance between focal planes.
    defocus_probability
        Share of fields acquired out of focus (extra blur of 1.5-3 px).
    well_intensity_cv
        Well-to-well variation of the stain intensity (dispensing, evaporation).
    illumination_falloff
        Vignetting at the field corners (same optics for every field).
    positive_control_effect
        Effect (0-1 of the sample's maximal response) in positive-control wells.
    positive_control_compound
        Compound name of the positive control (plate map only).
    confounders
        What makes the plate messy (:class:`~screenlib.simulate.Confounders`); clean by
        default.
    """

    name: str
    wells: list[WellDesign]
    responses: dict[str, SampleResponse]
    geometry: int = 96
    vehicle_fractions: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_VEHICLE_FRACTIONS)
    )
    cells_per_field: float = 65.0
    fields_per_well: int = 2
    timepoints: int = 1
    z_planes: int = 1
    field_shape: tuple[int, int] = (168, 168)
    pixel_size_um: float = 1.3
    channel_names: tuple[str, ...] = ("DAPI", "FITC", "Texas Red")
    stains: tuple[str, ...] = ("hoechst", "annexin_v", "pi")
    seed: int = 0
    timepoint_interval_h: float = 24.0
    z_step_um: float = 2.0
    defocus_probability: float = 0.05
    well_intensity_cv: float = 0.08
    illumination_falloff: float = 0.35
    positive_control_effect: float = 0.95
    positive_control_compound: str = "staurosporine"
    confounders: Confounders = field(default_factory=Confounders)

    def __post_init__(self) -> None:
        geometry = PlateGeometry.from_size(self.geometry)
        if "_" in self.name or not self.name:
            raise InputError(f"plate name {self.name!r}: use a non-empty name without '_'")
        seen: set[str] = set()
        normalized = []
        for spec in self.wells:
            well = normalize_well(spec.well, geometry)
            if well in seen:
                raise InputError(f"plate design {self.name}: well {well} is listed twice")
            seen.add(well)
            if spec.role not in ROLES:
                raise InputError(f"well {well}: unknown role {spec.role!r}; use one of {ROLES}")
            if spec.role in ("sample", "positive_control") and spec.sample not in self.responses:
                raise InputError(
                    f"well {well}: sample {spec.sample!r} has no entry in responses "
                    f"({sorted(self.responses)})"
                )
            normalized.append(dataclasses.replace(spec, well=well))
        self.wells = normalized
        self.field_shape = (int(self.field_shape[0]), int(self.field_shape[1]))
        self.channel_names = tuple(self.channel_names)
        self.stains = tuple(self.stains)
        if len(self.channel_names) != len(self.stains):
            raise InputError(
                f"{len(self.channel_names)} channel names for {len(self.stains)} stains"
            )
        unknown = sorted(set(self.vehicle_fractions) - set(CELL_CLASSES))
        if unknown:
            raise InputError(f"vehicle_fractions has unknown classes {unknown}")

    def to_json(self) -> dict:
        """JSON form (``truth/design.json``)."""
        data = dataclasses.asdict(self)
        data["field_shape"] = list(self.field_shape)
        data["confounders"] = self.confounders.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> PlateDesign:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        data["wells"] = [WellDesign(**w) for w in data["wells"]]
        data["responses"] = {k: SampleResponse(**v) for k, v in data["responses"].items()}
        data["field_shape"] = tuple(data["field_shape"])
        data["channel_names"] = tuple(data["channel_names"])
        data["stains"] = tuple(data["stains"])
        data["confounders"] = Confounders.from_json(data.get("confounders"))
        return cls(**data)

    def restricted_to(self, wells: Iterable[str]) -> PlateDesign:
        """The same design with only the given wells imaged."""
        geometry = PlateGeometry.from_size(self.geometry)
        wanted = {normalize_well(w, geometry) for w in wells}
        missing = wanted - {w.well for w in self.wells}
        if missing:
            raise InputError(f"wells {sorted(missing)} are not in plate design {self.name}")
        return dataclasses.replace(self, wells=[w for w in self.wells if w.well in wanted])


def hill_effect(concentration_molar: float | np.ndarray, ic50_molar: float, slope: float):
    """Fraction of the maximal effect at a concentration: ``c^h / (c^h + IC50^h)``.

    Examples
    --------
    >>> float(hill_effect(20e-9, 20e-9, 1.0))
    0.5
    """
    concentration = np.asarray(concentration_molar, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(concentration > 0, (concentration / ic50_molar) ** slope, 0.0)
    return ratio / (1.0 + ratio)


def expected_well_response(
    design: PlateDesign, spec: WellDesign, timepoint: int = 0
) -> tuple[dict[str, float], float]:
    """Design class fractions and relative cell count of one well at one timepoint."""
    vehicle = {name: float(design.vehicle_fractions.get(name, 0.0)) for name in CELL_CLASSES}
    total = sum(vehicle.values())
    vehicle = {name: value / total for name, value in vehicle.items()}
    if spec.role in ("negative_control", "empty") or spec.sample not in design.responses:
        return vehicle, 1.0
    response = design.responses[spec.sample]
    if spec.role == "positive_control":
        effect_apoptosis = effect_count = design.positive_control_effect
    else:
        effect_apoptosis = float(
            hill_effect(
                spec.concentration_molar,
                response.ic50_apoptosis_molar,
                response.hill_slope_apoptosis,
            )
        )
        effect_count = float(
            hill_effect(
                spec.concentration_molar,
                response.ic50_cell_count_molar,
                response.hill_slope_cell_count,
            )
        )
    build_up = (timepoint + 1) / design.timepoints
    effect_apoptosis *= build_up
    effect_count *= build_up
    apoptotic0 = vehicle["early_apoptotic"] + vehicle["late_apoptotic"]
    induced = max(response.max_apoptotic_fraction - apoptotic0, 0.0) * effect_apoptosis
    necrotic = vehicle["necrotic"] + response.max_necrotic_fraction * effect_apoptosis
    fractions = {
        "early_apoptotic": vehicle["early_apoptotic"] + induced * (1 - response.late_share),
        "late_apoptotic": vehicle["late_apoptotic"] + induced * response.late_share,
        "necrotic": necrotic,
    }
    fractions["viable"] = max(1.0 - sum(fractions.values()), 0.0)
    fractions = {name: fractions[name] for name in CELL_CLASSES}
    relative_count = 1.0 - (1.0 - response.min_relative_cell_count) * effect_count
    return fractions, relative_count


@dataclass
class SimulatedPlate:
    """Where :func:`simulate_plate` wrote things.

    ``images`` is the export folder (or the ``.zarr`` plate), ``platemap`` the plate-map
    CSV, ``truth`` the folder with ``cells.parquet``, ``wells.csv``, ``fields.csv``,
    ``labels/`` and ``design.json``.
    """

    root: Path
    images: Path
    platemap: Path
    truth: Path
    layout: str
    n_images: int
    n_cells: int


def _acquisition_times(design: PlateDesign) -> list[str]:
    start = dt.datetime(2026, 1, 5, 9, 0, 0)
    return [
        (start + dt.timedelta(hours=design.timepoint_interval_h * t)).isoformat()
        for t in range(design.timepoints)
    ]


def write_platemap(design: PlateDesign, path: str | Path) -> Path:
    """Write the design's plate map (``well, sample, compound, concentration, unit, role``).

    Concentrations are written in nM (vehicle wells 0).
    """
    rows = []
    for spec in design.wells:
        rows.append(
            {
                "well": spec.well,
                "sample": spec.sample,
                "compound": spec.compound,
                "concentration": _format_nanomolar(spec.concentration_molar),
                "unit": "nM",
                "role": spec.role,
            }
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _format_nanomolar(concentration_molar: float) -> str:
    value = concentration_molar * 1e9
    return f"{value:.6g}"


def simulate_plate(
    design: PlateDesign,
    out_dir: str | Path,
    layout: str = "imagexpress",
    *,
    compression: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SimulatedPlate:
    """Render a plate and write it as a microscope export (or a Zarr plate) with its truth.

    Parameters
    ----------
    design : PlateDesign
    out_dir : path
        Folder to create: ``export/`` (the vendor files and side-car metadata) or
        ``<plate>.zarr``, ``platemap.csv`` and ``truth/``.
    layout : str
        ``imagexpress``, ``operetta``, ``cellvoyager`` (file naming of
        :mod:`screenlib.ingest.conventions`) or ``zarr``.
    compression : str, optional
        TIFF compression (``"zlib"``); None writes uncompressed TIFFs as the vendors do.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Allow writing into a non-empty ``out_dir``.

    Returns
    -------
    SimulatedPlate
    """
    layout = layout.lower()
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if compression not in (None, "zlib", "none"):
        raise InputError(f"TIFF compression {compression!r}: use 'zlib' or none")
    compression = None if compression == "none" else compression
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir} is not empty; choose a new folder or pass overwrite")
        # remove only what a previous simulation wrote (a README beside it stays)
        for stale in (out_dir / "export", out_dir / "truth", out_dir / f"{design.name}.zarr"):
            if stale.is_dir():
                shutil.rmtree(stale)
    truth_dir = out_dir / "truth"
    (truth_dir / "labels").mkdir(parents=True, exist_ok=True)
    n_channels = len(design.stains)
    times = _acquisition_times(design)
    geometry = PlateGeometry.from_size(design.geometry)
    wells = [spec.well for spec in design.wells if spec.role != "empty"]
    if not wells:
        raise InputError(f"plate design {design.name} images no well (all empty)")

    writer = _make_writer(design, out_dir, layout, compression, wells, times, geometry)
    mess = _PlateMess.of(design)
    profile = mess.profile
    cell_tables, well_rows, field_rows = [], [], []
    n_images = 0
    spec_by_well = {spec.well: spec for spec in design.wells}
    bar = _progress(len(wells) * design.fields_per_well, progress, design.name)
    plate_wells = geometry.wells()
    for well in wells:
        spec = spec_by_well[well]
        # seeds follow the well's position on the plate, so a subset of wells renders
        # exactly as the same wells of the full plate
        well_index = plate_wells.index(well)
        well_rng = np.random.default_rng([design.seed, well_index, 0])
        intensity_scale = float(np.exp(design.well_intensity_cv * well_rng.standard_normal()))
        per_timepoint: dict[int, list[pd.DataFrame]] = {t: [] for t in range(design.timepoints)}
        for field_index in range(design.fields_per_well):
            stack = np.empty(
                (design.timepoints, n_channels, design.z_planes, *design.field_shape), np.uint16
            )
            for timepoint in range(design.timepoints):
                rng = np.random.default_rng([design.seed, well_index, 1 + field_index, timepoint])
                fractions, relative_count = expected_well_response(design, spec, timepoint)
                density = mess.density.get(well, 1.0)
                n_cells = int(rng.poisson(design.cells_per_field * relative_count * density))
                probabilities = np.array([fractions[name] for name in CELL_CLASSES])
                counts = rng.multinomial(n_cells, probabilities / probabilities.sum())
                defocused = rng.random() < design.defocus_probability
                defocus = float(rng.uniform(1.5, 3.0)) if defocused else 0.0
                simulated = render_field(
                    rng,
                    shape=design.field_shape,
                    pixel_size_um=design.pixel_size_um,
                    class_counts=dict(zip(CELL_CLASSES, counts.tolist(), strict=True)),
                    stains=design.stains,
                    defocus_sigma_px=defocus,
                    illumination=profile,
                    intensity_scale=intensity_scale,
                    z_planes=design.z_planes,
                    z_defocus_step_px=design.z_step_um / design.pixel_size_um * 0.75,
                    model=mess.model,
                    **mess.field_options(design, well_index, well, field_index, timepoint),
                )
                planes = (
                    simulated.z_stack if simulated.z_stack is not None else simulated.channels[None]
                )
                stack[timepoint] = np.moveaxis(planes, 0, 1)  # (C, Z, Y, X)
                _write_labels(
                    truth_dir / "labels" / f"{well}_f{field_index}_t{timepoint}.tif",
                    simulated.labels,
                )
                cells = simulated.cells.copy()
                cells.insert(0, "timepoint", timepoint)
                cells.insert(0, "field", field_index)
                cells.insert(0, "well", well)
                per_timepoint[timepoint].append(cells)
                field_rows.append(
                    {
                        "well": well,
                        "field": field_index,
                        "timepoint": timepoint,
                        "n_cells": len(cells),
                        "n_debris": simulated.n_debris,
                        "defocus_sigma_px": defocus,
                        "intensity_scale": intensity_scale,
                        **mess.field_truth(design, well_index, well, field_index, timepoint),
                        "touching_fraction": float(cells["touching"].mean()) if len(cells) else 0.0,
                    }
                )
            n_images += writer(well, field_index, stack)
            if bar is not None:
                bar.update(1)
        for timepoint, tables in per_timepoint.items():
            cells = pd.concat(tables, ignore_index=True)
            cell_tables.append(cells)
            well_rows.append(_well_truth(design, spec, timepoint, cells))
    if bar is not None:
        bar.close()
    writer.finish()  # type: ignore[attr-defined]

    cells_all = pd.concat(cell_tables, ignore_index=True)
    cells_all.to_parquet(truth_dir / "cells.parquet", index=False)
    wells_table = pd.DataFrame(well_rows)
    wells_table.to_csv(truth_dir / "wells.csv", index=False, float_format="%.6g")
    pd.DataFrame(field_rows).to_csv(truth_dir / "fields.csv", index=False, float_format="%.6g")
    (truth_dir / "design.json").write_text(
        json.dumps({"layout": layout, "design": design.to_json()}, indent=1) + "\n"
    )
    platemap = write_platemap(design, out_dir / "platemap.csv")
    return SimulatedPlate(
        root=out_dir,
        images=writer.target,  # type: ignore[attr-defined]
        platemap=platemap,
        truth=truth_dir,
        layout=layout,
        n_images=n_images,
        n_cells=len(cells_all),
    )


@dataclass
class _PlateMess:
    """The plate-level draws of a design's confounders (none for a clean design).

    Every draw uses its own seed stream, so a clean design renders exactly as before and
    switching one confounder on leaves the others' draws unchanged.
    """

    confounders: Confounders
    profile: np.ndarray
    model: CellModel
    density: dict[str, float]
    artefacts: dict[tuple[str, int, int], str]
    hot_pixels: list[tuple[int, int, int, int]]

    @classmethod
    def of(cls, design: PlateDesign) -> _PlateMess:
        mess = design.confounders
        falloff = (
            design.illumination_falloff
            if mess.illumination_falloff is None
            else mess.illumination_falloff
        )
        profile = vignetting_profile(design.field_shape, falloff, mess.illumination_center)
        model = CellModel()
        if mess.mitotic_fraction is not None:
            model = dataclasses.replace(model, mitotic_fraction=mess.mitotic_fraction)
        rng = np.random.default_rng([design.seed, 998])
        density: dict[str, float] = {}
        vehicle = [w.well for w in design.wells if w.role == "negative_control"]
        if mess.seeding_failure and vehicle:
            density[vehicle[int(rng.integers(len(vehicle)))]] = mess.seeding_failure_density
        artefacts: dict[tuple[str, int, int], str] = {}
        samples = [w.well for w in design.wells if w.role == "sample"]
        for name, wanted in (("fibre", mess.fibre), ("precipitate", mess.precipitate)):
            if wanted and samples:
                key = (
                    samples[int(rng.integers(len(samples)))],
                    int(rng.integers(design.fields_per_well)),
                    int(rng.integers(design.timepoints)),
                )
                artefacts[key] = artefacts.get(key, "") + name
        hot = (
            hot_pixel_map(
                design.seed, design.field_shape, len(design.stains), mess.hot_pixels_per_megapixel
            )
            if mess.hot_pixels_per_megapixel > 0
            else []
        )
        return cls(mess, profile, model, density, artefacts, hot)

    def stain_gain(self, design: PlateDesign, well_index: int, timepoint: int) -> dict:
        mess = self.confounders
        if not (mess.stain_gain_cv > 0 or mess.timepoint_gain_step):
            return {}
        rng = np.random.default_rng([design.seed, well_index, 0, 1 + timepoint])
        gain = np.exp(mess.stain_gain_cv * rng.standard_normal(len(design.stains)))
        step = 1.0 + mess.timepoint_gain_step * timepoint
        return {
            stain: float(g * (step if stain in ("annexin_v", "pi") else 1.0))
            for stain, g in zip(design.stains, gain, strict=True)
        }

    def field_options(
        self, design: PlateDesign, well_index: int, well: str, field_index: int, timepoint: int
    ) -> dict:
        mess = self.confounders
        artefact = self.artefacts.get((well, field_index, timepoint), "")
        options: dict = {
            "debris_objects_per_cell": mess.debris_per_cell,
            "clump_fraction": mess.clump_fraction,
            "stain_gain": self.stain_gain(design, well_index, timepoint) or None,
            "fibre": "fibre" in artefact,
            "precipitate": "precipitate" in artefact,
            "hot_pixels": self.hot_pixels,
        }
        if mess.bleed_through is not None:
            options["bleed_through"] = {("annexin_v", "pi"): mess.bleed_through}
        return options

    def field_truth(
        self, design: PlateDesign, well_index: int, well: str, field_index: int, timepoint: int
    ) -> dict:
        if not self.confounders.active():
            return {}
        gains = self.stain_gain(design, well_index, timepoint)
        return {
            **{f"gain_{stain}": gain for stain, gain in gains.items()},
            "artefact": self.artefacts.get((well, field_index, timepoint), ""),
            "seeding_density": self.density.get(well, 1.0),
        }


def _progress(total: int, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"simulate {name}", unit="field")


def _well_truth(design: PlateDesign, spec: WellDesign, timepoint: int, cells: pd.DataFrame) -> dict:
    fractions, relative_count = expected_well_response(design, spec, timepoint)
    objects = cells.get("object_class", pd.Series("cell", index=cells.index)).astype(str)
    debris = objects == "debris"
    cells = cells[~debris]
    n_cells = len(cells)
    counts = cells["cell_class"].value_counts()
    row: dict = {
        "well": spec.well,
        "timepoint": timepoint,
        "sample": spec.sample,
        "compound": spec.compound,
        "concentration_molar": spec.concentration_molar,
        "role": spec.role,
        "n_cells": n_cells,
    }
    for name in CELL_CLASSES:
        row[f"n_{name}"] = int(counts.get(name, 0))
    row["n_debris_objects"] = int(debris.sum())
    row["n_mitotic"] = int((objects[~debris] == "mitotic").sum())
    row["n_fragmented"] = int((objects[~debris] == "fragmented").sum())
    n_apoptotic = row["n_early_apoptotic"] + row["n_late_apoptotic"]
    row["n_apoptotic"] = n_apoptotic
    row["apoptotic_fraction"] = n_apoptotic / n_cells if n_cells else math.nan
    for name in CELL_CLASSES:
        row[f"fraction_{name}"] = row[f"n_{name}"] / n_cells if n_cells else math.nan
    row["expected_apoptotic_fraction"] = fractions["early_apoptotic"] + fractions["late_apoptotic"]
    for name in CELL_CLASSES:
        row[f"expected_fraction_{name}"] = fractions[name]
    row["expected_relative_cell_count"] = relative_count
    row["expected_n_cells"] = relative_count * design.cells_per_field * design.fields_per_well
    response = design.responses.get(spec.sample)
    row["ic50_apoptosis_molar"] = response.ic50_apoptosis_molar if response else math.nan
    row["ic50_cell_count_molar"] = response.ic50_cell_count_molar if response else math.nan
    row["hill_slope_apoptosis"] = response.hill_slope_apoptosis if response else math.nan
    row["hill_slope_cell_count"] = response.hill_slope_cell_count if response else math.nan
    return row


def _write_labels(path: Path, labels: np.ndarray) -> None:
    tifffile.imwrite(path, labels.astype(np.int32, copy=False), compression="zlib")


class _TiffExportWriter:
    """Writes each field's planes under the vendor's file names, then its side-car files."""

    def __init__(self, design, target, convention, compression, wells, times, geometry):
        from screenlib.ingest.conventions import ExportInfo

        self.design = design
        self.target = target
        self.convention = convention
        self.compression = compression
        self.times = times
        self.info = ExportInfo(
            plate=design.name,
            wells=wells,
            n_fields=design.fields_per_well,
            channel_names=list(design.channel_names),
            image_shape=design.field_shape,
            pixel_size_um=design.pixel_size_um,
            n_timepoints=design.timepoints,
            n_z=design.z_planes,
            plate_size=geometry.n_wells,
            acquisition_times=times,
        )
        target.mkdir(parents=True, exist_ok=True)

    def __call__(self, well: str, field_index: int, stack: np.ndarray) -> int:
        from screenlib.ingest.conventions import export_relpath, imagexpress_tiff_description

        n_t, n_c, n_z = stack.shape[:3]
        written = 0
        for timepoint in range(n_t):
            for z in range(n_z):
                for channel in range(n_c):
                    relpath = export_relpath(
                        self.convention,
                        plate=self.design.name,
                        well=well,
                        field=field_index,
                        channel=channel,
                        timepoint=timepoint,
                        z=z,
                        n_fields=self.design.fields_per_well,
                        n_channels=n_c,
                        n_timepoints=n_t,
                        n_z=n_z,
                    )
                    path = self.target / relpath
                    path.parent.mkdir(parents=True, exist_ok=True)
                    options: dict = {"metadata": None}
                    if self.compression:
                        options["compression"] = self.compression
                        options["compressionargs"] = {"level": 9}
                    if self.convention == "imagexpress":
                        options["description"] = imagexpress_tiff_description(
                            self.info, channel=channel, acquisition_time=self.times[timepoint]
                        )
                        options["software"] = "MetaSeries"
                    tifffile.imwrite(path, stack[timepoint, channel, z], **options)
                    written += 1
        return written

    def finish(self) -> None:
        from screenlib.ingest.conventions import write_vendor_metadata

        write_vendor_metadata(self.convention, self.target, self.info)


class _ZarrWriter:
    """Writes each field into an OME-Zarr plate created up front."""

    def __init__(self, design, target, wells, times, geometry):
        from screenlib.store import PlateLayout, create_plate

        layout = PlateLayout(
            name=design.name,
            wells=wells,
            channel_names=list(design.channel_names),
            shape=(
                design.timepoints,
                len(design.stains),
                design.z_planes,
                *design.field_shape,
            ),
            dtype="uint16",
            n_fields=design.fields_per_well,
            pixel_size_um=design.pixel_size_um,
            z_step_um=design.z_step_um if design.z_planes > 1 else None,
            geometry=geometry,
            acquisition_times=times,
            vendor_metadata={"source": "screenlib.simulate", "stains": list(design.stains)},
        )
        self.target = target
        self.plate = create_plate(target, layout, overwrite=True)

    def __call__(self, well: str, field_index: int, stack: np.ndarray) -> int:
        self.plate.write_field(well, field_index, stack)
        return int(np.prod(stack.shape[:3]))

    def finish(self) -> None:
        return None


def _make_writer(design, out_dir, layout, compression, wells, times, geometry):
    if layout == "zarr":
        return _ZarrWriter(design, out_dir / f"{design.name}.zarr", wells, times, geometry)
    return _TiffExportWriter(
        design, out_dir / "export", layout, compression, wells, times, geometry
    )


# --- the committed example plate -------------------------------------------------------------

#: IC50s of milademetan on neuroblastoma lines (MTT, 72 h; seed document, MedChemExpress)
MILADEMETAN_IC50_NM = {
    "SK-N-SH": 21.9,
    "SH-SY5Y": 17.7,
    "IMR-32": 52.63,
    "IMR-5": 25.7,
    "LAN-5": 44.1,
}


def example_plate_design(
    *,
    seed: int = 20260105,
    fields_per_well: int = 2,
    field_shape: Sequence[int] = (168, 168),
    pixel_size_um: float = 1.3,
    cells_per_field: float = 65.0,
    timepoints: int = 1,
    z_planes: int = 1,
) -> PlateDesign:
    """The committed example: milademetan on five neuroblastoma lines, 96-well plate.

    Layout: rows A-E hold SK-N-SH, SH-SY5Y, IMR-32, IMR-5 and LAN-5; rows F-H repeat
    SK-N-SH, SH-SY5Y and IMR-32 (replicates, so three lines get duplicate curves). Column 1
    is vehicle (DMSO, 0.1 %), columns 2-11 a 10-point 3-fold dilution of milademetan from
    10 µM (column 2) down to 0.51 nM (column 11), column 12 the positive control
    (staurosporine 1 µM).

    The IC50s of the seed (MTT viability, 72 h) are used for both readouts, the apoptotic
    fraction and the cell count, so a run on the example should give them back; Hill slopes
    1.2 (apoptosis) and 1.0 (count). Fields are 168 x 168 pixels of 1.3 µm (a 10x objective
    with 2 x 2 binning, 218 µm across) with ~65 nuclei each in vehicle wells, two per well:
    ~130 cells per vehicle well and the whole plate (zlib TIFFs) stays under 20 MB.
    """
    rows = "ABCDEFGH"
    lines = list(MILADEMETAN_IC50_NM)
    row_samples = lines + lines[:3]
    concentrations = [10e-6 / 3**step for step in range(10)]
    wells = []
    for row, sample in zip(rows, row_samples, strict=True):
        wells.append(WellDesign(f"{row}01", sample, "DMSO", 0.0, "negative_control"))
        for column, concentration in enumerate(concentrations, start=2):
            wells.append(
                WellDesign(f"{row}{column:02d}", sample, "milademetan", concentration, "sample")
            )
        wells.append(WellDesign(f"{row}12", sample, "staurosporine", 1e-6, "positive_control"))
    responses = {
        line: SampleResponse(
            ic50_apoptosis_molar=ic50 * 1e-9,
            ic50_cell_count_molar=ic50 * 1e-9,
            hill_slope_apoptosis=1.2,
            hill_slope_cell_count=1.0,
        )
        for line, ic50 in MILADEMETAN_IC50_NM.items()
    }
    return PlateDesign(
        name="MilademetanNB",
        wells=wells,
        responses=responses,
        geometry=96,
        cells_per_field=cells_per_field,
        fields_per_well=fields_per_well,
        timepoints=timepoints,
        z_planes=z_planes,
        field_shape=(int(field_shape[0]), int(field_shape[1])),
        pixel_size_um=pixel_size_um,
        seed=seed,
    )


def messy_plate_design(
    *,
    geometry: int = 96,
    seed: int = 20261207,
    timepoints: int = 2,
    fields_per_well: int = 2,
    field_shape: Sequence[int] = (168, 168),
    pixel_size_um: float = 1.3,
    cells_per_field: float = 65.0,
    confounders: Confounders | None = None,
) -> PlateDesign:
    """The example's lines and compound on a plate with confounders (all on by default).

    96 wells: the example layout (:func:`example_plate_design`). 384 wells: every row one of
    the five lines in turn; columns 1, 13 and 24 vehicle, 2-11 and 14-23 two interleaved
    10-point dilutions of milademetan (10 µM and 10/sqrt(3) µM down in 3-fold steps, a
    20-point curve per row), column 12 the positive control.
    """
    confounders = Confounders.messy() if confounders is None else confounders
    base = example_plate_design(
        seed=seed,
        fields_per_well=fields_per_well,
        field_shape=field_shape,
        pixel_size_um=pixel_size_um,
        cells_per_field=cells_per_field,
        timepoints=timepoints,
    )
    if geometry == 96:
        return dataclasses.replace(base, name="MessyNB", confounders=confounders)
    if geometry != 384:
        raise InputError(f"messy_plate_design: geometry {geometry}; use 96 or 384")
    rows = PlateGeometry.from_size(384).row_names
    lines = list(MILADEMETAN_IC50_NM)
    wells = []
    for index, row in enumerate(rows):
        sample = lines[index % len(lines)]
        for column in (1, 13, 24):
            wells.append(WellDesign(f"{row}{column:02d}", sample, "DMSO", 0.0, "negative_control"))
        for step in range(10):
            for column, top in ((2 + step, 10e-6), (14 + step, 10e-6 / math.sqrt(3))):
                wells.append(
                    WellDesign(f"{row}{column:02d}", sample, "milademetan", top / 3**step, "sample")
                )
        wells.append(WellDesign(f"{row}12", sample, "staurosporine", 1e-6, "positive_control"))
    return dataclasses.replace(
        base, name="MessyNB384", geometry=384, wells=wells, confounders=confounders
    )
