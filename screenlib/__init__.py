"""screenlib: image-based apoptosis screening from microscope export to IC50 report.

For notebooks: :func:`open_run` opens a finished run's outputs, :func:`analyze_plate` runs a
plate as ``screenlib run`` does (both in :mod:`screenlib.results`).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("screenlib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "analyze_plate", "open_run"]


def __getattr__(name: str) -> Any:
    # imported on first use: `import screenlib` stays fast and light for workers and the CLI
    if name in ("open_run", "analyze_plate", "RunResults"):
        from screenlib import results

        return getattr(results, name)
    raise AttributeError(f"module 'screenlib' has no attribute {name!r}")
