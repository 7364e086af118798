"""Download tiles from an HTTP tile server (XYZ/TMS or WMS) robustly, through urllib3.

* one ``urllib3.PoolManager`` (keep-alive connections, at most ``max_connections`` per host,
  blocking when all are busy) shared by ``max_connections`` worker threads;
* a shared request-rate limit (``rate_limit_per_s``; 0: none);
* retries counted by a ``urllib3.util.Retry`` per tile (``retries`` attempts after the first) on
  timeouts, refused or failed connections, truncated bodies (Content-Length enforced), HTTP
  408/429/5xx and invalid images (a 200 that is not an image, or does not decode: urllib3
  cannot see those, so the retry loop is ours); the delay is exponential backoff with full
  jitter, or the server's ``Retry-After`` (seconds or an HTTP date, read by ``Retry``, capped by
  ``max_backoff_s``) when longer, which pauses every worker since it speaks for the server;
* HTTP 404/410/204 mean the server has no such tile: recorded ``missing-on-server``, not a
  failure (the task asks again after ``[download] refetch_missing_after_days``); but a shard in
  which *no* tile could be fetched is a failure naming the server and its answer (a wrong URL
  answers 404 everywhere) unless ``allow_empty_shards``; other 4xx, and an image of the wrong
  size, fail that tile at once (the same request gets the same answer);
* each tile is verified (decodes, is ``size`` x ``size``) and written atomically (temporary file
  in ``scratch``, then renamed), keeping the server's bytes and format (``.png``/``.jpg``/...);
* with ``reuse``, tiles already on disk that verify are kept and not fetched again.

How to talk to the server (connections, retries, timeouts, rate, user agent) is operational:
:class:`DownloadOptions`, read from ``configs/luigi.toml`` ``[download]`` by the task, never part
of a stage digest. URLs, headers and error texts pass through
:func:`pipeline.imagery.common.redact` before they reach a log line, a manifest or an exception.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Retry

from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.errors import InputDataError, TileServerError
from pipeline.imagery.common import (
    TileRecord,
    existing_tile,
    expand_env,
    redact,
    remove_tile_files,
    size_mismatch,
    verify_image,
)
from pipeline.imagery.download import FetchOptions, FetchStats, RateLimiter
from pipeline.tiles.tilemath import Tile
from pipeline.tiles.writer import TileStatus, sha256_bytes, tile_path

log = logging.getLogger(__name__)
# urllib3 logs every request's full URL (API keys included) at DEBUG: never let those through
if logging.getLogger("urllib3").level == logging.NOTSET:
    logging.getLogger("urllib3").setLevel(logging.INFO)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MISSING_STATUSES = frozenset({204, 404, 410})
_OK_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class _RetryError(Exception):
    """A response that should be retried (after at least ``delay`` seconds, if given)."""

    def __init__(self, reason: str, delay: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class _FatalError(Exception):
    """A response that retrying will not fix (e.g. HTTP 403, an image of the wrong size)."""


#: kinds of failed tiles (they choose the fix a batch's error suggests)
CONNECT, TRANSIENT, PERMANENT = "connect", "transient", "permanent"


class TileFailedError(TileServerError):
    """One tile failed; ``kind`` is CONNECT (nothing answered), TRANSIENT or PERMANENT."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Result:
    tile: Tile
    record: TileRecord | None
    error: str = ""
    kind: str = ""  # of a failure
    answer: str = ""  # of a missing tile: the status and the start of the body, e.g. "HTTP 404 'not found'"


class Downloader:
    """Fetches tiles whose URLs ``url_for(tile)`` returns (templates already filled in).

    ``url_for`` may contain ``${NAME}`` environment references (expanded per request; their
    values are redacted everywhere)."""

    def __init__(self, url_for: Callable[[Tile], str], opts: FetchOptions, secrets: Sequence[str] = (),
                 source: str = "") -> None:
        self.url_for = url_for
        self.opts = opts
        self.source = source  # the server as errors name it (a redacted URL template), never a tile's URL
        self.secrets = list(secrets)
        self.stats = FetchStats()
        self._stats_lock = threading.Lock()
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=opts.max_connections, block=True)
        self._timeout = urllib3.Timeout(connect=opts.timeout_s, read=opts.timeout_s)
        # urllib3 itself only follows redirects; every other retry is counted by retry_policy()
        self._transport_retry = Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)
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

    def _get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        """One GET through the pool (urllib3 reopens a connection the server closed while idle;
        redirects are followed). Raises urllib3's errors for transport failures."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _FatalError(f"not an http(s) URL: {url}")
        headers = dict(self._headers)
        if parts.username is not None:
            headers.update(urllib3.make_headers(
                basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}"))
            host = parts.netloc.rsplit("@", 1)[1]
            url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        self._count(requests=1)
        resp = self._pool.request("GET", url, headers=headers, preload_content=False, timeout=self._timeout,
                                  retries=self._transport_retry)
        try:
            data = b"".join(resp.stream(1 << 16))  # read by chunks: tell() then counts a cut-short body
        except ProtocolError:
            expected = resp.headers.get("Content-Length") or ""
            if not expected.isdigit() or resp.tell() >= int(expected):
                raise
            self._status("truncated")
            raise _RetryError(f"body cut short: {resp.tell()} of {expected} bytes (Content-Length)") from None
        finally:
            resp.release_conn()
        return resp.status, resp.headers, data

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

    def retry_policy(self) -> Retry:
        """The retry state of one tile: ``retries`` attempts after the first, whatever failed;
        ``Retry-After`` capped at ``max_backoff_s``."""
        return Retry(total=self.opts.retries, status_forcelist=RETRY_STATUSES, respect_retry_after_header=True,
                     retry_after_max=int(self.opts.max_backoff_s), raise_on_status=False)

    def _retry_after(self, value: str | None) -> float:
        if not value:
            return 0.0
        try:
            return min(self.opts.max_backoff_s, float(self.retry_policy().parse_retry_after(value)))
        except InvalidHeader:
            return 0.0

    def _check(self, tile: Tile, status: int, headers: Mapping[str, str], body: bytes) -> tuple[str, bytes]:
        """Classify a response: ``(OK, body)`` or ``(MISSING, body)``; raises _RetryError or _FatalError."""
        self._status(str(status))
        if status in MISSING_STATUSES:
            return TileStatus.MISSING, body
        if status in RETRY_STATUSES:
            wait = self._retry_after(headers.get("Retry-After"))
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
        return TileStatus.OK, body

    def fetch(self, tile: Tile) -> tuple[str, bytes, str]:
        """Fetch one tile with retries: ``(OK, bytes, ext)`` or ``(MISSING, b"", "")``; raises
        TileServerError (redacted) when every attempt failed or the server refused."""
        kind, data, ext, _ = self._fetch(tile)
        return kind, data, ext

    def _fetch(self, tile: Tile) -> tuple[str, bytes, str, str]:
        """:meth:`fetch`, and for a missing tile the server's answer (status, start of the body);
        raises TileFailedError with the kind of failure."""
        url, found = expand_env(self.url_for(tile), "[imagery] url")
        if found:
            with self._stats_lock:
                self.secrets.extend(s for s in found if s not in self.secrets)
        retry, reason, attempt, kind = self.retry_policy(), "", 0, TRANSIENT
        while True:
            self._wait_turn()
            delay = 0.0
            error: Exception | None = None
            try:
                status, headers, body = self._get(url)
                got, data = self._check(tile, status, headers, body)
                if got == TileStatus.MISSING:
                    snippet = data[:80].decode("utf-8", "replace").strip()
                    return TileStatus.MISSING, b"", "", f"HTTP {status}" + (f" {snippet!r}" if snippet else "")
                info = verify_image(data, None, "response")
                wrong = size_mismatch(info, self.opts.size)
                if wrong:  # the server sends this size every time: retrying cannot help
                    self._status("wrong-size")
                    raise _FatalError(wrong)
                self._count(bytes=len(data))
                return TileStatus.OK, data, info.ext, ""
            except _FatalError as exc:
                raise TileFailedError(self.redact(f"tile {tile}: {exc}{self._from()}"), PERMANENT) from None
            except _RetryError as exc:
                reason, delay, kind = exc.reason, exc.delay, TRANSIENT
            except InputDataError as exc:
                reason, kind = str(exc), TRANSIENT
                self._status("invalid")
            except (Urllib3Error, OSError) as exc:
                cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
                reason, kind = self._transport_reason(cause)
                error = exc
                self._status({"timed out": "timeout", "connection refused": "refused"}.get(reason, "error"))
            try:
                retry = retry.increment("GET", urlsplit(url).path, error=error)
            except MaxRetryError:
                break
            wait = max(delay, self._backoff(attempt))
            attempt += 1
            self._count(retries=1)
            log.debug("%s", self.redact(f"tile {tile}: {reason}; retry {attempt} in {wait:.2f}s: {url}"))
            self.sleep(wait)
        attempts = self.opts.retries + 1
        raise TileFailedError(self.redact(f"tile {tile}: {reason} after {attempts} attempts{self._from()}"), kind)

    @staticmethod
    def _transport_reason(cause: BaseException) -> tuple[str, str]:
        """Words and kind of a failure below HTTP. urllib3's NewConnectionError (refused, no
        route, unknown host) subclasses its ConnectTimeoutError: it is looked at first."""
        if isinstance(cause, NameResolutionError):
            return "host not found (DNS)", CONNECT
        if isinstance(cause, NewConnectionError):
            inner = cause.__cause__ or cause.__context__
            if isinstance(inner, ConnectionRefusedError):
                return "connection refused", CONNECT
            detail = inner.strerror if isinstance(inner, OSError) and inner.strerror else str(inner or cause)
            return f"cannot connect ({detail})", CONNECT
        if isinstance(cause, (Urllib3Timeout, TimeoutError)):
            return "timed out", TRANSIENT
        return f"{type(cause).__name__}: {cause}", TRANSIENT

    def _from(self) -> str:
        return f" (server {self.source})" if self.source else ""

    def _host(self) -> str:
        """host[:port] of the server (no userinfo), for messages."""
        return urlsplit(self.source).netloc.rsplit("@", 1)[-1] if self.source else "the server"

    # -- a batch -------------------------------------------------------------------------------

    def _one(self, tile: Tile, root: Path, scratch: Path, reuse: bool) -> _Result:
        if reuse:
            path, info = existing_tile(root, tile, self.opts.size)
            if path is not None and info is not None:
                data = path.read_bytes()
                self._count(reused=1)
                return _Result(tile, TileRecord(tile, TileStatus.OK, info.ext, len(data), sha256_bytes(data)))
        try:
            kind, data, ext, answer = self._fetch(tile)
        except TileFailedError as exc:
            return _Result(tile, None, str(exc), exc.kind)
        except TileServerError as exc:
            return _Result(tile, None, str(exc), PERMANENT)
        if kind == TileStatus.MISSING:
            remove_tile_files(root, tile)
            return _Result(tile, TileRecord(tile, TileStatus.MISSING, valid_share=0.0), answer=answer)
        atomic_write_bytes(tile_path(root, tile, ext), data, scratch)
        remove_tile_files(root, tile, keep_ext=ext)
        self._count(fetched=1)
        return _Result(tile, TileRecord(tile, TileStatus.OK, ext, len(data), sha256_bytes(data)))

    def run(self, tiles: Sequence[Tile], root: Path, scratch: Path, reuse: bool = False,
            progress: Callable[[int, int], None] | None = None, shard: str = "") -> list[TileRecord]:
        """Fetch every tile into ``root/z/x/y.<ext>``; returns one record per tile (in order).

        Every tile is tried even when some fail; then, if any failed, raises TileServerError
        listing them (valid tiles stay on disk, so a rerun with ``reuse`` fetches only the rest)
        with the fix their kind of failure calls for. When the server had none of the tiles,
        raises TileServerError naming the server and its answer (unless ``allow_empty_shards``).
        ``shard`` names the batch in messages.
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
        prefix = f"shard {shard}: " if shard else ""
        failed = [results[t] for t in tiles if results[t].record is None]
        if failed:
            head = "; ".join(r.error for r in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise TileServerError(self.redact(
                f"{prefix}{len(failed)} of {len(tiles)} tiles failed: {head}{more}. {self._fix(failed)}"))
        records: list[TileRecord] = [results[t].record for t in tiles]  # type: ignore[misc]
        if records and not self.opts.allow_empty_shards and all(r.status == TileStatus.MISSING for r in records):
            raise TileServerError(self.redact(prefix + self._none_served(tiles, results)))
        return records

    def _fix(self, failed: Sequence[_Result]) -> str:
        """What to do about failed tiles, by their kinds."""
        kinds = {r.kind for r in failed}
        if kinds == {CONNECT}:
            return (f"Nothing answered at {self._host()}: check [imagery] url (host and port) and that the server "
                    "is running, then rerun")
        if kinds == {PERMANENT}:
            return ("Retrying gets the same answer: fix what the error says ([imagery] url, its key, retina, or "
                    "region.tile_size), then rerun")
        return ("Valid tiles are kept; rerun to fetch only the others, or lower max_connections / "
                "rate_limit_per_s in configs/luigi.toml [download]")

    def _none_served(self, tiles: Sequence[Tile], results: Mapping[Tile, _Result]) -> str:
        """The error for a batch in which the server had no tile at all."""
        answers = Counter(results[t].answer.split(" ", 2)[1] for t in tiles if results[t].answer)
        codes = " or ".join(f"HTTP {c}" for c, _ in answers.most_common()) or "no tile"
        example = next((t for t in tiles if results[t].answer), tiles[0])
        z = tiles[0].z
        return (f"none of its {len(tiles)} tiles could be fetched: server {self.source or self._host()} answered "
                f"{codes} for every tile (e.g. tile {example}: {results[example].answer}) — check [imagery] url "
                f"(the {{z}}/{{x}}/{{y}} order, {{-y}} for TMS, the layer, the key) and that the server has zoom {z} "
                "imagery of the region; if it has none for this part of the region, set allow_empty_shards = true "
                "under [download] in configs/luigi.toml")
