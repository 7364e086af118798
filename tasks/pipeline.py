"""Wrapper tasks: ``RegionPipeline`` runs every stage that exists for a region."""

from __future__ import annotations

from typing import Any

import luigi

from tasks.masks import MasksAll
from tasks.upkeep import Prune, Verify  # noqa: F401 - registered for `python -m tasks Prune|Verify`


class RegionPipeline(luigi.WrapperTask):
    """Root task for ``make <region>``: masks (and imagery, when the config has a source)."""

    config = luigi.Parameter(description="path to the region config, e.g. configs/helsinki.toml")

    def requires(self) -> Any:
        from pipeline.config import load_config

        reqs: list[Any] = [MasksAll(config=self.config)]
        if load_config(self.config).imagery is not None:
            from tasks.imagery import ImageryAll

            reqs.append(ImageryAll(config=self.config))
        return reqs
