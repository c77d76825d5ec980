"""Exceptions that reach the user as one clear message (no traceback unless --verbose)."""


class ScreenlibError(Exception):
    """An error caused by the user's input; its message names the culprit and the fix."""


class InputError(ScreenlibError):
    """A raw image, plate map, table or store that cannot be used as given."""


class SettingsError(ScreenlibError):
    """An assay-settings file with an unknown key, a wrong type or an impossible value."""


class PluginError(ScreenlibError):
    """A stain or segmenter plugin that could not be loaded or that misbehaved."""
