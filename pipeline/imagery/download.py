"""Download settings, counts and pacing: the operational :class:`DownloadOptions`
(``configs/luigi.toml`` ``[download]``, never part of a stage digest), the :class:`FetchOptions`
one :class:`pipeline.imagery.fetch.Downloader` runs with, its :class:`FetchStats`, the shared
:class:`RateLimiter` and ``Retry-After`` parsing. Times in seconds."""

from __future__ import annotations

import email.utils
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig


DEFAULT_USER_AGENT = "osmsat/0.1 (+https://github.com/osmsat/osmsat)"


@dataclass(frozen=True)
class DownloadOptions:
    """How to talk to a server: operational settings (``configs/luigi.toml`` ``[download]``),
    not region config, so changing them reruns nothing. Times in seconds."""

    max_connections: int = 8  # concurrent requests per shard
    rate_limit_per_s: float = 0.0  # requests per second per shard; 0: unlimited
    retries: int = 5  # attempts after the first
    timeout_s: float = 20.0  # per connect / read
    backoff_s: float = 0.5  # first retry delay; doubles per attempt, with jitter
    max_backoff_s: float = 60.0  # cap of one delay (Retry-After included)
    user_agent: str = DEFAULT_USER_AGENT
    #: a tile the server lacked (404) is asked again by a run this many days later (0: only on request)
    refetch_missing_after_days: float = 30.0
    refetch_missing: bool = False  # ask every missing tile again on this run (--download-refetch-missing)
    allow_empty_shards: bool = False  # a shard the server has no tile of is recorded missing, not a failure


@dataclass(frozen=True)
class FetchOptions:
    """Everything one :class:`Downloader` needs: the tile size, the region's extra headers and the
    operational :class:`DownloadOptions` fields. Times in seconds."""

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
    allow_empty_shards: bool = False  # a batch of missing tiles only is not a failure

    @classmethod
    def from_config(cls, icfg: ImageryConfig, size: int, download: DownloadOptions | None = None) -> FetchOptions:
        d = download or DownloadOptions()
        return cls(size=size, max_connections=d.max_connections, rate_limit_per_s=d.rate_limit_per_s,
                   retries=d.retries, timeout_s=d.timeout_s, backoff_s=d.backoff_s,
                   max_backoff_s=d.max_backoff_s, user_agent=d.user_agent, headers=icfg.headers,
                   allow_empty_shards=d.allow_empty_shards)


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
