"""Mapper feedback: ``[labels] negatives`` / ``ignore`` parsed, read, burnt over the labels, and in
the masks digest (not extract's)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from pipeline.config.region import IGNORE_VALUE, load_config
from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.core.stages import stage_config, stage_digest
from pipeline.labels.feedback import load_feedback, read_areas
from pipeline.tiles.geo import to_lonlat
from pipeline.tiles.masks import burn_tile, prepare_burn
from tests.test_config import BASE
from tests.test_masks import SIZE, T, _gdf, _px_box


def _geojson(path: Path, geoms_4326: list[shapely.Geometry], crs: str | None = None) -> Path:
    feats = [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)} for g in geoms_4326]
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def _lonlat(g: shapely.Geometry) -> shapely.Geometry:
    return to_lonlat(np.array([g], dtype=object))[0]


def _cfg(tmp_path: Path, extra: str = "", name: str = "r.toml") -> Any:
    p = tmp_path / name
    p.write_text(BASE + extra)
    return load_config(p)


def test_parse_lists_and_errors(tmp_path: Path) -> None:
    neg = str(tmp_path / "rejected.geojson")
    cfg = _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\nignore = "{tmp_path / "unsure.geojson"}"\n')
    lab = cfg.labels
    assert lab.negatives == (Path(neg),) and lab.ignore == (tmp_path / "unsure.geojson",)
    with pytest.raises(ConfigError, match=r"labels\.ignore.*also in labels\.negatives"):
        _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\nignore = ["{neg}"]\n', "b.toml")
    with pytest.raises(ConfigError, match=r"labels\.negatives must be a list of polygon file paths"):
        _cfg(tmp_path, "\n[labels]\nnegatives = [1]\n", "c.toml")


def test_bad_files_are_one_line_naming_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"\[labels\] negatives: .*nope\.geojson: no such file"):
        read_areas(tmp_path / "nope.geojson", "[labels] negatives")
    (tmp_path / "junk.geojson").write_text("{not json")
    with pytest.raises(InputDataError, match=r"\[labels\] ignore: .*junk\.geojson: not a vector file") as err:
        read_areas(tmp_path / "junk.geojson", "[labels] ignore")
    assert "\n" not in str(err.value)
    pts = _geojson(tmp_path / "pts.geojson", [shapely.Point(23.2, 60.2)])
    with pytest.raises(InputDataError, match=r"pts\.geojson: no polygons"):
        read_areas(pts, "[labels] negatives")


def test_areas_in_a_projected_crs_are_reprojected(tmp_path: Path) -> None:
    box = _px_box(T, 10, 10, 50, 50)  # EPSG:3857
    path = _geojson(tmp_path / "m.geojson", [box], crs="urn:ogc:def:crs:EPSG::3857")
    got = read_areas(path, "[labels] negatives")
    assert shapely.equals_exact(got[0], _lonlat(box), tolerance=1e-9)


def test_negatives_clear_every_class_and_ignore_wins(tmp_path: Path) -> None:
    building, road = _px_box(T, 0, 0, 128, 128), _px_box(T, 0, 200, 256, 210)
    feats = _gdf([building, road], ["building", "road"])
    neg = _geojson(tmp_path / "rejected.geojson", [_lonlat(_px_box(T, 0, 0, 64, 256))])
    ign = _geojson(tmp_path / "unsure.geojson", [_lonlat(_px_box(T, 32, 100, 96, 110))])
    cfg = _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\nignore = ["{ign}"]\n')
    fb, classes = load_feedback(cfg.labels), cfg.classes
    assert fb is not None and len(fb) == 2
    plain = burn_tile(prepare_burn(feats, classes), T, SIZE, ignore_ring_px=2)
    m = burn_tile(prepare_burn(feats, classes, feedback=fb), T, SIZE, ignore_ring_px=2)
    assert (m[:, :64][~((np.arange(SIZE)[:, None] >= 100) & (np.arange(SIZE)[:, None] < 110)
                        & (np.arange(64)[None, :] >= 32))] == 0).all()  # building, road and ring gone
    assert (m[100:110, 32:96] == IGNORE_VALUE).all()  # ignore burnt last, over the negative too
    outside = np.ones((SIZE, SIZE), bool)
    outside[:, :96] = False
    np.testing.assert_array_equal(m[outside], plain[outside])
    assert load_feedback(_cfg(tmp_path, "", "none.toml").labels) is None


def test_feedback_files_are_in_the_masks_digest_only(tmp_path: Path) -> None:
    neg = _geojson(tmp_path / "rejected.geojson", [_lonlat(_px_box(T, 0, 0, 64, 256))])
    base = _cfg(tmp_path, "", "base.toml")
    with_fb = _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\n', "fb.toml")
    # without feedback the masks config is what it was before the keys existed
    assert set(stage_config(base, "masks")) == {"region.tile_size", "masks", "classes"}
    assert "negatives" not in stage_config(with_fb, "extract")["labels"]
    assert stage_digest(base, "extract") == stage_digest(with_fb, "extract")
    before = stage_digest(with_fb, "masks")
    assert before != stage_digest(base, "masks")
    st = neg.stat()
    neg.write_text(neg.read_text() + " ")  # the reviewed list changed: masks rerun
    os.utime(neg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert stage_digest(with_fb, "masks") != before
    moved = _cfg(tmp_path, f'\n[labels]\nignore = ["{neg}"]\n', "moved.toml")  # same file, other meaning
    assert stage_digest(moved, "masks") != stage_digest(with_fb, "masks")
