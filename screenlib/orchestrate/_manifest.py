"""What a run has done: settings hashes, per-field completion markers, atomic file writes.

A field is *done* when its marker ``parts/<well>_f<field>_t<t>.json`` exists, names the current
analysis-settings hash and points at a Parquet part of the size it records. The marker is
written last (after the labels and the part), each file through a temporary name and a rename,
so a run killed at any instant leaves either a complete field or no marker at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from screenlib.settings import AssaySettings, settings_to_dict

MANIFEST_NAME = "run.json"
PARTS_DIRNAME = "parts"
MARKER_VERSION = 2  # 2: markers record the pixels' fingerprint

# settings sections that change what the per-field analysis computes; gating and fit only
# change the finalize phase, so editing them reuses every finished field. Channels and the
# pixel size enter through the run's context as resolved (channel index, stain) pairs and
# the size in use, so naming a channel, or writing down the size the plate records, is not
# a change; nor are the QC keys that finalize applies.
ANALYSIS_SECTIONS = ("correction", "segmentation", "ring", "qc")
FINALIZE_ONLY_KEYS = {"qc": ("min_relative_focus", "exclude_failed_fields")}
FINALIZE_SECTIONS = ("gating", "fit", "qc")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def analysis_hash(settings: AssaySettings, context: dict[str, Any]) -> str:
    """Hash of everything that changes a field's labels and cell table.

    Parameters
    ----------
    settings
        The assay settings; only the image-analysis sections are hashed.
    context
        Run facts that also change the analysis (resolved stains and channel indices, pixel
        size, plate identity and field shape, screenlib version).
    """
    data = settings_to_dict(settings)
    sections = {}
    for name in ANALYSIS_SECTIONS:
        section = dict(data.get(name) or {})
        for key in FINALIZE_ONLY_KEYS.get(name, ()):
            section.pop(key, None)
        sections[name] = section
    return _digest({"settings": sections, "context": context})


def analysis_code_digest() -> str:
    """Digest of the per-field analysis code (``screenlib.analysis`` and the built-in plugins).

    Part of the analysis hash, so that finished fields computed by other analysis code are
    recomputed rather than mixed with new ones.
    """
    import screenlib

    root = Path(screenlib.__file__).parent
    digest = hashlib.sha256()
    for package in ("analysis", "plugins"):
        for source in sorted((root / package).rglob("*.py")):
            digest.update(source.relative_to(root).as_posix().encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def finalize_hash(settings: AssaySettings) -> str:
    """Hash of the settings used only by gating, aggregation and fitting."""
    data = settings_to_dict(settings)
    return _digest({k: data.get(k) for k in FINALIZE_SECTIONS})


def field_stem(well: str, field: int, timepoint: int) -> str:
    """File stem of one field's outputs, e.g. ``"B03_f1_t0"``."""
    return f"{well}_f{field}_t{timepoint}"


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it onto ``path``.

    The rename is atomic on a POSIX filesystem: readers see the old file or the new one,
    never a partial one. The temporary file is removed if ``write`` fails.
    """
    from screenlib.io_utils import atomic_path  # fsyncs the file and its folder

    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def valid_marker(
    marker: dict[str, Any] | None, part: Path, expected_hash: str, fingerprint: str
) -> dict[str, Any] | None:
    """``marker`` (a field's completion marker, as read) when the field is finished, else None.

    A marker counts only when it names ``expected_hash`` and the ``fingerprint`` of the
    pixels the field has now, has status ``"done"`` and its Parquet ``part`` exists with the
    recorded size (a failed field is retried on the next run).
    """
    if not marker or marker.get("analysis_hash") != expected_hash:
        return None
    if marker.get("fingerprint") != fingerprint:
        return None
    if marker.get("marker_version") != MARKER_VERSION or marker.get("status") != "done":
        return None
    try:
        if part.stat().st_size != marker.get("part_bytes"):
            return None
    except OSError:
        return None
    return marker
