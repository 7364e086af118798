"""Test tiles of a finished real set: the image, its labels (green), the predicted buildings kept
(red) and those dropped for low confidence (yellow) (docs/confidence_nairobi.jpg).

Run: ``python -m bench.confidence_picture data/bd-nairobi/nairobi nairobi docs/confidence_nairobi.jpg``
after ``python -m bench.bench_dense --sets nairobi`` (the region folder, the set's name under
``../shared/data/real/``, the PNG to write); ``--rows N`` keeps the top N tile rows.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import geopandas as gpd
import mercantile
import numpy as np
import shapely
from PIL import Image, ImageDraw

from bench.bench_dense import SHARED
from pipeline.tiles.geo import lonlat_to_mercator

COLOURS: dict[str, tuple[int, int, int]] = {"labels": (0, 255, 0), "kept": (255, 40, 40), "dropped": (255, 230, 0)}


def mosaic(region: Path, z: int, tiles: list[tuple[int, int]]) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The tiles' images side by side and the mosaic's EPSG:3857 bounds (left, top, right, bottom)."""
    xs, ys = [x for x, _ in tiles], [y for _, y in tiles]
    x0, y0 = min(xs), min(ys)
    im = Image.new("RGB", ((max(xs) - x0 + 1) * 256, (max(ys) - y0 + 1) * 256))
    for x, y in tiles:
        for ext in ("jpg", "png"):
            f = region / "images" / str(z) / str(x) / f"{y}.{ext}"
            if f.exists():
                im.paste(Image.open(f).convert("RGB"), ((x - x0) * 256, (y - y0) * 256))
                break
    a, b = mercantile.xy_bounds(x0, y0, z), mercantile.xy_bounds(max(xs), max(ys), z)
    return im, (a.left, a.top, b.right, b.bottom)


def draw(im: Image.Image, bounds: tuple[float, float, float, float], geoms: np.ndarray,
         colour: tuple[int, int, int]) -> None:
    """Outlines of EPSG:4326 polygons on the mosaic."""
    left, top, right, bottom = bounds
    d = ImageDraw.Draw(im)
    for g in shapely.get_parts(np.asarray(geoms, dtype=object)):
        if g.geom_type != "Polygon":
            continue
        xy = lonlat_to_mercator(np.asarray(g.exterior.coords)[:, :2])
        pts = list(zip((xy[:, 0] - left) / (right - left) * im.width, (top - xy[:, 1]) / (top - bottom) * im.height))
        d.line([*pts, pts[0]], fill=colour, width=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("region", type=Path)
    ap.add_argument("set")
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=2)
    a = ap.parse_args()
    with open(a.region / "split.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    z = int(rows[0]["z"])
    tiles = sorted({(int(r["x"]), int(r["y"])) for r in rows})
    top = sorted({y for _, y in tiles})[: a.rows]
    tiles = [t for t in tiles if t[1] in top]
    im, bounds = mosaic(a.region, z, tiles)
    box = shapely.box(*mercantile.bounds(min(t[0] for t in tiles), max(t[1] for t in tiles), z)[:2],
                      *mercantile.bounds(max(t[0] for t in tiles), min(t[1] for t in tiles), z)[2:])
    layers = {"labels": gpd.read_file(SHARED / a.set / "labels" / "buildings.geojson").geometry.make_valid(),
              "kept": gpd.read_file(a.region / "predictions.geojson").geometry,
              "dropped": gpd.read_file(a.region / "predictions_low_confidence.geojson").geometry}
    for name, geoms in layers.items():
        g = geoms.to_numpy()
        draw(im, bounds, g[shapely.intersects(g, box)], COLOURS[name])
    im.save(a.out, optimize=True)
    print(f"{a.out}: {im.width} x {im.height} px, {len(tiles)} tiles")


if __name__ == "__main__":
    main()
