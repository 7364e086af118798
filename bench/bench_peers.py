"""Each stage against what a user would pick instead, as whole processes (``make bench``).

    python -m bench.bench_peers [--runs 3] [--grid 8] [--quick]

Every figure is the wall time of a fresh ``python -m bench.peer_jobs JOB ...`` process (imports,
reading the input and writing the output included), the median of ``--runs`` runs, ours and the
peer's interleaved so that load on a shared machine hits both alike. Printed: both medians and
the ratio ours / peer (below 1.0: we are faster).

* extract — ``features.parquet`` from Helsinki (672 KB) and Helsinki replicated on a grid
  (bench_extract's generator): osmsat vs a plain pyosmium handler (area + way callbacks, WKB,
  GeoParquet); buildings only and the four classes of configs/helsinki.toml.
* cover — tiles.csv at z18 from those features: osmsat vs supermercado ``burntiles.burn`` (fed
  the same features, lines already buffered).
* masks — palette PNG per tile: osmsat vs a plain STRtree + ``rasterize`` + Pillow loop.
* vectorize — the demo's prediction tiles (data/demo/predictions, when present) to one GeoJSON:
  osmsat (Vectorize per shard + MergeFeatures minus Luigi: instances, centrelines, merge across
  borders, simplification; with and without building regularisation) vs a plain script
  (``rasterio.features.shapes`` per tile and class, one ``union_all`` per class).
* imagery — 256-px z18 tiles from a 0.5 m UTM COG, PNG (zlib level 1) and JPEG (quality 90),
  bilinear: osmsat vs rio-tiler ``Reader.tile`` + ``render`` at the same settings.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data" / "osm" / "helsinki.osm.pbf"
OUT = ROOT / "bench" / "out"
CONFIG = ROOT / "configs" / "helsinki.toml"


def timed(job: str, *args: object, clean: Path | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one ``python -m bench.peer_jobs job args``
    process and its children (``clean`` removed first)."""
    if clean is not None:
        shutil.rmtree(clean, ignore_errors=True) if clean.is_dir() else clean.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.peer_jobs", job, *map(str, args)], cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pair(label: str, runs: int, ours: tuple[str, ...], peer: tuple[str, ...], out_ours: Path,
         out_peer: Path) -> None:
    """Time ours and the peer alternately; print the medians and the ratio."""
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    for _ in range(runs):
        a.append(timed(*ours, clean=out_ours))
        b.append(timed(*peer, clean=out_peer))
    wa, wb = statistics.median(w for w, _ in a), statistics.median(w for w, _ in b)
    ca, cb = statistics.median(c for _, c in a), statistics.median(c for _, c in b)
    print(f"{label}: wall osmsat {wa:.2f} s / {peer[0].split('_')[0]} {wb:.2f} s = {wa / wb:.2f}x; "
          f"cpu {ca:.2f} s / {cb:.2f} s = {ca / cb:.2f}x (medians of {runs} whole processes)", flush=True)


def _geojson_for_supermercado(features: Path, out: Path) -> None:
    """The features as GeoJSON (EPSG:4326), lines buffered as our cover buffers them."""
    import shapely

    from pipeline.labels.features import read_features
    from pipeline.tiles.geo import buffer_ground_m, to_lonlat, to_mercator

    g = read_features(features)
    geoms = to_lonlat(buffer_ground_m(to_mercator(g.geometry.to_numpy()), g["buffer_m"].to_numpy(dtype=float)))
    feats = [{"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(x))} for x in geoms]
    out.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="Helsinki only, and a smaller COG")
    ap.add_argument("--stages", default="extract,cover,masks,vectorize,imagery")
    args = ap.parse_args()
    stages = set(args.stages.split(","))
    if not SRC.is_file():
        print(f"bench_peers: skipped, {SRC} not found (the shared test data is not checked out)")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = [("helsinki", SRC)]
    if not args.quick:
        from bench.bench_extract import GENERATOR_VERSION, make_grid_extract

        big = OUT / f"helsinki-{args.grid}x{args.grid}-v{GENERATOR_VERSION}.osm.pbf"
        if not big.is_file():
            make_grid_extract(SRC, big, args.grid)
        inputs.append((f"helsinki x{args.grid ** 2}", big))
    with tempfile.TemporaryDirectory(prefix="_bench-peers-", dir=OUT) as tmp_s:
        tmp = Path(tmp_s)
        for name, pbf in inputs:
            mb = pbf.stat().st_size / 1e6
            print(f"--- {name}: {pbf.name}, {mb:.1f} MB", flush=True)
            feats = tmp / "features.parquet"
            if "extract" in stages:
                pair(f"extract {name}, building", args.runs, ("osmsat_extract", CONFIG, pbf, feats, "building"),
                     ("plain_extract", CONFIG, pbf, tmp / "plain.parquet", "building"), feats, tmp / "plain.parquet")
                pair(f"extract {name}, 4 classes", args.runs, ("osmsat_extract", CONFIG, pbf, feats),
                     ("plain_extract", CONFIG, pbf, tmp / "plain.parquet"), feats, tmp / "plain.parquet")
            if not feats.is_file() or "extract" not in stages:
                timed("osmsat_extract", CONFIG, pbf, feats)
            tiles = tmp / "tiles.csv"
            if "cover" in stages:
                gj = tmp / "features.geojson"
                _geojson_for_supermercado(feats, gj)
                pair(f"cover {name}", args.runs, ("osmsat_cover", CONFIG, feats, tiles),
                     ("supermercado_cover", 18, gj, tmp / "sm.csv"), tiles, tmp / "sm.csv")
            if not tiles.is_file():
                timed("osmsat_cover", CONFIG, feats, tiles)
            if "masks" in stages:
                ntiles = sum(1 for _ in tiles.open()) - 1
                pair(f"masks {name} ({ntiles} tiles)", args.runs, ("osmsat_masks", CONFIG, feats, tiles, tmp / "m1"),
                     ("plain_masks", CONFIG, feats, tiles, tmp / "m2"), tmp / "m1", tmp / "m2")
        if "vectorize" in stages:
            _vectorize(tmp, args.runs)
        if "imagery" in stages:
            _imagery(tmp, args.runs, 2048 if args.quick else 4096)
    return 0


def _vectorize(tmp: Path, runs: int) -> None:
    """The demo's prediction tiles (a copy, so a concurrent run cannot change them under us)."""
    src = ROOT / "data" / "demo" / "predictions"
    tiles = _listed_tiles(src)
    if not tiles:
        print(f"vectorize: skipped, no prediction tiles in {src} (make demo first)")
        return
    folder = tmp / "predictions"
    for p in tiles:
        dst = folder / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    config = ROOT / "configs" / "demo.toml"
    print(f"--- vectorize: {len(tiles)} demo prediction tiles (building, road)", flush=True)
    ours, plain = tmp / "v1.json", tmp / "v2.json"
    pair("vectorize demo, defaults (buildings regularised)", runs, ("osmsat_vectorize", config, folder, ours),
         ("plain_vectorize", config, folder, plain), ours, plain)
    pair("vectorize demo, regularize = [] (the plain script's work)", runs,
         ("osmsat_vectorize", config, folder, ours, "none"), ("plain_vectorize", config, folder, plain), ours, plain)


def _listed_tiles(src: Path) -> list[Path]:
    """The prediction tiles the demo's shard manifests list (what the tasks vectorise; a folder
    reused across runs can hold tiles of an earlier tile set), or every tile without manifests."""
    from pipeline.core.manifests import read_manifest

    listed = {rel for m in sorted((src / "_shards").glob("*.json")) for rel in read_manifest(m).get("files", {})}
    if not listed:
        return sorted(src.glob("*/*/*.png"))
    return sorted(src / rel for rel in listed if (src / rel).is_file())


def _imagery(tmp: Path, runs: int, n: int) -> None:
    from bench.bench_imagery import inner_tiles, make_cog

    cog = make_cog(tmp / "ortho_cog.tif", n)
    tiles = [t for ts in inner_tiles(cog).values() for t in ts]
    txt = tmp / "tiles.txt"
    txt.write_text("".join(f"{t.z} {t.x} {t.y}\n" for t in tiles))
    print(f"--- imagery: COG {n}x{n} px, 0.5 m, UTM 16N; {len(tiles)} z18 tiles", flush=True)
    try:
        import rio_tiler  # noqa: F401
    except ImportError:
        print("rio-tiler not installed (pip install rio-tiler): no imagery reference")
        return
    for fmt in ("png", "jpg"):
        pair(f"imagery {fmt}", runs, ("osmsat_imagery", cog, txt, fmt, tmp / "i1"),
             ("riotiler_imagery", cog, txt, fmt, tmp / "i2"), tmp / "i1", tmp / "i2")


if __name__ == "__main__":
    sys.exit(main())
