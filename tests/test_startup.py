"""The command's start-up floor: ``python -m tasks <Task>`` imports only the module of its task (and,
through ``requires()``, those upstream), and a completeness check reads JSON manifests, never
pandas, numpy or a geometry library. Structural checks (what is imported), not timings: the
timings are ``python -m bench.bench_startup``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import luigi

import tasks.__main__ as cli
from tasks.masks import MasksAll
from tests.conftest import ROOT
from tests.town import write_town_config

#: what no completeness check may import (each costs 0.1-2 s of CPU at start-up)
HEAVY = ("pandas", "numpy", "shapely", "pyarrow", "scipy", "geopandas", "rasterio", "torch", "PIL", "osmium")


def _imported(code: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter; the heavy and the ``tasks.*`` modules it imported."""
    probe = (f"import json, sys\n{code}\n"
             f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],"
             "'tasks': sorted(m for m in sys.modules if m.startswith('tasks.'))}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_task_table_is_luigis_register() -> None:
    """``TASK_MODULES`` names every task (and config section) of ``tasks/`` with its module: what
    the command imports for a task name, and what "did you mean" offers."""
    from luigi.task_register import Register

    cli.register_tasks()
    ours = {}
    for name in Register.task_names():
        cls = Register.get_task_cls(name)
        if cls.__module__.startswith("tasks."):
            ours[name] = cls.__module__
    assert ours == {name: f"tasks.{module}" for name, module in cli.TASK_MODULES.items()}
    assert set(cli.ALWAYS_MODULES) | set(cli.TASK_MODULES.values()) <= {*cli.STAGE_MODULES, "base", "settings"}


def test_a_task_imports_its_own_module_and_upstream_only(tmp_path: Path, town_pbf: Path) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data")
    got = _imported(f"import tasks.__main__ as m\nm.import_for(['SplitDataset', '--config', {str(cfg)!r}])\n"
                    f"from tasks.split import SplitDataset\nassert not SplitDataset(config={str(cfg)!r}).complete()")
    assert got["heavy"] == []
    assert "tasks.split" in got["tasks"] and "tasks.masks" in got["tasks"]  # upstream, through requires()
    assert not {"tasks.train", "tasks.predict", "tasks.vectorize", "tasks.compare", "tasks.report"} & set(got["tasks"])
    # an option setting a parameter of a luigi.Config section or a task brings the module that defines it
    got = _imported("import tasks.__main__ as m\nm.import_for(['CoverTiles', '--train-run-gpus', '2'])")
    assert "tasks.train" in got["tasks"] and "tasks.predict" not in got["tasks"]
    got = _imported("import tasks.__main__ as m\nm.import_for(['CoverTiles', '--Predict-device=cpu'])")
    assert "tasks.predict" in got["tasks"]


def test_a_finished_product_is_checked_from_its_json_manifests(town_config: Path, tmp_path: Path) -> None:
    res = luigi.build([MasksAll(config=str(town_config))], local_scheduler=True, detailed_summary=True,
                      log_level="WARNING")
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
    masks = tmp_path / "data" / "masks"
    manifest = json.loads((masks / "_manifest.json").read_text())
    assert manifest["index_shards"] == sorted(p.stem for p in (masks / "_shards").glob("*.json"))
    check = (f"from tasks.masks import MasksAll\nprint(MasksAll(config={str(town_config)!r}).complete())")
    assert _imported(check)["heavy"] == []
    assert MasksAll(config=str(town_config)).complete()
    # a manifest written before index_shards existed: checked from index.parquet (pandas)
    (masks / "_manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "index_shards"}))
    assert MasksAll(config=str(town_config)).complete()
    (masks / "_manifest.json").write_text(json.dumps(manifest))
    # a tile that lost its bytes, or a shard manifest gone: not complete
    tile = next(masks.rglob("*.png"))
    data = tile.read_bytes()
    tile.write_bytes(data[:10])
    assert not MasksAll(config=str(town_config)).complete()
    tile.write_bytes(data)
    assert MasksAll(config=str(town_config)).complete()
    shard = masks / "_shards" / f"{manifest['index_shards'][0]}.json"
    shard.rename(tmp_path / "gone.json")
    assert not MasksAll(config=str(town_config)).complete()


def test_config_digests_and_tile_maths_import_no_numpy() -> None:
    """Loading a config (every section parsed, ``config.SECTIONS``), the stages' digests and tile
    arithmetic (:class:`pipeline.tiles.tilemath.Tile`, bounds, quadkeys) run in every completeness check."""
    from pipeline.tiles import geo
    from pipeline.tiles import tilemath as tiles

    assert tiles.HALF_WORLD_M == geo.HALF_WORLD_M
    upto_train = ("synthetic", "extract", "cover", "masks", "imagery", "split", "train")
    got = _imported("from pipeline.config.region import load_config\nfrom pipeline.core.stages import stage_digest\n"
                    "from pipeline.tiles.tilemath import Tile, quadkey, tile_bounds\n"
                    f"cfg = load_config('configs/demo.toml')\n[stage_digest(cfg, s) for s in {upto_train!r}]\n"
                    "tile_bounds(Tile(19, 1, 2)), quadkey(Tile(19, 1, 2))")
    assert got["heavy"] == []
    got = _imported("from pipeline.config.region import load_config\n"
                    "from pipeline.core.stages import STAGES, stage_digest\n"
                    "cfg = load_config('configs/demo.toml')\n[stage_digest(cfg, s) for s in STAGES]")
    assert got["heavy"] == []


def test_the_vectorise_path_imports_no_pandas() -> None:
    """A ``Vectorize`` shard (trace, merge, finish, write the shard's files) needs neither pandas
    nor geopandas/pyproj (0.25 s of CPU at every shard's start-up): its tables are numpy columns."""
    got = _imported("from pipeline.vectors.finish import finish_shard_table, finish_table, sort_tables\n"
                    "from pipeline.vectors.vector_io import write_finished, write_pieces, read_pieces\n"
                    "from pipeline.vectors.vectorize import cached_loader, read_tile, shard_pieces, region_pieces\n"
                    "import tasks.vectorize")
    assert not {"pandas", "geopandas"} & set(got["heavy"])


def test_writing_and_merging_shard_files_imports_no_pandas(tmp_path: Path) -> None:
    """At run time too: a shard's two files written (pyarrow arrays from buffers), read back and
    merged, predictions.geojson and predictions.gpkg written (sqlite3): no pandas, geopandas, pyproj."""
    code = ("import numpy as np, shapely\nfrom pathlib import Path\n"
            "from pipeline.config.region import load_config\n"
            "from pipeline.vectors.merge import empty_pieces\n"
            "from pipeline.vectors.region import merge_shard_files, write_predictions\n"
            "from pipeline.vectors.table import Table\n"
            "from pipeline.vectors.vector_io import shard_files, write_finished, write_pieces\n"
            "cfg = load_config('configs/demo.toml')\n"
            f"d = Path({str(tmp_path)!r})\n"
            "t = Table({'class': np.array(['building'], dtype=object), 'class_id': np.array([1]),"
            " 'kind': np.array(['area'], dtype=object), 'prob_mean': np.array([0.9]), 'prob_max': np.array([1.0]),"
            " 'area_m2': np.array([12.5]), 'length_m': np.array([np.nan]),"
            " 'geometry': np.array([shapely.box(30.0, 0.1, 30.001, 0.101)], dtype=object)})\n"
            "f, r = shard_files(d, '0')\nwrite_finished(t, f)\nwrite_pieces(empty_pieces(), r)\n"
            "feats = merge_shard_files([(f, r)], cfg.classes, cfg.vectorize, cfg.zoom, cfg.tile_size)\n"
            "write_predictions(feats, cfg.classes, d / 'p.geojson', d / 'p.gpkg')\n"
            "assert len(feats) == 1 and (d / 'p.gpkg').stat().st_size > 0\n"
            "assert 'pyproj' not in sys.modules and 'pyogrio' not in sys.modules")
    assert not {"pandas", "geopandas"} & set(_imported(code)["heavy"])


def test_rating_predictions_reads_the_osm_features_without_pandas(tmp_path: Path) -> None:
    """MergeFeatures' confidence fit reads the region's OSM features and split: pyarrow's
    ParquetFile and the csv module, not the dataset layer (whose import brings in pandas)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    boxes = [shapely.box(30.0 + k * 1e-4, 0.1, 30.00005 + k * 1e-4, 0.10005) for k in range(3)]
    pq.write_table(pa.table({"class": ["building", "road", "building"],
                             "geometry": [shapely.to_wkb(b) for b in boxes]}), tmp_path / "features.parquet")
    (tmp_path / "split.csv").write_text("z,x,y,split,image,mask,labelled\n19,1,2,train,a.png,b.png,1\n")
    code = ("from pipeline.vectors.vector_io import read_class_geoms\n"
            "from pipeline.model.split import read_split_csv\n"
            f"g = read_class_geoms({str(tmp_path / 'features.parquet')!r}, ['building'])\n"
            f"rows = read_split_csv({str(tmp_path / 'split.csv')!r})\n"
            "assert len(g['building']) == 2 and len(rows) == 1")
    assert not {"pandas", "geopandas"} & set(_imported(code)["heavy"])
