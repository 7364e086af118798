"""A QGIS project (``.qgs``, plain XML, opens in QGIS 3.22 and later) and ``.qml`` style files.

The project loads the imagery tiles as a local XYZ layer (``file://`` URL template), the OSM
features and the predictions from GeoPackages (QGIS 3.22's GDAL reads no GeoParquet) and every
change layer (GeoJSON) styled: missing in OSM red, not seen yellow, offset orange, matched green.
Vector paths are relative to the project file, so the region folder can be moved as a whole;
the XYZ layer needs an absolute ``file://`` URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from pipeline.io import atomic_write_bytes

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


def xyz_source(tiles_dir: Path, ext: str, zmin: int, zmax: int) -> str:
    """QGIS data source of a local XYZ tile folder (``type=xyz&url=file:///…/{z}/{x}/{y}.ext``)."""
    url = f"file://{tiles_dir.resolve().as_posix()}/{{z}}/{{x}}/{{y}}.{ext}"
    return f"type=xyz&url={quote(url, safe=':/.')}&zmax={zmax}&zmin={zmin}"


def project_xml(title: str, layers: list[VectorLayer], xyz: tuple[str, str] | None,
                extent_3857: tuple[float, float, float, float]) -> bytes:
    """The ``.qgs`` XML: vector ``layers`` (drawn in list order, the first on top) above the
    optional XYZ imagery layer ``(name, source)``; the map view starts at ``extent_3857``."""
    tree, maplayers = [], []
    for lyr in layers:
        lid = _layer_id(lyr.name)
        tree.append(f'<layer-tree-layer id="{lid}" name={quoteattr(lyr.name)} source={quoteattr(lyr.source)} '
                    f'providerKey="ogr" checked="{"Qt::Checked" if lyr.visible else "Qt::Unchecked"}" expanded="0">'
                    "<customproperties/></layer-tree-layer>")
        maplayers.append(f'<maplayer type="vector" geometry="{lyr.geometry}" autoRefreshEnabled="0" '
                         f'hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0">'
                         f"<id>{lid}</id><datasource>{escape(lyr.source)}</datasource>"
                         f"<layername>{escape(lyr.name)}</layername><srs>{_srs(4326)}</srs>"
                         f'<provider encoding="UTF-8">ogr</provider>{renderer_xml(lyr)}'
                         "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
                         "<layerOpacity>1</layerOpacity></maplayer>")
    if xyz is not None:
        name, source = xyz
        lid = _layer_id(name)
        tree.append(f'<layer-tree-layer id="{lid}" name={quoteattr(name)} source={quoteattr(source)} '
                    'providerKey="wms" checked="Qt::Checked" expanded="0"><customproperties/></layer-tree-layer>')
        maplayers.append(f'<maplayer type="raster" autoRefreshEnabled="0" hasScaleBasedVisibilityFlag="0">'
                         f"<id>{lid}</id><datasource>{escape(source)}</datasource>"
                         f"<layername>{escape(name)}</layername><srs>{_srs(3857)}</srs>"
                         '<provider>wms</provider><blendMode>0</blendMode></maplayer>')
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


def write_project(path: Path, title: str, layers: list[VectorLayer], xyz: tuple[str, str] | None,
                  extent_3857: tuple[float, float, float, float]) -> None:
    """Write the project atomically, and a ``.qml`` beside every GeoJSON layer's file."""
    for lyr in layers:
        file = lyr.source.split("|", 1)[0]
        if file.endswith(".geojson"):
            atomic_write_bytes((path.parent / file).with_suffix(".qml"), qml(lyr))
    atomic_write_bytes(path, project_xml(title, layers, xyz, extent_3857))
