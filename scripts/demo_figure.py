"""Draw ``docs/demo_tiles.png``: a few z19 tiles of the demo region, the imagery above and the
same imagery with its label mask overlaid below (what the pipeline learns from).

Usage: ``python scripts/demo_figure.py [configs/demo.toml] [docs/demo_tiles.png]``. Generates
the sample region first when its files are missing. Imagery tiles are read the way the
pipeline reads them (``pipeline.imagery.raster``: the UTM orthophoto warped to the tile's
web-mercator grid); masks come from ``pipeline.tiles.masks`` over the OSM extraction. Outlines mark
buildings that OSM lacks (cyan) and OSM buildings the image no longer shows (yellow).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw
from pyproj import Transformer

from pipeline.config.region import RegionConfig, load_config
from pipeline.imagery.raster import ShardTiler
from pipeline.imagery.raster_plan import plan_sources
from pipeline.labels.osm import extract_features
from pipeline.synthetic import make_town, sample_paths, write_sample_region
from pipeline.tiles.geo import lonlat_to_mercator
from pipeline.tiles.masks import burn_tile, mask_palette, prepare_burn
from pipeline.tiles.tilemath import Tile, shard_of, tile_transform

GAP = 6
ALPHA = 0.45
MISSING, DEMOLISHED = (0, 230, 255), (255, 230, 0)


def _tile_at(cfg: RegionConfig, lon: float, lat: float) -> Tile:
    x, y = lonlat_to_mercator(np.array([[lon, lat]]))[0]
    t = ~tile_transform(Tile(cfg.zoom, 0, 0), cfg.tile_size)
    col, row = t * (x, y)
    return Tile(cfg.zoom, int(col // cfg.tile_size), int(row // cfg.tile_size))


def _candidates(cfg: RegionConfig, truth: list[dict]) -> list[list[Tile]]:  # type: ignore[type-arg]
    """Candidate tiles, by theme: the lake, a roundabout, a building missing from OSM, a courtyard."""
    if cfg.synthetic is None:
        raise SystemExit(f"{cfg.path} has no [synthetic] section")
    town = make_town(cfg.synthetic)
    to_lonlat = Transformer.from_crs(town.epsg, 4326, always_xy=True)

    def tile(x: float, y: float) -> Tile:
        lon, lat = to_lonlat.transform(x + town.left, y + town.bottom)
        return _tile_at(cfg, float(lon), float(lat))

    themes = [
        [tile(*a.geom.centroid.coords[0]) for a in town.areas if a.kind == "water"],
        [tile(*shapely.LineString(r.coords).centroid.coords[0]) for r in town.roads if r.junction],
    ]
    for status, shape in (("missing_in_osm", "rect"), ("mapped", "courtyard")):
        themes.append([_tile_at(cfg, *shapely.geometry.shape(f["geometry"]).centroid.coords[0]) for f in truth
                       if f["properties"]["status"] == status and f["properties"].get("shape") == shape])
    return themes


def _outlines(draw: ImageDraw.ImageDraw, tile: Tile, size: int, truth: list[dict]) -> None:  # type: ignore[type-arg]
    inv = ~tile_transform(tile, size)
    for f in truth:
        status = f["properties"]["status"]
        if status == "mapped":
            continue
        geom = shapely.geometry.shape(f["geometry"])
        xy = lonlat_to_mercator(shapely.get_coordinates(getattr(geom, "exterior", geom)))
        px = [inv * (float(x), float(y)) for x, y in xy]
        if any(0 <= a < size and 0 <= b < size for a, b in px):
            draw.line(px, fill=MISSING if status == "missing_in_osm" else DEMOLISHED, width=2)


def main(config: str = "configs/demo.toml", out: str = "docs/demo_tiles.png") -> None:
    cfg = load_config(config)
    if cfg.synthetic is None or cfg.imagery is None:
        raise SystemExit(f"{config}: needs [synthetic] and [imagery] sections")
    osm_path, ortho_path, truth_path = sample_paths(cfg)
    if not (osm_path.is_file() and ortho_path.is_file() and truth_path.is_file()):
        write_sample_region(cfg.synthetic, osm_path, ortho_path, truth_path)
    truth = json.loads(truth_path.read_text())["features"]
    burn = prepare_burn(extract_features(osm_path, cfg.classes), cfg.classes)
    palette = np.array(mask_palette(cfg.classes), dtype=np.float32).reshape(256, 3)
    plan = plan_sources(cfg.imagery)
    size = cfg.tile_size
    picked: list[tuple[Tile, np.ndarray]] = []
    for theme in _candidates(cfg, truth):
        for t in theme:
            with ShardTiler(plan, shard_of(t, cfg.shard_zoom), cfg.zoom, size, cfg.imagery.resampling) as tiler:
                data, valid = tiler.read(t)
            if valid.all() and t not in [p[0] for p in picked]:  # whole tiles only, no image edge
                picked.append((t, data))
                break
    tiles = [t for t, _ in picked]
    fig = Image.new("RGB", (len(tiles) * (size + GAP) + GAP, 2 * (size + GAP) + GAP + 22), (255, 255, 255))
    for i, (t, data) in enumerate(picked):
        rgb = np.moveaxis(data[:3], 0, -1).astype(np.float32)
        mask = burn_tile(burn, t, size, cfg.masks.ignore_ring_px)
        over = np.where(mask[..., None] > 0, rgb * (1 - ALPHA) + palette[mask] * ALPHA, rgb)
        x = GAP + i * (size + GAP)
        fig.paste(Image.fromarray(rgb.astype(np.uint8)), (x, GAP))
        lower = Image.fromarray(np.clip(over, 0, 255).astype(np.uint8))
        _outlines(ImageDraw.Draw(lower), t, size, truth)
        fig.paste(lower, (x, 2 * GAP + size))
    draw = ImageDraw.Draw(fig)
    y = 3 * GAP + 2 * size
    draw.text((GAP, y), f"demo tiles z{cfg.zoom} (imagery; mask: building red, road grey)", fill=(0, 0, 0))
    draw.text((GAP + 330, y), "missing in OSM", fill=(0, 140, 170))
    draw.text((GAP + 430, y), "demolished (OSM only)", fill=(170, 140, 0))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.save(out, optimize=True)
    print(f"wrote {out}: tiles {', '.join(map(str, tiles))}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
