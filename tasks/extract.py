"""Luigi tasks ``FetchOSM`` (download a missing extract) and ``ExtractFeatures`` (pbf -> GeoParquet)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from typing import Any

import luigi

from pipeline.config import OsmSource
from pipeline.errors import ConfigError, InputDataError, MissingInputError
from pipeline.io import atomic_path, write_features
from pipeline.osm import extract_features_with_stats
from tasks.base import RegionTask
from tasks.settings import osmsat

USER_AGENT = "osmsat/0.1 (+https://github.com/osmsat/osmsat)"


class FetchOSM(RegionTask):
    """Download ``[osm] url`` to ``[osm] path``, atomically (scheduled only when the file is
    missing). Its output is the file itself."""

    timeout_s = luigi.FloatParameter(default=60.0, significant=False,
                                     description="seconds without data before the download fails")

    def output(self) -> luigi.LocalTarget:  # type: ignore[override]
        return luigi.LocalTarget(str(_osm(self).path))

    def run(self) -> None:
        url, dest = _osm(self).url, _osm(self).path
        if not url:
            raise MissingInputError(f"{dest}: OSM extract not found and {self.cfg.path} sets no osm.url")
        self.progress(0, 1, f"downloading {url}")
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with (urllib.request.urlopen(req, timeout=self.timeout_s) as resp,
                  atomic_path(dest) as tmp, open(tmp, "wb") as fh):
                shutil.copyfileobj(resp, fh, 1 << 20)
        except (urllib.error.URLError, OSError) as exc:
            raise InputDataError(
                f"{url}: download failed ({exc}); check osm.url in {self.cfg.path}, "
                f"or put the extract at {dest} (osm.path) by hand"
            ) from exc


def _osm(task: RegionTask) -> OsmSource:
    if task.cfg.osm is None:
        raise ConfigError(f"{task.cfg.path}: no [osm] section; add [osm] path (or use [labels] source = \"vector\")")
    return task.cfg.osm


class ExtractFeatures(RegionTask):
    """The region's label features of every configured class -> ``<data_dir>/features.parquet``
    (GeoParquet, EPSG:4326): from the OSM extract (see :func:`pipeline.osm.extract_features`),
    or from vector files when ``[labels] source = "vector"`` (:mod:`pipeline.labels`)."""

    stage = "extract"

    def requires(self) -> Any:
        if self.cfg.synthetic is not None:
            from tasks.synthetic import MakeSampleRegion

            return MakeSampleRegion(config=self.config)
        if self.cfg.section("labels").source == "osm":
            osm = _osm(self)
            if not osm.path.exists() and osm.url:
                return FetchOSM(config=self.config)
        return []

    def run(self) -> None:
        labels = self.cfg.section("labels")
        if labels.source == "vector":
            self._run_vector(labels)
            return
        pbf = _osm(self).path
        if not pbf.exists():
            raise MissingInputError(
                f"{pbf}: OSM extract not found; fix osm.path in {self.cfg.path} (or set osm.url to download it)"
            )
        self.progress(0, 1, f"extracting features from {pbf}")
        gdf, stats = extract_features_with_stats(pbf, self.cfg.classes, osmsat().node_index)
        out = self.data_dir / "features.parquet"
        write_features(gdf, out)
        self.progress(1, 1, f"{len(gdf)} features from {pbf}")
        self.output().write({
            "root": str(self.data_dir),
            "files": {"features.parquet": {"size": out.stat().st_size}},
            "input": {"path": str(pbf), "size": pbf.stat().st_size},
            "features": len(gdf),
            "classes": stats.rows_per_class,
            "stats": stats.as_dict(),
        })

    def _run_vector(self, labels: Any) -> None:
        from pipeline.labels import load_vector_labels

        names = ", ".join(str(p) for p in labels.paths)
        self.progress(0, 1, f"reading labels from {names}")
        gdf, stats = load_vector_labels(labels, self.cfg.classes)
        out = self.data_dir / "features.parquet"
        write_features(gdf, out)
        self.progress(1, 1, f"{len(gdf)} features from {names}")
        self.output().write({
            "root": str(self.data_dir),
            "files": {"features.parquet": {"size": out.stat().st_size}},
            "input": {"paths": [str(p) for p in labels.paths]},
            "features": len(gdf),
            "classes": stats.rows_per_class,
            "stats": stats.as_dict(),
        })
