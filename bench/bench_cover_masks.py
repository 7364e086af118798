"""Benchmark: exact tile cover (features/s) and label masks written as PNG (tiles/s), with peak memory.

    python -m bench.bench_cover_masks

On Helsinki (../shared/data/osm/helsinki.osm.pbf) and on the >= 50x larger extract that
``bench.bench_extract`` generates (Helsinki replicated on a grid). One core. Masks are burnt,
encoded and written atomically into bench/out/, shard by shard, exactly as RasterizeMasks does
(minus Luigi); tiles/s at two sizes shows whether the cost is linear in the number of tiles.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bench.common import report, run_phase
from pipeline.config.region import load_config
from pipeline.labels.features import read_features, write_features
from pipeline.tiles.cover import cover_features, read_tiles_csv, shard_tiles, tiles_table, write_tiles_csv
from pipeline.tiles.masks import mask_palette, mask_pngs, prepare_burn, shard_read_bbox
from pipeline.tiles.writer import write_tile_files

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
CONFIG = ROOT / "configs" / "helsinki.toml"


def _features(pbf: Path, name: str) -> Path:
    """Extract (once, cached) the four Helsinki classes from ``pbf`` into bench/out."""
    from pipeline.labels.osm import extract_features

    out = OUT / f"{name}.features.parquet"
    if not out.exists() or out.stat().st_mtime < max(pbf.stat().st_mtime, Path(__file__).stat().st_mtime):
        write_features(extract_features(pbf, load_config(CONFIG).classes), out)
    return out


def _cover(features: Path, tiles_csv: Path) -> int:
    cfg = load_config(CONFIG)
    feats = read_features(features)
    xy = cover_features(feats.geometry.to_numpy(), feats["buffer_m"].to_numpy(dtype=float), cfg.zoom)
    write_tiles_csv(tiles_table(xy, cfg.zoom, cfg.shard_zoom), tiles_csv)
    return len(feats)


def _masks(features: Path, tiles_csv: Path, out: Path | None) -> int:
    """RasterizeMasks for every shard, minus Luigi: read the shard's features (bbox read),
    burn, encode and (unless ``out`` is None) write every tile's mask; returns the tile count."""
    cfg = load_config(CONFIG)
    df = read_tiles_csv(tiles_csv)
    n = 0
    for shard in sorted(df.shard.unique()):
        feats = read_features(features, bbox=shard_read_bbox(shard, cfg.classes))
        burn = prepare_burn(feats, cfg.classes)
        pngs = mask_pngs(burn, shard_tiles(df, shard), cfg.tile_size, mask_palette(cfg.classes),
                         cfg.masks.ignore_ring_px)
        if out is None:
            n += sum(1 for _ in pngs)
        else:
            n += len(write_tile_files(out, pngs, "png", out / "_tmp" / shard))
    return n


def bench(name: str, pbf: Path) -> None:
    features = _features(pbf, name)
    tiles_csv = OUT / f"{name}.tiles.csv"
    nfeat, dt, peak = run_phase(_cover, features, tiles_csv)
    ntiles = len(read_tiles_csv(tiles_csv))
    report(f"cover {name}", nfeat / dt, "features/s", features=nfeat, tiles=ntiles, seconds=f"{dt:.2f}",
           peak_mb=f"{peak:.0f}")
    out = OUT / f"{name}.masks"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the deletions' write-back must not land inside the timed phase
    n, dt, peak = run_phase(_masks, features, tiles_csv, out)
    report(f"masks {name} (PNG files written)", n / dt, "tiles/s", tiles=n, seconds=f"{dt:.2f}",
           peak_mb=f"{peak:.0f}", px=load_config(CONFIG).tile_size)
    n, dt, peak = run_phase(_masks, features, tiles_csv, None)
    report(f"masks {name} (PNG bytes only, no files)", n / dt, "tiles/s", tiles=n, seconds=f"{dt:.2f}",
           peak_mb=f"{peak:.0f}")


def main() -> int:
    helsinki = ROOT.parent / "shared" / "data" / "osm" / "helsinki.osm.pbf"
    if not helsinki.exists():
        print(f"skip: {helsinki} is absent (the benchmarks use the shared Helsinki extract)")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    from bench.bench_extract import GRID, make_grid_extract

    bench("helsinki", helsinki)
    big = OUT / f"helsinki-x{GRID * GRID}.osm.pbf"
    bench(f"helsinki-x{GRID * GRID}", make_grid_extract(helsinki, big))
    return 0


if __name__ == "__main__":
    sys.exit(main())
