"""Wrapper tasks: ``RegionPipeline`` runs every stage that exists for a region."""

from __future__ import annotations

from typing import Any

import luigi

from tasks.masks import MasksAll
from tasks.upkeep import Prune, Verify  # noqa: F401 - registered for `python -m tasks Prune|Verify`


class RegionPipeline(luigi.WrapperTask):
    """Root task for ``make <region>``: every stage the config allows. With imagery: masks,
    imagery, split, training, prediction, vectorising, the comparison with OSM, the QGIS project,
    ``run.json`` and ``report.html``; without imagery: the label masks; without labels
    (``[labels] source = "none"``): imagery, prediction, vectors, the QGIS project and the report."""

    config = luigi.Parameter(description="path to the region config, e.g. configs/helsinki.toml")

    def requires(self) -> Any:
        from pipeline.config.region import load_config

        cfg = load_config(self.config)
        reqs: list[Any] = [MasksAll(config=self.config)] if cfg.labelled else []
        if cfg.imagery is not None:
            from tasks.imagery import ImageryAll
            from tasks.report import RegionReport

            reqs += [ImageryAll(config=self.config), RegionReport(config=self.config)]
        return reqs
