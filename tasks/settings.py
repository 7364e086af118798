"""Operational settings (``configs/luigi.toml``), not region config: changing them reruns nothing.

``[osmsat]`` (node index, progress, preloading shard libraries) and ``[download]`` (how to talk to
imagery servers, and when to ask again for tiles a server lacked). Each is a ``luigi.Config``: a
value also comes from the command line (``--download-retries 8``; a switch:
``--download-refetch-missing``).
"""

from __future__ import annotations

import luigi

from pipeline.imagery.download import DEFAULT_USER_AGENT, DownloadOptions


class osmsat(luigi.Config):  # noqa: N801 - the section name in luigi.toml
    """``[osmsat]`` in luigi.toml."""

    node_index = luigi.Parameter(
        default="flex_mem",
        description="pyosmium node-location index: flex_mem (RAM) or sparse_file_array,<path> (disk)",
    )
    preload = luigi.BoolParameter(
        default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="import a shard task's libraries once in the scheduling process, for every shard "
                    "process forked from it to inherit (false: each shard imports them itself)",
    )


class download(luigi.Config):  # noqa: N801 - the section name in luigi.toml
    """``[download]`` in luigi.toml: how imagery tiles (and the OSM extract) are downloaded."""

    max_connections = luigi.IntParameter(default=8, description="concurrent requests per shard (1-256)")
    rate_limit_per_s = luigi.FloatParameter(default=0.0, description="requests per second per shard; 0: no limit")
    retries = luigi.IntParameter(default=5, description="attempts after the first for a failing tile (0-50)")
    timeout_s = luigi.FloatParameter(default=20.0, description="seconds to connect, and without data, per request")
    backoff_s = luigi.FloatParameter(default=0.5, description="first retry delay in seconds; doubles per attempt, "
                                                              "with jitter")
    max_backoff_s = luigi.FloatParameter(default=60.0, description="cap of one retry delay in seconds "
                                                                   "(Retry-After included)")
    user_agent = luigi.Parameter(default=DEFAULT_USER_AGENT, description="HTTP User-Agent (identify yourself to "
                                                                         "tile servers)")
    refetch_missing_after_days = luigi.FloatParameter(
        default=30.0, description="tiles a server lacked (HTTP 404) are asked again by a run at least this many days "
                                  "later; 0: only with --download-refetch-missing")
    refetch_missing = luigi.BoolParameter(
        default=False, description="ask the server again, on this run, for every tile it lacked before (a switch: "
                                   "--download-refetch-missing)")
    allow_empty_shards = luigi.BoolParameter(
        default=False, description="a shard none of whose tiles the server has is recorded missing instead of "
                                   "failing (a region reaching beyond the server's coverage)")

    def options(self) -> DownloadOptions:
        """The settings as the fetch code takes them; raises ConfigError for a value out of range."""
        from pipeline.core.errors import ConfigError

        checks = (("max_connections", 1, 256), ("retries", 0, 50), ("timeout_s", 0.1, 600),
                  ("rate_limit_per_s", 0, 1e6), ("backoff_s", 0, 60), ("max_backoff_s", 0, 3600),
                  ("refetch_missing_after_days", 0, 36500))
        for name, lo, hi in checks:
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"configs/luigi.toml: download.{name} = {value} is out of range [{lo}, {hi}]")
        return DownloadOptions(
            max_connections=int(self.max_connections), rate_limit_per_s=float(self.rate_limit_per_s),
            retries=int(self.retries), timeout_s=float(self.timeout_s), backoff_s=float(self.backoff_s),
            max_backoff_s=float(self.max_backoff_s), user_agent=str(self.user_agent),
            refetch_missing_after_days=float(self.refetch_missing_after_days),
            refetch_missing=bool(self.refetch_missing), allow_empty_shards=bool(self.allow_empty_shards))
