"""Luigi task ``CoverTiles``: features.parquet -> tiles.csv (z, x, y, shard)."""

from __future__ import annotations

from tasks.base import RegionTask, locked


class CoverTiles(RegionTask):
    """The tiles at the region's zoom that its features (or its bbox) touch; with
    ``[imagery] cover_folder = true`` (tile folders), the tiles the folder has imagery for.
    States the tiles, shards and estimated disk before it writes anything, and refuses more
    tiles than ``[region] max_tiles``."""

    stage = "cover"

    @locked
    def run(self) -> None:
        from pipeline.labels.features import read_feature_columns
        from pipeline.tiles.cover import check_plan, plan_line, region_tiles, tile_list, write_tiles_csv

        # two columns as numpy arrays: no pandas/geopandas import for a stage that needs neither
        cols = read_feature_columns(self.data_dir / "features.parquet", ("geometry", "buffer_m"))
        icfg = self.cfg.imagery
        if icfg is not None and icfg.cover_folder and self.cfg.bbox is None:
            from pipeline.imagery.folder import folder_cover

            df = tile_list(folder_cover(icfg, self.cfg.zoom), self.cfg.zoom, self.cfg.shard_zoom)
        else:
            df = region_tiles(self.cfg, cols["geometry"], cols["buffer_m"].astype(float))
        n_shards = df.n_shards()
        self.notice(plan_line(self.cfg, len(df), n_shards))
        check_plan(self.cfg, len(df), n_shards)
        out = self.data_dir / "tiles.csv"
        write_tiles_csv(df, out)
        self.output().write({
            "root": str(self.data_dir),
            "files": {"tiles.csv": {"size": out.stat().st_size}},
            "tiles": len(df),
            "shards": n_shards,
            "zoom": self.cfg.zoom,
            "shard_zoom": self.cfg.shard_zoom,
        })
