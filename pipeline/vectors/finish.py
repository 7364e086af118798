"""Finishing vectorised pieces: global pixels -> EPSG:3857 metres, area / hole / length filters
in ground units, simplification after the merge, regularisation (building classes by default), skeleton spurs, and
EPSG:4326 features rounded to 7 decimals (RFC 7946 order: exterior rings counterclockwise)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import shapely

from pipeline.config.region import ClassSpec
from pipeline.tiles.geo import HALF_WORLD_M, mercator_scale, to_lonlat
from pipeline.tiles.tilemath import tile_extent_m
from pipeline.vectors.centerline import spurs
from pipeline.vectors.robust import snap
from pipeline.vectors.table import Table, concat_tables, to_geodataframe

if TYPE_CHECKING:
    import geopandas as gpd

    from pipeline.vectors.vectorize import VectorizeSpec


#: geometries transformed at once (shapely.transform holds all their coordinates at a time)
TRANSFORM_CHUNK = 4096


def pixels_to_mercator(geoms: np.ndarray, z: int, size: int) -> np.ndarray:
    """Global pixel coordinates of zoom ``z`` (tiles of ``size`` px) -> EPSG:3857 metres, in
    chunks of :data:`TRANSFORM_CHUNK` geometries (the same result; at 25 km² the peak memory of
    vectorising falls from about 528 to 416 MiB)."""
    res = tile_extent_m(z) / size

    def fn(c: np.ndarray) -> np.ndarray:
        return np.column_stack([c[:, 0] * res - HALF_WORLD_M, HALF_WORLD_M - c[:, 1] * res])

    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    for i in range(0, len(geoms), TRANSFORM_CHUNK):
        out[i:i + TRANSFORM_CHUNK] = shapely.transform(geoms[i:i + TRANSFORM_CHUNK], fn)
    return out


def drop_small_holes(polys: np.ndarray, min_area: np.ndarray) -> np.ndarray:
    """Polygons without the holes whose area (same units) is below ``min_area`` (per polygon)."""
    out = np.asarray(polys, dtype=object).copy()
    for i in np.flatnonzero(shapely.get_num_interior_rings(out) > 0):
        g = out[i]
        keep = [r for r in g.interiors if shapely.area(shapely.Polygon(r)) >= min_area[i]]
        if len(keep) != len(g.interiors):
            out[i] = shapely.Polygon(g.exterior, keep)
    return out


def spur_mask(pieces: Table, spec: VectorizeSpec, z: int, size: int) -> np.ndarray:
    """True for the line pieces that are skeleton spurs (:func:`pipeline.vectors.centerline.spurs`)."""
    out = np.zeros(len(pieces), dtype=bool)
    line = np.asarray(pieces["kind"] == "line", dtype=bool)
    if line.any():
        geoms = pixels_to_mercator(pieces["geometry"][line], z, size)
        b = shapely.bounds(geoms)
        length = shapely.length(geoms) / mercator_scale((b[:, 1] + b[:, 3]) / 2)
        out[line] = spurs(geoms, length, np.full(len(geoms), spec.spur_m))
    return out


def finish_shard(pieces: Table, classes: Sequence[ClassSpec], spec: VectorizeSpec, z: int,
                 size: int) -> tuple[gpd.GeoDataFrame, Table]:
    """:func:`finish_shard_table` with the finished features as a GeoDataFrame."""
    done, rest = finish_shard_table(pieces, classes, spec, z, size)
    return features_frame(done), rest


def finish_shard_table(pieces: Table, classes: Sequence[ClassSpec], spec: VectorizeSpec, z: int,
                       size: int) -> tuple[Table, Table]:
    """Split a shard's pieces: the closed ones are whole and are finished now (spurs judged with
    the whole shard's lines in view); the open ones are returned for the region merge. So the
    region merge holds only border pieces, and memory stays small. Tables, no pandas."""
    pieces = pieces[~spur_mask(pieces, spec, z, size)]
    is_open = pieces["open"].astype(bool)
    done = finish_table(pieces[~is_open], classes, spec, z, size, prune_spurs=False)
    return done, pieces[is_open]


#: the columns of a finished feature table, in order (``geometry``: EPSG:4326, last)
FEATURE_COLUMNS = ("class", "class_id", "kind", "prob_mean", "prob_max", "area_m2", "length_m", "geometry")


def empty_features() -> Table:
    """A feature table without rows, as :func:`finish_table` returns for no pieces: every column
    of dtype object (no values to type; :func:`features_frame` keeps the frame it always gave)."""
    return Table({k: np.empty(0, dtype=object) for k in FEATURE_COLUMNS})


def features_frame(t: Table) -> gpd.GeoDataFrame:
    """A feature table as the GeoDataFrame (EPSG:4326) :func:`finish` returns."""
    import geopandas as gpd

    from pipeline.labels.features import crs_4326 as _crs_4326

    if len(t) == 0 and t["class_id"].dtype == object:
        return gpd.GeoDataFrame({"class": [], "class_id": [], "kind": [], "prob_mean": [], "prob_max": [],
                                 "area_m2": [], "length_m": []}, geometry=[], crs=_crs_4326())
    return to_geodataframe(Table({"class": list(t["class"]), **{k: t[k] for k in FEATURE_COLUMNS[1:]}}),
                           _crs_4326())


def _feature_order(t: Table) -> np.ndarray:
    """Row order of :func:`sort_features`: class id, then centroid x, then y."""
    c = shapely.centroid(t["geometry"])
    return np.lexsort((shapely.get_y(c), shapely.get_x(c), t["class_id"]))


def sort_tables(parts: list[Table]) -> Table:
    """:func:`sort_features` for feature tables."""
    out = concat_tables(parts, empty_features())
    return out[_feature_order(out)] if len(out) else out


def sort_features(parts: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """Concatenate finished features in a deterministic order (class id, then centroid x, y)."""
    import geopandas as gpd
    import pandas as pd

    parts = [p for p in parts if len(p)] or parts[:1]
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=parts[0].crs)
    if len(out) == 0:
        return out
    order = _feature_order(Table({"geometry": out.geometry.to_numpy(), "class_id": out["class_id"].to_numpy()}))
    return out.iloc[order].reset_index(drop=True)


def finish(pieces: Table, classes: Sequence[ClassSpec], spec: VectorizeSpec, z: int,
           size: int, prune_spurs: bool = True) -> gpd.GeoDataFrame:
    """Merged pieces -> features in EPSG:4326 with ``class``, ``class_id``, ``kind``,
    ``prob_mean``, ``prob_max`` (0-1), ``area_m2`` (areas) or ``length_m`` (lines): a GeoDataFrame."""
    return features_frame(finish_table(pieces, classes, spec, z, size, prune_spurs))


def finish_table(pieces: Table, classes: Sequence[ClassSpec], spec: VectorizeSpec, z: int,
                 size: int, prune_spurs: bool = True) -> Table:
    """:func:`finish` as a feature table (:data:`FEATURE_COLUMNS`; no pandas, no geopandas)."""
    from pipeline.vectors.regularize import regularize
    from pipeline.vectors.vectorize import regularized_classes

    names = {c.id: c.name for c in classes}
    if len(pieces) == 0:
        return empty_features()
    pieces, geoms = _split_necks(pieces, pixels_to_mercator(pieces["geometry"], z, size), classes, spec,
                                 tile_extent_m(z) / size)
    b = shapely.bounds(geoms)
    scale = mercator_scale((b[:, 1] + b[:, 3]) / 2)
    line = np.asarray(pieces["kind"] == "line", dtype=bool)
    area_m2 = np.where(line, np.nan, shapely.area(geoms) / scale**2)
    keep = np.where(line, True, area_m2 >= spec.min_area_m2)
    if line.any() and prune_spurs:  # spurs are found on the raw lines, before simplification moves their ends
        keep[line] = ~spurs(geoms[line], shapely.length(geoms[line]) / scale[line], np.full(line.sum(), spec.spur_m))
    poly = ~line & keep
    geoms[poly] = drop_small_holes(geoms[poly], spec.min_hole_m2 * scale[poly] ** 2)
    geoms[poly] = _simplify(geoms[poly], spec.simplify_m * scale[poly])
    geoms[line] = shapely.simplify(geoms[line], spec.line_simplify_m * scale[line], preserve_topology=True)
    length_m = np.where(line, shapely.length(geoms) / scale, np.nan)
    keep &= np.where(line, length_m >= spec.min_length_m, True)
    cls = pieces["class_id"]
    for name in regularized_classes(spec, classes):
        sel = poly & keep & (cls == next((c.id for c in classes if c.name == name), -1))
        if sel.any():
            geoms[sel] = regularize(geoms[sel], spec.regularize_min_iou, float(np.median(scale[sel])),
                                    tile_extent_m(z) / size, spec.regularizer)
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = _polygonal(shapely.make_valid(geoms[bad]))
    area_m2 = np.where(line, np.nan, shapely.area(geoms) / scale**2)
    count = pieces["count"].astype(float)
    ll = output_lonlat(geoms)
    keep &= ~shapely.is_empty(ll)
    out = Table({
        "class": np.array([names.get(int(c), str(c)) for c in cls] + [None], dtype=object)[:-1],
        "class_id": cls.astype(np.int64), "kind": pieces["kind"].astype(object),
        "prob_mean": np.round(pieces["psum"] / np.maximum(count, 1) / 255.0, 3),
        "prob_max": np.round(pieces["pmax"] / 255.0, 3),
        "area_m2": np.round(area_m2, 2), "length_m": np.round(length_m, 2), "geometry": ll,
    })[keep]
    return out[_feature_order(out)] if len(out) else out


def _split_necks(pieces: Table, geoms: np.ndarray, classes: Sequence[ClassSpec],
                 spec: VectorizeSpec, px: float) -> tuple[Table, np.ndarray]:
    """Pieces (and their EPSG:3857 geometries) with the polygons of the squared (building) classes
    split at necks narrower than twice each ``[vectorize] neck_m`` (:mod:`pipeline.vectors.necks`; bodies
    of at least ``neck_min_m2``, found on the outlines simplified by one pixel ``px``, EPSG:3857
    units); a split polygon's pixel count and sum are shared by area."""
    from pipeline.vectors.necks import split_necks
    from pipeline.vectors.vectorize import regularized_classes

    ids = [c.id for c in classes if c.name in regularized_classes(spec, classes)]
    sel = (pieces["kind"] != "line") & np.isin(pieces["class_id"], ids)
    if not spec.neck_m or not sel.any():
        return pieces, geoms
    rows = np.flatnonzero(sel)
    b = shapely.bounds(geoms[rows])
    scale = mercator_scale((b[:, 1] + b[:, 3]) / 2)
    split, src = geoms[rows], np.arange(len(rows))
    for r in spec.neck_m:  # narrow necks first; the pieces are tried again at the next width
        split, k = split_necks(split, r * scale[src], spec.neck_min_m2 * scale[src] ** 2, px)
        src = src[k]
    if len(split) == len(rows):
        return pieces, geoms
    share = shapely.area(split) / np.maximum(shapely.area(geoms[rows][src]), 1e-12)
    idx = np.concatenate([np.flatnonzero(~sel), rows[src]])
    out = pieces[idx]
    for col in ("psum", "count"):
        out[col] = np.concatenate([pieces[col][~sel].astype(float), pieces[col][rows][src] * share])
    return out, np.concatenate([geoms[~sel], split])


def _simplify(polys: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Douglas-Peucker without topology checks (fast), redone with them where that made a polygon
    invalid (a collapsed ring or a self-intersection)."""
    out = shapely.simplify(polys, tol, preserve_topology=False)
    bad = ~shapely.is_valid(out) | shapely.is_empty(out)
    if bad.any():
        out[bad] = shapely.simplify(polys[bad], tol[bad], preserve_topology=True)
    return out


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """The polygonal part of each (repaired) geometry (lines and points of a collection dropped)."""
    out = np.asarray(geoms, dtype=object).copy()
    for i, g in enumerate(out):
        if g.geom_type == "GeometryCollection":
            parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
            out[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out


def output_lonlat(geoms_3857: np.ndarray) -> np.ndarray:
    """EPSG:3857 geometries -> EPSG:4326 as the outputs write them (RFC 7946): 7 decimals (a
    polygon that rounding folds is snapped through GEOS), exterior rings counterclockwise."""
    ll = shapely.transform(to_lonlat(geoms_3857), lambda c: np.round(c, 7))
    bad = ~shapely.is_valid(ll)
    if bad.any():
        ll[bad] = snap(ll[bad], 1e-7)
    return shapely.orient_polygons(ll)
