"""osmsat library: pure functions over tiles, arrays and geometries (never imports luigi)."""

__version__ = "0.1.0"
