"""Download tiles from an HTTP tile server (XYZ/TMS or WMS) robustly, with the stdlib only.

* a bounded pool of ``max_connections`` worker threads, each keeping its own persistent
  HTTP/1.1 connection (``http.client``) per host;
* a shared request-rate limit (``rate_limit_per_s``; 0: none);
* retries with exponential backoff and full jitter on timeouts, connection errors, truncated
  bodies, HTTP 408/429/5xx and invalid images (a 200 that is not an image, or does not
  decode, or has the wrong size); ``Retry-After`` (seconds or an HTTP date) is honoured and
  pauses every worker, since it speaks for the whole server;
* HTTP 404/410/204 mean the server has no such tile: recorded ``missing-on-server``, not a
  failure; other 4xx fail that tile at once (retrying would not help);
* each tile is verified (decodes, is ``size`` x ``size``) and written atomically (temporary file
  in ``scratch``, then renamed), keeping the server's bytes and format (``.png``/``.jpg``/...);
* with ``reuse``, tiles already on disk that verify are kept and not fetched again.

URLs, headers and error texts pass through :func:`pipeline.imagery.common.redact` before they
reach a log line, a manifest or an exception, so API keys never leak.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.config import ImageryConfig
from pipeline.errors import InputDataError, TileServerError
from pipeline.imagery.common import (
    MISSING,
    OK,
    TileRecord,
    existing_tile,
    expand_env,
    redact,
    remove_tile_files,
    verify_image,
)
from pipeline.io import atomic_write_bytes, sha256_bytes, tile_path
from pipeline.tiles import Tile

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MISSING_STATUSES = frozenset({204, 404, 410})
_OK_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class FetchOptions:
    """How to talk to a tile server (see ``[imagery]`` in the region config). Times in seconds."""

    size: int = 256  # expected tile width and height, pixels
    max_connections: int = 8
    rate_limit_per_s: float = 0.0
    retries: int = 5
    timeout_s: float = 20.0
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    user_agent: str = "osmsat"
    headers: tuple[tuple[str, str], ...] = ()
    seed: int | None = None  # jitter RNG seed (None: from the OS)

    @classmethod
    def from_config(cls, icfg: ImageryConfig, size: int) -> FetchOptions:
        return cls(size=size, max_connections=icfg.max_connections, rate_limit_per_s=icfg.rate_limit_per_s,
                   retries=icfg.retries, timeout_s=icfg.timeout_s, backoff_s=icfg.backoff_s,
                   max_backoff_s=icfg.max_backoff_s, user_agent=icfg.user_agent, headers=icfg.headers)


@dataclass
class FetchStats:
    """Counts for one run: requests sent, retries, tiles reused from disk, and HTTP statuses
    (``"timeout"``/``"error"`` for failures below HTTP)."""

    requests: int = 0
    retries: int = 0
    reused: int = 0
    fetched: int = 0
    bytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "retries": self.retries, "reused": self.reused,
                "fetched": self.fetched, "bytes": self.bytes, "statuses": dict(sorted(self.statuses.items()))}


class RateLimiter:
    """At most ``rate`` acquisitions per second across threads, evenly spaced (0: no limit)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.next = 0.0

    def acquire(self) -> float:
        """Wait for the next slot; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self.lock:
            now = self.clock()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            self.sleep(at - now)
        return at - now


class _RetryError(Exception):
    """A response that should be retried (after at least ``delay`` seconds, if given)."""

    def __init__(self, reason: str, delay: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class _FatalError(Exception):
    """A response that retrying will not fix (e.g. HTTP 403)."""


@dataclass(frozen=True)
class _Result:
    tile: Tile
    record: TileRecord | None
    error: str = ""


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); 0 if absent
    or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Downloader:
    """Fetches tiles whose URLs ``url_for(tile)`` returns (templates already filled in).

    ``url_for`` may contain ``${NAME}`` environment references (expanded per request; their
    values are redacted everywhere)."""

    def __init__(self, url_for: Callable[[Tile], str], opts: FetchOptions, secrets: Sequence[str] = ()) -> None:
        self.url_for = url_for
        self.opts = opts
        self.secrets = list(secrets)
        self.stats = FetchStats()
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        self.sleep: Callable[[float], None] = time.sleep  # replaceable in tests
        self._limiter = RateLimiter(opts.rate_limit_per_s, sleep=self._sleep)
        self._hold_lock = threading.Lock()
        self._hold_until = 0.0
        self._rng = random.Random(opts.seed)
        self._headers: dict[str, str] = {"User-Agent": opts.user_agent, "Accept": "image/*,*/*;q=0.5",
                                         "Accept-Encoding": "identity"}
        for k, v in opts.headers:
            value, found = expand_env(v, f"[imagery] headers.{k}")
            self.secrets += found
            self._headers[k] = value

    # -- bookkeeping ---------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def _count(self, **kw: int) -> None:
        with self._stats_lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _status(self, key: str) -> None:
        with self._stats_lock:
            self.stats.statuses[key] += 1

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    # -- HTTP ------------------------------------------------------------------------------------

    def _connection(self, scheme: str, host: str, port: int | None) -> tuple[http.client.HTTPConnection, bool]:
        conns: dict[tuple[str, str, int | None], http.client.HTTPConnection] = getattr(self._local, "conns", None) \
            or {}
        self._local.conns = conns
        key = (scheme, host, port)
        conn = conns.get(key)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = cls(host, port, timeout=self.opts.timeout_s)
        conns[key] = conn
        return conn, False

    def _drop(self, scheme: str, host: str, port: int | None) -> None:
        conn = self._local.conns.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def _get(self, url: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One GET on a kept-alive connection; a connection the server closed while idle is
        reopened once without counting as an attempt."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _FatalError(f"not an http(s) URL: {url}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = dict(self._headers)
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        for fresh_try in range(2):
            conn, reused = self._connection(parts.scheme, parts.hostname, parts.port)
            try:
                self._count(requests=1)
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(parts.scheme, parts.hostname, parts.port)
                if reused and fresh_try == 0:
                    continue
                raise
            except BaseException:
                self._drop(parts.scheme, parts.hostname, parts.port)
                raise
            if resp.will_close:
                self._drop(parts.scheme, parts.hostname, parts.port)
            return resp.status, resp.msg, body
        raise _RetryError("connection closed")  # not reached

    def _wait_turn(self) -> None:
        with self._hold_lock:
            hold = self._hold_until - time.monotonic()
        if hold > 0:
            self.sleep(hold)
        self._limiter.acquire()

    def _hold(self, seconds: float) -> None:
        with self._hold_lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform in [0.5, 1] x backoff_s x 2**attempt, capped."""
        base = min(self.opts.max_backoff_s, self.opts.backoff_s * (2 ** attempt))
        return base * (0.5 + 0.5 * self._rng.random())

    def _check(self, tile: Tile, status: int, headers: http.client.HTTPMessage, body: bytes) -> tuple[str, bytes]:
        """Classify a response: ``(OK, body)`` or ``(MISSING, b"")``; raises _RetryError or _FatalError."""
        self._status(str(status))
        if status in MISSING_STATUSES:
            return MISSING, b""
        if status in RETRY_STATUSES:
            wait = min(self.opts.max_backoff_s, parse_retry_after(headers.get("Retry-After")))
            if wait > 0:
                self._hold(wait)
            raise _RetryError(f"HTTP {status}", wait)
        if status != 200:
            snippet = body[:200].decode("utf-8", "replace").strip()
            raise _FatalError(f"HTTP {status} {snippet!r}")
        ctype = (headers.get("Content-Type") or "").lower()
        if ctype and not ctype.startswith(_OK_TYPES):
            snippet = body[:120].decode("utf-8", "replace").strip()
            raise _RetryError(f"HTTP 200 with Content-Type {ctype} ({snippet!r})")
        return OK, body

    def fetch(self, tile: Tile) -> tuple[str, bytes, str]:
        """Fetch one tile with retries: ``(OK, bytes, ext)`` or ``(MISSING, b"", "")``; raises
        TileServerError (redacted) when every attempt failed or the server refused."""
        url, found = expand_env(self.url_for(tile), "[imagery] url")
        if found:
            with self._stats_lock:
                self.secrets.extend(s for s in found if s not in self.secrets)
        reason = ""
        for attempt in range(self.opts.retries + 1):
            if attempt:
                self._count(retries=1)
            self._wait_turn()
            delay = 0.0
            try:
                status, headers, body = self._get(url)
                kind, data = self._check(tile, status, headers, body)
                if kind == MISSING:
                    return MISSING, b"", ""
                info = verify_image(data, self.opts.size, "response")
                self._count(bytes=len(data))
                return OK, data, info.ext
            except _FatalError as exc:
                raise TileServerError(self.redact(f"tile {tile} from {url}: {exc}")) from None
            except _RetryError as exc:
                reason, delay = exc.reason, exc.delay
            except InputDataError as exc:
                reason = str(exc)
                self._status("invalid")
            except TimeoutError:
                reason = "timed out"
                self._status("timeout")
            except (OSError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._status("error")
            if attempt < self.opts.retries:
                wait = max(delay, self._backoff(attempt))
                log.debug("%s", self.redact(f"tile {tile}: {reason}; retry {attempt + 1} in {wait:.2f}s: {url}"))
                self.sleep(wait)
        raise TileServerError(self.redact(f"tile {tile} from {url}: {reason} after {self.opts.retries + 1} "
                                          "attempts"))

    # -- a batch -------------------------------------------------------------------------------

    def _one(self, tile: Tile, root: Path, scratch: Path, reuse: bool) -> _Result:
        if reuse:
            path, info = existing_tile(root, tile, self.opts.size)
            if path is not None and info is not None:
                data = path.read_bytes()
                self._count(reused=1)
                return _Result(tile, TileRecord(tile, OK, info.ext, len(data), sha256_bytes(data)))
        try:
            kind, data, ext = self.fetch(tile)
        except TileServerError as exc:
            return _Result(tile, None, str(exc))
        if kind == MISSING:
            remove_tile_files(root, tile)
            return _Result(tile, TileRecord(tile, MISSING, valid_share=0.0))
        atomic_write_bytes(tile_path(root, tile, ext), data, scratch)
        remove_tile_files(root, tile, keep_ext=ext)
        self._count(fetched=1)
        return _Result(tile, TileRecord(tile, OK, ext, len(data), sha256_bytes(data)))

    def run(self, tiles: Sequence[Tile], root: Path, scratch: Path, reuse: bool = False,
            progress: Callable[[int, int], None] | None = None) -> list[TileRecord]:
        """Fetch every tile into ``root/z/x/y.<ext>``; returns one record per tile (in order).

        Every tile is tried even when some fail; then, if any failed, raises TileServerError
        listing them (valid tiles stay on disk, so a rerun with ``reuse`` fetches only the rest).
        """
        scratch.mkdir(parents=True, exist_ok=True)
        results: dict[Tile, _Result] = {}
        with ThreadPoolExecutor(max_workers=self.opts.max_connections, thread_name_prefix="tiles") as pool:
            futures = [pool.submit(self._one, t, root, scratch, reuse) for t in tiles]
            for i, fut in enumerate(as_completed(futures), start=1):
                r = fut.result()
                results[r.tile] = r
                if progress is not None and (i % 32 == 0 or i == len(futures)):
                    progress(i, len(futures))
        failed = [results[t] for t in tiles if results[t].record is None]
        if failed:
            head = "; ".join(r.error for r in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise TileServerError(self.redact(
                f"{len(failed)} of {len(tiles)} tiles failed: {head}{more}. Valid tiles are kept; rerun to "
                "fetch only the others, or lower [imagery] max_connections / rate_limit_per_s"))
        return [results[t].record for t in tiles]  # type: ignore[misc]
