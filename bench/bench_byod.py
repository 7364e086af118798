"""Bring-your-own-data benchmarks (``make bench``), on one core:

* vector-label loading: :func:`pipeline.labels.vector.load_vector_labels` on a generated GeoPackage
  of 100,000 building polygons (in UTM 36N, so the load also reprojects) with a ``kind``
  attribute filtered like an OSM tag, then ``write_features``: features/s and peak memory.
* tile-folder ingest: :func:`pipeline.imagery.folder.folder_shard` on a generated folder of
  1,024 z19 tiles (half JPEG, half PNG, an eighth RGBA with a transparent band), copied or
  re-encoded into ``images/``: tiles/s; and the same region at z18 mosaicked down from them.

Run: ``python -m bench.bench_byod [--quick]`` (``--quick``: 10,000 polygons, 256 tiles).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import report, run_phase

LON, LAT = 32.58, 0.33
X0, Y0, Z = 309600, 261600, 19


def make_gpkg(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` rectangles of 6-20 m (EPSG:32636) on a square grid, ``kind`` house/shed/garage, ``id``."""
    import geopandas as gpd
    import pyproj
    import shapely

    rng = np.random.default_rng(seed)
    x0, y0 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True).transform(LON, LAT)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    xs, ys = x0 + (i % side) * 30.0, y0 + (i // side) * 30.0
    w, h = rng.uniform(6, 20, n), rng.uniform(6, 20, n)
    geoms = shapely.box(xs, ys, xs + w, ys + h)
    kinds = np.array(["house", "shed", "garage"], dtype=object)[rng.integers(0, 3, n)]
    gpd.GeoDataFrame({"kind": kinds, "id": i}, geometry=geoms, crs="EPSG:32636").to_file(path, layer="buildings")
    return path


def load_labels(path: Path, out: Path) -> int:
    from pipeline.config.region import ClassSpec, TagFilter
    from pipeline.labels.features import write_features
    from pipeline.labels.vector import LabelsConfig, load_vector_labels

    cls = ClassSpec("building", 1, "area", 10, (TagFilter.parse("kind=house|garage", "bench"),))
    gdf, _ = load_vector_labels(LabelsConfig("vector", (path,), layer="buildings"), [cls])
    write_features(gdf, out)
    return len(gdf)


def make_folder(root: Path, side: int, seed: int = 1) -> int:
    """``side`` x ``side`` z19 tiles of photo-like noise: JPEG and PNG alternating, every 8th RGBA."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (3, 10, 10)).astype(np.float32)
    smooth = np.stack([np.asarray(Image.fromarray(b).resize((256, 256), Image.BILINEAR)) for b in base], axis=-1)
    k = 0
    for i in range(side):
        for j in range(side):
            arr = np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)
            folder = root / str(Z) / str(X0 + i)
            folder.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            if k % 8 == 7:
                rgba = np.dstack([arr, np.full((256, 256), 255, np.uint8)])
                rgba[:32, :, 3] = 0
                Image.fromarray(rgba).save(buf, format="PNG", compress_level=1)
                (folder / f"{Y0 + j}.png").write_bytes(buf.getvalue())
            elif k % 2:
                Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
                (folder / f"{Y0 + j}.png").write_bytes(buf.getvalue())
            else:
                Image.fromarray(arr).save(buf, format="JPEG", quality=85)
                (folder / f"{Y0 + j}.jpg").write_bytes(buf.getvalue())
            k += 1
    return side * side


def ingest(folder: Path, out: Path, zoom: int, side: int) -> dict[str, Any]:
    from collections import Counter

    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.folder import folder_shard
    from pipeline.tiles.tilemath import Tile

    d = Z - zoom
    n = side >> d
    tiles = [Tile(zoom, (X0 >> d) + i, (Y0 >> d) + j) for i in range(n) for j in range(n)]
    icfg = ImageryConfig(source="tiles", path=str(folder))
    recs = folder_shard(icfg, tiles, 256, out, out / "_tmp")
    return {"tiles": len(tiles), **Counter(r.status for r in recs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 polygons and 256 tiles")
    args = ap.parse_args()
    n_poly, side = (10_000, 16) if args.quick else (100_000, 32)
    # imported before the phases fork, so that their times exclude imports
    import geopandas  # noqa: F401
    import pyogrio  # noqa: F401
    import pyproj  # noqa: F401

    import pipeline.imagery.folder
    import pipeline.labels.vector  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="bench-byod-") as tmp:
        t = Path(tmp)
        gpkg = make_gpkg(t / "buildings.gpkg", n_poly)
        rows, dt, peak = run_phase(load_labels, gpkg, t / "features.parquet")
        report(f"vector labels: {n_poly:,} polygons from a GeoPackage (UTM -> EPSG:4326), filter, write parquet",
               n_poly / dt, "features/s", seconds=round(dt, 2), rows_kept=rows, peak_mb=round(peak))
        make_folder(t / "tiles", side)
        res, dt, peak = run_phase(ingest, t / "tiles", t / "images19", Z, side)
        report(f"tile folder ingest: {side * side} z19 tiles (JPEG/PNG/RGBA mixed), verified and copied",
               res["tiles"] / dt, "tiles/s", seconds=round(dt, 2), peak_mb=round(peak),
               **{k: v for k, v in res.items() if k != "tiles"})
        res, dt, peak = run_phase(ingest, t / "tiles", t / "images18", Z - 1, side)
        report(f"tile folder mosaic: {side * side} z19 tiles -> {res['tiles']} z18 tiles",
               side * side / dt, "source tiles/s", seconds=round(dt, 2), peak_mb=round(peak))


if __name__ == "__main__":
    main()
