"""WMS GetMap URLs for slippy-map tiles: ``{bbox}`` is the tile's EPSG:3857 bounds
``minx,miny,maxx,maxy`` in metres (millimetre precision), ``{width}``/``{height}`` its size in
pixels. The template carries the rest (``SERVICE=WMS&REQUEST=GetMap&LAYERS=...&CRS=EPSG:3857``;
with EPSG:3857 the axis order is easting, northing in WMS 1.1.1 and 1.3.0 alike).

Downloading goes through :func:`pipeline.imagery.xyz.fetch_tiles` (same retries and checks).
"""

from __future__ import annotations

from pipeline.tiles.tilemath import Tile, tile_bounds


def wms_bbox(tile: Tile) -> str:
    """``minx,miny,maxx,maxy`` of ``tile`` in EPSG:3857 metres, 3 decimals."""
    left, bottom, right, top = tile_bounds(tile)
    return ",".join(f"{v:.3f}" for v in (left, bottom, right, top))


def wms_url(template: str, tile: Tile, size: int) -> str:
    """Fill a WMS GetMap URL template for ``tile`` of ``size`` x ``size`` pixels."""
    return (template.replace("{bbox}", wms_bbox(tile)).replace("{width}", str(size))
            .replace("{height}", str(size)))
