"""Assay settings: one object per assay, loadable from a TOML file, validated once at start.

Every section is a frozen dataclass with physically meaningful defaults. ``load_settings``
reads a TOML file and reports an unknown or mistyped key with its name and line number.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screenlib.errors import SettingsError


@dataclass(frozen=True)
class ChannelSettings:
    """Which stain was imaged in which channel of the plate.

    ``name`` matches a channel name in the plate (e.g. ``"w1"`` or ``"Hoechst 33342"``); a
    name that matches no channel is an error. ``index`` (0-based) is used when no name is
    given, or instead of the name when ``index_wins`` is true. ``stain`` is the name of a
    stain plugin (``hoechst``, ``annexin_v``, ``pi`` or one registered by a plugin).
    """

    stain: str
    index: int | None = None
    name: str | None = None
    index_wins: bool = False


DEFAULT_CHANNELS = (
    ChannelSettings(stain="hoechst", index=0),
    ChannelSettings(stain="annexin_v", index=1),
    ChannelSettings(stain="pi", index=2),
)


@dataclass(frozen=True)
class CorrectionSettings:
    """Camera offset, background and flat-field (illumination) correction."""

    camera_offset: float | None = None  # None: estimated per field from a low percentile
    background_radius_um: float = 30.0  # scale of the smooth background removed per channel
    flatfield: bool = True  # estimate a per-plate, per-channel illumination profile
    flatfield_max_fields: int = 48  # how many fields the profile is estimated from
    hot_pixels: bool = True  # replace lone hot pixels (sensor defects) by a neighbour


@dataclass(frozen=True)
class SegmentationSettings:
    """Nuclei segmentation (classical by default; any registered segmenter by name)."""

    segmenter: str = "classical"
    # The nucleus scale is measured from the images (per plate); every size follows it.
    # Setting one of these two overrides the measurement (the µm one needs a known pixel size).
    nucleus_diameter_px: float | None = None
    nucleus_diameter_um: float | None = None
    # None: 0.1 and 6.4 typical nucleus areas (8 and 500 um^2 for a 10 um nucleus)
    min_area_um2: float | None = None  # smaller objects are debris / apoptotic bodies
    max_area_um2: float | None = None
    smoothing_sigma_um: float | None = None  # None: 0.07 nucleus diameters
    split_touching: bool = True
    default_pixel_size_um: float = 0.65  # used when the plate does not record a pixel size


@dataclass(frozen=True)
class RingSettings:
    """The membrane ring outside each nucleus, where Annexin V binds."""

    # 4 um: the membrane of a rounded cell lies 1-3 um beyond its nucleus edge (blur included);
    # a 2.5 um ring missed part of it at 1.3 um grid pixels (measured on rendered plates)
    ring_width_um: float = 4.0
    ring_gap_um: float = 0.0
    background_width_um: float = 4.0  # local-background annulus beyond the ring
    # leave out ring pixels another nucleus' ring also reaches: a touching neighbour's bright
    # membrane set a dim cell's ring p90 there. Example plate: class accuracy 0.956 -> 0.963,
    # per-well apoptotic-fraction MAE 0.0244 -> 0.0219; a 0.65 um plate 0.963 -> 0.972, 0.0245
    # -> 0.0189 (benchmarks/accuracy_plate.py)
    exclude_neighbours: bool = True
    # an Annexin-bright neighbour's membrane light spreads past its ring by the optics' blur
    # (about 2 PSF sigmas: 1 um at 10x-20x); ring pixels within ring + margin of another
    # nucleus are left out as well, where the cell keeps enough ring pixels. Rendered messy
    # plates: viable cells in a clump with an apoptotic neighbour read positive 17 % of the
    # time without it (3 % without such a neighbour); per-well bias at 24 h / 48 h, seed 1
    # +0.010 / +0.004 -> +0.003 / -0.001, seed 2 +0.006 / +0.009 -> +0.001 / +0.006, 384
    # wells +0.007 / -0.000 -> +0.004 / -0.003; clean plates within 0.003, MAE unchanged
    # within 0.001 (benchmarks/accuracy_messy.py)
    neighbour_margin_um: float = 1.0


@dataclass(frozen=True)
class QCSettings:
    """Per-field image QC; a failing field is flagged and excluded from aggregation."""

    min_focus_score: float = 0.0  # absolute focus threshold; 0 disables it (scale varies)
    min_relative_focus: float = 0.5  # fail fields below this fraction of the plate's median
    max_saturated_fraction: float = 0.01
    min_cells_per_field: int = 5
    exclude_failed_fields: bool = True


@dataclass(frozen=True)
class GatingSettings:
    """Quadrant gates on Annexin V and PI, learned from vehicle wells unless given."""

    # Ring p90, not ring mean: a thin membrane signal is diluted by the ring's mean. On
    # rendered images analysed end to end (4 um ring less the neighbours' reach, 0.65 um
    # pixels) p90 gives the better single threshold (best-threshold accuracy 0.982 vs 0.978;
    # AUC 0.997 vs 0.996) and class accuracy 0.974 vs 0.967; on the 1.3 um example plate
    # apoptotic-fraction MAE 0.022 vs 0.027 (class accuracy 0.963 both). Compare on your own
    # plate with gating.compare_annexin_features.
    annexin_feature: str = "annexin_v_ring_p90"
    pi_feature: str = "pi_nucleus_mean"
    # "robust": median + k_mad robust SDs of the vehicle cells on a glog scale; "mixture":
    # where the positive population (fitted to all cells of the plate, the negative component
    # fixed to the vehicle estimate) makes up half of the cells, at least 2 robust SDs above
    # the vehicle median (robust gate when no positive population is found). On four rendered
    # plates (1.3, 1.0 and 0.65 um pixels) "mixture" gave the best accuracy and fractions.
    method: str = "mixture"
    k_mad: float = 4.0
    annexin_gate: float | None = None  # manual gate overrides the learned one
    pi_gate: float | None = None
    bleedthrough_annexin_to_pi: float | None = None  # None: estimated from the data
    bleedthrough_feature: str = "annexin_v_ring_mean"  # Annexin column whose signal leaks into PI
    min_area_um2: float = 8.0  # smaller objects are called debris
    min_cells_per_well: int = 50
    min_control_separation: float = 0.2  # warn when pos. - neg. control apoptotic fraction is less
    exclude_border_cells: bool = False  # call nuclei touching the field border debris
    # object classes (debris, fragments of one nucleus, mitoses) from the vehicle nuclei's
    # scale before the quadrant gates (screenlib.gating.objects)
    classify_objects: bool = True
    # divide each well's Annexin V and PI by its own negative cells' median over the vehicle's
    # (per timepoint) before gating (screenlib.gating.drift)
    normalize_stain_drift: bool = True


@dataclass(frozen=True)
class FitSettings:
    """Dose-response fitting options."""

    # apoptotic_fraction (quadrant counts), not apoptotic_fraction_mixture: on rendered plates
    # with every confounder of a real screen the mixture column read +0.014 / +0.020 high at
    # two timepoints, the counts +0.001 / +0.010 (benchmarks/accuracy_messy.py, 96 wells,
    # seeds 1-2; docs/user-guide.md)
    responses: tuple[str, ...] = ("apoptotic_fraction", "relative_cell_count")
    binomial_fractions: bool = True  # fit apoptotic fractions on counts
    n_starts: int = 6
    fix_top: float | None = None
    fix_bottom: float | None = None
    confidence_level: float = 0.95
    fix_hill: float | None = None  # e.g. 1.0 with few points (Prism's advice)
    hill_min: float = 0.1  # bounds on the Hill slope's magnitude
    hill_max: float = 10.0
    extrapolation_decades: float = 3.0  # log IC50 searched this far beyond the tested range
    inactive_p_value: float = 0.05  # F-test against a flat line (Sorger lab / thunor default)
    outlier_z: float = 5.0  # robust residual (MAD units) beyond which a well is an outlier
    plateau_fraction: float = 0.9  # share of the span the curve must reach at the tested ends
    max_plateau_uncertainty: float = 0.2  # 95 % half-range of a plateau, as a share of the span
    max_interval_decades: float = 1.0  # a wider 95 % interval on IC50 is flagged


@dataclass(frozen=True)
class FlowSettings:
    """How FCS events become cells.

    Channel names are ``$PnN`` names (``"FITC-A"``) or ``$PnS`` stain labels
    (``"Annexin V"``); None finds them: a channel whose stain label names the stain, else
    the usual detector of its dye (said in a warning, since it is a guess).

    ``debris_k``: events whose log10 FSC-A (or SSC-A) lies more than this many robust SDs
    below the vehicle cells' mode are debris. Apoptotic cells shrink (FSC-A about 0.6-0.8 of
    a viable cell's) and must stay in: 6 SDs of a typical cell population (CV 15-25 %) sits at
    0.25-0.5 of the mode, below shrunken cells and above fragments.
    ``doublet_k``: events whose log FSC-H / FSC-A ratio lies this many robust SDs below the
    vehicle singlets' mode are doublets (two cells pass together: area adds up, height not).
    """

    annexin_channel: str | None = None
    pi_channel: str | None = None
    fsc_area_channel: str | None = None
    fsc_height_channel: str | None = None
    ssc_area_channel: str | None = None
    debris_k: float = 6.0
    doublet_k: float = 5.0
    min_events_per_well: int = 1
    max_excluded_fraction: float = 0.8  # wells with more debris + doublets fail QC

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "[flow]") -> FlowSettings:
        """Build from a TOML table such as ``[flow]``; unknown keys are refused by name."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        clean: dict[str, Any] = {}
        for key, value in values.items():
            default = getattr(cls, key)
            if isinstance(default, float) and isinstance(value, int | float):
                value = float(value)
            elif isinstance(default, int) and not isinstance(default, bool):
                if not isinstance(value, int):
                    raise SettingsError(f"{where}.{key} must be an integer, got {value!r}")
            elif default is None and not (value is None or isinstance(value, str)):
                raise SettingsError(f"{where}.{key} must be a channel name, got {value!r}")
            clean[key] = value
        settings = cls(**clean)
        for key in ("debris_k", "doublet_k"):
            if not getattr(settings, key) > 0:
                raise SettingsError(f"{where}.{key} must be positive")
        if not 0 < settings.max_excluded_fraction <= 1:
            raise SettingsError(f"{where}.max_excluded_fraction must be in (0, 1]")
        return settings


@dataclass(frozen=True)
class AssaySettings:
    """All settings of one assay."""

    channels: tuple[ChannelSettings, ...] = DEFAULT_CHANNELS
    pixel_size_um: float | None = None  # None: from the plate metadata
    correction: CorrectionSettings = field(default_factory=CorrectionSettings)
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    ring: RingSettings = field(default_factory=RingSettings)
    qc: QCSettings = field(default_factory=QCSettings)
    gating: GatingSettings = field(default_factory=GatingSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    flow: FlowSettings = field(default_factory=FlowSettings)  # FCS plates only


def _key_line(text: str, section: str | None, key: str) -> int | None:
    """Best-effort 1-based line number of ``key`` inside ``[section]`` of a TOML text."""
    current: str | None = None
    key_pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*$", line)
        if header:
            current = header.group(1)
            if section is not None and current == section and key == section:
                return number
            continue
        if current == section and key_pattern.match(line):
            return number
    return None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a dataclass field annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except SettingsError as error:
                errors.append(str(error))
        raise SettingsError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation)
        return tuple(_coerce(item, item_type, where) for item in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a table, got {value!r}")
        return annotation(**value)
    return value


def settings_from_dict(
    data: dict[str, Any], text: str = "", source: str = "settings"
) -> AssaySettings:
    """Build validated ``AssaySettings`` from a parsed TOML mapping.

    Parameters
    ----------
    data
        The mapping, as ``tomllib`` returns it.
    text
        The TOML text, used only to give line numbers in error messages.
    source
        The file name used in error messages.
    """
    hints = typing.get_type_hints(AssaySettings)
    known = {f.name for f in dataclasses.fields(AssaySettings)}
    kwargs: dict[str, Any] = {}

    def where(section: str | None, key: str) -> str:
        line = _key_line(text, section, key)
        name = f"{section}.{key}" if section else key
        return f"{source}, line {line}: '{name}'" if line else f"{source}: '{name}'"

    for key, value in data.items():
        if key not in known:
            raise SettingsError(
                f"{where(None, key)} is not an assay setting; known: {', '.join(sorted(known))}"
            )
        annotation = hints[key]
        if key == "channels":
            if not isinstance(value, list) or not value:
                raise SettingsError(f"{where(None, key)}: expected a list of [[channels]] tables")
            channel_fields = {f.name for f in dataclasses.fields(ChannelSettings)}
            channels = []
            for item in value:
                if not isinstance(item, dict):
                    raise SettingsError(f"{where(None, key)}: each channel must be a table")
                for item_key in item:
                    if item_key not in channel_fields:
                        raise SettingsError(
                            f"{where('channels', item_key)} is not a channel setting; "
                            f"known: {', '.join(sorted(channel_fields))}"
                        )
                if "stain" not in item:
                    raise SettingsError(f"{where(None, key)}: every channel needs a 'stain'")
                channels.append(
                    ChannelSettings(
                        stain=_coerce(item["stain"], str, where("channels", "stain")),
                        index=_coerce(item.get("index"), int | None, where("channels", "index")),
                        name=_coerce(item.get("name"), str | None, where("channels", "name")),
                        index_wins=_coerce(
                            item.get("index_wins", False), bool, where("channels", "index_wins")
                        ),
                    )
                )
            kwargs[key] = tuple(channels)
        elif dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingsError(f"{where(None, key)}: expected a [{key}] table")
            section_hints = typing.get_type_hints(annotation)
            section_kwargs = {}
            for sub_key, sub_value in value.items():
                if sub_key not in section_hints:
                    raise SettingsError(
                        f"{where(key, sub_key)} is not a setting of [{key}]; "
                        f"known: {', '.join(sorted(section_hints))}"
                    )
                section_kwargs[sub_key] = _coerce(
                    sub_value, section_hints[sub_key], where(key, sub_key)
                )
            kwargs[key] = annotation(**section_kwargs)
        else:
            kwargs[key] = _coerce(value, annotation, where(None, key))
    settings = AssaySettings(**kwargs)
    validate_settings(settings, source)
    return settings


def validate_settings(settings: AssaySettings, source: str = "settings") -> None:
    """Raise ``SettingsError`` for values that cannot be right (negative widths and the like)."""
    segmentation = settings.segmentation
    positive = {
        name: value
        for name, value in (
            ("segmentation.nucleus_diameter_um", segmentation.nucleus_diameter_um),
            ("segmentation.nucleus_diameter_px", segmentation.nucleus_diameter_px),
            ("segmentation.min_area_um2", segmentation.min_area_um2),
            ("segmentation.max_area_um2", segmentation.max_area_um2),
        )
        if value is not None
    }
    positive |= {
        "segmentation.default_pixel_size_um": settings.segmentation.default_pixel_size_um,
        "ring.ring_width_um": settings.ring.ring_width_um,
        "gating.k_mad": settings.gating.k_mad,
        "fit.n_starts": settings.fit.n_starts,
    }
    if settings.pixel_size_um is not None:
        positive["pixel_size_um"] = settings.pixel_size_um
    for name, value in positive.items():
        if not value > 0:
            raise SettingsError(f"{source}: '{name}' must be positive, got {value}")
    non_negative = {  # 0 turns them off
        "ring.ring_gap_um": settings.ring.ring_gap_um,
        "ring.neighbour_margin_um": settings.ring.neighbour_margin_um,
    }
    for name, value in non_negative.items():
        if not value >= 0:
            raise SettingsError(f"{source}: '{name}' must be 0 or more, got {value}")
    check_fit_settings(settings.fit, source)
    flow = settings.flow
    for key in ("debris_k", "doublet_k"):
        if not getattr(flow, key) > 0:
            raise SettingsError(f"{source}: 'flow.{key}' must be positive")
    if not 0 < flow.max_excluded_fraction <= 1:
        raise SettingsError(f"{source}: 'flow.max_excluded_fraction' must be in (0, 1]")
    limits = (segmentation.min_area_um2, segmentation.max_area_um2)
    if None not in limits and limits[0] >= limits[1]:
        raise SettingsError(
            f"{source}: 'segmentation.min_area_um2' must be below 'segmentation.max_area_um2'"
        )
    stains = [channel.stain for channel in settings.channels]
    duplicates = sorted({stain for stain in stains if stains.count(stain) > 1})
    if duplicates:
        raise SettingsError(f"{source}: stain(s) {', '.join(duplicates)} assigned to two channels")
    if settings.gating.method not in ("robust", "mixture"):
        raise SettingsError(
            f"{source}: 'gating.method' must be 'robust' or 'mixture', "
            f"got {settings.gating.method!r}"
        )


def check_fit_settings(fit: FitSettings, source: str = "fit settings") -> None:
    """Raise ``SettingsError`` for fit settings that cannot work (all problems in one line)."""
    problems = []
    if not 0 < fit.hill_min < fit.hill_max:
        problems.append("'fit.hill_min' must be positive and below 'fit.hill_max'")
    if not 0 < fit.inactive_p_value < 1:
        problems.append("'fit.inactive_p_value' must lie between 0 and 1")
    if not 0 < fit.confidence_level < 1:
        problems.append("'fit.confidence_level' must lie between 0 and 1")
    if not 0.5 < fit.plateau_fraction < 1:
        problems.append("'fit.plateau_fraction' must lie between 0.5 and 1")
    for name in ("outlier_z", "max_interval_decades", "max_plateau_uncertainty", "n_starts"):
        if not getattr(fit, name) > 0:
            problems.append(f"'fit.{name}' must be positive")
    if not fit.extrapolation_decades >= 0:
        problems.append("'fit.extrapolation_decades' must not be negative")
    if fit.fix_hill is not None and not fit.fix_hill != 0:
        problems.append("'fit.fix_hill' must not be 0")
    if problems:
        raise SettingsError(f"{source}: " + "; ".join(problems))


def load_settings(path: str | Path | None) -> AssaySettings:
    """Read assay settings from a TOML file (defaults when ``path`` is None).

    Examples
    --------
    >>> load_settings(None).ring.ring_width_um
    4.0
    """
    if path is None:
        return AssaySettings()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from error
    return settings_from_dict(data, text=text, source=str(path))


def settings_to_dict(settings: AssaySettings) -> dict[str, Any]:
    """A plain mapping of ``settings`` (None values dropped, as TOML has no null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(dataclasses.asdict(settings))
