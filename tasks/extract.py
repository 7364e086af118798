"""Luigi tasks ``FetchOSM`` (download a missing extract) and ``ExtractFeatures`` (pbf -> GeoParquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import luigi

from pipeline.config.region import OsmSource
from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.labels.osmfetch import download_extract, downloaded_intact, read_sidecar
from tasks.base import RegionTask, locked
from tasks.settings import download, osmsat


class _ExtractTarget(luigi.LocalTarget):
    """The extract file; a downloaded one counts only while it keeps its recorded size."""

    def exists(self) -> bool:
        return downloaded_intact(Path(self.path))


class FetchOSM(RegionTask):
    """Download ``[osm] url`` to ``[osm] path``, verified before the rename (see
    :mod:`pipeline.labels.osmfetch`). Scheduled when the file is missing, or when an earlier download
    of it no longer has its recorded size. Its output is the file itself."""

    timeout_s = luigi.FloatParameter(default=60.0, significant=False,
                                     description="seconds without data before the download fails")

    def output(self) -> luigi.LocalTarget:  # type: ignore[override]
        return _ExtractTarget(str(_osm(self).path))

    @locked
    def run(self) -> None:
        url, dest = _osm(self).url, _osm(self).path
        if not url:
            raise MissingInputError(f"{dest}: OSM extract not found and {self.cfg.path} sets no osm.url")
        self.progress(0, 1, f"downloading {url}")
        try:
            download_extract(url, dest, _osm(self).sha256, self.timeout_s, download().user_agent)
        except InputDataError as exc:
            raise InputDataError(
                f"{exc} — nothing was written to {dest}; check osm.url (and osm.sha256) in {self.cfg.path} "
                "and rerun, or put the extract at osm.path by hand"
            ) from exc


class _NoStats:
    """Extraction figures of a region without labels."""

    def __init__(self) -> None:
        self.rows_per_class: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        return {}


def _osm(task: RegionTask) -> OsmSource:
    if task.cfg.osm is None:
        raise ConfigError(f"{task.cfg.path}: no [osm] section; add [osm] path (or use [labels] source = \"vector\")")
    return task.cfg.osm


class ExtractFeatures(RegionTask):
    """The region's label features of every configured class -> ``<data_dir>/features.parquet``
    (GeoParquet, EPSG:4326): from the OSM extract (see :func:`pipeline.labels.osm.extract_features`),
    or from vector files when ``[labels] source = "vector"`` (:mod:`pipeline.labels.vector`)."""

    stage = "extract"

    def requires(self) -> list[Any]:
        """The sample region when it is generated; else, for OSM labels, ``FetchOSM`` when the
        extract is missing or is our own download (refetched when damaged): no stage, so not in
        the stage table."""
        if self.cfg.synthetic is not None or self.cfg.labels.source != "osm":
            return super().requires()
        osm = _osm(self)
        if osm.url and (not osm.path.exists() or read_sidecar(osm.path) is not None):
            return [FetchOSM(config=self.config)]
        return []

    @locked
    def run(self) -> None:
        labels = self.cfg.labels
        if labels.source == "vector":
            self._run_vector(labels)
            return
        if labels.source == "none":  # imagery only: an empty features file keeps the stages after it simple
            from pipeline.labels.features import empty_features

            self._write(empty_features(), _NoStats(), "no labels", {"labels": "none"})
            return
        pbf = _osm(self).path
        if not pbf.exists():
            raise MissingInputError(
                f"{pbf}: OSM extract not found; fix osm.path in {self.cfg.path} (or set osm.url to download it)"
            )
        from pipeline.labels.osm import extract_features_with_stats

        self.progress(0, 1, f"extracting features from {pbf}")
        try:
            gdf, stats = extract_features_with_stats(pbf, self.cfg.classes, osmsat().node_index)
        except InputDataError as exc:
            if not isinstance(exc, MissingInputError) and pbf.exists():
                fix = ("it will be downloaded again from osm.url" if _osm(self).url
                       else f"put a good extract there, or set osm.url in {self.cfg.path}")
                raise InputDataError(f"{exc} — delete {pbf} and rerun ({fix})") from exc
            raise
        self._write(gdf, stats, str(pbf), {"path": str(pbf), "size": pbf.stat().st_size})

    def _run_vector(self, labels: Any) -> None:
        from pipeline.labels.vector import load_vector_labels

        names = ", ".join(str(p) for p in labels.paths)
        self.progress(0, 1, f"reading labels from {names}")
        gdf, stats = load_vector_labels(labels, self.cfg.classes)
        self._write(gdf, stats, names, {"paths": [str(p) for p in labels.paths]})

    def _write(self, gdf: Any, stats: Any, source: str, inputs: dict[str, Any]) -> None:
        """``features.parquet`` and the manifest (``inputs`` describes where the features came from)."""
        from pipeline.labels.features import write_features

        out = self.data_dir / "features.parquet"
        write_features(gdf, out)
        self.progress(1, 1, f"{len(gdf)} features from {source}")
        self.output().write({
            "root": str(self.data_dir),
            "files": {"features.parquet": {"size": out.stat().st_size}},
            "input": inputs,
            "features": len(gdf),
            "classes": stats.rows_per_class,
            "stats": stats.as_dict(),
        })
