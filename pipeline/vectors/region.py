"""The region merge of ``MergeFeatures``: every shard's finished features and open pieces ->
one feature table, sorted -> ``predictions.geojson`` and ``predictions.gpkg``. Feature tables
(:mod:`pipeline.vectors.table`) throughout: no pandas or geopandas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.region import ClassSpec
from pipeline.config.vectorize import VectorizeSpec
from pipeline.vectors.finish import finish_table, sort_tables
from pipeline.vectors.table import Table
from pipeline.vectors.vector_io import read_class_geoms, read_finished_table, read_pieces, write_geojson, write_gpkg

#: the predicted polygons dropped for low confidence, beside predictions.geojson (the comparison
#: counts them towards an OSM feature's coverage; a user can look at what was dropped)
LOW_CONFIDENCE = "predictions_low_confidence.geojson"


def merge_tables(finished: Iterable[Table], open_parts: Iterable[Table], classes: Sequence[ClassSpec],
                 spec: VectorizeSpec, z: int, size: int, edges: Sequence[int] = ()) -> Table:
    """The shards' finished features and their open pieces (global pixels of zoom ``z``, tiles of
    ``size`` px) merged across shard borders and finished: one feature table (EPSG:4326) in the
    order of :func:`pipeline.vectors.finish.sort_tables`. ``edges``: the classes split into instances."""
    from pipeline.vectors.vectorize import region_pieces

    merged = finish_table(region_pieces(open_parts, edges), classes, spec, z, size)
    return sort_tables([*finished, merged])


def merge_shard_files(paths: Sequence[tuple[Path, Path]], classes: Sequence[ClassSpec], spec: VectorizeSpec,
                      z: int, size: int, edges: Sequence[int] = ()) -> Table:
    """:func:`merge_tables` of the shards' files (``(features, open pieces)`` per shard,
    :func:`pipeline.vectors.vector_io.shard_files`)."""
    return merge_tables([read_finished_table(f) for f, _ in paths], (read_pieces(rest) for _, rest in paths),
                        classes, spec, z, size, edges)


def class_layers(feats: Table, classes: Sequence[ClassSpec]) -> dict[str, Table]:
    """The features of each class (by name, in the order of ``classes``)."""
    return {c.name: feats[feats["class"] == c.name] for c in classes}


def class_counts(feats: Table) -> dict[str, int]:
    """Features per class name, names sorted."""
    names, counts = np.unique(feats["class"].astype(str), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist()))


def write_predictions(feats: Table, classes: Sequence[ClassSpec], geojson: Path, gpkg: Path) -> None:
    """Write the region's features as RFC 7946 GeoJSON (FeatureCollection ``predictions``) and as
    a GeoPackage with a layer per class, each atomically."""
    write_geojson(feats, geojson, "predictions")
    write_gpkg(class_layers(feats, classes), gpkg)


def rate_predictions(feats: Table, features_path: Path, split_path: Path | None, classes: Sequence[ClassSpec],
                     z: int, min_confidence: float) -> tuple[Table, Table, dict[str, dict[str, Any]]]:
    """:func:`pipeline.vectors.confidence.rate_features` of the region's predicted features against
    its OSM features (``features.parquet``), fitted on the training and validation tiles of
    ``split.csv`` (``split_path`` None: on every tile, for a model that never saw the region):
    (kept, dropped, figures per class)."""
    from pipeline.model.split import read_split_csv
    from pipeline.vectors.confidence import rate_features

    osm = read_class_geoms(features_path, [c.name for c in classes if c.kind == "area"])
    fit = None if split_path is None else {(r.x, r.y) for r in read_split_csv(split_path)
                                           if r.split in ("train", "val")}
    return rate_features(feats, osm, fit, z, min_confidence)
