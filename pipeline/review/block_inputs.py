"""A region's comparison inputs read from its files, a block at a time
(:class:`pipeline.review.blocks.Source`): predictions from ``predictions.gpkg`` (a layer per
class, read through its R-tree), OSM features from ``features.parquet`` (row groups skipped on its
``bbox`` column), the low-confidence predictions (few) read once. Whole-region reads take
``predictions.geojson``, as the comparison always has; the GeoPackage's single-part
MultiPolygons (GDAL promotes a layer's polygons) are read back as the Polygons they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.review.blocks import Box, InMemory, Inputs


@dataclass(frozen=True)
class RegionFiles:
    """The compare task's inputs in region folder ``data_dir``: OSM features compared on ``tiles``
    ((x, y) at ``zoom``; those reaching in from outside are the context)."""

    data_dir: Path
    tiles: frozenset[tuple[int, int]]
    zoom: int
    low_path: Path | None = None
    _read: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # read once: layers, low

    @property
    def _gpkg(self) -> Path:
        return self.data_dir / "predictions.gpkg"

    def index(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Classes and bounds of the predictions and of the OSM features that meet the tiles' bounds."""
        import pyogrio

        from pipeline.labels.features import read_feature_bounds
        from pipeline.tiles.geo import mercator_to_lonlat
        from pipeline.tiles.tilemath import Tile, tile_bounds

        cls, bounds = [], []
        for name in self._layers():
            b = pyogrio.read_bounds(self._gpkg, layer=name)[1].T
            cls.append(np.full(len(b), name, dtype=object))
            bounds.append(b)
        pred = (np.concatenate(cls) if cls else np.empty(0, dtype=object),
                np.concatenate(bounds) if bounds else np.empty((0, 4)))
        ocls, ob = read_feature_bounds(self.data_dir / "features.parquet")
        if self.tiles:
            t = np.array([tile_bounds(Tile(self.zoom, x, y)) for x, y in self.tiles])  # EPSG:3857 metres
            (w, s), (e, n) = mercator_to_lonlat(np.array([[t[:, 0].min(), t[:, 1].min()],
                                                          [t[:, 2].max(), t[:, 3].max()]]))
            meet = (ob[:, 0] <= e) & (ob[:, 2] >= w) & (ob[:, 1] <= n) & (ob[:, 3] >= s)
            ocls, ob = ocls[meet], ob[meet]
        return {"pred": (pred[0].astype(str), pred[1]), "osm": (ocls.astype(str), ob)}

    def read(self, boxes: dict[str, Box]) -> Inputs:
        """Each class's predictions and OSM features in its box (see the module doc)."""
        import geopandas as gpd
        import pandas as pd
        import pyogrio

        from pipeline.labels.features import read_features
        from pipeline.review.compare import in_and_touching, with_pred_columns

        preds = [_polygons(pyogrio.read_dataframe(self._gpkg, layer=name, bbox=box))
                 for name, box in boxes.items() if name in self._layers()]
        pred = with_pred_columns(gpd.GeoDataFrame(pd.concat(preds, ignore_index=True), geometry="geometry",
                                                  crs="EPSG:4326") if preds else gpd.GeoDataFrame(geometry=[]))
        feats = [read_features(self.data_dir / "features.parquet", box, (name,)) for name, box in boxes.items()]
        osm, context = in_and_touching(gpd.GeoDataFrame(pd.concat(feats, ignore_index=True), geometry="geometry",
                                                        crs="EPSG:4326"), set(self.tiles), self.zoom)
        low = self._low_frame()
        if low is not None and len(low):
            if "low_source" not in self._read:  # (its bounds computed once)
                self._read["low_source"] = InMemory(Inputs(low.iloc[:0], low.iloc[:0], low.iloc[:0], low))
            low = self._read["low_source"].read(boxes).low
        return Inputs(pred, osm, context, low)

    def everything(self) -> Inputs:
        import geopandas as gpd

        pred = gpd.read_file(self.data_dir / "predictions.geojson", engine="pyogrio")
        return Inputs(pred, *self.compared_osm(), self._low_frame())

    def compared_osm(self) -> tuple[Any, Any]:
        """All the region's compared OSM features and its context (as the comparison splits them)."""
        from pipeline.labels.features import read_features
        from pipeline.review.compare import in_and_touching

        return in_and_touching(read_features(self.data_dir / "features.parquet"), set(self.tiles), self.zoom)

    def _layers(self) -> list[str]:
        """The class layers of ``predictions.gpkg`` (listed once)."""
        import pyogrio

        if "layers" not in self._read:
            names = [n for n, _ in pyogrio.list_layers(self._gpkg)] if self._gpkg.is_file() else []
            self._read["layers"] = [n for n in names if n != "empty"]
        return list(self._read["layers"])

    def _low_frame(self) -> Any:
        import geopandas as gpd

        if self.low_path is None or not self.low_path.is_file():
            return None
        if "low" not in self._read:
            self._read["low"] = gpd.read_file(self.low_path, engine="pyogrio")
        return self._read["low"]


def _polygons(df: Any) -> Any:
    """``df`` with single-part MultiPolygons as Polygons (as predictions.geojson holds them)."""
    if not len(df):
        return df
    g = df.geometry.to_numpy()
    single = (shapely.get_type_id(g) == 6) & (shapely.get_num_geometries(g) == 1)
    if single.any():
        g = g.copy()
        g[single] = shapely.get_geometry(g[single], 0)
        df = df.set_geometry(g)
    return df
