"""Plan a run: check every setting and plate map, resolve every name, list the field jobs.

:func:`plan_run` does all that can fail on the user's input before any field is analysed:
settings of every stage (analysis, gating, fit, report), plate maps, channel names, the pixel
size, stain and segmenter objects, which wells are imaged, whether vehicle wells exist, and
which finished fields of an earlier run still match the pixels they were computed from.
``screenlib run --dry-run`` prints the plan and stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from screenlib.errors import InputError, SettingsError
from screenlib.gating import gates_are_manual
from screenlib.settings import AssaySettings, validate_settings

logger = logging.getLogger(__name__)

__all__ = [
    "PlatePlan",
    "RunPlan",
    "check_gates_can_be_learned",
    "plan_plate",
    "resolve_channels",
]


@dataclass
class PlatePlan:
    """One plate of a run: where it is, how it is read, and its plate map."""

    name: str
    source: Path  # what the user gave: an export folder or a Zarr plate
    plate_path: Path  # the Zarr plate the fields are read from
    ingested: bool  # the plate was made from an export into the output folder
    platemap: pd.DataFrame
    platemap_source: str
    channel_names: list[str]
    channels: list[tuple[int, str]]  # (plate channel index, stain name) per analysed channel
    pixel_size_um: float | None
    pixel_size_source: str
    field_ids: list[tuple[str, int]]
    n_timepoints: int
    out_dir: Path
    nucleus_scale: dict | None = None  # measured at the start of the run (run.nucleus_scale)

    @property
    def n_fields(self) -> int:
        """Fields times time points: the number of field jobs."""
        return len(self.field_ids) * self.n_timepoints

    @cached_property
    def platemap_summary(self) -> str:
        """How the plate map was read (``describe_platemap``), worked out once per run."""
        from screenlib.platemap import describe_platemap

        return describe_platemap(self.platemap)


@dataclass
class RunPlan:
    """Everything a run will do, decided before any field is analysed."""

    plates: list[PlatePlan]
    settings: AssaySettings
    out_dir: Path
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines for ``--dry-run`` and the start of a run's log."""
        lines = []
        for plate in self.plates:
            stains = ", ".join(
                f"{stain} <- {plate.channel_names[index]!r} (channel {index})"
                for index, stain in plate.channels
            )
            size = (
                f"{plate.pixel_size_um:g} µm ({plate.pixel_size_source})"
                if plate.pixel_size_um
                else f"unknown ({plate.pixel_size_source}); sizes follow the measured nuclei"
            )
            wells = sorted({w for w, _ in plate.field_ids})
            lines += [
                f"plate {plate.name}: {plate.source}",
                f"  plate map: {plate.platemap_source} ({len(plate.platemap)} wells)",
                f"  {len(wells)} imaged wells, {plate.n_fields} field jobs, "
                f"{plate.n_timepoints} time point(s)",
                f"  channels: {stains}",
                f"  pixel size: {size}",
                f"  outputs: {plate.out_dir}",
            ]
        lines += [f"note: {note}" for note in self.notes]
        for plate in self.plates:
            lines += ["", plate.platemap_summary]
        return "\n".join(lines)


def check_settings(settings: AssaySettings) -> None:
    """Every stage's settings, checked once, before anything is read.

    Raises
    ------
    SettingsError
        Naming the bad key.
    """
    validate_settings(settings)
    from screenlib.plugins import get_segmenter, load_stains

    stains = load_stains()
    for number, channel in enumerate(settings.channels):
        if channel.stain not in stains:
            raise SettingsError(
                f"settings: channels[{number}] names stain {channel.stain!r}, which no "
                f"installed plugin provides; installed: {', '.join(sorted(stains))}"
            )
    nuclear = [c.stain for c in settings.channels if stains[c.stain].role == "nuclear"]
    if len(nuclear) != 1:
        raise SettingsError(
            "settings: exactly one channel must carry a nuclear stain (e.g. 'hoechst'), "
            f"found {nuclear or 'none'}"
        )
    if settings.segmentation.segmenter != "classical":  # built in: loading it imports skimage
        get_segmenter(settings.segmentation.segmenter)  # names the plugin when it is missing


def resolve_channels(
    settings: AssaySettings, channel_names: list[str], source: Any = "plate"
) -> list[tuple[int, str]]:
    """(plate channel index, stain) per configured channel.

    A channel is found by its name. A name that matches no channel of the plate is an error,
    since falling back to the index silently swaps stains when an export orders its
    channels differently; the index is used only when the channel gives no name, or when
    ``index_wins`` is set for it.

    Raises
    ------
    SettingsError
        Naming the channel, the plate's channel names and the fix.
    """
    resolved = []
    for number, channel in enumerate(settings.channels):
        index = channel.index
        by_index = index is not None and 0 <= index < len(channel_names)
        if channel.name is not None and not getattr(channel, "index_wins", False):
            matches = [i for i, name in enumerate(channel_names) if name == channel.name]
            if not matches:
                folded = [
                    i
                    for i, name in enumerate(channel_names)
                    if name.casefold().strip() == channel.name.casefold().strip()
                ]
                matches = folded if len(folded) == 1 else []
            if not matches:
                raise SettingsError(
                    f"settings: channels[{number}] (stain {channel.stain!r}) is named "
                    f"{channel.name!r}, but {source} has channels {channel_names}; fix "
                    "'name', or set 'index_wins = true' on that channel to use its 'index'"
                )
            resolved.append((matches[0], channel.stain))
        elif by_index:
            resolved.append((int(index), channel.stain))
        else:
            raise SettingsError(
                f"settings: channels[{number}] (stain {channel.stain!r}, index {index!r}) "
                f"matches no channel of {source}; its channels are {channel_names} "
                f"(indices 0..{len(channel_names) - 1}): fix 'name' or 'index'"
            )
    used = [index for index, _ in resolved]
    if len(set(used)) != len(used):
        raise SettingsError(
            f"settings: two stains read the same channel of {source} "
            f"({', '.join(f'{s} <- {channel_names[i]!r}' for i, s in resolved)})"
        )
    return resolved


def check_gates_can_be_learned(
    platemap: pd.DataFrame, wells: list[str], settings: AssaySettings, source: Any
) -> None:
    """Stop before any image is analysed when no imaged vehicle well can train the gates."""
    imaged = platemap[platemap["well"].isin(wells)]
    if gates_are_manual(settings.gating) or (imaged["role"] == "negative_control").any():
        return
    raise InputError(
        f"{source}: no imaged well has role 'negative_control', so there are no vehicle cells to "
        "learn the Annexin V / PI gates from; mark the vehicle (e.g. DMSO) wells with role "
        "'negative_control' in the plate map, or give gating.annexin_gate, gating.pi_gate and "
        "gating.bleedthrough_annexin_to_pi in the assay settings"
    )


def _check_platemap_against_plate(
    platemap: pd.DataFrame, wells: list[str], geometry, source: str, notes: list[str]
) -> pd.DataFrame:
    """Say what differs between the plate map and the imaged wells; stop where it must.

    Returns the plate map without wells that lie outside the imaged plate (a map of a whole
    384-well plate of which one 96-well quarter was imaged, or a typo such as ``AA01``):
    they have no images, and kept they would turn the plate QC's geometry into another
    plate's.
    """
    if geometry is not None:
        outside = platemap["well"].map(lambda w: not geometry.contains(w))
        if outside.any():
            names = list(platemap.loc[outside, "well"])
            notes.append(
                f"{len(names)} well(s) of the plate map {source} lie outside the imaged "
                f"{geometry.n_wells}-well plate and were left out: {', '.join(names[:8])}"
                f"{' ...' if len(names) > 8 else ''}"
            )
            platemap = platemap.loc[~outside].reset_index(drop=True)
    mapped = set(platemap["well"])
    imaged = set(wells)
    not_mapped = sorted(imaged - mapped)
    if not_mapped:
        notes.append(
            f"{len(not_mapped)} imaged well(s) are not in the plate map {source} and are "
            f"reported without annotation: {', '.join(not_mapped[:12])}"
            f"{' ...' if len(not_mapped) > 12 else ''}"
        )
    not_imaged = sorted(mapped - imaged)
    if not_imaged:
        notes.append(
            f"{len(not_imaged)} well(s) of the plate map {source} were not imaged: "
            f"{', '.join(not_imaged[:12])}{' ...' if len(not_imaged) > 12 else ''}"
        )
    if not mapped & imaged:
        raise InputError(
            f"{source}: none of its wells ({', '.join(sorted(mapped)[:4])} ...) was imaged on "
            f"the plate (wells {', '.join(sorted(imaged)[:4])} ...); is it the map of another "
            "plate?"
        )
    return platemap


def _check_platemap_values(platemap: pd.DataFrame, source: str, notes: list[str]) -> None:
    """Spellings and doses that would silently change which wells form a curve."""
    for column in ("sample", "compound"):
        if column not in platemap:
            continue
        names = sorted({str(v) for v in platemap[column].dropna() if str(v).strip()})
        folded: dict[str, list[str]] = {}
        for name in names:
            folded.setdefault(" ".join(name.casefold().split()), []).append(name)
        clashes = [spellings for spellings in folded.values() if len(spellings) > 1]
        if clashes:
            shown = "; ".join(" vs ".join(repr(s) for s in c) for c in clashes[:3])
            raise InputError(
                f"{source}: {column} names that differ only in case or spaces ({shown}) "
                "would be treated as different; write each the same way in every well"
            )
    if {"role", "concentration_molar"} <= set(platemap.columns):
        zero = platemap[(platemap["role"] == "sample") & (platemap["concentration_molar"] == 0)]
        if len(zero):
            notes.append(
                f"{source}: {len(zero)} sample well(s) at concentration 0 "
                f"({', '.join(zero['well'].astype(str)[:8])}) are fitted as the zero-dose point "
                "of their curve; give them role 'negative_control' if they are vehicle wells"
            )


def plan_plate(
    plate,
    *,
    source: Path,
    ingested: bool,
    platemap: pd.DataFrame,
    platemap_source: str,
    settings: AssaySettings,
    out_dir: Path,
    notes: list[str],
) -> PlatePlan:
    """The plan of one opened plate (channels, pixel size, fields, checks of its plate map)."""
    from screenlib.analysis.scale import resolve_pixel_size

    channel_names = list(plate.channel_names)
    channels = resolve_channels(settings, channel_names, source=f"plate {plate.path}")
    pixel_size, pixel_source = resolve_pixel_size(settings.pixel_size_um, plate.pixel_size_um)
    field_ids = [(w, f) for w in plate.wells for f in plate.fields(w)]
    if not field_ids:
        raise InputError(f"plate {plate.path} has no fields to analyse")
    wells = list(plate.wells)
    platemap = _check_platemap_against_plate(
        platemap, wells, getattr(plate, "geometry", None), platemap_source, notes
    )
    _check_platemap_values(platemap, platemap_source, notes)
    check_gates_can_be_learned(platemap, wells, settings, platemap_source)
    return PlatePlan(
        name=str(plate.name),
        source=source,
        plate_path=Path(plate.path).resolve(),
        ingested=ingested,
        platemap=platemap,
        platemap_source=platemap_source,
        channel_names=channel_names,
        channels=channels,
        pixel_size_um=pixel_size,
        pixel_size_source=pixel_source,
        field_ids=field_ids,
        n_timepoints=int(plate.n_timepoints),
        out_dir=out_dir,
    )
