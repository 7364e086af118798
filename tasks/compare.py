"""Luigi task ``CompareWithOSM``: predictions.geojson vs features.parquet -> ``compare/`` (a GeoJSON
per status with its .qml style, summary.json, report.md + map.png, missing_in_osm.osm for JOSM,
maproulette.geojsonl, the review queue's calibration.json + reliability.png) and the QGIS project
``<region>.qgs`` (with osm_features.gpkg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_write_bytes, atomic_write_json
from pipeline.tiles.index import written_tiles
from tasks.base import RegionTask, locked


class CompareWithOSM(RegionTask):
    """Compare the merged predictions with the region's OSM features; write the change layers."""

    stage = "compare"

    def owned_files(self) -> list[Path]:
        """Every file the comparison writes (a rerun deletes what killed writes of them left)."""
        from pipeline.review.statuses import status_names

        out, d = self.data_dir / "compare", self.data_dir
        names = [f"{s}{k}.{e}" for s in status_names() for k in ("", "_lines") for e in ("geojson", "qml")]
        names += ["summary.json", "missing_in_osm.osm", "maproulette.geojsonl", "map.png", "report.md",
                  "calibration.json", "reliability.png"]
        return [*super().owned_files(), *(out / n for n in names), d / f"{self.cfg.name}.qgs", d / "osm_features.gpkg"]

    @locked
    def run(self) -> None:
        from pipeline.review.block_inputs import RegionFiles
        from pipeline.review.blocks import compare_region
        from pipeline.review.compare_report import reliability_png, review_lines, write_report
        from pipeline.review.mappers import maproulette_tasks, osm_xml
        from pipeline.review.review import held_out_tiles, region_evidence
        from pipeline.review.statuses import layer_files, status_names, with_status
        from pipeline.vectors.region import LOW_CONFIDENCE
        from pipeline.vectors.vector_io import write_geojson

        cfg, d = self.cfg, self.data_dir
        out = d / "compare"
        source = cfg.vectorize.source
        index = written_tiles(d / source)
        tiles = {(int(x), int(y)) for x, y in zip(index.x, index.y)}
        if not cfg.labelled:
            self._write_unlabelled(index, len(tiles))
            return
        spec = cfg.compare
        evidence = region_evidence(cfg)
        inputs = RegionFiles(d, frozenset(tiles), cfg.zoom, d / LOW_CONFIDENCE)  # read block by block
        result, queue = compare_region(inputs, cfg.classes, spec, evidence, self._resolvable(tiles),
                                       held_out_tiles(cfg, tiles), cfg.zoom)
        osm = inputs.compared_osm()[0]  # (for osm_features.gpkg and the map)
        del inputs, evidence  # (the blocks' reads and caches)
        low = d / LOW_CONFIDENCE if (d / LOW_CONFIDENCE).is_file() else None
        result.layers = queue.layers
        statuses = status_names()
        result.summary["counts"] = {s: len(queue.layers[s]) for s in statuses}
        files = {s: layer_files(s, result.layers[s], cfg.classes) for s in statuses}
        written: list[Path] = []
        for status in statuses:
            for name, layer in files[status].items():
                written.append(out / name)
                write_geojson(with_status(layer, status), written[-1], status)
        calibration = {"region": cfg.name, "method": "gap simulation, isotonic positive-unlabelled calibration",
                       "gap_share": spec.gap_share, "gap_seed": spec.gap_seed, "layers": queue.calibration}
        atomic_write_json(out / "calibration.json", calibration)
        atomic_write_bytes(out / "reliability.png", reliability_png(queue.calibration))
        written += [out / "calibration.json", out / "reliability.png"]
        summary = {**result.summary, "region": cfg.name, "source": source, "tiles": len(tiles),
                   "review": review_lines(queue.calibration)}
        atomic_write_json(out / "summary.json", summary)
        missing = result.layers["missing_in_osm"]
        osm_labels = cfg.labels.source == "osm"
        atomic_write_bytes(out / "missing_in_osm.osm", osm_xml(missing, cfg.classes, osm_labels=osm_labels))
        atomic_write_bytes(out / "maproulette.geojsonl", maproulette_tasks(missing, cfg.name))
        written += [out / "summary.json", out / "missing_in_osm.osm", out / "maproulette.geojsonl"]
        written += write_report(out, cfg.name, summary, result.layers, osm[osm["class"].isin(
            list(summary["classes"]))])
        written += self._qgis_project(osm, [s for s in statuses if len(files[s][f"{s}.geojson"])],
                                      [s for s in statuses if f"{s}_lines.geojson" in files[s]], index,
                                      low is not None and _has_features(low))
        self._done(written, summary["counts"])

    def _done(self, written: list[Path], counts: dict[str, int]) -> None:
        d = self.data_dir
        self.output().write({"root": str(d), "counts": counts,
                             "files": {str(p.relative_to(d)): {"size": p.stat().st_size} for p in written}})

    def _write_unlabelled(self, index: Any, n_tiles: int) -> None:
        """A region without labels: nothing to compare. ``summary.json`` says so, and the QGIS
        project shows the imagery and the predictions."""
        from pipeline.labels.features import empty_features

        cfg, d = self.cfg, self.data_dir
        summary = {"region": cfg.name, "compared": False, "tiles": n_tiles,
                   "note": "no labels ([labels] source = \"none\"): predictions only, nothing compared"}
        atomic_write_json(d / "compare" / "summary.json", summary)
        self.notice(f"{cfg.name}: no labels, so no comparison; the predictions are in {d / 'predictions.gpkg'}")
        self._done([d / "compare" / "summary.json", *self._qgis_project(empty_features(), [], [], index)], {})

    def _resolvable(self, tiles: set[tuple[int, int]]) -> float:
        """The smallest building the model resolves here (ground m², 8 x 8 model pixels; at the
        median latitude of the compared tiles' centres)."""
        import numpy as np

        from pipeline.review.evidence import resolvable_m2
        from pipeline.tiles.geo import mercator_to_lonlat
        from pipeline.tiles.tilemath import Tile, tile_bounds

        ys = [sum(tile_bounds(Tile(self.cfg.zoom, x, y))[1::2]) / 2 for x, y in tiles]  # EPSG:3857 metres
        lat = float(np.median(mercator_to_lonlat(np.column_stack([np.zeros(len(ys)), ys]))[:, 1])) if ys else 0.0
        return resolvable_m2(self.cfg.zoom, lat, self.cfg.train.scale, 64, self.cfg.tile_size)

    def _qgis_project(self, osm: Any, areas: list[str], lines: list[str], index: Any,
                      low: bool = False) -> list[Path]:
        """``osm_features.gpkg`` (with labels) and ``<region>.qgs`` (+ .qml styles beside the change
        layers): ``areas`` the statuses with a non-empty change layer, ``lines`` those with a lines
        layer, ``low`` whether there are low-confidence predictions to show."""
        from pipeline.core.manifests import read_manifest
        from pipeline.review.qgis import write_region_project
        from pipeline.vectors.vector_io import write_gpkg

        cfg, d = self.cfg, self.data_dir
        osm_gpkg = d / "osm_features.gpkg"
        if cfg.labelled:  # a region without labels has no OSM layer
            write_gpkg({c.name: osm[osm["class"] == c.name] for c in cfg.classes}, osm_gpkg)
        present = [c.name for c in cfg.classes if (osm["class"] == c.name).any()]
        by_class = read_manifest(d / "_manifests" / "vectorize.json").get("by_class", {})
        files, note = write_region_project(cfg, d, areas, lines, [c.name for c in cfg.classes if by_class.get(c.name)],
                                           present, list(zip(index.x.astype(int), index.y.astype(int))), low)
        if note:
            self.notice(f"{cfg.name}.qgs: {note}")
        return [*([osm_gpkg] if cfg.labelled else []), *files]


def _has_features(path: Path) -> bool:
    """Whether the GeoJSON file at ``path`` holds a feature."""
    import pyogrio

    return bool(pyogrio.read_info(path)["features"])
