"""One root error for the project; subclasses also subclass the builtin that fits.

Every message names the file, key or tile at fault and says how to fix it.
"""

from __future__ import annotations


class OsmsatError(Exception):
    """Root of every error osmsat raises on purpose."""


class ConfigError(OsmsatError, ValueError):
    """A region config is missing, unreadable, or has an unknown key or a bad value."""


class InputDataError(OsmsatError, ValueError):
    """An input file (PBF, raster, GeoJSON) is missing, truncated, corrupt or in the wrong CRS."""


class MissingInputError(InputDataError, FileNotFoundError):
    """An input file the config names does not exist."""


class TileServerError(OsmsatError, RuntimeError):
    """A tile server kept failing after all retries (the URL is redacted in the message)."""


class ManifestError(OsmsatError, ValueError):
    """A manifest or a finished output does not match what it claims (size, checksum, digest)."""


class TileError(OsmsatError, ValueError):
    """A tile or shard is not on the slippy-map grid, or not where it is asked for (a bad
    argument or a corrupt tile list, not a config error)."""


class ModelError(OsmsatError, ValueError):
    """A model spec, encoder weights file or checkpoint is missing, unreadable or does not fit."""


class TrainingError(OsmsatError, RuntimeError):
    """Training cannot go on (NaN loss, empty split, no positive pixel, out of memory)."""


class BusyError(OsmsatError, RuntimeError):
    """A run holds a lock that the command needs (e.g. ``make clean-tmp`` while a run is going on)."""
