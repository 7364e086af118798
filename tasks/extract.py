"""Luigi tasks ``FetchOSM`` (download a missing extract) and ``ExtractFeatures`` (pbf -> GeoParquet)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from typing import Any

import luigi

from pipeline.errors import InputDataError, MissingInputError
from pipeline.io import atomic_path, write_features
from pipeline.osm import extract_features_with_stats
from tasks.base import RegionTask
from tasks.settings import osmsat

USER_AGENT = "osmsat/0.1 (+https://github.com/osmsat/osmsat)"


class FetchOSM(RegionTask):
    """Download ``[osm] url`` to ``[osm] path`` (only scheduled when the file is missing)."""

    timeout_s = luigi.FloatParameter(default=60.0, significant=False)

    def output(self) -> luigi.LocalTarget:  # type: ignore[override]
        return luigi.LocalTarget(str(self.cfg.osm.path))

    def run(self) -> None:
        url = self.cfg.osm.url
        if not url:
            raise MissingInputError(f"{self.cfg.osm.path}: not found, and {self.cfg.path} has no osm.url")
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with (urllib.request.urlopen(req, timeout=self.timeout_s) as resp,
                  atomic_path(self.cfg.osm.path) as tmp, open(tmp, "wb") as fh):
                shutil.copyfileobj(resp, fh, 1 << 20)
        except (urllib.error.URLError, OSError) as exc:
            raise InputDataError(
                f"{url}: download failed ({exc}); fetch it by hand to {self.cfg.osm.path} (osm.path)"
            ) from exc


class ExtractFeatures(RegionTask):
    """The region's OSM features of every configured class -> ``features.parquet`` (EPSG:4326)."""

    stage = "extract"

    def requires(self) -> Any:
        if self.cfg.synthetic is not None:
            from tasks.synthetic import MakeSampleRegion

            return MakeSampleRegion(config=self.config)
        if not self.cfg.osm.path.exists() and self.cfg.osm.url:
            return FetchOSM(config=self.config)
        return []

    def run(self) -> None:
        pbf = self.cfg.osm.path
        if not pbf.exists():
            raise MissingInputError(f"{pbf}: OSM extract not found; fix osm.path in {self.cfg.path} or set osm.url")
        self.set_status_message(f"extracting {pbf}")  # type: ignore[misc]
        gdf, stats = extract_features_with_stats(pbf, self.cfg.classes, osmsat().node_index)
        out = self.data_dir / "features.parquet"
        write_features(gdf, out)
        self.output().write({
            "root": str(self.data_dir),
            "files": {"features.parquet": {"size": out.stat().st_size}},
            "input": str(pbf),
            "features": len(gdf),
            "stats": stats.as_dict(),
        })
