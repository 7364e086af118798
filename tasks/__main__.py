"""Command line: ``python -m tasks <Task> --config configs/<region>.toml [luigi options]``.

Validates the region config before Luigi starts (a typo exits 2 with the file and key named),
uses ``configs/luigi.toml`` and the local scheduler unless told otherwise, and exits with
Luigi's ``[retcode]`` codes so that a failed run exits non-zero.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

USAGE = """usage: python -m tasks TASK --config configs/<region>.toml [--workers N] [luigi options]

Tasks (each stage's output lands under data/<region>/):
  MakeSampleRegion  generate the synthetic sample region (demo.osm.pbf, orthophoto.tif, truth.geojson)
  FetchOSM          download the region's .osm.pbf from [osm] url when [osm] path is missing
  ExtractFeatures   .osm.pbf -> features.parquet (EPSG:4326, OSM ids, class, tags)
  CoverTiles        features -> tiles.csv (z,x,y,shard)
  RasterizeMasks    one shard (--shard QUADKEY) -> masks/z/x/y.png + masks/_shards/QUADKEY.json
  MasksAll          every shard's masks
  FetchImagery      one shard (--shard QUADKEY) -> images/z/x/y.<ext> + images/_shards/QUADKEY.json
  ImageryAll        every shard's imagery + coverage summary
  SplitDataset      image/mask pairs -> split.csv (train/val/test by block) + split_stats.json
  TrainModel        split -> model/best.pt, last.pt, metrics.csv, training.png (resumes last.pt)
  Predict           one shard (--shard QUADKEY) -> predictions/z/x/y.png + predictions/_shards/QUADKEY.json
  PredictAll        every shard with imagery ([predict] model, default model/best.pt)
  EvaluateModel     predictions vs masks on the test split -> model/metrics.json
  ExportModel       model/export/model.onnx (checked with onnxruntime) + model.stac.json (STAC mlm card)
  RegionPipeline    everything above that the config asks for

The local scheduler is used unless --scheduler-host or --scheduler-url is given.
Luigi settings: configs/luigi.toml (override with LUIGI_CONFIG_PATH). Luigi's own options:
python -m tasks TASK --help-all
"""


STAGE_MODULES = ("extract", "synthetic", "cover", "masks", "imagery", "split", "train", "predict", "export", "pipeline")


def register_tasks() -> None:
    """Import every stage module so that Luigi knows its tasks."""
    import importlib

    for name in STAGE_MODULES:
        importlib.import_module(f"tasks.{name}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    root = Path(__file__).resolve().parents[1]
    os.environ.setdefault("LUIGI_CONFIG_PARSER", "toml")
    os.environ.setdefault("LUIGI_CONFIG_PATH", str(root / "configs" / "luigi.toml"))
    from pipeline.config import load_config
    from pipeline.errors import OsmsatError

    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            load_config(argv[argv.index("--config") + 1])
        except OsmsatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not any(a.startswith(("--scheduler-host", "--scheduler-url", "--local-scheduler")) for a in argv):
        argv = [*argv, "--local-scheduler"]
    import luigi.retcodes

    register_tasks()

    try:
        luigi.retcodes.run_with_retcodes(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
