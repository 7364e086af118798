"""Imagery from a local slippy-map folder (``[imagery] source = "tiles"``): byte copies, alpha as
valid mask, missing tiles, templates with ``{-y}``, mosaicking down from a finer zoom, the
folder as the region's cover, and bad folders (each a clear error, nothing written).

Tile folders are generated here from seeded noise.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config.region import load_config
from pipeline.core.errors import ConfigError
from pipeline.imagery.folder import TileFolder, folder_cover
from pipeline.tiles.index import read_tile_index
from pipeline.tiles.tilemath import Tile
from tests.test_imagery_task import ZOOM, build, region
from tests.town import write_town_config

X0, Y0 = 309612, 261632  # z19, Kampala


def tile_bytes(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def noise(seed: int, size: int = 256, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, bands), dtype=np.uint8)


def write(folder: Path, t: Tile, data: bytes, ext: str, tms: bool = False) -> Path:
    y = (1 << t.z) - 1 - t.y if tms else t.y
    p = folder / str(t.z) / str(t.x) / f"{y}.{ext}"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def imagery(path: Path | str, extra: str = "") -> str:
    return f'source = "tiles"\npath = "{path}"\n{extra}'


def test_copies_tiles_alpha_becomes_valid_mask_missing_is_recorded(tmp_path: Path) -> None:
    from tasks.imagery import ImageryAll

    folder = tmp_path / "tiles"
    tiles = [Tile(ZOOM, X0 + i, Y0 + j) for i in range(2) for j in range(2)]
    png = write(folder, tiles[0], tile_bytes(noise(1), "PNG"), "png")
    jpg = write(folder, tiles[1], tile_bytes(noise(2), "JPEG"), "jpg")
    rgba = noise(3, bands=4)
    rgba[..., 3] = 255
    rgba[:64, :, 3] = 0  # a quarter transparent
    write(folder, tiles[2], tile_bytes(rgba, "PNG"), "png")
    # tiles[3] is absent
    cfg = region(tmp_path, imagery(folder), tiles)
    assert build(ImageryAll(config=str(cfg))).status.name == "SUCCESS"
    out = tmp_path / "data" / "images"
    idx = read_tile_index(out).set_index(["x", "y"])
    assert (out / idx.loc[(tiles[0].x, tiles[0].y), "path"]).read_bytes() == png.read_bytes()
    assert (out / idx.loc[(tiles[1].x, tiles[1].y), "path"]).read_bytes() == jpg.read_bytes()
    with Image.open(out / idx.loc[(tiles[2].x, tiles[2].y), "path"]) as im:
        assert im.mode == "RGB"
        got = np.asarray(im)
    assert (got[:64] == 0).all() and (got[64:] == rgba[64:, :, :3]).all()
    assert idx.loc[(tiles[3].x, tiles[3].y), "status"] == "missing"
    m = json.loads(next((out / "_shards").glob("*.json")).read_text())
    assert m["valid_share"] == {str(tiles[2]): 0.75}
    assert m["counts"] == {"missing-on-server": 1, "nodata-skipped": 0, "ok": 3}
    assert m["source"] == {"type": "tiles", "path": str(folder)}


def test_template_with_tms_rows(tmp_path: Path) -> None:
    from tasks.imagery import ImageryAll

    folder = tmp_path / "tms"
    t = Tile(ZOOM, X0, Y0)
    src = write(folder, t, tile_bytes(noise(4), "JPEG"), "jpg", tms=True)
    cfg = region(tmp_path, imagery(f"{folder}/{{z}}/{{x}}/{{-y}}.jpg"), [t])
    assert build(ImageryAll(config=str(cfg))).status.name == "SUCCESS"
    idx = read_tile_index(tmp_path / "data" / "images")
    assert (tmp_path / "data" / "images" / idx.path[0]).read_bytes() == src.read_bytes()
    assert TileFolder.of(f"{folder}/{{z}}/{{x}}/{{-y}}.jpg").path(t, "jpg") == src


def test_finer_folder_is_mosaicked_down(tmp_path: Path) -> None:
    """Four z20 children of constant colours (one missing, one half transparent) -> one z19 tile."""
    from tasks.imagery import ImageryAll

    folder = tmp_path / "z20"
    t = Tile(ZOOM, X0, Y0)
    colours = {(0, 0): (200, 10, 10), (1, 0): (10, 200, 10), (0, 1): (10, 10, 200)}
    for (i, j), c in colours.items():
        arr = np.zeros((256, 256, 4), dtype=np.uint8)
        arr[..., :3] = c
        arr[..., 3] = 255
        if (i, j) == (0, 1):
            arr[:, 128:, 3] = 0  # right half transparent
        write(folder, Tile(ZOOM + 1, 2 * X0 + i, 2 * Y0 + j), tile_bytes(arr, "PNG"), "png")
    cfg = region(tmp_path, imagery(folder, "min_valid_share = 0.3"), [t])
    assert build(ImageryAll(config=str(cfg))).status.name == "SUCCESS"
    idx = read_tile_index(tmp_path / "data" / "images")
    got = np.asarray(Image.open(tmp_path / "data" / "images" / idx.path[0]))
    assert (got[:128, :128] == (200, 10, 10)).all() and (got[:128, 128:] == (10, 200, 10)).all()
    assert (got[128:, :64] == (10, 10, 200)).all() and (got[128:, 64:] == 0).all()
    m = json.loads(next((tmp_path / "data" / "images" / "_shards").glob("*.json")).read_text())
    assert m["valid_share"][str(t)] == pytest.approx(0.625)


def test_folder_as_the_region_cover(tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    for dx, dy in ((0, 0), (3, 1)):
        write(folder, Tile(ZOOM + 1, 2 * (X0 + dx), 2 * (Y0 + dy) + 1), tile_bytes(noise(5), "PNG"), "png")
    cfg = region(tmp_path, imagery(folder, "cover_folder = true"), [])
    xy = folder_cover(load_config(cfg).imagery, ZOOM)  # type: ignore[arg-type]
    assert xy.tolist() == [[X0, Y0], [X0 + 3, Y0 + 1]]


# ---------------------------------------------------------------------------------------------
# Bad folders


def test_bad_folders_are_clear_errors_and_write_nothing(tmp_path: Path) -> None:
    from tasks.imagery import FetchImagery

    tiles = [Tile(ZOOM, X0, Y0), Tile(ZOOM, X0 + 1, Y0)]

    def fails(name: str, make: object, pattern: str) -> None:
        work = tmp_path / name
        folder = work / "tiles"
        folder.mkdir(parents=True)
        make(folder)  # type: ignore[operator]
        cfg = region(work, imagery(folder), tiles)
        shard = load_config(cfg)
        from pipeline.tiles.cover import read_tiles_csv

        task = FetchImagery(config=str(cfg), shard=str(read_tiles_csv(shard.data_dir / "tiles.csv").shard[0]))
        with pytest.raises(Exception, match=pattern):
            task.run()
        assert not list((work / "data" / "images").rglob("*.png")), "nothing half-written"
        assert not task.output().exists()

    # a coarser zoom only
    fails("coarse", lambda f: write(f, Tile(ZOOM - 1, X0 // 2, Y0 // 2), tile_bytes(noise(6), "PNG"), "png"),
          r"tiles.*zoom 18 only, coarser than region.zoom = 19")
    # an empty folder (and one with empty zoom folders)
    fails("empty", lambda f: (f / "19" / "5").mkdir(parents=True), r"tiles: no tiles found")

    # a tile of the wrong size, after a good one: the shard stops before writing either
    def wrong_size(f: Path) -> None:
        write(f, tiles[0], tile_bytes(noise(7), "PNG"), "png")
        write(f, tiles[1], tile_bytes(noise(8, size=512), "PNG"), "png")

    fails("size", wrong_size, rf"{X0 + 1}/{Y0}\.png: image is 512x512 px, expected 256x256")
    for text, pattern in (('source = "tiles"', r"imagery\.path is required when source = 'tiles'"),
                          (imagery("t/{z}/{x}/{q}.png"), r"imagery\.path = .*takes \{z\}"),
                          (imagery("t", "cover_folder = 1"), r"imagery\.cover_folder must be bool")):
        cfg = write_town_config(tmp_path / "bad.toml", tmp_path / "x.osm.pbf", tmp_path, extra="[imagery]\n" + text)
        with pytest.raises(ConfigError, match=pattern):
            load_config(cfg)
