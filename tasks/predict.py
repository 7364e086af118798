"""Luigi tasks ``Predict`` (one shard -> ``predictions/z/x/y.png`` + shard manifest), ``PredictAll``
(every shard with imagery) and ``EvaluateModel`` (``model/metrics.json`` on the test split).

The model is ``[predict] model`` or the region's own ``model/best.pt`` (then TrainModel is
required). Prediction claims the Luigi resource ``gpu`` (its limit goes in configs/luigi.toml
``[resources]``); the device is picked inside ``run()``: CUDA when present, else CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi

from pipeline.config.predict import PredictSpec
from pipeline.config.region import RegionConfig
from pipeline.core.errors import InputDataError
from pipeline.core.manifests import read_manifest
from pipeline.model.regions import cross_fit_model, is_own_model, model_path, training_tiles
from pipeline.tiles.index import written_tiles
from pipeline.tiles.tilemath import Tile
from tasks.base import AllShardsTask, ManifestTarget, RegionTask, ShardTask, locked

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("luigi-interface")


class Predict(ShardTask):
    """Per-class probabilities of every tile of one shard that has imagery."""

    stage = "predict"
    product = "predictions"
    device = luigi.Parameter(default="auto", significant=False,
                             description="torch device: auto (CUDA when present), cpu, cuda, cuda:1")
    resources = {"gpu": 1}  # noqa: RUF012 - Luigi reads it as a class attribute

    def run_imports(self) -> tuple[str, ...]:
        """ONNX Runtime on CPU (the default engine there), else PyTorch (CUDA is not touched)."""
        from pipeline.model.device import cuda_may_exist

        engine, device = self.cfg.predict.engine, str(self.device)
        torch = engine == "torch" or device.startswith("cuda") or (engine == "auto" and device == "auto"
                                                                     and cuda_may_exist())
        own = ("torch", "pipeline.inference.predict_torch") if torch else \
            ("onnxruntime", "pipeline.inference.predict_onnx")
        return (*super().run_imports(), "pipeline.inference.predict", "pipeline.inference.windows",
                "pipeline.model.split", "pipeline.imagery.nodata", "scipy.ndimage", "PIL.Image", *own)

    def prepare(self) -> None:
        """The model's key and its cached graphs' (sha256 of 60-200 MB) for every shard at once."""
        from pipeline.inference.predict_engine import checkpoint_key

        super().prepare()
        for path in (model_path(self.cfg), cross_fit_model(self.cfg)):
            if path is not None and Path(path).is_file():
                key = checkpoint_key(Path(path))
                for graph in (self.data_dir / "_cache" / "predict").glob(f"{key}-*.onnx"):
                    checkpoint_key(graph)

    @locked
    def run(self) -> None:

        from pipeline.inference.predict import check_compatible, open_engine, predict_tiles, prediction_pngs
        from pipeline.inference.windows import TileReader, image_paths_near, read_image
        from pipeline.tiles.tilemath import shard_of

        cfg, shard = self.cfg, str(self.shard)
        spec: PredictSpec = cfg.predict
        with self.writer(("png",)) as out:
            if out.current:  # another run finished this shard while we waited for it
                return
            everywhere = image_paths_near(self.data_dir, shard)  # neighbours may lie in other shards
            keys = sorted(k for k in everywhere if shard_of(Tile(*k), cfg.shard_zoom) == shard)
            edges: list[int] = []
            cross = cross_fit_model(cfg)
            trained = training_tiles(cfg) if cross is not None else set()
            groups = [(model_path(cfg), [k for k in keys if k not in trained]),
                      *([(cross, [k for k in keys if k in trained])] if cross is not None else [])]
            for path, group in groups:
                if not group:
                    continue
                first = read_image(everywhere[group[0]])
                engine = open_engine(path, str(self.device), spec.engine, tile_size=first.shape[-1],
                                     cache_dir=self.data_dir / "_cache" / "predict")
                check_compatible(engine.info, [(c.name, c.id) for c in cfg.classes], first.shape[0], str(cfg.path))
                results = predict_tiles(engine, TileReader(everywhere), group, context_px=spec.context_px,
                                        block=spec.block, batch_size=spec.batch_size, tta=spec.tta,
                                        progress=lambda done, total: self.progress(done, total, f"predict {shard}"))
                pngs = prediction_pngs(results, spec.png_level, edges=engine.info.edges)
                out.write_many(((Tile(*k), data) for k, data in pngs), "png")
                edges = list(engine.info.edges)
            cross_info = {"cross_model": str(cross), "cross_tiles": len(groups[1][1])} if cross is not None else {}
            out.commit({"model": str(model_path(cfg)), "classes": _class_table(self), "edges": edges, **cross_info})


def _class_table(task: RegionTask) -> list[dict[str, Any]]:
    """Prediction bands in order: the region's classes by ascending id."""
    return [{"band": i, "name": c.name, "id": c.id}
            for i, c in enumerate(sorted(task.cfg.classes, key=lambda c: c.id))]


class PredictAll(AllShardsTask):
    """Every shard with imagery; the manifest records the tiles, the model and the band order."""

    stage = "predict"
    product = "predictions"
    device = luigi.Parameter(default="auto", significant=False, description="torch device (see Predict)")

    def shard_tasks(self) -> list[ShardTask]:
        """One task per shard with imagery (from the images' tile index)."""
        return [self.shard_task(s) for s in sorted(written_tiles(self.data_dir / "images").shard.unique())]

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        n = sum(int(read_manifest(t.manifest_path())["tiles"]) for t in done)
        return {"tiles": n, "shards": len(done), "model": str(model_path(self.cfg)),
                "classes": _class_table(self),
                "format": "pipeline.inference.probs: uint8 p*255, bands stacked vertically"}


class EvaluateModel(RegionTask):
    """``model/metrics.json``: per-class IoU, precision, recall, F1 and the confusion matrix of the
    predictions against the masks, on the test split (the region's own model) or on every
    labelled tile (a model trained elsewhere: the whole region is unseen). A region whose split
    holds no test tile (``[split] test_fraction = 0``: it is tested on another region) is not
    evaluated: metrics.json then says so (``tiles`` 0 and a ``note``; no scores)."""

    needs_labels = True

    stage = "evaluate"
    device = luigi.Parameter(default="auto", significant=False, description="torch device (see Predict)")

    def manifest_path(self) -> Path:
        return self.data_dir / "model" / "metrics.json"

    def output(self) -> ManifestTarget:
        return ManifestTarget(self.manifest_path(), self.digest())

    @locked
    def run(self) -> None:
        from pipeline.inference.evaluate import evaluate_tiles

        by_split, scope, has_test = self._tiles()
        tiles = by_split[scope]
        if not tiles and scope == "test" and not has_test:
            note = no_test_split_note(self.cfg)
            log.warning("evaluate %s: %s", self.cfg.name, note)
            self.output().write({"scope": scope, "tiles": 0, "model": str(model_path(self.cfg)), "note": note})
            return
        if not tiles:
            raise InputDataError(f"{self.cfg.path}: no {scope} tile has both a mask and a prediction to evaluate; "
                                 "raise [split] test_fraction or check the masks and imagery")
        classes = sorted(((c.name, c.id) for c in self.cfg.classes), key=lambda c: c[1])
        result = evaluate_tiles(self._pairs(tiles), classes, progress=lambda i, n: self.progress(i, n, "evaluate"))
        result.update({"scope": scope, "model": str(model_path(self.cfg)), **self._other_splits(by_split, classes)})
        log.info("evaluate %s (%s, %d tiles): IoU %s", self.cfg.name, scope, len(tiles),
                 {k: round(v, 4) for k, v in result["iou"].items()})
        self.output().write(result)

    def _tiles(self) -> tuple[dict[str, list[tuple[int, int, int]]], str, bool]:
        """The tiles with a prediction by split, the split to score and whether ``split.csv``
        lists test tiles at all: the region's own model is scored on its test split (``train``
        and ``val`` beside it), a model trained elsewhere on every tile with a mask."""
        from pipeline.inference.windows import image_paths_of

        preds = set(image_paths_of(self.data_dir / "predictions"))
        if is_own_model(self.cfg):
            from pipeline.model.split import read_split_csv

            rows = read_split_csv(self.data_dir / "split.csv")
            by_split: dict[str, list[tuple[int, int, int]]] = {"test": [], "train": [], "val": []}
            for r in rows:
                if (r.z, r.x, r.y) in preds and r.split in by_split:
                    by_split[r.split].append((r.z, r.x, r.y))
            return by_split, "test", any(r.split == "test" for r in rows)
        masks = set(image_paths_of(self.data_dir / "masks"))
        return {"all labelled": sorted(preds & masks)}, "all labelled", False

    def _pairs(self, tiles: list[tuple[int, int, int]]) -> list[tuple[Path, ...]]:
        """(prediction tile, mask tile, image tile or None) of each tile."""
        from pipeline.inference.windows import image_paths

        pred_dir, mask_dir = self.data_dir / "predictions", self.data_dir / "masks"
        images = image_paths(self.data_dir)
        return [(pred_dir / f"{z}/{x}/{y}.png", mask_dir / f"{z}/{x}/{y}.png", images.get((z, x, y)))  # type: ignore[misc]
                for z, x, y in tiles]

    def _other_splits(self, by_split: dict[str, list[tuple[int, int, int]]],
                      classes: list[tuple[str, int]]) -> dict[str, Any]:
        """The region's own model: ``splits`` (train and validation IoU, measured like the test
        figure) and ``selected_on`` (the validated epoch best.pt was chosen on, and its IoU at
        the model's scale without neighbour context); {} for a model trained elsewhere."""
        if not is_own_model(self.cfg):
            return {}
        from pipeline.inference.evaluate import split_ious
        from pipeline.model.network import read_checkpoint

        chosen = read_checkpoint(model_path(self.cfg))["meta"].get("metrics", {})
        return {"splits": split_ious({s: self._pairs(by_split[s]) for s in ("train", "val")}, classes),
                "selected_on": {k: chosen[k] for k in ("epoch", "iou") if k in chosen}}


def no_test_split_note(cfg: RegionConfig) -> str:
    """Why a region's own model has no test figures: its split holds no test tile."""
    split = cfg.split
    why = ("[split] test_areas hold no tile" if split.test_areas is not None
           else f"[split] test_fraction = {split.test_fraction}")
    return (f"no test tiles ({why} in {cfg.path}): the model is not evaluated on this region; "
            "evaluate it on another region ([predict] model) or raise test_fraction")
