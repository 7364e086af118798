"""Luigi task ``MakeSampleRegion``: generate the synthetic sample region of a config that has a
``[synthetic]`` section (its OSM extract, orthophoto and truth GeoJSON)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.errors import ConfigError
from tasks.base import RegionTask, locked


class MakeSampleRegion(RegionTask):
    """Write ``[osm] path``, ``[imagery] paths[0]`` and ``<data_dir>/truth.geojson`` from the
    ``[synthetic]`` parameters; the manifest lists the three files and their sizes."""

    stage = "synthetic"

    def owned_files(self) -> list[Path]:
        """The three generated files (a killed run leaves ``.<name>.*.tmp*`` beside them)."""
        if self.cfg.synthetic is None:
            return super().owned_files()
        from pipeline.synthetic import sample_paths

        return [*super().owned_files(), *sample_paths(self.cfg)]

    @locked
    def run(self) -> None:
        from pipeline.synthetic import check_sample_outputs, sample_paths, write_sample_region

        cfg = self.cfg
        if cfg.synthetic is None:
            raise ConfigError(f"{cfg.path}: MakeSampleRegion needs a [synthetic] section")
        check_sample_outputs(cfg, self._written_before())
        osm_path, ortho_path, truth_path = sample_paths(cfg)
        self.progress(0, 1, f"generating a {cfg.synthetic.size_m:.0f} m town (seed {cfg.synthetic.seed})")
        sizes = write_sample_region(cfg.synthetic, osm_path, ortho_path, truth_path)
        root = cfg.data_dir
        files = {os.path.relpath(p, root): {"size": n} for p, n in sizes.items()}
        self.output().write({"files": files, "root": str(root), "seed": cfg.synthetic.seed})

    def _written_before(self) -> set[Path]:
        """The files this region's previous sample manifest lists (none when it has none)."""
        from pipeline.core.errors import ManifestError
        from pipeline.core.manifests import read_manifest

        try:
            body = read_manifest(self.manifest_path())
        except ManifestError:
            return set()
        root = Path(str(body.get("root", self.data_dir)))
        return {root / name for name in body.get("files", {})}
