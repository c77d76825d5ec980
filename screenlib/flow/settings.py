"""Settings of the flow-cytometry input: which channel holds which stain, and the scatter gate."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from screenlib.errors import SettingsError


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
