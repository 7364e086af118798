"""Luigi task ``ExportModel``: ONNX + STAC ``mlm`` model card in ``data/<region>/model/export/``.

The ONNX file is checked against PyTorch with onnxruntime on real tiles of the region (their
context windows, normalised as prediction does); the task fails when the probabilities differ
by more than ``ONNX_TOLERANCE``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import mercantile

from pipeline.config.predict import PredictSpec
from pipeline.core.atomic import atomic_write_json
from pipeline.core.errors import InputDataError, MissingInputError, ModelError
from pipeline.core.manifests import read_manifest
from pipeline.model.regions import is_own_model, model_path
from tasks.base import RegionTask, locked
from tasks.predict import EvaluateModel

if TYPE_CHECKING:
    from pipeline.config.region import RegionConfig

log = logging.getLogger("luigi-interface")

#: largest accepted difference of ONNX and PyTorch softmax probabilities
ONNX_TOLERANCE = 1e-3
#: tiles the ONNX check runs on
CHECK_TILES = 4


class ExportModel(RegionTask):
    """``model/export/model.onnx`` and ``model/export/model.stac.json`` (the model card)."""

    needs_labels = True

    stage = "export"

    def export_dir(self) -> Path:
        return self.data_dir / "model" / "export"

    def manifest_path(self) -> Path:
        return self.export_dir() / "_manifest.json"

    @locked
    def run(self) -> None:
        import numpy as np

        from pipeline.inference.predict import border_for
        from pipeline.inference.predict_torch import load_predictor, model_input
        from pipeline.inference.windows import TileReader, tile_window
        from pipeline.model.export import (
            CardDetails,
            check_onnx,
            export_onnx,
            input_recipe,
            mlm_problems,
            model_assets,
            model_card,
        )

        cfg = self.cfg
        spec: PredictSpec = cfg.predict
        ckpt = model_path(cfg)
        pred = load_predictor(ckpt, "cpu")
        from pipeline.inference.windows import image_paths

        images = image_paths(self.data_dir)
        keys = self._check_tiles(images)
        reader = TileReader(images)
        t = reader.get(keys[0]).shape[-1]  # type: ignore[union-attr]
        border = border_for(pred.info, t, spec.context_px)
        x = model_input(pred, np.stack([tile_window(reader, k, border) for k in keys]), t)
        side = int(x.shape[-1])
        out = self.export_dir()
        onnx_path, card_path = out / "model.onnx", out / "model.stac.json"
        export_onnx(pred.model, pred.bands, side, onnx_path)
        check = check_onnx(onnx_path, pred.model, x)
        log.info("ONNX check on %d tiles of %s: %s", len(keys), cfg.name, check)
        if check["max_abs_diff_probs"] > ONNX_TOLERANCE:
            diff = check["max_abs_diff_probs"]
            raise ModelError(f"{onnx_path}: ONNX probabilities differ from PyTorch by {diff:.2e} "
                             f"(> {ONNX_TOLERANCE}); the exporter does not support this model faithfully")
        metrics = read_manifest(EvaluateModel(config=self.config).manifest_path())
        created = dt.datetime.fromtimestamp(os.stat(ckpt).st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        spec_d = pred.meta["spec"]
        card = model_card(
            pred.meta, item_id=f"osmsat-{cfg.name}-{spec_d['arch']}-{spec_d['encoder']}".lower(),
            bbox=_bbox(list(images)), side=side, created=created, details=CardDetails(
                metrics=metrics, total_parameters=sum(p.numel() for p in pred.model.parameters()),
                colors={c.id: c.color for c in cfg.classes},
                band_names=_band_names(cfg, pred.bands),
                assets=model_assets(onnx_path, ckpt, out), recipe=input_recipe(t, border, side),
                extra={"osmsat:tiles": {"zoom": cfg.zoom, "tile_size": t, "context_px": border,
                                        "scale": side / (t + 2 * border)},
                       "osmsat:onnx_check": check, "osmsat:trained_here": is_own_model(cfg)}),
        )
        problems = mlm_problems(card)
        if problems:  # a card that STAC-MLM 1.4 tools would refuse is a bug here, never written
            raise ModelError(f"{card_path}: the model card breaks STAC-MLM 1.4: {'; '.join(problems)}")
        atomic_write_json(card_path, card)
        self.output().write({"root": str(out), "model": str(ckpt), "onnx_check": check,
                             "files": {p.name: {"size": p.stat().st_size} for p in (onnx_path, card_path)}})

    def _check_tiles(self, images: dict[tuple[int, int, int], Path]) -> list[tuple[int, int, int]]:
        """Up to CHECK_TILES tiles, evenly spread over the region's tiles with imagery."""
        import numpy as np

        keys = sorted(images)
        if not keys:
            raise ModelError(f"{self.cfg.path}: the region has no image tile to check the ONNX export on")
        pick = np.unique(np.linspace(0, len(keys) - 1, min(CHECK_TILES, len(keys))).round().astype(int))
        return [keys[i] for i in pick]


def _bbox(keys: list[tuple[int, int, int]]) -> tuple[float, float, float, float]:
    """W, S, E, N (EPSG:4326 degrees) of the union of tiles."""
    bounds = [mercantile.bounds(x, y, z) for z, x, y in keys]
    return (min(b.west for b in bounds), min(b.south for b in bounds),
            max(b.east for b in bounds), max(b.north for b in bounds))


def _band_names(cfg: RegionConfig, bands: int) -> tuple[str, ...]:
    """``[imagery] band_names``, else the names a raster source's first raster gives its bands
    (descriptions or colour interpretation) when there are as many as the model takes; () leaves
    the card's default (red/green/blue or band1..N)."""
    icfg = cfg.imagery
    if icfg is None:
        return ()
    if icfg.band_names:
        return icfg.band_names
    if icfg.source != "raster":
        return ()
    from pipeline.imagery.raster_plan import raster_band_names

    try:
        names = raster_band_names(icfg)
    except (InputDataError, MissingInputError):
        return ()  # the card is no place to fail for a raster gone since the tiles were made
    return names if len(names) == bands else ()
