"""FCS files: read data sets (FCS 2.0, 3.0, 3.1, through flowio), spillover, compensation,
and a small FCS 3.1 writer (float32 list mode, one or several data sets per file).

Reading uses `flowio <https://github.com/whitews/FlowIO>`_ (BSD-3, pure Python, numpy only):
it parses every FCS version the instruments write, decodes log-amplified (``$PnE``) and
gained (``$PnG``) integer channels, and reads multi-data-set files. Its keyword dictionary is
lower case without the ``$``. Writing is done here because the simulator needs several data
sets in one file (``$NEXTDATA``) and float32 arrays written in one piece.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from screenlib.errors import InputError, ScreenlibError

log = logging.getLogger(__name__)

#: keywords that name the well of a data set (flowio's form: lower case, no ``$``)
WELL_KEYWORDS = ("wellid", "well id", "well_id", "well", "bdpmwell", "plate well")
#: keywords that hold a spillover matrix, in order of preference
SPILLOVER_KEYWORDS = ("spillover", "spill", "comp")


@dataclass
class FcsDataSet:
    """One data set of an FCS file.

    Attributes
    ----------
    path
        The file.
    index
        0-based position of the data set within the file.
    version
        FCS version from the header (``"2.0"``, ``"3.0"``, ``"3.1"``).
    channels
        ``$PnN`` names, in column order.
    labels
        ``$PnS`` stain labels (``""`` where absent), in column order.
    events
        ``(n_events, n_channels)`` float64, gain and log amplification undone.
    keywords
        The TEXT segment (keys lower case, without ``$``).
    warnings
        What was repaired while reading (said in the run's log and tables).
    """

    path: Path
    index: int
    version: str
    channels: list[str]
    labels: list[str]
    events: np.ndarray
    keywords: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}" if self.index == 0 else f"{self.path} (data set {self.index + 1})"


def looks_like_fcs(path: str | Path) -> bool:
    """Whether ``path`` is a file whose first bytes are an FCS header (``FCS2.0`` ...)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
    except OSError:
        return False
    return re.fullmatch(rb"FCS[23]\.[01]", head) is not None


def read_fcs(path: str | Path) -> list[FcsDataSet]:
    """Read every data set of one FCS file.

    Raises
    ------
    InputError
        One line naming the file: not an FCS file, truncated, or a layout flowio cannot read.
    """
    try:
        import flowio
        from flowio.exceptions import FCSParsingError
    except ImportError:
        raise ScreenlibError(
            "reading FCS files needs flowio: pip install 'screenlib[flow]'"
        ) from None

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such FCS file")
    if not looks_like_fcs(path):
        raise InputError(
            f"{path}: not an FCS file (it does not start with 'FCS2.0', 'FCS3.0' or 'FCS3.1')"
        )
    repaired: list[str] = []
    try:
        data_sets = _read_all(flowio, path, ignore_offset_error=False)
    except FCSParsingError as error:
        if "off by 1" not in str(error):
            raise InputError(f"{path}: cannot read FCS data: {error}") from None
        # A common writer bug: $ENDDATA points one byte past the data. The events are intact.
        data_sets = _read_all(flowio, path, ignore_offset_error=True)
        repaired.append(
            f"{path.name}: $ENDDATA is one byte past the data segment (a known writer bug); "
            "read the whole events that fit"
        )
    except InputError:
        raise
    except Exception as error:  # flowio raises plain ValueError/struct.error on broken files
        raise InputError(
            f"{path}: cannot read FCS file ({type(error).__name__}: {error}); "
            "is it truncated or damaged?"
        ) from None
    for message in repaired:
        log.warning(message)
        for data_set in data_sets:
            data_set.warnings.append(message)
    return data_sets


def _read_all(flowio, path: Path, *, ignore_offset_error: bool) -> list[FcsDataSet]:
    from flowio.exceptions import FCSParsingError, MultipleDataSetsError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flowio warns through `warnings`; we report ourselves
        try:
            raw = [flowio.FlowData(path, ignore_offset_error=ignore_offset_error)]
        except MultipleDataSetsError:
            raw = flowio.read_multiple_data_sets(path, ignore_offset_error=ignore_offset_error)
        except FCSParsingError:
            raise
        result = []
        for index, flow_data in enumerate(raw):
            numbers = sorted(flow_data.channels, key=int)
            events = flow_data.as_array(preprocess=True)
            if events.shape[0] != int(flow_data.event_count):
                raise InputError(
                    f"{path}: data set {index + 1} holds {events.shape[0]} events, "
                    f"$TOT says {flow_data.event_count}; the file is truncated or damaged"
                )
            result.append(
                FcsDataSet(
                    path=path,
                    index=index,
                    version=str(flow_data.version),
                    channels=[str(flow_data.channels[n]["pnn"]).strip() for n in numbers],
                    labels=[str(flow_data.channels[n].get("pns", "")).strip() for n in numbers],
                    events=events,
                    keywords={str(k).lower(): str(v) for k, v in flow_data.text.items()},
                )
            )
    return result


def well_keyword(keywords: Mapping[str, str]) -> str | None:
    """The well named by a data set's keywords (``$WELLID``, ``WELL ID``, ...), or None."""
    for key in WELL_KEYWORDS:
        value = keywords.get(key, "").strip()
        if value:
            return value
    return None


def parse_spillover(text: str, where: str) -> tuple[list[str], np.ndarray]:
    """Parse a ``$SPILLOVER`` / ``$SPILL`` value: ``n, name_1..name_n, n*n values`` (row-major,
    row = the dye, column = the detector it spills into).

    Examples
    --------
    >>> names, matrix = parse_spillover("2,FITC-A,PI-A,1,0.1,0.02,1", "x.fcs")
    >>> names, float(matrix[0, 1])
    (['FITC-A', 'PI-A'], 0.1)
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        n = int(parts[0])
    except (ValueError, IndexError):
        raise InputError(
            f"{where}: spillover matrix {text[:60]!r} does not start with its size"
        ) from None
    if n < 1 or len(parts) != 1 + n + n * n:
        raise InputError(
            f"{where}: spillover matrix of size {n} needs {1 + n + n * n} comma-separated "
            f"items, found {len(parts)} — give a compensation matrix, or read without "
            "compensation (compensation=False)"
        )
    names = parts[1 : 1 + n]
    try:
        matrix = np.array([float(v) for v in parts[1 + n :]]).reshape(n, n)
    except ValueError:
        raise InputError(f"{where}: spillover matrix has a non-numeric value") from None
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
        raise InputError(f"{where}: spillover matrix is singular or not finite; cannot compensate")
    return names, matrix


def file_spillover(data_set: FcsDataSet) -> tuple[str, list[str], np.ndarray] | None:
    """``(keyword, channel names, matrix)`` from ``$SPILLOVER`` / ``$SPILL`` / ``SPILL``."""
    for key in SPILLOVER_KEYWORDS:
        value = data_set.keywords.get(key, "").strip()
        if value:
            names, matrix = parse_spillover(value, f"{data_set.where} keyword {key.upper()}")
            return key.upper(), names, matrix
    return None


def compensate(
    events: np.ndarray,
    channels: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    matrix: np.ndarray,
    where: str,
) -> np.ndarray:
    """Undo spillover: ``observed = true @ S``, so ``true = observed @ inv(S)`` on the
    matrix's channels (named by ``$PnN``, or by ``$PnS`` label where a writer used those)."""
    index = []
    for name in names:
        if name in channels:
            index.append(list(channels).index(name))
        elif name in labels and name:
            index.append(list(labels).index(name))
        else:
            raise InputError(
                f"{where}: spillover matrix names channel {name!r}, which the file does not "
                f"have (channels: {', '.join(channels)})"
            )
    out = np.array(events, dtype=float, copy=True)
    out[:, index] = events[:, index] @ np.linalg.inv(matrix)
    return out


# --- writing ---------------------------------------------------------------------------------

_HEADER_LENGTH = 58
_OFFSET_DIGITS = 20  # fixed width, so the TEXT segment's length does not depend on the offsets


def _text_segment(keywords: Mapping[str, str]) -> bytes:
    delimiter = "/"
    parts = []
    for key, value in keywords.items():
        key = str(key).replace(delimiter, delimiter * 2)
        value = str(value).replace(delimiter, delimiter * 2)
        if value == "":
            value = " "  # an empty value would read as an escaped delimiter
        parts.append(f"{key}{delimiter}{value}")
    return (delimiter + delimiter.join(parts) + delimiter).encode("utf-8")


def _data_set_bytes(
    events: np.ndarray,
    channels: Sequence[str],
    labels: Sequence[str] | None,
    keywords: Mapping[str, str] | None,
    last: bool,
) -> bytes:
    events = np.ascontiguousarray(events, dtype="<f4")
    n_events, n_channels = events.shape
    if n_channels != len(channels):
        raise ValueError(f"{n_channels} event columns for {len(channels)} channel names")
    data = events.tobytes()
    text: dict[str, str] = {
        "$BEGINANALYSIS": "0",
        "$ENDANALYSIS": "0",
        "$BEGINSTEXT": "0",
        "$ENDSTEXT": "0",
        "$BEGINDATA": "0" * _OFFSET_DIGITS,
        "$ENDDATA": "0" * _OFFSET_DIGITS,
        "$NEXTDATA": "0" * _OFFSET_DIGITS,
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$PAR": str(n_channels),
        "$TOT": str(n_events),
    }
    for number, name in enumerate(channels, start=1):
        text[f"$P{number}N"] = name
        text[f"$P{number}B"] = "32"
        text[f"$P{number}E"] = "0,0"
        text[f"$P{number}R"] = "262144"
        if labels is not None and labels[number - 1]:
            text[f"$P{number}S"] = labels[number - 1]
    for key, value in (keywords or {}).items():
        text[key] = str(value)
    length = len(_text_segment(text))
    text_start = _HEADER_LENGTH
    text_end = text_start + length - 1
    data_start = text_end + 1
    data_end = data_start + len(data) - 1
    text["$BEGINDATA"] = str(data_start).zfill(_OFFSET_DIGITS)
    text["$ENDDATA"] = str(data_end).zfill(_OFFSET_DIGITS)
    text["$NEXTDATA"] = str(0 if last else data_end + 1).zfill(_OFFSET_DIGITS)
    segment = _text_segment(text)
    assert len(segment) == length

    def offset(value: int) -> bytes:
        return f"{value if value <= 99_999_999 else 0:>8d}".encode("ascii")

    header = b"FCS3.1    " + b"".join(
        offset(v) for v in (text_start, text_end, data_start, data_end, 0, 0)
    )
    assert len(header) == _HEADER_LENGTH
    return header + segment + data


def write_fcs(
    path: str | Path,
    data_sets: Sequence[tuple[np.ndarray, Mapping[str, str]]],
    channels: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Path:
    """Write an FCS 3.1 file of float32 list-mode data sets.

    Parameters
    ----------
    path
        File to write (replaced atomically).
    data_sets
        One ``(events (n, n_channels), keywords)`` per data set, e.g.
        ``{"$WELLID": "A01", "$SPILLOVER": "2,FITC-A,PI-A,..."}``.
    channels, labels
        ``$PnN`` names and optional ``$PnS`` labels.
    """
    from screenlib.io_utils import atomic_path

    blobs = [
        _data_set_bytes(events, channels, labels, keywords, last=i == len(data_sets) - 1)
        for i, (events, keywords) in enumerate(data_sets)
    ]
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for blob in blobs:
            handle.write(blob)
    return Path(path)


def spillover_text(names: Sequence[str], matrix: np.ndarray) -> str:
    """The ``$SPILLOVER`` value of a matrix (row = dye, column = detector)."""
    values = ",".join(f"{v:.6g}" for v in np.asarray(matrix, dtype=float).ravel())
    return f"{len(names)},{','.join(names)},{values}"
