"""Slippy-map tiles: tile maths (EPSG:3857), stage ``cover``, stage ``masks`` and the sharded tile trees."""
