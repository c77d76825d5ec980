"""Writing a command's output file: atomically, and with a one-line error when it cannot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from screenlib.errors import InputError
from screenlib.io_utils import atomic_path


def write_output(path: Path, write: Callable[[Path], None]) -> Path:
    """Create ``path``'s folder and call ``write(tmp)``, renaming ``tmp`` onto ``path``.

    An unwritable destination (a file in the way, no permission, a full disk) becomes an
    ``InputError`` naming the path and the ``--out`` option that chose it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            write(temporary)
    except OSError as error:
        raise InputError(
            f"cannot write {path}: {error.strerror or error}; choose a writable --out"
        ) from None
    return path
