"""The stages of the pipeline and their chained config digests.

A :class:`Stage` names the config it reads (``sections``), the stages whose outputs it reads
(``upstream``), the external files it reads (``inputs``) and a ``version`` (bump it when the
stage's output format changes). Its digest hashes:

* its config, *typed and normalised*: the parsed dataclass values with their defaults
  (``dataclasses.asdict``), never the raw TOML, so writing a default out changes nothing while
  changing a default in code reruns the stage; operational fields (connections, retries, ...)
  are left out (field metadata ``{"operational": True}`` or :data:`OPERATIONAL_FIELDS`);
* the fingerprints of its input files (size and mtime, kept while the bytes stay the same:
  :mod:`pipeline.core.fingerprints`), so a copy or ``touch`` of an input reruns nothing;
* the digests of its upstream stages; and its ``version``.

So changing one stage's config reruns that stage and what follows it, and nothing upstream.

This module's table (the ``register`` lines at its end) is the one stage graph: Luigi's
``requires()`` of every stage task is derived from it (``tasks/base.py``), and so are the
command's task table and usage (``tasks/__main__.py``). Adding a stage is one line here::

    register(Stage("train", sections=("train", "classes"), upstream=("split",), task="train.TrainModel"))

where ``"train"`` is a section of ``pipeline.config.region.SECTIONS`` (the attribute ``cfg.train``), and
``train.TrainModel`` the task class in ``tasks/train.py`` (``stage = "train"``, a ``run``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.region import RegionConfig, load_config

#: dataclass fields that are operational (how, not what): never part of a digest (download
#: settings are not in the region config at all: configs/luigi.toml [download])
OPERATIONAL_FIELDS: frozenset[str] = frozenset({"OsmSource.url"})

#: ``region.<key>`` config parts and the RegionConfig attribute each is
_REGION_KEYS = ("name", "zoom", "tile_size", "shard_zoom", "bbox", "data_dir")


@dataclass(frozen=True)
class Stage:
    """A stage: its config ``sections`` (``"classes"``, ``"imagery"``, a dotted part such as
    ``"region.zoom"``, or a section of ``config.SECTIONS``), the ``upstream`` stages it reads
    from, a function giving its external ``inputs`` for a config, and its output ``version``."""

    name: str
    sections: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    inputs: Callable[[RegionConfig], Sequence[Path]] | None = None
    version: int = 1
    #: the upstream stages for a config, when they depend on it (``upstream`` lists every candidate)
    upstream_for: Callable[[RegionConfig], tuple[str, ...]] | None = None
    #: its inputs are what the synthetic stage generates in a sample region (then that stage's digest
    #: covers them); False for an input no sample makes (the model a region is predicted with)
    sample_inputs: bool = True
    #: config parts that enter the digest only when set (not None or empty): keys added later
    #: leave the digests of configs that do not use them unchanged
    optional: tuple[str, ...] = ()
    #: config parts that enter the digest only under a condition on the config: a function giving
    #: ``{part: typed value}`` (empty where the condition does not hold)
    conditional: Callable[[RegionConfig], Mapping[str, Any]] | None = None
    #: other regions' stages this one reads, as ``(stage, config path)`` pairs: their digests enter
    #: this one's, and its task requires theirs (``[train] regions``, a model named by its region)
    foreign: Callable[[RegionConfig], Sequence[tuple[str, Path]]] | None = None
    #: whether the stage exists for a config (the sample region only with ``[synthetic]``): where it
    #: does not, its digest is "none" and no task requires it
    applies: Callable[[RegionConfig], bool] | None = None
    #: its Luigi task for a region, ``"<module>.<Class>"`` under ``tasks/`` (``"masks.MasksAll"``)
    task: str = ""
    #: its Luigi task per shard (``"masks.RasterizeMasks"``) when the stage works shard by shard
    shard_task: str = ""

    def upstream_of(self, cfg: RegionConfig) -> tuple[str, ...]:
        """The stages this one reads from under config ``cfg`` (a stage that does not apply to
        ``cfg`` included: its digest "none" is part of this one's)."""
        return self.upstream_for(cfg) if self.upstream_for is not None else self.upstream

    def applies_to(self, cfg: RegionConfig) -> bool:
        """Whether the stage exists for config ``cfg``."""
        return self.applies is None or self.applies(cfg)

    def foreign_of(self, cfg: RegionConfig) -> list[tuple[str, Path]]:
        """``(stage, config path)`` of the other regions' stages this one reads under ``cfg``."""
        return list(self.foreign(cfg)) if self.foreign is not None else []


#: every stage by name (:func:`register` adds one)
STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add (or replace) a stage in the registry; returns it."""
    STAGES[stage.name] = stage
    return stage


def _imagery_paths(cfg: RegionConfig) -> list[Path]:
    """The input files of the region's imagery source (its registry entry says which)."""
    from pipeline.imagery.sources import source_of

    return source_of(cfg.imagery).inputs(cfg.imagery) if cfg.imagery is not None else []


def _label_paths(cfg: RegionConfig) -> list[Path]:
    labels = cfg.labels
    if labels.source == "vector":
        from pipeline.config.labels import label_inputs

        return list(label_inputs(labels))
    return [cfg.osm.path] if cfg.osm is not None else []


def _feedback_paths(cfg: RegionConfig) -> list[Path]:
    """[labels] negatives / ignore (mapper feedback) are burnt by masks: their files are in its
    digest (a user's files even in a sample region), not in extract's (field metadata "digest")."""
    from pipeline.config.labels import feedback_inputs

    return feedback_inputs(cfg.labels)


def _model_path(cfg: RegionConfig) -> list[Path]:
    """The checkpoint's file, unless it is a region's model (then its train digest: :func:`_model_region`)."""
    from pipeline.model.regions import is_region_ref, model_path

    return [] if is_region_ref(cfg.predict.model) else [model_path(cfg)]


def _region_model(path: Path | None) -> list[tuple[str, Path]]:
    """``[("train", path)]`` when ``path`` (``[predict] model``, ``[train] init``) names a region
    config (its model: that region's train stage), else []."""
    from pipeline.model.regions import is_region_ref

    return [("train", path)] if path is not None and is_region_ref(path) else []


def _model_region(cfg: RegionConfig) -> list[tuple[str, Path]]:
    """The region whose model ``[predict] model`` names (a region predicted with a model trained
    elsewhere trains nothing itself)."""
    return _region_model(cfg.predict.model)


def _own_model(cfg: RegionConfig) -> bool:
    from pipeline.model.regions import is_own_model

    return is_own_model(cfg)


def _init_path(cfg: RegionConfig) -> list[Path]:
    """The files training starts from: ``[train] init`` (a checkpoint; a region config is chained
    by digest instead) and a local ``encoder_weights`` file (a weight name is not a file)."""
    from pipeline.model.regions import is_region_ref

    spec = cfg.train
    out = [spec.init] if spec.init is not None and not is_region_ref(spec.init) else []
    weights = spec.encoder_weights
    if weights and (Path(weights).exists() or "/" in weights or Path(weights).suffix in (".pth", ".pt", ".bin",
                                                                                          ".safetensors")):
        out.append(Path(weights))
    return out


def _train_conditional(cfg: RegionConfig) -> dict[str, Any]:
    """Train keys in the digest only where they change the model: ``[train] negatives_weight``
    weighs the pixels of ``[labels] negatives`` in the loss (without negatives it changes
    nothing); ``ema_epochs`` only when the average is on (models trained before it stay valid)."""
    out: dict[str, Any] = {"train.negatives_weight": cfg.train.negatives_weight} if cfg.labels.negatives else {}
    if cfg.train.ema_epochs > 0:
        out["train.ema_epochs"] = cfg.train.ema_epochs
    return out


def _region_splits(cfg: RegionConfig) -> list[tuple[str, Path]]:
    """The splits of the other regions ``[train] regions`` trains with, and the region whose
    model ``[train] init`` names."""
    return [*(("split", p) for p in cfg.train.regions), *_region_model(cfg.train.init)]


def _predict_inputs(cfg: RegionConfig) -> tuple[str, ...]:
    return ("imagery", "train") if _own_model(cfg) else ("imagery",)


def _evaluate_inputs(cfg: RegionConfig) -> tuple[str, ...]:
    return ("predict", "masks", "split") if _own_model(cfg) else ("predict", "masks")


def _vectorize_source(cfg: RegionConfig) -> tuple[str, ...]:
    """Masks or predictions ([vectorize] source): a retrain does not redo vectorised masks. Rating
    the predictions (:mod:`pipeline.vectors.confidence`) reads the region's OSM features and, with
    its own model, the split (it fits on the training and validation tiles)."""
    if cfg.vectorize.source == "masks":
        return ("cover", "masks")
    if not cfg.labelled:
        return ("cover", "predict")
    return ("cover", "predict", "extract", "split") if _own_model(cfg) else ("cover", "predict", "extract")


def _run_inputs(cfg: RegionConfig) -> tuple[str, ...]:
    evaluated = cfg.vectorize.source == "predictions" and cfg.labelled
    return ("compare", "evaluate") if evaluated else ("compare",)


def _has_sample(cfg: RegionConfig) -> bool:
    return cfg.synthetic is not None


# The stage table: per stage its config parts, upstream stages, inputs and Luigi task(s) (module.Class
# under tasks/). tasks/base.py derives every task's requires() from it, tasks/__main__.py the command's
# task table; tests/test_stages.py checks Luigi's graph is this one for every shipped config.
register(Stage("synthetic", ("synthetic", "osm.path", "imagery.paths"), task="synthetic.MakeSampleRegion",
               applies=_has_sample))  # the generated sample region
register(Stage("extract", ("osm", "classes", "labels"), ("synthetic",), inputs=_label_paths,
               task="extract.ExtractFeatures"))
register(Stage("cover", ("region.zoom", "region.bbox", "region.shard_zoom", "imagery.cover_folder", "imagery.path"),
               ("extract",), task="cover.CoverTiles"))
register(Stage("masks", ("region.tile_size", "masks", "classes"), ("cover",), inputs=_feedback_paths,
               sample_inputs=False, optional=("labels.negatives", "labels.ignore"),
               task="masks.MasksAll", shard_task="masks.RasterizeMasks"))
# a registered source's own keys (``imagery.options``) enter only when set: shipped configs keep their digests
register(Stage("imagery", ("region.tile_size", "imagery"), ("cover", "synthetic"), inputs=_imagery_paths,
               optional=("imagery.options",), task="imagery.ImageryAll", shard_task="imagery.FetchImagery"))
register(Stage("split", ("split",), ("masks", "imagery"), task="split.SplitDataset"))
# version 2 (train), 2 (predict), 3 (evaluate): pixels off the imagery (0 in every band) are ignored in
# training and evaluation and predicted 0 (pipeline.imagery.nodata)
register(Stage("train", ("train", "classes"), ("split",), inputs=_init_path, sample_inputs=False, version=2,
               optional=("train.regions", "labels.negatives", "train.arch_options"), conditional=_train_conditional,
               foreign=_region_splits, task="train.TrainModel"))
register(Stage("predict", ("predict", "classes", "region.tile_size", "train.cross_fit"), ("imagery", "train"),
               version=2, inputs=_model_path, sample_inputs=False, foreign=_model_region, upstream_for=_predict_inputs,
               task="predict.PredictAll", shard_task="predict.Predict"))
# version 2: metrics.json adds the train and validation splits' IoU and the epoch best.pt was chosen on
register(Stage("evaluate", ("predict.model",), ("predict", "masks", "split"), upstream_for=_evaluate_inputs,
               version=3, task="predict.EvaluateModel"))
register(Stage("export", ("predict.model",), ("evaluate",), optional=("imagery.band_names",),
               task="export.ExportModel"))
# version 2: buildings squared by pipeline.vectors.square by default ([vectorize] regularizer, in the digest when set)
# version 3: the instance split floods only components with two or more markers (issue 20): where two floods
# meet at the same edge probability, a pixel may go to the other neighbour than before (demo: 12 of 680,000)
# version 4: predicted area polygons carry a confidence learnt from the region's OSM; those below
# [vectorize] min_confidence are dropped (pipeline.vectors.confidence)
# version 5: no confidence filter where most of what it would drop on its fitting tiles is mapped; cores under
# marker_min_m2 seed only inside a closed edge band
# version 6: necks are looked for on outlines simplified by a pixel (GEOS' inward buffer of a traced staircase
# cost 2 s of the demo's 4; issue 20)
# version 7: an instance of several 4-connected parts is traced as one polygon per part (one part was taken
# for a hole of the other: an invalid polygon that failed the neck split at 25 km²); outlines that rounding
# to 7 decimals folds are made valid before snapping
# version 8: instance cores are eroded by a pixel before they seed (bridges through gaps in faint party walls cut)
# version 9: a core the erosion leaves no seed of seeds whole (the erosion only cuts)
# version 10: the cores are eroded by two pixels
# version 11: the confidence fit's gates read a repeated cross-validation (confidence.REPEATS fold assignments)
register(Stage("vectorize", ("region.tile_size", "region.zoom", "classes", "vectorize"),
               ("cover", "masks", "predict", "extract", "split"), upstream_for=_vectorize_source, version=11,
               optional=("vectorize.regularizer",),
               task="vectorize.MergeFeatures", shard_task="vectorize.Vectorize"))
# version 2: missing candidates carry context_share (OSM water) and "auto" min_score takes no dominated threshold
# version 3: the low-confidence predictions (predictions_low_confidence.geojson) count towards coverage
# version 4: an OSM feature's coverage counts its parts within explain_m of the predictions (misregistration)
# version 5: OSM features that reach into the compared tiles from outside explain the predicted area they cover
# (no candidate on a building at the imagery's edge), in the comparison and in its gap simulation
# version 6: the same for line classes (a mapped road that runs off the imagery explains the centreline along it)
# version 7: a pair is "offset" only where the OSM outline moved by the centroid offset fits the prediction
# better ([compare] offset_gain; iou_shifted in the layers)
# version 8: a not-seen feature's evidence counts whether the imagery still shows its outline (outline_edge)
# version 9: a layer whose estimated share of real candidates is 0 stays uncalibrated (raw evidence), not all 0
# version 10: a line candidate's evidence saturates at a sure centreline (candidates.LINE_SURE)
# version 11: the line simulation takes the predicted centrelines that meet the held-out tiles, clipped to them
# version 12: a missing candidate several times the largest mapped feature of its class loses its evidence
# version 13: the share of real candidates by best bin estimation with confidence bounds (calibration.real_share)
# version 14: those bounds as Garg et al. publish them (ratio + slack / labelled share)
# version 15: the estimated recall of missing areas counts a hidden feature found where candidates cover half of it
# version 16: the estimated recall of missing lines is the share of the hidden ways' length the candidates run along
register(Stage("compare", ("classes", "compare"), ("vectorize", "extract"), version=16, task="compare.CompareWithOSM"))
register(Stage("run", (), ("compare", "evaluate"), upstream_for=_run_inputs,
               task="report.RunManifest"))  # run.json (+ model/metrics.json)
register(Stage("report", (), ("run",), task="report.RegionReport"))  # report.html


def task_stages(task: str, cfg: RegionConfig) -> set[str] | None:
    """The stages a run of the Luigi task class ``task`` goes through for ``cfg``: the stage it is
    the task (or shard task) of and every stage upstream of it; None for a task that is no stage's
    (``RegionPipeline``, ``Verify``: they may reach any stage)."""
    todo = [s.name for s in STAGES.values() if task in (s.task.rsplit(".", 1)[-1], s.shard_task.rsplit(".", 1)[-1])]
    if not todo:
        return None
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += get_stage(name).upstream_of(cfg)
    return seen


def get_stage(name: str) -> Stage:
    """The registered stage ``name``; KeyError if unknown."""
    if name in STAGES:
        return STAGES[name]
    raise KeyError(f"unknown stage {name!r}; register it with pipeline.core.stages.register(Stage(...))")


def config_value(cfg: RegionConfig, key: str) -> Any:
    """The typed value of a config part: ``"region.zoom"``, ``"classes"``, ``"imagery"``,
    ``"imagery.paths"``, a section of ``config.SECTIONS`` (defaults when the TOML has none), ...
    None when an optional section (``imagery``, ``synthetic``) is absent."""
    head, *rest = key.split(".")
    if head == "region" and rest and rest[0] in _REGION_KEYS:
        node: Any = getattr(cfg, rest[0])
        rest = rest[1:]
    elif head in {f.name for f in dataclasses.fields(cfg)}:
        node = getattr(cfg, head)
    else:
        raise KeyError(f"stage config key {key!r}: no such config part; use a section name or region.<key>")
    for part in rest:
        node = getattr(node, part, None)
    return node


def normalise(value: Any) -> Any:
    """JSON-ready plain value of a typed config value: dataclasses as dicts of all their fields
    (defaults included; operational ones left out, and those whose metadata ``digest`` names the
    stage that lists them by dotted key), tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value).__name__
        return {f.name: normalise(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get("operational") and not f.metadata.get("digest")
                and f"{cls}.{f.name}" not in OPERATIONAL_FIELDS}
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def file_fingerprint(path: str | Path) -> str:
    """Cheap identity of an input file: size and modification time (ns), or 'missing'."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def stage_inputs(cfg: RegionConfig, stage: str) -> list[Path]:
    """External input files a stage reads (whose fingerprints enter its digest)."""
    s = get_stage(stage)
    return list(s.inputs(cfg)) if s.inputs is not None else []


def stage_config(cfg: RegionConfig, stage: str) -> dict[str, Any]:
    """The normalised config a stage's digest covers (``{part: plain value}``; ``optional``
    parts only when set, ``conditional`` ones where their condition holds)."""
    s = get_stage(stage)
    out = {k: normalise(config_value(cfg, k)) for k in s.sections}
    for k in s.optional:
        v = normalise(config_value(cfg, k))
        if v not in (None, [], {}, ""):
            out[k] = v
    if s.conditional is not None:
        out |= {k: normalise(v) for k, v in s.conditional(cfg).items()}
    return out


def stage_digest(cfg: RegionConfig, stage: str) -> str:
    """Chained digest (16 hex chars) of ``stage`` for config ``cfg``."""
    s = get_stage(stage)
    if not s.applies_to(cfg):
        return "none"
    inputs: dict[str, str] = {}
    if stage == "synthetic" or cfg.synthetic is None or not s.sample_inputs:
        # generated inputs are covered by the sample stage's digest; real ones by fingerprint
        from pipeline.core.fingerprints import input_fingerprints

        inputs = input_fingerprints(stage_inputs(cfg, stage), cfg.data_dir)
    blob = {"stage": s.name, "version": s.version, "config": stage_config(cfg, stage), "inputs": inputs,
            "upstream": {up: stage_digest(cfg, up) for up in s.upstream_of(cfg)}}
    foreign = {str(path): stage_digest(load_config(path), other) for other, path in s.foreign_of(cfg)}
    if foreign:  # only when set: other configs' digests stay as they were
        blob["foreign"] = foreign
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
