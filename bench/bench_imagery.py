"""Imagery benchmarks (``make bench``): COG tiling and downloads from a local tile server.

* COG tiling: 256-px z18 tiles from a generated 0.5 m UTM COG (3-band uint8, with overviews)
  through the shard's warped VRT, encoded and written (JPEG and PNG; bilinear and nearest),
  on one core; one shard and a 4x larger one (cost per tile should stay flat); peak memory.
* rio-tiler's ``Reader.tile`` on the same COG with PNG, as a reference, when it is installed.
* Downloads: ``fetch_tiles`` with 16 connections from ``tests/tileserver.py`` running in
  another process (pre-encoded PNG tiles held in memory).

Run: ``python -m bench.bench_imagery [--quick]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import report, run_phase

SIZE = 256
ZOOM = 18
SHARD_ZOOM = 13  # a z13 shard holds up to 32 x 32 z18 tiles


def make_cog(path: Path, n: int, seed: int = 0) -> Path:
    """A photo-like 3-band uint8 COG in UTM 16N at 0.5 m (n x n pixels), deflate, overviews."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.shutil import copy
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, n // 32 + 2, n // 32 + 2)).astype(np.float32)
    img = np.stack([np.asarray(Image.fromarray(b).resize((n, n), Image.BICUBIC)) for b in small])
    img = np.clip(img + rng.normal(0, 3, img.shape).astype(np.float32), 0, 255).astype(np.uint8)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs="EPSG:32616",
                       transform=from_origin(733000.0, 3726000.0, 0.5, 0.5), tiled=True, blockxsize=512,
                       blockysize=512, photometric="RGB") as dst:
        dst.write(img)
        dst.build_overviews([2, 4, 8, 16], Resampling.average)
    copy(tmp, path, driver="COG", compress="DEFLATE", blocksize=512)
    tmp.unlink()
    return path


def inner_tiles(cog: Path) -> dict[str, list[Any]]:
    """z18 tiles wholly inside the COG, grouped by z13 shard (largest shard first)."""
    import rasterio
    from rasterio.warp import transform_bounds

    from pipeline.tiles.tilemath import Tile, cover_bbox, shard_of, tile_bounds

    with rasterio.open(cog) as src:
        inner = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tiles = []
    for x, y in cover_bbox((w, s, e, n), ZOOM):
        t = Tile(ZOOM, int(x), int(y))
        b = tile_bounds(t)
        if b[0] > inner[0] + 50 and b[2] < inner[2] - 50 and b[1] > inner[1] + 50 and b[3] < inner[3] - 50:
            tiles.append(t)
    by: dict[str, list[Any]] = {}
    for t in tiles:
        by.setdefault(shard_of(t, SHARD_ZOOM), []).append(t)
    return dict(sorted(by.items(), key=lambda kv: -len(kv[1])))


def tile_phase(cog: Path, shard: str, tiles: list[Any], fmt: str, resampling: str, out: Path) -> int:
    """Tile, encode and write; returns the tiles written."""
    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.raster import raster_shard
    from pipeline.imagery.raster_plan import plan_sources
    from pipeline.tiles.writer import TileStatus

    icfg = ImageryConfig(source="raster", paths=(cog,), format=fmt, resampling=resampling)
    plan = plan_sources(icfg)
    recs = raster_shard(plan, icfg, shard, tiles, SIZE, out, out / "_tmp")
    return sum(r.status == TileStatus.OK for r in recs)


def riotiler_phase(cog: Path, tiles: list[Any]) -> int:
    from rio_tiler.io import Reader  # type: ignore[import-not-found]

    n = 0
    with Reader(str(cog)) as r:
        for t in tiles:
            img = r.tile(t.x, t.y, t.z, tilesize=SIZE)
            img.render(img_format="PNG")
            n += 1
    return n


def _serve(tiles: dict[Any, bytes], port_q: Any, stop: Any) -> None:
    from tests.tileserver import TileServer

    with TileServer(tiles) as srv:
        port_q.put(srv.url)
        stop.wait()


def fetch_phase(url: str, tiles: list[Any], out: Path, connections: int) -> int:
    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.download import DownloadOptions
    from pipeline.imagery.xyz import fetch_tiles

    icfg = ImageryConfig(source="xyz", url=url + "/xyz/{z}/{x}/{y}.png")
    _, stats = fetch_tiles(icfg, tiles, SIZE, out, out / "_tmp",
                           download=DownloadOptions(max_connections=connections, timeout_s=30))
    return int(stats.fetched)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller COG and fewer downloads")
    args = ap.parse_args()
    n = 4096 if args.quick else 8192
    work = Path(__file__).resolve().parents[1] / "data"  # the project's disk (often faster than /tmp)
    work.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="_bench-imagery-", dir=work) as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        cog, _, _ = run_phase(make_cog, tmp / "ortho_cog.tif", n)  # in a child: the parent stays small
        print(f"# COG {n}x{n} px, 0.5 m, UTM 16N, {cog.stat().st_size / 2**20:.0f} MB, "
              f"made in {time.perf_counter() - t0:.1f} s", flush=True)
        shards = inner_tiles(cog)
        shard, tiles = next(iter(shards.items()))
        small = tiles[: max(16, len(tiles) // 4)]
        for fmt in ("jpg", "png"):
            for rs in ("bilinear", "nearest"):
                for name, sel in (("1/4 shard", small), ("shard", tiles)):
                    out = tmp / f"tiles-{fmt}-{rs}-{len(sel)}"
                    made, dt, peak = run_phase(tile_phase, cog, shard, sel, fmt, rs, out)
                    report(f"cog tiling {fmt} {rs} ({name})", made / dt, "tiles/s",
                           tiles=made, ms_per_tile=round(1000 * dt / made, 2), peak_mb=round(peak))
        try:
            import rio_tiler  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            print("# rio-tiler not installed: its reference figure is skipped", flush=True)
        else:
            made, dt, peak = run_phase(riotiler_phase, cog, small)
            report("rio-tiler Reader.tile png (reference)", made / dt, "tiles/s", tiles=made, peak_mb=round(peak))

        # downloads from a local server in another process
        blobs = [p.read_bytes() for p in sorted((tmp / f"tiles-png-bilinear-{len(tiles)}").rglob("*.png"))][:64]
        count = 1000 if args.quick else 3000
        from pipeline.tiles.tilemath import Tile

        side = int(np.ceil(np.sqrt(count)))
        dl_tiles = [Tile(ZOOM, 70000 + i % side, 100000 + i // side) for i in range(count)]
        served = {t: blobs[i % len(blobs)] for i, t in enumerate(dl_tiles)}
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        stop = ctx.Event()
        proc = ctx.Process(target=_serve, args=(served, q, stop), daemon=True)
        proc.start()
        url = q.get(timeout=60)
        try:
            for conns in (16, 4):
                out = tmp / f"dl-{conns}"
                made, dt, peak = run_phase(fetch_phase, url, dl_tiles, out, conns)
                report(f"download from local server ({conns} connections)", made / dt, "tiles/s",
                       tiles=made, peak_mb=round(peak))
        finally:
            stop.set()
            proc.join(5)
    print(f"# cores: {os.cpu_count()}, GDAL_NUM_THREADS={os.environ.get('GDAL_NUM_THREADS')}", flush=True)


if __name__ == "__main__":
    main()
