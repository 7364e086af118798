"""A QGIS project (``.qgs``, plain XML, opens in QGIS 3.22 and later) and ``.qml`` style files.

The project loads the imagery tiles as a local XYZ layer (``file:./images/{z}/{x}/{y}.<ext>``,
relative to the project, as QGIS itself writes it), for a raster imagery source the rasters
themselves as GDAL layers beside the tiles, the OSM features and the predictions from
GeoPackages (QGIS 3.22's GDAL reads no GeoParquet) and every change layer (GeoJSON), styled by
the palette of :mod:`pipeline.review.statuses`. Layers sit in groups: change layers, predictions, OSM,
imagery (drawn in that order, the first on top). Every path is relative to the project file, so
the region folder can be moved or shared as a whole.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from pipeline.config.region import ClassSpec, RegionConfig
from pipeline.core.atomic import atomic_write_bytes
from pipeline.review.statuses import OSM, PREDICTED, STATUS_STYLES

QGIS_VERSION = "3.22.16-Białowieża"
_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


@dataclass(frozen=True)
class VectorLayer:
    """A vector layer of the project: ``source`` relative to the project (OGR syntax, e.g.
    ``./predictions.gpkg|layername=building``); ``geometry`` "Polygon" | "Line" | "Point"."""

    name: str
    source: str
    geometry: str
    color: str  # "#rrggbb"
    fill_alpha: int = 110  # 0-255; lines ignore it
    visible: bool = True
    group: str = "change layers"  # one of GROUPS


@dataclass(frozen=True)
class RasterLayer:
    """A raster layer of the imagery group: an XYZ tile folder (``provider`` "wms", ``source``
    from :func:`xyz_source`) or a raster file (``provider`` "gdal", ``source`` a path relative to
    the project); ``authid``/``wkt`` its CRS (None: EPSG:3857, the XYZ grid)."""

    name: str
    source: str
    provider: str
    authid: str | None = None
    wkt: str | None = None
    visible: bool = True


#: the project's layer groups, top to bottom (a group without layers is left out)
GROUPS = ("change layers", "predictions", "OSM", "imagery")


def _rgb(color: str, alpha: int = 255) -> str:
    return f"{int(color[1:3], 16)},{int(color[3:5], 16)},{int(color[5:7], 16)},{alpha}"


def _opt(name: str, value: str) -> str:
    return f'<Option type="QString" name="{name}" value={quoteattr(value)}/>'


def renderer_xml(layer: VectorLayer) -> str:
    """A single-symbol ``renderer-v2`` element for ``layer`` (QGIS 3.x symbology XML)."""
    if layer.geometry == "Line":
        opts = [_opt("line_color", _rgb(layer.color)), _opt("line_width", "0.8"), _opt("line_width_unit", "MM"),
                _opt("line_style", "solid"), _opt("capstyle", "round"), _opt("joinstyle", "round")]
        kind, cls = "line", "SimpleLine"
    elif layer.geometry == "Point":
        opts = [_opt("color", _rgb(layer.color)), _opt("size", "2"), _opt("name", "circle")]
        kind, cls = "marker", "SimpleMarker"
    else:
        opts = [_opt("color", _rgb(layer.color, layer.fill_alpha)), _opt("style", "solid"),
                _opt("outline_color", _rgb(layer.color)), _opt("outline_style", "solid"),
                _opt("outline_width", "0.5"), _opt("outline_width_unit", "MM")]
        kind, cls = "fill", "SimpleFill"
    return (f'<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
            f'<symbols><symbol type="{kind}" name="0" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="{cls}" enabled="1" locked="0" pass="0"><Option type="Map">{"".join(opts)}</Option>'
            f'</layer></symbol></symbols><rotation/><sizescale/></renderer-v2>')


def qml(layer: VectorLayer) -> bytes:
    """A ``.qml`` style file for ``layer`` (QGIS loads ``<name>.qml`` beside a file as its default style)."""
    return (_HEAD + f'<qgis version="{QGIS_VERSION}" styleCategories="Symbology">\n'
            + renderer_xml(layer) + "\n</qgis>\n").encode()


def _layer_id(name: str) -> str:
    return "osmsat_" + hashlib.sha1(name.encode()).hexdigest()[:12]


_SRS = {
    4326: ("EPSG:4326", "+proj=longlat +datum=WGS84 +no_defs", 3452),
    3857: ("EPSG:3857", "+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m "
                        "+nadgrids=@null +wktext +no_defs", 3857),
}


def _srs(epsg: int) -> str:
    authid, proj4, srsid = _SRS[epsg]
    return (f"<spatialrefsys><proj4>{escape(proj4)}</proj4><srsid>{srsid}</srsid><srid>{epsg}</srid>"
            f"<authid>{authid}</authid><geographicflag>{'true' if epsg == 4326 else 'false'}</geographicflag>"
            "</spatialrefsys>")


def _srs_of(authid: str | None, wkt: str | None) -> str:
    if authid is None and wkt is None:
        return _srs(3857)
    body = f"<wkt>{escape(wkt)}</wkt>" if wkt else ""
    return f"<spatialrefsys>{body}<authid>{escape(authid or '')}</authid></spatialrefsys>"


def xyz_source(tiles_dir: str, ext: str, zmin: int, zmax: int) -> str:
    """QGIS data source of a local XYZ tile folder given relative to the project (``./images``):
    ``type=xyz&url=file:./images/{z}/{x}/{y}.ext``, the form QGIS writes for relative paths."""
    if tiles_dir.startswith("/") or "://" in tiles_dir:
        raise ValueError(f"{tiles_dir}: the tile folder must be relative to the project (e.g. ./images)")
    url = f"file:{tiles_dir.rstrip('/')}/{{z}}/{{x}}/{{y}}.{ext}"
    return f"type=xyz&url={quote(url, safe=':/.')}&zmax={zmax}&zmin={zmin}"


def tile_extension(paths: Iterable[str]) -> tuple[str, str | None]:
    """The extension of most tiles among ``paths`` (``z/x/y.<ext>``; "png" when there are none)
    and, when the folder mixes formats, a note saying which tiles the XYZ layer cannot show (one
    URL template has one extension)."""
    counts = Counter(str(p).rsplit(".", 1)[-1].lower() for p in paths if "." in str(p))
    if not counts:
        return "png", None
    ext, _ = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    others = {k: v for k, v in counts.items() if k != ext}
    if not others:
        return ext, None
    rest = ", ".join(f"{v} .{k}" for k, v in sorted(others.items()))
    return ext, (f"the imagery folder mixes tile formats: the QGIS imagery layer shows the {counts[ext]} .{ext} "
                 f"tiles (the majority), not the {rest} tiles")


def gdal_layer(raster: Path, project_dir: Path, name: str | None = None) -> RasterLayer:
    """A raster file as a GDAL layer of the project: its path relative to ``project_dir`` (so the
    project still opens when the region folder and the raster move together) and its CRS."""
    import os

    import rasterio

    with rasterio.open(raster) as src:
        crs = src.crs
    epsg = crs.to_epsg() if crs is not None else None
    rel = Path(os.path.relpath(Path(raster).resolve(), Path(project_dir).resolve())).as_posix()
    return RasterLayer(name or Path(raster).name, rel if rel.startswith("../") else f"./{rel}", "gdal",
                       authid=f"EPSG:{epsg}" if epsg else None, wkt=crs.to_wkt() if crs is not None else None)


_GEOM = {"area": "Polygon", "line": "Line"}


def region_layers(classes: Sequence[ClassSpec], statuses: Iterable[str], predicted: Iterable[str],
                  osm: Iterable[str], line_statuses: Iterable[str] = (), low: bool = False) -> list[VectorLayer]:
    """The vector layers of a region's project, styled by the one palette: the change layers of
    ``statuses`` (``compare/<status>.geojson``, in the registry's order; a status not ``shown``,
    matched, hidden at first) and ``line_statuses``
    (``compare/<status>_lines.geojson``), the ``predicted`` classes
    (``predictions.gpkg``, blue; with ``low``, the low-confidence predictions beside them, hidden at
    first) and the ``osm`` classes (``osm_features.gpkg``, grey outlines)."""
    have, pred, in_osm = set(statuses), set(predicted), set(osm)
    lines = set(line_statuses)
    out = [VectorLayer(style.label, f"./compare/{status}.geojson", "Polygon", style.color,
                       visible=style.shown, group="change layers")
           for status, style in STATUS_STYLES.items() if status in have]
    out += [VectorLayer(f"{style.label} (lines)", f"./compare/{status}_lines.geojson", "Line", style.color,
                        group="change layers") for status, style in STATUS_STYLES.items() if status in lines]
    out += [VectorLayer(f"{PREDICTED.label} {c.name}", f"./predictions.gpkg|layername={c.name}", _GEOM[c.kind],
                        PREDICTED.color, fill_alpha=60, group="predictions") for c in classes if c.name in pred]
    if low:
        from pipeline.vectors.region import LOW_CONFIDENCE

        out.append(VectorLayer(f"{PREDICTED.label}, low confidence", f"./{LOW_CONFIDENCE}", "Polygon",
                               PREDICTED.color, fill_alpha=0, visible=False, group="predictions"))
    out += [VectorLayer(f"{OSM.label} {c.name}", f"./osm_features.gpkg|layername={c.name}", _GEOM[c.kind],
                        OSM.color, fill_alpha=0, visible=c.kind == "area", group="OSM")
            for c in classes if c.name in in_osm]
    return out


def _group(name: str, items: list[str]) -> str:
    return (f'<layer-tree-group name={quoteattr(name)} checked="Qt::Checked" expanded="1"><customproperties/>'
            f'{"".join(items)}</layer-tree-group>')


def project_xml(title: str, layers: Sequence[VectorLayer], imagery: Sequence[RasterLayer],
                extent_3857: tuple[float, float, float, float]) -> bytes:
    """The ``.qgs`` XML: vector ``layers`` and the ``imagery`` rasters in the layer groups of
    ``GROUPS`` (drawn top to bottom; inside a group in list order, the first on top); the map
    view starts at ``extent_3857``."""
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    maplayers = []
    for lyr in layers:
        if lyr.group not in groups:
            raise ValueError(f"{lyr.name}: unknown layer group {lyr.group!r} (one of {', '.join(GROUPS)})")
        lid = _layer_id(lyr.name)
        groups[lyr.group].append(
            f'<layer-tree-layer id="{lid}" name={quoteattr(lyr.name)} source={quoteattr(lyr.source)} '
            f'providerKey="ogr" checked="{"Qt::Checked" if lyr.visible else "Qt::Unchecked"}" expanded="0">'
            "<customproperties/></layer-tree-layer>")
        maplayers.append(f'<maplayer type="vector" geometry="{lyr.geometry}" autoRefreshEnabled="0" '
                         f'hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0">'
                         f"<id>{lid}</id><datasource>{escape(lyr.source)}</datasource>"
                         f"<layername>{escape(lyr.name)}</layername><srs>{_srs(4326)}</srs>"
                         f'<provider encoding="UTF-8">ogr</provider>{renderer_xml(lyr)}'
                         "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
                         "<layerOpacity>1</layerOpacity></maplayer>")
    for r in imagery:
        lid = _layer_id(r.name)
        groups["imagery"].append(
            f'<layer-tree-layer id="{lid}" name={quoteattr(r.name)} source={quoteattr(r.source)} '
            f'providerKey="{r.provider}" checked="{"Qt::Checked" if r.visible else "Qt::Unchecked"}" '
            'expanded="0"><customproperties/></layer-tree-layer>')
        maplayers.append(f'<maplayer type="raster" autoRefreshEnabled="0" hasScaleBasedVisibilityFlag="0">'
                         f"<id>{lid}</id><datasource>{escape(r.source)}</datasource>"
                         f"<layername>{escape(r.name)}</layername><srs>{_srs_of(r.authid, r.wkt)}</srs>"
                         f"<provider>{r.provider}</provider><blendMode>0</blendMode></maplayer>")
    tree = [_group(g, items) for g, items in groups.items() if items]
    x0, y0, x1, y1 = extent_3857
    canvas = (f'<mapcanvas annotationsVisible="1" name="theMapCanvas"><units>meters</units><extent>'
              f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></extent>"
              f"<rotation>0</rotation><destinationsrs>{_srs(3857)}</destinationsrs><rendermaptile>0</rendermaptile>"
              "</mapcanvas>"
              f'<ProjectViewSettings UseProjectScales="0"><Scales/><DefaultViewExtent xmin="{x0}" ymin="{y0}" '
              f'xmax="{x1}" ymax="{y1}">{_srs(3857)}</DefaultViewExtent></ProjectViewSettings>')
    xml = (_HEAD + f'<qgis projectname={quoteattr(title)} version="{QGIS_VERSION}">\n'
           f'<homePath path=""/><title>{escape(title)}</title>\n'
           f"<projectCrs>{_srs(3857)}</projectCrs>\n"
           f'<layer-tree-group><customproperties/>{"".join(tree)}</layer-tree-group>\n'
           f"{canvas}\n<projectlayers>{''.join(maplayers)}</projectlayers>\n"
           '<properties><Paths><Absolute type="bool">false</Absolute></Paths>'
           '<SpatialRefSys><ProjectionsEnabled type="int">1</ProjectionsEnabled></SpatialRefSys></properties>\n'
           "</qgis>\n")
    return xml.encode()


def write_project(path: Path, title: str, layers: Sequence[VectorLayer], imagery: Sequence[RasterLayer],
                  extent_3857: tuple[float, float, float, float]) -> None:
    """Write the project atomically, and a ``.qml`` beside every GeoJSON layer's file."""
    for lyr in layers:
        file = lyr.source.split("|", 1)[0]
        if file.endswith(".geojson"):
            atomic_write_bytes((path.parent / file).with_suffix(".qml"), qml(lyr))
    atomic_write_bytes(path, project_xml(title, layers, imagery, extent_3857))


def region_imagery(cfg: RegionConfig, d: Path) -> tuple[list[RasterLayer], str | None]:
    """The imagery layers of region ``cfg`` (outputs under ``d``): its tiles at the region's zoom,
    by the extension the tile index records, and the input files themselves of a source whose
    registry entry ``shows_inputs`` (rasters); and a note
    when the tiles mix extensions (only one of them shows)."""
    from pipeline.core.errors import ManifestError
    from pipeline.tiles.index import WRITTEN, read_tile_index

    if cfg.imagery is None:
        return [], None
    layers: list[RasterLayer] = []
    note = None
    try:
        tiles = read_tile_index(d / "images")
    except ManifestError:
        tiles = None
    if tiles is not None:
        ext, note = tile_extension(tiles[tiles.status == WRITTEN].path.astype(str))
        name = "imagery" if note is None else f"imagery (.{ext} tiles only)"
        # only this zoom exists; the URL is relative to the project, as QGIS writes it
        layers.append(RasterLayer(name, xyz_source("./images", ext, cfg.zoom, cfg.zoom), "wms"))
    from pipeline.imagery.sources import source_of

    src = source_of(cfg.imagery)
    if src.shows_inputs:  # the rasters themselves, beside the tiles (first on top)
        layers += [gdal_layer(p, d) for p in src.inputs(cfg.imagery) if Path(p).is_file()]
    return layers, note


def write_region_project(cfg: RegionConfig, d: Path, statuses: Sequence[str], line_statuses: Sequence[str],
                         predicted: Sequence[str], osm_classes: Sequence[str],
                         tiles: Sequence[tuple[int, int]], low: bool = False) -> tuple[list[Path], str | None]:
    """``<d>/<region>.qgs`` (and the ``.qml`` styles beside its GeoJSON layers) for region ``cfg``:
    the change layers of ``statuses`` (areas) and ``line_statuses``, the predicted classes (and,
    with ``low``, the low-confidence predictions), the OSM classes present, the imagery; the extent
    of the tiles ``(x, y)`` at the region's zoom (EPSG:3857). Returns the files written and a note
    about the imagery (or None)."""
    from pipeline.tiles.tilemath import Tile, tile_bounds

    layers = region_layers(cfg.classes, statuses, predicted, osm_classes, line_statuses, low)
    imagery, note = region_imagery(cfg, d)
    xs, ys = [t[0] for t in tiles], [t[1] for t in tiles]
    corners = [Tile(cfg.zoom, min(xs), min(ys)), Tile(cfg.zoom, max(xs), max(ys))] if tiles else [Tile(0, 0, 0)]
    b = [tile_bounds(t) for t in corners]
    extent = (min(v[0] for v in b), min(v[1] for v in b), max(v[2] for v in b), max(v[3] for v in b))
    qgs = d / f"{cfg.name}.qgs"
    write_project(qgs, cfg.name, layers, imagery, extent)
    styles = [(d / lyr.source).with_suffix(".qml") for lyr in layers if lyr.source.endswith(".geojson")]
    return [qgs, *styles], note
