"""Luigi tasks ``Vectorize`` (one shard -> vectors/<quadkey>.parquet pieces) and ``MergeFeatures``
(every shard, merged across shard borders -> predictions.geojson + predictions.gpkg)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.manifests import read_manifest
from pipeline.tiles.tilemath import Tile
from pipeline.tiles.writer import tile_path
from tasks.base import RegionTask, ShardTask, dynamic, locked

if TYPE_CHECKING:
    from pipeline.config.vectorize import VectorizeSpec


class Vectorize(ShardTask):
    """Trace one shard's prediction (or mask) tiles and merge them across tile borders."""

    stage = "vectorize"
    product = "vectors"

    def run_imports(self) -> tuple[str, ...]:
        return (*super().run_imports(), "pipeline.vectors.vectorize", "pipeline.vectors.finish",
                "pipeline.vectors.vector_io", "pipeline.vectors.necks", "pipeline.vectors.regularize",
                "pipeline.model.metrics", "skimage.segmentation", "skimage.morphology")

    @property
    def spec(self) -> VectorizeSpec:
        return self.cfg.vectorize

    def _tile_files(self) -> dict[Tile, Path]:
        src_dir = self.data_dir / self.spec.source
        mpath = src_dir / "_shards" / f"{self.shard}.json"
        files = read_manifest(mpath)["files"] if mpath.is_file() else {}
        out = {}
        for rel in files:
            z, x, y = (int(v) for v in rel.rsplit(".", 1)[0].split("/"))
            out[Tile(z, x, y)] = src_dir / rel
        return out

    @locked
    def run(self) -> None:
        from pipeline.tiles.tilemath import quadkey_to_tile
        from pipeline.vectors.finish import finish_shard_table
        from pipeline.vectors.vector_io import shard_files, write_finished, write_pieces
        from pipeline.vectors.vectorize import cached_loader, read_tile, shard_box_px, shard_pieces

        cfg = self.cfg
        files = self._tile_files()
        ids = [c.id for c in sorted(cfg.classes, key=lambda c: c.id)]
        edges = cfg.edge_ids if self.spec.instances else ()
        src_dir = self.data_dir / self.spec.source
        done = [0]

        def read(t: Tile) -> Any:
            # tiles of neighbouring shards (line margins) are read from the same tile tree when present
            path = files.get(t) or tile_path(src_dir, t, "png")
            if not path.is_file():
                return None
            done[0] += 1
            if done[0] % 256 == 0:
                self.progress(min(done[0], len(files)), len(files), f"vectorize {self.shard}")
            return read_tile(path.read_bytes(), self.spec.source, ids, str(path), edges)

        p = quadkey_to_tile(str(self.shard))
        src_id = p.x * (1 << p.z) + p.y
        pieces = shard_pieces(list(files), cached_loader(read, cfg.classes), cfg.classes, self.spec.threshold,
                              shard_box_px(str(self.shard), cfg.zoom, cfg.tile_size), src_id, edges,
                              self.spec.marker_min_m2)
        finished, open_pieces = finish_shard_table(pieces, cfg.classes, self.spec, cfg.zoom, cfg.tile_size)
        feats, rest = shard_files(self.product_dir(), str(self.shard))
        write_finished(finished, feats)
        write_pieces(open_pieces, rest)
        self.progress(len(files), len(files), f"vectorize {self.shard}")
        self.output().write({"root": str(self.product_dir()), "shard": str(self.shard), "features": len(finished),
                             "open": len(open_pieces),
                             "files": {p.name: {"size": p.stat().st_size} for p in (feats, rest)}})


class MergeFeatures(RegionTask):
    """Every shard's pieces merged across shard borders, finished (filters, simplification,
    regularisation) -> ``predictions.geojson`` (RFC 7946) and ``predictions.gpkg`` (a layer per class)."""

    stage = "vectorize"

    def owned_files(self) -> list[Path]:
        from pipeline.vectors.region import LOW_CONFIDENCE

        return [*super().owned_files(), *(self.data_dir / n for n in ("predictions.geojson", "predictions.gpkg",
                                                                     LOW_CONFIDENCE))]

    @dynamic
    def run(self) -> Iterator[Any]:
        from pipeline.core.stages import get_stage
        from pipeline.tiles.cover import read_shards
        from pipeline.vectors.confidence import confidence_line
        from pipeline.vectors.region import LOW_CONFIDENCE, class_counts, merge_shard_files, write_predictions
        from pipeline.vectors.vector_io import shard_files, write_geojson

        cfg = self.cfg
        shards = read_shards(self.data_dir / "tiles.csv")
        tasks = [self.shard_task(s) for s in shards]
        yield tasks
        self.progress(0, 1, "merging shards")
        paths = [shard_files(t.product_dir(), str(t.shard)) for t in tasks]
        spec = cfg.vectorize
        feats = merge_shard_files(paths, cfg.classes, spec, cfg.zoom, cfg.tile_size,
                                  cfg.edge_ids if spec.instances else ())
        rated: dict[str, Any] = {}
        gj, gpkg, low_gj = (self.data_dir / n for n in ("predictions.geojson", "predictions.gpkg", LOW_CONFIDENCE))
        written = [gj, gpkg]
        low_gj.unlink(missing_ok=True)  # none from an earlier run may outlive its predictions
        upstream = get_stage(self.stage).upstream_of(cfg)  # the stage table says whether predictions are rated
        if "extract" in upstream:
            from pipeline.vectors.region import rate_predictions

            split = self.data_dir / "split.csv" if "split" in upstream else None
            feats, low, rated = rate_predictions(feats, self.data_dir / "features.parquet", split, cfg.classes,
                                                 cfg.zoom, spec.min_confidence)
            for name, fig in rated.items():
                self.notice(confidence_line(name, fig, spec.min_confidence))
            write_geojson(low, low_gj)
            written.append(low_gj)
        write_predictions(feats, cfg.classes, gj, gpkg)
        self.output().write({"root": str(self.data_dir), "shards": len(tasks), "features": len(feats),
                             "by_class": class_counts(feats), "confidence": rated,
                             "files": {p.name: {"size": p.stat().st_size} for p in written}})
