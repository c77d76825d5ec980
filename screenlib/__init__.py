"""screenlib: image-based apoptosis screening from microscope export to IC50 report."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("screenlib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
