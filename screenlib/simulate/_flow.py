"""Simulate a flow-cytometry plate: one FCS 3.1 file per well with per-event truth.

The dose design is the image plates' (:class:`~screenlib.simulate.PlateDesign`, e.g. the
example's milademetan plate): each well's class fractions and relative cell count come from
:func:`~screenlib.simulate.expected_well_response`. Per well the number of single cells is
Poisson around ``events_per_well x relative count`` (plate cytometers sample a fixed volume),
classes are drawn from a multinomial law, and every cell gets log-normal scatter and
fluorescence by class:

* Annexin V-FITC bright on early and late apoptotic cells, PI bright on late apoptotic and
  necrotic cells; apoptotic cells shrink (FSC-A x0.85 early, x0.72 late) and grow granular
  (SSC-A up).
* debris (fragments, apoptotic bodies): low FSC-A / SSC-A, Annexin and PI anywhere, more of it
  where more cells died; doublets: two cells of the well passing together (areas and
  fluorescence add, FSC-H hardly grows).
* spillover: the detectors see ``true @ S`` (FITC into the PI detector, PI into FITC) plus
  electronic noise; ``S`` is written as ``$SPILLOVER``.

Truth per event (``truth/events.parquet``: well, event, true_class in viable /
early_apoptotic / late_apoptotic / necrotic / debris / doublet) and per well
(``truth/wells.csv``: realised fractions among single cells, design values, IC50s).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from screenlib.errors import InputError
from screenlib.platemap import PlateGeometry
from screenlib.simulate._field import CELL_CLASSES
from screenlib.simulate._plate_design import (
    PlateDesign,
    WellDesign,
    _well_truth,
    expected_well_response,
    write_platemap,
)

FLOW_CHANNELS = ("FSC-A", "FSC-H", "SSC-A", "FITC-A", "PE-Texas Red-A", "Time")
FLOW_LABELS = ("", "", "", "Annexin V-FITC", "PI", "")
EVENT_CLASSES = (*CELL_CLASSES, "debris", "doublet")
#: single cells per vehicle well of the committed example (keeps it near 3 MB)
FLOW_EXAMPLE_EVENTS = 1500


@dataclass(frozen=True)
class FlowEventModel:
    """Scatter and fluorescence of simulated events (linear medians, natural-log SDs)."""

    fsc_median: float = 60000.0
    fsc_sdlog: float = 0.12
    ssc_median: float = 20000.0
    ssc_sdlog: float = 0.2
    height_ratio: float = 0.82  # FSC-H / FSC-A of a single cell
    height_sdlog: float = 0.03
    fsc_factor: dict[str, float] = field(
        default_factory=lambda: {
            "viable": 1.0, "early_apoptotic": 0.85, "late_apoptotic": 0.72, "necrotic": 0.8,
        }
    )  # fmt: skip
    ssc_factor: dict[str, float] = field(
        default_factory=lambda: {
            "viable": 1.0, "early_apoptotic": 1.25, "late_apoptotic": 1.4, "necrotic": 0.9,
        }
    )  # fmt: skip
    annexin_negative: float = 400.0
    annexin_positive: float = 12000.0
    pi_negative: float = 250.0
    pi_positive: float = 20000.0
    negative_sdlog: float = 0.45
    positive_sdlog: float = 0.6
    noise_sd: float = 40.0  # electronic noise of each fluorescence detector
    spillover_fitc_to_pi: float = 0.15
    spillover_pi_to_fitc: float = 0.03
    debris_fraction: float = 0.03  # debris events per single cell in a vehicle well
    debris_per_dead_cell: float = 0.3  # extra debris per induced apoptotic/necrotic cell
    debris_fsc_share: float = 0.1  # debris FSC-A median over a viable cell's
    debris_sdlog: float = 0.6
    doublet_fraction: float = 0.04
    well_intensity_cv: float = 0.08

    def spillover(self) -> np.ndarray:
        """Rows: dye (FITC, PI); columns: detector (FITC-A, PE-Texas Red-A)."""
        return np.array([[1.0, self.spillover_fitc_to_pi], [self.spillover_pi_to_fitc, 1.0]])


@dataclass
class SimulatedFlowPlate:
    """Where :func:`simulate_flow_plate` wrote things."""

    root: Path
    fcs: Path  # the folder of per-well files, or the single file
    platemap: Path
    truth: Path
    n_events: int
    n_cells: int


def _lognormal(rng, median: float | np.ndarray, sdlog: float, n: int) -> np.ndarray:
    return np.asarray(median) * np.exp(sdlog * rng.standard_normal(n))


def _cells(rng, classes: np.ndarray, model: FlowEventModel, scale: float) -> np.ndarray:
    """True (uncompensated-free) values: columns FSC-A, FSC-H, SSC-A, FITC, PI."""
    n = len(classes)
    fsc_factor = np.array([model.fsc_factor[c] for c in classes]) if n else np.empty(0)
    ssc_factor = np.array([model.ssc_factor[c] for c in classes]) if n else np.empty(0)
    fsc = _lognormal(rng, model.fsc_median * fsc_factor, model.fsc_sdlog, n)
    height = fsc * _lognormal(rng, model.height_ratio, model.height_sdlog, n)
    ssc = _lognormal(rng, model.ssc_median * ssc_factor, model.ssc_sdlog, n)
    annexin_on = np.isin(classes, ["early_apoptotic", "late_apoptotic"])
    pi_on = np.isin(classes, ["late_apoptotic", "necrotic"])
    annexin = np.where(
        annexin_on,
        _lognormal(rng, model.annexin_positive, model.positive_sdlog, n),
        _lognormal(rng, model.annexin_negative, model.negative_sdlog, n),
    )
    pi = np.where(
        pi_on,
        _lognormal(rng, model.pi_positive, model.positive_sdlog, n),
        _lognormal(rng, model.pi_negative, model.negative_sdlog, n),
    )
    return np.column_stack([fsc, height, ssc, annexin * scale, pi * scale])


def _debris(rng, n: int, model: FlowEventModel) -> np.ndarray:
    # a broad continuum reaching up to the shrunken cells: a few fragments overlap them
    fsc = _lognormal(rng, model.debris_fsc_share * model.fsc_median, model.debris_sdlog, n)
    height = fsc * _lognormal(rng, model.height_ratio, 0.1, n)
    ssc = _lognormal(rng, 0.15 * model.ssc_median, model.debris_sdlog, n)
    annexin = _lognormal(rng, 3000.0, 1.0, n)
    pi = _lognormal(rng, 3000.0, 1.0, n)
    return np.column_stack([fsc, height, ssc, annexin, pi])


def _doublets(rng, cells: np.ndarray, n: int) -> np.ndarray:
    if n == 0 or len(cells) < 2:
        return np.empty((0, 5))
    first = cells[rng.integers(0, len(cells), n)]
    second = cells[rng.integers(0, len(cells), n)]
    out = first + second
    out[:, 1] = np.maximum(first[:, 1], second[:, 1]) * rng.uniform(1.0, 1.2, n)
    return out


def simulate_flow_well(
    rng: np.random.Generator,
    fractions: dict[str, float],
    n_cells_expected: float,
    dead_extra: float,
    model: FlowEventModel,
) -> tuple[np.ndarray, np.ndarray]:
    """Observed events ``(n, 6)`` in :data:`FLOW_CHANNELS` order and their true classes.

    ``dead_extra`` is the share of induced dead cells (apoptotic + necrotic above vehicle),
    which adds debris.
    """
    n_cells = int(rng.poisson(n_cells_expected))
    probabilities = np.array([fractions[c] for c in CELL_CLASSES])
    counts = rng.multinomial(n_cells, probabilities / probabilities.sum())
    classes = np.repeat(np.array(CELL_CLASSES, dtype=object), counts)
    scale = float(np.exp(model.well_intensity_cv * rng.standard_normal()))
    cells = _cells(rng, classes, model, scale)
    n_debris = int(
        rng.poisson(n_cells * (model.debris_fraction + model.debris_per_dead_cell * dead_extra))
    )
    n_doublets = int(rng.poisson(n_cells * model.doublet_fraction))
    values = np.vstack([cells, _debris(rng, n_debris, model), _doublets(rng, cells, n_doublets)])
    truth = np.concatenate(
        [classes, np.full(n_debris, "debris", dtype=object), np.full(n_doublets, "doublet")]
    ).astype(object)
    values[:, 3:5] = values[:, 3:5] @ model.spillover() + model.noise_sd * rng.standard_normal(
        (len(values), 2)
    )
    order = rng.permutation(len(values))  # events arrive in random order
    values, truth = values[order], truth[order]
    time = np.sort(rng.uniform(0, 60.0, len(values)))
    return np.column_stack([values, time]).astype(np.float32), truth


def simulate_flow_plate(
    design: PlateDesign,
    out_dir: str | Path,
    *,
    events_per_well: int = 10000,
    model: FlowEventModel | None = None,
    single_file: bool = False,
    overwrite: bool = False,
) -> SimulatedFlowPlate:
    """Write a flow plate of ``design`` (first timepoint) as FCS 3.1 files with truth.

    Parameters
    ----------
    design
        Wells, samples, concentrations, IC50s (the image plates' design).
    out_dir
        Gets ``fcs/<plate>_<well>.fcs`` (or ``<plate>.fcs`` with one data set per well when
        ``single_file``), ``platemap.csv`` and ``truth/``.
    events_per_well
        Expected single cells of a vehicle well.
    model
        Event model (defaults: spillover and debris on).
    """
    from screenlib.flow.fcs import spillover_text, write_fcs

    model = model or FlowEventModel()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir} is not empty; choose a new folder or pass overwrite")
        for stale in (out_dir / "fcs", out_dir / "truth"):
            if stale.is_dir():
                shutil.rmtree(stale)
        (out_dir / f"{design.name}.fcs").unlink(missing_ok=True)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    plate_wells = PlateGeometry.from_size(design.geometry).wells()
    spill = spillover_text(["FITC-A", "PE-Texas Red-A"], model.spillover())
    data_sets, truth_tables, well_rows = [], [], []
    vehicle, _ = expected_well_response(design, WellDesign("A01", "", "", 0.0, "negative_control"))
    dead0 = 1.0 - vehicle["viable"]
    for spec in design.wells:
        if spec.role == "empty":
            continue
        rng = np.random.default_rng([design.seed, plate_wells.index(spec.well), 7])
        fractions, relative_count = expected_well_response(design, spec, 0)
        dead_extra = max(1.0 - fractions["viable"] - dead0, 0.0)
        events, truth = simulate_flow_well(
            rng, fractions, events_per_well * relative_count, dead_extra, model
        )
        keywords = {
            "$WELLID": spec.well,
            "$SPILLOVER": spill,
            "$CYT": "screenlib simulated plate cytometer",
            "$SRC": f"{design.name} {spec.sample} {spec.compound} {spec.concentration_molar:g} M",
            "$PLATENAME": design.name,
        }
        data_sets.append((spec.well, events, keywords))
        truth_tables.append(
            pd.DataFrame({"well": spec.well, "event": np.arange(len(truth)), "true_class": truth})
        )
        singles = pd.DataFrame({"cell_class": truth[np.isin(truth, CELL_CLASSES)]})
        row = _well_truth(design, spec, 0, singles)
        row["expected_n_cells"] = relative_count * events_per_well
        row["n_debris"] = int(np.sum(truth == "debris"))
        row["n_doublets"] = int(np.sum(truth == "doublet"))
        well_rows.append(row)
    if not data_sets:
        raise InputError(f"plate design {design.name} has no well to acquire (all empty)")

    if single_file:
        target = out_dir / f"{design.name}.fcs"
        write_fcs(target, [(e, k) for _, e, k in data_sets], FLOW_CHANNELS, FLOW_LABELS)
    else:
        target = out_dir / "fcs"
        target.mkdir(parents=True, exist_ok=True)
        for well, events, keywords in data_sets:
            write_fcs(target / f"{design.name}_{well}.fcs", [(events, keywords)],
                      FLOW_CHANNELS, FLOW_LABELS)  # fmt: skip
    events_truth = pd.concat(truth_tables, ignore_index=True)
    events_truth["true_class"] = pd.Categorical(events_truth["true_class"], EVENT_CLASSES)
    events_truth.to_parquet(truth_dir / "events.parquet", index=False)
    pd.DataFrame(well_rows).to_csv(truth_dir / "wells.csv", index=False, float_format="%.6g")
    (truth_dir / "design.json").write_text(
        json.dumps(
            {
                "layout": "fcs-single-file" if single_file else "fcs",
                "events_per_well": events_per_well,
                "event_model": asdict(model),
                "design": design.to_json(),
            },
            indent=1,
        )
        + "\n"
    )
    platemap = write_platemap(design, out_dir / "platemap.csv")
    singles = events_truth["true_class"].isin(CELL_CLASSES)
    return SimulatedFlowPlate(
        root=out_dir,
        fcs=target,
        platemap=platemap,
        truth=truth_dir,
        n_events=len(events_truth),
        n_cells=int(singles.sum()),
    )
