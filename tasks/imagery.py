"""Luigi tasks of the imagery stage, for any registered source (:mod:`pipeline.imagery.sources`):
``ImageryPlan`` (a source that plans, e.g. rasters: bands, rescaling, footprints; once per
region), ``FetchImagery`` (one shard -> ``images/z/x/y.<ext>`` + shard manifest) and
``ImageryAll`` (every shard; its manifest is the region's coverage summary).

Shards that download from one server claim the Luigi resource ``imagery_server_<host>``
(see :func:`pipeline.imagery.shard.server_resource`); its limit goes in ``configs/luigi.toml``
``[resources]`` (an unlisted resource allows one shard at a time).

Tiles a server lacked (HTTP 404) are not missing forever: a shard whose missing tiles were last
asked more than ``[download] refetch_missing_after_days`` ago, or before this process started
when run with ``--download-refetch-missing``, is incomplete; its rerun keeps the valid tiles and
asks only for the missing ones. Both settings are operational (never in a digest).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError, ManifestError
from pipeline.core.manifests import read_manifest
from pipeline.imagery.common import TILE_EXTS
from pipeline.imagery.shard import (
    coverage_summary,
    make_shard,
    manifest_extra,
    missing_count,
    missing_due,
    refetch_cutoff,
    reopen_shard,
    server_resource,
)
from pipeline.imagery.sources import source_of
from pipeline.model.regions import check_environment
from pipeline.tiles.writer import TileStatus
from tasks.base import AllShardsTask, RegionTask, ShardTask, locked
from tasks.settings import download

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("luigi-interface")

#: when this process started: with ``--download-refetch-missing``, tiles missing since before it are asked again
RUN_STARTED = time.time()


def _refetch_cutoff(task: RegionTask) -> float | None:
    """Missing tiles last asked before this time (epoch seconds) are asked again (None: none is)."""
    opts = download().options()
    return refetch_cutoff(task.cfg.imagery, opts.refetch_missing_after_days, opts.refetch_missing, RUN_STARTED)


def _imagery(task: RegionTask) -> Any:
    if task.cfg.imagery is None:
        raise ConfigError(f"{task.cfg.path}: no [imagery] section; add one to make imagery tiles")
    check_environment(task.cfg)  # once per region (ImageryAll) before any shard starts
    return task.cfg.imagery


class ImageryPlan(RegionTask):
    """Inspect the region's imagery inputs once, for a source that plans (rasters: bands, data
    type, footprints, 8-bit rescaling); its registry entry's ``planner`` makes the plan."""

    stage = "imagery"

    def manifest_path(self) -> Path:
        return self.data_dir / "images" / "_plan.json"

    @locked
    def run(self) -> None:
        from pipeline.tiles.cover import read_tiles_csv
        from pipeline.tiles.tilemath import Tile

        icfg = _imagery(self)
        planner = source_of(icfg).planner
        if planner is None:
            raise ConfigError(f"{self.cfg.path}: imagery source {icfg.source!r} makes no plan")
        tiles = read_tiles_csv(self.data_dir / "tiles.csv")
        body = planner.make(icfg, [Tile(int(z), int(x), int(y)) for z, x, y in zip(tiles.z, tiles.x, tiles.y)],
                            str(self.cfg.path))
        share = float(body.get("coverage_share", 1.0))
        if share < 1.0:
            log.warning("%s: [imagery] paths cover %.1f %% of the region's %d tiles; the others get no imagery",
                        self.cfg.path, 100 * share, len(tiles))
        self.output().write(body)


class FetchImagery(ShardTask):
    """The imagery tiles of one shard, cut from rasters or downloaded from a tile server."""

    stage = "imagery"
    product = "images"
    reads_tile_table = True

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        name = server_resource(self.cfg.imagery)
        return {name: 1} if name else {}

    def requires(self) -> list[Any]:
        """The stage's upstream tasks and, for a source that plans (rasters), the region's plan."""
        reqs: list[Any] = super().requires()
        if self.cfg.imagery is not None and source_of(self.cfg.imagery).planner is not None:
            reqs.append(ImageryPlan(config=self.config))
        return reqs

    def run_imports(self) -> tuple[str, ...]:
        icfg = self.cfg.imagery
        return (*super().run_imports(), "PIL.Image", *(source_of(icfg).imports if icfg is not None else ()))

    def output_whole(self) -> bool:
        """Done, and no tile the server lacked is due to be asked again."""
        return super().output_whole() and not missing_due(self.manifest_path(), _refetch_cutoff(self))

    @locked
    def run(self) -> None:
        icfg = _imagery(self)
        shard = str(self.shard)
        src = source_of(icfg)
        with self.writer(src.tile_exts or TILE_EXTS) as out:
            if out.current:
                if not missing_due(out.manifest, _refetch_cutoff(self)):
                    return  # another run finished this shard while we waited for it
                log.info("imagery shard %s: asking the server again for the %d tile(s) it lacked", shard,
                         missing_count(out.manifest))
                reopen_shard(out)
            tiles = self.tiles()
            plan_path = ImageryPlan(config=self.config).manifest_path()
            plan = src.planner.load(read_manifest(plan_path)) if src.planner is not None else None
            # downloads take the operational settings of configs/luigi.toml [download]
            result = make_shard(icfg, plan, shard, tiles, self.cfg.tile_size, out,
                                progress=lambda i, n: self.progress(i, n, f"imagery {shard}"),
                                download=download().options())
            body = out.commit(manifest_extra(icfg, result))
        log.info("imagery shard %s: %s", shard, body["counts"])


class ImageryAll(AllShardsTask):
    """Every shard's imagery; its manifest is the coverage summary of the region."""

    stage = "imagery"
    product = "images"

    def shard_task(self, shard: str) -> ShardTask:
        _imagery(self)  # the config and environment checked once, before any shard starts
        return super().shard_task(shard)

    def output_whole(self) -> bool:
        """Done, and no shard holds tiles the server lacked that are due to be asked again."""
        if not super().output_whole():
            return False
        cutoff = _refetch_cutoff(self)
        if cutoff is None:
            return True
        shards = self.product_dir() / "_shards"
        return not any(missing_due(shards / f"{s}.json", cutoff) for s, counts in self._by_shard().items()
                       if counts.get(TileStatus.MISSING))

    def _by_shard(self) -> dict[str, dict[str, int]]:
        """Tile counts per shard in the coverage summary of the last finished run ({} if none)."""
        try:
            by_shard = read_manifest(self.manifest_path())["coverage"]["by_shard"]
        except (ManifestError, KeyError, TypeError):
            return {}
        return by_shard if isinstance(by_shard, dict) else {}

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        manifests = {str(t.shard): read_manifest(t.manifest_path()) for t in done}
        summary = coverage_summary(manifests)
        counts = summary["counts"]
        log.info("imagery %s: %s of %s tiles with imagery, %s skipped (nodata), %s missing on the server",
                 self.cfg.name, counts[TileStatus.OK], summary["tiles"], counts[TileStatus.NODATA],
                 counts[TileStatus.MISSING])
        self._report_refetched(manifests)
        return {"coverage": summary}

    def _report_refetched(self, manifests: dict[str, dict[str, Any]]) -> None:
        """Warn when tiles the last run recorded missing on the server now have imagery."""
        try:
            before = read_manifest(self.manifest_path())["coverage"]["missing_on_server"]
        except (ManifestError, KeyError, TypeError):
            return
        status = {tile: st for m in manifests.values() for tile, st in m["status"].items()}
        now = [t for t in before if status.get(t) == TileStatus.OK]
        if now:
            log.warning("imagery %s: %d tile(s) missing on the server before are now fetched (e.g. %s); what was "
                        "made from the imagery before (the split, predictions) does not include them",
                        self.cfg.name, len(now), now[0])
