"""Download throughput from a local tile server (another process, 127.0.0.1): tiles/s of
``fetch_tiles`` into a fresh folder, median of 3 runs, at 16 and 4 connections.

    python -m bench.bench_download [--tiles 2000]

Runs against the code of the tree it is started from (it also accepts the older API where the
connection settings sat in ``[imagery]``), so before/after figures come from two checkouts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ZOOM = 18


def _serve(tiles: dict[Any, bytes], port_q: Any, stop: Any) -> None:
    from tests.tileserver import TileServer

    with TileServer(tiles) as srv:
        port_q.put(srv.url)
        stop.wait()


def _fetch(url: str, tiles: list[Any], out: Path, connections: int) -> int:
    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.xyz import fetch_tiles

    template = url + "/xyz/{z}/{x}/{y}.png"
    try:
        from pipeline.imagery.download import DownloadOptions
    except ImportError:  # the tree before the download settings moved to luigi.toml
        icfg = ImageryConfig(source="xyz", url=template, max_connections=connections,  # type: ignore[call-arg]
                             timeout_s=30)
        _, stats = fetch_tiles(icfg, tiles, 256, out, out / "_tmp")
    else:
        icfg = ImageryConfig(source="xyz", url=template)
        _, stats = fetch_tiles(icfg, tiles, 256, out, out / "_tmp",
                               download=DownloadOptions(max_connections=connections, timeout_s=30))
    return int(stats.fetched)


def _blobs(n: int) -> list[bytes]:
    import io

    from PIL import Image

    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((256, 256), Image.BILINEAR)
        arr = np.clip(np.asarray(img) + rng.normal(0, 10, (256, 256, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiles", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from pipeline.tiles.tilemath import Tile

    blobs = _blobs(32)
    side = int(np.ceil(np.sqrt(args.tiles)))
    tiles = [Tile(ZOOM, 70000 + i % side, 100000 + i // side) for i in range(args.tiles)]
    served = {t: blobs[i % len(blobs)] for i, t in enumerate(tiles)}
    ctx = mp.get_context("fork")
    q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(served, q, stop), daemon=True)
    proc.start()
    url = q.get(timeout=60)
    try:
        with tempfile.TemporaryDirectory(prefix="_bench-dl-") as tmp:
            for conns in (16, 4):
                rates = []
                for run in range(args.runs):
                    out = Path(tmp) / f"dl-{conns}-{run}"
                    t0 = time.perf_counter()
                    made = _fetch(url, tiles, out, conns)
                    rates.append(made / (time.perf_counter() - t0))
                    shutil.rmtree(out)
                print(f"download {args.tiles} tiles, {conns} connections: {statistics.median(rates):.0f} tiles/s "
                      f"(median of {args.runs}: {', '.join(f'{r:.0f}' for r in rates)})", flush=True)
    finally:
        stop.set()
        proc.join(5)


if __name__ == "__main__":
    main()
