"""A local tile server for tests and benchmarks, with injected faults (stdlib only).

Serves tiles (bytes per :class:`pipeline.tiles.tilemath.Tile`, e.g. cut from a generated GeoTIFF with
:func:`tiles_from_raster`) on 127.0.0.1 under several URL schemes:

* ``/xyz/{z}/{x}/{y}{r}.png`` (``{r}`` = ``@2x`` or nothing), ``/tms/{z}/{x}/{-y}.png``,
  ``/qk/{quadkey}.png``, and ``/wms?...&BBOX=minx,miny,maxx,maxy&WIDTH=..&HEIGHT=..`` (EPSG:3857).

Faults are given per tile as a list applied to its successive requests (then it is served
normally): ``"500"``, ``"503"``, ``"429"`` (with ``Retry-After``), ``"timeout"`` (answers only after
``timeout_sleep_s``), ``"truncate"`` (half the body, then the connection closes), ``"html"`` (200
with text/html), ``"garbage"`` (200 image/png that does not decode), ``"small"`` (a valid PNG of
the wrong size), ``"reset"`` (closes without answering). ``holes`` always answer 404. With
``key`` set, requests without ``?key=<key>`` get 403.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from pipeline.imagery.wms import wms_bbox
from pipeline.tiles.tilemath import Tile, quadkey_to_tile


def tiles_from_raster(path: Path, tiles: Iterable[Tile], size: int = 256, fmt: str = "png") -> dict[Tile, bytes]:
    """Encoded tiles cut from a GeoTIFF with the project's own raster tiler (all kept)."""
    from pipeline.config.region import ImageryConfig
    from pipeline.imagery.raster import iter_tiles
    from pipeline.imagery.raster_plan import plan_sources
    from pipeline.tiles.tilemath import shard_of

    icfg = ImageryConfig(source="raster", paths=(Path(path),), format=fmt, min_valid_share=0.0)
    plan = plan_sources(icfg)
    by_shard: dict[str, list[Tile]] = {}
    for t in tiles:
        by_shard.setdefault(shard_of(t, max(0, t.z - 4)), []).append(t)
    out: dict[Tile, bytes] = {}
    for shard, ts in by_shard.items():
        for t, data, _ in iter_tiles(plan, icfg, shard, ts, size):
            # nothing valid at all: serve a black tile
            out[t] = data if data is not None else _png(np.zeros((size, size, 3), np.uint8))
    return out


def _png(arr: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: TileServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: clients hang up on faults
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.app.handle(self)


class TileServer:
    """The server; use as a context manager. ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, tiles: Mapping[Tile, bytes], faults: Mapping[Tile, list[str]] | None = None,
                 holes: Iterable[Tile] = (), delay_s: float = 0.0, timeout_sleep_s: float = 1.0,
                 retry_after: str = "1", key: str | None = None, retina_tiles: Mapping[Tile, bytes] | None = None):
        self.tiles = dict(tiles)
        self.retina_tiles = dict(retina_tiles or {})
        self.faults = {t: list(f) for t, f in (faults or {}).items()}
        self.holes = set(holes)
        self.delay_s, self.timeout_sleep_s, self.retry_after, self.key = delay_s, timeout_sleep_s, retry_after, key
        self.requests: Counter[Tile] = Counter()
        self.served: Counter[Tile] = Counter()
        self.user_agents: set[str] = set()
        self.paths: list[str] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self.by_bbox = {wms_bbox(t): t for t in self.tiles} | {wms_bbox(t): t for t in self.holes}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> TileServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- requests --------------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[Tile | None, bool]:
        parts = urlsplit(path)
        seg = parts.path.strip("/").split("/")
        try:
            if seg[0] == "xyz" and len(seg) == 4:
                y, retina = seg[3].split(".")[0], "@2x" in seg[3]
                return Tile(int(seg[1]), int(seg[2]), int(y.replace("@2x", ""))), retina
            if seg[0] == "tms" and len(seg) == 4:
                z, x, ty = int(seg[1]), int(seg[2]), int(seg[3].split(".")[0])
                return Tile(z, x, (1 << z) - 1 - ty), False
            if seg[0] == "qk" and len(seg) == 2:
                return quadkey_to_tile(seg[1].split(".")[0]), False
            if seg[0] == "wms":
                q = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
                return self.by_bbox.get(q.get("bbox", "")), False
        except ValueError:
            pass
        return None, False

    def handle(self, h: _Handler) -> None:
        with self.lock:
            self.user_agents.add(h.headers.get("User-Agent", ""))
            self.paths.append(h.path)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            self._handle(h)
        finally:
            with self.lock:
                self.inflight -= 1

    def _handle(self, h: _Handler) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.key is not None:
            q = parse_qs(urlsplit(h.path).query)
            if q.get("key", [""])[0] != self.key:
                return self._send(h, 403, b"forbidden: bad key", "text/plain")
        tile, retina = self._route(h.path)
        if tile is None:
            return self._send(h, 400, b"bad request", "text/plain")
        with self.lock:
            n = self.requests[tile]
            self.requests[tile] += 1
            plan = self.faults.get(tile, [])
            fault = plan[n] if n < len(plan) else ""
        if tile in self.holes:
            return self._send(h, 404, b"no tile here", "text/plain")
        body = (self.retina_tiles if retina else self.tiles).get(tile)
        if body is None:
            return self._send(h, 404, b"no tile here", "text/plain")
        if fault:
            self._fault(h, fault, body)
            return
        with self.lock:
            self.served[tile] += 1
        self._send(h, 200, body, "image/png")

    def _fault(self, h: _Handler, fault: str, body: bytes) -> None:
        if fault in ("500", "502", "503", "404"):
            self._send(h, int(fault), b"<html>server error</html>", "text/html")
        elif fault == "429":
            self._send(h, 429, b"slow down", "text/plain", {"Retry-After": self.retry_after})
        elif fault == "timeout":
            time.sleep(self.timeout_sleep_s)
            self._send(h, 200, body, "image/png")
        elif fault == "truncate":
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
        elif fault == "html":
            self._send(h, 200, b"<html><body>Service temporarily unavailable</body></html>", "text/html")
        elif fault == "garbage":
            self._send(h, 200, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png")
        elif fault == "small":
            self._send(h, 200, _png(np.full((64, 64, 3), 90, np.uint8)), "image/png")
        elif fault == "reset":
            h.close_connection = True
        else:
            raise ValueError(f"unknown fault {fault!r}")

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True


__all__ = ["TileServer", "tiles_from_raster", "write_test_geotiff"]


def write_test_geotiff(path: Path, seed: int = 3, size_px: int = 1200, res_m: float = 0.3,
                       origin: tuple[float, float] = (385000.0, 6672000.0), crs: str = "EPSG:32635") -> Path:
    """A seeded RGB uint8 GeoTIFF (default: UTM 35N near Helsinki, 0.3 m): smooth colour
    blobs with noise, so that tiles are distinct and compress like photos."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, size_px // 40 + 2, size_px // 40 + 2)).astype(np.float32)
    img = np.stack([np.asarray(Image.fromarray(b).resize((size_px, size_px), Image.BILINEAR)) for b in small])
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs=crs,
                       transform=from_origin(*origin, res_m, res_m), tiled=True, compress="deflate",
                       photometric="RGB") as dst:
        dst.write(img)
    return path
