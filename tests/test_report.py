"""The HTML report: self-contained, and in a real headless Chromium it loads without console
errors, shows the imagery tiles and every layer, and the layer control toggles them."""

from __future__ import annotations

import html
import io
import json
import re
import time
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

from pipeline.review.report import MapLayer, Report, TileLayer, layers_bounds, render_report
from tests.browser import chromium, needs_browser

Z = 18


def _square(lon: float, lat: float, d: float, **props: object) -> dict:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def _report(tmp_path: Path) -> tuple[Path, Report]:
    rng = np.random.default_rng(3)
    tiles = list(mercantile.tiles(13.400, 52.500, 13.404, 52.502, Z))
    exts = {t: "jpg" if i % 2 else "png" for i, t in enumerate(tiles)}  # a folder may mix them
    for t in tiles:
        p = tmp_path / "images" / str(t.z) / str(t.x) / f"{t.y}.{exts[t]}"
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG" if exts[t] == "png"
                                                                                   else "JPEG")
        p.write_bytes(buf.getvalue())
    osm = {"type": "FeatureCollection", "features": [_square(13.4005, 52.5005, 0.0004, osm_id=1)]}
    missing = {"type": "FeatureCollection",
               "features": [_square(13.4020, 52.5010, 0.0003, status="missing_in_osm", note="</script><b>x")]}
    layers = (MapLayer("OSM features", osm, "#1f78b4"), MapLayer("missing in OSM", missing, "#e31a1c"))
    bounds = layers_bounds(layers)
    assert bounds is not None
    # one tile of the box is missing (as a nodata tile would be): it must not be requested
    (tmp_path / "images" / f"{Z}/{tiles[-1].x}/{tiles[-1].y}.{exts[tiles[-1]]}").unlink()
    have = tuple((t.x, t.y, exts[t]) for t in tiles[:-1])
    rep = Report(title="test region", bounds=bounds, tiles=TileLayer("images/{z}/{x}/{y}.{ext}", Z, available=have),
                 layers=layers, figures={"Model (test split)": [("building IoU", "0.812")]},
                 curves_png=(tmp_path / "images" / f"{Z}/{tiles[0].x}/{tiles[0].y}.png").read_bytes())
    return tmp_path / "report.html", rep


def test_page_is_self_contained(tmp_path: Path) -> None:
    _path, rep = _report(tmp_path)
    page = render_report(rep)
    # nothing is loaded from the network: no external script, stylesheet or image
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=|<img[^>]*\ssrc=[\"']?(https?:)?//|@import", page)
    assert "url(images/" not in page  # Leaflet's icons are inlined
    assert page.count("</script>") == 2  # the feature text "</script>" cannot close a script early
    assert "building IoU" in page and "0.812" in page


def test_layers_bounds() -> None:
    layer = MapLayer("a", {"type": "FeatureCollection", "features": [_square(1.0, 2.0, 0.5)]}, "#000")
    assert layers_bounds([layer]) == (1.0, 2.0, 1.5, 2.5)
    assert layers_bounds([MapLayer("e", {"type": "FeatureCollection", "features": []}, "#000")]) is None


@needs_browser
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    path, rep = _report(tmp_path)
    path.write_text(render_report(rep), encoding="utf-8")
    with chromium() as drv:
        drv.get(path.as_uri())
        deadline = time.time() + 20
        drawn: list[str] = []
        while time.time() < deadline:
            drawn = drv.execute_script("return Array.from(document.querySelectorAll('img.leaflet-tile'))"
                                       ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)")
            if {u.rsplit(".", 1)[-1] for u in drawn} == {"png", "jpg"}:
                break
            time.sleep(0.2)
        # tiles of both extensions are drawn (one folder may mix PNG and JPEG)
        assert {u.rsplit(".", 1)[-1] for u in drawn} == {"png", "jpg"}, drawn
        assert drv.execute_script("return window.osmsatReport.layers") == {"OSM features": 1, "missing in OSM": 1}
        paths = drv.find_elements("css selector", "path.leaflet-interactive")
        assert len(paths) == 2
        # the layer control hides a layer
        boxes = drv.find_elements("css selector", ".leaflet-control-layers-overlays input")
        assert len(boxes) == 2
        boxes[1].click()
        assert len(drv.find_elements("css selector", "path.leaflet-interactive")) == 1
        assert drv.find_element("css selector", ".curves img").get_property("naturalWidth") == 256
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []


# ---------------------------------------------------------------------------------------------
# user text is text: a label file named like markup (it becomes each feature's osm_type), a class,
# layer and region name, and figures never become HTML on the page

#: each payload sets a global flag if the browser ever parses it as HTML
PAYLOAD = "<img src=x onerror=\"window.osmsatXSS=(window.osmsatXSS||0)+1\">"
FILE_PAYLOAD = "<img src=x onerror=alert(document.domain)>.geojson"


def _hostile_report() -> Report:
    osm = {"type": "FeatureCollection", "features": [
        _square(13.4005, 52.5005, 0.0004, **{"class": "building", "osm_type": PAYLOAD + ".geojson", "osm_id": -1}),
        _square(13.4020, 52.5010, 0.0003, **{"class": PAYLOAD, "osm_type": FILE_PAYLOAD, PAYLOAD: "key too"})]}
    layers = (MapLayer("OSM features", osm, "#1f78b4"), MapLayer(PAYLOAD, osm, "#e31a1c"))
    bounds = layers_bounds(layers)
    assert bounds is not None
    return Report(title=f"osmsat: {PAYLOAD}", bounds=bounds, tiles=None, layers=layers,
                  figures={f"Model {PAYLOAD}": [(f"{PAYLOAD} iou", PAYLOAD)]}, notes=(PAYLOAD,))


def test_user_text_is_never_markup() -> None:
    page = render_report(_hostile_report())
    for raw in (PAYLOAD, FILE_PAYLOAD, "<img src=x"):
        assert raw not in page
    # inlined JSON holds no character HTML reads inside <script>; its text is intact
    spec = re.search(r"var spec = (\{.*?\});\n", page)
    assert spec is not None and not re.search(r"[<>&]", spec.group(1))
    decoded = json.loads(spec.group(1))
    assert decoded["layers"][0]["geojson"]["features"][1]["properties"]["osm_type"] == FILE_PAYLOAD
    assert decoded["layers"][1]["name"] == PAYLOAD
    assert html.escape(PAYLOAD) in page  # title, figures and notes: escaped text
    # popups and the legend are built from DOM text, never from HTML strings
    assert "bindPopup(\"" not in page and ".innerHTML =" not in page.split("var spec", 1)[1]


@needs_browser
def test_popups_and_controls_do_not_run_feature_text(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(render_report(_hostile_report()), encoding="utf-8")
    with chromium() as drv:
        drv.get(path.as_uri())
        drv.execute_script("window.alert = function () { window.osmsatXSS = 'alert'; };")  # the file name's payload
        assert drv.execute_script("return window.osmsatReport.layers") == {"OSM features": 2, PAYLOAD: 2}
        # a real click opens a popup, then every feature's popup is opened in turn
        drv.find_elements("css selector", "path.leaflet-interactive")[-1].click()
        texts = drv.execute_script("""
            var out = [], m = window.osmsatReport.map;
            m.eachLayer(function (l) {
              if (l.feature && l.getPopup()) { l.openPopup();
                out.push(document.querySelector('.leaflet-popup-content').textContent); }
            });
            return out;""")
        assert len(texts) == 4 and any(FILE_PAYLOAD in t for t in texts), texts
        assert any(f"{PAYLOAD}: key too" in t for t in texts)
        time.sleep(1.0)  # an <img src=x> that was parsed as HTML has failed to load by now
        assert drv.execute_script("return window.osmsatXSS") is None
        assert not drv.find_elements("css selector", ".leaflet-container img:not(.leaflet-tile)")
        # the layer control and the legend show the names as text
        labels = [e.text for e in drv.find_elements("css selector", ".leaflet-control-layers-overlays label")]
        assert labels == ["OSM features (2)", f"{PAYLOAD} (2)"]
        assert drv.find_element("css selector", ".legend").text.splitlines() == ["OSM features", PAYLOAD]
        assert drv.find_element("css selector", "header h1").text == f"osmsat: {PAYLOAD}"
        assert drv.execute_script("return window.osmsatXSS") is None
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []


def test_summary_compares_the_splits_of_the_own_model(tmp_path):
    import json

    from pipeline.review.region_report import summary_lines

    (tmp_path / "model").mkdir()
    metrics = {"scope": "test", "iou": {"background": 0.9, "building": 0.675},
               "splits": {"train": {"tiles": 57, "iou": {"background": 0.92, "building": 0.727}},
                          "val": {"tiles": 14, "iou": {"background": 0.93, "building": 0.608}}},
               "selected_on": {"epoch": 47, "iou": {"background": 0.93, "building": 0.6075}}}
    (tmp_path / "model" / "metrics.json").write_text(json.dumps(metrics))
    lines = summary_lines(tmp_path, "r")
    assert ("building IoU by split: train 0.727, val 0.608, test 0.675; best.pt: epoch 47, validated 0.608 at the "
            "model's scale") in lines
    assert not any(line.startswith("background IoU by split") for line in lines)
    from pipeline.review.region_report import region_figures

    rows = dict(region_figures(tmp_path)["Model (test tiles)"])
    assert rows["building IoU, val tiles (14)"] == "0.608" and rows["building IoU, train tiles (57)"] == "0.727"
    assert rows["best.pt chosen at epoch"] == "47" and "background IoU, val tiles (14)" not in rows


def test_report_says_what_the_confidence_fit_did(tmp_path: Path) -> None:
    from pipeline.review.region_report import region_figures

    (tmp_path / "_manifests").mkdir()
    rated = {"building": {"fitted": True, "mapped": 87, "unmapped": 112, "auc": 0.785, "note": "", "dropped": 170},
             "water": {"fitted": False, "mapped": 3, "unmapped": 1, "auc": None, "dropped": 0,
                       "note": "3 mapped and 1 unmapped predictions on the fitting tiles (fewer than 10 on a side): "
                               "no filter"}}
    (tmp_path / "_manifests" / "vectorize.json").write_text(json.dumps({"confidence": rated}))
    rows = dict(region_figures(tmp_path)["Predictions rated by the region's map"])
    assert rows["building"].startswith("170 dropped") and "AUC 0.785" in rows["building"]
    assert rows["water"].startswith("not rated: 3 mapped and 1 unmapped")
