"""One benchmark job per process: ``python -m bench.peer_jobs JOB ARGS...`` (see bench_peers).

Each job imports only what it needs, inside its function, so the process start-up it pays is
the one a user's script would pay. Ours call the library as the Luigi tasks do; the peers are
what a user would write instead, with the same input and an output of the same kind.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# extraction: features.parquet from a .osm.pbf


def osmsat_extract(config: str, pbf: str, out: str, only: str = "") -> None:
    from pipeline.config.region import load_config
    from pipeline.labels.features import write_features
    from pipeline.labels.osm import extract_features

    classes = load_config(config).classes
    classes = tuple(c for c in classes if not only or c.name == only)
    write_features(extract_features(Path(pbf), classes), out)


def plain_extract(config: str, pbf: str, out: str, only: str = "") -> None:
    """A plain pyosmium handler: areas from ``area()``, lines from ``way()``, WKB factory,
    a GeoDataFrame, GeoParquet."""
    import geopandas as gpd
    import osmium
    import shapely

    from pipeline.config.region import load_config

    classes = [c for c in load_config(config).classes if not only or c.name == only]
    areas = [c for c in classes if c.kind == "area"]
    lines = [c for c in classes if c.kind == "line"]
    fab = osmium.geom.WKBFactory()
    rows: list[tuple[int, str, str]] = []

    def first(specs: list[Any], tags: Any) -> Any:
        d = dict(tags)
        return next((c for c in specs if c.matches(d) is not None), None)

    class Handler(osmium.SimpleHandler):
        def area(self, a: Any) -> None:
            c = first(areas, a.tags)
            if c is not None:
                with contextlib.suppress(RuntimeError):
                    rows.append((a.orig_id(), c.name, fab.create_multipolygon(a)))

        def way(self, w: Any) -> None:
            c = first(lines, w.tags)
            if c is not None:
                with contextlib.suppress(RuntimeError, osmium.InvalidLocationError):
                    rows.append((w.id, c.name, fab.create_linestring(w)))

    keys = sorted({f.key for c in classes for f in c.tags})
    Handler().apply_file(pbf, locations=True, filters=[osmium.filter.KeyFilter(*keys)])
    geoms = shapely.from_wkb([bytes.fromhex(w) for _, _, w in rows])
    gdf = gpd.GeoDataFrame({"osm_id": [r[0] for r in rows], "class": [r[1] for r in rows]}, geometry=geoms,
                           crs="EPSG:4326")
    gdf.to_parquet(out)


# ---------------------------------------------------------------------------------------------
# cover: tiles.csv from the features


def osmsat_cover(config: str, features: str, out: str) -> None:
    from pipeline.config.region import load_config
    from pipeline.labels.features import read_feature_columns
    from pipeline.tiles.cover import cover_features, tile_list, write_tiles_csv

    cfg = load_config(config)
    cols = read_feature_columns(features, ("geometry", "buffer_m"))
    xy = cover_features(cols["geometry"], cols["buffer_m"].astype(float), cfg.zoom)
    write_tiles_csv(tile_list(xy, cfg.zoom, cfg.shard_zoom), out)


def supermercado_cover(zoom: str, geojson: str, out: str) -> None:
    """supermercado's ``burntiles.burn`` on the same (line-buffered) features as GeoJSON."""
    import json

    from supermercado import burntiles

    with open(geojson) as fh:
        feats = json.load(fh)["features"]
    tiles = burntiles.burn(feats, int(zoom))
    with open(out, "w") as fh:
        fh.write("z,x,y\n")
        fh.writelines(f"{z},{x},{y}\n" for x, y, z in tiles.tolist())


# ---------------------------------------------------------------------------------------------
# masks: palette PNG per tile


def osmsat_masks(config: str, features: str, tiles_csv: str, out: str) -> None:
    from pipeline.config.region import load_config
    from pipeline.labels.features import read_features
    from pipeline.tiles.cover import read_tiles_csv, shard_tiles
    from pipeline.tiles.masks import mask_palette, mask_pngs, prepare_burn, shard_read_bbox
    from pipeline.tiles.writer import write_tile_files

    cfg = load_config(config)
    df = read_tiles_csv(tiles_csv)
    root = Path(out)
    for shard in sorted(df.shard.unique()):
        feats = read_features(features, bbox=shard_read_bbox(shard, cfg.classes))
        burn = prepare_burn(feats, cfg.classes)
        pngs = mask_pngs(burn, shard_tiles(df, shard), cfg.tile_size, mask_palette(cfg.classes),
                         cfg.masks.ignore_ring_px)
        write_tile_files(root, pngs, "png", root / "_tmp" / shard)


def plain_masks(config: str, features: str, tiles_csv: str, out: str) -> None:
    """A plain loop: features to EPSG:3857 (lines buffered), an STRtree, then per tile one
    ``rasterio.features.rasterize`` and a Pillow palette PNG."""
    import geopandas as gpd
    import mercantile
    import numpy as np
    import pandas as pd
    import shapely
    from PIL import Image
    from rasterio.features import rasterize
    from rasterio.transform import from_bounds

    from pipeline.config.region import load_config
    from pipeline.tiles.masks import mask_palette

    cfg = load_config(config)
    prio = {c.id: c.priority for c in cfg.classes}
    g = gpd.read_parquet(features)
    b = g.geometry.bounds
    lat = ((b["miny"] + b["maxy"]) / 2).to_numpy()
    g = g.to_crs(3857)
    scale = 1 / np.cos(np.radians(lat))
    lines = g.geometry.geom_type.isin(["LineString", "MultiLineString"]).to_numpy()
    geoms = g.geometry.to_numpy().copy()
    geoms[lines] = shapely.buffer(geoms[lines], g["buffer_m"].to_numpy()[lines] * scale[lines], cap_style="flat")
    order = np.argsort([prio[int(c)] for c in g["class_id"]], kind="stable")
    geoms, ids = geoms[order], g["class_id"].to_numpy()[order]
    tree = shapely.STRtree(geoms)
    palette = mask_palette(cfg.classes)
    size = cfg.tile_size
    for z, x, y in pd.read_csv(tiles_csv)[["z", "x", "y"]].itertuples(index=False):
        b = mercantile.xy_bounds(int(x), int(y), int(z))
        hit = np.sort(tree.query(shapely.box(b.left, b.bottom, b.right, b.top)))
        arr = rasterize(zip(geoms[hit], ids[hit]), out_shape=(size, size), dtype="uint8",
                        transform=from_bounds(b.left, b.bottom, b.right, b.top, size, size)) if len(hit) \
            else np.zeros((size, size), np.uint8)
        img = Image.fromarray(arr, mode="P")
        img.putpalette(palette)
        path = Path(out) / str(z) / str(x) / f"{y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, optimize=False, compress_level=6)


# ---------------------------------------------------------------------------------------------
# vectorising: prediction tiles -> one GeoJSON of the region


def _prediction_tiles(folder: str) -> dict[Any, Path]:
    """The ``z/x/y.png`` prediction tiles under ``folder``, by tile."""
    from pipeline.tiles.tilemath import Tile

    out = {}
    for p in sorted(Path(folder).glob("*/*/*.png")):
        out[Tile(int(p.parent.parent.name), int(p.parent.name), int(p.stem))] = p
    return out


def osmsat_vectorize(config: str, folder: str, out: str, regularize: str = "default") -> None:
    """Vectorize (every shard, its two files written) + MergeFeatures (the files read back, merged,
    ``out`` as predictions.geojson and ``out`` with suffix ``.gpkg`` as predictions.gpkg) minus
    Luigi, calling what the tasks call; ``regularize = none`` runs with ``[vectorize] regularize = []``
    (no building regularisation, the plain script's work)."""
    import dataclasses

    from pipeline.config.region import load_config
    from pipeline.tiles.tilemath import quadkey_to_tile, shard_of
    from pipeline.vectors.finish import finish_shard_table
    from pipeline.vectors.region import merge_shard_files, write_predictions
    from pipeline.vectors.vector_io import shard_files, write_finished, write_pieces
    from pipeline.vectors.vectorize import cached_loader, read_tile, shard_box_px, shard_pieces

    cfg = load_config(config)
    spec = cfg.vectorize
    if regularize == "none":
        spec = dataclasses.replace(spec, regularize=())
    files = _prediction_tiles(folder)
    ids = [c.id for c in sorted(cfg.classes, key=lambda c: c.id)]
    edges = cfg.edge_ids if spec.instances else ()

    def read(t: Any) -> Any:
        path = files.get(t)
        return None if path is None else read_tile(path.read_bytes(), "predictions", ids, str(path), edges)

    shards: dict[str, list[Any]] = {}
    for t in files:
        shards.setdefault(shard_of(t, cfg.shard_zoom), []).append(t)
    vectors = Path(out).with_suffix(".vectors")
    paths = []
    for s, ts in sorted(shards.items()):  # Vectorize, one shard after the other
        p = quadkey_to_tile(s)
        pieces = shard_pieces(ts, cached_loader(read, cfg.classes), cfg.classes, spec.threshold,
                              shard_box_px(s, cfg.zoom, cfg.tile_size), p.x * (1 << p.z) + p.y, edges,
                              spec.marker_min_m2)
        finished, still_open = finish_shard_table(pieces, cfg.classes, spec, cfg.zoom, cfg.tile_size)
        feats_path, rest_path = shard_files(vectors, s)
        write_finished(finished, feats_path)
        write_pieces(still_open, rest_path)
        paths.append((feats_path, rest_path))
    feats = merge_shard_files(paths, cfg.classes, spec, cfg.zoom, cfg.tile_size, edges)  # MergeFeatures
    write_predictions(feats, cfg.classes, Path(out), Path(out).with_suffix(".gpkg"))


def plain_vectorize(config: str, folder: str, out: str) -> None:
    """A plain script: per tile and class, the band at >= 0.5 through ``rasterio.features.shapes``
    (tile transform in EPSG:3857), then one ``shapely.union_all`` per class, to lon/lat, GeoJSON."""
    import json

    import mercantile
    import numpy as np
    import shapely
    from PIL import Image
    from rasterio.features import shapes
    from rasterio.transform import from_bounds

    from pipeline.config.region import load_config
    from pipeline.tiles.geo import to_lonlat

    cfg = load_config(config)
    classes = sorted(cfg.classes, key=lambda c: c.id)
    size = cfg.tile_size
    polys: dict[str, list[Any]] = {c.name: [] for c in classes}
    for t, path in _prediction_tiles(folder).items():
        with Image.open(path) as im:
            arr = np.asarray(im)
        for k, c in enumerate(classes):
            binary = (arr[k * size:(k + 1) * size] >= 128).astype(np.uint8)
            if not binary.any():
                continue
            b = mercantile.xy_bounds(t.x, t.y, t.z)
            tr = from_bounds(b.left, b.bottom, b.right, b.top, size, size)
            polys[c.name] += [shapely.geometry.shape(g) for g, _ in shapes(binary, mask=binary.astype(bool),
                                                                            transform=tr)]
    feats = []
    for name, ps in polys.items():
        if ps:
            for g in to_lonlat(shapely.get_parts(shapely.union_all(ps))):
                feats.append({"type": "Feature", "properties": {"class": name},
                              "geometry": json.loads(shapely.to_geojson(g))})
    Path(out).write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


# ---------------------------------------------------------------------------------------------
# imagery: tiles cut from a COG


def osmsat_imagery(cog: str, tiles_txt: str, fmt: str, out: str) -> None:
    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.raster import raster_shard
    from pipeline.imagery.raster_plan import plan_sources
    from pipeline.tiles.tilemath import Tile, shard_of

    tiles = [Tile(*map(int, line.split())) for line in Path(tiles_txt).read_text().split("\n") if line]
    icfg = ImageryConfig(source="raster", paths=(Path(cog),), format=fmt, resampling="bilinear", png_level=1,
                         jpeg_quality=90)
    plan = plan_sources(icfg)
    shards: dict[str, list[Tile]] = {}
    for t in tiles:
        shards.setdefault(shard_of(t, t.z - 5), []).append(t)
    for shard, ts in shards.items():
        raster_shard(plan, icfg, shard, ts, 256, Path(out), Path(out) / "_tmp" / shard)


def riotiler_imagery(cog: str, tiles_txt: str, fmt: str, out: str) -> None:
    """rio-tiler's ``Reader.tile`` + ``render`` at the same PNG level (1) / JPEG quality (90)."""
    from rio_tiler.io import Reader

    tiles = [tuple(map(int, line.split())) for line in Path(tiles_txt).read_text().split("\n") if line]
    opts = {"zlevel": 1} if fmt == "png" else {"quality": 90}
    with Reader(cog) as r:
        for z, x, y in tiles:
            img = r.tile(x, y, z, tilesize=256, resampling_method="bilinear")
            data = img.render(img_format="PNG" if fmt == "png" else "JPEG", add_mask=False, **opts)
            path = Path(out) / str(z) / str(x) / f"{y}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
