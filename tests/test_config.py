"""Region config: typed loading, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config.region import TagFilter, load_config
from pipeline.core.errors import ConfigError, MissingInputError
from pipeline.core.stages import stage_digest
from tests.conftest import ROOT

BASE = """
[region]
name = "t"
zoom = 18
shard_zoom = 14

[osm]
path = "x.osm.pbf"

[[classes]]
name = "building"
id = 1
kind = "area"
tags = ["building"]
exclude = ["building=no"]

[[classes]]
name = "road"
id = 2
kind = "line"
tags = ["highway=motorway|footway"]
buffer_m = 3
buffer_m_by_value = { motorway = 10 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "region.toml"
    p.write_text(text)
    return p


def test_shipped_configs_load() -> None:
    for p in sorted((ROOT / "configs").glob("*.toml")):
        if p.name != "luigi.toml":
            cfg = load_config(p)
            assert cfg.name == p.stem and cfg.classes


def test_loads_typed_frozen(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert (cfg.zoom, cfg.tile_size, cfg.shard_zoom, cfg.bbox) == (18, 256, 14, None)
    road = cfg.class_by_name("road")
    assert road.buffer_for({"highway": "motorway"}) == 10.0
    assert road.buffer_for({"highway": "footway"}) == 3.0
    assert cfg.class_by_name("building").matches({"building": "yes"}) is not None
    assert cfg.class_by_name("building").matches({"building": "no"}) is None
    assert road.matches({"highway": "primary"}) is None
    with pytest.raises(AttributeError):
        cfg.zoom = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("zoom = 18", "zom = 18"), "region.zoom is required (found unknown key 'zom': a typo?)"),
        (("shard_zoom = 14", "shard_zoom = 14\nshard_zom = 3"), "unknown key(s) in [region]: shard_zom (did you mean"),
        (("zoom = 18", "zoom = 31"), "region.zoom = 31 is out of range"),
        (("zoom = 18", 'zoom = "18"'), "region.zoom must be int"),
        (("shard_zoom = 14", "shard_zoom = 19"), "region.shard_zoom = 19 is out of range"),
        (("shard_zoom = 14", "shard_zoom = 14\ntile_size = 300"), "region.tile_size = 300"),
        (('kind = "area"', 'kind = "areas"'), "classes[0] (building).kind = 'areas'"),
        (("buffer_m = 3\nbuffer_m_by_value = { motorway = 10 }\n", ""), "classes[1] (road).buffer_m must be > 0"),
        (('tags = ["building"]', 'tags = ["building=="]'), "bad tag filter 'building=='"),
        (("id = 2", "id = 1"), "repeats the name (in any case) or id of class 'building'"),
        (('name = "road"', 'name = "Building"'), "classes[1] repeats the name (in any case) or id of class 'building'"),
        (('name = "building"', 'name = "<img src=x onerror=alert(1)>"'),
         "classes[0].name = '<img src=x onerror=alert(1)>': use letters, digits, '-' or '_'"),
        (('name = "road"', 'name = "main road"'), "classes[1].name = 'main road': use letters"),
        (('name = "road"', 'name = "_road"'), "classes[1].name = '_road': use letters"),
        (('path = "x.osm.pbf"', 'pth = "x.osm.pbf"'), "osm.path is required"),
        (("[osm]", "[osmm]"), "[region] must be a table"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    text = BASE.replace(*edit, 1)
    if edit[0] == "[osm]":  # an unknown top-level section
        text = BASE + "\n[imagry]\nsource = 'xyz'\n"
        needle = "unknown key(s) in [top level]: imagry"
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value)
    assert needle in str(err.value)


def test_class_names_may_mix_case_digits_dash_underscore(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE.replace('name = "road"', 'name = "Road_2-lane"')))
    assert [c.name for c in cfg.classes] == ["building", "Road_2-lane"]


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[region\nname='x'"))


@pytest.mark.parametrize(("text", "key", "values"), [
    ("building", "building", None), ("building=*", "building", None),
    ("highway=motorway|trunk", "highway", ("motorway", "trunk")), ("landuse=grass", "landuse", ("grass",)),
])
def test_tag_filter_parse(text: str, key: str, values: tuple[str, ...] | None) -> None:
    f = TagFilter.parse(text, "here")
    assert (f.key, f.values) == (key, values)
    assert TagFilter.parse(str(f), "here") == f


def test_stage_digests_chain(tmp_path: Path) -> None:
    a = load_config(_write(tmp_path, BASE))
    b = load_config(_write(tmp_path, BASE + "\n[masks]\nignore_ring_px = 2\n"))
    c = load_config(_write(tmp_path, BASE.replace("zoom = 18", "zoom = 17")))
    assert stage_digest(a, "extract") == stage_digest(b, "extract")
    assert stage_digest(a, "cover") == stage_digest(b, "cover")
    assert stage_digest(a, "masks") != stage_digest(b, "masks")
    assert stage_digest(a, "extract") == stage_digest(c, "extract")
    assert stage_digest(a, "cover") != stage_digest(c, "cover")
    assert stage_digest(a, "masks") != stage_digest(c, "masks")


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('zoom = 18', 'zoom = 18\ndata_dir = ""'), r"region\.data_dir is empty"),
    (lambda t: t.replace('exclude = ["building=no"]', 'exclude = ["building=no"]\nbuffer_m = 2'),
     r"classes\[0\] \(building\)\.buffer_m is only for line classes"),
    (lambda t: t + '\n[imagery]\nsource = "xyz"\nurl = "https://t.example/{z}/{x}/{y}.png"\n'
                   'headers = { Referer = "https://a.example\\r\\nX-Evil: 1" }\n',
     r"imagery\.headers\.Referer holds a line break"),
    (lambda t: t + '\n[imagery]\nsource = "raster"\npaths = ["o.tif"]\n\n[synthetic]\ncentre = ["east", 60]\n',
     r"synthetic\.centre = \['east', 60\] must be \[lon, lat\], two numbers"),
])
def test_bad_values_caught_at_validation(tmp_path: Path, change: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(_write(tmp_path, change(BASE)))
    assert "region.toml" in str(err.value)


def test_unset_environment_variable_is_caught_before_fetching(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.model.regions import check_environment

    monkeypatch.delenv("OSMSAT_NOT_SET", raising=False)
    cfg = load_config(_write(tmp_path, BASE + '\n[imagery]\nsource = "xyz"\n'
                                              'url = "https://t.example/{z}/{x}/{y}.png?k=${OSMSAT_NOT_SET}"\n'))
    with pytest.raises(ConfigError, match=r"region\.toml: imagery\.url uses \$\{OSMSAT_NOT_SET\}"):
        check_environment(cfg)
    monkeypatch.setenv("OSMSAT_NOT_SET", "v")
    check_environment(cfg)


def test_nodata_outside_the_band_type_is_caught_when_planning() -> None:
    from pipeline.imagery.raster_plan import check_nodata

    check_nodata(0, "uint8")
    check_nodata(-9999.0, "float32")
    check_nodata(65535, "uint16")
    for value, dtype in ((-9999, "uint8"), (256, "uint8"), (0.5, "uint16"), (70000, "int16")):
        with pytest.raises(ConfigError, match=rf"imagery\] nodata = .* is not a {dtype} value"):
            check_nodata(value, dtype)


def test_max_tiles_guards_the_cover_and_is_in_no_digest(tmp_path: Path) -> None:
    """``[region] max_tiles`` (default 200,000): a bbox of more tiles is refused before its tiles
    are listed (z24 over a degree square: about 10^10 tiles), naming the key; raising it changes
    no stage digest."""
    from pipeline.tiles.cover import region_tiles

    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.max_tiles == 200_000
    with pytest.raises(ConfigError, match=r"region\.max_tiles = 0 is out of range"):
        load_config(_write(tmp_path, BASE.replace("shard_zoom = 14", "shard_zoom = 14\nmax_tiles = 0")))
    big = BASE.replace("zoom = 18\nshard_zoom = 14", "zoom = 24\nshard_zoom = 18\nbbox = [24.0, 60.0, 25.0, 61.0]")
    cfg = load_config(_write(tmp_path, big))
    with pytest.raises(ConfigError) as err:
        region_tiles(cfg, np.empty(0, dtype=object), np.empty(0))
    msg = str(err.value)
    assert msg.startswith(f"{cfg.path}: region.max_tiles = 200,000, but zoom 24 over this region is ")
    assert " shards (about " in msg and "raise max_tiles in [region]" in msg
    raised = load_config(_write(tmp_path, big.replace("shard_zoom = 18", "shard_zoom = 18\nmax_tiles = 20000000000")))
    assert raised.max_tiles == 20_000_000_000
    assert all(stage_digest(raised, s) == stage_digest(cfg, s) for s in ("cover", "masks", "vectorize"))
