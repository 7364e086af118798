"""Typed stages: digests over the parsed config (defaults included), not the raw TOML."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import pipeline.config.predict
import pipeline.config.region
from pipeline.config.region import load_config
from pipeline.core.stages import (
    STAGES,
    Stage,
    config_value,
    normalise,
    register,
    stage_digest,
    task_stages,
)
from tests.test_config import BASE


@pytest.fixture
def toy_stage(monkeypatch: pytest.MonkeyPatch) -> Stage:
    """A stage reading the ``[predict]`` section (a typed attribute of RegionConfig) for these tests."""
    stage = Stage("toy", sections=("predict", "classes"), upstream=("masks",))
    monkeypatch.setitem(STAGES, "toy", stage)
    return stage


def _cfg(tmp_path: Path, text: str, name: str = "r.toml") -> Any:
    p = tmp_path / name
    p.write_text(text)
    return load_config(p)


def test_changed_default_reruns_written_default_does_not(tmp_path: Path, toy_stage: Stage,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bare = _cfg(tmp_path, BASE, "bare.toml")
    explicit = _cfg(tmp_path, BASE + '\n[predict]\ncontext_px = 64\ntta = "none"\n', "explicit.toml")
    other = _cfg(tmp_path, BASE + "\n[predict]\ncontext_px = 32\n", "other.toml")
    assert stage_digest(bare, "toy") == stage_digest(explicit, "toy")  # a default written out: same
    assert stage_digest(bare, "toy") != stage_digest(other, "toy")
    before = stage_digest(bare, "toy")
    fields = [(f.name, f.type, dataclasses.field(default=16 if f.name == "context_px" else f.default,
                                                 metadata=f.metadata))
              for f in dataclasses.fields(pipeline.config.predict.PredictSpec)]
    monkeypatch.setattr(pipeline.config.predict, "PredictSpec", dataclasses.make_dataclass(
        "PredictSpec", fields, frozen=True))  # a default changed in code
    bare, explicit = _cfg(tmp_path, BASE, "bare.toml"), _cfg(tmp_path, explicit.path.read_text(), "explicit.toml")
    assert bare.predict.context_px == 16 and stage_digest(bare, "toy") != before
    assert stage_digest(explicit, "toy") == before  # the TOML that says context_px = 64 still means 64
    assert stage_digest(bare, "masks") == stage_digest(explicit, "masks")  # upstream untouched


def test_changed_default_of_a_builtin_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "\n[imagery]\nsource = \"raster\"\npaths = [\"o.tif\"]\n\n[synthetic]\nsize_m = 300\n"
    cfg = _cfg(tmp_path, text)
    written = _cfg(tmp_path, text.replace("size_m = 300", "size_m = 300\nseed = 42"), "w.toml")
    assert stage_digest(cfg, "synthetic") == stage_digest(written, "synthetic")
    before = stage_digest(cfg, "synthetic")
    fields = [(f.name, f.type, dataclasses.field(default=43 if f.name == "seed" else f.default))
              for f in dataclasses.fields(pipeline.config.region.SyntheticConfig)]
    monkeypatch.setattr(pipeline.config.region, "SyntheticConfig", dataclasses.make_dataclass(
        "SyntheticConfig", fields, frozen=True))
    changed = _cfg(tmp_path, text, "c.toml")
    assert changed.synthetic.seed == 43
    assert stage_digest(changed, "synthetic") != before
    assert stage_digest(changed, "masks") != stage_digest(cfg, "masks")  # downstream follows


def test_written_default_of_masks_changes_nothing(tmp_path: Path) -> None:
    a = _cfg(tmp_path, BASE, "a.toml")
    b = _cfg(tmp_path, BASE + "\n[masks]\nignore_ring_px = 0\n", "b.toml")
    c = _cfg(tmp_path, BASE.replace('buffer_m = 3\n', 'buffer_m = 3.0\n'), "c.toml")  # 3 and 3.0 are one value
    assert stage_digest(a, "masks") == stage_digest(b, "masks") == stage_digest(c, "masks")


def test_operational_settings_are_not_in_digests(tmp_path: Path, toy_stage: Stage) -> None:
    img = '\n[imagery]\nsource = "xyz"\nurl = "https://t.example/{z}/{x}/{y}.png"\n'
    # download settings are not in [imagery] (configs/luigi.toml [download] has them)
    with pytest.raises(pipeline.config.region.ConfigError, match=r"imagery\.retries: .*configs/luigi\.toml"):
        _cfg(tmp_path, BASE + img + "retries = 9\n", "b.toml")
    a = _cfg(tmp_path, BASE + img, "a.toml")
    assert stage_digest(a, "imagery") != stage_digest(_cfg(tmp_path, BASE + img + "png_level = 6\n", "p.toml"),
                                                      "imagery")
    c = _cfg(tmp_path, BASE.replace('path = "x.osm.pbf"', 'path = "x.osm.pbf"\nurl = "https://e.example/x.pbf"'),
             "c.toml")
    assert stage_digest(_cfg(tmp_path, BASE, "d.toml"), "extract") == stage_digest(c, "extract")
    t1 = _cfg(tmp_path, BASE + "\n[predict]\nbatch_size = 64\n", "t1.toml")
    assert stage_digest(_cfg(tmp_path, BASE, "t0.toml"), "toy") == stage_digest(t1, "toy")  # metadata flag


def test_version_inputs_and_upstream_enter_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, BASE)
    before = {s: stage_digest(cfg, s) for s in ("extract", "cover", "masks")}
    monkeypatch.setitem(STAGES, "cover", dataclasses.replace(STAGES["cover"], version=2))
    assert stage_digest(cfg, "extract") == before["extract"]
    assert stage_digest(cfg, "cover") != before["cover"] and stage_digest(cfg, "masks") != before["masks"]
    monkeypatch.undo()
    (tmp_path / "x.osm.pbf").write_bytes(b"pbf")  # the extract's input file appears
    monkeypatch.chdir(tmp_path)
    assert stage_digest(cfg, "extract") != before["extract"]


def test_register_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, BASE)
    monkeypatch.setitem(STAGES, "later", STAGES["masks"])
    register(Stage("later", ("region.tile_size", "classes"), ("masks",)))
    assert STAGES["later"].version == 1 and len(stage_digest(cfg, "later")) == 16
    with pytest.raises(KeyError, match="register"):
        stage_digest(cfg, "nope")


def test_config_values_are_typed(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, BASE)
    assert config_value(cfg, "region.zoom") == 18
    assert config_value(cfg, "imagery") is None and config_value(cfg, "imagery.paths") is None
    classes = normalise(config_value(cfg, "classes"))
    assert classes[1]["buffer_m_by_value"] == [["motorway", 10.0]] and classes[0]["priority"] == 1
    with pytest.raises(KeyError, match="no such config part"):
        config_value(cfg, "nothing")


def test_vectorize_follows_only_its_source(tmp_path: Path) -> None:
    """Vectorised masks do not depend on the model; vectorised predictions do."""
    def digests(source: str, epochs: int) -> tuple[str, str]:
        cfg = _cfg(tmp_path, BASE + f'\n[vectorize]\nsource = "{source}"\n[train]\nepochs = {epochs}\n')
        return stage_digest(cfg, "vectorize"), stage_digest(cfg, "compare")

    assert digests("masks", 3) == digests("masks", 4)
    assert digests("predictions", 3)[0] != digests("predictions", 4)[0]
    assert digests("predictions", 3)[1] != digests("predictions", 4)[1]
    assert digests("masks", 3)[0] != digests("predictions", 3)[0]


def _luigi_edges(task: Any, edges: dict[str, set[str]], seen: set[str],
                 foreign: dict[str, set[str]] | None = None) -> None:
    """Stage -> stages its Luigi task requires (tasks of one stage, e.g. shards, folded together;
    tasks of no stage, such as the OSM download, left out); a task of another region config (a
    model or tiles another region makes) goes into ``foreign`` as stage -> configs, not followed."""
    import luigi

    from tasks.base import RegionTask

    if task.task_id in seen:
        return
    seen.add(task.task_id)
    for dep in luigi.task.flatten(task.requires()):
        if isinstance(task, RegionTask) and isinstance(dep, RegionTask) and dep.config != task.config:
            if foreign is not None:
                foreign.setdefault(task.stage, set()).add(dep.config)
            continue
        if isinstance(task, RegionTask) and isinstance(dep, RegionTask) and dep.stage and dep.stage != task.stage:
            edges.setdefault(task.stage, set()).add(dep.stage)
        _luigi_edges(dep, edges, seen, foreign)


@pytest.mark.parametrize("config", sorted(p.name for p in (Path(__file__).parent.parent / "configs").glob("*.toml")
                                          if p.name != "luigi.toml"))
def test_luigi_graph_and_digest_graph_agree(config: str) -> None:
    """What a stage's task requires is what its digest chains to, for every shipped config (a
    stage that does not apply, such as the sample region of a real one, has the digest "none")."""
    from pipeline.core.stages import get_stage
    from tasks.pipeline import RegionPipeline

    path = Path(__file__).parent.parent / "configs" / config
    cfg = load_config(path)
    edges: dict[str, set[str]] = {}
    foreign: dict[str, set[str]] = {}
    _luigi_edges(RegionPipeline(config=str(path)), edges, set(), foreign)
    assert ("masks" in edges) == cfg.labelled and ("compare" in edges) == (cfg.imagery is not None), sorted(edges)
    for stage, required in edges.items():
        chained = {s for s in get_stage(stage).upstream_of(cfg) if stage_digest(cfg, s) != "none"}
        assert required == chained, (config, stage, sorted(required), sorted(chained))
    # another region's task (its tiles, its model) is what the stage's digest names as foreign
    for stage in set(edges) | set(foreign):
        named = {str(path) for _, path in get_stage(stage).foreign_of(cfg)}
        assert foreign.get(stage, set()) == named, (config, stage, foreign.get(stage))


def _task_classes(base: type) -> set[type]:
    """``base`` and every subclass of it, once every stage module is imported."""
    import tasks.__main__

    tasks.__main__.register_tasks()
    found: set[type] = set()
    todo = [base]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_run_says_how_it_is_locked() -> None:
    """Every task's ``run`` is decorated: ``locked`` (under its lock) or ``dynamic`` (it yields its
    shard tasks); every shard task's is ``locked``, under its shard's lock
    (``<product>/_tmp/<shard>.lock``, the one the ShardWriter of a lone shard takes too)."""
    import luigi

    from tasks.base import RegionTask, ShardTask

    shard_tasks = _task_classes(ShardTask)
    assert len(shard_tasks) >= 5
    for cls in _task_classes(RegionTask):
        if cls.run is luigi.Task.run:  # a base class (RegionTask, ShardTask, _Always)
            continue
        kind = getattr(cls.run, "locking", None)
        assert kind in ("locked", "dynamic"), f"{cls.__name__}.run is neither @locked nor @dynamic"
        if cls in shard_tasks:
            assert kind == "locked", f"{cls.__name__} runs its shards unlocked"
            task = cls(config="configs/demo.toml", shard="0")
            assert task.lock_path() == task.product_dir() / "_tmp" / "0.lock"


def test_stage_table_names_each_task_once() -> None:
    """Every stage names a task class whose ``stage`` is that stage (its shard task too), and every
    region task of a stage is named by the table or is a helper of a named one (``ImageryPlan``)."""
    from tasks.base import RegionTask, task_class

    named: set[type] = set()
    for stage in STAGES.values():
        for name in (stage.task, stage.shard_task):
            if name:
                cls = task_class(name)
                assert cls.stage == stage.name, (stage.name, name)
                named.add(cls)
        assert stage.task, f"stage {stage.name} names no task"
    helpers = {c.__name__ for c in _task_classes(RegionTask) - named if getattr(c, "stage", "")}
    assert helpers == {"ImageryPlan"}, helpers


def _vector_region(tmp_path: Path) -> tuple[Any, Path]:
    """A region with one real input file (its OSM extract) and a data_dir under ``tmp_path``."""
    pbf = tmp_path / "x.osm.pbf"
    pbf.write_bytes(bytes(range(256)) * 40)
    text = BASE.replace('path = "x.osm.pbf"', f'path = "{pbf}"').replace(
        "shard_zoom = 14", f'shard_zoom = 14\ndata_dir = "{tmp_path / "d"}"')
    return _cfg(tmp_path, text), pbf


def _digests(cfg: Any) -> dict[str, str]:
    return {s: stage_digest(cfg, s) for s in ("extract", "cover", "masks", "compare")}


def test_a_touched_or_copied_input_keeps_its_digests(tmp_path: Path) -> None:
    cfg, pbf = _vector_region(tmp_path)
    first = _digests(cfg)
    st = pbf.stat()
    os.utime(pbf, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # `touch`: new time, same bytes
    assert _digests(cfg) == first
    shutil.copy(pbf, tmp_path / "copy")  # a copy put in its place (another inode, another time)
    os.replace(tmp_path / "copy", pbf)
    os.utime(pbf, ns=(st.st_atime_ns, st.st_mtime_ns - 7_000_000_000))
    assert _digests(cfg) == first
    data = bytearray(pbf.read_bytes())
    data[100] ^= 0xFF  # the same size, other bytes: a changed input
    pbf.write_bytes(bytes(data))
    changed = _digests(cfg)
    assert all(changed[s] != first[s] for s in first)  # extract and everything after it
    assert _digests(cfg) == changed  # and stable from then on


def test_fingerprint_cache_lost_or_damaged(tmp_path: Path) -> None:
    from pipeline.core import fingerprints
    from pipeline.core.fingerprints import CACHE_NAME

    cfg, pbf = _vector_region(tmp_path)
    first = _digests(cfg)
    cache = cfg.data_dir / CACHE_NAME
    assert json.loads(cache.read_text())[str(pbf)]["sha256"] == hashlib.sha256(pbf.read_bytes()).hexdigest()
    cache.write_text("{not json")  # damaged: rebuilt; an untouched input keeps its fingerprint
    fingerprints._MEMO.clear()  # as in a new process
    assert _digests(cfg) == first
    assert str(pbf) in json.loads(cache.read_text())


def test_task_stages_are_the_task_and_what_it_reads(tmp_path: Path) -> None:
    """What a command goes through (``[train] init`` / ``[predict] model`` are checked only where
    it trains or predicts): a stage task and everything upstream, per config; None for others."""
    own = _cfg(tmp_path, BASE)
    assert task_stages("CoverTiles", own) == {"synthetic", "extract", "cover"}
    assert {"train", "predict"} <= task_stages("Vectorize", own) == task_stages("MergeFeatures", own)
    assert "train" not in task_stages("SplitDataset", own)
    assert task_stages("RegionPipeline", own) is None and task_stages("Verify", own) is None
    ckpt = tmp_path / "other.pt"
    other = _cfg(tmp_path, BASE + f'\n[predict]\nmodel = "{ckpt}"\n', "o.toml")
    assert "predict" in task_stages("Predict", other) and "train" not in task_stages("Predict", other)
