"""Which config keys each stage depends on, and the chained config digest of a stage.

A stage's digest covers its own config keys, the fingerprint of its input files, and the
digests of the stages it reads from; so changing one stage's config reruns that stage and
what follows it, and nothing upstream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.config import RegionConfig

#: config keys read by each stage (dotted paths into the TOML)
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "sample": ("synthetic", "osm.path", "imagery.paths"),
    "extract": ("osm", "classes"),
    "cover": ("region.zoom", "region.bbox", "region.shard_zoom"),
    "masks": ("region.tile_size", "masks", "classes"),
    "imagery": ("region.tile_size", "imagery"),
    "split": ("split",),
    "train": ("train", "classes"),
    "predict": ("predict", "classes", "region.tile_size"),
    "evaluate": ("predict.model",),
    "export": ("predict.model",),
}
#: the stages each stage reads the outputs of
STAGE_UPSTREAM: dict[str, tuple[str, ...]] = {
    "sample": (),
    "extract": ("sample",),
    "cover": ("extract",),
    "masks": ("cover",),
    "imagery": ("cover", "sample"),
    "split": ("masks", "imagery"),
    "train": ("split",),
    "predict": ("imagery", "train"),
    "evaluate": ("predict", "masks", "split"),
    "export": ("evaluate",),
}


def file_fingerprint(path: str | Path) -> str:
    """Cheap identity of an input file: size and modification time (ns), or 'missing'."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def stage_inputs(cfg: RegionConfig, stage: str) -> list[Path]:
    """External input files a stage reads (whose fingerprints enter its digest)."""
    if stage == "extract":
        return [cfg.osm.path]
    if stage == "imagery" and cfg.imagery is not None:
        return list(cfg.imagery.paths)
    if stage == "predict":
        from pipeline.predict_spec import model_path

        return [model_path(cfg)]
    return []


def stage_digest(cfg: RegionConfig, stage: str) -> str:
    """Chained digest (16 hex chars) of ``stage`` for config ``cfg``."""
    if stage == "sample" and cfg.synthetic is None:
        return "none"
    h = hashlib.sha256()
    h.update(stage.encode())
    h.update(cfg.digest(*STAGE_KEYS[stage]).encode())
    if not (stage != "sample" and cfg.synthetic is not None):
        # generated inputs are covered by the sample stage's digest; real ones by fingerprint
        for p in stage_inputs(cfg, stage):
            h.update(f"{p}={file_fingerprint(p)}".encode())
    for up in STAGE_UPSTREAM[stage]:
        h.update(stage_digest(cfg, up).encode())
    return h.hexdigest()[:16]
