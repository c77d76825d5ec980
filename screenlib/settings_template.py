"""A commented assay-settings template (TOML) with the channels detected in an export.

``settings_template`` writes every section and key of :class:`~screenlib.settings.AssaySettings`
with its default value and a one-line explanation, so a new user edits a file that already runs.
``settings_to_toml`` writes the settings actually used next to a run's results.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import typing
from typing import Any

from screenlib.settings import AssaySettings, ChannelSettings

# Channel-name fragments that betray the stain, checked in this order (first match wins).
# Wavelengths are the usual excitation lines: 405 nm Hoechst/DAPI, 488 nm FITC/Annexin V-FITC,
# 561 nm PI / Texas Red.
_STAIN_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hoechst", ("hoechst", "dapi", "h33342", "h33258", "nuclei", "nuclear", "405", "w1")),
    ("annexin_v", ("annexin", "anxa5", "fitc", "gfp", "alexa488", "af488", "488", "w2")),
    ("pi", ("propidium", "texas", "txred", "tx red", "pi", "561", "568", "594", "w3")),
)

# One line per key, shown above it in the template. Keys missing here fall back to the
# comment written beside the field in screenlib/settings.py.
_EXPLANATIONS: dict[str, str] = {
    "pixel_size_um": "Pixel size in micrometres; leave unset to take it from the plate metadata.",
    "correction.camera_offset": "Camera dark offset in grey levels; unset: estimated per field.",
    "correction.background_radius_um": "Scale (um) of the smooth background removed per channel.",
    "correction.flatfield": "Divide out a per-plate, per-channel illumination profile.",
    "correction.flatfield_max_fields": "At most this many fields are used to estimate the profile.",
    "correction.hot_pixels": (
        "Replace lone hot pixels (sensor defects, cosmic rays) by their brightest neighbour "
        "before segmenting and measuring."
    ),
    "segmentation.segmenter": "Nuclei segmenter: 'classical' or one installed as a plugin.",
    "segmentation.nucleus_diameter_px": "Typical nucleus diameter (px); unset: measured per plate.",
    "segmentation.nucleus_diameter_um": "Typical nucleus diameter (um); unset: measured per plate.",
    "segmentation.min_area_um2": "Smaller objects are debris (um^2); unset: 0.1 typical nuclei.",
    "segmentation.max_area_um2": "Larger objects are artefacts (um^2); unset: 6.4 typical nuclei.",
    "segmentation.smoothing_sigma_um": "Smoothing before thresholding (um); unset: 0.07 nuclei.",
    "segmentation.split_touching": "Split touching nuclei with a distance-transform watershed.",
    "segmentation.default_pixel_size_um": "Pixel size used when neither plate nor settings say.",
    "ring.ring_width_um": "Width (um) of the membrane ring outside the nucleus (Annexin V).",
    "ring.ring_gap_um": "Gap between the nucleus edge and the ring (um).",
    "ring.background_width_um": "Width of the local-background annulus beyond the ring (um).",
    "ring.exclude_neighbours": (
        "Leave out ring pixels that another nucleus' ring also reaches (its membrane would "
        "count); a cell with almost no such free pixels keeps its whole ring."
    ),
    "ring.neighbour_margin_um": (
        "How far (um) a neighbour's membrane light spreads past its ring (blur); those ring "
        "pixels are left out too where the cell keeps enough others."
    ),
    "qc.min_focus_score": "Fields below this focus score fail QC; 0 disables the check.",
    "qc.min_relative_focus": "Fields sharper than this share of the plate median pass QC; 0: off.",
    "qc.max_saturated_fraction": "Fields with more saturated pixels than this fraction fail QC.",
    "qc.min_cells_per_field": "Fields with fewer nuclei fail QC.",
    "qc.exclude_failed_fields": "Leave failed fields out of the per-well numbers (still reported).",
    "gating.annexin_feature": "Per-cell column gated for Annexin V (90th percentile in the ring).",
    "gating.pi_feature": "Per-cell column gated for PI (mean in the nucleus).",
    "gating.method": "How gates are learned from vehicle wells: 'robust' or 'mixture'.",
    "gating.k_mad": "Gate at most k_mad robust SDs above the vehicle median (glog scale).",
    "gating.annexin_gate": "Manual Annexin V gate (feature units); overrides the learned one.",
    "gating.pi_gate": "Manual PI gate (feature units); overrides the learned one.",
    "gating.bleedthrough_annexin_to_pi": "FITC-into-PI bleed-through; unset: estimated.",
    "gating.min_area_um2": "Objects smaller than this (um^2) are called debris.",
    "gating.min_cells_per_well": "Wells with fewer cells are flagged.",
    "gating.bleedthrough_feature": "Annexin V column whose signal leaks into the PI channel.",
    "gating.min_control_separation": "Warn when positive minus vehicle apoptotic fraction is less.",
    "gating.exclude_border_cells": "Call nuclei touching the field border debris.",
    "fit.responses": "Per-well read-outs fitted against concentration (wells.csv columns, e.g. "
    "apoptotic_fraction_mixture).",
    "fit.binomial_fractions": "Fit apoptotic fractions on cell counts (binomial errors).",
    "fit.n_starts": "Number of starting points of the curve fit.",
    "fit.fix_top": "Fix the upper plateau of the 4PL curve; unset: fitted.",
    "fit.fix_bottom": "Fix the lower plateau of the 4PL curve; unset: fitted.",
    "fit.confidence_level": "Confidence level of the IC50 intervals.",
    "fit.fix_hill": "Fix the Hill slope (e.g. 1.0 with few concentrations); unset: fitted.",
    "fit.hill_min": "Smallest Hill slope magnitude the fit may use.",
    "fit.hill_max": "Largest Hill slope magnitude the fit may use.",
    "fit.extrapolation_decades": "How far (decades) beyond the tested range log IC50 is searched.",
    "fit.inactive_p_value": "Curves no better than a flat line at this p (F-test) are inactive.",
    "fit.outlier_z": "Wells further than this (robust SDs) from the curve are flagged outliers.",
    "fit.plateau_fraction": "Share of the span the curve must reach at the tested ends.",
    "fit.max_plateau_uncertainty": "Largest 95 % half-range of a plateau, as a share of the span.",
    "fit.max_interval_decades": "IC50 intervals wider than this many decades are flagged.",
    "flow.annexin_channel": "FCS plates: the Annexin V channel ($PnN or $PnS); unset: found.",
    "flow.pi_channel": "FCS plates: the PI channel ($PnN or $PnS); unset: found by label.",
    "flow.fsc_area_channel": "FCS plates: forward scatter area channel; unset: found.",
    "flow.fsc_height_channel": "FCS plates: forward scatter height channel; unset: found.",
    "flow.ssc_area_channel": "FCS plates: side scatter area channel; unset: found.",
    "flow.debris_k": "FCS plates: debris lies this many robust SDs below the cells' scatter.",
    "flow.doublet_k": "FCS plates: doublets lie this many robust SDs below the FSC-H/FSC-A.",
    "flow.min_events_per_well": "FCS plates: wells with fewer events fail QC.",
    "flow.max_excluded_fraction": "FCS plates: wells with more debris + doublets fail QC.",
    "gating.classify_objects": "Call debris, fragments, mitoses and clumps before the gates.",
    "gating.normalize_stain_drift": "Scale each field's stain to its own viable cells.",
}


def guess_stain(channel_name: str) -> str | None:
    """Guess the stain imaged in a channel from its name.

    Parameters
    ----------
    channel_name
        The channel name recorded by the microscope (e.g. ``"DAPI"``, ``"FITC 488"``, ``"w3"``).

    Returns
    -------
    str or None
        ``"hoechst"``, ``"annexin_v"`` or ``"pi"``, or None when the name says nothing.

    Examples
    --------
    >>> guess_stain("Hoechst 33342"), guess_stain("Annexin V-FITC"), guess_stain("Texas Red")
    ('hoechst', 'annexin_v', 'pi')
    """
    text = channel_name.strip().lower()
    tokens = re.split(r"[^a-z0-9]+", text)
    for stain, fragments in _STAIN_PATTERNS:
        for fragment in fragments:
            # short fragments ("pi", "w1", wavelengths) must be whole tokens: "pipeline" is no PI
            if len(fragment) <= 3 or fragment.isdigit():
                if fragment in tokens:
                    return stain
            elif fragment in text:
                return stain
    return None


def _toml_value(value: Any) -> str:
    """One value in TOML syntax (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _example_for(annotation: Any) -> str:
    """A placeholder value shown for a setting whose default is None (TOML has no null)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    first = options[0]
    if first is float:
        return "0.0"
    if first is int:
        return "0"
    if first is bool:
        return "false"
    if first is str:
        return '""'
    return "[]"


def _explain(key: str) -> str:
    """The one line shown above ``key`` (every key has one; a test keeps it so)."""
    return _EXPLANATIONS.get(key, f"See the [{key.split('.')[0]}] section in the user guide.")


def _section_lines(name: str, section: Any, *, commented_defaults: bool) -> list[str]:
    """Lines of one ``[section]``: a header with the section's docstring, then each key."""
    cls = type(section)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    lines = ["", f"# {doc}" if doc else f"# [{name}]", f"[{name}]"]
    hints = typing.get_type_hints(cls)
    for field_info in dataclasses.fields(cls):
        value = getattr(section, field_info.name)
        explanation = _explain(f"{name}.{field_info.name}")
        lines.append(f"# {explanation}")
        if value is None:
            example = _example_for(hints[field_info.name])
            lines.append(f"# {field_info.name} = {example}  # default: unset")
        else:
            prefix = "# " if commented_defaults else ""
            lines.append(f"{prefix}{field_info.name} = {_toml_value(value)}")
    return lines


def _channel_table(index: int, name: str | None, stain: str) -> list[str]:
    lines = ["[[channels]]", f"stain = {_toml_value(stain)}", f"index = {index}"]
    if name is not None:
        lines.append(f"name = {_toml_value(name)}")
    return lines


def settings_template(channel_names: list[str], stains_guess: list[str | None]) -> str:
    """A commented TOML template of all assay settings, channels filled in from an export.

    Parameters
    ----------
    channel_names
        Channel names as detected in the export or plate, in channel order.
    stains_guess
        The stain guessed for each channel (see :func:`guess_stain`), None or ``""`` when
        unknown. Unknown channels, and a stain guessed twice, are written commented out.

    Returns
    -------
    str
        TOML text; ``load_settings`` on it gives the default settings with these channels.

    Examples
    --------
    >>> text = settings_template(["DAPI", "FITC", "TxRed"], ["hoechst", "annexin_v", "pi"])
    >>> "[[channels]]" in text and 'stain = "annexin_v"' in text
    True
    """
    if len(stains_guess) != len(channel_names):
        raise ValueError("give one stain guess per channel name")
    defaults = AssaySettings()
    lines = [
        "# screenlib assay settings",
        "#",
        "# Every setting is shown with its default. Lines starting with '#' are comments; a",
        "# commented-out setting keeps its default (a setting shown as 'default: unset' is",
        "# estimated from the data). Check the [[channels]] tables first: each maps one",
        "# channel of the plate to a stain (hoechst, annexin_v, pi, or one added by a plugin).",
        "",
    ]
    hints = typing.get_type_hints(AssaySettings)
    lines.append(f"# {_EXPLANATIONS['pixel_size_um']}")
    if defaults.pixel_size_um is None:
        lines.append(f"# pixel_size_um = {_example_for(hints['pixel_size_um'])}  # default: unset")
    else:
        lines.append(f"pixel_size_um = {_toml_value(defaults.pixel_size_um)}")

    lines += ["", "# Channels: which stain was imaged in which channel (index is 0-based;"]
    lines.append("# name must match the channel name recorded in the plate).")
    used: set[str] = set()
    any_channel = False
    for index, (name, stain) in enumerate(zip(channel_names, stains_guess, strict=True)):
        lines.append("")
        if stain and stain not in used:
            used.add(stain)
            any_channel = True
            lines += _channel_table(index, name, stain)
        else:
            reason = "stain already assigned" if stain else "stain not recognised from its name"
            lines.append(f"# channel {index} ({name!r}): {reason}; uncomment and set its stain")
            lines += ["# " + line for line in _channel_table(index, name, stain or "STAIN")]
    if not any_channel:
        lines.append("")
        lines.append("# No channel was recognised: without [[channels]] tables screenlib assumes")
        lines.append("# channel 0 = hoechst, 1 = annexin_v, 2 = pi.")

    for field_info in dataclasses.fields(AssaySettings):
        section = getattr(defaults, field_info.name)
        if dataclasses.is_dataclass(section):
            lines += _section_lines(field_info.name, section, commented_defaults=False)
    return "\n".join(lines) + "\n"


def template_channels(channel_names: list[str], stains_guess: list[str | None]) -> tuple:
    """The ``channels`` setting that :func:`settings_template` writes for these channels."""
    used: set[str] = set()
    channels = []
    for index, (name, stain) in enumerate(zip(channel_names, stains_guess, strict=True)):
        if stain and stain not in used:
            used.add(stain)
            channels.append(ChannelSettings(stain=stain, index=index, name=name))
    return tuple(channels) if channels else AssaySettings().channels


def settings_to_toml(settings: AssaySettings) -> str:
    """The settings as TOML, readable by ``load_settings`` (unset values are left out).

    Examples
    --------
    >>> from screenlib.settings import AssaySettings
    >>> "[gating]" in settings_to_toml(AssaySettings())
    True
    """
    lines = ["# screenlib assay settings used for this run", ""]
    if settings.pixel_size_um is not None:
        lines.append(f"pixel_size_um = {_toml_value(settings.pixel_size_um)}")
    for channel in settings.channels:
        lines += ["", "[[channels]]"]
        for field_info in dataclasses.fields(channel):
            value = getattr(channel, field_info.name)
            if value is not None:
                lines.append(f"{field_info.name} = {_toml_value(value)}")
    for field_info in dataclasses.fields(settings):
        section = getattr(settings, field_info.name)
        if not dataclasses.is_dataclass(section):
            continue
        lines += ["", f"[{field_info.name}]"]
        for sub in dataclasses.fields(section):
            value = getattr(section, sub.name)
            if value is not None:
                lines.append(f"{sub.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
