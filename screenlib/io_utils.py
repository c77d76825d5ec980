"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one;
and the one file digest (:func:`file_sha256`) the outputs, the report and the resume keys use.

Write into a temporary sibling, flush it to disk, then rename it over the target
(``os.replace`` is atomic on POSIX and Windows) and flush the folder so the rename itself
survives a power cut. A failed write removes its temporary file; a killed process can leave
only a hidden ``.<name>.<id>.tmp`` beside the target, never a partial target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
    "fsync_file",
    "fsync_folder",
    "temporary_sibling",
]


def temporary_sibling(path: str | Path) -> Path:
    """A unique hidden name in the target's folder (same filesystem, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_file(path: Path) -> None:
    """Flush a written file to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames) to disk; a no-op where folders cannot be opened."""
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems (e.g. some network mounts) refuse it; rename stands
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "wells.csv") as tmp:
    ...     pd.DataFrame({"well": ["A01"]}).to_csv(tmp, index=False)
    >>> (folder / "wells.csv").read_text()
    'well\\nA01\\n'
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
