"""GeoParquet of finished features with pyarrow and shapely alone (no pandas, geopandas or pyproj).

The file is the one ``GeoDataFrame.to_parquet`` wrote before (geopandas 1.2: GeoParquet 1.1.0, WKB
in a ``geoarrow.wkb`` field, the CRS as PROJJSON, geometry types and bounding box), so
``geopandas.read_parquet`` reads the same frame; only the ``pandas`` schema entry (which pandas
does not need to read these columns back) and the ``creator`` entry are not written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.vectors.arrow import to_arrow, to_numpy
from pipeline.vectors.table import Table

#: EPSG:4326 as PROJJSON, as pyproj 3.7 / PROJ 9 write it (``pyproj.CRS.from_epsg(4326).to_json()``;
#: a test checks that pyproj reads it as EPSG:4326): written without importing pyproj (0.03 s)
EPSG_4326_PROJJSON = (
    '{"$schema":"https://proj.org/schemas/v0.7/projjson.schema.json","type":"GeographicCRS","name":"WGS '
    '84","datum_ensemble":{"name":"World Geodetic System 1984 ensemble","members":[{"name":"World '
    'Geodetic System 1984 (Transit)","id":{"authority":"EPSG","code":1166}},{"name":"World Geodetic '
    'System 1984 (G730)","id":{"authority":"EPSG","code":1152}},{"name":"World Geodetic System 1984 '
    '(G873)","id":{"authority":"EPSG","code":1153}},{"name":"World Geodetic System 1984 '
    '(G1150)","id":{"authority":"EPSG","code":1154}},{"name":"World Geodetic System 1984 '
    '(G1674)","id":{"authority":"EPSG","code":1155}},{"name":"World Geodetic System 1984 '
    '(G1762)","id":{"authority":"EPSG","code":1156}},{"name":"World Geodetic System 1984 '
    '(G2139)","id":{"authority":"EPSG","code":1309}},{"name":"World Geodetic System 1984 '
    '(G2296)","id":{"authority":"EPSG","code":1383}}],"ellipsoid":{"name":"WGS 84","semi_major_axis":6378'
    '137,"inverse_flattening":298.257223563},"accuracy":"2.0","id":{"authority":"EPSG","code":6326}},"coo'
    'rdinate_system":{"subtype":"ellipsoidal","axis":[{"name":"Geodetic '
    'latitude","abbreviation":"Lat","direction":"north","unit":"degree"},{"name":"Geodetic '
    'longitude","abbreviation":"Lon","direction":"east","unit":"degree"}]},"scope":"Horizontal component '
    'of 3D system.","area":"World.","bbox":{"south_latitude":-90,"west_longitude":-180,"north_latitude":9'
    '0,"east_longitude":180},"id":{"authority":"EPSG","code":4326}}'
)


def _geo_crs() -> dict[str, Any]:
    """The CRS of the ``geo`` entry: geopandas drops the ids of the datum ensemble's members."""
    crs = json.loads(EPSG_4326_PROJJSON)
    for member in crs["datum_ensemble"]["members"]:
        member.pop("id", None)
    return crs


#: shapely type ids -> the names GeoParquet lists (geopandas' ``geom_type``)
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
               6: "MultiPolygon", 7: "GeometryCollection"}
#: arrow types of the property columns of a feature table
PROPERTY_TYPES = {"class": "large_string", "class_id": "int64", "kind": "large_string", "prob_mean": "float64",
                  "prob_max": "float64", "area_m2": "float64", "length_m": "float64"}


def geo_metadata(geoms: np.ndarray) -> dict[str, Any]:
    """The ``geo`` schema entry (GeoParquet 1.1.0) of EPSG:4326 ``geoms``: geometry types, sorted,
    and bounding box (lon/lat degrees)."""
    names = sorted({_TYPE_NAMES[t] for t in shapely.get_type_id(geoms).tolist() if t >= 0})
    b = shapely.total_bounds(geoms) if len(geoms) else np.full(4, np.nan)
    col = {"encoding": "WKB", "crs": _geo_crs(), "geometry_types": names,
           "bbox": [float(v) for v in b]}
    return {"primary_column": "geometry", "columns": {"geometry": col}, "version": "1.1.0"}


def feature_table_arrow(t: Table) -> Any:
    """A feature table (:data:`pipeline.vectors.finish.FEATURE_COLUMNS`) as the pyarrow table
    GeoParquet stores."""
    import pyarrow as pa

    props = [k for k in t.columns if k != "geometry"]
    geoms = t["geometry"]
    wkb = shapely.to_wkb(geoms) if len(geoms) else np.empty(0, dtype=object)
    ext = json.dumps({"crs": json.loads(EPSG_4326_PROJJSON)}).encode()
    fields = [pa.field(k, getattr(pa, PROPERTY_TYPES[k])()) for k in props]
    fields.append(pa.field("geometry", pa.binary(),
                           metadata={b"ARROW:extension:name": b"geoarrow.wkb", b"ARROW:extension:metadata": ext}))
    schema = pa.schema(fields, metadata={b"geo": json.dumps(geo_metadata(geoms)).encode()})
    arrays = [to_arrow(t[k], PROPERTY_TYPES[k]) for k in props] + [to_arrow(wkb, "binary")]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_feature_table(path: str | Path) -> Table:
    """A feature table from a file of :func:`feature_table_arrow` (geometries parsed from WKB)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        table = f.read()
    cols = {k: to_numpy(table.column(k)) for k in table.column_names}
    cols["geometry"] = shapely.from_wkb(cols["geometry"])
    return Table(cols)
