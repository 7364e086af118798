"""pipeline.model.split / pipeline.model.dataset / pipeline.model.metrics: pairs, blocked and area splits, stats,
the torch Dataset with joint augmentations, the sampler and the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config.train import SplitSpec, TrainSpec, parse_split, parse_train
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.model.dataset import EpochSampler, TileDataset, build_augment, sample_weights
from pipeline.model.metrics import confusion, scores
from pipeline.model.split import block_of, make_split, read_split_csv, split_by_blocks, write_split_csv
from tests.train_fixtures import X0, Y0, Z, write_region


def test_blocks_never_straddle_and_fractions_hold():
    tiles = [(Z, X0 + i, Y0 + j) for i in range(16) for j in range(16)]
    names = split_by_blocks(tiles, Z - 2, 0.2, 0.2, seed=3)
    by_block: dict[tuple[int, int], set[str]] = {}
    for (z, x, y), s in zip(tiles, names, strict=True):
        by_block.setdefault(block_of(z, x, y, Z - 2), set()).add(s)
    assert all(len(s) == 1 for s in by_block.values())
    share = {s: names.count(s) / len(names) for s in ("train", "val", "test")}
    assert abs(share["val"] - 0.2) <= 0.07 and abs(share["test"] - 0.2) <= 0.07
    assert names == split_by_blocks(tiles, Z - 2, 0.2, 0.2, seed=3)
    assert names != split_by_blocks(tiles, Z - 2, 0.2, 0.2, seed=4)


def test_make_split_counts_stats_and_csv(tmp_path):
    write_region(tmp_path, n=4, nodata=(1, 1))
    rows, stats = make_split(tmp_path, SplitSpec(block_zoom=17, val_fraction=0.25, test_fraction=0.25), Z)
    assert stats["counts"]["no_imagery"] == 1 and len(rows) == 15
    assert sum(stats["tiles"].values()) == 15 and min(stats["tiles"].values()) >= 1
    assert stats["bands"] == 3 and stats["tile_size"] == 64
    # band mean/std over the training images, in pixel / 255 units
    ds = TileDataset(tmp_path, [r for r in rows if r.split == "train"], {"mean": [0] * 3, "std": [1] * 3})
    pix = np.concatenate([ds.load(i)[0].reshape(-1, 3) for i in range(len(ds))]) / 255.0
    np.testing.assert_allclose(stats["band_stats"]["mean"], pix.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["band_stats"]["std"], pix.std(0), atol=1e-5)
    assert "255" not in stats["class_pixels"] and abs(sum(stats["class_shares"].values()) - 1) < 1e-4
    write_split_csv(tmp_path / "split.csv", rows)
    assert read_split_csv(tmp_path / "split.csv") == rows
    json.dumps(stats)


def test_area_split(tmp_path):
    import mercantile

    write_region(tmp_path, n=4)
    w, s, e, n = mercantile.bounds(X0, Y0, Z)  # the first tile only, shrunk inside it
    box = [w + (e - w) * 0.3, s + (n - s) * 0.3, e - (e - w) * 0.3, n - (n - s) * 0.3]
    spec = parse_split(tmp_path / "c.toml", {"test_areas": [box], "val_fraction": 0.25, "block_zoom": 17})
    rows, _ = make_split(tmp_path, spec, Z)
    assert [(r.x, r.y) for r in rows if r.split == "test"] == [(X0, Y0)]
    assert any(r.split == "val" for r in rows)
    gj = tmp_path / "areas.geojson"
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                  "geometry": {"type": "Polygon", "coordinates": [[[box[0], box[1]], [box[2], box[1]],
                                                                    [box[2], box[3]], [box[0], box[1]]]]}}]}))
    rows2, _ = make_split(tmp_path, parse_split(tmp_path / "c.toml", {"test_areas": str(gj)}), Z)
    assert [(r.x, r.y) for r in rows2 if r.split == "test"] == [(X0, Y0)]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"split\.test_areas"):
        parse_split(tmp_path / "c.toml", {"test_areas": [[1, 2, 0, 3]]})
    with pytest.raises(ConfigError, match="unknown loss 'bce'"):
        parse_train(tmp_path / "c.toml", {"losses": {"bce": 1.0}})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse_train(tmp_path / "c.toml", {"epoch": 3})
    with pytest.raises(ConfigError, match="multiple of 32"):
        parse_train(tmp_path / "c.toml", {"crop": 100})
    assert parse_train(tmp_path / "c.toml", {"losses": {"dice": 1, "ce": 0.5}}).losses == (("ce", 0.5), ("dice", 1.0))
    opts = {"decoder_channels": [128, 64, 32, 16, 8], "decoder_attention_type": "scse"}
    assert parse_train(tmp_path / "c.toml", {"arch_options": opts}).arch_options == (
        ("decoder_attention_type", "scse"), ("decoder_channels", (128, 64, 32, 16, 8)))
    with pytest.raises(ConfigError, match=r"train\.arch_options\.in_channels.*from the config"):
        parse_train(tmp_path / "c.toml", {"arch_options": {"in_channels": 4}})
    with pytest.raises(ConfigError, match=r"arch_options\.x: give a plain value"):
        parse_train(tmp_path / "c.toml", {"arch_options": {"x": {"y": 1}}})


def test_no_pairs_is_a_clear_error(tmp_path):
    write_region(tmp_path, n=1, nodata=(0, 0))
    with pytest.raises(InputDataError, match="no tile has both imagery and a mask") as err:
        make_split(tmp_path, SplitSpec(), Z)
    msg = str(err.value)
    assert "none of the 1 tile(s) with a mask has imagery (1 nodata, 0 missing on the server)" in msg
    assert "[imagery]" in msg and "run ImageryAll and MasksAll" not in msg


def test_no_pairs_when_the_server_lacks_every_tile_names_the_refetch_switch(tmp_path):
    write_region(tmp_path, n=1, nodata=(0, 0))
    manifest = next((tmp_path / "images" / "_shards").glob("*.json"))
    m = json.loads(manifest.read_text())
    m["status"] = {k: "missing-on-server" for k in m["status"]}
    manifest.write_text(json.dumps(m))
    with pytest.raises(InputDataError) as err:
        make_split(tmp_path, SplitSpec(), Z)
    msg = str(err.value)
    assert "(0 nodata, 1 missing on the server)" in msg and "--download-refetch-missing" in msg


def _no_tiles(data_dir, features, wrong_geometry):
    """A region whose cover made no tile (empty indexes) after an extract of ``features``."""
    from pipeline.core.manifests import write_manifest
    from pipeline.tiles.index import write_tile_index

    for product in ("images", "masks"):
        (data_dir / product).mkdir(parents=True)
        write_tile_index(data_dir / product, {})
    write_manifest(data_dir / "_manifests" / "extract.json", "test", {
        "features": features, "classes": {"building": features},
        "stats": {"wrong_geometry": wrong_geometry, "files": {"labels.geojson": 2}}})


@pytest.mark.parametrize("features,wrong,expect", [
    (0, 2, r"no labelled feature: 2 feature\(s\) have a geometry their class cannot burn \(Points or lines for "
           r"an area class; see .*extract\.json\) — give polygons for area classes"),
    (0, 0, r"no labelled feature: the labels hold no feature of any class.*extract\.json.*tags"),
    (3, 0, r"the region has no tiles.*region\.bbox"),
])
def test_no_pairs_without_tiles_says_what_is_wrong(tmp_path, features, wrong, expect):
    """Empty labels, or Points for an area class: the message names the cause, not 'run
    ImageryAll and MasksAll' (which changes nothing)."""
    _no_tiles(tmp_path, features, wrong)
    with pytest.raises(InputDataError, match=expect) as err:
        make_split(tmp_path, SplitSpec(), Z)
    assert "run ImageryAll and MasksAll" not in str(err.value)


def test_dataset_sample_and_joint_augmentation(tmp_path):
    write_region(tmp_path, n=2, seed=1)
    rows, stats = make_split(tmp_path, SplitSpec(val_fraction=0.0, test_fraction=0.0), Z)
    aug = build_augment(TrainSpec(scale_jitter=0.2, color_jitter=0.0), 3)
    ds = TileDataset(tmp_path, rows, stats["band_stats"], scale=1.0, augment=aug)
    plain = TileDataset(tmp_path, rows, stats["band_stats"], scale=0.5)
    s = plain[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 32, 32)
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (32, 32)
    assert s["tile"] == (rows[0].z, rows[0].x, rows[0].y)
    cropped = TileDataset(tmp_path, rows, stats["band_stats"], augment=build_augment(TrainSpec(crop=32), 3))
    c = cropped[(0, 1)]
    assert c["image"].shape == (3, 32, 32) and c["mask"].shape == (32, 32)
    for i in range(len(ds)):
        for seed in range(6):
            a = ds[(i, seed)]
            assert torch.equal(a["image"], ds[(i, seed)]["image"])  # seeded: replayable
            # roofs are red: labelled pixels must stay red after the joint transform (edges aside)
            red = (a["image"][0] > a["image"][1] + 2.0)
            m = a["mask"]
            inner = torch.nn.functional.max_pool2d((m != 1).float()[None, None], 3, 1, 1)[0, 0] == 0
            if inner.any():
                assert red[inner].float().mean() > 0.95
            assert set(m.unique().tolist()) <= {0, 1, 255}


def test_sampler_is_seeded_and_distributed():
    a = list(EpochSampler(10, seed=1, rank=0, world_size=2))
    b = list(EpochSampler(10, seed=1, rank=1, world_size=2))
    assert sorted(i for i, _ in a + b) == list(range(10))
    s = EpochSampler(10, seed=1)
    s.set_epoch(1)
    assert list(s) != list(EpochSampler(10, seed=1)) and list(s) == list(s)
    rows = [type("R", (), {"labelled": int(k % 2)})() for k in range(1000)]
    w = EpochSampler(1000, 0, weights=sample_weights(rows, 0.1))  # type: ignore[arg-type]
    drawn = [rows[i].labelled for i, _ in w]
    assert 0.85 < sum(drawn) / len(drawn) < 0.95


def test_metrics_with_ignore():
    target = torch.tensor([0, 0, 1, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 1, 2])
    cm = confusion(pred, target, 3)
    assert cm.sum() == 6 and cm[1, 1] == 2
    s = scores(cm, ["bg", "building", "road"])
    assert s["iou"]["building"] == pytest.approx(2 / 4)
    assert s["precision"]["building"] == pytest.approx(2 / 3) and s["recall"]["building"] == pytest.approx(2 / 3)
    assert s["f1"]["road"] == 1.0 and s["miou"] == pytest.approx((0.5 + 1) / 2)
    with pytest.raises(ValueError, match="mask value 7"):
        confusion(pred, torch.tensor([7] * 8), 3)
