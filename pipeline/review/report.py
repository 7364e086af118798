"""The region report: one self-contained HTML page (``data/<region>/report.html``).

A slippy map (Leaflet 1.9.4, vendored under ``pipeline/review/static/leaflet``, BSD-2) of the region's
imagery tiles and of vector layers (OSM features, predictions, change layers) that can be
toggled, the training curves and the headline figures. Nothing is fetched from the network: the
script, its stylesheet and icons, the vector layers and the curve picture are inlined; only the
imagery tiles are read from the region's own tile tree, by a URL relative to the page
(``images/{z}/{x}/{y}.<ext>``), so the page must stay beside that folder.

Pure functions: layers in (GeoJSON dicts in EPSG:4326, lon/lat), an HTML string out; the task
reads the files and writes the page atomically.

Everything on the page that comes from data (feature properties, which carry label file names;
layer, class and region names; figures) is text, never markup: HTML-escaped in Python, inlined
JSON with ``<``, ``>`` and ``&`` as ``\\u`` escapes, and in the browser popups and the legend built
from DOM text nodes (the layer control, which takes HTML, gets the names escaped).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static" / "leaflet"


@dataclass(frozen=True)
class MapLayer:
    """One vector overlay: a GeoJSON FeatureCollection (EPSG:4326) and its Leaflet path style
    (``color``, ``weight`` in CSS px, ``fillOpacity`` in [0, 1])."""

    name: str
    geojson: dict[str, Any]
    color: str
    visible: bool = True
    fill_opacity: float = 0.25
    weight: float = 2.0


@dataclass(frozen=True)
class TileLayer:
    """The imagery tiles: a URL template relative to the page and their native zoom."""

    url: str  # e.g. "images/{z}/{x}/{y}.{ext}" ({ext}: each tile's own extension)
    zoom: int
    name: str = "imagery"
    #: (x, y) or (x, y, ext) at ``zoom`` of the tiles that exist; None: all
    available: tuple[tuple[int, int] | tuple[int, int, str], ...] | None = None
    ext: str = "png"  # the extension of tiles listed without one


@dataclass(frozen=True)
class Report:
    """Everything on the page. ``bounds`` is (west, south, east, north) in EPSG:4326 degrees;
    ``figures`` maps a table title to rows of (label, value) already formatted for people."""

    title: str
    bounds: tuple[float, float, float, float]
    tiles: TileLayer | None
    layers: tuple[MapLayer, ...]
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    curves_png: bytes | None = None
    notes: tuple[str, ...] = ()
    pictures: tuple[tuple[str, bytes], ...] = ()  # (title, PNG) sections after the curves


def leaflet_assets() -> tuple[str, str]:
    """(JavaScript, CSS) of the vendored Leaflet, with the CSS's icon URLs inlined as data URIs."""
    js = (STATIC / "leaflet.js").read_text(encoding="utf-8")
    css = (STATIC / "leaflet.css").read_text(encoding="utf-8")

    def inline(m: re.Match[str]) -> str:
        data = (STATIC / "images" / m.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode()})"

    return js, re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)


#: characters JSON may hold that HTML reads inside a <script> element (``</script>``, ``<!--``),
#: written as JavaScript escapes instead; JSON escapes every non-ASCII character (U+2028 too)
_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _script_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element: no ``<``, ``>`` or ``&`` in it, so user text
    (a feature property, a layer name) can neither close the element early nor open markup."""
    return json.dumps(obj, separators=(",", ":")).translate(_SCRIPT_ESCAPES)


def _figures_html(figures: dict[str, list[tuple[str, str]]]) -> str:
    parts = []
    for title, rows in figures.items():
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        parts.append(f"<section class='fig'><h2>{html.escape(title)}</h2><table>{body}</table></section>")
    return "".join(parts)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}}
header{{padding:8px 16px;background:#263238;color:#fff}} header h1{{font-size:18px;margin:0}}
#map{{height:62vh;min-height:360px}} main{{display:flex;flex-wrap:wrap;gap:16px;padding:12px 16px}}
.fig table{{border-collapse:collapse}} .fig th{{text-align:left;padding:2px 12px 2px 0;font-weight:500}}
.fig td{{text-align:right;font-variant-numeric:tabular-nums}} .fig h2,.curves h2{{font-size:15px;margin:4px 0}}
.curves img{{max-width:640px;width:100%}} .legend{{background:#fff;padding:6px 8px;border-radius:4px}}
.legend i{{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}}
footer{{padding:4px 16px 12px;color:#666;font-size:12px}}
</style></head><body>
<header><h1>{title}</h1></header>
<div id="map"></div>
<main>{figures}{curves}</main>
<footer>{notes}Map: Leaflet (BSD-2). Imagery tiles are read from the folder beside this page.</footer>
<script>{js}</script>
<script>
(function () {{
  var spec = {spec};
  // user text (feature properties, layer names) reaches the page only as DOM text, never as HTML
  function textOf(tag, s) {{ var e = document.createElement(tag); e.textContent = s; return e; }}
  function escaped(s) {{ return textOf("span", s).innerHTML; }}  // for Leaflet APIs that take HTML
  function popup(name, p) {{
    var d = document.createElement("div");
    d.appendChild(textOf("b", name));
    Object.keys(p).slice(0, 12).forEach(function (k) {{
      d.appendChild(document.createElement("br"));
      d.appendChild(document.createTextNode(k + ": " + p[k]));
    }});
    return d;
  }}
  var BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
  var map = L.map("map", {{preferCanvas: false}});
  map.attributionControl.setPrefix("Leaflet");
  var b = spec.bounds;
  map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
  var base = {{}}, overlays = {{}}, counts = {{}};
  if (spec.tiles) {{
    var have = null;
    if (spec.tiles.available) {{
      have = {{}};
      spec.tiles.available.forEach(function (t) {{ have[t[0] + "/" + t[1]] = t[2] || spec.tiles.ext; }});
    }}
    var Local = L.TileLayer.extend({{
      getTileUrl: function (c) {{  // tiles the region lacks are never requested
        var ext = have ? have[c.x + "/" + c.y] : spec.tiles.ext;
        if (!ext) return BLANK;
        this.options.ext = ext;  // a folder may mix PNG and JPEG tiles
        return L.TileLayer.prototype.getTileUrl.call(this, c);
      }}
    }});
    var t = new Local(spec.tiles.url, {{minZoom: Math.max(0, spec.tiles.zoom - 6),
      maxZoom: spec.tiles.zoom + 3, minNativeZoom: spec.tiles.zoom, maxNativeZoom: spec.tiles.zoom,
      bounds: [[b[1], b[0]], [b[3], b[2]]], attribution: "imagery tiles"}});
    t.addTo(map); base[escaped(spec.tiles.name)] = t;
  }}
  spec.layers.forEach(function (l) {{
    var layer = L.geoJSON(l.geojson, {{
      style: {{color: l.color, weight: l.weight, fillOpacity: l.fillOpacity}},
      pointToLayer: function (f, ll) {{ return L.circleMarker(ll, {{radius: 4, color: l.color}}); }},
      onEachFeature: function (f, lyr) {{  // the popup's DOM is built when it opens
        var p = f.properties || {{}};
        if (Object.keys(p).length) lyr.bindPopup(function () {{ return popup(l.name, p); }});
      }}
    }});
    if (l.visible) layer.addTo(map);
    overlays[escaped(l.name + " (" + l.geojson.features.length + ")")] = layer;  // the control sets innerHTML
    counts[l.name] = l.geojson.features.length;
  }});
  L.control.layers(base, overlays, {{collapsed: false}}).addTo(map);
  L.control.scale({{imperial: false}}).addTo(map);
  var legend = L.control({{position: "bottomright"}});
  legend.onAdd = function () {{
    var d = L.DomUtil.create("div", "legend");
    spec.layers.forEach(function (l, i) {{
      if (i) d.appendChild(document.createElement("br"));
      var swatch = document.createElement("i");
      swatch.style.background = l.color;  // a CSS property set through the CSSOM: no markup
      d.appendChild(swatch);
      d.appendChild(document.createTextNode(l.name));
    }});
    return d;
  }};
  legend.addTo(map);
  window.osmsatReport = {{map: map, layers: counts}};
}})();
</script></body></html>
"""


def render_report(report: Report) -> str:
    """The report page as one HTML string (UTF-8 text, no external references but the tiles)."""
    js, css = leaflet_assets()
    spec = {
        "bounds": list(report.bounds),
        "tiles": None if report.tiles is None else {
            "url": report.tiles.url, "zoom": report.tiles.zoom, "name": report.tiles.name, "ext": report.tiles.ext,
            "available": None if report.tiles.available is None else [list(t) for t in report.tiles.available]},
        "layers": [{"name": layer.name, "geojson": layer.geojson, "color": layer.color,
                    "visible": layer.visible, "fillOpacity": layer.fill_opacity, "weight": layer.weight}
                   for layer in report.layers],
    }
    curves = ""
    if report.curves_png:
        src = "data:image/png;base64," + base64.b64encode(report.curves_png).decode()
        curves = f"<section class='curves'><h2>Training curves</h2><img alt='training curves' src='{src}'></section>"
    for title, png in report.pictures:
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        curves += (f"<section class='curves'><h2>{html.escape(title)}</h2>"
                   f"<img alt='{html.escape(title, quote=True)}' src='{src}'></section>")
    notes = "".join(f"{html.escape(n)} " for n in report.notes)
    return _PAGE.format(title=html.escape(report.title), css=css, js=js.replace("</script", "<\\/script"),
                        spec=_script_json(spec), figures=_figures_html(report.figures), curves=curves,
                        notes=notes)


def layers_bounds(layers: tuple[MapLayer, ...] | list[MapLayer]) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees of every coordinate of the layers, or None if empty."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        elif isinstance(c, (list, tuple)):
            for item in c:
                walk(item)

    for layer in layers:
        for f in layer.geojson.get("features", []):
            geom = f.get("geometry") or {}
            walk(geom.get("coordinates", []))
    if not xs:
        return None
    return (min(xs), min(ys), max(xs), max(ys))
