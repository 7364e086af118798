"""A dense quarter of the demo town: the orthophoto with the truth's outlines (white) and the
predicted buildings (one colour each), one panel per finished run (docs/dense_instances.png).

Run: ``python -m bench.dense_picture data/demo [data/other-run ...]`` (finished demo runs of
``configs/demo.toml``'s town, the first with ``truth.geojson`` and ``orthophoto.tif``;
``folder=label`` names a panel, by default its folder); the square is the 120 m around the densest cluster of buildings
that share a wall (EPSG:32636, the orthophoto's CRS).
"""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.windows
import shapely
from PIL import Image, ImageDraw

HALF_M = 60.0  # half the side of the square shown (metres)


def densest_square(buildings: gpd.GeoDataFrame) -> tuple[float, float, float, float]:
    """The square around the building sharing a wall that has the most such buildings near it."""
    g = buildings.geometry.to_numpy()
    pairs = shapely.STRtree(g).query(g, predicate="touches")
    touch = np.zeros(len(g), dtype=bool)
    touch[pairs[0][pairs[0] != pairs[1]]] = True
    c = shapely.centroid(g[touch])
    x, y = shapely.get_x(c), shapely.get_y(c)
    near = [int(((abs(x - a) < HALF_M) & (abs(y - b) < HALF_M)).sum()) for a, b in zip(x, y)]
    i = int(np.argmax(near))
    return x[i] - HALF_M, y[i] - HALF_M, x[i] + HALF_M, y[i] + HALF_M


def panel(img: np.ndarray, transform: rasterio.Affine, truth: gpd.GeoSeries, pred: gpd.GeoSeries,
          label: str, seed: int = 3) -> Image.Image:
    """The imagery with ``pred`` filled (a colour each) and ``truth`` outlined, titled ``label``."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(img).convert("RGBA")
    over = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)

    def ring(part: shapely.Polygon) -> list[tuple[float, float]]:
        return [tuple(~transform * xy) for xy in part.exterior.coords]

    for geom in pred:
        for part in getattr(geom, "geoms", [geom]):
            r, g, b = (int(v) for v in rng.integers(60, 255, 3))
            draw.polygon(ring(part), fill=(r, g, b, 110), outline=(r, g, b, 255))
    for geom in truth:
        for part in getattr(geom, "geoms", [geom]):
            draw.line(ring(part), fill=(255, 255, 255, 255), width=2)
    shown = Image.alpha_composite(base, over).convert("RGB")
    canvas = Image.new("RGB", (shown.width, shown.height + 22), "white")
    canvas.paste(shown, (0, 22))
    ImageDraw.Draw(canvas).text((6, 4), label, fill="black")
    return canvas


def main(args: list[str]) -> None:
    runs = [a.partition("=")[0] for a in args]
    labels = [a.partition("=")[2] or a.partition("=")[0] for a in args]
    truth = gpd.read_file(Path(runs[0]) / "truth.geojson")
    shown = truth[truth["building"].notna() & (truth["status"] != "demolished")].to_crs(32636)
    box = densest_square(shown)
    with rasterio.open(Path(runs[0]) / "orthophoto.tif") as src:
        win = rasterio.windows.from_bounds(*box, transform=src.transform)
        img = np.moveaxis(src.read([1, 2, 3], window=win), 0, -1)
        transform = src.window_transform(win)
    inside = shown.cx[box[0]:box[2], box[1]:box[3]].geometry
    panels = []
    for run, label in zip(runs, labels, strict=True):
        pred = gpd.read_file(Path(run) / "predictions.geojson")
        pred = pred[pred["class"] == "building"].to_crs(32636).cx[box[0]:box[2], box[1]:box[3]].geometry
        panels.append(panel(img, transform, inside, pred, label))
    out = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + 8
    out.save("docs/dense_instances.png", optimize=True)
    print(f"docs/dense_instances.png: {out.size[0]} x {out.size[1]} px, square {[round(v) for v in box]}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["data/demo"])
