"""GeoPackage 1.2 of feature tables with the standard library's sqlite3 and shapely (no GDAL,
pandas or geopandas: pyogrio imports both, about 0.45 s of CPU, for one file per region).

The file holds what GDAL (through ``GeoDataFrame.to_file(driver="GPKG")``) wrote for the same
layers: the GeoPackage tables, one feature table per layer (``fid``, ``geom``, then the property
columns as TEXT / INTEGER / REAL), its R*Tree spatial index (``gpkg_rtree_index``) with the
index triggers, and GDAL's ``gpkg_ogr_contents`` feature counts; geometries are GeoPackage blobs
(little endian, envelope [minx, maxx, miny, maxy], ISO WKB). The layer geometry type is chosen
as pyogrio chooses it: the one type of the layer, a Multi type where singles and multis mix
(singles promoted), else GEOMETRY. 2-D geometries in EPSG:4326 (lon/lat degrees) only.
"""

from __future__ import annotations

import math
import sqlite3
import struct
from pathlib import Path

import numpy as np
import shapely

from pipeline.vectors.table import Table

#: ``application_id`` ("GPKG") and ``user_version`` (1.2.0) of a GeoPackage 1.2
APPLICATION_ID, USER_VERSION = 0x47504B47, 10200
#: EPSG:4326 as GDAL writes it into ``gpkg_spatial_ref_sys``
WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
             'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",'
             '0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],'
             'AUTHORITY["EPSG","4326"]]')
_SRS_ROWS = [
    ("Undefined Cartesian SRS", -1, "NONE", -1, "undefined", "undefined Cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
    ("WGS 84 geodetic", 4326, "EPSG", 4326, WGS84_WKT,
     "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
]
_SCHEMA = (
    "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL,srs_id INTEGER NOT NULL PRIMARY KEY,organization "
    "TEXT NOT NULL,organization_coordsys_id INTEGER NOT NULL,definition  TEXT NOT NULL,description TEXT)",
    "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY,data_type TEXT NOT NULL,identifier TEXT "
    "UNIQUE,description TEXT DEFAULT '',last_change DATETIME NOT NULL DEFAULT "
    "(strftime('%Y-%m-%dT%H:%M:%fZ','now')),min_x DOUBLE, min_y DOUBLE,max_x DOUBLE, max_y DOUBLE,srs_id "
    "INTEGER,CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))",
    "CREATE TABLE gpkg_ogr_contents(table_name TEXT NOT NULL PRIMARY KEY,feature_count INTEGER DEFAULT NULL)",
    "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL,column_name TEXT NOT NULL,geometry_type_name "
    "TEXT NOT NULL,srs_id INTEGER NOT NULL,z TINYINT NOT NULL,m TINYINT NOT NULL,CONSTRAINT pk_geom_cols PRIMARY "
    "KEY (table_name, column_name),CONSTRAINT uk_gc_table_name UNIQUE (table_name),CONSTRAINT fk_gc_tn FOREIGN "
    "KEY (table_name) REFERENCES gpkg_contents(table_name),CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES "
    "gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_extensions (table_name TEXT,column_name TEXT,extension_name TEXT NOT NULL,definition TEXT "
    "NOT NULL,scope TEXT NOT NULL,CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))",
)
#: the tile matrix tables GDAL creates in every GeoPackage (empty here), with their checks
_TILE_SCHEMA = (
    "CREATE TABLE gpkg_tile_matrix_set (table_name TEXT NOT NULL PRIMARY KEY,srs_id INTEGER NOT NULL,min_x DOUBLE "
    "NOT NULL,min_y DOUBLE NOT NULL,max_x DOUBLE NOT NULL,max_y DOUBLE NOT NULL,CONSTRAINT fk_gtms_table_name "
    "FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) "
    "REFERENCES gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_tile_matrix (table_name TEXT NOT NULL,zoom_level INTEGER NOT NULL,matrix_width INTEGER NOT "
    "NULL,matrix_height INTEGER NOT NULL,tile_width INTEGER NOT NULL,tile_height INTEGER NOT NULL,pixel_x_size "
    "DOUBLE NOT NULL,pixel_y_size DOUBLE NOT NULL,CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),"
    "CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name))",
    *(f"CREATE TRIGGER 'gpkg_tile_matrix_{col}_{op}' BEFORE {op.upper()}{of} ON 'gpkg_tile_matrix' FOR EACH ROW "
      f"BEGIN SELECT RAISE(ABORT, '{op} on table ''gpkg_tile_matrix'' violates constraint: {col} {msg}') "
      f"WHERE {cond}; END"
      for col, msg, cond in (("zoom_level", "cannot be less than 0", "(NEW.zoom_level < 0)"),
                             ("matrix_width", "cannot be less than 1", "(NEW.matrix_width < 1)"),
                             ("matrix_height", "cannot be less than 1", "(NEW.matrix_height < 1)"),
                             ("pixel_x_size", "must be greater than 0", "NOT (NEW.pixel_x_size > 0)"),
                             ("pixel_y_size", "must be greater than 0", "NOT (NEW.pixel_y_size > 0)"))
      for op, of in (("insert", ""), ("update", f" {'of' if col == 'zoom_level' else 'OF'} {col}"))),
)
_BOX = 'VALUES (NEW."fid",ST_MinX(NEW."geom"), ST_MaxX(NEW."geom"),ST_MinY(NEW."geom"), ST_MaxY(NEW."geom"))'
#: the R*Tree triggers of the GeoPackage spec (as GDAL words them) and GDAL's feature-count triggers;
#: ``{t}``: the quoted table, ``{r}``: the quoted R*Tree, ``{n}``/``{s}``: their names, ``{lit}``: the
#: table as a literal
_TRIGGERS = (
    'CREATE TRIGGER "{n}_insert" AFTER INSERT ON {t} WHEN (new."geom" NOT NULL AND NOT ST_IsEmpty(NEW."geom")) '
    'BEGIN INSERT OR REPLACE INTO {r} ' + _BOX + '; END',
    'CREATE TRIGGER "{n}_update1" AFTER UPDATE OF "geom" ON {t} WHEN OLD."fid" = NEW."fid" AND (NEW."geom" NOTNULL '
    'AND NOT ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO {r} ' + _BOX + '; END',
    'CREATE TRIGGER "{n}_update2" AFTER UPDATE OF "geom" ON {t} WHEN OLD."fid" = NEW."fid" AND (NEW."geom" ISNULL '
    'OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} WHERE id = OLD."fid"; END',
    'CREATE TRIGGER "{n}_update3" AFTER UPDATE ON {t} WHEN OLD."fid" != NEW."fid" AND (NEW."geom" NOTNULL AND NOT '
    'ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} WHERE id = OLD."fid"; INSERT OR REPLACE INTO {r} ' + _BOX
    + '; END',
    'CREATE TRIGGER "{n}_update4" AFTER UPDATE ON {t} WHEN OLD."fid" != NEW."fid" AND (NEW."geom" ISNULL OR '
    'ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} WHERE id IN (OLD."fid", NEW."fid"); END',
    'CREATE TRIGGER "{n}_delete" AFTER DELETE ON {t} WHEN old."geom" NOT NULL BEGIN DELETE FROM {r} WHERE id = '
    'OLD."fid"; END',
    'CREATE TRIGGER "trigger_insert_feature_count_{s}" AFTER INSERT ON {t} BEGIN UPDATE gpkg_ogr_contents SET '
    "feature_count = feature_count + 1 WHERE lower(table_name) = lower({lit}); END",
    'CREATE TRIGGER "trigger_delete_feature_count_{s}" AFTER DELETE ON {t} BEGIN UPDATE gpkg_ogr_contents SET '
    "feature_count = feature_count - 1 WHERE lower(table_name) = lower({lit}); END",
)
_RTREE_EXTENSION = "http://www.geopackage.org/spec120/#extension_rtree"
#: shapely type ids -> GeoPackage geometry type names
_TYPE_NAMES = {0: "POINT", 1: "LINESTRING", 2: "LINESTRING", 3: "POLYGON", 4: "MULTIPOINT", 5: "MULTILINESTRING",
               6: "MULTIPOLYGON", 7: "GEOMETRYCOLLECTION"}
_PROMOTE = {frozenset({"POINT", "MULTIPOINT"}): "MULTIPOINT",
            frozenset({"LINESTRING", "MULTILINESTRING"}): "MULTILINESTRING",
            frozenset({"POLYGON", "MULTIPOLYGON"}): "MULTIPOLYGON"}
_MULTI = {"MULTIPOINT": shapely.multipoints, "MULTILINESTRING": shapely.multilinestrings,
          "MULTIPOLYGON": shapely.multipolygons}


def _quote(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _column_type(values: np.ndarray, name: str) -> str:
    """The SQLite column type GDAL gives a numpy column: TEXT (strings), INTEGER (int64), REAL."""
    kind = values.dtype.kind
    if kind in "OUT":
        return "TEXT"
    if kind in "iu":
        return "INTEGER"
    if kind == "f":
        return "REAL"
    raise ValueError(f"column {name!r}: dtype {values.dtype} has no GeoPackage type here (strings, ints, floats)")


def layer_geometry_type(geoms: np.ndarray) -> tuple[str, np.ndarray]:
    """The layer geometry type pyogrio gives ``geoms`` for a GeoPackage, and the geometries as
    written (singles made multi where singles and multis of one kind mix)."""
    ids = shapely.get_type_id(geoms)
    names = {_TYPE_NAMES[int(i)] for i in np.unique(ids) if i >= 0}
    if len(names) == 1:
        return names.pop(), geoms
    multi = _PROMOTE.get(frozenset(names))
    if multi is None:
        return "GEOMETRY", geoms
    out = np.asarray(geoms, dtype=object).copy()
    single = np.array([g is not None and _TYPE_NAMES[int(i)] != multi for g, i in zip(out, ids)], dtype=bool)
    out[single] = [_MULTI[multi]([g]) for g in out[single]]
    return multi, out


def geometry_blobs(geoms: np.ndarray, srs_id: int = 4326) -> list[bytes | None]:
    """GeoPackage geometry blobs: ``GP``, version 0, flags (little endian; envelope [minx, maxx,
    miny, maxy], none and the empty flag for an empty geometry), ``srs_id``, then ISO WKB."""
    wkb = shapely.to_wkb(geoms, byte_order=1, flavor="iso", output_dimension=2) if len(geoms) else []
    bounds = shapely.bounds(geoms) if len(geoms) else np.empty((0, 4))
    empty = shapely.is_empty(geoms) if len(geoms) else np.empty(0, dtype=bool)
    out: list[bytes | None] = []
    for w, b, e in zip(wkb, bounds.tolist(), empty.tolist()):
        if w is None:
            out.append(None)
        elif e:
            out.append(struct.pack("<2sBBi", b"GP", 0, 0x11, srs_id) + w)
        else:
            out.append(struct.pack("<2sBBi4d", b"GP", 0, 0x03, srs_id, b[0], b[2], b[1], b[3]) + w)
    return out


def _add_layer(db: sqlite3.Connection, name: str, t: Table) -> None:
    """One feature table with its rows, contents entries, R*Tree index and triggers."""
    geoms = np.asarray(t["geometry"], dtype=object)
    if shapely.has_z(geoms).any():
        raise ValueError(f"layer {name!r}: 3-D geometries; this GeoPackage writer writes 2-D ones")
    gtype, geoms = layer_geometry_type(geoms)
    props = [k for k in t.columns if k != "geometry"]
    q = _quote(name)
    cols = "".join(f", {_quote(k)} {_column_type(t[k], k)}" for k in props)
    db.execute(f'CREATE TABLE {q} ( "fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "geom" {gtype}{cols})')
    values = [[None if isinstance(v, float) and math.isnan(v) else v for v in t[k].tolist()] for k in props]
    blobs = geometry_blobs(geoms)
    marks = ", ".join("?" * (len(props) + 1))
    db.executemany(f"INSERT INTO {q} (\"geom\"{''.join(', ' + _quote(k) for k in props)}) VALUES ({marks})",
                   zip(blobs, *values))
    ok = ~(shapely.is_empty(geoms) | shapely.is_missing(geoms)) if len(geoms) else np.empty(0, dtype=bool)
    b = shapely.total_bounds(geoms[ok]) if ok.any() else [None] * 4
    db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, max_x, "
               "max_y, srs_id) VALUES (?, 'features', ?, '', ?, ?, ?, ?, 4326)",
               (name, name, *(None if v is None else float(v) for v in b)))
    db.execute("INSERT INTO gpkg_ogr_contents VALUES (?, ?)", (name, len(t)))
    db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, 4326, 0, 0)", (name, gtype))
    rtree = f"rtree_{name}_geom"
    db.execute(f"CREATE VIRTUAL TABLE {_quote(rtree)} USING rtree(id, minx, maxx, miny, maxy)")
    fids = np.flatnonzero(ok) + 1
    box = shapely.bounds(geoms[ok]) if ok.any() else np.empty((0, 4))
    db.executemany(f"INSERT INTO {_quote(rtree)} VALUES (?, ?, ?, ?, ?)",
                   ((f, x0, x1, y0, y1) for f, (x0, y0, x1, y1) in zip(fids.tolist(), box.tolist())))
    db.execute("INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', ?, 'write-only')",
               (name, _RTREE_EXTENSION))
    lit = "'" + name.replace("'", "''") + "'"
    for sql in _TRIGGERS:
        db.execute(sql.format(t=q, r=_quote(rtree), n=rtree.replace('"', '""'), s=name.replace('"', '""'), lit=lit))


def write_gpkg_file(layers: dict[str, Table], path: str | Path) -> None:
    """Write ``layers`` (feature tables, EPSG:4326, geometry column ``geometry``) as a new
    GeoPackage 1.2 at ``path`` (which must not hold a database yet), one layer per entry, in order."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {USER_VERSION}")
        db.execute("BEGIN")
        for sql in (*_SCHEMA[:4], *_TILE_SCHEMA, _SCHEMA[4]):  # GDAL's order
            db.execute(sql)
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _SRS_ROWS)
        for name, t in layers.items():
            _add_layer(db, name, t)
        db.execute("COMMIT")
    finally:
        db.close()
