"""Discover stain and segmenter plugins through ``importlib.metadata`` entry points.

Loading is forgiving: a plugin whose module fails to import, whose object is not of the right
kind, or whose name clashes with one already loaded is recorded in :func:`plugin_failures` (by
entry-point name, distribution and reason) and skipped. Results are cached per process; pass
``refresh=True`` after installing a plugin into a running interpreter.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from dataclasses import dataclass

from screenlib.errors import PluginError
from screenlib.plugins.stain import Segmenter, Stain

STAIN_GROUP = "screenlib.stains"
SEGMENTER_GROUP = "screenlib.segmenters"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: which entry point, from which package, and why."""

    group: str
    name: str
    target: str  # "module:attribute" the entry point names
    distribution: str  # the installed package that declared it ("" when unknown)
    reason: str

    def __str__(self) -> str:
        source = f" (from {self.distribution})" if self.distribution else ""
        return f"{self.group} plugin '{self.name}'{source} -> {self.target}: {self.reason}"


_lock = threading.Lock()
_cache: dict[str, tuple[dict[str, object], list[PluginFailure]]] = {}


def _distribution_name(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return getattr(dist, "name", "") or "" if dist is not None else ""


def _load_group(group: str, refresh: bool) -> tuple[dict[str, object], list[PluginFailure]]:
    with _lock:
        if not refresh and group in _cache:
            return _cache[group]
        if refresh:
            # newly installed packages: re-read every group, not only this one
            importlib.invalidate_caches()
            _cache.clear()
        loaded: dict[str, object] = {}
        failures: list[PluginFailure] = []
        seen: set[tuple[str, str]] = set()
        for entry_point in sorted(
            importlib.metadata.entry_points(group=group), key=lambda ep: ep.name
        ):
            # the same distribution can be visible twice (editable install + build dir)
            if (entry_point.name, entry_point.value) in seen:
                continue
            seen.add((entry_point.name, entry_point.value))
            distribution = _distribution_name(entry_point)

            def fail(reason: str, entry_point=entry_point, distribution=distribution) -> None:
                failures.append(
                    PluginFailure(group, entry_point.name, entry_point.value, distribution, reason)
                )

            try:
                plugin = entry_point.load()
            except Exception as error:  # noqa: BLE001 - any plugin bug must not break the host
                fail(f"failed to import: {type(error).__name__}: {error}")
                continue
            if group == STAIN_GROUP:
                if not isinstance(plugin, Stain):
                    fail(f"is a {type(plugin).__name__}, not a screenlib.plugins.Stain")
                    continue
                if plugin.name != entry_point.name:
                    fail(f"entry point name differs from the stain's name {plugin.name!r}")
                    continue
            elif not callable(plugin):
                fail(f"is a {type(plugin).__name__}, not a callable segmenter")
                continue
            if entry_point.name in loaded:
                fail("a plugin of this name is already loaded; this one is skipped")
                continue
            loaded[entry_point.name] = plugin
        _cache[group] = (loaded, failures)
        return loaded, failures


def load_stains(refresh: bool = False) -> dict[str, Stain]:
    """All installed stains by name (built-ins and plugins).

    Examples
    --------
    >>> load_stains()["annexin_v"].region
    'ring'
    """
    loaded, _ = _load_group(STAIN_GROUP, refresh)
    return dict(loaded)  # type: ignore[arg-type]


def load_segmenters(refresh: bool = False) -> dict[str, Segmenter]:
    """All installed segmenters by name (``classical`` is built in)."""
    loaded, _ = _load_group(SEGMENTER_GROUP, refresh)
    return dict(loaded)  # type: ignore[arg-type]


def plugin_failures(refresh: bool = False) -> list[PluginFailure]:
    """Plugins of either group that were found but could not be loaded."""
    return _load_group(STAIN_GROUP, refresh)[1] + _load_group(SEGMENTER_GROUP, refresh)[1]


def get_stain(name: str) -> Stain:
    """The stain called ``name``; ``PluginError`` naming the installed ones when there is none."""
    stains = load_stains()
    if name not in stains:
        broken = [f for f in plugin_failures() if f.group == STAIN_GROUP and f.name == name]
        if broken:
            raise PluginError(f"stain plugin '{name}' is installed but broken: {broken[0].reason}")
        raise PluginError(
            f"unknown stain '{name}'; installed stains: {', '.join(sorted(stains))} "
            "(install a plugin package that provides it, or fix the stain name in the settings)"
        )
    return stains[name]


def get_stains(names) -> list[Stain]:
    """The stains called ``names``, in order (``PluginError`` for an unknown one)."""
    return [get_stain(str(name)) for name in names]


def resolve_segmenter(settings) -> Segmenter | None:
    """The segmenter ``settings.segmenter`` names (a ``SegmentationSettings``): None for the
    built-in ``classical`` one, which the kernel runs on its grid."""
    if settings.segmenter == "classical":
        return None
    return get_segmenter(settings.segmenter)


def get_segmenter(name: str) -> Segmenter:
    """The segmenter called ``name``; ``PluginError`` naming the installed ones if missing."""
    segmenters = load_segmenters()
    if name not in segmenters:
        broken = [f for f in plugin_failures() if f.group == SEGMENTER_GROUP and f.name == name]
        if broken:
            raise PluginError(
                f"segmenter plugin '{name}' is installed but broken: {broken[0].reason}"
            )
        raise PluginError(
            f"unknown segmenter '{name}' (setting 'segmentation.segmenter'); installed: "
            f"{', '.join(sorted(segmenters))}"
        )
    return segmenters[name]
