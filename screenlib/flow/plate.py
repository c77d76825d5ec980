"""A plate of FCS data: a folder with one FCS file per well, or one file with a data set per
well; compensated events per well and which channel holds which stain."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from screenlib.errors import InputError, SettingsError
from screenlib.flow.fcs import (
    FcsDataSet,
    compensate,
    file_spillover,
    looks_like_fcs,
    read_fcs,
    well_keyword,
)
from screenlib.flow.settings import FlowSettings
from screenlib.platemap import normalize_well

log = logging.getLogger(__name__)

_FCS_SUFFIXES = (".fcs",)
_OTHER_SUFFIXES = {
    ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".csv", ".txt", ".md", ".json",
    ".xml", ".htd", ".mrf", ".mlf", ".zarr", ".parquet", ".xlsx", ".wsp",
}  # fmt: skip
# A well at the end of a file name: "..._B10.fcs", "Well_A1.001.fcs", "Yeast_B1_B01.fcs".
_WELL_IN_NAME = re.compile(r"(?<![A-Za-z0-9])([A-Pa-p]{1,2})(\d{1,2})(?![0-9])")

# Stain detection: (role, words in a $PnS label, detector names of the usual dye, in order).
_STAIN_RULES = {
    "annexin": (("annexin", "anx"), ("FITC", "FL1", "BL1", "B1", "GFP", "Alexa Fluor 488")),
    "pi": (
        ("pi", "propidium"),
        ("PI", "PE-Texas Red", "PE-TxRed", "ECD", "PerCP", "FL3", "FL2", "YL2", "BL3", "PE"),
    ),
}
_SCATTER = {
    "fsc_area": ("FSC-A", "FSC", "FS", "FSC-H", "FS INT", "FS Lin"),
    "fsc_height": ("FSC-H",),
    "ssc_area": ("SSC-A", "SSC", "SS", "SSC-H", "SS INT", "SS Lin"),
}


@dataclass
class FlowPlate:
    """Events of one plate, compensated, per well.

    Attributes
    ----------
    path
        Folder or file read.
    wells
        ``"A01"`` names, plate order.
    channels
        ``$PnN`` channel names (the same in every well).
    labels
        ``{$PnN: $PnS}`` stain labels (``""`` where the file gives none).
    events
        ``{well: (n_events, n_channels) float64}``, compensated where a matrix was found.
    metadata
        ``{well: {...}}``: ``file``, ``data_set``, ``fcs_version``, ``n_events``,
        ``compensation`` (where the matrix came from, or ``"none"``), ``well_source``.
    roles
        ``{"annexin", "pi", "fsc_area", "fsc_height", "ssc_area": channel or None}``.
    settings
        The flow settings used.
    warnings
        Everything that was guessed or repaired, one line each.
    name
        Plate name: the files' ``$PLATENAME`` / ``PLATE NAME`` / ``PLATE ID`` when they
        agree, else the folder's (or file's) name.
    """

    path: Path
    wells: list[str]
    channels: list[str]
    labels: dict[str, str]
    events: dict[str, np.ndarray]
    metadata: dict[str, dict[str, Any]]
    roles: dict[str, str | None]
    settings: FlowSettings = field(default_factory=FlowSettings)
    warnings: list[str] = field(default_factory=list)
    name: str = ""

    def channel(self, role: str) -> np.ndarray | None:
        """Column index of a role's channel (None when the plate has no such channel)."""
        name = self.roles.get(role)
        return None if name is None else self.channels.index(name)

    @property
    def n_events(self) -> int:
        return int(sum(len(v) for v in self.events.values()))


def is_flow_input(path: str | Path) -> bool:
    """Whether ``path`` is an FCS file or a folder whose files include FCS files.

    Examples
    --------
    >>> is_flow_input("no/such/place")
    False
    """
    path = Path(path)
    if path.is_file():
        return looks_like_fcs(path)
    if not path.is_dir() or path.name.endswith(".zarr"):
        return False
    # by name first; headers only of files whose suffix says nothing (an image export has
    # thousands of TIFFs and no reason to open them here)
    unknown = []
    for entry in path.iterdir():
        suffix = entry.suffix.lower()
        if suffix in _FCS_SUFFIXES and entry.is_file():
            return True
        if suffix not in _OTHER_SUFFIXES and not entry.name.startswith("."):
            unknown.append(entry)
    return any(looks_like_fcs(entry) for entry in unknown[:50])


def _fcs_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and
        (p.suffix.lower() in _FCS_SUFFIXES or
         (p.suffix.lower() not in _OTHER_SUFFIXES and looks_like_fcs(p)))
    )  # fmt: skip


def well_from_name(path: Path) -> str | None:
    """The last well-like token of a file name (``Yeast_B1_B01.fcs`` -> ``B01``), or None."""
    matches = _WELL_IN_NAME.findall(path.stem)
    if not matches:
        return None
    row, column = matches[-1]
    return f"{row.upper()}{int(column):02d}"


def _well_of(data_set: FcsDataSet, single_file: bool) -> tuple[str, str]:
    keyword = well_keyword(data_set.keywords)
    named = None if single_file else well_from_name(data_set.path)
    if keyword is not None:
        try:
            well = normalize_well(keyword)
        except InputError:
            raise InputError(
                f"{data_set.where}: well keyword {keyword!r} is not a well name like A01"
            ) from None
        if named is not None and named != well:
            raise InputError(
                f"{data_set.where}: the file name says well {named}, its well keyword says "
                f"{well}; rename the file or fix the keyword"
            )
        return well, "keyword"
    if named is not None:
        return named, "file name"
    if single_file:
        raise InputError(
            f"{data_set.where}: no well keyword ($WELLID or WELL ID); a single FCS file must "
            "name the well of each data set"
        )
    raise InputError(
        f"{data_set.path}: no well keyword ($WELLID or WELL ID) and no well in the file name "
        "(e.g. Sample_A01.fcs)"
    )


def _pick(channels: list[str], labels: list[str], role: str, given: str | None, where: str):
    """``(channel, how)`` for a stain role; how is ``"settings"``, ``"label"`` or ``"detector"``."""
    if given is not None:
        if given in channels:
            return given, "settings"
        if given in labels:
            return channels[labels.index(given)], "settings"
        raise SettingsError(
            f"flow.{role}_channel = {given!r} is not a channel of {where}; channels: "
            + _listing(channels, labels)
        )
    words, detectors = _STAIN_RULES[role]
    for channel, label in zip(channels, labels, strict=True):
        tokens = re.findall(r"[a-z0-9]+", label.lower())
        if any(word in tokens or (len(word) > 3 and word in label.lower()) for word in words):
            return channel, "label"
    for detector in detectors:
        for suffix in ("-A", "", "-H"):
            for channel in channels:
                base = channel.upper()
                if base == f"{detector.upper()}{suffix}" or (
                    suffix == "-A" and base.startswith(detector.upper()) and base.endswith("-A")
                ):
                    return channel, "detector"
    raise SettingsError(
        f"{where}: no channel found for {role}; set flow.{role}_channel to one of: "
        + _listing(channels, labels)
    )


def _listing(channels: list[str], labels: list[str]) -> str:
    return ", ".join(
        f"{c} ({s})" if s and s != c else c for c, s in zip(channels, labels, strict=True)
    )


def _scatter_channel(channels: list[str], role: str, given: str | None, where: str):
    if given is not None:
        if given not in channels:
            raise SettingsError(
                f"flow.{role}_channel = {given!r} is not a channel of {where}; channels: "
                + ", ".join(channels)
            )
        return given
    upper = {c.upper(): c for c in channels}
    for name in _SCATTER[role]:
        if name.upper() in upper:
            return upper[name.upper()]
    return None


def _assign_roles(
    first: FcsDataSet, settings: FlowSettings, notes: list[str]
) -> dict[str, str | None]:
    where = first.where
    roles: dict[str, str | None] = {}
    for role, given in (("annexin", settings.annexin_channel), ("pi", settings.pi_channel)):
        channel, how = _pick(first.channels, first.labels, role, given, where)
        roles[role] = channel
        if how == "detector":
            notes.append(
                f"{role} channel taken as {channel} by its detector name (no stain label says "
                f"so); set flow.{role}_channel to be sure"
            )
    if roles["annexin"] == roles["pi"]:
        raise SettingsError(
            f"{where}: Annexin V and PI both map to channel {roles['annexin']}; set "
            "flow.annexin_channel and flow.pi_channel"
        )
    roles["fsc_area"] = _scatter_channel(
        first.channels, "fsc_area", settings.fsc_area_channel, where
    )
    roles["ssc_area"] = _scatter_channel(
        first.channels, "ssc_area", settings.ssc_area_channel, where
    )
    height = _scatter_channel(first.channels, "fsc_height", settings.fsc_height_channel, where)
    roles["fsc_height"] = height if height != roles["fsc_area"] else None
    if roles["fsc_area"] is None:
        notes.append("no forward-scatter channel: no debris gate")
    if roles["fsc_height"] is None:
        notes.append("no FSC-H channel beside FSC-A: no doublet gate")
    return roles


def _compensation_matrix(compensation: Any) -> tuple[list[str], np.ndarray] | None | bool:
    """Normalise the user's compensation: None (from the files), False (none) or a matrix."""
    if compensation is None or compensation is False:
        return compensation
    if isinstance(compensation, str | Path):
        path = Path(compensation)
        if str(compensation).lower() == "none":
            return False
        if not path.is_file():
            raise InputError(f"{path}: no such compensation matrix file")
        frame = pd.read_csv(path, index_col=0)
    elif isinstance(compensation, pd.DataFrame):
        frame = compensation
    else:
        raise SettingsError(
            "compensation must be None (from the files' $SPILLOVER), False (none), a square "
            "DataFrame or a CSV path with channel names as index and columns"
        )
    if list(map(str, frame.index)) != list(map(str, frame.columns)):
        raise InputError(
            "compensation matrix: its row names must equal its column names (the channels), "
            f"got rows {list(frame.index)} and columns {list(frame.columns)}"
        )
    return [str(c) for c in frame.columns], frame.to_numpy(dtype=float)


def _flow_settings(settings: Any) -> FlowSettings:
    """FlowSettings from None, FlowSettings, or assay settings (their ``flow`` section)."""
    if settings is None:
        return FlowSettings()
    if isinstance(settings, FlowSettings):
        return settings
    section = getattr(settings, "flow", None)
    if isinstance(section, FlowSettings):
        return section
    if hasattr(settings, "gating"):  # assay settings without a flow section: the defaults
        return FlowSettings()
    raise SettingsError(f"flow settings must be FlowSettings, got {type(settings).__name__}")


def read_flow_plate(
    path: str | Path,
    *,
    compensation: Any = None,
    settings: Any = None,
) -> FlowPlate:
    """Read a plate of FCS data.

    Parameters
    ----------
    path
        A folder with one FCS file per well (well from ``$WELLID`` / ``WELL ID``, else the
        file name), or one FCS file whose data sets each carry a well keyword (a file with a
        single data set and no well keyword is one well named by its file name).
    compensation
        None: each file's ``$SPILLOVER`` / ``$SPILL`` / ``SPILL`` matrix (a warning where a
        file has none); False or ``"none"``: no compensation; a square DataFrame (channel
        names as index and columns; row = dye, column = detector) or a CSV path of one, used
        for every well.
    settings
        Channel assignment and scatter-gate settings: a :class:`FlowSettings`, or assay
        settings (their ``flow`` section where they have one, else the defaults).

    Returns
    -------
    FlowPlate

    Raises
    ------
    InputError
        One line naming the file: not FCS, unreadable, no well, a well twice, channels that
        differ from the first file's.
    """
    settings = _flow_settings(settings)
    path = Path(path)
    if path.is_dir():
        files = _fcs_files(path)
        if not files:
            raise InputError(f"{path}: no FCS files in this folder")
        single_file = False
    elif path.is_file():
        files = [path]
        single_file = True
    else:
        raise InputError(f"{path}: no such FCS file or folder")
    user_matrix = _compensation_matrix(compensation)

    data_sets: list[FcsDataSet] = []
    for file in files:
        data_sets.extend(read_fcs(file))
    one_well_file = single_file and len(data_sets) == 1
    notes: list[str] = []
    first = data_sets[0]
    roles = _assign_roles(first, settings, notes)

    events: dict[str, np.ndarray] = {}
    metadata: dict[str, dict[str, Any]] = {}
    source: dict[str, str] = {}
    no_matrix: list[str] = []
    for data_set in data_sets:
        if data_set.channels != first.channels:
            raise InputError(
                f"{data_set.where}: channels {', '.join(data_set.channels)} differ from "
                f"{first.where}'s ({', '.join(first.channels)}); one plate, one panel"
            )
        well, well_source = _well_of(data_set, single_file and not one_well_file)
        if well in events:
            raise InputError(
                f"{data_set.where}: well {well} already read from {source[well]}; each well once"
            )
        source[well] = data_set.where
        notes.extend(data_set.warnings)
        values = data_set.events
        how = "none"
        if user_matrix is False:
            how = "none (switched off)"
        elif user_matrix is not None:
            names, matrix = user_matrix
            values = compensate(values, data_set.channels, data_set.labels, names, matrix,
                                "the given compensation matrix")  # fmt: skip
            how = "given matrix"
        else:
            found = file_spillover(data_set)
            if found is None:
                no_matrix.append(well)
            else:
                keyword, names, matrix = found
                values = compensate(values, data_set.channels, data_set.labels, names, matrix,
                                    data_set.where)  # fmt: skip
                how = f"file keyword {keyword}"
        events[well] = values
        metadata[well] = {
            "file": str(data_set.path),
            "data_set": data_set.index,
            "fcs_version": data_set.version,
            "n_events": int(len(values)),
            "compensation": how,
            "well_source": well_source,
        }
    if no_matrix:
        notes.append(
            f"no spillover matrix ($SPILLOVER/$SPILL) in {len(no_matrix)} well(s) "
            f"({', '.join(sorted(no_matrix)[:6])}{'...' if len(no_matrix) > 6 else ''}); their "
            "events are not compensated (the PI gate's bleed-through estimate still applies)"
        )
    for note in notes:
        log.warning("%s: %s", path, note)
    wells = sorted(events, key=lambda w: (len(re.match(r"[A-Z]+", w).group()), w))
    names = {
        d.keywords.get(k, "").strip()
        for d in data_sets
        for k in ("platename", "plate name", "plate id")
        if d.keywords.get(k, "").strip()
    }
    return FlowPlate(
        path=path,
        wells=wells,
        channels=list(first.channels),
        labels=dict(zip(first.channels, first.labels, strict=True)),
        events={w: events[w] for w in wells},
        metadata={w: metadata[w] for w in wells},
        roles=roles,
        settings=settings,
        warnings=list(dict.fromkeys(notes)),
        name=names.pop() if len(names) == 1 else path.stem,
    )
