"""Reading one label file of ``[labels] paths`` (:mod:`pipeline.labels.vector`): its layer, the
attributes the classes read, feature ids and the geometries in EPSG:4326, with the CRS checks
(a file without CRS, a GeoJSON whose coordinates cannot be degrees, projected coordinates read
as degrees). Each problem is an InputDataError naming the file (and layer) and what to fix.

Imports pyogrio/pyproj/pandas lazily, so parsing the config stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.config.labels import ID_FIELDS, LabelsConfig
from pipeline.config.region import ClassSpec
from pipeline.core.errors import InputDataError, MissingInputError

if TYPE_CHECKING:
    import pandas as pd


def needed_fields(lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> list[str]:
    """The attributes a label file must have: the keys the classes' tag filters read, and
    ``attribute``."""
    keys: list[str] = []
    for c in classes:
        keys += [k for k in c.tag_keys if k not in keys]
    if lcfg.attribute is not None and lcfg.attribute not in keys:
        keys.append(lcfg.attribute)
    return keys


def read_label_file(path: Path, lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> tuple[pd.DataFrame, str]:
    """One label file -> DataFrame (needed attributes, ``_id``, geometry in EPSG:4326, 2-D)."""
    import pyogrio
    import pyproj

    if not Path(path).exists():
        raise MissingInputError(f"{path}: label file not found; fix labels.paths in the region config")
    where = f"{path}" + (f" layer {lcfg.layer!r}" if lcfg.layer else "")
    try:
        layers = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise InputDataError(f"{path}: not a vector file GDAL can read ({exc}); use GeoJSON, GeoPackage, "
                             "Shapefile, FlatGeobuf or GeoParquet") from exc
    if lcfg.layer is not None and lcfg.layer not in layers:
        raise InputDataError(f"{path}: no layer {lcfg.layer!r}; its layers are {', '.join(layers)} "
                             "(fix labels.layer)")
    try:
        info = pyogrio.read_info(path, layer=lcfg.layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{where}: unreadable ({exc})") from exc
    fields = [str(f) for f in info["fields"]]
    wanted = needed_fields(lcfg, classes)
    missing = [k for k in wanted if k not in fields]
    if missing:
        raise InputDataError(f"{where}: no attribute {', '.join(repr(k) for k in missing)} (read by the classes' "
                             f"tags or labels.attribute); its attributes are {', '.join(fields) or 'none'}")
    id_field = _id_field(lcfg, fields, where)
    crs = info["crs"] or lcfg.crs
    if crs is None:
        raise InputDataError(f"{where}: the file declares no CRS; set labels.crs (e.g. \"EPSG:4326\") in the "
                             "region config, or add one to the file (a .prj beside a Shapefile)")
    columns = wanted + ([id_field] if id_field and id_field not in wanted else [])
    try:
        df = pyogrio.read_dataframe(path, layer=lcfg.layer, columns=columns, force_2d=True, use_arrow=True,
                                    on_invalid="ignore")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        raise InputDataError(f"{where}: unreadable ({exc})") from exc
    raw = geoms = np.asarray(df.geometry.array, dtype=object)
    wgs84 = pyproj.CRS.from_epsg(4326)
    # GDAL reads a GeoJSON without a crs member as EPSG:4326 (RFC 7946): then labels.crs may say otherwise
    implied = info["driver"] in _GEOJSON and pyproj.CRS.from_user_input(crs).equals(wgs84, ignore_axis_order=True)
    if implied and lcfg.crs and _outside_degrees(raw) is not None:
        crs = lcfg.crs
    if not pyproj.CRS.from_user_input(crs).equals(wgs84, ignore_axis_order=True):
        geoms = _to_4326(raw, crs)
    _check_degrees(raw, geoms, where, crs, declared=bool(info["crs"]) and not implied)
    frame = df.drop(columns=df.geometry.name)
    frame = frame.assign(_id=_ids(frame[id_field] if id_field else None, len(frame)), geometry=geoms)
    source = Path(path).name + (f":{lcfg.layer}" if lcfg.layer else "")
    return frame, source


#: GDAL drivers that report EPSG:4326 for a file without a CRS of its own
_GEOJSON = ("GeoJSON", "GeoJSONSeq")


def _outside_degrees(geoms: np.ndarray) -> int | None:
    """The index (in ``shapely.get_coordinates`` order) of the first coordinate beyond longitude
    ±180 / latitude ±90 or not finite, else None."""
    coords = shapely.get_coordinates(geoms)
    bad = ~(np.isfinite(coords).all(axis=1) & (np.abs(coords[:, 0]) <= 180) & (np.abs(coords[:, 1]) <= 90))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _check_degrees(raw: np.ndarray, geoms: np.ndarray, where: str, crs: Any, declared: bool) -> None:
    """Raise InputDataError when the geometries ``raw`` (in ``crs``), once in EPSG:4326
    (``geoms``), are no longitude/latitude: projected coordinates read as degrees, or outside
    the valid range of their CRS. ``declared``: the file itself declares ``crs``."""
    at = _outside_degrees(geoms)
    if at is None:
        return
    x, y = shapely.get_coordinates(raw)[at]
    fix = ("the file declares that CRS: fix the file's CRS" if declared else
           'set [labels] crs = "EPSG:xxxx" (the CRS its coordinates are in, e.g. "EPSG:32636" for UTM zone 36N) '
           "in the region config")
    raise InputDataError(f"{where}: coordinates ({x:.10g}, {y:.10g}) read in {crs} are outside the valid "
                         f"longitude/latitude range (projected coordinates without a declared CRS?); {fix}")


def _id_field(lcfg: LabelsConfig, fields: list[str], where: str) -> str | None:
    if lcfg.id_field is not None:
        if lcfg.id_field not in fields:
            raise InputDataError(f"{where}: no attribute {lcfg.id_field!r} (labels.id_field); its attributes are "
                                 f"{', '.join(fields) or 'none'}")
        return lcfg.id_field
    return next((f for f in ID_FIELDS if f in fields), None)


def _ids(col: pd.Series | None, n: int) -> np.ndarray:
    """int64 feature ids: the column's integer values, else ``-(row + 1)``."""
    import pandas as pd

    rows = -np.arange(1, n + 1, dtype=np.int64)
    if col is None:
        return rows
    num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(num) & (num == np.round(num)) & (np.abs(num) < 2**62)
    return np.where(ok, np.nan_to_num(num).astype(np.int64), rows)


def _to_4326(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Reproject shapely geometries from ``crs`` to EPSG:4326 (lon/lat order)."""
    import pyproj

    tr = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, fwd)
